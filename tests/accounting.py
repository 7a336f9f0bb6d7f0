"""The accounting every end-to-end test checks: each input path ends in exactly one of tracks or errors.

:func:`assert_accounted` reads the tables back (pyarrow, through the
catalog's reader) and compares them with the inputs and the run summary.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from mirflow.catalog import Catalog
from mirflow.catalog.layout import path_from_columns
from mirflow.pipeline.inputs import expand


def _paths(table) -> list[str]:
    cols = table.to_pydict()
    return [path_from_columns(t, r) for t, r in zip(cols["path"], cols["path_bytes"], strict=True)]


def assert_accounted(catalog: str | Path, inputs, summary=None) -> dict[str, set[str]]:
    """Assert tracks ∪ errors = every input path, each exactly once, and the summary's counts match.

    Paths of tracks that the run deferred (``limit``) may be in neither.
    Returns ``{"tracked": paths, "failed": paths}``.
    """
    cat = Catalog(catalog)
    paths = expand(inputs).paths
    files = cat.read_table("files")
    file_track = dict(zip(_paths(files), files.column("track_id").to_pylist(), strict=True))
    track_ids = cat.read_table("tracks", columns=["track_id"]).column("track_id").to_pylist()
    duplicates = [t for t, n in Counter(track_ids).items() if n > 1]
    assert not duplicates, f"tracks has duplicate track_ids: {duplicates}"
    error_paths = _paths(cat.read_table("errors", columns=["path", "path_bytes"]))
    assert len(error_paths) == len(set(error_paths)), "errors has two rows for one path"
    tracked = {p for p in paths if file_track.get(p) in set(track_ids)}
    failed = {p for p in paths if p in set(error_paths)}
    both = tracked & failed
    assert not both, f"paths both a track and an error: {sorted(both)}"
    neither = set(paths) - tracked - failed
    deferred = summary.deferred if summary is not None else 0
    if not deferred:
        assert not neither, f"paths neither a track nor an error: {sorted(neither)}"
    if summary is not None:
        assert summary.inputs == len(paths)
        assert summary.failed == len(failed), (summary.failed, sorted(failed))
        assert summary.analyzed + summary.skipped == len({file_track[p] for p in tracked}), summary
    return {"tracked": tracked, "failed": failed}
