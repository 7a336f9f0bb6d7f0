"""Compaction: fold a catalog's small per-track parts into a few large sorted files.

Every track writes one small part per table (see :mod:`mirflow.catalog.layout`);
a million-track catalog is millions of files that every run lists and every
query opens. A compaction writes, per table, a new *generation* of large
Parquet files (sorted by the primary key, zstd, row groups of
:data:`ROW_GROUP_ROWS` rows) into ``TABLE/_compacted/<generation>/`` and
commits it with one small record written by temporary file + rename::

    TABLE/_compacted/CURRENT.json   {"generation", "files", "folded", "previous", "cleaned"}
    TABLE/_compacted/<gen>/folded.parquet   rel, size, mtime_ns, inode of every folded part

Readers (:meth:`Catalog.snapshot <mirflow.catalog.layout.Catalog.snapshot>`)
read the committed generation plus every loose part that the record does not
name with the same size, mtime and inode; the compacted rows of a key with
such a live part are hidden. So at every moment each row is seen once:

* before the commit the new generation is not referenced: invisible;
* after it, the folded parts are ignored even while they still exist;
* a part written or rewritten while the compaction ran is live, and wins;
* folded parts are deleted only when they still are what was folded
  (renamed aside first, checked, and put back when a writer replaced them).

One compaction at a time per catalog (``CATALOG/.compact.lock``, ``flock``).
In object storage the same protocol runs on S3's conditional requests (see
:mod:`mirflow.catalog.remote`); the storage operations are the catalog's
(:meth:`Catalog.put_if_absent`, :meth:`Catalog.delete_if_unchanged`, …).
The previous generation's files are kept until the next compaction, so a
reader that listed them just before a commit can still read them.

``MIRFLOW_COMPACT_CRASH_AT=<step>`` ends the process at a step (tests).
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mirflow.catalog.layout import (
    COMPACTED,
    CURRENT,
    KEY_COLUMN,
    VERSION_COLUMN,
    VERSION_META,
    Catalog,
    LoosePart,
    _read_folded,
    open_parquet,
    python_backed,
    read_parquet,
    tombstone_table,
    utcnow,
)
from mirflow.catalog.schema import load_schemas, table_schema
from mirflow.errors import CatalogError

log = logging.getLogger(__name__)

#: Rows per row group of compacted files: DuckDB's own row-group size
#: (122 880), so each row group is one unit of DuckDB's parallel scan and
#: min/max statistics on the sorted key prune well.
ROW_GROUP_ROWS = 122_880
#: In-memory (Arrow) bytes one output file is built from at most; a table
#: larger than this is split into key ranges of 16 or 256 prefixes.
BUCKET_BYTES = 256 * 2**20
#: ``analyze`` compacts automatically when a table has more loose parts than this.
AUTO_MIN_LOOSE_PARTS = 1000
LOCK_FILE = ".compact.lock"
CRASH_ENV = "MIRFLOW_COMPACT_CRASH_AT"
#: Steps at which ``MIRFLOW_COMPACT_CRASH_AT`` can end the process.
CRASH_STEPS = ("listed", "written", "committed", "deleting", "deleted", "cleaned")


class CompactionBusy(CatalogError):
    """Another compaction of the same catalog is running."""


@dataclass
class TableCompaction:
    """What compacting one table did."""

    table: str
    generation: str | None = None
    folded_parts: int = 0
    deleted_parts: int = 0
    kept_parts: int = 0
    rows: int = 0
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0


@dataclass
class CompactionSummary:
    tables: list[TableCompaction] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "tables": [vars(t) for t in self.tables]}


def _crash_point(step: str, table: str) -> None:
    want = os.environ.get(CRASH_ENV)
    if want and want in (step, f"{table}:{step}"):
        log.error("%s=%s: ending the process (test hook)", CRASH_ENV, want)
        os._exit(99)


@contextmanager
def compaction_lock(cat: Catalog, *, wait: bool) -> Iterator[None]:
    """Hold ``CATALOG/.compact.lock`` exclusively (released by the kernel if the process dies).

    In object storage, the catalog's own lock object (see
    :meth:`ObjectCatalog.compaction_lock <mirflow.catalog.remote.ObjectCatalog.compaction_lock>`).
    """
    if not cat.is_local:
        with cat.compaction_lock(wait=wait):
            yield
        return
    cat.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(cat.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        # Writers take the lock shared for an instant (Catalog.remove_part
        # asks whether a compaction runs): retry briefly before calling it busy.
        deadline = time.monotonic() + 2.0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise CompactionBusy(f"another compaction of {cat.url} is running (lock "
                                         f"{cat.root / LOCK_FILE}); wait for it, or use --wait") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def loose_part_count(cat: Catalog, table: str) -> int:
    """Loose parts of ``table`` on disk (a listing of its shard folders)."""
    return len(cat.loose_parts(table))


#: ``analyze`` compacts again when the loose parts of a table exceed this fraction of the compacted
#: tracks: every compaction rewrites each table once, so growing the trigger with the catalog keeps
#: the amortized rewrite cost per added track constant (at most 1/AUTO_FRACTION rewrites of a row).
AUTO_FRACTION = 0.05


def needs_compaction(cat: Catalog, *, min_loose_parts: int = AUTO_MIN_LOOSE_PARTS) -> bool:
    """Whether some table has more than ``max(min_loose_parts, 5 % of the compacted tracks)`` loose parts."""
    record = cat.compaction_record("tracks")
    compacted = sum(f["rows"] for f in record["files"]) if record else 0
    threshold = max(min_loose_parts, int(AUTO_FRACTION * compacted))
    return any(loose_part_count(cat, t) > threshold for t in load_schemas())


def maybe_compact(catalog: str | os.PathLike[str] | Catalog, *,
                  min_loose_parts: int = AUTO_MIN_LOOSE_PARTS) -> CompactionSummary | None:
    """Compact when some table has more than ``min_loose_parts`` loose parts (the end of ``analyze``).

    Returns ``None`` when nothing was due, or when another compaction is
    running (it folds this run's parts, or the next one does).
    """
    cat = catalog if isinstance(catalog, Catalog) else Catalog(catalog)
    if not cat.can_compact():
        log.info("%s: this store cannot be compacted (see docs/scale-out.md)", cat.url)
        return None
    if not needs_compaction(cat, min_loose_parts=min_loose_parts):
        return None
    try:
        return compact(cat)
    except CompactionBusy as exc:
        log.info("%s", exc)
        return None


def compact(catalog: str | os.PathLike[str] | Catalog, *, tables: list[str] | None = None,
            wait: bool = False, min_loose_parts: int = 0) -> CompactionSummary:
    """Fold the loose parts of every table into a new compacted generation.

    Parameters
    ----------
    catalog : path or Catalog
    tables : list of str, optional
        Only these tables (default: every table of the schemas).
    wait : bool
        Wait for a running compaction instead of raising :class:`CompactionBusy`.
    min_loose_parts : int
        Leave a table alone when it has at most this many loose parts
        (``analyze`` passes :data:`AUTO_MIN_LOOSE_PARTS`).

    Safe while ``analyze`` writes into the same catalog: parts written
    during the compaction stay live, and readers see every row once at
    every moment (see the module docstring).
    """
    cat = catalog if isinstance(catalog, Catalog) else Catalog(catalog)
    if cat.read_manifest() is None:
        raise CatalogError(f"{cat.url} is not a mirflow catalog (no manifest.json)")
    if not cat.can_compact():
        raise CatalogError(f"{cat.url}: compaction needs a local file system or S3 (conditional writes and "
                           "deletes); this object store has neither")
    started = time.perf_counter()
    summary = CompactionSummary()
    names = tables or list(load_schemas())
    with compaction_lock(cat, wait=wait):
        # tracks first: a re-run plans from tracks and files.
        for table in sorted(names, key=lambda n: (n != "tracks", n != "files", n)):
            if not cat.is_dir(cat.table_dir(table)):
                continue
            summary.tables.append(_compact_table(cat, table, min_loose_parts=min_loose_parts))
    summary.seconds = time.perf_counter() - started
    return summary


# --------------------------------------------------------------------------- one table
def _compact_table(cat: Catalog, table: str, *, min_loose_parts: int) -> TableCompaction:
    started = time.perf_counter()
    out = TableCompaction(table)
    spec = table_schema(table)
    comp_dir = cat.table_dir(table) / COMPACTED
    record = cat.compaction_record(table)
    folded_before = (_read_folded(comp_dir / record["folded"], cat.arrow_fs)
                     if record and not record.get("cleaned") else {})
    # From here on, remove_part writes tombstones instead of deleting parts
    # (a deleted part's rows could otherwise survive in this generation).
    cat.make_dirs(comp_dir)
    loose = cat.loose_parts(table, with_stat=True)
    carried = [p for p in loose if folded_before.get(p.rel) == (p.size, p.mtime_ns, p.inode)]
    carried_rels = {p.rel for p in carried}
    live = [p for p in loose if p.rel not in carried_rels]
    to_fold = [p for p in live if cat.part_intact(p.path)]  # damaged ones stay loose for the quarantine
    _crash_point("listed", table)
    if (len(live) <= min_loose_parts and not carried) or (not to_fold and record is not None and not carried):
        if len(live) <= min_loose_parts and not carried:
            _remove_stale_generations(cat, comp_dir, record)
        _refresh_current_with(cat, table, comp_dir, record)
        out.seconds = time.perf_counter() - started
        return out

    generation = utcnow().strftime("%Y%m%dT%H%M%S%fZ-") + uuid.uuid4().hex[:8]
    gen_dir = comp_dir / generation
    cat.make_dirs(gen_dir)
    old_files = [(f.get("partition"), comp_dir / f["path"]) for f in (record or {}).get("files", [])]
    partitions = sorted({p.partition for p in to_fold} | {p for p, _ in old_files},
                        key=lambda v: (v is not None, v or ""))
    files_meta: list[dict[str, Any]] = []
    folded_ok: list[LoosePart] = []
    for partition in partitions:
        fold_here = [p for p in to_fold if p.partition == partition]
        olds = [f for p, f in old_files if p == partition]
        written, read_ok = _write_partition(cat, table, spec, partition, fold_here, olds, gen_dir, generation)
        files_meta.extend(written)
        folded_ok.extend(read_ok)
    _crash_point("written", table)

    # A folded part that vanished while we read (deleted by a writer that
    # looked before `_compacted/` existed) must not come back from the new
    # generation: put a tombstone in its place unless a writer already did.
    for p in folded_ok:
        if not cat._exists(p.path):
            cat.put_if_absent(p.path, tombstone_table(table))
    folded_rows = folded_ok + carried
    cat.write_parquet(pa.table({
        "rel": pa.array([p.rel for p in folded_rows], pa.string()),
        "size": pa.array([p.size for p in folded_rows], pa.int64()),
        "mtime_ns": pa.array([p.mtime_ns for p in folded_rows], pa.int64()),
        "inode": pa.array([p.inode for p in folded_rows], pa.int64()),
    }), gen_dir / "folded.parquet", compression="zstd")
    cat.sync_dir(gen_dir)
    new_record = {
        "format": 1, "table": table, "generation": generation, "created_at": utcnow().isoformat(),
        "files": files_meta, "folded": f"{generation}/folded.parquet", "folded_count": len(folded_rows),
        "previous": (record or {}).get("generation"), "cleaned": False,
        "current_with": rows_current_with(cat, table, [comp_dir / f["path"] for f in files_meta]),
    }
    _write_record(cat, comp_dir, new_record)  # the commit
    # Again after the commit: a writer deleting a part between the check
    # above and the commit would otherwise revive the part's rows for good.
    for p in folded_ok:
        if not cat._exists(p.path):
            cat.put_if_absent(p.path, tombstone_table(table))
    _crash_point("committed", table)

    # Folded parts are now ignored by every reader; delete them.
    deleted = kept = 0
    half = len(folded_rows) // 2
    for i, p in enumerate(folded_rows):
        if i == half:
            _crash_point("deleting", table)
        if cat.delete_if_unchanged(p):
            deleted += 1
        else:
            kept += 1
    _crash_point("deleted", table)
    new_record["cleaned"] = True
    _write_record(cat, comp_dir, new_record)
    _crash_point("cleaned", table)
    _remove_stale_generations(cat, comp_dir, new_record)
    out.generation = generation
    out.folded_parts = len(folded_ok)
    out.deleted_parts, out.kept_parts = deleted, kept
    out.rows = sum(f["rows"] for f in files_meta)
    out.files = len(files_meta)
    out.bytes = sum(f["bytes"] for f in files_meta)
    out.seconds = time.perf_counter() - started
    log.info("compacted %s: %d parts folded into %d files (%d rows), %d deleted, %d kept (rewritten)",
             table, out.folded_parts, out.files, out.rows, deleted, kept)
    return out


def rows_current_with(cat: Catalog, table: str, files: list[Path]) -> str | None:
    """The ``tracks`` generation for which every row of ``files`` is current, or ``None``.

    A row of a per-track long table is current when its track is in
    ``tracks`` and its pipeline fingerprint is the track's (or unknown).
    Readers must otherwise join every compacted row with ``tracks`` (about
    a second per million rows); recorded here, they can skip that join for
    as long as ``tracks`` stays this generation with no loose part (see
    ``mirflow.query``). Checked batch by batch, so memory stays flat.
    """
    from mirflow.catalog.layout import PATH_TABLES

    if table in PATH_TABLES or table == "tracks" or "track_id" not in table_schema(table).names or not files:
        return None
    tracks = cat.snapshot("tracks")
    if tracks.generation is None or tracks.loose:
        return None
    current = pa.concat_tables([read_parquet(f, columns=["track_id", "pipeline_version"],
                                             filesystem=cat.arrow_fs) for _, f in tracks.compacted])
    ids = current.column("track_id").combine_chunks()
    versions = current.column("pipeline_version").combine_chunks()
    for f in files:
        parquet = open_parquet(f, filesystem=cat.arrow_fs)
        columns = ["track_id"] + ([VERSION_COLUMN] if VERSION_COLUMN in parquet.schema_arrow.names else [])
        for batch in parquet.iter_batches(columns=columns, batch_size=1 << 18,
                                          use_threads=not python_backed(cat.arrow_fs)):
            idx = pc.index_in(batch.column(0), value_set=ids)
            if idx.null_count:
                return None  # a row of a track that is not committed
            if len(columns) == 2:
                mine = batch.column(1)
                same = pc.or_(pc.is_null(mine), pc.fill_null(pc.equal(mine, pc.take(versions, idx)), False))
                if not pc.all(same).as_py():
                    return None
    return tracks.generation


def _refresh_current_with(cat: Catalog, table: str, comp_dir: Path, record: dict[str, Any] | None) -> None:
    """Re-check an unchanged generation against a newer ``tracks`` generation (same files, new record)."""
    if record is None:
        return
    files = [comp_dir / f["path"] for f in record["files"]]
    current_with = rows_current_with(cat, table, files)
    if current_with != record.get("current_with"):
        _write_record(cat, comp_dir, {**record, "current_with": current_with})


def _bucket_bounds(n_buckets: int) -> list[tuple[str | None, str | None]]:
    """Key ranges ``[lo, hi)`` by hex prefix (keys are hex hashes; other keys sort into the ends)."""
    if n_buckets <= 1:
        return [(None, None)]
    width = 1 if n_buckets <= 16 else 2
    prefixes = [f"{i:0{width}x}" for i in range(16 ** width)]
    bounds = [None, *prefixes[1:], None]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _in_range(key: str, lo: str | None, hi: str | None) -> bool:
    return (lo is None or key >= lo) and (hi is None or key < hi)


def _read_part(cat: Catalog, p: LoosePart, table: str) -> tuple[LoosePart, pa.Table | None]:
    try:
        data = read_parquet(p.path, filesystem=cat.arrow_fs)
    except FileNotFoundError:
        return p, None
    except (OSError, pa.ArrowException) as exc:
        log.warning("%s: unreadable part %s not compacted: %s", table, p.path, exc)
        return p, None
    return p, data


def _write_partition(cat: Catalog, table: str, spec, partition: str | None, fold: list[LoosePart],
                     olds: list[Path], gen_dir: Path, generation: str,
                     ) -> tuple[list[dict[str, Any]], list[LoosePart]]:
    """Write one partition's new files; returns their record entries and the parts actually folded."""
    fs = cat.arrow_fs
    live_keys = {p.key for p in fold}
    sizes = None
    est = 0.0
    for f in olds:
        md = pq.ParquetFile(str(f), filesystem=fs).metadata
        est += sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups))
    sample = fold[:: max(1, len(fold) // 32)][:32]
    if sample:
        per_part = sum(_part_bytes(cat, p.path) for p in sample) / len(sample)
        est += per_part * len(fold)
    n_buckets = 1 if est <= BUCKET_BYTES else 16 if est <= 16 * BUCKET_BYTES else 256
    sub = gen_dir if partition is None else gen_dir / partition
    cat.make_dirs(sub)
    entries: list[dict[str, Any]] = []
    folded: list[LoosePart] = []
    if olds:
        meta = pq.read_schema(str(olds[0]), filesystem=fs).metadata or {}
        sizes = {c.name: int(meta[f"mirflow.size.{c.name}".encode()]) for c in spec.columns
                 if c.sized_per_file and f"mirflow.size.{c.name}".encode() in meta}
    with ThreadPoolExecutor(max_workers=4) as pool:
        for b, (lo, hi) in enumerate(_bucket_bounds(n_buckets)):
            pieces: list[pa.Table] = []
            for f in olds:
                filters = [(KEY_COLUMN, ">=", lo)] if lo is not None else []
                if hi is not None:
                    filters.append((KEY_COLUMN, "<", hi))
                data = read_parquet(f, filters=filters or None, filesystem=fs)
                if live_keys and data.num_rows:
                    data = data.filter(pc.invert(pc.is_in(data.column(KEY_COLUMN),
                                                          value_set=pa.array(sorted(live_keys), pa.string()))))
                if data.num_rows:
                    pieces.append(data)
            mine = [p for p in fold if _in_range(p.key, lo, hi)]
            if mine:
                if sizes is None and spec.partition_by is not None:
                    sizes = _sizes_of_parts(cat, spec, mine)
                data, ok = _read_loose(cat, table, spec, mine, sizes, pool)
                folded.extend(ok)
                if data is not None and data.num_rows:
                    pieces.append(data)
            if not pieces:
                continue
            merged = _merge(table, spec, pieces, sizes)
            # Sorted by the part key first (track_id; for path tables the hash of
            # the path, which is what every lookup of the catalog's own code
            # uses), then by the primary key: row-group min/max statistics on
            # the key prune point lookups and track filters.
            sort_keys = [(KEY_COLUMN, "ascending")] + [(c, "ascending") for c in spec.primary_key
                                                      if c in merged.column_names and c != "track_id"]
            merged = merged.sort_by(sort_keys)
            name = f"part-{b:03d}.parquet"
            target = sub / name
            size = cat.write_parquet(merged, target, compression="zstd", row_group_size=ROW_GROUP_ROWS)
            rel = f"{generation}/{name}" if partition is None else f"{generation}/{partition}/{name}"
            entries.append({"path": rel, "partition": partition, "rows": merged.num_rows,
                            "bytes": size, "lo": lo, "hi": hi})
    return entries, folded


def _part_bytes(cat: Catalog, path: Path) -> float:
    try:
        md = pq.ParquetFile(str(path), filesystem=cat.arrow_fs).metadata
        return float(sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups)))
    except (OSError, pa.ArrowException):
        return 0.0


