"""The wheel ships every subpackage, the schemas and the pipelines (pip install alone works)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")


def test_every_subpackage_is_listed():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "mirflow").rglob("__init__.py")}
    assert on_disk <= listed, f"add to pyproject.toml packages: {sorted(on_disk - listed)}"
    assert cfg["package-dir"]["mirflow._schemas"] == "schemas"
    assert cfg["package-dir"]["mirflow._pipelines"] == "pipelines"


def test_pipelines_folder_is_yaml_only():
    files = [p for p in (ROOT / "pipelines").iterdir() if not p.name.startswith(".")]
    assert files and all(p.suffix == ".yaml" for p in files)
