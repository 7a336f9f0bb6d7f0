"""Catalog: on-disk layout, schemas, writers and readers."""

from mirflow.catalog.layout import Catalog, path_key
from mirflow.catalog.schema import (
    SCHEMA_PATH_ENV,
    TableSchema,
    conform,
    load_schemas,
    register_schema_dir,
    schema_dirs,
    table_schema,
    unregister_schema_dir,
)

__all__ = ["SCHEMA_PATH_ENV", "Catalog", "TableSchema", "conform", "load_schemas", "path_key",
           "register_schema_dir", "schema_dirs", "table_schema", "unregister_schema_dir"]
