"""Query a catalog: DuckDB SQL views, pandas and Dask readers.

Examples
--------
>>> from mirflow.query import connect          # doctest: +SKIP
>>> con = connect("demo/catalog")              # doctest: +SKIP
>>> con.sql("select key, count(*) from tracks group by key").df()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable

import duckdb
import pyarrow as pa

from mirflow.catalog.layout import (
    KEY_COLUMN,
    PATH_TABLES,
    VERSION_COLUMN,
    VERSION_META,
    Catalog,
    read_parquet,
)
from mirflow.catalog.schema import load_schemas, table_schema
from mirflow.errors import CatalogError, ConfigError

__all__ = ["check_read_only", "connect", "lock_down", "read_table", "to_dask"]

log = logging.getLogger(__name__)


def _catalog(catalog: str | os.PathLike[str] | Catalog) -> Catalog:
    cat = catalog if isinstance(catalog, Catalog) else Catalog(catalog)
    if cat.read_manifest() is None:
        raise CatalogError(f"{cat.url} is not a mirflow catalog (no manifest.json)")
    return cat


def _ident(name: str) -> str:
    return re.sub(r"\W", "_", name)


def connect(catalog: str | os.PathLike[str] | Catalog, *, database: str = ":memory:",
            read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with one view per catalog table.

    Every table in ``schemas/`` gets a view (empty, with the right columns,
    when the catalog has no part of it yet). Tables partitioned by model
    (embeddings) get one view per partition, ``embeddings_<model>``, whose
    ``embedding`` column is a ``FLOAT[N]`` array (so
    ``array_cosine_similarity`` works), plus an ``embeddings`` view over all
    models with variable-length ``FLOAT[]`` vectors. ``current_tracks`` is
    ``tracks`` less the rows of audio no path holds any more (a file rewritten
    with other audio), each at its current path (:data:`CURRENT_TRACKS_VIEW`).

    The views read explicit lists of files: the table's compacted
    generation plus the loose parts written since (see docs/scale.md; a
    compacted row whose key has a newer loose part is hidden, so every row
    is seen once; a damaged part is left out with a warning; a folder name
    with ``[`` or ``*`` is never a glob). The per-track tables show only
    rows of tracks whose ``tracks`` row exists (an interrupted write leaves
    no visible orphans) and that the track's current pipeline wrote (rows
    recorded under another pipeline fingerprint are not current). A
    connection reads its files lazily: re-create it after a compaction.

    With ``read_only`` (the default) the connection cannot touch files at
    all: external access is off and the configuration locked, so ``COPY …
    TO``, ``ATTACH``, ``INSTALL`` or reading other files fail.
    """
    cat = _catalog(catalog)
    con = duckdb.connect(database)
    # DuckDB draws a progress bar on stdout for queries over a few seconds;
    # a library does not print (the CLI says what it is doing itself).
    con.execute("SET enable_progress_bar = false")
    schemas = load_schemas()
    # Compacted files (a few large ones per table) are read by DuckDB's own
    # Parquet reader, which prunes row groups and reads only the columns a
    # query needs; the read-only lock then allows exactly those files.
    native: list[str] | None = [] if cat.is_local else None
    # tracks first: the other per-track views filter on it.
    for name in sorted(schemas, key=lambda n: n != "tracks"):
        spec = schemas[name]
        if spec.partition_by is None:
            sql = _source_sql(con, cat, name, None, name, native)
            if sql is not None:
                con.execute(f"CREATE OR REPLACE VIEW {name} AS {_select(name, sql)}")
            else:
                _empty_view(con, name)
            continue
        selects = []
        for part in cat.partitions(name):
            view = f"{name}_{_ident(part)}"
            sql = _source_sql(con, cat, name, part, view, native)
            if sql is None:
                continue
            con.execute(f"CREATE OR REPLACE VIEW {view} AS {_select(name, sql)}")
            cols = ", ".join(f"{_q(c.name)}::FLOAT[] AS {_q(c.name)}" if c.sized_per_file else _q(c.name)
                             for c in spec.columns)
            selects.append(f"SELECT {cols} FROM {view}")
        if selects:
            con.execute(f"CREATE OR REPLACE VIEW {name} AS " + " UNION ALL ".join(selects))
        else:
            _empty_view(con, name)
    con.execute(CURRENT_TRACKS_VIEW)
    if read_only:
        lock_down(con, allowed_paths=native or ())
    return con


