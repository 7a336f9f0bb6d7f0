"""Table schemas: read the canonical YAML files and build pyarrow schemas.

``schemas/*.yaml`` is the single source of truth for every table's columns,
types, units and descriptions; nothing here lists columns again. Each batch
written to the catalog goes through :func:`conform`, which fails on a
missing, extra or mistyped column rather than letting a table drift.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
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


def _load(path) -> TableSchema:
    with open(path, encoding="utf-8") as fh:
        raw = yaml.safe_load(fh)
    try:
        cols = tuple(ColumnSpec(**c) for c in raw["columns"])
        schema = TableSchema(
            table=raw["table"],
            version=int(raw["version"]),
            description=raw.get("description", ""),
            primary_key=tuple(raw.get("primary_key", ())),
            columns=cols,
            partition_by=raw.get("partition_by"),
        )
    except (KeyError, TypeError) as exc:
        raise SchemaError(f"malformed schema file {path}: {exc}") from exc
    names = schema.names
    if len(set(names)) != len(names):
        raise SchemaError(f"schema {schema.table!r} declares a column twice")
    for c in cols:
        parse_type(c.type, size=1)  # fail early on a bad type string
    if schema.partition_by is not None and schema.partition_by not in names:
        raise SchemaError(f"schema {schema.table!r}: partition_by names an unknown column")
    return schema


@functools.cache
def load_schemas() -> dict[str, TableSchema]:
    """Every table schema that ships with mirflow, by table name."""
    out = {}
    for path in sorted(schemas_dir().glob("*.yaml")):
        s = _load(path)
        if s.table != path.stem:
            raise SchemaError(f"{path.name} declares table {s.table!r}; file and table names must match")
        out[s.table] = s
    return out


def table_schema(table: str) -> TableSchema:
    """The canonical schema of ``table``."""
    try:
        return load_schemas()[table]
    except KeyError:
        raise SchemaError(f"no schema for table {table!r}; known: {sorted(load_schemas())}") from None


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
        raise SchemaError(f"{table}: columns not in schemas/{table}.yaml: {sorted(extra)}")
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
