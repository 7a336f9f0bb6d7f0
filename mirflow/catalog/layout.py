"""On-disk layout of a catalog, atomic part writes, and the manifest.

::

    CATALOG/
      manifest.json                  schema versions, pipeline, run history
      tracks/ab/<track_id>.parquet   one part per track (written last: the commit marker)
      beats/ab/<track_id>.parquet    long tables, one part per track
      embeddings/<model>/ab/<track_id>.parquet   tables with `partition_by` in their schema
      files/cd/<path_key>.parquet    one part per input path
      errors/cd/<path_key>.parquet   one part per failed input path

Every part has a deterministic name, so a re-executed task overwrites its
own parts instead of adding rows: a track is in the catalog exactly once
however often it is retried, resumed or forced. A part is written to a
temporary file in the same folder and renamed into place, so a reader never
sees half a file and a killed writer leaves only a ``.tmp`` file behind
(swept by the next run). The two-character shard folder keeps folders small
on catalogs of millions of tracks.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from mirflow._version import __version__
from mirflow.catalog.schema import load_schemas
from mirflow.errors import CatalogError, CatalogFullError
from mirflow.storage import is_url

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "mirflow-catalog"
FORMAT_VERSION = 1
#: Tables whose parts are keyed by input path rather than by track.
PATH_TABLES = ("files", "errors")


def python_backed(filesystem: Any) -> bool:
    """Whether Arrow reads ``filesystem`` through Python (a catalog in object storage, via fsspec).

    Arrow's dataset reader (``pq.read_table``, ``ds.dataset``) and threaded
    decoding hand the last reference to an opened file to its own thread
    pools, which may drop it after the call has returned. Dropping a
    Python-backed file takes the GIL; a pool thread that asks for it while
    the interpreter finalizes is ended by a forced unwind that aborts the
    process ("terminate called without an active exception", exit -6:
    CPython 3.11's ``PyThread_exit_thread`` under a C++ ``noexcept``
    destructor, seen in ``PyReadableFile::~PyReadableFile`` with gdb). Reads
    of such a filesystem therefore stay on the calling thread (see
    :func:`read_parquet`).
    """
    import pyarrow.fs as pafs

    return isinstance(filesystem, pafs.PyFileSystem)


def open_parquet(path: str | os.PathLike[str], *, filesystem: Any = None) -> pq.ParquetFile:
    """``pq.ParquetFile`` of one catalog file; without pre-buffering where Arrow reads through Python.

    Pre-buffering reads ahead on Arrow's I/O threads, which then hold the
    file (see :func:`python_backed`). Read such a file with ``use_threads=False``.
    """
    return pq.ParquetFile(str(path), filesystem=filesystem, pre_buffer=not python_backed(filesystem))


def read_parquet(path: str | os.PathLike[str], *, filesystem: Any = None, columns: list[str] | None = None,
                 filters: list[tuple[str, str, Any]] | None = None) -> pa.Table:
    """Read one Parquet file of a catalog: ``pq.read_table``, or on this thread where Arrow reads through Python.

    ``filters`` are pyarrow's DNF tuples. Through a Python-backed filesystem
    (:func:`python_backed`) the file is read by ``pq.ParquetFile`` without
    threads and filtered afterwards, so that every reference Arrow holds is
    dropped before this returns (:func:`open_parquet`): against a moto S3
    server, 11 of 60 interpreters that had read one compacted file with
    ``pq.read_table`` aborted at exit, 3 of 60 with a threaded
    ``ParquetFile.read``, none this way (stop 33). Row-group pruning by
    statistics is lost there, not the column projection: only the columns
    asked for (and filtered on) are fetched.
    """
    if not python_backed(filesystem):
        return pq.read_table(str(path), columns=columns, filters=filters, filesystem=filesystem)
    wanted = None if columns is None else list(columns)
    read = wanted if wanted is None or not filters else list(dict.fromkeys([*wanted, *(f[0] for f in filters)]))
    data = open_parquet(path, filesystem=filesystem).read(columns=read, use_threads=False)
    if filters:
        data = data.filter(pq.filters_to_expression(filters))
        if wanted is not None:
            data = data.select(wanted)
    return data


def path_key(path: str) -> str:
    """Deterministic part name for an input path (BLAKE2b-128 of its bytes)."""
    return hashlib.blake2b(path.encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()


# File names are bytes on POSIX. Python hands a name that is not valid UTF-8
# (latin-1 or cp1252 names from old collections) to us as a str with lone
# surrogates (PEP 383), which Arrow cannot store as a string. Every path
# column therefore holds a readable text (undecodable bytes as \xNN) and,
# only for such names, the exact bytes in `path_bytes`, from which the
# original str is rebuilt losslessly.
def path_text(path: str) -> str:
    r"""``path`` as valid UTF-8 text for display and the ``path`` column.

    Examples
    --------
    >>> path_text("/music/caf\udce9.mp3")
    '/music/caf\\xe9.mp3'
    >>> path_text("/music/Björk.flac")
    '/music/Björk.flac'
    """
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def path_bytes(path: str) -> bytes | None:
    """The exact bytes of ``path`` when it is not valid UTF-8, else ``None``."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogateescape")
    return None


