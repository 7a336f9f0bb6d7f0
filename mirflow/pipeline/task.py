"""The per-track tasks that run inside Dask workers.

This module is the runtime boundary: it is the only place where per-track
failures are caught. Each task writes its own Parquet parts (so results on a
worker that dies afterwards are not lost, and the client never holds the
catalog in memory) and returns a small record.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from mirflow._version import __version__
from mirflow.audio.decode import iter_windows
from mirflow.audio.hashing import content_hash
from mirflow.audio.probe import check_readable, probe
from mirflow.catalog.layout import (
    Catalog,
    path_columns,
    path_from_columns,
    path_key,
    path_text,
    utcnow,
)
from mirflow.catalog.schema import conform, table_schema
from mirflow.errors import CatalogFullError, ExtractionError, ProbeError, TrackError, TrackTimeout
from mirflow.extractors.base import Extraction, WindowPart
from mirflow.pipeline.config import PipelineConfig
from mirflow.pipeline.worker import prepare_process
from mirflow.storage import is_url, local_copy, object_identity

log = logging.getLogger(__name__)

#: Exit status of a worker killed by the hard-timeout watchdog.
WATCHDOG_EXIT = 70


@dataclass(frozen=True)
class TrackJob:
    """One unit of work: a track (content hash) and the path to read it from."""

    track_id: str
    path: str


@dataclass(frozen=True)
class HashRecord:
    """What hashing one input path found: its track, or why not (the path's ``errors`` row is written)."""

    path: str
    track_id: str | None
    size: int | None = None
    error: str | None = None
    #: ``(size, mtime_ns, ctime_ns, inode)`` when hashed; the run checks it again for paths no task reads.
    identity: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class TrackResult:
    """What analyzing one track did; tasks return this small record, never the rows."""

    track_id: str
    path: str
    #: ``ok``, ``failed``, ``changed`` (the file no longer holds the track's bytes) or
    #: ``disk-full`` (the catalog's disk filled up: the run stops).
    status: str
    stage: str | None = None
    message: str | None = None
    duration_s: float | None = None
    seconds: float = 0.0


def _error_record(path: str, track_id: str | None, stage: str, exc: BaseException | None,
                  pipeline: PipelineConfig, message: str | None = None,
                  error_type: str | None = None) -> dict[str, Any]:
    return {
        **path_columns(path),
        "track_id": track_id,
        "stage": stage,
        "error_type": error_type or type(exc).__name__,
        "message": message or (str(exc) or type(exc).__name__),
        "pipeline": pipeline.name,
        "pipeline_version": pipeline.fingerprint,
        "occurred_at": utcnow(),
    }


def write_error(catalog: Catalog, record: dict[str, Any]) -> None:
    """Write (or replace) the errors part of one input path."""
    path = path_from_columns(record["path"], record.get("path_bytes"))
    catalog.write_part("errors", path_key(path), conform("errors", {k: [v] for k, v in record.items()}))


class FileChanged(TrackError):
    """The file's bytes changed between hashing and analysis (or during either)."""

    stage = "changed"


def file_identity(path: str) -> tuple[int, int, int, int]:
    """``(size, mtime_ns, ctime_ns, inode)``: any write or replacement of the file changes it.

    For an object-storage URL, :func:`mirflow.storage.object_identity` (its ETag stands in for the inode).
    """
    if is_url(path):
        return object_identity(path)
    st = os.stat(path)
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


# --------------------------------------------------------------------- hashing
def hash_paths(paths: list[str], catalog_root: str, pipeline: PipelineConfig) -> list[HashRecord]:
    """Hash a batch of input paths; write their ``files`` parts (or ``errors`` parts).

    Returns one small record per path.
    A failure of one path (unreadable, vanished, changed while read, or any
    unexpected error) is that path's ``errors`` row; it never fails the batch.
    """
    prepare_process()
    catalog = Catalog(catalog_root)
    return [_hash_one(path, catalog, pipeline) for path in paths]


def _hash_one(path: str, catalog: Catalog, pipeline: PipelineConfig) -> HashRecord:
    stage = "probe"
    try:
        if is_url(path):
            if file_identity(path)[0] == 0:
                raise ProbeError("empty file (0 bytes)")
        else:
            check_readable(Path(path))
        stage = "hash"
        before = file_identity(path)
        size = before[0]
        track_id = content_hash(path)
        after = file_identity(path)
        if before != after:
            raise FileChanged("the file changed while it was hashed; run again once it is complete")
        row = {**path_columns(path), "track_id": track_id, "file_size_bytes": size, "mtime_ns": after[1],
               "ctime_ns": after[2], "inode": after[3], "seen_at": utcnow()}
        catalog.write_part("files", path_key(path), conform("files", {k: [v] for k, v in row.items()}))
        return HashRecord(path, track_id, size, identity=after)
    except CatalogFullError:
        raise  # not this path's failure: the whole run stops
    except Exception as exc:  # the runtime boundary of one path
        if isinstance(exc, TrackError):
            err: BaseException = exc
            stage = exc.stage
        elif isinstance(exc, OSError):  # vanished or became unreadable between the check and the read
            err = ProbeError(f"cannot read file: {exc.strerror or exc}")
        else:
            err = exc
        message = str(err) if isinstance(err, TrackError) else f"{type(err).__name__}: {err}"
        write_error(catalog, _error_record(path, None, stage, err, pipeline, message=message))
        return HashRecord(path, None, error=message)


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
    _WARMED.add(pipeline.fingerprint)
    return time.perf_counter() - started


#: Pipeline fingerprints this process has warmed up for.
_WARMED: set[str] = set()


def ensure_warm(pipeline: PipelineConfig) -> None:
    """Warm this worker process up once per pipeline, outside any track's time budget."""
    if pipeline.fingerprint not in _WARMED:
        warm_up(pipeline)


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


def extract_track(path: str, track_id: str, pipeline: PipelineConfig, *,
                  deadline: float | None = None, started: float | None = None,
                  ) -> tuple[pa.Table, dict[str, dict[str, list[Any]]], float]:
    """Probe, decode once and run every extractor on one file; write nothing.

    The bytes decoded are checked to be the bytes hashed as ``track_id``:
    the file's identity (size, mtime, ctime, inode) is taken before the hash
    and compared after decoding, so a file replaced or rewritten at any
    moment in between is a :class:`FileChanged`, never analyzed under the
    id of other content.

    Returns
    -------
    tracks : pyarrow.Table
        The one conformed ``tracks`` row.
    tables : dict
        Rows of each long table, by table name.
    duration_s : float
        Decoded duration.

    Raises
    ------
    TrackError
        Any per-track failure, with its stage.
    """
    started = time.perf_counter() if started is None else started
    deadline = started + pipeline.timeout_s if deadline is None else deadline
    with contextlib.ExitStack() as stack:
        return _extract(path, track_id, pipeline, stack, deadline=deadline, started=started)


def _extract(path: str, track_id: str, pipeline: PipelineConfig, stack: contextlib.ExitStack, *,
             deadline: float, started: float) -> tuple[pa.Table, dict[str, dict[str, list[Any]]], float]:
    from mirflow.frontend import Frontend  # imports librosa lazily, after prepare_process

    limits = pipeline.decode_limits
    stage = "probe"
    try:
        identity = file_identity(path)
        # The decoders read files: an object is downloaded once into a private
        # temporary file (kept until the extractors are done), which is then
        # probed, hashed and decoded; the object's identity is checked after.
        local = stack.enter_context(local_copy(path)) if is_url(path) else path
        info = probe(local)
        limits.check(info)
        stage = "changed"
        # Re-hashing costs one more read of the file (page-cached, ~1 GB/s);
        # it is what makes the stored analysis belong to the stored id.
        actual = content_hash(local)
        if actual != track_id:
            raise FileChanged(f"the file changed after it was hashed (content {track_id} is now {actual}); "
                              "run again to analyze the new content")
        stage = "decode"
        if pipeline.windowed(info.duration_s):
            results, duration_s = _extract_windows(local, info, pipeline, deadline=deadline)
        else:
            frontend = Frontend.from_file(local, info=info, limits=limits)
            duration_s = frontend.duration_s
            results = _run_extractors(frontend, pipeline, deadline=deadline, path=path)
            del frontend  # the decoded audio and its spectrograms: not held while the row is built
        if file_identity(path) != identity:
            raise FileChanged("the file changed while it was being analyzed; run again once it is complete")
    except FileNotFoundError:
        raise ProbeError(f"file vanished: {path_text(path)}", stage=stage) from None
    except OSError as exc:
        raise ProbeError(f"cannot read file: {exc.strerror or exc}", stage=stage) from None
    columns: dict[str, Any] = {}
    tables: dict[str, dict[str, list[Any]]] = {}
    reasons: list[str] = []
    for ex, result in zip(pipeline.extractors, results, strict=True):
        columns.update(result.columns)
        reasons.extend(f"{ex.name}: {r}" for r in result.reasons)
        for table, rows in result.tables.items():
            merged = tables.setdefault(table, {})
            for col, values in rows.items():
                merged.setdefault(col, []).extend(values)
    core = {
        "track_id": track_id,
        **path_columns(path),
        "file_size_bytes": info.file_size_bytes,
        "pipeline": pipeline.name,
        "pipeline_version": pipeline.fingerprint,
        "mirflow_version": __version__,
        "analyzed_at": utcnow(),
        "downmix": "mean",
        "lineage": _lineage(pipeline, info.decoder),
        "analysis_seconds": time.perf_counter() - started,
        "empty_reasons": reasons,
    }
    core.update(columns)
    try:
        tracks = conform("tracks", {k: [v] for k, v in core.items()}, fill_missing=True)
    except Exception as exc:
        raise ExtractionError(f"{type(exc).__name__}: {exc}", stage="write") from exc
    return tracks, tables, duration_s


def _run_extractors(frontend: Any, pipeline: PipelineConfig, *, deadline: float, path: str) -> list[Extraction]:
    """Every extractor of ``pipeline`` on one frontend (a track or one window of it), within the deadline."""
    results = []
    for ex in pipeline.extractors:
        stage = f"extract:{ex.name}"
        if time.perf_counter() > deadline:
            raise TrackTimeout(f"exceeded the per-track budget of {pipeline.timeout_s:.0f} s before {ex.name}")
        try:
            results.append(ex.extract(frontend))
        except (TrackError, MemoryError):
            raise
        except Exception as exc:  # runtime boundary: a backend's failure is this track's failure
            log.debug("extractor %s failed on %s:\n%s", ex.name, path_text(path), traceback.format_exc())
            raise ExtractionError(f"{type(exc).__name__}: {exc}", stage=stage) from exc
    return results


def _extract_windows(local: str, info: Any, pipeline: PipelineConfig, *,
                     deadline: float) -> tuple[list[Extraction], float]:
    """Decode and analyze a long track window by window (:func:`~mirflow.audio.decode.iter_windows`), then merge.

    One window's audio and spectrograms are in memory at a time; what is
    kept of each window is its extractors' results. A track that turns out
    to fit in one window (a stream of unknown length) keeps that window's
    results as they are, the same as a whole-track analysis.
    """
    from mirflow.frontend import Frontend

    assert pipeline.window_s is not None
    parts: list[list[WindowPart]] = [[] for _ in pipeline.extractors]
    windows = iter_windows(local, window_s=pipeline.window_s, context_s=pipeline.window_context_s, info=info,
                           limits=pipeline.decode_limits)
    try:
        for window in windows:  # decode errors (truncation, limits) surface here, as in a whole decode
            frontend = Frontend(window.audio, info, local, window=window)
            results = _run_extractors(frontend, pipeline, deadline=deadline, path=local)
            del frontend
            for bucket, result in zip(parts, results, strict=True):
                bucket.append(WindowPart(start_s=window.start_s, core_start_s=window.core_start_s,
                                         core_end_s=window.core_end_s,
                                         end_s=window.start_s + window.audio.duration_s, extraction=result))
            log.debug("analyzed window %.0f-%.0f s of %s", window.core_start_s, window.core_end_s,
                      path_text(local))
    finally:
        windows.close()
    duration_s = parts[0][-1].core_end_s
    if len(parts[0]) == 1:
        return [bucket[0].extraction for bucket in parts], duration_s
    merged = []
    for ex, bucket in zip(pipeline.extractors, parts, strict=True):
        try:
            merged.append(ex.merge(bucket))
        except (TrackError, MemoryError):
            raise
        except Exception as exc:  # runtime boundary, as for extract
            log.debug("merging %s failed on %s:\n%s", ex.name, path_text(local), traceback.format_exc())
            raise ExtractionError(f"{type(exc).__name__}: {exc}", stage=f"extract:{ex.name}") from exc
    return merged, duration_s


def analyze_track(job: TrackJob, catalog_root: str, pipeline: PipelineConfig) -> TrackResult:
    """Analyze one track and write its parts; never raises for a per-track failure.

    A ``changed`` result means the file's bytes are no longer those of
    ``track_id``: its ``files`` part is removed so that the next run hashes
    it anew.
    """
    prepare_process()
    ensure_warm(pipeline)  # a worker that joined after the warm-up stage loads its models here
    catalog = Catalog(catalog_root)
    started = time.perf_counter()
    duration = None
    stage = "probe"
    try:
        with _Watchdog(pipeline.timeout_s * 1.5 + 30.0):
            tracks, tables, duration = extract_track(job.path, job.track_id, pipeline, started=started)
            stage = "write"
            # Long tables first, tracks last: a tracks part is the commit
            # marker, so a kill between the two re-analyzes the track and
            # overwrites the long-table parts it had written.
            for table in pipeline.tables:
                _write_long_table(catalog, table, job.track_id, tables.get(table, {}),
                                  pipeline_version=pipeline.fingerprint)
            catalog.write_part("tracks", job.track_id, tracks)
            catalog.remove_part("errors", path_key(job.path))
    except CatalogFullError as exc:
        # Not this track's failure, and no error row could be written either:
        # the run stops; parts written so far have no tracks row, so no
        # reader serves them, and the resumed run overwrites them.
        return TrackResult(job.track_id, job.path, "disk-full", "write", str(exc), duration,
                           time.perf_counter() - started)
    except TrackError as exc:
        st = exc.stage if exc.stage not in ("extract",) else stage
        write_error(catalog, _error_record(job.path, job.track_id, st, exc, pipeline))
        status = "failed"
        if isinstance(exc, FileChanged):
            catalog.remove_part("files", path_key(job.path))
            status = "changed"
        return TrackResult(job.track_id, job.path, status, st, str(exc), duration, time.perf_counter() - started)
    except Exception as exc:  # the runtime boundary: anything else is this track's failure too
        write_error(catalog, _error_record(job.path, job.track_id, stage, exc, pipeline,
                                           message=f"{type(exc).__name__}: {exc}"))
        return TrackResult(job.track_id, job.path, "failed", stage, str(exc), duration, time.perf_counter() - started)
    return TrackResult(job.track_id, job.path, "ok", duration_s=duration, seconds=time.perf_counter() - started)


def long_table_rows(table: str, track_id: str, rows: dict[str, list[Any]], *,
                    pipeline_version: str | None = None) -> list[tuple[str | None, pa.Table]]:
    """One track's rows of a long table, conformed: ``[(partition or None, table)]`` (empty: no rows).

    ``pipeline_version`` (the pipeline's fingerprint) is stored in each
    part's schema metadata (``mirflow.pipeline_version``) and carried into
    compacted files as a hidden column: readers serve a long-table row only
    when it matches the fingerprint of the track's ``tracks`` row, so rows
    an extractor left under an older pipeline are never served as current.
    """
    from mirflow.catalog.layout import VERSION_META

    spec = table_schema(table)
    n = len(next(iter(rows.values()))) if rows else 0
    if n == 0:
        return []
    data = {"track_id": [track_id] * n, **rows}

    def stamped(t: pa.Table) -> pa.Table:
        if pipeline_version is None:
            return t
        return t.replace_schema_metadata({**(t.schema.metadata or {}), VERSION_META: pipeline_version.encode()})

    if spec.partition_by is None:
        return [(None, stamped(conform(table, data, sizes=spec.sizes_of(data))))]
    values = data[spec.partition_by]
    out = []
    for part in sorted(set(values)):
        idx = [i for i, v in enumerate(values) if v == part]
        sub = {c: [vals[i] for i in idx] for c, vals in data.items()}
        out.append((str(part), stamped(conform(table, sub, sizes=spec.sizes_of(sub)))))
    return out


def analyze_file(path: str | os.PathLike[str], pipeline: str | os.PathLike[str] | PipelineConfig = "default",
                 ) -> dict[str, pd.DataFrame]:
    """Analyze one file in this process, without a catalog: the rows a catalog would get.

    Parameters
    ----------
    path : str or path-like
        An audio file.
    pipeline : str, path-like or PipelineConfig
        A shipped pipeline name, a pipeline YAML file, or a loaded pipeline.

    Returns
    -------
    dict of str to pandas.DataFrame
        ``"tracks"`` (one row) and every long table the pipeline writes
        (``beats``, ``chords``, ``embeddings``, …; empty frames where the
        track has no rows), each with the columns of its schema.

    Raises
    ------
    mirflow.TrackError
        When the file cannot be analyzed (its stage says where).
    """
    from mirflow.audio.hashing import content_hash
    from mirflow.pipeline.config import load_pipeline

    cfg = pipeline if isinstance(pipeline, PipelineConfig) else load_pipeline(pipeline)
    text = os.fspath(path)
    if not is_url(text):
        text = os.path.abspath(os.path.expanduser(text))
        check_readable(Path(text))
    tracks, tables, _ = extract_track(text, content_hash(text), cfg)
    out = {"tracks": tracks.to_pandas()}
    for table in cfg.tables:
        parts = long_table_rows(table, tracks["track_id"][0].as_py(), tables.get(table, {}))
        if parts:
            out[table] = pa.concat_tables([t for _, t in parts], promote_options="permissive").to_pandas()
        else:
            out[table] = table_schema(table).empty_table().to_pandas()
    return out


def _write_long_table(catalog: Catalog, table: str, track_id: str, rows: dict[str, list[Any]], *,
                      pipeline_version: str | None = None) -> None:
    """Write one track's rows of a long table, replacing whatever an earlier run left.

    A track without rows (silence: no beats) gets no part, and a stale part
    from an earlier analysis of the same track is removed, so a forced
    re-run never leaves old rows behind.
    """
    spec = table_schema(table)
    parts = long_table_rows(table, track_id, rows, pipeline_version=pipeline_version)
    if spec.partition_by is None:
        if not parts:
            catalog.remove_part(table, track_id)
        for _, data in parts:
            catalog.write_part(table, track_id, data)
        return
    # One folder per partition value (e.g. per embedding model: one dimension per folder).
    for part, data in parts:
        catalog.write_part(table, track_id, data, partition=part)
    for stale in set(catalog.partitions(table)) - {part for part, _ in parts}:
        catalog.remove_part(table, track_id, partition=stale)
