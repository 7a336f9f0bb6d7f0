"""Table schemas: read the canonical YAML files and build pyarrow schemas.

``schemas/*.yaml`` is the single source of truth for every table's columns,
types, units and descriptions; nothing here lists columns again. Each batch
written to the catalog goes through :func:`conform`, which fails on a
missing, extra or mistyped column rather than letting a table drift.

Schemas are read from a search path (:func:`schema_dirs`): the folder that
ships with mirflow, then the folders named in ``MIRFLOW_SCHEMA_PATH``
(``os.pathsep``-separated), then folders registered in code with
:func:`register_schema_dir` (a plugin module does this at import, next to
its extractor). In each folder, ``NAME.yaml`` declares table ``NAME`` (a
table declared twice is an error naming both files) and
``TABLE.FRAGMENT.yaml`` adds nullable columns to an existing table, e.g.
``tracks.my_plugin.yaml`` adds a plugin's per-track values to ``tracks``;
a column declared twice is an error naming both files.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
import yaml

from mirflow.errors import SchemaError
from mirflow.resources import schemas_dir

_SCALARS: dict[str, pa.DataType] = {
    "string": pa.string(),
    "binary": pa.binary(),
    "bool": pa.bool_(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}
_LIST = re.compile(r"^list<(\w+)>$")
_FIXED = re.compile(r"^(\w+)\[(\d*)\]$")


def parse_type(spec: str, *, size: int | None = None) -> pa.DataType:
    """Turn a schema type string into a pyarrow type.

    ``T[N]`` is a fixed-size list of N values of T (Arrow ``FixedSizeList``);
    ``T[]`` is one whose size is fixed per table file and given as ``size``
    (embedding dimensions depend on the model).

    Examples
    --------
    >>> parse_type("float32[12]")
    FixedSizeListType(fixed_size_list<item: float>[12])
    >>> parse_type("list<string>")
    ListType(list<item: string>)
    """
    if spec in _SCALARS:
        return _SCALARS[spec]
    if m := _LIST.match(spec):
        return pa.list_(parse_type(m.group(1)))
    if m := _FIXED.match(spec):
        n = int(m.group(2)) if m.group(2) else size
        if n is None:
            raise SchemaError(f"type {spec!r} needs a size")
        return pa.list_(parse_type(m.group(1)), n)
    raise SchemaError(f"unknown column type {spec!r}")


@dataclass(frozen=True)
class ColumnSpec:
    """One column of a table: name, type string, nullability, unit, description."""

    name: str
    type: str
    nullable: bool = True
    unit: str | None = None
    description: str = ""

    @property
    def sized_per_file(self) -> bool:
        """A ``T[]`` column: a fixed-size list whose size is fixed per file (e.g. an embedding)."""
        return self.type.endswith("[]")


@dataclass(frozen=True)
class TableSchema:
    """A table's canonical definition, as read from ``schemas/<table>.yaml``."""

    table: str
    version: int
    description: str
    primary_key: tuple[str, ...]
    columns: tuple[ColumnSpec, ...]
    #: Column whose value names a sub-folder of the table (one fixed-size
    #: embedding dimension per folder, e.g. per model).
    partition_by: str | None = None
    #: The YAML files it was read from: the table's file, then its fragments.
    sources: tuple[str, ...] = ()

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise SchemaError(f"table {self.table!r} has no column {name!r}")

    def sizes_of(self, data: Mapping[str, Any]) -> dict[str, int]:
        """Sizes of the ``T[]`` columns, read off the first row of ``data`` (1 when it is empty)."""
        out = {}
        for c in self.columns:
            if c.sized_per_file:
                values = data.get(c.name) if hasattr(data, "get") else None
                out[c.name] = len(values[0]) if values is not None and len(values) else 1
        return out

    def empty_table(self) -> pa.Table:
        """A table with no rows and this schema (``T[]`` columns of size 1)."""
        return self.arrow(sizes=self.sizes_of({})).empty_table()

    def arrow(self, *, sizes: Mapping[str, int] | None = None) -> pa.Schema:
        """The pyarrow schema; ``sizes`` fixes ``T[]`` columns (e.g. embedding dims)."""
        sizes = dict(sizes or {})
        fields = []
        for c in self.columns:
            meta = {"description": c.description}
            if c.unit:
                meta["unit"] = c.unit
            fields.append(
                pa.field(c.name, parse_type(c.type, size=sizes.get(c.name)), c.nullable, metadata=meta)
            )
        meta = {"mirflow.table": self.table, "mirflow.schema_version": str(self.version)}
        meta.update({f"mirflow.size.{k}": str(v) for k, v in sizes.items()})
        return pa.schema(fields, metadata=meta)


