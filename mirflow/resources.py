"""Locate the data files that ship with the package (schemas, pipelines).

The canonical files live at the top of the repository (``schemas/``,
``pipelines/``); the wheel maps them to the data packages
``mirflow._schemas`` and ``mirflow._pipelines``. An editable or source-tree
checkout falls back to the repository folders.

The shipped schema folder is the first entry of the schema search path;
plugins add theirs (see :func:`mirflow.catalog.schema.schema_dirs`).
"""

from __future__ import annotations

import functools
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent


@functools.cache  # read on every schema lookup; the package does not move while it runs
def _data_dir(package: str, repo_folder: str) -> Path:
    # Installed wheel: the data package sits inside the mirflow folder (it has
    # no __init__.py, so importlib.resources would hand back a namespace
    # MultiplexedPath; the plain folder is simpler and the same thing).
    installed = Path(__file__).resolve().parent / package.rsplit(".", 1)[-1]
    if installed.is_dir() and any(installed.glob("*.yaml")):
        return installed
    path = _REPO_ROOT / repo_folder
    if path.is_dir():
        return path
    raise FileNotFoundError(f"mirflow data folder {repo_folder!r} not found; is the package installed?")


def schemas_dir() -> Path:
    """Folder holding the table schema YAML files that ship with mirflow (first on the schema search path)."""
    return _data_dir("mirflow._schemas", "schemas")


def pipelines_dir() -> Path:
    """Folder holding the shipped pipeline YAML files."""
    return _data_dir("mirflow._pipelines", "pipelines")
