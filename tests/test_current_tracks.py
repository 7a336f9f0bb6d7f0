"""``current_tracks``: a file rewritten since its analysis is listed, exported and offered once, as its new audio.

Tracks are content-addressed, so the old audio's ``tracks`` row keeps the path after a rewrite; ``files``
says which track each path holds now. Every reader that shows tracks to a user goes through the view.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import soundfile as sf

from mirflow.catalog import Catalog, conform
from mirflow.catalog.layout import path_key
from mirflow.query import connect


@pytest.fixture(scope="module")
def reencoded(tmp_path_factory):
    """Three demo tracks analysed by the fast pipeline on a real LocalCluster; then one is re-encoded in
    place (the same samples at 24 bits: the same recording, new bytes) and the folder analysed again."""
    from mirflow.pipeline.runner import ClusterOptions, analyze
    from mirflow.synth import make_demo_catalog

    root = tmp_path_factory.mktemp("current")
    music = root / "music"
    make_demo_catalog(music, n=3, seed=4, duration_s=(16.0, 16.0))
    catalog = root / "cat"
    opts = ClusterOptions(workers=1, dashboard=False, worker_lifetime=None)
    first, _ = analyze([music], catalog, pipeline="fast", cluster=opts, progress=None)
    assert first.analyzed == 3 and first.failed == 0
    target = sorted(p for p in music.rglob("*") if p.suffix in (".wav", ".flac"))[0]
    con = connect(catalog)
    old_id = con.execute("SELECT track_id FROM files WHERE path = ?", [str(target.resolve())]).fetchone()[0]
    con.close()
    samples, rate = sf.read(target, dtype="float64")
    sf.write(target, samples, rate, subtype="PCM_24")
    second, _ = analyze([music], catalog, pipeline="fast", cluster=opts, progress=None)
    assert second.analyzed == 1 and second.failed == 0
    con = connect(catalog)
    new_id = con.execute("SELECT track_id FROM files WHERE path = ?", [str(target.resolve())]).fetchone()[0]
    con.close()
    assert new_id != old_id
    return catalog, str(target.resolve()), old_id, new_id


@pytest.mark.slow
def test_a_file_reencoded_in_place_is_one_current_track(reencoded):
    catalog, path, old_id, new_id = reencoded
    con = connect(catalog)
    # the history keeps both analyses under the one path; the view keeps the audio the path holds now
    assert con.execute("SELECT count(*) FROM tracks WHERE path = ?", [path]).fetchone()[0] == 2
    current = con.execute("SELECT track_id, path FROM current_tracks ORDER BY path").fetchall()
    assert len(current) == 3 and len({p for _, p in current}) == 3
    assert (new_id, path) in current and old_id not in {t for t, _ in current}
    # the old row is still readable by its id, and `mirflow show` says what the path holds now
    assert con.execute("SELECT count(*) FROM tracks WHERE track_id = ?", [old_id]).fetchone()[0] == 1
    from mirflow.query.inspect import format_track_report, track_report

    old = track_report(catalog, track=old_id)
    assert old.superseded_by == new_id and old.paths == []
    assert f"rewritten since: it now holds track {new_id}" in format_track_report(old)
    assert track_report(catalog, track=new_id).superseded_by is None


@pytest.mark.slow
def test_readers_serve_the_rewritten_path_once(reencoded, tmp_path):
    from mirflow.index import similar
    from mirflow.query.export import export_jams, export_query
    from mirflow.recsys.duplicates import find_duplicates
    from mirflow.serve.store import CatalogStore, TrackFilters

    catalog, path, old_id, new_id = reencoded
    store = CatalogStore(catalog)
    total, rows = store.list_tracks(TrackFilters(), limit=10, offset=0)
    store.close()
    assert total == 3 and old_id not in {r["track_id"] for r in rows}
    summary = export_query(catalog, out=tmp_path / "tracks.csv")
    assert summary.rows == 3
    jams = export_jams(catalog, out=tmp_path / "jams")
    assert jams.written == 3 and not list((tmp_path / "jams").glob(f"*{old_id}*"))
    # The old analysis is the same recording at the same path: offered as a duplicate of the live file,
    # or as its nearest neighbour, it would point a user at the file itself.
    groups = find_duplicates(catalog, include_singletons=True)
    assert old_id not in set(groups["track_id"]) and groups["path"].is_unique
    neighbours = similar(catalog, track_id=new_id, k=5, embedding="descriptor")
    assert old_id not in set(neighbours["track_id"]) and len(neighbours) == 2


def test_a_moved_track_is_current_at_its_new_path(tmp_path):
    """Tracks analysed at A: one whose file moved to B (A now holds other audio) is current at B only,
    one no path holds is not; at C a file changed during a later run (its ``files`` row removed, an
    ``errors`` row written): C's old track no longer answers for it, and one also copied to F is
    current at F; D, with neither row (a catalog older than ``files``), keeps its track."""
    cat = Catalog(tmp_path / "cat")
    cat.open_for("t")
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    ids = {"moved": "a" * 32, "new at A": "b" * 32, "stale": "c" * 32, "changed at C": "d" * 32,
           "legacy at D": "e" * 32, "changed at C, copied to F": "9" * 32}
    at = {"changed at C": "/m/C.wav", "legacy at D": "/m/D.wav", "changed at C, copied to F": "/m/C.wav"}
    for name, tid in ids.items():
        cat.write_part("tracks", tid, conform("tracks", {
            "track_id": [tid], "path": [at.get(name, "/m/A.wav")],
            "file_size_bytes": [1], "pipeline": ["t"], "pipeline_version": ["1"], "mirflow_version": ["0"],
            "analyzed_at": [now], "analysis_sample_rate_hz": [44100], "downmix": ["mean"], "lineage": ["{}"],
            "analysis_seconds": [0.1], "duration_s": [1.0],
        }, fill_missing=True))
    for path, tid in (("/m/A.wav", ids["new at A"]), ("/m/B.wav", ids["moved"]),
                      ("/m/F.wav", ids["changed at C, copied to F"])):
        cat.write_part("files", path_key(path), conform("files", {
            "path": [path], "track_id": [tid], "file_size_bytes": [1], "mtime_ns": [0], "seen_at": [now],
        }, fill_missing=True))
    cat.write_part("errors", path_key("/m/C.wav"), conform("errors", {
        "path": ["/m/C.wav"], "track_id": ["f" * 32], "stage": ["changed"], "error_type": ["FileChanged"],
        "message": ["changed"], "pipeline": ["t"], "pipeline_version": ["1"], "occurred_at": [now],
    }, fill_missing=True))
    rows = dict(connect(cat).execute("SELECT track_id, path FROM current_tracks").fetchall())
    assert rows == {ids["moved"]: "/m/B.wav", ids["new at A"]: "/m/A.wav", ids["legacy at D"]: "/m/D.wav",
                    ids["changed at C, copied to F"]: "/m/F.wav"}
    # evaluation's paths follow the same rule
    from mirflow.evaluate import catalog_predictions

    paths = {p.track_id: p.paths for p in catalog_predictions(cat)}
    assert paths[ids["changed at C"]] == [] and paths[ids["stale"]] == []
    assert paths[ids["moved"]] == ["/m/B.wav"] and paths[ids["legacy at D"]] == ["/m/D.wav"]
    assert paths[ids["changed at C, copied to F"]] == ["/m/F.wav"]
