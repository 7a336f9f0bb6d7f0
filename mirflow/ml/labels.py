"""Label files (CSV or Parquet) matched to the catalog's tracks.

A label file has a key column — ``track_id`` (the content hash) or ``path``
(an audio file) — and the target column. Paths are matched against every
path the catalog has seen (``files.path``, which also lists duplicate copies
of a track) and ``tracks.path``; the catalog stores absolute paths, so a
label path is tried as written, as ``os.path.abspath`` (relative to the
working directory, then to the label file's folder) and as
``os.path.realpath``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mirflow.catalog import Catalog
from mirflow.ml.errors import LabelError

log = logging.getLogger(__name__)

KEY_COLUMNS = ("track_id", "path")


@dataclass
class LabelMatch:
    """Labels keyed by track: what matched and what did not."""

    key: str
    track_ids: list[str]
    labels: np.ndarray
    rows: int
    unmatched: int = 0
    without_label: int = 0
    conflicting: int = 0
    unmatched_examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"key": self.key, "rows": self.rows, "matched_tracks": len(self.track_ids),
                "unmatched": self.unmatched, "without_label": self.without_label,
                "conflicting": self.conflicting, "unmatched_examples": self.unmatched_examples}


def read_label_table(labels: str | os.PathLike[str] | pd.DataFrame) -> pd.DataFrame:
    """A label file (``.csv``, ``.tsv``, ``.parquet``) or a DataFrame as a DataFrame."""
    if isinstance(labels, pd.DataFrame):
        return labels
    path = Path(labels).expanduser()
    if not path.is_file():
        raise LabelError(f"label file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".csv", ".tsv", ".txt"):
            # Keys as text: a track_id of digits must not become a number.
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",",
                               dtype={"track_id": str, "path": str})
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise LabelError(f"cannot read label file {path}: {exc}") from None
    raise LabelError(f"label file {path} must be .csv, .tsv or .parquet")


def match_labels(cat: Catalog, labels: str | os.PathLike[str] | pd.DataFrame, target: str) -> LabelMatch:
    """Match a label table to the catalog's tracks.

    Raises
    ------
    LabelError
        No key column, no target column, or no label matches a track.
    """
    df = read_label_table(labels)
    where = "the labels" if isinstance(labels, pd.DataFrame) else str(labels)
    key = next((k for k in KEY_COLUMNS if k in df.columns), None)
    if key is None:
        raise LabelError(f"{where} has no 'track_id' or 'path' column to match tracks by "
                         f"(columns: {', '.join(map(str, df.columns))})")
    if target not in df.columns:
        raise LabelError(f"{where} has no target column {target!r} (columns: {', '.join(map(str, df.columns))})")
    if target in KEY_COLUMNS:
        raise LabelError(f"the target column {target!r} is a key column")
    rows = len(df)
    df = df[[key, target]]
    missing = df[target].isna() | df[key].isna()
    without_label = int(missing.sum())
    df = df[~missing]
    values = df[target].map(_label_text)
    base = None if isinstance(labels, pd.DataFrame) else Path(labels).expanduser().resolve().parent
    if key == "track_id":
        known = set(cat.existing_tracks())
        resolved = [t if t in known else None for t in df[key].astype(str).str.strip().str.lower()]
    else:
        lookup = _path_lookup(cat)
        resolved = [_match_path(str(p), lookup, base) for p in df[key]]
    by_track: dict[str, set[str]] = {}
    unmatched_examples = []
    unmatched = 0
    for raw, tid, label in zip(df[key], resolved, values, strict=True):
        if tid is None:
            unmatched += 1
            if len(unmatched_examples) < 5:
                unmatched_examples.append(str(raw))
            continue
        by_track.setdefault(tid, set()).add(label)
    # Two paths of one content (duplicates) with different labels: no truth, leave the track out.
    conflicting = sorted(t for t, ls in by_track.items() if len(ls) > 1)
    track_ids = sorted(t for t, ls in by_track.items() if len(ls) == 1)
    if not track_ids:
        hint = (" (paths are compared after os.path.abspath/realpath with the absolute paths the catalog "
                "stores; see `mirflow query CATALOG \"select path from files\"`)" if key == "path" else "")
        raise LabelError(f"none of the {rows} labels in {where} matched a track of {cat.url} by {key}"
                         f"{hint}; first unmatched: {', '.join(unmatched_examples) or '-'}")
    if unmatched:
        log.warning("%d of %d labels in %s matched no track (e.g. %s)", unmatched, rows, where,
                    unmatched_examples[0])
    if conflicting:
        log.warning("%d tracks have conflicting labels (duplicate files labelled differently); left out",
                    len(conflicting))
    return LabelMatch(key=key, track_ids=track_ids,
                      labels=np.array([next(iter(by_track[t])) for t in track_ids], dtype=object),
                      rows=rows, unmatched=unmatched, without_label=without_label,
                      conflicting=len(conflicting), unmatched_examples=unmatched_examples)


def _label_text(value) -> str:
    # Class labels are text in the predictions table; 1.0 read from a CSV with gaps is the class "1".
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _path_lookup(cat: Catalog) -> dict[str, str]:
    lookup: dict[str, str] = {}
    for table in ("tracks", "files"):  # files last: it lists every copy of a duplicate
        data = cat.read_table(table, columns=["path", "track_id"])
        lookup.update(zip(data.column("path").to_pylist(), data.column("track_id").to_pylist(), strict=True))
    return lookup


def _match_path(path: str, lookup: dict[str, str], base: Path | None) -> str | None:
    p = os.path.expanduser(path.strip())
    candidates = [p, os.path.abspath(p), os.path.realpath(p)]
    if base is not None and not os.path.isabs(p):
        candidates += [os.path.abspath(base / p), os.path.realpath(base / p)]
    for c in candidates:
        if c in lookup:
            return lookup[c]
    return None