#: ``current_tracks``: the ``tracks`` rows of the audio the catalog's paths hold now, each with the
#: path it is at. Tracks are content-addressed, so a file rewritten with other audio and analysed
#: again leaves the old track's row under the same ``tracks.path``; ``files`` says which track each
#: path holds now. A track is current when ``files`` lists it at some path, or when its path has
#: neither a ``files`` row (a catalog written before ``files`` kept one) nor an ``errors`` row (a file
#: that changed during a later run loses its ``files`` row: the old track no longer answers for it).
#: Its ``path`` (and ``path_bytes``) is ``tracks.path`` when ``files`` agrees, else the first path
#: ``files`` gives it (a moved file).
#: The superseded rows stay in ``tracks`` (history, readable by track id); listings, exports,
#: similarity results and duplicate groups read this view, so no path is served twice.
CURRENT_TRACKS_VIEW = """
CREATE OR REPLACE VIEW current_tracks AS
WITH here AS (
    SELECT track_id, min(path) AS path, arg_min(path_bytes, path) AS path_bytes FROM files GROUP BY track_id
), answers AS (  -- does the path a track was analysed at still hold it?
    SELECT t.*, f.track_id = t.track_id
               OR (f.track_id IS NULL AND NOT EXISTS (SELECT 1 FROM errors e WHERE e.path = t.path)) AS still_here
    FROM tracks t LEFT JOIN files f ON f.path = t.path
)
SELECT a.* EXCLUDE (still_here) REPLACE (
    CASE WHEN a.still_here THEN a.path ELSE h.path END AS path,
    CASE WHEN a.still_here THEN a.path_bytes ELSE h.path_bytes END AS path_bytes
)
FROM answers a
LEFT JOIN here h ON h.track_id = a.track_id
WHERE a.still_here OR h.track_id IS NOT NULL
"""


def lock_down(con: duckdb.DuckDBPyConnection, *, allowed_paths: Iterable[str] = ()) -> None:
    """No file access for this connection any more, and no undoing it.

    The views read loose parts through Arrow, and the compacted files listed
    in ``allowed_paths`` (which DuckDB may still read, nothing else).
    """
    allowed = list(allowed_paths)
    if allowed:
        con.execute("SET allowed_paths = ?", [allowed])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


#: Statement types ``mirflow query`` runs; anything else (COPY, ATTACH, INSTALL, SET, …) is refused.
READ_STATEMENTS = ("SELECT", "EXPLAIN")


def check_read_only(sql: str) -> None:
    """Refuse SQL that is not a read (one or more SELECT/EXPLAIN statements).

    Raises
    ------
    ConfigError
        For a statement that writes or configures, and for SQL that does not parse.
    """
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise ConfigError(f"SQL error: {' '.join(str(exc).split())}") from None
    for statement in statements:
        kind = statement.type.name
        if kind not in READ_STATEMENTS:
            raise ConfigError(f"SQL error: only queries are allowed on a catalog (got a {kind} statement); "
                              "use `mirflow export csv|parquet` to write results")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _footers(cat: Catalog, paths: list) -> dict:
    """``path -> (num_rows, schema metadata)`` of whole parts (damaged ones are absent), read in threads."""
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow.parquet as pq

    def one(path):
        if not cat.part_intact(path):
            return path, None
        try:
            md = pq.read_metadata(str(path), filesystem=cat.arrow_fs)
        except (OSError, pa.ArrowException):
            return path, None
        return path, (md.num_rows, md.schema.to_arrow_schema().metadata or {})

    with ThreadPoolExecutor(max_workers=8) as pool:
        return {p: f for p, f in pool.map(one, paths) if f is not None}