def path_from_columns(text: str, raw: bytes | None) -> str:
    """Rebuild the original path str from its ``path`` and ``path_bytes`` columns."""
    return raw.decode("utf-8", "surrogateescape") if raw is not None else text


def path_columns(path: str) -> dict[str, Any]:
    """The ``path`` and ``path_bytes`` values of one path, for a row."""
    return {"path": path_text(path), "path_bytes": path_bytes(path)}


class FileFacts(NamedTuple):
    """What the files table knows of one path when it was hashed."""

    size: int
    mtime_ns: int
    ctime_ns: int | None
    inode: int | None
    track_id: str

    def matches(self, identity: tuple[int, int, int, int]) -> bool:
        """Whether ``(size, mtime_ns, ctime_ns, inode)`` shows the same, unchanged file (the hash can be reused).

        Size and mtime alone can be restored after a rewrite (``touch -r``);
        the status-change time cannot, and a replaced file has a new inode.
        (For objects, :func:`mirflow.storage.object_identity`: the ETag.)
        Rows from before these were recorded never match: they are re-hashed.
        """
        return (self.ctime_ns is not None and self.inode is not None
                and tuple(identity) == (self.size, self.mtime_ns, self.ctime_ns, self.inode))


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Catalog:
    """A catalog folder.

    Parameters
    ----------
    root : path
        The folder (created on first write).
    """

    #: The pyarrow filesystem of the parts (``None``: the local one).
    arrow_fs: Any = None

    def __new__(cls, root: str | os.PathLike[str]) -> Catalog:
        # A URL (s3://bucket/prefix) is a catalog in object storage, with the
        # same API; callers need not know which they hold.
        if cls is Catalog and is_url(root):
            from mirflow.catalog.remote import ObjectCatalog

            return super().__new__(ObjectCatalog)
        return super().__new__(cls)

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"Catalog({self.url!r})"

    @property
    def url(self) -> str:
        """Where the catalog is, as the user names it (a folder or an ``s3://`` URL); workers open this."""
        return str(self.root)

    @property
    def is_local(self) -> bool:
        return True

    def local_root(self, purpose: str) -> Path:
        """The catalog folder, for work that needs a local file system (FAISS indexes, models).

        Raises
        ------
        CatalogError
            For a catalog in object storage.
        """
        return self.root

    def file_size(self, path: Path) -> int:
        """Bytes of one file of the catalog."""
        return path.stat().st_size

    def usage(self) -> tuple[int, int]:
        """``(bytes, files)`` of everything under the catalog."""
        size = n_files = 0
        for folder, _, names in os.walk(self.root):
            for n in names:
                try:
                    size += os.lstat(os.path.join(folder, n)).st_size
                    n_files += 1
                except OSError:  # removed while we walked
                    continue
        return size, n_files

    def part_intact(self, path: Path) -> bool:
        """Whether the part at ``path`` is a whole Parquet file (see :func:`part_is_intact`)."""
        return part_is_intact(path)

    # ------------------------------------------------- storage primitives (compaction runs on these)
    # The few operations where a folder and an object store differ; the
    # layout, snapshot and compaction logic above and in compact.py is shared.
    def part_identity(self, path: Path) -> tuple[int, int, int]:
        """``(size, mtime_ns, inode)`` of a part: what a compaction records of the parts it folds.

        A rewrite changes it (a new file by rename has a new inode). Raises
        :class:`FileNotFoundError` when the part is gone.
        """
        st = path.stat()
        return st.st_size, st.st_mtime_ns, st.st_ino

    def is_dir(self, path: Path) -> bool:
        return path.is_dir()

    def list_dirs(self, path: Path) -> list[Path]:
        """Sub-folders of ``path`` (none when it does not exist)."""
        try:
            return [p for p in path.iterdir() if p.is_dir()]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def make_dirs(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)

    def delete(self, path: Path) -> bool:
        """Delete one file; whether it was there."""
        try:
            path.unlink()
            return True
        except FileNotFoundError:
            return False

    def remove_tree(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def write_parquet(self, data: pa.Table, path: Path, **options: Any) -> int:
        """Write a new file (generations are never overwritten: no temporary name needed); its bytes."""
        pq.write_table(data, path, **options)
        return path.stat().st_size

    def write_json_atomic(self, path: Path, obj: Any) -> None:
        """Replace ``path`` by ``obj`` as JSON in one step, durably (temporary file, fsync, rename)."""
        tmp = path.parent / _tmp_name(path.name)
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def sync_dir(self, path: Path) -> None:
        """Make the names in folder ``path`` durable (no-op where writes are durable when acknowledged)."""
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def put_if_absent(self, path: Path, data: pa.Table) -> bool:
        """Write ``data`` at ``path`` unless something is there already (never replaces a writer's part)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(_tmp_name(path.stem))
        pq.write_table(data, tmp)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def delete_if_unchanged(self, part: LoosePart) -> bool:
        """Delete a folded part only if it is still the file that was folded.

        It is renamed aside first (atomic), then checked: a part a writer
        replaced since the listing is put back (unless a newer one is there).
        """
        aside = part.path.with_name(_tmp_name(part.key))
        try:
            os.rename(part.path, aside)
        except FileNotFoundError:
            return False
        st = aside.stat()
        if (st.st_size, st.st_mtime_ns, st.st_ino) == (part.size, part.mtime_ns, part.inode):
            aside.unlink()
            return True
        try:
            os.link(aside, part.path)
        except FileExistsError:
            pass  # an even newer part is in place: it wins
        aside.unlink()
        return False

    def compaction_running(self) -> bool:
        """Whether a compaction of this catalog holds its lock right now."""
        return compaction_running(self.root)

    def can_compact(self) -> bool:
        """Whether this store offers what compaction's commit protocol needs (see :mod:`mirflow.catalog.compact`)."""
        return True

    # ----------------------------------------------------------------- layout
    def table_dir(self, table: str) -> Path:
        return self.root / table

    def part_path(self, table: str, key: str, partition: str | None = None) -> Path:
        base = self.table_dir(table)
        if partition is not None:
            base = base / partition
        return base / key[:2] / f"{key}.parquet"

    def parts(self, table: str, partition: str | None = None) -> list[Path]:
        """Every part file of ``table`` (or of one partition), sorted, so reads are deterministic."""
        return sorted(p.path for p in self.loose_parts(table, partition))

    def loose_parts(self, table: str, partition: str | None = None, *, with_stat: bool = False) -> list[LoosePart]:
        """The per-track / per-path part files on disk (not the compacted generations), unsorted.

        Walks only the two-character shard folders (and partition folders),
        never ``_compacted/``: after a compaction this is a listing of a few
        hundred nearly empty folders.
        """
        base = self.table_dir(table)
        if partition is not None:
            roots = [(partition, base / partition)]
        elif table_partitioned(table):
            roots = [(name, base / name) for name in self.partitions(table)]
        else:
            roots = [(None, base)]
        out: list[LoosePart] = []
        for part, root in roots:
            for shard in _subdirs(root):
                try:
                    entries = list(os.scandir(shard))
                except FileNotFoundError:
                    continue
                for e in entries:
                    name = e.name
                    if name.startswith(".") or not name.endswith(".parquet"):
                        continue
                    st = None
                    if with_stat:
                        try:
                            st = e.stat()
                        except FileNotFoundError:  # deleted by a compaction since the listing
                            continue
                    rel = f"{part}/{Path(shard).name}/{name}" if part is not None else f"{Path(shard).name}/{name}"
                    out.append(LoosePart(Path(e.path), name[:-len(".parquet")], part, rel,
                                         st.st_size if st else -1, st.st_mtime_ns if st else -1,
                                         st.st_ino if st else -1))
        return out

    def quarantine_damaged(self) -> list[Path]:
        """Move damaged parts to ``_quarantine/`` and forget their tracks, so this run analyzes them again.

        Returns the quarantined parts (their new places).
        """
        from mirflow.catalog.schema import load_schemas

        moved = []
        for table in load_schemas():
            for part in self.parts(table):
                if self.part_intact(part):
                    continue
                target = self.root / "_quarantine" / part.relative_to(self.root)
                target = target.with_name(f"{target.stem}.{uuid.uuid4().hex[:8]}{target.suffix}")
                self._move(part, target)
                moved.append(target)
                if table not in PATH_TABLES:
                    # The track's parts are no longer whole: drop its commit
                    # marker so that the run analyzes it again.
                    self.remove_part("tracks", part.stem)
                log.warning("quarantined a damaged part of %s: %s -> %s", table, part, target)
        return moved

    def _move(self, source: Path, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)

    def partitions(self, table: str) -> list[str]:
        """Partition folder names of a table whose schema sets ``partition_by`` (e.g. embedding models)."""
        from mirflow.catalog.schema import table_schema

        d = self.table_dir(table)
        if table_schema(table).partition_by is None:
            return []
        names = {p.name for p in self.list_dirs(d) if not p.name.startswith(("_", "."))}
        record = self.compaction_record(table)
        if record is not None:
            names.update(f["partition"] for f in record["files"] if f.get("partition") is not None)
        return sorted(names)

    # ----------------------------------------------------------------- writes
    def write_part(self, table: str, key: str, data: pa.Table, partition: str | None = None) -> Path:
        """Atomically write ``data`` as the part ``key`` of ``table`` (replacing any existing one).

        Raises
        ------
        CatalogFullError
            When the catalog's file system is full (no part is left half-written).
        """
        path = self.part_path(table, key, partition)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # The writer's host and pid in the name: a sweep removes only
            # temporary files whose writer is provably dead.
            fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(key), suffix=".tmp", dir=path.parent)
            os.close(fd)
        except OSError as exc:
            _raise_if_full(exc, self.root)
            raise
        try:
            pq.write_table(data, tmp, compression="zstd")
            os.replace(tmp, path)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            _raise_if_full(exc, self.root)
            raise
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def remove_part(self, table: str, key: str, partition: str | None = None) -> bool:
        """Remove the rows of ``key`` from ``table``.

        Once the table has compacted generations (``TABLE/_compacted/``), the
        key's rows may live in a compacted file that cannot be edited in
        place: the part is then replaced by a *tombstone*, a zero-row part,
        which hides the compacted rows of the key (a loose part always wins)
        and is folded away by the next compaction. Returns whether a part
        was there (or a tombstone was written).
        """
        path = self.part_path(table, key, partition)
        if self.is_dir(self.table_dir(table) / COMPACTED) and (
                self.compaction_running() or self._compacted_has(table, key, partition)):
            self.write_part(table, key, tombstone_table(table), partition=partition)
            return True
        return self.delete(path)

    def sweep_temporary(self, *, max_age_s: float = 24 * 3600.0) -> int:
        """Delete ``.tmp`` files left by writers that were killed mid-write.

        Only files provably dead: written on this host by a process that no
        longer exists, or (other hosts, old names) untouched for ``max_age_s``.
        Another run writing into the same catalog keeps its in-flight files.
        """
        n = 0
        if not self.root.is_dir():
            return 0
        now = time.time()
        for tmp in self.root.rglob(".*.tmp"):
            if _tmp_writer_alive(tmp.name):
                continue
            try:
                if _tmp_writer_host(tmp.name) != _HOST and now - tmp.stat().st_mtime < max_age_s:
                    continue
                tmp.unlink()
                n += 1
            except FileNotFoundError:  # its writer renamed it after all
                continue
        return n

    # ----------------------------------------------------------------- reads
    def compaction_record(self, table: str) -> dict[str, Any] | None:
        """The committed compaction of ``table`` (``TABLE/_compacted/CURRENT.json``), or ``None``."""
        path = self.table_dir(table) / COMPACTED / CURRENT
        try:
            raw = self._read_bytes(path)
            return None if raw is None else json.loads(raw.decode("utf-8"))
        except (OSError, ValueError) as exc:  # written atomically: never half a record
            raise CatalogError(f"unreadable compaction record {path}: {exc}") from None

    def snapshot(self, table: str, partition: str | None = None) -> TableSnapshot:
        """What a reader of ``table`` must read now: compacted files, live loose parts, hidden keys.

        A loose part is *live* unless the committed compaction folded it
        (same relative path, size, mtime and inode as recorded): a part
        written or rewritten after the compaction listed it is live, and
        the compacted rows of its key are hidden (the loose part wins; a
        zero-row tombstone part hides them and adds nothing). The record is
        read before and after the listing and the whole is retried when a
        compaction committed in between, so the answer is one consistent
        moment: every row exactly once.
        """
        for _ in range(20):
            record = self.compaction_record(table)
            folded: dict[str, tuple[int, int, int]] = {}
            need_stat = record is not None and not record.get("cleaned")
            if need_stat:
                folded = _read_folded(self.table_dir(table) / COMPACTED / record["folded"], self.arrow_fs)
            loose = self.loose_parts(table, partition, with_stat=need_stat)
            again = self.compaction_record(table)
            if (again or {}).get("generation") != (record or {}).get("generation"):
                continue
            live = [p for p in loose if folded.get(p.rel) != (p.size, p.mtime_ns, p.inode)] if need_stat else loose
            compacted: list[tuple[str | None, Path]] = []
            if record is not None:
                gen_dir = self.table_dir(table) / COMPACTED
                compacted = [(f.get("partition"), gen_dir / f["path"]) for f in record["files"]
                             if partition is None or f.get("partition") == partition]
            live.sort(key=lambda p: p.path)
            return TableSnapshot(table, (record or {}).get("generation"), compacted, live, partition)
        raise CatalogError(f"{table}: compactions kept committing while the table was listed; try again")

    def _compacted_has(self, table: str, key: str, partition: str | None) -> bool:
        """Whether the committed generation holds rows of ``key`` (row-group statistics prune the read)."""
        record = self.compaction_record(table)
        if record is None:
            return False
        for f in record["files"]:
            if f.get("partition") != partition:
                continue
            lo, hi = f.get("lo"), f.get("hi")
            if (lo is not None and key < lo) or (hi is not None and key >= hi):
                continue
            path = self.table_dir(table) / COMPACTED / f["path"]
            try:
                hit = read_parquet(path, columns=[KEY_COLUMN], filters=[(KEY_COLUMN, "==", key)],
                                   filesystem=self.arrow_fs)
            except FileNotFoundError:  # superseded meanwhile: ask the new record
                return self._compacted_has(table, key, partition)
            if hit.num_rows:
                return True
        return False

    def rows_of(self, table: str, key: str, partition: str | None = None) -> pa.Table:
        """The rows of one key (a track_id, or ``path_key(path)`` for path tables), wherever they live.

        The loose part when there is one (also a tombstone: no rows), else
        the key's rows in the committed generation (a point look-up pruned by
        row-group statistics), in the schema the file has (no hidden columns).
        """
        for _ in range(5):
            record = self.compaction_record(table)
            part = self.part_path(table, key, partition)
            folded = (_read_folded(self.table_dir(table) / COMPACTED / record["folded"], self.arrow_fs)
                      if record is not None and not record.get("cleaned") else {})
            try:
                identity = self.part_identity(part)
                rel = str(part.relative_to(self.table_dir(table)))
                if folded.get(rel) != identity:
                    return read_parquet(part, filesystem=self.arrow_fs)
            except FileNotFoundError:
                pass
            if record is None:
                from mirflow.catalog.schema import table_schema

                return table_schema(table).empty_table()
            try:
                hits = []
                for f in record["files"]:
                    lo, hi = f.get("lo"), f.get("hi")
                    if f.get("partition") != partition or (lo is not None and key < lo) or \
                            (hi is not None and key >= hi):
                        continue
                    t = read_parquet(self.table_dir(table) / COMPACTED / f["path"],
                                     filters=[(KEY_COLUMN, "==", key)], filesystem=self.arrow_fs)
                    hits.append(t.drop_columns([c for c in (KEY_COLUMN, VERSION_COLUMN) if c in t.column_names]))
            except FileNotFoundError:  # superseded by a newer generation meanwhile
                continue
            if hits:
                return pa.concat_tables(hits)
            from mirflow.catalog.schema import table_schema

            return table_schema(table).empty_table()
        raise CatalogError(f"{table}: compactions kept committing while {key} was looked up; try again")

    def rows_of_many(self, table: str, keys: Iterable[str], *, partition: str | None = None,
                     columns: list[str] | None = None) -> pa.Table | None:
        """The rows of many keys (track ids of a batch), loose or compacted; ``None`` when none has rows.

        Without a compaction each key's own part is read (a batch costs its own
        files, not a listing of the table). Once the table is compacted, one
        :meth:`snapshot`: the keys' live loose parts plus one read of each
        compacted file filtered on its sorted key column (row-group statistics
        prune it), leaving out keys a loose part overrides. Tombstones add no rows.
        """
        wanted = sorted(set(keys))
        if self.compaction_record(table) is None:
            files = [p for k in wanted if self._exists(p := self.part_path(table, k, partition))]
            pieces = [read_parquet(f, columns=columns, filesystem=self.arrow_fs) for f in files]
            if self.compaction_record(table) is None:  # no compaction folded them away meanwhile
                return _concat_nonempty(pieces)
        for attempt in range(5):
            snap = self.snapshot(table, partition)
            wanted_set = set(wanted)
            live = [p for p in snap.loose if p.key in wanted_set]
            compacted_keys = sorted(wanted_set - snap.hidden_keys().get(partition, set()))
            try:
                pieces = [read_parquet(p.path, columns=columns, filesystem=self.arrow_fs) for p in live]
                if compacted_keys:
                    pieces += [read_parquet(f, columns=columns, filters=[(KEY_COLUMN, "in", compacted_keys)],
                                            filesystem=self.arrow_fs) for _, f in snap.compacted]
            except FileNotFoundError:  # a newer compaction removed what the snapshot listed
                if attempt == 4:
                    raise
                continue
            return _concat_nonempty(pieces)
        raise AssertionError("unreachable")

    def readable_parts(self, table: str, partition: str | None = None) -> list[Path]:
        """The live loose parts of ``table`` that are whole Parquet files; damaged ones are logged and left out.

        A truncated or junk part (a disk that filled up, a copy cut short)
        must not make every query of the table fail: readers skip it, and
        the next ``analyze`` quarantines it and analyzes its track again.
        Compacted rows are not here: read them through :meth:`snapshot` or
        :meth:`read_table`.
        """
        return _intact(table, [p.path for p in self.snapshot(table, partition).loose], self.part_intact)

    def read_table(self, table: str, columns: list[str] | None = None,
                   partition: str | None = None, *, with_versions: bool = False) -> pa.Table:
        """Read a whole table (or one partition) with its canonical schema: compacted rows plus live parts.

        With ``with_versions``, a ``_pipeline_version`` column says which
        pipeline wrote each row of a long table (null when unknown: rows
        written before versions were recorded).
        """
        for attempt in range(5):
            try:
                return self._read_snapshot(self.snapshot(table, partition), columns, with_versions)
            except FileNotFoundError:
                # A compaction deleted what this snapshot listed: take a new one.
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def _read_snapshot(self, snap: TableSnapshot, columns: list[str] | None, with_versions: bool) -> pa.Table:
        import pyarrow.compute as pc

        from mirflow.catalog.schema import table_schema

        table = snap.table
        spec = table_schema(table)
        wanted = list(columns or spec.names)
        canonical = spec.arrow(sizes=spec.sizes_of({}))
        hidden_cols = [VERSION_COLUMN] if with_versions else []
        tables = []

        def fill(part: pa.Table, version: str | None = None) -> pa.Table:
            # Parts written before a column was added to the schema lack it:
            # add it as nulls, so one read serves catalogs of any age.
            for name in wanted:
                if name not in part.column_names:
                    part = part.append_column(name, pa.nulls(part.num_rows, canonical.field(name).type))
            if with_versions and VERSION_COLUMN not in part.column_names:
                part = part.append_column(VERSION_COLUMN, pa.array([version] * part.num_rows, pa.string()))
            return part.select(wanted + hidden_cols)

        hidden = snap.hidden_keys()
        for part_name, f in snap.compacted:
            present = pq.read_schema(str(f), filesystem=self.arrow_fs).names
            read_cols = [c for c in [*wanted, KEY_COLUMN, VERSION_COLUMN] if c in present]
            data = read_parquet(f, columns=read_cols, filesystem=self.arrow_fs)
            keys = hidden.get(part_name)
            if keys:
                data = data.filter(pc.invert(pc.is_in(data.column(KEY_COLUMN), value_set=pa.array(sorted(keys)))))
            if data.num_rows:
                tables.append(fill(data))
        loose = snap.loose
        if len(loose) > 64 and not with_versions and spec.partition_by is None and not python_backed(self.arrow_fs):
            # Many parts (a catalog not compacted yet): one multi-threaded Arrow
            # scan; a damaged part makes it fail, and then they are read one by one.
            import pyarrow.dataset as ds

            try:
                bulk = ds.dataset([str(p.path) for p in loose], schema=canonical, format="parquet",
                                  filesystem=self.arrow_fs).to_table(columns=wanted)
                if bulk.num_rows:
                    tables.append(bulk)
                loose = []
            except (OSError, pa.ArrowException) as exc:
                log.debug("%s: bulk read failed (%s); reading parts one by one", table, exc)

        def read_part(p: LoosePart) -> pa.Table | None:
            if not self.part_intact(p.path):
                log.warning("%s: damaged part left out (the next `mirflow analyze` quarantines it): %s", table, p.path)
                return None
            try:
                return read_parquet(p.path, filesystem=self.arrow_fs)
            except FileNotFoundError:
                raise
            except (OSError, pa.ArrowException) as exc:  # damaged inside despite whole ends
                log.warning("%s: unreadable part %s left out: %s", table, p.path, exc)
                return None

        if python_backed(self.arrow_fs) and len(loose) > 1:
            # Object storage: requests in flight together (Arrow's threads may not read it, see read_parquet).
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=8) as pool:
                parts = list(pool.map(read_part, loose))
        else:
            parts = [read_part(p) for p in loose]
        for part in parts:
            if part is None or part.num_rows == 0:  # a tombstone (or an empty part): hides, adds nothing
                continue
            version = (part.schema.metadata or {}).get(VERSION_META)
            tables.append(fill(part, version.decode() if version else None))
        if not tables:
            empty = spec.empty_table()
            if with_versions:
                empty = empty.append_column(VERSION_COLUMN, pa.array([], pa.string()))
            return empty.select(wanted + hidden_cols)
        if spec.partition_by is not None and (snap.partition is None):
            # Partitions differ in the size of their T[] columns (one embedding
            # dimension per model): across partitions they are variable lists.
            tables = [_unsize(t, spec) for t in tables]
        return pa.concat_tables(tables, promote_options="default")

    def existing_tracks(self) -> dict[str, str]:
        """``track_id -> pipeline_version`` of every track in the catalog."""
        table = self.read_table("tracks", columns=["track_id", "pipeline_version"])
        return dict(zip(table.column("track_id").to_pylist(), table.column("pipeline_version").to_pylist(),
                        strict=True))

    def known_files(self) -> dict[str, FileFacts]:
        """``path -> FileFacts`` from the files table, to skip re-hashing unchanged files."""
        table = self.read_table("files")
        if table.num_rows == 0:
            return {}
        cols = table.to_pydict()
        return {
            path_from_columns(text, raw): FileFacts(size, mtime, ctime, ino, track_id)
            for text, raw, size, mtime, ctime, ino, track_id in zip(
                cols["path"], cols["path_bytes"], cols["file_size_bytes"], cols["mtime_ns"],
                cols["ctime_ns"], cols["inode"], cols["track_id"], strict=True)
        }

    # ----------------------------------------------------------------- manifest
    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def read_manifest(self) -> dict[str, Any] | None:
        try:
            raw = self._read_bytes(self.manifest_path)
            if raw is None:
                return None
            return json.loads(raw.decode("utf-8"))
        except (OSError, ValueError) as exc:
            raise CatalogError(f"unreadable catalog manifest {self.url}/{MANIFEST}: {exc}") from None

    def _read_bytes(self, path: Path) -> bytes | None:
        """The bytes of a small file of the catalog, ``None`` when it does not exist."""
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def _exists(self, path: Path) -> bool:
        return path.exists()

    def _is_empty(self) -> bool:
        """Whether nothing is at the catalog's place yet (a folder that may be created).

        A temporary manifest does not count: it is all that a first run killed
        while writing its manifest leaves, and that folder must stay usable.
        """
        if not self.root.exists():
            return True
        return all(p.name.startswith(f".{MANIFEST}.") and p.name.endswith(".tmp") and _tmp_writer(p.name)
                   for p in self.root.iterdir())

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.manifest_path.with_name(_tmp_name(self.manifest_path.name))
        try:
            tmp.write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
            os.replace(tmp, self.manifest_path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            _raise_if_full(exc, self.root)
            raise

    def open_for(self, pipeline_name: str) -> dict[str, Any]:
        """Create the catalog or check that it belongs to ``pipeline_name``; return the manifest."""
        manifest = self.read_manifest()
        if manifest is None:
            if not self._is_empty():
                raise CatalogError(f"{self.url} exists, is not empty and is not a mirflow catalog")
            manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "pipeline": pipeline_name,
                "created_at": utcnow().isoformat(),
                "schemas": {},
                "runs": [],
            }
        if manifest.get("format") != FORMAT:
            raise CatalogError(f"{self.url}/{MANIFEST} is not a mirflow catalog manifest")
        if manifest.get("pipeline") != pipeline_name:
            raise CatalogError(
                f"catalog {self.url} holds pipeline {manifest.get('pipeline')!r}, not {pipeline_name!r}; "
                "use another --catalog folder for another pipeline"
            )
        manifest["schemas"] = {name: s.version for name, s in load_schemas().items()}
        self._write_manifest(manifest)
        return manifest

    def record_run(self, run: dict[str, Any]) -> None:
        """Append (or update, by ``run_id``) a run in the manifest's history."""
        manifest = self.read_manifest() or {}
        runs = [r for r in manifest.get("runs", []) if r.get("run_id") != run.get("run_id")]
        runs.append(run)
        manifest["runs"] = runs
        manifest["mirflow_version"] = __version__
        self._write_manifest(manifest)


