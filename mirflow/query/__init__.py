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

from mirflow.catalog.layout import Catalog
from mirflow.catalog.schema import load_schemas, table_schema
from mirflow.errors import CatalogError

__all__ = ["connect", "read_table", "to_dask"]


def _catalog(catalog: str | os.PathLike[str] | Catalog) -> Catalog:
    cat = catalog if isinstance(catalog, Catalog) else Catalog(catalog)
    if cat.read_manifest() is None:
        raise CatalogError(f"{cat.root} is not a mirflow catalog (no manifest.json)")
    return cat


def _ident(name: str) -> str:
    return re.sub(r"\W", "_", name)


def connect(catalog: str | os.PathLike[str] | Catalog, *, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with one view per catalog table.

    Every table in ``schemas/`` gets a view (empty, with the right columns,
    when the catalog has no part of it yet). Tables partitioned by model
    (embeddings) get one view per partition, ``embeddings_<model>``, whose
    ``embedding`` column is a ``FLOAT[N]`` array (so
    ``array_cosine_similarity`` works), plus an ``embeddings`` view over all
    models with variable-length ``FLOAT[]`` vectors.
    """
    cat = _catalog(catalog)
    con = duckdb.connect(database)
    for name, spec in load_schemas().items():
        if spec.partition_by is None:
            if cat.parts(name):
                con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet('{_esc(cat.glob(name))}', union_by_name=true)")
            else:
                _empty_view(con, name)
            continue
        parts = cat.partitions(name)
        selects = []
        for part in parts:
            view = f"{name}_{_ident(part)}"
            con.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM read_parquet('{_esc(cat.glob(name, part))}', union_by_name=true)")
            cols = ", ".join(f"{c.name}::FLOAT[] AS {c.name}" if c.sized_per_file else c.name
                             for c in spec.columns)
            selects.append(f"SELECT {cols} FROM {view}")
        if selects:
            con.execute(f"CREATE OR REPLACE VIEW {name} AS " + " UNION ALL ".join(selects))
        else:
            _empty_view(con, name)
    return con


def _esc(text: str) -> str:
    return text.replace("'", "''")


def _empty_view(con: duckdb.DuckDBPyConnection, name: str) -> None:
    spec = table_schema(name)
    empty = spec.empty_table()
    con.register(f"_empty_{name}", empty)
    con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM _empty_{name}")


def read_table(catalog: str | os.PathLike[str] | Catalog, table: str, *, partition: str | None = None):
    """A catalog table as a pandas DataFrame."""
    return _catalog(catalog).read_table(table, partition=partition).to_pandas()


def to_dask(catalog: str | os.PathLike[str] | Catalog, table: str, *, partition: str | None = None):
    """A catalog table as a lazy Dask DataFrame (for catalogs larger than memory)."""
    import dask.dataframe as dd

    cat = _catalog(catalog)
    files = [str(p) for p in (cat.parts(table) if partition is None else
                              sorted((cat.table_dir(table) / partition).rglob("*.parquet")))]
    if not files:
        raise CatalogError(f"catalog {cat.root} has no parts of table {table!r}")
    return dd.read_parquet(files)