def _source_sql(con: duckdb.DuckDBPyConnection, cat: Catalog, table: str, partition: str | None,
                view: str, native: list[str] | None = None) -> list[tuple[str, bool]] | None:
    """Register one table's (or partition's) compacted files and live parts; SQL of their rows.

    The SQL yields the schema's columns plus ``_pv``, the pipeline
    fingerprint that wrote the row (null when unknown). Compacted rows of a
    key with a live loose part are left out: the loose part wins. With
    ``native`` (a list), compacted files are read by DuckDB's Parquet reader
    and appended to it; otherwise through Arrow.

    Returns ``(sql, current)`` pieces; ``current`` when the compaction
    proved every row of the piece current for the tracks table as it is
    now (see :func:`_compaction_current`), so no join with ``tracks`` is needed.
    """
    import pyarrow.dataset as ds

    spec = table_schema(table)
    snap = cat.snapshot(table, partition)
    footers = _footers(cat, [p.path for p in snap.loose])
    bad = [p.path for p in snap.loose if p.path not in footers]
    if bad:
        log.warning("%s: %d damaged part(s) left out (the next `mirflow analyze` quarantines them): %s",
                    table, len(bad), ", ".join(map(str, bad[:5])))
    data_parts = [p for p in snap.loose if p.path in footers and footers[p.path][0] > 0]
    if not snap.compacted and not data_parts:
        return None
    sizes = spec.sizes_of({})
    if spec.partition_by is not None:
        metas = [footers[p.path][1] for p in data_parts]
        if snap.compacted:
            import pyarrow.parquet as pq

            metas.insert(0, pq.read_schema(str(snap.compacted[0][1]), filesystem=cat.arrow_fs).metadata or {})
        meta = metas[0] if metas else {}
        sizes = {c.name: int(meta.get(f"mirflow.size.{c.name}".encode(), b"1")) for c in spec.columns
                 if c.sized_per_file}
    schema = spec.arrow(sizes=sizes)
    cols = ", ".join(_q(n) for n in spec.names)
    selects = []
    ident = _ident(view)
    if snap.compacted:
        files = [str(f) for _, f in snap.compacted]
        if native is not None and not any(c in f for f in files for c in "*?[]{}"):
            # Never a glob: a path with glob characters goes through Arrow below.
            import pyarrow.parquet as pq

            native.extend(files)
            listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
            present = set().union(*(pq.read_schema(f).names for f in files))
            picks = []
            for name in [*spec.names, KEY_COLUMN, VERSION_COLUMN]:
                kind = schema.field(name).type if name in schema.names else pa.string()
                if name not in present:  # a column the schema gained after this compaction
                    picks.append(f"NULL AS {_q(name)}")
                elif pa.types.is_fixed_size_list(kind):  # Parquet stores it as a variable list
                    element = "DOUBLE" if pa.types.is_float64(kind.value_type) else "FLOAT"
                    picks.append(f"{_q(name)}::{element}[{kind.list_size}] AS {_q(name)}")
                else:
                    picks.append(_q(name))
            con.execute(f"CREATE OR REPLACE VIEW _compacted_{ident} AS SELECT {', '.join(picks)} "
                        f"FROM read_parquet([{listed}], union_by_name = true)")
        else:
            full = pa.schema([*schema, pa.field(KEY_COLUMN, pa.string()), pa.field(VERSION_COLUMN, pa.string())])
            con.register(f"_compacted_{ident}", ds.dataset(files, schema=full, format="parquet",
                                                           filesystem=cat.arrow_fs))
        hidden = sorted(snap.hidden_keys().get(partition, set()))
        where = ""
        if hidden:
            con.register(f"_hidden_{ident}", pa.table({"k": pa.array(hidden, pa.string())}))
            where = f" WHERE {KEY_COLUMN} NOT IN (SELECT k FROM _hidden_{ident})"
        selects.append((f"SELECT {cols}, {VERSION_COLUMN} AS _pv FROM _compacted_{ident}{where}",
                        _compaction_current(cat, table, snap.generation)))
    if data_parts:
        con.register(f"_parts_{ident}", ds.dataset([str(p.path) for p in data_parts], schema=schema,
                                                   format="parquet", filesystem=cat.arrow_fs))
        versions = {p.key: footers[p.path][1].get(VERSION_META) for p in data_parts}
        versions = {k: v.decode() for k, v in versions.items() if v}
        if versions and "track_id" in spec.names:
            con.register(f"_versions_{ident}", pa.table({"k": pa.array(list(versions), pa.string()),
                                                         "v": pa.array(list(versions.values()), pa.string())}))
            lcols = ", ".join(f"l.{_q(n)}" for n in spec.names)
            selects.append((f"SELECT {lcols}, v.v AS _pv FROM _parts_{ident} l "
                            f"LEFT JOIN _versions_{ident} v ON l.track_id = v.k", False))
        else:
            selects.append((f"SELECT {cols}, NULL::VARCHAR AS _pv FROM _parts_{ident}", False))
    return selects


def _compaction_current(cat: Catalog, table: str, generation: str | None) -> bool:
    """Whether every compacted row of ``table`` is a committed track's current row, without a join.

    The compactor records (``current_with``) the ``tracks`` generation
    against which it checked that every row of the new generation belongs
    to a track of that generation with that track's pipeline fingerprint.
    That still holds while ``tracks`` is that same generation with no loose
    part: any added, re-analyzed or removed track writes one.
    """
    if not _per_track(table) or generation is None:
        return False
    record = cat.compaction_record(table)
    if record is None or record.get("generation") != generation or not record.get("current_with"):
        return False
    tracks = cat.snapshot("tracks")
    return tracks.generation == record["current_with"] and not tracks.loose


def _select(table: str, pieces: list[tuple[str, bool]]) -> str:
    cols = ", ".join(f"s.{_q(n)}" for n in table_schema(table).names)
    if not _per_track(table):
        return " UNION ALL ".join(f"SELECT {cols} FROM ({sql}) s" for sql, _ in pieces)
    # A long-table row is served only for a committed track, and only if the
    # track's current analysis wrote it: rows an extractor left under another
    # pipeline fingerprint (dropped from the pipeline, other parameters) are not.
    return " UNION ALL ".join(
        f"SELECT {cols} FROM ({sql}) s" if current else
        f"SELECT {cols} FROM ({sql}) s SEMI JOIN tracks t ON s.track_id = t.track_id "
        "AND (s._pv IS NULL OR s._pv = t.pipeline_version)" for sql, current in pieces)


