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
import hashlib
import json
import logging
import os
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from mirflow._version import __version__
from mirflow.catalog.schema import load_schemas
from mirflow.errors import CatalogError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "mirflow-catalog"
FORMAT_VERSION = 1
#: Tables whose parts are keyed by input path rather than by track.
PATH_TABLES = ("files", "errors")


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
    """``path`` as valid UTF-8 text for display and the ``path`` column.

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

    def matches(self, st: os.stat_result) -> bool:
        """Whether ``st`` shows the same, unchanged file (the hash can be reused).

        Size and mtime alone can be restored after a rewrite (``touch -r``);
        the status-change time cannot, and a replaced file has a new inode.
        Rows from before these were recorded never match: they are re-hashed.
        """
        return (self.ctime_ns is not None and self.inode is not None
                and (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
                == (self.size, self.mtime_ns, self.ctime_ns, self.inode))


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Catalog:
    """A catalog folder.

    Parameters
    ----------
    root : path
        The folder (created on first write).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"Catalog({str(self.root)!r})"

    # ----------------------------------------------------------------- layout
    def table_dir(self, table: str) -> Path:
        return self.root / table

    def part_path(self, table: str, key: str, partition: str | None = None) -> Path:
        base = self.table_dir(table)
        if partition is not None:
            base = base / partition
        return base / key[:2] / f"{key}.parquet"

    def parts(self, table: str) -> list[Path]:
        """Every part file of ``table`` (sorted, so reads are deterministic)."""
        d = self.table_dir(table)
        if not d.is_dir():
            return []
        return sorted(p for p in d.rglob("*.parquet"))

    def glob(self, table: str, partition: str | None = None) -> str:
        """A glob over ``table``'s parts, for DuckDB's ``read_parquet``."""
        base = self.table_dir(table) if partition is None else self.table_dir(table) / partition
        return str(base / "**" / "*.parquet")

    def partitions(self, table: str) -> list[str]:
        """Partition folder names of a table whose schema sets ``partition_by`` (e.g. embedding models)."""
        from mirflow.catalog.schema import table_schema

        d = self.table_dir(table)
        if table_schema(table).partition_by is None or not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir() if p.is_dir())

    # ----------------------------------------------------------------- writes
    def write_part(self, table: str, key: str, data: pa.Table, partition: str | None = None) -> Path:
        """Atomically write ``data`` as the part ``key`` of ``table`` (replacing any existing one)."""
        path = self.part_path(table, key, partition)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            pq.write_table(data, tmp, compression="zstd")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def remove_part(self, table: str, key: str, partition: str | None = None) -> bool:
        path = self.part_path(table, key, partition)
        try:
            path.unlink()
            return True
        except FileNotFoundError:
            return False

    def sweep_temporary(self) -> int:
        """Delete ``.tmp`` files left by writers that were killed mid-write."""
        n = 0
        if self.root.is_dir():
            for tmp in self.root.rglob(".*.tmp"):
                tmp.unlink(missing_ok=True)
                n += 1
        return n

    # ----------------------------------------------------------------- reads
    def read_table(self, table: str, columns: list[str] | None = None,
                   partition: str | None = None) -> pa.Table:
        """Read a whole table (or one partition) with its canonical schema."""
        from mirflow.catalog.schema import table_schema

        spec = table_schema(table)
        base = self.table_dir(table) if partition is None else self.table_dir(table) / partition
        files = sorted(base.rglob("*.parquet")) if base.is_dir() else []
        if not files:
            empty = spec.empty_table()
            return empty.select(columns) if columns else empty
        canonical = spec.arrow(sizes=spec.sizes_of({}))
        tables = []
        for f in files:
            part = pq.read_table(f)
            # Parts written before a column was added to the schema lack it:
            # add it as nulls, so one read serves catalogs of any age.
            for name in columns or spec.names:
                if name not in part.column_names:
                    part = part.append_column(name, pa.nulls(part.num_rows, canonical.field(name).type))
            tables.append(part.select(columns) if columns else part)
        if spec.partition_by is not None and partition is None:
            # Partitions differ in the size of their T[] columns (one embedding
            # dimension per model): across partitions they are variable lists.
            tables = [_unsize(t, spec) for t in tables]
        return pa.concat_tables(tables, promote_options="default")

    def existing_tracks(self) -> dict[str, str]:
        """``track_id -> pipeline_version`` of every track in the catalog."""
        if not self.parts("tracks"):
            return {}
        import duckdb

        con = duckdb.connect()
        rows = con.execute(
            "SELECT track_id, pipeline_version FROM read_parquet(?)", [self.glob("tracks")]
        ).fetchall()
        return dict(rows)

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
        if not self.manifest_path.exists():
            return None
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CatalogError(f"unreadable catalog manifest {self.manifest_path}: {exc}") from None

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.manifest_path.with_suffix(f".{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
        os.replace(tmp, self.manifest_path)

    def open_for(self, pipeline_name: str) -> dict[str, Any]:
        """Create the catalog or check that it belongs to ``pipeline_name``; return the manifest."""
        manifest = self.read_manifest()
        if manifest is None:
            if self.root.exists() and any(self.root.iterdir()):
                raise CatalogError(f"{self.root} exists, is not empty and is not a mirflow catalog")
            manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "pipeline": pipeline_name,
                "created_at": utcnow().isoformat(),
                "schemas": {},
                "runs": [],
            }
        if manifest.get("format") != FORMAT:
            raise CatalogError(f"{self.manifest_path} is not a mirflow catalog manifest")
        if manifest.get("pipeline") != pipeline_name:
            raise CatalogError(
                f"catalog {self.root} holds pipeline {manifest.get('pipeline')!r}, not {pipeline_name!r}; "
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


def _unsize(table: pa.Table, spec) -> pa.Table:
    for i, name in enumerate(table.column_names):
        if name in spec.names and spec.column(name).sized_per_file:
            col = table.column(i)
            table = table.set_column(i, name, col.cast(pa.list_(col.type.value_type)))
    return table


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
