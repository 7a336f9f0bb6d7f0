"""schemas/ is the one definition of every table; code and files must not drift."""

from __future__ import annotations

import pyarrow as pa
import pytest
import yaml

from mirflow.catalog.schema import conform, load_schemas, parse_type, table_schema
from mirflow.errors import SchemaError
from mirflow.extractors import registry
from mirflow.resources import schemas_dir


def test_every_schema_file_loads_and_documents_every_column():
    schemas = load_schemas()
    assert {"tracks", "files", "errors", "beats", "chords"} <= set(schemas)
    for name, spec in schemas.items():
        assert spec.version >= 1
        for col in spec.columns:
            assert col.description, f"{name}.{col.name} has no description"
        for key in spec.primary_key:
            assert key in spec.names
        arrow = spec.arrow(sizes={c.name: 4 for c in spec.columns if c.type.endswith("[]")})
        assert arrow.metadata[b"mirflow.table"] == name.encode()


def test_schema_files_are_the_ones_shipped():
    names = sorted(p.stem for p in schemas_dir().glob("*.yaml"))
    assert names == sorted(load_schemas())
    raw = yaml.safe_load((schemas_dir() / "tracks.yaml").read_text())
    assert [c["name"] for c in raw["columns"]] == table_schema("tracks").names


def test_every_extractor_column_is_declared():
    tracks = set(table_schema("tracks").names)
    emitted = set()
    for name in registry.names():
        try:
            cls = registry.get(name)
        except ImportError:
            continue  # an optional backend module is absent; the contract test reports it
        assert set(cls.columns) <= tracks, f"{name} emits undeclared columns"
        assert set(cls.tables) <= set(load_schemas()), f"{name} emits undeclared tables"
        emitted |= set(cls.columns)
    assert {"duration_s", "loudness_integrated_lufs"} <= emitted


def test_conform_rejects_drift():
    good = {"track_id": ["t"], "time_s": [1.0], "beat_in_bar": [1]}
    assert conform("beats", good).num_rows == 1
    with pytest.raises(SchemaError, match="not in schemas/beats.yaml"):
        conform("beats", {**good, "tempo": [120.0]})
    with pytest.raises(SchemaError, match="missing column"):
        conform("beats", {"track_id": ["t"], "time_s": [1.0]})
    with pytest.raises(SchemaError, match="non-nullable"):
        conform("beats", {"track_id": [None], "time_s": [1.0], "beat_in_bar": [1]})
    with pytest.raises(SchemaError, match="do not convert"):
        conform("beats", {"track_id": ["t"], "time_s": ["soon"], "beat_in_bar": [1]})


def test_types():
    assert parse_type("float32[13]") == pa.list_(pa.float32(), 13)
    assert parse_type("float32[]", size=200) == pa.list_(pa.float32(), 200)
    assert parse_type("timestamp") == pa.timestamp("us", tz="UTC")
    with pytest.raises(SchemaError):
        parse_type("float32[]")
    with pytest.raises(SchemaError):
        parse_type("complex128")


def test_docs_tables_page_matches_schemas():
    from pathlib import Path

    from mirflow.catalog.docs import tables_markdown

    page = Path(__file__).resolve().parent.parent / "docs" / "tables.md"
    assert page.read_text(encoding="utf-8") == tables_markdown(), "run `make docs` to regenerate docs/tables.md"