def _empty_view(con: duckdb.DuckDBPyConnection, name: str) -> None:
    con.register(f"_empty_{name}", table_schema(name).empty_table())
    con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM _empty_{name}")


def read_table(catalog: str | os.PathLike[str] | Catalog, table: str, *, partition: str | None = None):
    """A catalog table as a pandas DataFrame (per-track tables: rows of committed tracks' current analysis only)."""
    cat = _catalog(catalog)
    if not _per_track(table):
        return cat.read_table(table, partition=partition).to_pandas()
    data = cat.read_table(table, partition=partition, with_versions=True)
    if data.num_rows:
        data = data.filter(_current_mask(cat, data))
    return data.drop_columns([VERSION_COLUMN]).to_pandas()


def _current_mask(cat: Catalog, data: pa.Table):
    """Rows of committed tracks whose pipeline fingerprint is the track's (or unknown)."""
    import pyarrow.compute as pc

    tracks = cat.read_table("tracks", columns=["track_id", "pipeline_version"])
    ids = tracks.column("track_id").combine_chunks()
    idx = pc.index_in(data.column("track_id"), value_set=ids)
    current = pc.take(tracks.column("pipeline_version").combine_chunks(), idx)
    versions = data.column(VERSION_COLUMN)
    same = pc.fill_null(pc.equal(versions, current), False)
    return pc.and_(pc.is_valid(idx), pc.or_(pc.is_null(versions), same))


def _per_track(table: str) -> bool:
    """Rows keyed by track whose commit marker is the ``tracks`` row (beats, chords, embeddings, …)."""
    return table not in PATH_TABLES and table != "tracks" and "track_id" in table_schema(table).names


def to_dask(catalog: str | os.PathLike[str] | Catalog, table: str, *, partition: str | None = None):
    """A catalog table as a lazy Dask DataFrame (for catalogs larger than memory).

    One Dask partition per compacted file (its hidden rows left out) and one
    per batch of loose parts; per-track tables keep rows of committed tracks'
    current analysis only.
    """
    import dask.dataframe as dd
    import pyarrow.compute as pc

    cat = _catalog(catalog)
    snap = cat.snapshot(table, partition)
    loose = [p for p in snap.loose if cat.part_intact(p.path)]
    if not snap.compacted and not loose:
        raise CatalogError(f"catalog {cat.url} has no parts of table {table!r}")
    spec = table_schema(table)
    hidden = {k: pa.array(sorted(v), pa.string()) for k, v in snap.hidden_keys().items()}
    current = None
    if _per_track(table):
        tr = cat.read_table("tracks", columns=["track_id", "pipeline_version"])
        current = (tr.column("track_id").combine_chunks(), tr.column("pipeline_version").combine_chunks())
    # Catalogs in object storage are read in the tasks through their URL (the
    # pyarrow filesystem wrapping fsspec does not travel to workers).
    url = None if cat.is_local else cat.url
    pieces = [("compacted", part, [str(f)]) for part, f in snap.compacted]
    pieces += [("loose", None, [str(p.path) for p in loose[i:i + 512]]) for i in range(0, len(loose), 512)]

    def load(piece):
        kind, part, files = piece
        fs = None if url is None else Catalog(url).arrow_fs
        tables = []
        for f in files:
            t = read_parquet(f, filesystem=fs)
            if t.num_rows == 0:
                continue
            if kind == "compacted":
                if part in hidden:
                    t = t.filter(pc.invert(pc.is_in(t.column(KEY_COLUMN), value_set=hidden[part])))
            else:
                version = (t.schema.metadata or {}).get(VERSION_META)
                t = t.append_column(VERSION_COLUMN, pa.array([version.decode() if version else None] * t.num_rows,
                                                             pa.string()))
            if spec.partition_by is not None and partition is None:
                from mirflow.catalog.layout import _unsize

                t = _unsize(t, spec)
            names = [n for n in spec.names if n in t.column_names]
            tables.append(t.select([*names, VERSION_COLUMN]))
        if not tables:
            return _empty_frame(spec)
        t = pa.concat_tables(tables, promote_options="default")
        if current is not None:
            ids, versions = current
            idx = pc.index_in(t.column("track_id"), value_set=ids)
            same = pc.fill_null(pc.equal(t.column(VERSION_COLUMN), pc.take(versions, idx)), False)
            t = t.filter(pc.and_(pc.is_valid(idx), pc.or_(pc.is_null(t.column(VERSION_COLUMN)), same)))
        return t.drop_columns([VERSION_COLUMN]).to_pandas()

    return dd.from_map(load, pieces)


def _empty_frame(spec):
    return spec.empty_table().to_pandas()
