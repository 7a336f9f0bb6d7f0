"""Analyze uploads in a separate worker process, so that a decoder crash cannot take the server down.

Native decoders can segfault on malformed files (reported for Essentia's
loaders; see the field notes). The server therefore never decodes an upload
itself: a :class:`AnalysisPool` runs :func:`analyze_upload` in a spawned
worker process (spawn, not fork: the server's threads and DuckDB state must
not be copied into the child), with a wall-time limit. A crashed or stuck
worker is replaced and the request gets a clear error; the models the worker
loaded stay loaded between requests while it lives.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

log = logging.getLogger(__name__)


class AnalysisFailed(Exception):
    """The upload could not be analyzed; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, *, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


class AnalysisPool:
    """A small pool of spawned worker processes with a per-job time limit.

    Parameters
    ----------
    timeout_s : float
        Wall-time limit of one job, counted from when it starts running (jobs
        wait for a free worker first). A job over it has its worker killed.
    max_workers : int
        Worker processes (each loads its own models: keep this at 1–2).
    """

    def __init__(self, *, timeout_s: float, max_workers: int = 1) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.timeout_s = float(timeout_s)
        self.max_workers = int(max_workers)
        self._executor: ProcessPoolExecutor | None = None
        self._slots: asyncio.Semaphore | None = None

    def _ensure(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(max_workers=self.max_workers,
                                                 mp_context=multiprocessing.get_context("spawn"))
        return self._executor

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in a worker process and return its result.

        Raises
        ------
        AnalysisFailed
            504 when the job ran past ``timeout_s``, 422 when the worker process
            died (a native crash on the input). The pool is usable afterwards.
        """
        if self._slots is None:
            # Created here, inside the server's event loop.
            self._slots = asyncio.Semaphore(self.max_workers)
        async with self._slots:
            try:
                future = self._ensure().submit(fn, *args)
            except BrokenProcessPool:
                # The worker died while idle (killed from outside, out of memory):
                # not this job's fault, so start a fresh one for it.
                self._discard(kill=True)
                future = self._ensure().submit(fn, *args)
            try:
                return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout_s)
            except asyncio.TimeoutError:
                log.warning("analysis ran past %.0f s; killing its worker process", self.timeout_s)
                self._discard(kill=True)
                raise AnalysisFailed(f"analysis took longer than {self.timeout_s:g} s and was stopped",
                                     status=504) from None
            except BrokenProcessPool:
                log.warning("the analysis worker process died; starting a new one for the next upload")
                self._discard(kill=True)
                raise AnalysisFailed("the analysis process crashed on this file (a decoder failure?); "
                                     "the file was not analyzed", status=422) from None

    def _discard(self, *, kill: bool) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        if kill:
            killer = getattr(executor, "kill_workers", None)  # Python >= 3.14
            if killer is not None:
                killer()
            else:
                # Before 3.14 a running job cannot be cancelled: end its process directly.
                for process in list((getattr(executor, "_processes", None) or {}).values()):
                    process.kill()
        executor.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Stop the worker processes (running jobs are killed)."""
        self._discard(kill=True)


def analyze_upload(path: str, pipeline: str, embedding: str) -> dict[str, Any]:
    """Worker-process side: analyze ``path`` and return its ``embedding`` vector and summary.

    Every failure comes back as ``{"error": {...}}`` rather than an exception,
    so nothing that cannot be pickled has to cross the process boundary.
    """
    try:
        from mirflow import analyze_file

        tables = analyze_file(path, pipeline=pipeline)
    except Exception as exc:
        from mirflow.errors import ConfigError, ModelUnavailableError, TrackError

        # A problem of the upload is the client's (422); one of the server's
        # set-up (missing model weights, bad pipeline) is the server's.
        status = (503 if isinstance(exc, ModelUnavailableError) else
                  500 if isinstance(exc, ConfigError) else 422)
        return {"error": {"status": status, "type": type(exc).__name__, "message": str(exc),
                          "stage": getattr(exc, "stage", None),
                          "traceback": "" if isinstance(exc, TrackError) else traceback.format_exc()}}
    errors = tables.get("errors")
    if errors is not None and len(errors):
        row = errors.iloc[0]
        return {"error": {"status": 422, "type": str(row.get("error_type", "TrackError")),
                          "message": str(row.get("message", "analysis failed")),
                          "stage": row.get("stage"), "traceback": ""}}
    emb = tables.get("embeddings")
    rows = emb[emb["model"] == embedding] if emb is not None and len(emb) else None
    if rows is None or not len(rows):
        return {"error": {"status": 422, "type": "MissingEmbedding", "stage": None, "traceback": "",
                          "message": f"the analysis produced no {embedding!r} embedding for this file"}}
    row = rows.iloc[0]
    summary: dict[str, Any] = {}
    tracks = tables.get("tracks")
    if tracks is not None and len(tracks):
        first = tracks.iloc[0]
        for column in ("track_id", "duration_s", "tempo_bpm", "key", "key_camelot"):
            if column in tracks.columns:
                summary[column] = first[column]
    return {
        "embedding": [float(v) for v in row["embedding"]],
        "model": embedding,
        "model_version": str(row.get("model_version", "")),
        "track": {k: _plain(v) for k, v in summary.items()},
    }


def _plain(value: Any) -> Any:
    """A pandas/numpy cell as a plain Python value (missing → None)."""
    import pandas as pd

    if value is None or (not isinstance(value, str) and bool(pd.isna(value))):
        return None
    return value.item() if hasattr(value, "item") else value
