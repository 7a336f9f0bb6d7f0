"""Catalog: on-disk layout, schemas, writers and readers."""

from mirflow.catalog.layout import Catalog, path_key
from mirflow.catalog.schema import TableSchema, conform, load_schemas, table_schema

__all__ = ["Catalog", "TableSchema", "conform", "load_schemas", "path_key", "table_schema"]