def _read_yaml(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        raw = yaml.safe_load(fh)
    if not isinstance(raw, dict):
        raise SchemaError(f"malformed schema file {path}: expected a mapping")
    return raw


def _columns(raw: Mapping[str, Any], path: Path) -> tuple[ColumnSpec, ...]:
    try:
        cols = tuple(ColumnSpec(**c) for c in raw["columns"])
    except (KeyError, TypeError) as exc:
        raise SchemaError(f"malformed schema file {path}: {exc}") from exc
    for c in cols:
        try:
            parse_type(c.type, size=1)  # fail early on a bad type string
        except SchemaError as exc:
            raise SchemaError(f"{path}: column {c.name!r}: {exc}") from None
    return cols


def _load(path: str | os.PathLike[str]) -> TableSchema:
    path = Path(path)
    raw = _read_yaml(path)
    cols = _columns(raw, path)
    try:
        schema = TableSchema(
            table=raw["table"],
            version=int(raw["version"]),
            description=raw.get("description", ""),
            primary_key=tuple(raw.get("primary_key", ())),
            columns=cols,
            partition_by=raw.get("partition_by"),
            sources=(str(path),),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SchemaError(f"malformed schema file {path}: {exc}") from exc
    names = schema.names
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise SchemaError(f"schema {schema.table!r} ({path}) declares {twice} twice")
    if schema.partition_by is not None and schema.partition_by not in names:
        raise SchemaError(f"schema {schema.table!r}: partition_by names an unknown column")
    return schema


def _extend(base: TableSchema, path: Path) -> TableSchema:
    """``base`` with the columns of the fragment file ``path`` appended."""
    raw = _read_yaml(path)
    table = path.name.split(".", 1)[0]
    if raw.get("table", table) != table:
        raise SchemaError(f"{path} extends table {raw['table']!r}, but its file name says {table!r}")
    unknown = sorted(set(raw) - {"table", "description", "columns"})
    if unknown:
        raise SchemaError(f"{path}: a fragment only adds columns; unexpected keys {unknown}")
    owner = {c.name: base.sources[0] for c in base.columns}
    for src in base.sources[1:]:
        for c in _columns(_read_yaml(Path(src)), Path(src)):
            owner[c.name] = src
    added = _columns(raw, path)
    for c in added:
        if c.name in owner:
            raise SchemaError(f"column {table}.{c.name} is declared in both {owner[c.name]} and {path}")
        if not c.nullable:
            # Rows written by extractors that do not know the plugin leave it null.
            raise SchemaError(f"{path}: column {table}.{c.name} added by a fragment must be nullable")
        owner[c.name] = str(path)
    return replace(base, columns=base.columns + added, sources=base.sources + (str(path),))


#: Environment variable: extra schema folders, ``os.pathsep``-separated.
#: Worker processes inherit it, so they read the same schemas as the client.
SCHEMA_PATH_ENV = "MIRFLOW_SCHEMA_PATH"

_registered_dirs: list[Path] = []


def register_schema_dir(path: str | os.PathLike[str]) -> Path:
    """Add a folder of schema YAML files to the search path (a plugin calls this at import).

    Parameters
    ----------
    path : str or path-like
        A folder holding ``NAME.yaml`` table schemas and/or ``TABLE.FRAGMENT.yaml``
        column fragments, usually next to the plugin's module
        (``Path(__file__).parent / "schemas"``).

    Returns
    -------
    pathlib.Path
        The folder, resolved.

    Raises
    ------
    SchemaError
        If the folder does not exist, or its files clash with the schemas
        already on the path (the registration is then undone).

    Examples
    --------
    >>> from pathlib import Path                                      # doctest: +SKIP
    >>> from mirflow.catalog import register_schema_dir               # doctest: +SKIP
    >>> register_schema_dir(Path(__file__).parent / "schemas")        # doctest: +SKIP
    """
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise SchemaError(f"schema folder {folder} does not exist")
    if folder in _registered_dirs:
        return folder
    _registered_dirs.append(folder)
    try:
        load_schemas()  # fail now, naming the clash, not at the first write
    except SchemaError:
        _registered_dirs.remove(folder)
        raise
    return folder


def unregister_schema_dir(path: str | os.PathLike[str]) -> None:
    """Remove a folder added with :func:`register_schema_dir` (tests that load a plugin clean up with it)."""
    folder = Path(path).expanduser().resolve()
    if folder in _registered_dirs:
        _registered_dirs.remove(folder)


def schema_dirs() -> list[Path]:
    """The schema search path: shipped folder, ``MIRFLOW_SCHEMA_PATH`` folders, registered folders."""
    out = [schemas_dir(), *_env_dirs(os.environ.get(SCHEMA_PATH_ENV, "")), *_registered_dirs]
    seen: set[Path] = set()
    return [d for d in out if not (d in seen or seen.add(d))]


@functools.lru_cache(maxsize=8)
def _env_dirs(value: str) -> tuple[Path, ...]:
    return tuple(Path(entry.strip()).expanduser().resolve() for entry in value.split(os.pathsep) if entry.strip())


def _load_plugins() -> None:
    # Plugins named in MIRFLOW_PLUGINS register their schema folders at
    # import; importing them here lets a process that only reads a catalog
    # (mirflow query, a notebook) see plugin tables with the same one
    # variable the analysis used. The registry module is light (no audio
    # libraries); imported here, not at the top, as it imports this package.
    from mirflow.extractors import registry

    registry._load_plugins()


def load_schemas() -> dict[str, TableSchema]:
    """Every table schema on the search path (:func:`schema_dirs`), by table name."""
    _load_plugins()
    return _load_dirs(tuple(schema_dirs()))


@functools.lru_cache(maxsize=8)
def _load_dirs(dirs: tuple[Path, ...]) -> dict[str, TableSchema]:
    # Keyed on the search path itself: registering a folder or changing the
    # environment variable reads the files again, with nothing to invalidate.
    out: dict[str, TableSchema] = {}
    fragments: list[Path] = []
    for folder in dirs:
        if not folder.is_dir():
            raise SchemaError(f"schema folder {folder} does not exist (check {SCHEMA_PATH_ENV})")
        for path in sorted(folder.glob("*.yaml")):
            if "." in path.stem:
                fragments.append(path)
                continue
            s = _load(path)
            if s.table != path.stem:
                raise SchemaError(f"{path.name} declares table {s.table!r}; file and table names must match")
            if s.table in out:
                raise SchemaError(f"table {s.table!r} is declared in both {out[s.table].sources[0]} and {path}")
            out[s.table] = s
    for path in fragments:
        table = path.name.split(".", 1)[0]
        if table not in out:
            raise SchemaError(f"{path} adds columns to table {table!r}, which no schema on the path declares")
        out[table] = _extend(out[table], path)
    return out


def table_schema(table: str) -> TableSchema:
    """The canonical schema of ``table``."""
    schemas = load_schemas()
    try:
        return schemas[table]
    except KeyError:
        raise SchemaError(f"no schema for table {table!r}; known: {sorted(schemas)}") from None


def conform(table: str, data: pa.Table | Mapping[str, Any], *, sizes: Mapping[str, int] | None = None,
            fill_missing: bool = False) -> pa.Table:
    """Validate a batch against its table schema and return it in canonical form.

    Parameters
    ----------
    table : str
        Table name, e.g. ``"tracks"``.
    data : pyarrow.Table or mapping of column name to list of values
        The batch.
    sizes : mapping, optional
        Sizes of ``T[]`` columns.
    fill_missing : bool
        Fill absent nullable columns with nulls (the wide ``tracks`` table,
        where a pipeline runs only some extractors). Extra columns are always
        an error.

    Raises
    ------
    SchemaError
        On an extra or missing column, a value that does not convert to the
        declared type, or a null in a non-nullable column.
    """
    spec = table_schema(table)
    schema = spec.arrow(sizes=sizes)
    if isinstance(data, pa.Table):
        columns = {name: data.column(name) for name in data.column_names}
        n = data.num_rows
    else:
        columns = dict(data)
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise SchemaError(f"{table}: columns have different lengths {sorted(lengths)}")
        n = lengths.pop() if lengths else 0
    extra = set(columns) - set(schema.names)
    if extra:
        others = f" (nor {', '.join(spec.sources[1:])})" if len(spec.sources) > 1 else ""
        raise SchemaError(f"{table}: columns not in schemas/{table}.yaml{others}: {sorted(extra)}")
    arrays = []
    for field in schema:
        if field.name not in columns:
            if field.nullable and fill_missing:
                arrays.append(pa.nulls(n, field.type))
                continue
            raise SchemaError(f"{table}: missing column {field.name!r}")
        values = columns[field.name]
        try:
            if isinstance(values, (pa.Array, pa.ChunkedArray)):
                arr = values.cast(field.type)
            else:
                arr = pa.array(values, type=field.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError, OverflowError) as exc:
            raise SchemaError(f"{table}.{field.name}: values do not convert to {field.type}: {exc}") from exc
        if not field.nullable and arr.null_count:
            raise SchemaError(f"{table}.{field.name}: null in a non-nullable column")
        arrays.append(arr)
    out = pa.Table.from_arrays(arrays, schema=schema)
    _check_primary_key(spec, out)
    return out


def _check_primary_key(spec: TableSchema, data: pa.Table) -> None:
    """A batch holds each primary key once (parts are per track or path, so the table does too)."""
    if data.num_rows < 2 or not spec.primary_key:
        return
    counts = data.select(list(spec.primary_key)).group_by(list(spec.primary_key)).aggregate([([], "count_all")])
    if counts.num_rows < data.num_rows:
        dup = counts.filter(pa.compute.greater(counts["count_all"], 1)).slice(0, 1).to_pylist()[0]
        dup.pop("count_all")
        raise SchemaError(f"{spec.table}: primary key {list(spec.primary_key)} repeated: {dup}")