#: Folder of a table's compacted generations, and the committed record in it.
COMPACTED = "_compacted"
CURRENT = "CURRENT.json"
#: Hidden columns of compacted files: the part key a row came from, and the
#: pipeline fingerprint that wrote it (long tables).
KEY_COLUMN = "_part_key"


def _concat_nonempty(pieces: list[pa.Table]) -> pa.Table | None:
    pieces = [p for p in pieces if p.num_rows]
    if not pieces:
        return None
    data = pa.concat_tables(pieces, promote_options="default")
    return data.drop_columns([c for c in (KEY_COLUMN, VERSION_COLUMN) if c in data.column_names])
VERSION_COLUMN = "_pipeline_version"
#: Schema metadata of a loose long-table part: the pipeline fingerprint that wrote it.
VERSION_META = b"mirflow.pipeline_version"
TOMBSTONE_META = b"mirflow.tombstone"


class LoosePart(NamedTuple):
    """One part file in a shard folder (``size``/``mtime_ns``/``inode`` are -1 when not stat-ed)."""

    path: Path
    key: str
    partition: str | None
    rel: str
    size: int
    mtime_ns: int
    inode: int


class TableSnapshot(NamedTuple):
    """A consistent view of one table: compacted files and the live loose parts that override them."""

    table: str
    generation: str | None
    #: ``(partition, file)`` of the committed generation.
    compacted: list[tuple[str | None, Path]]
    #: Loose parts not folded into that generation (new, rewritten, tombstones, damaged).
    loose: list[LoosePart]
    partition: str | None = None

    def hidden_keys(self) -> dict[str | None, set[str]]:
        """Per partition, the keys whose compacted rows are hidden by a live loose part."""
        out: dict[str | None, set[str]] = {}
        for p in self.loose:
            out.setdefault(p.partition, set()).add(p.key)
        return out


