"""The import graph: lower layers never import upper ones; the downstream layer never imports the pipeline.

Layers, bottom to top: ``audio``/``catalog``/``models``/``extractors`` (the analysis building blocks),
``pipeline`` (the Dask run), ``query`` (reading catalogs), the downstream packages (``ml``, ``index``,
``recsys``, ``serve``), and ``cli`` on top. The downstream packages reach the analysis only through
``mirflow.analyze_file``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mirflow"

#: package -> mirflow subpackages it must never import (directly or lazily inside functions).
FORBIDDEN = {
    "audio": {"pipeline", "query", "ml", "index", "recsys", "serve", "cli", "extractors"},
    "catalog": {"pipeline", "query", "ml", "index", "recsys", "serve", "cli"},
    "extractors": {"pipeline", "query", "ml", "index", "recsys", "serve", "cli"},
    "models": {"pipeline", "query", "ml", "index", "recsys", "serve", "cli", "extractors"},
    "pipeline": {"query", "ml", "index", "recsys", "serve", "cli"},
    "query": {"pipeline", "ml", "index", "recsys", "serve", "cli"},
    "ml": {"pipeline", "index", "recsys", "serve", "cli"},
    "index": {"pipeline", "ml", "recsys", "serve", "cli"},
    "recsys": {"pipeline", "ml", "serve", "cli"},
    "serve": {"pipeline", "ml", "recsys", "cli"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("mirflow.")}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layer_imports(package):
    bad = []
    for path in sorted((PACKAGE / package).rglob("*.py")):
        for name in _imports(path):
            sub = name.split(".")[1]
            if sub in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert not bad, "layering broken:\n" + "\n".join(bad)