def _sizes_of_parts(cat: Catalog, spec, parts: list[LoosePart]) -> dict[str, int]:
    """Sizes of the ``T[]`` columns of a partition, from the first part that declares them (not a tombstone)."""
    for p in parts:
        try:
            meta = pq.read_schema(str(p.path), filesystem=cat.arrow_fs).metadata or {}
        except (OSError, pa.ArrowException):
            continue
        if all(f"mirflow.size.{c.name}".encode() in meta for c in spec.columns if c.sized_per_file) and \
                pq.read_metadata(str(p.path), filesystem=cat.arrow_fs).num_rows:
            return {c.name: int(meta[f"mirflow.size.{c.name}".encode()]) for c in spec.columns if c.sized_per_file}
    return spec.sizes_of({})


def _versions(cat: Catalog, parts: list[LoosePart], pool: ThreadPoolExecutor) -> list[str | None]:
    """The pipeline fingerprint in each part's metadata (footers read in threads)."""
    def one(p: LoosePart) -> str | None:
        try:
            v = (pq.read_schema(str(p.path), filesystem=cat.arrow_fs).metadata or {}).get(VERSION_META)
        except (OSError, pa.ArrowException):
            return None
        return v.decode() if v else None

    return list(pool.map(one, parts))


def _read_loose(cat: Catalog, table: str, spec, parts: list[LoosePart], sizes: dict[str, int] | None,
                pool: ThreadPoolExecutor) -> tuple[pa.Table | None, list[LoosePart]]:
    """The rows of ``parts`` in the canonical schema plus the hidden key and version columns.

    One multi-threaded Arrow dataset scan over all of them (a part lacking a
    newer column gets nulls); when any part fails (damaged inside, deleted
    meanwhile), or in object storage, the parts are read one by one (in
    ``pool``) and the failing ones stay loose.
    Returns the rows and the parts read.
    """
    import pyarrow.dataset as ds

    schema = spec.arrow(sizes=sizes if spec.partition_by is not None else spec.sizes_of({}))
    per_track = "track_id" in spec.names and table != "tracks"
    data, ok = None, parts
    if not python_backed(cat.arrow_fs):  # Arrow's threads may not read that one (see read_parquet)
        try:
            data = ds.dataset([str(p.path) for p in parts], schema=schema, format="parquet",
                              filesystem=cat.arrow_fs).to_table(columns=[*schema.names, "__filename"])
        except (OSError, pa.ArrowException) as exc:
            log.info("%s: a bulk read failed (%s); reading %d parts one by one", table, exc, len(parts))
    if data is None:
        tables, ok = [], []
        for p, t in pool.map(lambda q: _read_part(cat, q, table), parts):
            if t is None:
                continue
            ok.append(p)
            if t.num_rows:
                t = _conform_to(t, schema).append_column("__filename", pa.array([str(p.path)] * t.num_rows))
                tables.append(t)
        if not tables:
            return None, ok
        data = pa.concat_tables(tables)
    if data.num_rows == 0:
        return None, ok
    names = pa.array([str(p.path) for p in ok], pa.string())
    idx = pc.index_in(data.column("__filename"), value_set=names)
    keys = pc.take(pa.array([p.key for p in ok], pa.string()), idx)
    if per_track:
        versions = pc.take(pa.array(_versions(cat, ok, pool), pa.string()), idx)
    else:
        versions = pa.nulls(data.num_rows, pa.string())
    data = data.drop_columns(["__filename"])
    return data.append_column(KEY_COLUMN, keys).append_column(VERSION_COLUMN, versions), ok


