"""``mirflow evaluate``: every metric against hand-computed values on a catalog written by hand.

No extractor runs: the catalog's parts are written directly (through
``conform``, so they are valid catalog tables), with estimates chosen so that
each metric has one obvious expected value.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from mirflow.catalog import Catalog, conform, path_key
from mirflow.cli.main import main
from mirflow.errors import ConfigError
from mirflow.evaluate import (
    catalog_predictions,
    chord_scores,
    evaluate,
    key_scores,
    load_truth,
    normalize_key,
    tempo_accuracy,
    tempo_error_kind,
)
from mirflow.labels import key_relation, mirex_score

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
REF_BEATS = [round(0.5 * k, 3) for k in range(1, 60)]  # 120 BPM, 0.5 … 29.5 s
# Four 2-bar chords over 0–16 s, then the reference's "not evaluated" span.
REF_CHORDS = [[0.0, 4.0, "C:maj"], [4.0, 8.0, "A:min"], [8.0, 12.0, "F:maj"], [12.0, 16.0, "G:7"],
              [16.0, 20.0, "X"]]
HALF_WRONG = [[0.0, 4.0, "C:maj"], [4.0, 8.0, "A:min"], [8.0, 12.0, "D:min"], [12.0, 16.0, "E:maj"],
              [16.0, 20.0, "C:maj"]]

# name -> estimates written to the catalog. Truth for all: C major, 120 BPM, REF_BEATS, REF_CHORDS.
TRACKS: dict[str, dict] = {
    "exact.wav": {"key": "C major", "tempo": 123.6, "beats": REF_BEATS, "chords": REF_CHORDS},
    "fifth.flac": {"key": "G major", "tempo": 240.0, "beats": REF_BEATS[::2], "chords": HALF_WRONG},
    "relative.mp3": {"key": "A minor", "tempo": 100.0, "beats": [b + 0.25 for b in REF_BEATS],
                     "chords": [[0.0, 20.0, "N"]]},
    "parallel.ogg": {"key": "C minor", "tempo": 40.0, "beats": REF_BEATS, "chords": REF_CHORDS},
    "nothing.wav": {"key": None, "tempo": None, "beats": [], "chords": []},
}
EXPECTED = {
    #                key    acc1 acc2  beat F  majmin
    "exact.wav": (1.0, 1.0, 1.0, 1.0, 1.0),
    "fifth.flac": (0.5, 0.0, 1.0, 2 / 3, 0.5),
    "relative.mp3": (0.3, 0.0, 0.0, 0.0, 0.0),
    "parallel.ogg": (0.2, 0.0, 1.0, 1.0, 1.0),  # 40 BPM is a third of 120
    "nothing.wav": (0.0, 0.0, 0.0, 0.0, 0.0),
    "absent.wav": (0.0, 0.0, 0.0, 0.0, 0.0),  # in the truth, not in the catalog
}


def _track_id(name: str) -> str:
    return hashlib.blake2b(name.encode(), digest_size=16).hexdigest()


def _write_catalog(root: Path, audio_dir: Path) -> Path:
    cat = Catalog(root)
    cat.open_for("default")
    for name, est in TRACKS.items():
        tid = _track_id(name)
        path = str(audio_dir / name)
        cat.write_part("tracks", tid, conform("tracks", {
            "track_id": [tid], "path": [path], "file_size_bytes": [1000], "pipeline": ["default"],
            "pipeline_version": ["test"], "mirflow_version": ["0"], "analyzed_at": [NOW],
            "analysis_sample_rate_hz": [44100], "downmix": ["mean"], "lineage": ["{}"],
            "analysis_seconds": [0.1], "duration_s": [30.0], "key": [est["key"]], "tempo_bpm": [est["tempo"]],
        }, fill_missing=True))
        paths = [path] + ([str(audio_dir / "copies" / "exact copy.wav")] if name == "exact.wav" else [])
        for p in paths:
            cat.write_part("files", path_key(p), conform("files", {
                "path": [p], "track_id": [tid], "file_size_bytes": [1000], "mtime_ns": [0], "seen_at": [NOW]},
                fill_missing=True))
        if est["beats"]:
            cat.write_part("beats", tid, conform("beats", {
                "track_id": [tid] * len(est["beats"]), "time_s": est["beats"],
                "beat_in_bar": [i % 4 + 1 for i in range(len(est["beats"]))]}))
        if est["chords"]:
            cat.write_part("chords", tid, conform("chords", {
                "track_id": [tid] * len(est["chords"]), "start_s": [c[0] for c in est["chords"]],
                "end_s": [c[1] for c in est["chords"]], "label": [c[2] for c in est["chords"]],
                "confidence": [None] * len(est["chords"])}))
    return root


def _truth_rows(audio_dir: Path) -> list[dict]:
    rows = []
    for name in EXPECTED:
        # Absolute paths for most; a bare file name for one (matched by name, being unique).
        path = name if name == "fifth.flac" else str(audio_dir / name)
        rows.append({"path": path, "key": "C major", "tempo": 120.0, "beats": REF_BEATS, "chords": REF_CHORDS})
    return rows


@pytest.fixture()
def setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    audio = tmp_path / "music"
    catalog = _write_catalog(tmp_path / "cat", audio)
    truth = tmp_path / "truth.jsonl"
    truth.write_text("".join(json.dumps(r) + "\n" for r in _truth_rows(audio)))
    return catalog, truth, audio


def _check(per_track: pd.DataFrame, names: list[str]) -> None:
    per_track = per_track.assign(name=per_track["path"].map(lambda p: Path(p).name))
    for name in names:
        row = per_track.set_index("name").loc[name]
        key, acc1, acc2, beat_f, majmin = EXPECTED[name]
        got = (row.key_weighted, row.tempo_acc1, row.tempo_acc2, row.beat_f, row.chord_majmin)
        assert got == pytest.approx((key, acc1, acc2, beat_f, majmin), abs=1e-6), name


def test_every_metric_matches_hand_computed_values(setup) -> None:
    catalog, truth, _ = setup
    per_track, overall = evaluate(catalog, truth)
    assert len(per_track) == len(EXPECTED)
    _check(per_track, list(EXPECTED))
    status = dict(zip(per_track["path"].map(lambda p: Path(p).name), per_track["status"], strict=True))
    assert status["absent.wav"] == "missing" and status["exact.wav"] == "ok"
    # Overall: means over all six truth tracks; nulls (nothing.wav, absent.wav) count as 0.
    assert overall["key_weighted"] == pytest.approx((1.0 + 0.5 + 0.3 + 0.2) / 6)
    assert overall["key_exact"] == pytest.approx(1 / 6)
    assert overall["tempo_acc1"] == pytest.approx(1 / 6)
    assert overall["tempo_acc2"] == pytest.approx(3 / 6)
    assert overall["beat_f"] == pytest.approx((1 + 2 / 3 + 1) / 6)
    # Chords: each track has 16 s evaluated (X not evaluated), so the WCSR is the mean.
    assert overall["chord_majmin"] == pytest.approx((1 + 0.5 + 1) / 6)
    assert overall["key_n"] == 6 and overall["key_null"] == 2
    assert overall["chord_null"] == 2 and overall["beat_null"] == 2 and overall["tempo_null"] == 2
    assert (overall["n_truth"], overall["n_matched"], overall["n_missing"]) == (6, 5, 1)


def test_skip_missing_leaves_out_absent_tracks(setup) -> None:
    catalog, truth, _ = setup
    per_track, overall = evaluate(catalog, truth, skip_missing=True)
    assert len(per_track) == 5
    assert overall["key_weighted"] == pytest.approx(2.0 / 5)
    assert overall["key_null"] == 1  # the null key still counts, as 0


def test_beats_continuity_and_sevenths() -> None:
    from mirflow.evaluate import beat_scores

    ref = np.array(REF_BEATS)
    assert beat_scores(ref, ref) == pytest.approx((1.0, 1.0, 1.0))
    f, cmlt, amlt = beat_scores(ref, ref[::2])  # half tempo: wrong metrical level, right pulse
    assert (f, cmlt, amlt) == pytest.approx((2 / 3, 0.0, 1.0))
    f, cmlt, amlt = beat_scores(ref, ref + 0.25)  # off-beat: AMLt accepts it, F and CMLt do not
    assert (f, cmlt) == (0.0, 0.0) and amlt > 0.95  # (the last shifted beat has no partner)
    ref_c = [(0.0, 4.0, "C:7"), (4.0, 8.0, "G:maj")]
    scores = chord_scores(ref_c, [(0.0, 8.0, "C:maj")])
    # majmin maps C:7 to C:maj (4 of 8 s right); sevenths does not (0 of 8 s).
    assert scores["chord_majmin"] == pytest.approx(0.5) and scores["chord_sevenths"] == pytest.approx(0.0)
    assert scores["chord_majmin_s"] == pytest.approx(8.0)
    # An estimate shorter than the reference is padded with N (wrong where the reference has a chord).
    assert chord_scores(ref_c, [(0.0, 2.0, "C:maj")])["chord_majmin"] == pytest.approx(0.25)


def test_a_reference_that_knows_no_chord_is_not_scored() -> None:
    """A generated monophonic tune: every beat X (no clean triad), N in the lead-in and the tail."""
    tune = [(0.0, 0.25, "N"), (0.25, 20.0, "X"), (20.0, 21.5, "N")]
    for estimate in ([(0.0, 21.5, "C:maj")], [(0.0, 21.5, "N")], None):
        scores = chord_scores(tune, estimate)
        assert np.isnan(scores["chord_majmin"]) and np.isnan(scores["chord_sevenths"])
        assert scores["chord_majmin_s"] == scores["chord_sevenths_s"] == 0.0
    # One clean triad is enough to score the whole reference, its silence included (2.75 s).
    with_triad = [(0.0, 0.25, "N"), (0.25, 19.0, "X"), (19.0, 20.0, "G:maj"), (20.0, 21.5, "N")]
    scores = chord_scores(with_triad, [(0.0, 20.0, "G:maj"), (20.0, 21.5, "N")])
    assert scores["chord_majmin"] == pytest.approx(2.5 / 2.75) and scores["chord_majmin_s"] == pytest.approx(2.75)
    # A reference that says "no chord" throughout, without X, is scored: N is in the vocabulary.
    silence = chord_scores([(0.0, 10.0, "N")], [(0.0, 10.0, "C:maj")])
    assert silence["chord_majmin"] == 0.0 and silence["chord_majmin_s"] == pytest.approx(10.0)


def test_tempo_and_key_helpers() -> None:
    assert tempo_accuracy(120.0, 123.6) == (True, True)  # +3 %
    assert tempo_accuracy(120.0, 125.0) == (False, False)  # +4.2 %
    assert tempo_accuracy(120.0, 60.0) == (False, True)
    assert tempo_accuracy(90.0, 270.0) == (False, True)  # ×3
    assert tempo_accuracy(120.0, None) == (False, False)
    assert normalize_key("A:minor") == "A minor"
    assert normalize_key("f#m") == "F# minor"
    assert normalize_key("X") is None


def test_error_kinds_agree_with_the_scores_they_explain() -> None:
    # every kind of key error is the MIREX weight it explains, in every spelling the parser reads
    weights = {"exact": 1.0, "fifth above": 0.5, "fifth below": 0.0, "relative": 0.3, "parallel": 0.2, "other": 0.0}
    for ref in ("C major", "A minor", "F# major", "Eb minor"):
        for est in ("C major", "G major", "F major", "A minor", "C minor", "E minor", "D major", "Bb:minor", "5A"):
            assert mirex_score(ref, est) == weights[key_relation(ref, est)], (ref, est)
    assert key_relation("B major", "F# major") == "fifth above" and key_relation("F major", "C major") == "fifth above"
    assert key_relation("C minor", "Eb major") == "relative" and key_relation("Eb major", "C minor") == "relative"
    assert key_relation("C major", "X") == "none"
    with pytest.raises(ValueError):
        key_relation(None, "C major")
    # a tempo is named for one level only, within Accuracy1's tolerance, and 'right' exactly when Accuracy1 is
    for ref in (60.0, 97.3, 140.0):
        for est in (ref, ref * 2.03, ref / 2, ref * 1.5, ref * 2 / 3, ref * 4 / 3, ref * 0.75, ref * 3, ref / 3,
                    ref * 1.2, ref * 1.05, ref * 0.5 * 1.05):
            kind = tempo_error_kind(ref, est)
            assert (kind == "right") == tempo_accuracy(ref, est)[0]
            assert kind in ("right", "other") or tempo_accuracy(ref, est)[1] == (kind in ("x2", "x1/2", "x3", "x1/3"))
    assert [tempo_error_kind(100.0, e) for e in (200.0, 150.0, 75.0, 133.4, 0.0, float("nan"), 105.0)] == \
        ["x2", "x3/2", "x3/4", "x4/3", "none", "none", "other"]


def test_keys_are_read_by_the_one_key_parser() -> None:
    from mirflow.labels import parse_key

    # every spelling labels.parse_key reads, rendered in the catalog's canonical spelling
    for label in ("Db major", "C#:major", "c#", "3B", "8d", "A# minor", "bb:minor", "Bbm"):
        assert normalize_key(label) == parse_key(label).mir_eval
    assert normalize_key("Db major") == normalize_key("3B") == "C# major"
    # missing values and "no key" labels are no key; anything else is not a key
    for missing in (None, float("nan"), "", "  ", "X", "N", "none"):
        assert normalize_key(missing) is None
    for bad in ("H minor", "C dorian", "Cmaj7", "8C"):
        with pytest.raises(ValueError):
            normalize_key(bad)
    # enharmonic and Camelot spellings score as the key they name; a non-key estimate scores 0
    assert key_scores("C# major", "Db major") == (1.0, 1.0)
    assert key_scores("A minor", "8A") == (1.0, 1.0)
    assert key_scores("C major", "not a key") == (0.0, 0.0)
    assert key_scores("C major", None) == (0.0, 0.0)


def test_matches_by_track_id_and_by_duplicate_path(tmp_path: Path, setup) -> None:
    catalog, _, audio = setup
    truth = tmp_path / "by_id.jsonl"
    rows = [
        {"track_id": _track_id("fifth.flac"), "key": "C major", "tempo": 120.0},
        # The second path of exact.wav's content (a duplicate in files/) matches that track.
        {"path": str(audio / "copies" / "exact copy.wav"), "key": "C major", "tempo": 120.0},
    ]
    truth.write_text("".join(json.dumps(r) + "\n" for r in rows))
    per_track, overall = evaluate(catalog, truth)
    assert list(per_track["key_weighted"]) == [0.5, 1.0]
    assert per_track["beat_f"].isna().all()  # no beats in this truth: not evaluated
    assert overall["beat_n"] == 0 and overall["key_n"] == 2


def test_csv_and_jams_truth_give_the_same_scores(tmp_path: Path, setup) -> None:
    jams = pytest.importorskip("jams")
    catalog, truth_jsonl, audio = setup
    expected, _ = evaluate(catalog, truth_jsonl)
    # CSV: beats as space-separated times, chords as JSON text.
    csv_path = tmp_path / "truth.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "key", "tempo", "beats", "chords"])
        w.writeheader()
        for r in _truth_rows(audio):
            w.writerow({**r, "beats": " ".join(map(str, r["beats"])), "chords": json.dumps(r["chords"])})
    from_csv, _ = evaluate(catalog, csv_path)
    # JAMS: one file per track, path in file_metadata.identifiers (as mirflow.synth writes it).
    jdir = tmp_path / "jams"
    jdir.mkdir()
    for r in _truth_rows(audio):
        jam = jams.JAMS()
        jam.file_metadata.duration = 30.0
        jam.file_metadata.identifiers = {"path": Path(r["path"]).name}
        key = jams.Annotation(namespace="key_mode", duration=30.0)
        key.append(time=0.0, duration=30.0, value="C:major", confidence=1.0)
        tempo = jams.Annotation(namespace="tempo", duration=30.0)
        tempo.append(time=0.0, duration=30.0, value=120.0, confidence=1.0)
        beat = jams.Annotation(namespace="beat", duration=30.0)
        for t in r["beats"]:
            beat.append(time=t, duration=0.0, value=1, confidence=1.0)
        chord = jams.Annotation(namespace="chord", duration=30.0)
        for s, e, lab in r["chords"]:
            chord.append(time=s, duration=e - s, value=lab, confidence=1.0)
        jam.annotations.extend([key, tempo, beat, chord])
        jam.save(str(jdir / (Path(r["path"]).stem + ".jams")))
    assert len(load_truth(jdir)) == len(EXPECTED)
    from_jams, _ = evaluate(catalog, jdir)
    cols = ["key_weighted", "tempo_acc1", "tempo_acc2", "beat_f", "beat_cmlt", "chord_majmin", "chord_sevenths"]

    def by_name(df: pd.DataFrame) -> pd.DataFrame:  # JAMS files are read in file-name order
        return df.assign(name=df["path"].map(lambda p: Path(p).name)).set_index("name").sort_index()[cols]

    for other in (from_csv, from_jams):
        pd.testing.assert_frame_equal(by_name(other), by_name(expected))


def test_bad_truth_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_truth(tmp_path / "nope.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(ConfigError):
        load_truth(bad)


def test_cli_prints_and_writes_parquet(setup, tmp_path: Path, capsys) -> None:
    catalog, truth, _ = setup
    out = tmp_path / "eval"
    assert main(["evaluate", str(catalog), "--truth", str(truth), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "key weighted (MIREX)" in printed and "chord WCSR majmin" in printed
    assert "not in catalog: 1" in printed
    overall = pq.read_table(out / "overall.parquet").to_pandas().set_index("metric")
    assert overall.loc["key_weighted", "value"] == pytest.approx(2.0 / 6)
    assert overall.loc["key_weighted", "null_predictions"] == 2
    per_track = pq.read_table(out / "per_track.parquet").to_pandas()
    assert len(per_track) == len(EXPECTED)
    # each wrong key and tempo by kind, per track and counted on the screen
    kinds = per_track.assign(name=per_track["path"].map(lambda p: Path(p).name)).set_index("name")
    assert kinds["key_relation"].to_dict() == {"exact.wav": "exact", "fifth.flac": "fifth above",
                                               "relative.mp3": "relative", "parallel.ogg": "parallel",
                                               "nothing.wav": "none", "absent.wav": "none"}
    assert kinds["tempo_level"].to_dict() == {"exact.wav": "right", "fifth.flac": "x2", "relative.mp3": "other",
                                              "parallel.ogg": "x1/3", "nothing.wav": "none", "absent.wav": "none"}
    assert "wrong keys by kind: none 2, fifth above 1, parallel 1, relative 1" in printed
    assert "wrong tempi by kind: none 2, other 1, x1/3 1, x2 1" in printed
    assert main(["evaluate", str(catalog), "--truth", str(tmp_path / "missing.jsonl")]) == 2


def test_failed_tracks_count_as_wrong(setup) -> None:
    catalog, truth, audio = setup
    broken = str(audio / "absent.wav")  # the truth's absent track now failed in the catalog instead
    Catalog(catalog).write_part("errors", path_key(broken), conform("errors", {
        "path": [broken], "track_id": [None], "stage": ["decode"], "error_type": ["DecodeError"],
        "message": ["truncated"], "pipeline": ["default"], "pipeline_version": ["test"], "occurred_at": [NOW]},
        fill_missing=True))
    per_track, overall = evaluate(catalog, truth, skip_missing=True)
    row = per_track.set_index(per_track["path"].map(lambda p: Path(p).name)).loc["absent.wav"]
    assert row.status == "failed" and row.key_weighted == 0.0 and row.beat_f == 0.0
    assert (overall["n_failed"], overall["n_missing"], overall["key_null"]) == (1, 0, 2)
    assert overall["key_weighted"] == pytest.approx(2.0 / 6)


def test_not_a_catalog_is_a_config_error(tmp_path: Path, setup) -> None:
    _, truth, _ = setup
    with pytest.raises(ConfigError):
        evaluate(tmp_path / "no-catalog", truth)


def test_a_row_of_a_file_rewritten_since_does_not_answer_for_its_path(setup) -> None:
    """The file at a path was analysed, then rewritten with other audio and analysed again: the catalog
    keeps the old track's row (same path) and ``files`` names the new track. Only the new one is scored."""
    catalog, truth, audio = setup
    old_tid = _track_id("exact.wav, before it was rewritten")
    Catalog(catalog).write_part("tracks", old_tid, conform("tracks", {
        "track_id": [old_tid], "path": [str(audio / "exact.wav")], "file_size_bytes": [900], "pipeline": ["default"],
        "pipeline_version": ["test"], "mirflow_version": ["0"], "analyzed_at": [NOW],
        "analysis_sample_rate_hz": [44100], "downmix": ["mean"], "lineage": ["{}"], "analysis_seconds": [0.1],
        "duration_s": [30.0], "key": ["F# major"], "tempo_bpm": [61.0],
    }, fill_missing=True))
    preds = {p.track_id: p for p in catalog_predictions(catalog)}
    assert preds[old_tid].paths == [] and preds[old_tid].key == "F# major"
    assert str(audio / "exact.wav") in preds[_track_id("exact.wav")].paths
    per_track, _ = evaluate(catalog, truth)
    _check(per_track, ["exact.wav"])
