"""Expand the INPUT arguments of ``mirflow analyze`` into a list of paths.

An input may be a file, a directory (walked recursively for audio
extensions), a glob, or a manifest: a ``.txt``/``.lst``/``.m3u`` file with one
path per line, or a CSV/Parquet file with a ``path`` column. Relative paths
in a manifest are relative to the manifest's folder.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

from mirflow.audio.probe import AUDIO_EXTENSIONS
from mirflow.errors import ConfigError

MANIFEST_SUFFIXES = {".txt", ".lst", ".m3u", ".m3u8", ".csv", ".parquet"}


def _walk(root: Path) -> Iterable[str]:
    for dirpath, dirnames, filenames in os.walk(root, onerror=None):
        dirnames.sort()
        # A *directory* named like an audio file is listed as an input so
        # that it surfaces as an error row instead of vanishing silently.
        for d in dirnames:
            if Path(d).suffix.lower() in AUDIO_EXTENSIONS:
                yield os.path.join(dirpath, d)
        for f in sorted(filenames):
            if Path(f).suffix.lower() in AUDIO_EXTENSIONS and not f.startswith("._"):
                yield os.path.join(dirpath, f)


def _read_manifest(path: Path) -> list[str]:
    suffix = path.suffix.lower()
    if suffix in {".csv", ".parquet"}:
        import pandas as pd

        df = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
        if "path" not in df.columns:
            raise ConfigError(f"manifest {path} has no 'path' column (columns: {list(df.columns)})")
        entries = [str(p) for p in df["path"].dropna()]
    else:
        lines = path.read_text(encoding="utf-8").splitlines()
        entries = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    base = path.parent
    return [str(p if os.path.isabs(p) else base / p) for p in entries]


def expand_inputs(inputs: Iterable[str | os.PathLike[str]], *, limit: int | None = None) -> list[str]:
    """Absolute, de-duplicated input paths in a stable order.

    Raises
    ------
    ConfigError
        When an input matches nothing at all (a typo should not silently
        analyze zero files).
    """
    out: list[str] = []
    seen: set[str] = set()

    def add(p: str) -> None:
        ap = os.path.abspath(p)
        if ap not in seen:
            seen.add(ap)
            out.append(ap)

    for item in inputs:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir() and path.suffix.lower() not in AUDIO_EXTENSIONS:
            for p in _walk(path):
                add(p)
        elif path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
            for p in _read_manifest(path):
                add(p)
        elif path.exists() or path.is_symlink():
            add(text)
        elif glob.has_magic(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise ConfigError(f"input glob {text!r} matches nothing")
            for m in matches:
                if os.path.isdir(m) and Path(m).suffix.lower() not in AUDIO_EXTENSIONS:
                    for p in _walk(Path(m)):
                        add(p)
                else:
                    add(m)
        else:
            raise ConfigError(f"input {text!r} does not exist")
        if limit is not None and len(out) >= limit:
            return out[:limit]
    return out
