"""Run a pipeline over a catalog on Dask distributed.

The graph is two stages of independent tasks: hash batches of input paths
(writing ``files`` parts), then one task per new track (writing its parts).
The client only holds small records, submits tasks through a bounded window
(a catalog of millions of tracks never sits in the scheduler at once), and
drives its own progress reporting from ``as_completed``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from mirflow._version import __version__
from mirflow.catalog.layout import (
    Catalog,
    FileFacts,
    batched,
    path_from_columns,
    path_key,
    path_text,
    utcnow,
)
from mirflow.errors import CatalogFullError, ConfigError
from mirflow.pipeline.config import PipelineConfig, check_requirements, load_pipeline
from mirflow.pipeline.inputs import InputProblem, expand
from mirflow.pipeline.task import (
    HashRecord,
    TrackJob,
    TrackResult,
    _error_record,
    analyze_track,
    file_identity,
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
    #: Where the local cluster's dashboard listens: this machine only unless asked.
    dashboard_address: str = "127.0.0.1:0"

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
    unreadable: list[HashRecord]  # hash-stage failures
    #: Tracks left for a later run by ``limit``.
    deferred: list[TrackJob] = field(default_factory=list)
    #: Inputs that could not be listed or read (folders, manifest entries).
    problems: list[InputProblem] = field(default_factory=list)


@dataclass
class RunSummary:
    """Counts and figures of one run (also recorded in the catalog manifest).

    ``plan`` is what the run decided to analyze, skip and defer (the dry
    run's answer); it is not part of :meth:`to_dict`.
    """

    run_id: str
    catalog: str
    pipeline: str
    pipeline_version: str
    inputs: int = 0
    unique_tracks: int = 0
    duplicate_paths: int = 0
    analyzed: int = 0
    skipped: int = 0
    #: Input paths that ended in ``errors`` (a failed track's duplicate paths count each).
    failed: int = 0
    #: Tracks not analyzed because of ``limit`` (neither in tracks nor in errors yet).
    deferred: int = 0
    #: Folders or manifest entries that could not be read (``errors`` rows with stage ``input``).
    input_problems: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    #: Wall time of the analysis stage alone (without cluster start-up and hashing).
    analyze_seconds: float = 0.0
    dashboard: str | None = None
    dry_run: bool = False
    failures: list[dict[str, Any]] = field(default_factory=list)
    plan: Plan | None = field(default=None, repr=False, compare=False)

    @property
    def audio_hours_per_hour(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(dataclasses.replace(self, plan=None))
        d.pop("plan")
        d["audio_hours_per_hour"] = self.audio_hours_per_hour
        d["failures"] = d["failures"][:50]
        return d


# --------------------------------------------------------------------- planning
def _group(records: Iterable[HashRecord]) -> tuple[dict[str, list[str]], list[HashRecord]]:
    by_track: dict[str, list[str]] = {}
    unreadable = []
    for r in records:
        if r.track_id is None:
            unreadable.append(r)
        else:
            by_track.setdefault(r.track_id, []).append(r.path)
    return by_track, unreadable


def _known_record(path: str, known: dict[str, FileFacts]) -> HashRecord | None:
    """Reuse a hash from the files table when the file is unchanged (see :meth:`FileFacts.matches`)."""
    hit = known.get(path)
    if hit is None:
        return None
    try:
        identity = file_identity(path)
    except OSError:
        return None
    if hit.matches(identity):
        return HashRecord(path, hit.track_id, hit.size, identity=identity)
    return None


def make_plan(paths: list[str], hashed: list[HashRecord], catalog: Catalog, pipeline: PipelineConfig,
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
    deferred: list[TrackJob] = []
    if limit is not None:
        to_analyze, deferred = to_analyze[:limit], to_analyze[limit:]
    return Plan(paths, to_analyze, skipped, duplicates, unreadable, deferred)


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


def _start(opts: ClusterOptions, pipeline: PipelineConfig | None = None):
    from distributed import Client, LocalCluster

    if opts.scheduler:
        client = Client(opts.scheduler)
        cluster = None
        _configure_existing_cluster(client, pipeline)
    else:
        cluster = LocalCluster(
            n_workers=opts.workers,
            threads_per_worker=opts.threads_per_worker,
            processes=True,
            memory_limit=_memory_limit(opts),
            dashboard_address=opts.dashboard_address if opts.dashboard else None,
            # Without a dashboard the scheduler still serves /health and
            # metrics; on a free port of this machine, not on 8787.
            scheduler_kwargs=None if opts.dashboard else {"dashboard_address": "127.0.0.1:0"},
            silence_logs=logging.ERROR,
        )
        client = Client(cluster)
    client.register_plugin(WorkerSetup())
    return client, cluster


def _configure_existing_cluster(client, pipeline: PipelineConfig | None) -> None:
    """Apply the worker hygiene to a cluster someone else started, and check what cannot be applied.

    A running scheduler and its nannies never read the client's
    ``dask.config``: the thread environment goes in as a nanny plugin
    (``Environ``, which restarts the workers that lack it, and is applied to
    workers that join later), the per-worker numba cache and thread limits as
    a worker plugin (:class:`WorkerSetup`, registered by the caller), models
    are warmed in each worker before its first track (the task does it), and
    the scheduler's own retry and saturation settings are compared with the
    pipeline's and a difference is logged.
    """
    from distributed.diagnostics.plugin import Environ

    lacking = [w for w, ok in client.run(_has_thread_env).items() if not ok]
    if lacking:
        log.info("setting one BLAS/OpenMP thread per process on %d worker(s) of %s (they restart once)",
                 len(lacking), client.scheduler.address)
        client.register_plugin(Environ(dict(THREAD_ENV)), name="mirflow-thread-env")
        still = [w for w, ok in client.run(_has_thread_env).items() if not ok]
        if still:
            log.warning("%d worker(s) without a nanny cannot get the thread environment before they start; "
                        "their thread pools are limited in-process instead: %s", len(still), still[:3])
    if pipeline is None:
        return
    settings = client.run_on_scheduler(_scheduler_settings)
    wanted = {"allowed_failures": pipeline.retries, "worker_saturation": 1.0}
    for key, value in wanted.items():
        if settings.get(key) != value:
            log.warning("the scheduler at %s runs with %s = %s, not the %s this pipeline asks for (set "
                        "distributed.scheduler.%s where the scheduler starts); a track that crashes workers "
                        "is retried accordingly", client.scheduler.address, key, settings.get(key), value,
                        key.replace("_", "-"))


def _has_thread_env() -> bool:
    return all(os.environ.get(k) == v for k, v in THREAD_ENV.items())


def _scheduler_settings(dask_scheduler) -> dict[str, Any]:
    return {"allowed_failures": dask_scheduler.allowed_failures,
            "worker_saturation": getattr(dask_scheduler, "WORKER_SATURATION", None)}


def _memory_limit(opts: ClusterOptions) -> str | float | int | None:
    """Per-worker memory limit; ``auto`` shares this machine's memory among the workers.

    Dask's own ``auto`` gives each worker memory × threads / cores, which
    adds up to several times the machine when there are more workers than
    cores; a tenth is left for the scheduler, the client and the system.
    """
    if opts.memory_limit != "auto":
        from dask.utils import parse_bytes
        from distributed.system import MEMORY_LIMIT

        if opts.memory_limit is not None and parse_bytes(str(opts.memory_limit)) * opts.workers > MEMORY_LIMIT:
            log.warning("--memory-limit %s × %d workers is more than this machine's %.1f GiB",
                        opts.memory_limit, opts.workers, MEMORY_LIMIT / 2**30)
        return opts.memory_limit
    from distributed.system import MEMORY_LIMIT

    return int(MEMORY_LIMIT * 0.9 / opts.workers)


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
    expansion = expand(inputs)
    paths = expansion.paths
    summary = RunSummary(run_id=utcnow().strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6], catalog=cat.url,
                         pipeline=cfg.name, pipeline_version=cfg.fingerprint, inputs=len(paths), dry_run=dry_run,
                         input_problems=len(expansion.problems))
    if dry_run:
        manifest = cat.read_manifest()
        if manifest is not None and manifest.get("pipeline") != cfg.name:
            raise ConfigError(f"catalog {cat.url} holds pipeline {manifest.get('pipeline')!r}, not {cfg.name!r}")
        known = cat.known_files()
        hashed = []
        for p in paths:
            rec = _known_record(p, known)
            if rec is None:
                from mirflow.audio.hashing import content_hash
                try:
                    rec = HashRecord(p, content_hash(p))
                except OSError as exc:
                    rec = HashRecord(p, None, error=exc.strerror or str(exc))
            hashed.append(rec)
        plan = make_plan(paths, hashed, cat, cfg, force=force, limit=limit)
        plan.problems = expansion.problems
        _fill_counts(summary, plan)
        summary.wall_seconds = time.perf_counter() - started
        summary.plan = plan
        return summary, plan

    # Before the catalog is bound to the pipeline and anything starts.
    check_requirements(cfg)
    cat.open_for(cfg.name)
    swept = cat.sweep_temporary()
    if swept:
        log.info("removed %d temporary files left by an interrupted run", swept)
    quarantined = cat.quarantine_damaged()
    if quarantined:
        log.warning("moved %d damaged part(s) to %s; their tracks are analyzed again",
                    len(quarantined), cat.root / "_quarantine")
    cat.record_run({"run_id": summary.run_id, "started_at": utcnow().isoformat(), "status": "running",
                    "pipeline_version": cfg.fingerprint, "mirflow_version": __version__, "inputs": len(paths)})
    try:
        for problem in expansion.problems:
            write_error(cat, _error_record(problem.path, None, "input", None, cfg, message=problem.message,
                                           error_type="InputError"))
        plan = _run_stages(paths, cat, cfg, opts, summary, force=force, limit=limit, progress=progress,
                           on_dashboard=on_dashboard)
        plan.problems = expansion.problems
    except BaseException as exc:
        # Whatever stopped the run (an interrupt, a lost scheduler, a full
        # disk), the manifest must not claim it is still running.
        try:
            cat.record_run({"run_id": summary.run_id, "status": "interrupted" if isinstance(exc, KeyboardInterrupt)
                            else "failed", "finished_at": utcnow().isoformat(),
                            "error": f"{type(exc).__name__}: {exc}"[:500]})
        except OSError as manifest_exc:  # a full disk cannot take the manifest either
            log.warning("could not record the run's end in the manifest: %s", manifest_exc)
        raise
    summary.wall_seconds = time.perf_counter() - started
    summary.plan = plan
    run = {"run_id": summary.run_id, "status": "finished", "finished_at": utcnow().isoformat(), **{
        k: v for k, v in summary.to_dict().items() if k not in ("failures", "catalog", "run_id")}}
    cat.record_run(run)
    # Fold the run's per-track parts into large files once there are many
    # (docs/scale.md); another compaction already running does it instead.
    from mirflow.catalog.compact import maybe_compact

    compacted = maybe_compact(cat)
    if compacted is not None:
        log.info("compacted the catalog: %s", compacted)
    return summary, plan


def _run_stages(paths: list[str], cat: Catalog, cfg: PipelineConfig, opts: ClusterOptions, summary: RunSummary,
                *, force: bool, limit: int | None, progress: ProgressCallback | None,
                on_dashboard: Callable[[str], None] | None) -> Plan:
    import dask

    with dask.config.set(_dask_config(cfg, opts)):
        client, local = _start(opts, cfg)
        try:
            summary.dashboard = client.dashboard_link if opts.dashboard else None
            if summary.dashboard and on_dashboard:
                on_dashboard(summary.dashboard)
            log.info("Dask dashboard: %s", summary.dashboard or "off")
            hashed = _hash_stage(client, paths, cat, cfg, progress)
            plan = make_plan(paths, hashed, cat, cfg, force=force, limit=limit)
            _fill_counts(summary, plan)
            if plan.to_analyze:
                _warm_up_stage(client, cfg, progress)
            t_analyze = time.perf_counter()
            changed, read = _analyze_stage(client, plan, cat, cfg, opts, summary, progress)
            summary.analyze_seconds = time.perf_counter() - t_analyze
        finally:
            client.close()
            if local is not None:
                local.close()
    _reconcile(paths, hashed, changed, read, plan, cat, cfg, summary)
    return plan


def _warm_up_stage(client, cfg: PipelineConfig, progress: ProgressCallback | None) -> None:
    """Load models in every worker now, not inside the first tracks' budgets, showing progress.

    One task pinned to each worker, so each finished worker advances the
    progress (model loading takes a minute on a cold machine).
    """
    from distributed import as_completed

    workers = list(client.scheduler_info()["workers"])
    if progress:
        progress("warm-up", 0, len(workers))
    futures = [client.submit(warm_up, cfg, workers=[w], allow_other_workers=False, pure=False,
                             key=f"warm-up-{uuid.uuid4().hex[:8]}") for w in workers]
    for done, fut in enumerate(as_completed(futures), start=1):
        try:
            fut.result()
        except Exception as exc:  # a worker dying here is retried per track below
            log.warning("worker warm-up failed: %s", exc)
        fut.release()
        if progress:
            progress("warm-up", done, len(workers))


def _hash_stage(client, paths: list[str], cat: Catalog, cfg: PipelineConfig,
                progress: ProgressCallback | None) -> list[HashRecord]:
    """Stage 1: hash the paths whose files changed, through a bounded window of batches.

    Each batch's result is released as soon as it is read: its ``files``
    parts are already written, and a result held on a worker that dies
    would make Dask recompute (re-read) the whole batch.
    """
    from distributed import as_completed

    known = cat.known_files()
    hashed, to_hash = [], []
    for p in paths:
        rec = _known_record(p, known)
        (hashed.append(rec) if rec else to_hash.append(p))
    done = len(hashed)
    if progress:
        progress("hash", done, len(paths))
    if not to_hash:
        return hashed
    window = max(2 * (sum(client.nthreads().values()) or 1), 4)
    batches = iter(batched(to_hash, HASH_BATCH))
    in_flight: dict[Any, list[str]] = {}
    ac = as_completed()

    def submit_next() -> None:
        batch = next(batches, None)
        if batch is not None:
            fut = client.submit(hash_paths, batch, cat.url, cfg, pure=False)
            in_flight[fut] = batch
            ac.add(fut)

    for _ in range(window):
        submit_next()
    for fut in ac:
        batch = in_flight.pop(fut)
        try:
            recs = fut.result()
        except CatalogFullError:
            raise
        except Exception as exc:  # the task itself died (its worker crashed): try each path alone
            recs = _hash_one_by_one(client, batch, cat, cfg, exc)
        fut.release()
        hashed.extend(recs)
        done += len(batch)
        if progress:
            progress("hash", done, len(paths))
        submit_next()
    return hashed


def _hash_one_by_one(client, batch: list[str], cat: Catalog, cfg: PipelineConfig,
                     batch_error: BaseException) -> list[HashRecord]:
    """Hash each path of a failed batch in a task of its own, so one bad path fails only itself."""
    log.warning("a hash batch failed (%s: %s); hashing its %d paths one by one",
                type(batch_error).__name__, batch_error, len(batch))
    futures = [client.submit(hash_paths, [p], cat.url, cfg, pure=False) for p in batch]
    recs = []
    for fut, p in zip(futures, batch, strict=True):
        try:
            recs.extend(fut.result())
        except Exception as exc:
            message = f"hashing failed: {type(exc).__name__}: {exc}"
            write_error(cat, _error_record(p, None, "hash", exc, cfg, message=message))
            recs.append(HashRecord(p, None, error=message))
        fut.release()
    return recs


def _analyze_stage(client, plan: Plan, cat: Catalog, cfg: PipelineConfig, opts: ClusterOptions,
                   summary: RunSummary, progress: ProgressCallback | None) -> tuple[set[str], set[str]]:
    """Stage 2: one task per track through a bounded window.

    Returns the paths found changed and every path a task read.
    """
    from distributed import as_completed
    from distributed import wait as distributed_wait

    total = len(plan.to_analyze)
    if progress:
        progress("analyze", 0, total)
    nthreads = sum(client.nthreads().values()) or opts.workers * opts.threads_per_worker
    window = max(2 * nthreads, 4)
    jobs = iter(plan.to_analyze)
    in_flight: dict[Any, TrackJob] = {}
    changed: set[str] = set()
    tried: dict[str, list[str]] = {}
    ac = as_completed()

    def submit(job: TrackJob, key: str) -> None:
        fut = client.submit(analyze_track, job, cat.url, cfg, key=key, pure=False)
        in_flight[fut] = job
        tried.setdefault(job.track_id, []).append(job.path)
        ac.add(fut)

    def submit_next() -> bool:
        job = next(jobs, None)
        if job is None:
            return False
        submit(job, f"analyze-{job.track_id}")
        return True

    for _ in range(window):
        if not submit_next():
            break
    finished = 0
    suspects: list[TrackJob] = []

    def record(fut, job: TrackJob) -> TrackJob | None:
        """Count a finished task; returns the job to try next when its path changed and a copy remains."""
        nonlocal finished
        rec = _result_or_failure(fut, job, cat, cfg)
        fut.release()
        if rec.status == "disk-full":
            raise CatalogFullError(rec.message or f"the catalog's disk is full ({cat.url})")
        if rec.status == "changed":
            # This path no longer holds the track's bytes; another path
            # with the same content may still: analyze the track from there.
            changed.add(job.path)
            others = [p for p in plan.duplicates.get(job.track_id, []) if p not in tried[job.track_id]]
            if others:
                return TrackJob(job.track_id, others[0])
        finished += 1
        if rec.status == "ok":
            summary.analyzed += 1
            summary.audio_seconds += rec.duration_s or 0.0
        if progress:
            progress("analyze", finished, total)
        return None

    for fut in ac:
        job = in_flight.pop(fut)
        if _killed_worker(fut) or fut.status == "lost":
            # A dying worker takes every task it holds with it, so an
            # innocent track can be blamed for its neighbour's crash (how
            # many share a worker depends on the scheduler's saturation,
            # which an existing cluster sets, not us). Every such track gets
            # one more try at the end, alone on the cluster: then a crash
            # can only be its own. A result lost with its worker ("lost")
            # is tried again the same way (its parts are simply rewritten).
            fut.release()
            suspects.append(job)
        elif (again := record(fut, job)) is not None:
            submit(again, f"analyze-{again.track_id}-{len(tried[again.track_id])}")
            continue
        submit_next()
    for suspect in suspects:
        job: TrackJob | None = suspect
        while job is not None:
            tried.setdefault(job.track_id, []).append(job.path)
            fut = client.submit(analyze_track, job, cat.url, cfg, pure=False,
                                key=f"analyze-{job.track_id}-alone-{len(tried[job.track_id])}")
            distributed_wait([fut])
            job = record(fut, job)
    return changed, {p for tried_paths in tried.values() for p in tried_paths}


def _reconcile(paths: list[str], hashed: list[HashRecord], changed: set[str], read: set[str], plan: Plan,
               cat: Catalog, cfg: PipelineConfig, summary: RunSummary) -> None:
    """Leave every input path in exactly one of "a track" or "an error", and count from the tables.

    A path whose track is in the catalog loses any ``errors`` row an earlier
    run left; a path whose track failed under another path (a duplicate)
    gets an ``errors`` row of its own; a path that no task read and that
    changed since it was hashed is recorded as changed, not as the track it
    held; the summary's counts are then those of the tables.
    """
    for rec in hashed:
        path = rec.path
        if rec.track_id is None or path in read or path in changed:
            continue
        try:
            now = file_identity(path)
        except OSError:
            now = None
        if now != rec.identity:
            changed.add(path)
            cat.remove_part("files", path_key(path))
            write_error(cat, _error_record(path, rec.track_id, "changed", None, cfg, error_type="FileChanged",
                                           message="the file changed or vanished after it was hashed; "
                                                   "run again to analyze its new content"))
    tracks = cat.existing_tracks()
    reasons = {path_from_columns(r["path"], r["path_bytes"]): r
               for r in cat.read_table("errors", columns=["path", "path_bytes", "stage", "message",
                                                          "error_type"]).to_pylist()}
    errors = set(reasons)
    track_of = {r.path: r.track_id for r in hashed if r.track_id is not None}
    deferred = {job.track_id for job in plan.deferred}
    failed_paths: list[str] = []
    for path in paths:
        track_id = track_of.get(path)
        if path in changed or track_id is None:
            if path in errors:
                failed_paths.append(path)
            continue
        if tracks.get(track_id) is not None:
            if path in errors:
                cat.remove_part("errors", path_key(path))
            continue
        if track_id in deferred:
            continue
        if path not in errors:
            source = next((p for p in [*(job.path for job in plan.to_analyze if job.track_id == track_id),
                                       *plan.duplicates.get(track_id, [])] if p in reasons), None)
            why = reasons.get(source) if source else None
            message = (f"same bytes as {path_text(source)}, which failed [{why['stage']}]: {why['message']}"
                       if why else "the track with these bytes was not analyzed")
            write_error(cat, _error_record(path, track_id, "duplicate", None, cfg, message=message,
                                           error_type=why["error_type"] if why else "TrackError"))
            reasons[path] = {"stage": "duplicate", "message": message}
        failed_paths.append(path)
    summary.failed = len(failed_paths)
    summary.deferred = len(plan.deferred)
    summary.failures = []
    for path in failed_paths[:50]:
        why = reasons.get(path) or {}
        summary.failures.append({"path": path_text(path), "stage": why.get("stage"), "message": why.get("message")})


def _fill_counts(summary: RunSummary, plan: Plan) -> None:
    summary.unique_tracks = len(plan.to_analyze) + len(plan.skipped) + len(plan.deferred)
    summary.duplicate_paths = sum(len(v) for v in plan.duplicates.values())
    summary.skipped = len(plan.skipped)
    summary.failed = len(plan.unreadable)
    summary.deferred = len(plan.deferred)


def _killed_worker(fut) -> bool:
    from distributed.scheduler import KilledWorker

    return fut.status == "error" and isinstance(fut.exception(), KilledWorker)


def _result_or_failure(fut, job: TrackJob, cat: Catalog, cfg: PipelineConfig) -> TrackResult:
    """The task's record, or a failure record when the task could not return one."""
    try:
        return fut.result()
    except CatalogFullError:
        raise
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
        return TrackResult(job.track_id, job.path, "failed", stage, message)
