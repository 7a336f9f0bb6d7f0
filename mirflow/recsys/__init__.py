"""Exports a recommender consumes, and grouping of the same recording across encodings.

* :func:`find_duplicates` — groups of tracks that are one recording (Chromaprint
  fingerprints compared by bit-error rate; ``mirflow duplicates``).
* :func:`export_recsys` — item features, duplicate groups and an all-tracks
  kNN table computed in blocks on Dask (``mirflow export recsys``).

Reads catalogs only through :mod:`mirflow.query` and :mod:`mirflow.catalog`;
never imports :mod:`mirflow.pipeline`. See docs/recsys.md.
"""

from mirflow.recsys.duplicates import (
    DEFAULT_THRESHOLD,
    DuplicateOptions,
    best_offset_ber,
    find_duplicates,
)
from mirflow.recsys.export import ExportSummary, export_recsys

__all__ = ["DEFAULT_THRESHOLD", "DuplicateOptions", "ExportSummary", "best_offset_ber", "export_recsys",
           "find_duplicates"]