def _conform_to(data: pa.Table, schema: pa.Schema) -> pa.Table:
    cols = []
    for fld in schema:
        if fld.name in data.column_names:
            col = data.column(fld.name)
            cols.append(col if col.type == fld.type else col.cast(fld.type))
        else:
            cols.append(pa.nulls(data.num_rows, fld.type))
    return pa.Table.from_arrays(cols, schema=schema)


def _merge(table: str, spec, pieces: list[pa.Table], sizes: dict[str, int] | None) -> pa.Table:
    schema = spec.arrow(sizes=sizes if spec.partition_by is not None else spec.sizes_of({}))
    full = pa.schema([*schema, pa.field(KEY_COLUMN, pa.string(), False), pa.field(VERSION_COLUMN, pa.string())],
                     metadata=schema.metadata)
    merged = pa.concat_tables([_conform_to(t, full) for t in pieces]).combine_chunks()
    return merged.replace_schema_metadata(full.metadata)


def _write_record(cat: Catalog, comp_dir: Path, record: dict[str, Any]) -> None:
    cat.write_json_atomic(comp_dir / CURRENT, record)


def _remove_stale_generations(cat: Catalog, comp_dir: Path, record: dict[str, Any] | None) -> None:
    """Delete generation folders other than the current and the previous one (crash leftovers included)."""
    keep = {(record or {}).get("generation"), (record or {}).get("previous")}
    for d in cat.list_dirs(comp_dir):
        if d.name not in keep:
            cat.remove_tree(d)

