"""Locate the data files that ship with the package (schemas, pipelines).

The canonical files live at the top of the repository (``schemas/``,
``pipelines/``); the wheel maps them to the data packages
``mirflow._schemas`` and ``mirflow._pipelines``. An editable or source-tree
checkout falls back to the repository folders.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent


def _data_dir(package: str, repo_folder: str) -> Path:
    try:
        root = importlib.resources.files(package)
        path = Path(str(root))
        if path.is_dir() and any(path.glob("*.yaml")):
            return path
    except (ModuleNotFoundError, TypeError):
        pass
    path = _REPO_ROOT / repo_folder
    if path.is_dir():
        return path
    raise FileNotFoundError(f"mirflow data folder {repo_folder!r} not found; is the package installed?")


def schemas_dir() -> Path:
    """Folder holding the table schema YAML files."""
    return _data_dir("mirflow._schemas", "schemas")


def pipelines_dir() -> Path:
    """Folder holding the shipped pipeline YAML files."""
    return _data_dir("mirflow._pipelines", "pipelines")
