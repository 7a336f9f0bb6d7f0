"""Worker-process hygiene, learned the hard way by users of these libraries.

* One BLAS/OpenMP/ONNX thread per worker process: Dask gives parallelism by
  processes; nested thread pools oversubscribe the cores. The environment
  variables must be set before the worker process starts (the nanny's
  ``pre-spawn-environ``); threadpoolctl re-applies the limit in-process.
* A private ``NUMBA_CACHE_DIR`` per worker process, claimed with a lock so
  that two clusters on one machine do not share one: librosa's numba
  functions cache compiled code on disk, and several processes writing one
  cache at once have segfaulted ``beat_track`` under Dask.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from mirflow._env import THREAD_ENV

__all__ = ["THREAD_ENV", "WorkerSetup", "claim_numba_cache_dir", "prepare_process"]

log = logging.getLogger(__name__)

_prepared = False


#: Open lock files of the numba cache folders this process holds (see :func:`claim_numba_cache_dir`).
_held_cache_locks: list[Any] = []


def claim_numba_cache_dir(worker_name: str | None = None) -> Path:
    """A numba cache folder private to one worker process, stable across runs so compiled code is reused.

    Named after the worker (a LocalCluster's workers are ``0``, ``1``, ...),
    and claimed with an exclusive lock held for the life of the process: two
    clusters on one machine (two ``mirflow analyze`` runs at once) name their
    workers alike, so the second one's worker ``0`` takes ``0.1``, the next
    free folder, instead of writing the same cache. Where the lock cannot be
    taken (no ``fcntl``: Windows) the folder is the worker's name alone.
    """
    base = Path(tempfile.gettempdir()) / f"mirflow-numba-{os.getuid() if hasattr(os, 'getuid') else 'u'}"
    name = str(worker_name if worker_name is not None else os.getpid())
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    try:
        import fcntl
    except ImportError:
        return base / safe
    for k in range(64):
        folder = base / (safe if k == 0 else f"{safe}.{k}")
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / ".mirflow-lock", "a")  # held open: the lock lasts as long as this process
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another live process holds this one
            lock.close()
            continue
        _held_cache_locks.append(lock)
        return folder
    return base / f"{safe}.pid{os.getpid()}"


def prepare_process(worker_name: str | None = None) -> None:
    """Apply the worker hygiene in this process (idempotent)."""
    global _prepared
    if _prepared:
        return
    for key, value in THREAD_ENV.items():
        os.environ.setdefault(key, value)
    if "NUMBA_CACHE_DIR" not in os.environ:
        if "numba" in sys.modules:
            log.warning("numba was imported before the worker set NUMBA_CACHE_DIR; the shared cache is used")
        cache = claim_numba_cache_dir(worker_name)
        cache.mkdir(parents=True, exist_ok=True)
        os.environ["NUMBA_CACHE_DIR"] = str(cache)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # threadpoolctl comes with scikit-learn; without it the env vars suffice
        pass
    _prepared = True


class WorkerSetup(WorkerPlugin):
    """Dask worker plugin that prepares each worker process when it starts.

    Registered with ``Client.register_plugin``, it runs on every current and
    future worker (including workers restarted after a crash or recycled by
    ``lifetime``) before any task.
    """

    name = "mirflow-worker-setup"
    idempotent = True

    def setup(self, worker) -> None:  # noqa: D401 - Dask plugin hook
        prepare_process(str(worker.name))

