"""The per-track tasks that run inside Dask workers.

This module is the runtime boundary: it is the only place where per-track
failures are caught. Each task writes its own Parquet parts (so results on a
worker that dies afterwards are not lost, and the client never holds the
catalog in memory) and returns a small record.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mirflow._version import __version__
from mirflow.audio.hashing import content_hash
from mirflow.audio.probe import check_readable, probe
from mirflow.catalog.layout import Catalog, path_key, utcnow
from mirflow.catalog.schema import conform, table_schema
from mirflow.errors import ExtractionError, ProbeError, TrackError, TrackTimeout
from mirflow.pipeline.config import PipelineConfig
from mirflow.pipeline.worker import prepare_process

log = logging.getLogger(__name__)

#: Exit status of a worker killed by the hard-timeout watchdog.
WATCHDOG_EXIT = 70


@dataclass(frozen=True)
class TrackJob:
    """One unit of work: a track (content hash) and the path to read it from."""

    track_id: str
    path: str


def _error_record(path: str, track_id: str | None, stage: str, exc: BaseException,
                  pipeline: PipelineConfig, message: str | None = None) -> dict[str, Any]:
    return {
        "path": path,
        "track_id": track_id,
        "stage": stage,
        "error_type": type(exc).__name__,
        "message": message or (str(exc) or type(exc).__name__),
        "pipeline": pipeline.name,
        "pipeline_version": pipeline.fingerprint,
        "occurred_at": utcnow(),
    }


def write_error(catalog: Catalog, record: dict[str, Any]) -> None:
    """Write (or replace) the errors part of one input path."""
    catalog.write_part("errors", path_key(record["path"]), conform("errors", {k: [v] for k, v in record.items()}))


# --------------------------------------------------------------------- hashing
def hash_paths(paths: list[str], catalog_root: str, pipeline: PipelineConfig) -> list[dict[str, Any]]:
    """Hash a batch of input paths; write their ``files`` parts (or ``errors`` parts).

    Returns one small record per path: ``{path, track_id, size, error}``.
    """
    prepare_process()
    catalog = Catalog(catalog_root)
    out = []
    for path in paths:
        try:
            size = check_readable(Path(path))
            st = os.stat(path)
            track_id = content_hash(path)
        except ProbeError as exc:
            write_error(catalog, _error_record(path, None, "probe", exc, pipeline))
            out.append({"path": path, "track_id": None, "size": None, "error": str(exc)})
            continue
        except OSError as exc:  # vanished or became unreadable between the check and the read
            err = ProbeError(f"cannot read file: {exc.strerror or exc}")
            write_error(catalog, _error_record(path, None, "hash", err, pipeline))
            out.append({"path": path, "track_id": None, "size": None, "error": str(err)})
            continue
        row = {"path": [path], "track_id": [track_id], "file_size_bytes": [size],
               "mtime_ns": [st.st_mtime_ns], "seen_at": [utcnow()]}
        catalog.write_part("files", path_key(path), conform("files", row))
        out.append({"path": path, "track_id": track_id, "size": size, "error": None})
    return out


# --------------------------------------------------------------------- warm-up
def warm_up(pipeline: PipelineConfig) -> float:
    """Import backends and load models in this worker before the first track.

    Runs every extractor once on a few bars of generated music so that imports,
    numba compilation and model loading happen once per worker, up front,
    rather than inside the first track's time budget. Failures are only
    logged: the real tracks will report them properly.
    """
    prepare_process()
    from mirflow.frontend import Frontend
    from mirflow.synth import TrackSpec, render_spec

    started = time.perf_counter()
    # A few bars of generated music rather than noise, so that every
    # extractor runs its whole path (noise ends early with "no tempo/no key"
    # and would leave the beat tracker's and key model's loading to track 1).
    spec = TrackSpec(tempo_bpm=120.0, meter=4, n_bars=4, drums=True, backend="numpy", seed=0)
    frontend = Frontend.from_array(render_spec(spec), spec.sample_rate_hz)
    for ex in pipeline.extractors:
        try:
            ex.extract(frontend)
        except Exception as exc:  # noqa: BLE001 - warm-up only; the tracks report real failures
            log.warning("warm-up of extractor %s failed: %s", ex.name, exc)
    return time.perf_counter() - started


# --------------------------------------------------------------------- analysis
class _Watchdog:
    """Hard per-track time limit.

    Dask has no task timeout and a Python thread cannot be interrupted inside
    native code, so the cooperative check between extractors is backed by a
    watchdog that ends the worker *process* when a track overruns by far;
    Dask then retries the task a bounded number of times and the client
    records it as failed.
    """

    def __init__(self, seconds: float) -> None:
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self.seconds = seconds

    def _fire(self) -> None:
        log.error("track overran its hard time limit of %.0f s; ending the worker process", self.seconds)
        os._exit(WATCHDOG_EXIT)

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


_LINEAGE: dict[tuple[str, str | None], str] = {}


def _lineage(pipeline: PipelineConfig, decoder: str | None) -> str:
    """The lineage JSON of a track; the same for every track of a pipeline, so built once per worker."""
    key = (pipeline.fingerprint, decoder)
    if key not in _LINEAGE:
        import numpy
        import pyarrow

        _LINEAGE[key] = json.dumps({
            "pipeline": pipeline.name,
            "pipeline_version": pipeline.fingerprint,
            "decoder": decoder,
            "resampler": "soxr HQ",
            "libraries": {"numpy": numpy.__version__, "pyarrow": pyarrow.__version__},
            "extractors": [e.lineage() for e in pipeline.extractors],
        }, sort_keys=True, default=str)
    return _LINEAGE[key]


def analyze_track(job: TrackJob, catalog_root: str, pipeline: PipelineConfig) -> dict[str, Any]:
    """Analyze one track and write its parts; never raises for a per-track failure.

    Returns ``{track_id, path, status, stage, message, duration_s, seconds}``
    where ``status`` is ``"ok"`` or ``"failed"``.
    """
    prepare_process()
    from mirflow.frontend import Frontend  # imports librosa lazily, after prepare_process

    catalog = Catalog(catalog_root)
    started = time.perf_counter()
    deadline = started + pipeline.timeout_s
    stage = "probe"
    duration = None
    try:
        with _Watchdog(pipeline.timeout_s * 1.5 + 30.0):
            info = probe(job.path)
            if info.duration_s > pipeline.max_duration_s:
                raise ProbeError(
                    f"too long: {info.duration_s:.0f} s exceeds the pipeline's max_duration_s "
                    f"of {pipeline.max_duration_s:.0f} s"
                )
            stage = "decode"
            frontend = Frontend.from_file(job.path, info=info)
            duration = frontend.duration_s
            columns: dict[str, Any] = {}
            tables: dict[str, dict[str, list[Any]]] = {}
            for ex in pipeline.extractors:
                stage = f"extract:{ex.name}"
                if time.perf_counter() > deadline:
                    raise TrackTimeout(f"exceeded the per-track budget of {pipeline.timeout_s:.0f} s "
                                       f"before {ex.name}")
                try:
                    result = ex.extract(frontend)
                except TrackError:
                    raise
                except MemoryError:
                    raise
                except Exception as exc:  # runtime boundary: a backend's failure is this track's failure
                    log.debug("extractor %s failed on %s:\n%s", ex.name, job.path, traceback.format_exc())
                    raise ExtractionError(f"{type(exc).__name__}: {exc}", stage=stage) from exc
                columns.update(result.columns)
                for table, rows in result.tables.items():
                    merged = tables.setdefault(table, {})
                    for col, values in rows.items():
                        merged.setdefault(col, []).extend(values)
            stage = "write"
            core = {
                "track_id": job.track_id,
                "path": job.path,
                "file_size_bytes": info.file_size_bytes,
                "pipeline": pipeline.name,
                "pipeline_version": pipeline.fingerprint,
                "mirflow_version": __version__,
                "analyzed_at": utcnow(),
                "analysis_sample_rate_hz": pipeline.analysis_sample_rate_hz,
                "downmix": "mean",
                "lineage": _lineage(pipeline, info.decoder),
                "analysis_seconds": time.perf_counter() - started,
            }
            core.update(columns)
            tracks = conform("tracks", {k: [v] for k, v in core.items()}, fill_missing=True)
            # Long tables first, tracks last: a tracks part is the commit
            # marker, so a kill between the two re-analyzes the track and
            # overwrites the long-table parts it had written.
            for table in pipeline.tables:
                _write_long_table(catalog, table, job.track_id, tables.get(table, {}))
            catalog.write_part("tracks", job.track_id, tracks)
            catalog.remove_part("errors", path_key(job.path))
    except TrackError as exc:
        st = exc.stage if exc.stage not in ("extract",) else stage
        write_error(catalog, _error_record(job.path, job.track_id, st, exc, pipeline))
        return {"track_id": job.track_id, "path": job.path, "status": "failed", "stage": st,
                "message": str(exc), "duration_s": duration, "seconds": time.perf_counter() - started}
    except Exception as exc:  # the runtime boundary: anything else is this track's failure too
        write_error(catalog, _error_record(job.path, job.track_id, stage, exc, pipeline,
                                           message=f"{type(exc).__name__}: {exc}"))
        return {"track_id": job.track_id, "path": job.path, "status": "failed", "stage": stage,
                "message": str(exc), "duration_s": duration, "seconds": time.perf_counter() - started}
    return {"track_id": job.track_id, "path": job.path, "status": "ok", "stage": None, "message": None,
            "duration_s": duration, "seconds": time.perf_counter() - started}


def _write_long_table(catalog: Catalog, table: str, track_id: str, rows: dict[str, list[Any]]) -> None:
    """Write one track's rows of a long table, replacing whatever an earlier run left.

    A track without rows (silence: no beats) gets no part, and a stale part
    from an earlier analysis of the same track is removed, so a forced
    re-run never leaves old rows behind.
    """
    spec = table_schema(table)
    n = len(next(iter(rows.values()))) if rows else 0
    data = {"track_id": [track_id] * n, **rows}
    if spec.partition_by is None:
        if n == 0:
            catalog.remove_part(table, track_id)
            return
        catalog.write_part(table, track_id, conform(table, data, sizes=spec.sizes_of(data)))
        return
    # One folder per partition value (e.g. per embedding model: one dimension per folder).
    values = data.get(spec.partition_by, []) if n else []
    for part in sorted(set(values)):
        idx = [i for i, v in enumerate(values) if v == part]
        sub = {c: [vals[i] for i in idx] for c, vals in data.items()}
        catalog.write_part(table, track_id, conform(table, sub, sizes=spec.sizes_of(sub)), partition=str(part))
    for stale in set(catalog.partitions(table)) - {str(v) for v in values}:
        catalog.remove_part(table, track_id, partition=stale)