def table_partitioned(table: str) -> bool:
    from mirflow.catalog.schema import table_schema

    return table_schema(table).partition_by is not None


def tombstone_table(table: str) -> pa.Table:
    """A zero-row part that hides the compacted rows of its key."""
    from mirflow.catalog.schema import table_schema

    empty = table_schema(table).empty_table()
    meta = {k: v for k, v in (empty.schema.metadata or {}).items() if not k.startswith(b"mirflow.size.")}
    meta[TOMBSTONE_META] = b"1"
    return empty.replace_schema_metadata(meta)


def _subdirs(root: Path) -> list[str]:
    """Shard folders of a table or partition folder (never ``_compacted`` or hidden ones)."""
    try:
        return [e.path for e in os.scandir(root)
                if not e.name.startswith(("_", ".")) and e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []


def compaction_running(root: Path) -> bool:
    """Whether a compaction holds ``CATALOG/.compact.lock`` right now."""
    import fcntl

    try:
        fd = os.open(root / ".compact.lock", os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock we took
    return False


def _read_folded(path: Path, filesystem: Any = None) -> dict[str, tuple[int, int, int]]:
    """``relative part path -> (size, mtime_ns, inode)`` of the parts a generation folded (see :meth:`Catalog.part_identity`)."""
    data = read_parquet(path, filesystem=filesystem).to_pydict()
    return {rel: (size, mtime, ino) for rel, size, mtime, ino in zip(
        data["rel"], data["size"], data["mtime_ns"], data["inode"], strict=True)}


def _intact(table: str, paths: list[Path], check=None) -> list[Path]:
    good = [p for p in paths if (check or part_is_intact)(p)]
    if len(good) < len(paths):
        bad = sorted(set(paths) - set(good))
        log.warning("%s: %d damaged part(s) left out (the next `mirflow analyze` quarantines them): %s",
                    table, len(bad), ", ".join(map(str, bad[:5])))
    return good


def _unsize(table: pa.Table, spec) -> pa.Table:
    for i, name in enumerate(table.column_names):
        if name in spec.names and spec.column(name).sized_per_file:
            col = table.column(i)
            table = table.set_column(i, name, col.cast(pa.list_(col.type.value_type)))
    return table


_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def _tmp_prefix(stem: str) -> str:
    """``.STEM.HOST.PID.``: a temporary name's start, which says its writer, so a sweep can tell whether it died."""
    return f".{stem}.{_HOST}.{os.getpid()}."


def _tmp_name(stem: str) -> str:
    """A hidden temporary name beside ``stem``: :func:`_tmp_prefix`, a random part and ``.tmp``."""
    return f"{_tmp_prefix(stem)}{uuid.uuid4().hex[:8]}.tmp"


def _tmp_writer(name: str) -> tuple[str, str] | None:
    """``(host, pid)`` from a temporary name ``.STEM.HOST.PID.RANDOM.tmp``; read from the right, as STEM may hold dots."""
    parts = name.split(".")
    return (parts[-4], parts[-3]) if len(parts) >= 6 and parts[0] == "" else None


def _tmp_writer_host(name: str) -> str | None:
    writer = _tmp_writer(name)
    return None if writer is None else writer[0]


def _tmp_writer_alive(name: str) -> bool:
    """Whether the process writing the temporary file ``name`` is alive on this host."""
    writer = _tmp_writer(name)
    if writer is None or writer[0] != _HOST or not writer[1].isdigit():
        return False
    return _process_alive(int(writer[1]))


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` on this host can still act (run, write, rename).

    psutil rather than ``os.kill(pid, 0)``: a process killed with its run
    stays a zombie until its new parent reaps it (seconds, or never under a
    container's PID 1 that does not reap), and a zombie still answers
    ``kill(pid, 0)``; its half-written file outlived the resume (CI, stop 30).
    """
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # alive, owned by someone else
        return True


def part_is_intact(path: Path) -> bool:
    """Whether ``path`` is a whole Parquet file: the magic bytes at both ends (two small reads)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
            fh.seek(0, os.SEEK_END)
            if fh.tell() < 12:
                return False
            fh.seek(-4, os.SEEK_END)
            return head == b"PAR1" and fh.read(4) == b"PAR1"
    except OSError:
        return False


def _raise_if_full(exc: OSError, root: Path) -> None:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise CatalogFullError(f"the catalog's disk is full ({root}): free some space and run the same command "
                               "again to resume") from None


def replace_folder(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` to ``out``, replacing an empty folder or a previous one there.

    The caller checks first that ``out`` may be replaced (mirflow never
    overwrites a folder it did not write); the old content is moved aside
    before the new one is renamed in, then deleted.
    """
    old = None
    if out.exists():
        if any(out.iterdir()):
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:12]}"
            os.rename(out, old)
        else:
            out.rmdir()
    os.rename(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def batched(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    """Split ``items`` into lists of at most ``n``."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch
