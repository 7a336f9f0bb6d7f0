"""A catalog in object storage (``s3://bucket/prefix``): the same layout, written without renames.

Object stores have no rename and no partial objects: a PUT makes the whole
object visible at once, or nothing. So a part is written straight to its
final key (one request, no temporary name), which keeps both guarantees of
the local layout (see :mod:`mirflow.catalog.layout`):

* a reader never sees half a part: an object is whole or absent;
* exactly once: every part has a deterministic key, so a retried or resumed
  task overwrites its own parts, and the ``tracks`` part, written last, is
  the commit marker that makes a track's long-table parts visible.

Compaction (:mod:`mirflow.catalog.compact`) runs the same commit protocol on
S3's conditional requests instead of POSIX renames, hard links and ``flock``:

* a part's identity is its size and ETag (a rewrite gets a new ETag), where a
  file's is its size, mtime and inode;
* the commit record ``CURRENT.json`` is one PUT (atomic);
* a tombstone goes in only where no part is (``PUT If-None-Match: *``), and a
  folded part is deleted only while it is still the folded object
  (``DELETE If-Match: <etag>``): a writer's newer part is never lost;
* one compaction at a time: a lock object created with ``If-None-Match: *``,
  refreshed every :data:`LOCK_HEARTBEAT_S` while the compaction runs and
  taken over when its holder is provably dead (same host, no such process)
  or has not refreshed it for :data:`LOCK_STALE_S`.

What differs otherwise: nothing is left under a temporary name by a killed
writer (so there is nothing to sweep), and damaged parts (a copy cut short by
another tool) are moved by copy + delete. Conditional requests are S3's
(AWS since 2024, MinIO, moto); other fsspec stores are read and written but
not compacted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mirflow.catalog.layout import _HOST, Catalog, LoosePart, _process_alive, table_partitioned
from mirflow.errors import CatalogError
from mirflow.storage import etag_id, filesystem, storage_errors, url_of

log = logging.getLogger(__name__)

#: The compaction lock object, beside ``manifest.json``.
LOCK_OBJECT = ".compact.lock"
#: How often a running compaction refreshes its lock object, and after how long without a refresh
#: another may take it over (a compaction killed on another host).
LOCK_HEARTBEAT_S = 30.0
LOCK_STALE_S = 300.0


def _precondition_failed(exc: BaseException) -> bool:
    """Whether a conditional request was refused (HTTP 412) rather than failed."""
    # s3fs raises FileExistsError("At least one of the pre-conditions you
    # specified did not hold") for a 412; botocore's ClientError names it.
    text = f"{type(exc).__name__} {exc}".lower()
    return "precondition" in text or "pre-condition" in text or " 412" in text


class ObjectCatalog(Catalog):
    """A :class:`Catalog` at an fsspec URL (``s3://``, ``gs://``, ``memory://``, …).

    ``root`` is the catalog's path inside the filesystem (a
    :class:`~pathlib.PurePosixPath`, so the layout's path arithmetic is
    shared); :attr:`url` is the URL workers and messages use.
    """

    def __init__(self, root: str) -> None:
        import pyarrow.fs as pafs

        self.fs, path = filesystem(str(root))
        self.root = PurePosixPath(path)  # type: ignore[assignment]
        self._url = url_of(self.fs, path)
        self._protocol = str(root).split("://", 1)[0].lower()
        # Arrow reads through fsspec, so any fsspec backend serves the readers
        # (pyarrow's own S3 client would need its own configuration).
        self.arrow_fs = pafs.PyFileSystem(pafs.FSSpecHandler(self.fs))

    @property
    def url(self) -> str:
        return self._url

    @property
    def is_local(self) -> bool:
        return False

    def local_root(self, purpose: str) -> Any:
        raise CatalogError(f"{purpose} needs a catalog on a local file system; {self.url} is in object storage "
                           "(copy it locally, e.g. with `aws s3 sync`, and point the command there)")

    def can_compact(self) -> bool:
        return self._protocol in ("s3", "s3a")

    # ----------------------------------------------------------------- listing
    def _listing(self, base: PurePosixPath) -> list[dict[str, Any]]:
        try:
            with storage_errors("list", self.url, missing_ok=True):
                found = self.fs.find(str(base), detail=True)
        except FileNotFoundError:
            return []
        return [info for info in found.values() if info.get("type", "file") == "file"]

    @staticmethod
    def _identity(info: dict[str, Any]) -> tuple[int, int, int]:
        # Objects have no mtime worth trusting to the nanosecond and no inode:
        # size and ETag (new with every write) say whether a part was rewritten.
        return int(info.get("size") or 0), -1, etag_id(str(info.get("ETag") or info.get("etag") or ""))

    def loose_parts(self, table: str, partition: str | None = None, *, with_stat: bool = False) -> list[LoosePart]:
        base = self.table_dir(table)
        depth = 3 if table_partitioned(table) else 2  # [partition/]shard/key.parquet
        out = []
        for info in self._listing(base):
            rel = PurePosixPath(info["name"]).relative_to(base)
            parts = rel.parts
            if len(parts) != depth or not parts[-1].endswith(".parquet") or \
                    any(p.startswith(("_", ".")) for p in parts):
                continue
            part = parts[0] if depth == 3 else None
            if partition is not None and part != partition:
                continue
            out.append(LoosePart(base / rel, parts[-1][:-len(".parquet")], part, str(rel), *self._identity(info)))
        return out

    def part_identity(self, path: PurePosixPath) -> tuple[int, int, int]:  # type: ignore[override]
        with storage_errors("read", self.url, missing_ok=True):
            return self._identity(self.fs.info(str(path)))

    def is_dir(self, path: PurePosixPath) -> bool:  # type: ignore[override]
        with storage_errors("list", self.url, missing_ok=True):
            return bool(self.fs.isdir(str(path)))

    def list_dirs(self, path: PurePosixPath) -> list[PurePosixPath]:  # type: ignore[override]
        try:
            with storage_errors("list", self.url, missing_ok=True):
                entries = self.fs.ls(str(path), detail=True)
        except FileNotFoundError:
            return []
        return [PurePosixPath(e["name"]) for e in entries if e.get("type") == "directory"]

    # ----------------------------------------------------------------- writes
    def write_part(self, table: str, key: str, data: pa.Table, partition: str | None = None) -> PurePosixPath:
        """Write ``data`` as the part ``key`` of ``table``: one PUT, visible whole or not at all."""
        path = self.part_path(table, key, partition)
        self._put(path, _parquet_bytes(data, compression="zstd"))
        return path

    def _put(self, path: PurePosixPath, data: bytes) -> None:
        with storage_errors("write to", self.url):
            self.fs.pipe_file(str(path), data)

    def delete(self, path: PurePosixPath) -> bool:  # type: ignore[override]
        try:
            with storage_errors("delete from", self.url, missing_ok=True):
                self.fs.rm_file(str(path))
        except FileNotFoundError:
            return False
        return True

    def sweep_temporary(self, *, max_age_s: float = 24 * 3600.0) -> int:
        return 0  # parts are written in one request under their final key: nothing temporary to sweep

    def _move(self, source: PurePosixPath, target: PurePosixPath) -> None:  # type: ignore[override]
        with storage_errors("move within", self.url):
            self.fs.mv(str(source), str(target))

    def make_dirs(self, path: PurePosixPath) -> None:  # type: ignore[override]
        pass  # object stores have no folders: a key's prefix exists once an object has it

    def remove_tree(self, path: PurePosixPath) -> None:  # type: ignore[override]
        with contextlib.suppress(FileNotFoundError), storage_errors("delete from", self.url, missing_ok=True):
            self.fs.rm(str(path), recursive=True)

    def write_parquet(self, data: pa.Table, path: PurePosixPath, **options: Any) -> int:  # type: ignore[override]
        body = _parquet_bytes(data, **options)
        self._put(path, body)
        return len(body)

    def write_json_atomic(self, path: PurePosixPath, obj: Any) -> None:  # type: ignore[override]
        self._put(path, json.dumps(obj, indent=1).encode("utf-8"))  # one PUT: the old object or the new one

    def sync_dir(self, path: PurePosixPath) -> None:  # type: ignore[override]
        pass  # an acknowledged PUT is durable

    def _split(self, path: PurePosixPath) -> tuple[str, str]:
        bucket, key, _ = self.fs.split_path(str(path))
        return bucket, key

    def _conditional(self, action: str, method: str, path: PurePosixPath, **request: Any) -> dict[str, Any] | None:
        """One conditional S3 request (``If-Match``/``If-None-Match``); ``None`` when S3 refused it (HTTP 412)."""
        bucket, key = self._split(path)
        try:
            with storage_errors(action, self.url):
                try:
                    return self.fs.call_s3(method, Bucket=bucket, Key=key, **request)
                except Exception as exc:
                    if _precondition_failed(exc):
                        return None
                    raise
        finally:
            self.fs.invalidate_cache()

    def put_if_absent(self, path: PurePosixPath, data: pa.Table) -> bool:  # type: ignore[override]
        return self._conditional("write to", "put_object", path, Body=_parquet_bytes(data), IfNoneMatch="*") \
            is not None

    def delete_if_unchanged(self, part: LoosePart) -> bool:  # type: ignore[override]
        """Delete a folded part only while it is the object that was folded (``DELETE If-Match``)."""
        try:
            with storage_errors("read", self.url, missing_ok=True):
                info = self.fs.info(str(part.path))
        except FileNotFoundError:
            return False
        if self._identity(info) != (part.size, part.mtime_ns, part.inode):
            return False  # a writer replaced it since the listing: it is live and stays
        return self._conditional("delete from", "delete_object", part.path, IfMatch=str(info["ETag"])) is not None

    # ----------------------------------------------------------------- the compaction lock
    @property
    def _lock_path(self) -> PurePosixPath:
        return self.root / LOCK_OBJECT

    def _lock_holder(self) -> tuple[dict[str, Any], str, float] | None:
        """``(body, etag, age_s)`` of the lock object, or ``None`` when there is none."""
        try:
            with storage_errors("read", self.url, missing_ok=True):
                info = self.fs.info(str(self._lock_path))
                body = json.loads(self.fs.cat_file(str(self._lock_path)))
        except FileNotFoundError:
            return None
        except ValueError:
            body = {}
        modified = info.get("LastModified")
        age = (dt.datetime.now(dt.timezone.utc) - modified).total_seconds() if hasattr(modified, "tzinfo") else 0.0
        return body, str(info.get("ETag")), age

    @staticmethod
    def _holder_dead(body: dict[str, Any], age_s: float) -> bool:
        if age_s > LOCK_STALE_S:
            return True
        if body.get("host") == _HOST and str(body.get("pid", "")).isdigit():
            return not _process_alive(int(body["pid"]))
        return False

    def compaction_running(self) -> bool:
        holder = self._lock_holder()
        return holder is not None and not self._holder_dead(holder[0], holder[2])

    @contextlib.contextmanager
    def compaction_lock(self, *, wait: bool) -> Iterator[None]:
        """Hold the catalog's compaction lock object (see the module docstring)."""
        from mirflow.catalog.compact import CompactionBusy

        lock = self._lock_path
        started_at = dt.datetime.now(dt.timezone.utc).isoformat()

        def body() -> bytes:  # the refresh time in it: every refresh is a new ETag
            return json.dumps({"host": _HOST, "pid": os.getpid(), "started_at": started_at,
                               "refreshed_at": dt.datetime.now(dt.timezone.utc).isoformat()}).encode()

        while True:
            created = self._conditional("write to", "put_object", lock, Body=body(), IfNoneMatch="*")
            if created is not None:
                etag = created["ETag"]
                break
            holder = self._lock_holder()
            if holder is not None and self._holder_dead(holder[0], holder[2]):
                log.warning("taking over the compaction lock of a dead compaction (%s)", holder[0])
                self._conditional("delete from", "delete_object", lock, IfMatch=holder[1])
                continue
            if not wait:
                since = (holder or ({}, "", 0.0))[0].get("started_at", "?")
                raise CompactionBusy(f"another compaction of {self.url} is running (since {since}; lock object "
                                     f"{self.url}/{LOCK_OBJECT}); wait for it, or use --wait") from None
            time.sleep(1.0)
        state = {"etag": etag}
        stop = threading.Event()

        def heartbeat() -> None:
            while not stop.wait(LOCK_HEARTBEAT_S):
                try:
                    refreshed = self._conditional("write to", "put_object", lock, Body=body(),
                                                  IfMatch=state["etag"])
                except CatalogError as exc:  # logged; the lock then goes stale after LOCK_STALE_S
                    log.warning("could not refresh the compaction lock: %s", exc)
                    continue
                if refreshed is None:
                    log.warning("the compaction lock of %s was taken over by another process", self.url)
                    return
                state["etag"] = refreshed["ETag"]

        beat = threading.Thread(target=heartbeat, name="mirflow-compaction-lock", daemon=True)
        beat.start()
        try:
            yield
        finally:
            stop.set()
            beat.join()
            with contextlib.suppress(CatalogError):
                self._conditional("delete from", "delete_object", lock, IfMatch=state["etag"])

    # ----------------------------------------------------------------- reads
    def file_size(self, path: PurePosixPath) -> int:  # type: ignore[override]
        return int(self.fs.size(str(path)))

    def usage(self) -> tuple[int, int]:
        found = self._listing(self.root)
        return sum(int(i.get("size") or 0) for i in found), len(found)

    def part_intact(self, path: PurePosixPath) -> bool:  # type: ignore[override]
        """Whether the object is a whole Parquet file: the magic bytes at both ends (two range reads)."""
        try:
            size = int(self.fs.size(str(path)))
            if size < 12:
                return False
            return (self.fs.cat_file(str(path), start=0, end=4) == b"PAR1"
                    and self.fs.cat_file(str(path), start=size - 4, end=size) == b"PAR1")
        except (OSError, ValueError):
            return False

    def _exists(self, path: PurePosixPath) -> bool:  # type: ignore[override]
        with storage_errors("read", self.url, missing_ok=True):
            return bool(self.fs.exists(str(path)))

    def _read_bytes(self, path: PurePosixPath) -> bytes | None:  # type: ignore[override]
        try:
            with storage_errors("read", self.url, missing_ok=True):
                return self.fs.cat_file(str(path))
        except FileNotFoundError:
            return None

    def _is_empty(self) -> bool:
        try:
            with storage_errors("list", self.url, missing_ok=True):
                return not self.fs.ls(str(self.root))
        except FileNotFoundError:
            return True

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        # One PUT: readers see the old manifest or the new one.
        self._put(self.manifest_path, json.dumps(manifest, indent=2, default=str).encode("utf-8"))


def _parquet_bytes(data: pa.Table, **options: Any) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(data, sink, **options)
    return sink.getvalue().to_pybytes()
