"""Run a pipeline over a catalog on Dask distributed.

The graph is two stages of independent tasks: hash batches of input paths
(writing ``files`` parts), then one task per new track (writing its parts).
The client only holds small records, submits tasks through a bounded window
(a catalog of millions of tracks never sits in the scheduler at once), and
drives its own progress reporting from ``as_completed``.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from mirflow._version import __version__
from mirflow.catalog.layout import Catalog, batched, utcnow
from mirflow.errors import ConfigError
from mirflow.pipeline.config import PipelineConfig, load_pipeline
from mirflow.pipeline.inputs import expand_inputs
from mirflow.pipeline.task import (
    TrackJob,
    _error_record,
    analyze_track,
    hash_paths,
    warm_up,
    write_error,
)
from mirflow.pipeline.worker import THREAD_ENV, WorkerSetup

log = logging.getLogger(__name__)

#: ``progress(stage, done, total)``; stage is "hash" or "analyze".
ProgressCallback = Callable[[str, int, int], None]
HASH_BATCH = 32


@dataclass(frozen=True)
class ClusterOptions:
    """Where and how to run.

    ``scheduler`` set: connect to that ``dask.distributed`` scheduler.
    Otherwise start a :class:`~distributed.LocalCluster` of ``workers``
    processes.
    """

    scheduler: str | None = None
    workers: int = 2
    threads_per_worker: int = 1
    memory_limit: str | float | None = "auto"
    worker_lifetime: str | None = "1 hour"
    dashboard: bool = True

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError("workers must be at least 1")
        if self.threads_per_worker < 1:
            raise ConfigError("threads-per-worker must be at least 1")


@dataclass
class Plan:
    """What a run would do: the result of hashing and comparing with the catalog."""

    paths: list[str]
    to_analyze: list[TrackJob]
    skipped: list[TrackJob]
    duplicates: dict[str, list[str]]  # track_id -> other paths with the same content
    unreadable: list[dict[str, Any]]  # hash-stage failures


@dataclass
class RunSummary:
    """Counts and figures of one run (also recorded in the catalog manifest)."""

    run_id: str
    catalog: str
    pipeline: str
    pipeline_version: str
    inputs: int = 0
    unique_tracks: int = 0
    duplicate_paths: int = 0
    analyzed: int = 0
    skipped: int = 0
    failed: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    #: Wall time of the analysis stage alone (without cluster start-up and hashing).
    analyze_seconds: float = 0.0
    dashboard: str | None = None
    dry_run: bool = False
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def audio_hours_per_hour(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["audio_hours_per_hour"] = self.audio_hours_per_hour
        d["failures"] = d["failures"][:50]
        return d


# --------------------------------------------------------------------- planning
def _group(records: Iterable[dict[str, Any]]) -> tuple[dict[str, list[str]], list[dict[str, Any]]]:
    by_track: dict[str, list[str]] = {}
    unreadable = []
    for r in records:
        if r["track_id"] is None:
            unreadable.append(r)
        else:
            by_track.setdefault(r["track_id"], []).append(r["path"])
    return by_track, unreadable


def _known_record(path: str, known: dict[str, tuple[int, int, str]]) -> dict[str, Any] | None:
    """Reuse a hash from the files table when size and mtime are unchanged."""
    hit = known.get(path)
    if hit is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    if (st.st_size, st.st_mtime_ns) == (hit[0], hit[1]):
        return {"path": path, "track_id": hit[2], "size": hit[0], "error": None}
    return None


def make_plan(paths: list[str], hashed: list[dict[str, Any]], catalog: Catalog, pipeline: PipelineConfig,
              *, force: bool, limit: int | None) -> Plan:
    by_track, unreadable = _group(hashed)
    order = {p: i for i, p in enumerate(paths)}
    existing = catalog.existing_tracks()
    to_analyze, skipped, duplicates = [], [], {}
    for track_id, tpaths in sorted(by_track.items(), key=lambda kv: min(order[p] for p in kv[1])):
        tpaths = sorted(tpaths, key=order.__getitem__)
        if len(tpaths) > 1:
            duplicates[track_id] = tpaths[1:]
        job = TrackJob(track_id, tpaths[0])
        if not force and existing.get(track_id) == pipeline.fingerprint:
            skipped.append(job)
        else:
            to_analyze.append(job)
    if limit is not None:
        to_analyze = to_analyze[:limit]
    return Plan(paths, to_analyze, skipped, duplicates, unreadable)


# --------------------------------------------------------------------- cluster
def _dask_config(pipeline: PipelineConfig, opts: ClusterOptions) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        # A worker that dies (native crash, OOM, hard timeout) takes its task
        # with it; after this many deaths the task ends with KilledWorker and
        # the client records the track as failed instead of looping forever.
        "distributed.scheduler.allowed-failures": pipeline.retries,
        "distributed.nanny.pre-spawn-environ": dict(THREAD_ENV),
        "distributed.worker.daemon": False,
        # Hand a worker only as many tasks as it has threads: tasks queued on
        # a worker that dies are blamed (and retried) with the one that killed it.
        "distributed.scheduler.worker-saturation": 1.0,
    }
    if opts.worker_lifetime:
        # Recycle workers periodically: native code (decoders, RNN runtimes) leaks.
        cfg.update({
            "distributed.worker.lifetime.duration": opts.worker_lifetime,
            "distributed.worker.lifetime.stagger": "5 minutes",
            "distributed.worker.lifetime.restart": True,
        })
    return cfg


def _start(opts: ClusterOptions):
    from distributed import Client, LocalCluster

    if opts.scheduler:
        client = Client(opts.scheduler)
        cluster = None
    else:
        cluster = LocalCluster(
            n_workers=opts.workers,
            threads_per_worker=opts.threads_per_worker,
            processes=True,
            memory_limit=opts.memory_limit,
            dashboard_address=":0" if opts.dashboard else None,
            silence_logs=logging.ERROR,
        )
        client = Client(cluster)
    client.register_plugin(WorkerSetup())
    return client, cluster


# --------------------------------------------------------------------- run
def analyze(
    inputs: Iterable[str | os.PathLike[str]],
    catalog: str | os.PathLike[str] | Catalog,
    *,
    pipeline: str | os.PathLike[str] | PipelineConfig = "default",
    cluster: ClusterOptions | None = None,
    force: bool = False,
    limit: int | None = None,
    dry_run: bool = False,
    progress: ProgressCallback | None = None,
    on_dashboard: Callable[[str], None] | None = None,
) -> tuple[RunSummary, Plan]:
    """Analyze ``inputs`` into ``catalog``.

    Configuration errors (bad pipeline, missing inputs, a catalog of another
    pipeline) raise :class:`~mirflow.errors.ConfigError` or
    :class:`~mirflow.errors.CatalogError` before anything is scheduled.
    Per-track failures never raise: they are ``errors`` rows and counted in
    the summary.

    Returns
    -------
    summary : RunSummary
    plan : Plan
        What was analyzed and skipped (the dry run's answer).
    """
    started = time.perf_counter()
    cfg = pipeline if isinstance(pipeline, PipelineConfig) else load_pipeline(pipeline)
    cat = catalog if isinstance(catalog, Catalog) else Catalog(catalog)
    opts = cluster or ClusterOptions()
    if limit is not None and limit < 0:
        raise ConfigError("limit must be non-negative")
    paths = expand_inputs(inputs)
    summary = RunSummary(run_id=utcnow().strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6], catalog=str(cat.root),
                         pipeline=cfg.name, pipeline_version=cfg.fingerprint, inputs=len(paths), dry_run=dry_run)
    if dry_run:
        manifest = cat.read_manifest()
        if manifest is not None and manifest.get("pipeline") != cfg.name:
            raise ConfigError(f"catalog {cat.root} holds pipeline {manifest.get('pipeline')!r}, not {cfg.name!r}")
        known = cat.known_files()
        hashed = []
        for p in paths:
            rec = _known_record(p, known)
            if rec is None:
                from mirflow.audio.hashing import content_hash
                try:
                    rec = {"path": p, "track_id": content_hash(p), "size": None, "error": None}
                except OSError as exc:
                    rec = {"path": p, "track_id": None, "size": None, "error": str(exc)}
            hashed.append(rec)
        plan = make_plan(paths, hashed, cat, cfg, force=force, limit=limit)
        _fill_counts(summary, plan)
        summary.wall_seconds = time.perf_counter() - started
        return summary, plan

    cat.open_for(cfg.name)
    swept = cat.sweep_temporary()
    if swept:
        log.info("removed %d temporary files left by an interrupted run", swept)
    cat.record_run({"run_id": summary.run_id, "started_at": utcnow().isoformat(), "status": "running",
                    "pipeline_version": cfg.fingerprint, "mirflow_version": __version__, "inputs": len(paths)})

    import dask
    from distributed import as_completed

    with dask.config.set(_dask_config(cfg, opts)):
        client, local = _start(opts)
        try:
            summary.dashboard = client.dashboard_link if opts.dashboard else None
            if summary.dashboard and on_dashboard:
                on_dashboard(summary.dashboard)
            log.info("Dask dashboard: %s", summary.dashboard or "off")
            # ---- stage 1: hash (reusing hashes of unchanged files)
            known = cat.known_files()
            hashed, to_hash = [], []
            for p in paths:
                rec = _known_record(p, known)
                (hashed.append(rec) if rec else to_hash.append(p))
            batches = list(batched(to_hash, HASH_BATCH))
            done = 0
            if progress:
                progress("hash", 0, len(paths))
                done = len(hashed)
            futures = [client.submit(hash_paths, b, str(cat.root), cfg, pure=False) for b in batches]
            for fut, batch in zip(futures, batches, strict=True):
                try:
                    recs = fut.result()
                except Exception as exc:  # the hashing task itself died: record each path
                    recs = []
                    for p in batch:
                        write_error(cat, _error_record(p, None, "hash", exc, cfg,
                                                       message=f"hashing failed: {type(exc).__name__}: {exc}"))
                        recs.append({"path": p, "track_id": None, "size": None, "error": str(exc)})
                hashed.extend(recs)
                done += len(batch)
                if progress:
                    progress("hash", done, len(paths))
            plan = make_plan(paths, hashed, cat, cfg, force=force, limit=limit)
            _fill_counts(summary, plan)
            if plan.to_analyze:
                # Load models in every worker now, not inside the first tracks' budgets.
                try:
                    client.run(warm_up, cfg)
                except Exception as exc:  # a worker dying here is retried per track below
                    log.warning("worker warm-up failed: %s", exc)
            summary.failures.extend({"path": r["path"], "stage": "probe", "message": r["error"]}
                                    for r in plan.unreadable)
            # ---- stage 2: analyze, through a bounded window of in-flight tasks
            total = len(plan.to_analyze)
            t_analyze = time.perf_counter()
            if progress:
                progress("analyze", 0, total)
            nthreads = sum(client.nthreads().values()) or opts.workers * opts.threads_per_worker
            window = max(2 * nthreads, 4)
            jobs = iter(plan.to_analyze)
            in_flight: dict[Any, TrackJob] = {}

            isolated: set[str] = set()

            def submit(job: TrackJob, key: str) -> None:
                fut = client.submit(analyze_track, job, str(cat.root), cfg, key=key, pure=False)
                in_flight[fut] = job
                ac.add(fut)

            def submit_next() -> bool:
                job = next(jobs, None)
                if job is None:
                    return False
                submit(job, f"analyze-{job.track_id}")
                return True

            ac = as_completed()
            for _ in range(window):
                if not submit_next():
                    break
            finished = 0
            for fut in ac:
                job = in_flight.pop(fut)
                if _killed_worker(fut) and job.track_id not in isolated:
                    # A dying worker takes every task it holds with it, so an
                    # innocent track can be blamed for its neighbour's crash.
                    # Give a KilledWorker track one more, fresh try before
                    # recording it; the culprit simply fails again.
                    isolated.add(job.track_id)
                    fut.release()
                    submit(job, f"analyze-{job.track_id}-retry")
                    continue
                rec = _result_or_failure(fut, job, cat, cfg)
                finished += 1
                if rec["status"] == "ok":
                    summary.analyzed += 1
                    summary.audio_seconds += rec.get("duration_s") or 0.0
                else:
                    summary.failed += 1
                    summary.failures.append({"path": rec["path"], "stage": rec["stage"], "message": rec["message"]})
                if progress:
                    progress("analyze", finished, total)
                submit_next()
                fut.release()
            summary.analyze_seconds = time.perf_counter() - t_analyze
        finally:
            client.close()
            if local is not None:
                local.close()
    summary.wall_seconds = time.perf_counter() - started
    run = {"run_id": summary.run_id, "status": "finished", "finished_at": utcnow().isoformat(), **{
        k: v for k, v in summary.to_dict().items() if k not in ("failures", "catalog", "run_id")}}
    cat.record_run(run)
    return summary, plan


def _fill_counts(summary: RunSummary, plan: Plan) -> None:
    summary.unique_tracks = len(plan.to_analyze) + len(plan.skipped)
    summary.duplicate_paths = sum(len(v) for v in plan.duplicates.values())
    summary.skipped = len(plan.skipped)
    summary.failed = len(plan.unreadable)


def _killed_worker(fut) -> bool:
    from distributed.scheduler import KilledWorker

    return fut.status == "error" and isinstance(fut.exception(), KilledWorker)


def _result_or_failure(fut, job: TrackJob, cat: Catalog, cfg: PipelineConfig) -> dict[str, Any]:
    """The task's record, or a failure record when the task could not return one."""
    try:
        return fut.result()
    except Exception as exc:
        from distributed.scheduler import KilledWorker

        if isinstance(exc, KilledWorker):
            stage = "worker"
            message = (f"the worker process died {2 * (cfg.retries + 1)} time(s) while analyzing this track "
                       "(native crash, out of memory or hard timeout); gave up")
        else:
            stage = "task"
            message = f"{type(exc).__name__}: {exc}"
        write_error(cat, _error_record(job.path, job.track_id, stage, exc, cfg, message=message))
        return {"track_id": job.track_id, "path": job.path, "status": "failed", "stage": stage,
                "message": message, "duration_s": None}
