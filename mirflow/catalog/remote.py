"""A catalog in object storage (``s3://bucket/prefix``): the same layout, written without renames.

Object stores have no rename and no partial objects: a PUT makes the whole
object visible at once, or nothing. So a part is written straight to its
final key (one request, no temporary name), which keeps both guarantees of
the local layout (see :mod:`mirflow.catalog.layout`):

* a reader never sees half a part: an object is whole or absent;
* exactly once: every part has a deterministic key, so a retried or resumed
  task overwrites its own parts, and the ``tracks`` part, written last, is
  the commit marker that makes a track's long-table parts visible.

What differs: nothing is left under a temporary name by a killed writer
(so there is nothing to sweep), damaged parts (a copy cut short by another
tool) are moved by copy + delete, and compaction is not offered yet (its
commit protocol relies on POSIX renames, hard links and locks; see
docs/scale.md): readers list the loose parts.
"""

from __future__ import annotations

import logging
from pathlib import PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mirflow.catalog.layout import Catalog, LoosePart, table_partitioned
from mirflow.errors import CatalogError
from mirflow.storage import filesystem, storage_errors, url_of

log = logging.getLogger(__name__)


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

    # ----------------------------------------------------------------- listing
    def _listing(self, base: PurePosixPath) -> list[dict[str, Any]]:
        try:
            with storage_errors("list", self.url, missing_ok=True):
                found = self.fs.find(str(base), detail=True)
        except FileNotFoundError:
            return []
        return [info for info in found.values() if info.get("type", "file") == "file"]

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
            out.append(LoosePart(base / rel, parts[-1][:-len(".parquet")], part, str(rel),
                                 int(info.get("size") or 0), -1, -1))
        return out

    def partitions(self, table: str) -> list[str]:
        if not table_partitioned(table):
            return []
        try:
            entries = self.fs.ls(str(self.table_dir(table)), detail=True)
        except FileNotFoundError:
            return []
        return sorted(PurePosixPath(e["name"]).name for e in entries
                      if e.get("type") == "directory" and not PurePosixPath(e["name"]).name.startswith(("_", ".")))

    def compaction_record(self, table: str) -> dict[str, Any] | None:
        return None  # object-storage catalogs are not compacted (yet): every row is in a loose part

    # ----------------------------------------------------------------- writes
    def write_part(self, table: str, key: str, data: pa.Table, partition: str | None = None) -> PurePosixPath:
        """Write ``data`` as the part ``key`` of ``table``: one PUT, visible whole or not at all."""
        path = self.part_path(table, key, partition)
        sink = pa.BufferOutputStream()
        pq.write_table(data, sink, compression="zstd")
        with storage_errors("write to", self.url):
            self.fs.pipe_file(str(path), sink.getvalue().to_pybytes())
        return path

    def remove_part(self, table: str, key: str, partition: str | None = None) -> bool:
        path = str(self.part_path(table, key, partition))
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            return False
        return True

    def sweep_temporary(self, *, max_age_s: float = 24 * 3600.0) -> int:
        return 0  # parts are written in one request under their final key: nothing temporary to sweep

    def _move(self, source: PurePosixPath, target: PurePosixPath) -> None:  # type: ignore[override]
        self.fs.mv(str(source), str(target))

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

    def rows_of(self, table: str, key: str, partition: str | None = None) -> pa.Table:
        path = self.part_path(table, key, partition)
        if self._exists(path):
            return pq.read_table(str(path), filesystem=self.arrow_fs)
        from mirflow.catalog.schema import table_schema

        return table_schema(table).empty_table()

    def _exists(self, path: PurePosixPath) -> bool:  # type: ignore[override]
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
        import json

        # One PUT: readers see the old manifest or the new one.
        with storage_errors("write to", self.url):
            self.fs.pipe_file(str(self.manifest_path),
                              json.dumps(manifest, indent=2, default=str).encode("utf-8"))
