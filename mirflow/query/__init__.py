"""Query a catalog: DuckDB SQL views, pandas and Dask readers.

Examples
--------
>>> from mirflow.query import connect          # doctest: +SKIP
>>> con = connect("demo/catalog")              # doctest: +SKIP
>>> con.sql("select key, count(*) from tracks group by key").df()  # doctest: +SKIP
"""

from __future__ import annotations

import os
import re

import duckdb
import pyarrow as pa

from mirflow.catalog.layout import PATH_TABLES, Catalog
from mirflow.catalog.schema import load_schemas, table_schema
from mirflow.errors import CatalogError, ConfigError

__all__ = ["check_read_only", "connect", "lock_down", "read_table", "to_dask"]


def _catalog(catalog: str | os.PathLike[str] | Catalog) -> Catalog:
    cat = catalog if isinstance(catalog, Catalog) else Catalog(catalog)
    if cat.read_manifest() is None:
        raise CatalogError(f"{cat.root} is not a mirflow catalog (no manifest.json)")
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
    models with variable-length ``FLOAT[]`` vectors.

    The views read explicit lists of whole part files (a damaged part is
    left out with a warning; a folder name with ``[`` or ``*`` is never a
    glob), and the per-track tables show only rows of tracks whose
    ``tracks`` row exists (an interrupted write leaves no visible orphans).

    With ``read_only`` (the default) the connection cannot touch files at
    all: external access is off and the configuration locked, so ``COPY …
    TO``, ``ATTACH``, ``INSTALL`` or reading other files fail.
    """
    cat = _catalog(catalog)
    con = duckdb.connect(database)
    schemas = load_schemas()
    # tracks first: the other per-track views filter on it.
    for name in sorted(schemas, key=lambda n: n != "tracks"):
        spec = schemas[name]
        if spec.partition_by is None:
            files = cat.readable_parts(name)
            if files:
                source = _register(con, name, files, spec.arrow(sizes=spec.sizes_of({})))
                con.execute(f"CREATE OR REPLACE VIEW {name} AS {_select(name, source)}")
            else:
                _empty_view(con, name)
            continue
        selects = []
        for part in cat.partitions(name):
            files = cat.readable_parts(name, part)
            if not files:
                continue
            view = f"{name}_{_ident(part)}"
            source = _register(con, view, files, _partition_schema(spec, files[0]))
            con.execute(f"CREATE OR REPLACE VIEW {view} AS {_select(name, source)}")
            cols = ", ".join(f"{c.name}::FLOAT[] AS {c.name}" if c.sized_per_file else c.name
                             for c in spec.columns)
            selects.append(f"SELECT {cols} FROM {view}")
        if selects:
            con.execute(f"CREATE OR REPLACE VIEW {name} AS " + " UNION ALL ".join(selects))
        else:
            _empty_view(con, name)
    if read_only:
        lock_down(con)
    return con


def lock_down(con: duckdb.DuckDBPyConnection) -> None:
    """No file access for this connection any more (the views read through Arrow), and no undoing it."""
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
        raise ConfigError(f"SQL: {' '.join(str(exc).split())}") from None
    for statement in statements:
        kind = statement.type.name
        if kind not in READ_STATEMENTS:
            raise ConfigError(f"SQL: only queries are allowed on a catalog (got a {kind} statement); "
                              "use `mirflow export csv|parquet` to write results")


def _register(con: duckdb.DuckDBPyConnection, name: str, files: list, schema: pa.Schema) -> str:
    """Register the parts as one Arrow dataset (explicit files, schema-aligned); returns its name."""
    import pyarrow.dataset as ds

    source = f"_parts_{_ident(name)}"
    con.register(source, ds.dataset([str(f) for f in files], schema=schema, format="parquet"))
    return source


def _select(table: str, source: str) -> str:
    if not _per_track(table):
        return f"SELECT * FROM {source}"
    return f"SELECT * FROM {source} WHERE track_id IN (SELECT track_id FROM tracks)"


def _partition_schema(spec, first_part) -> pa.Schema:
    """The canonical schema with the sizes of the ``T[]`` columns this partition's parts declare."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(first_part).metadata or {}
    sizes = {c.name: int(meta.get(f"mirflow.size.{c.name}".encode(), b"1")) for c in spec.columns
             if c.sized_per_file}
    return spec.arrow(sizes=sizes)


def _empty_view(con: duckdb.DuckDBPyConnection, name: str) -> None:
    con.register(f"_empty_{name}", table_schema(name).empty_table())
    con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM _empty_{name}")


def read_table(catalog: str | os.PathLike[str] | Catalog, table: str, *, partition: str | None = None):
    """A catalog table as a pandas DataFrame (per-track tables: rows of committed tracks only)."""
    cat = _catalog(catalog)
    data = cat.read_table(table, partition=partition)
    if _per_track(table) and data.num_rows:
        import pyarrow.compute as pc

        committed = cat.read_table("tracks", columns=["track_id"]).column("track_id")
        data = data.filter(pc.is_in(data.column("track_id"), value_set=committed.combine_chunks()))
    return data.to_pandas()


def _per_track(table: str) -> bool:
    """Rows keyed by track whose commit marker is the ``tracks`` row (beats, chords, embeddings, …)."""
    return table not in PATH_TABLES and table != "tracks" and "track_id" in table_schema(table).names


def to_dask(catalog: str | os.PathLike[str] | Catalog, table: str, *, partition: str | None = None):
    """A catalog table as a lazy Dask DataFrame (for catalogs larger than memory)."""
    import dask.dataframe as dd

    cat = _catalog(catalog)
    files = [str(p) for p in cat.readable_parts(table, partition)]
    if not files:
        raise CatalogError(f"catalog {cat.root} has no parts of table {table!r}")
    ddf = dd.read_parquet(files)
    if _per_track(table):
        committed = cat.read_table("tracks", columns=["track_id"]).column("track_id").to_pylist()
        ddf = ddf[ddf["track_id"].isin(committed)]
    return ddf
