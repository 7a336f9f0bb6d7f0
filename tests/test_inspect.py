"""`mirflow show`, `mirflow info` and `mirflow export jams|csv|parquet` on a real, analyzed catalog."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
from pathlib import Path

import jams
import numpy as np
import pandas as pd
import pytest

from mirflow.catalog.layout import Catalog, path_key
from mirflow.catalog.schema import conform, load_schemas
from mirflow.cli import inspect_cmd
from mirflow.errors import ConfigError, MirflowError
from mirflow.query import connect
from mirflow.query.export import JAMS_MARKER, export_jams, export_query
from mirflow.query.inspect import (
    catalog_info,
    format_catalog_info,
    format_track_report,
    resolve_track,
    timeline_lines,
    track_report,
)

CHORD = r"(?:[A-G][b#]?:(?:maj|min)|N)"


def _parser() -> argparse.ArgumentParser:
    """``mirflow``'s parser once the lead has wired these commands in; else one made the same way."""
    from mirflow.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    export = sub.choices.get("export")
    export_sub = None if export is None else next(
        (a for a in export._actions if isinstance(a, argparse._SubParsersAction)), None)
    if "show" in sub.choices and export_sub is not None and "jams" in export_sub.choices:
        return parser
    parser = argparse.ArgumentParser(prog="mirflow")
    sub = parser.add_subparsers(dest="command", required=True)
    inspect_cmd.register(sub)
    export_sub = sub.add_parser("export").add_subparsers(dest="export_kind", required=True)
    inspect_cmd.add_export_commands(export_sub)
    return parser


def _cli(argv: list[str]) -> int:
    """Run a command as ``mirflow.cli.main.main`` does: a MirflowError is one ``mirflow: error:`` line."""
    import sys

    args = _parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MirflowError as exc:
        sys.stderr.write(f"mirflow: error: {exc}\n")
        return 2


@pytest.fixture(scope="module")
def catalog(downstream_catalog) -> Path:
    return downstream_catalog[0]


@pytest.fixture(scope="module")
def tracks(catalog) -> pd.DataFrame:
    con = connect(catalog)
    return con.sql("select * from tracks order by track_id").df()


# --------------------------------------------------------------------------- JAMS


def test_export_jams_validates_and_holds_the_catalog_values(catalog, tracks, tmp_path):
    out = tmp_path / "jams"
    summary = export_jams(catalog, out=out)
    assert summary.failed == {}
    assert summary.written == len(tracks)
    files = sorted(out.glob("*.jams"))
    assert [f.stem for f in files] == sorted(tracks["track_id"])
    marker = json.loads((out / JAMS_MARKER).read_text())
    assert marker["written"] == len(tracks)

    con = connect(catalog)
    for row in tracks.itertuples():
        jam = jams.load(str(out / f"{row.track_id}.jams"), validate=True)
        assert jam.validate()
        assert jam.file_metadata.duration == pytest.approx(row.duration_s)
        assert jam.file_metadata.identifiers["path"] == row.path
        assert jam.sandbox.mirflow["paths"] == [row.path]
        tempo = jam.search(namespace="tempo")[0].data
        assert tempo[0].value == pytest.approx(row.tempo_bpm)
        assert tempo[0].confidence == pytest.approx(row.tempo_confidence)
        assert jam.search(namespace="key_mode")[0].data[0].value == row.key_jams
        beats = con.execute("select time_s, beat_in_bar from beats where track_id = ? order by time_s",
                            [row.track_id]).fetchall()
        beat_obs = jam.search(namespace="beat")[0].data
        assert len(beat_obs) == len(beats) == row.beat_count
        assert [o.value for o in beat_obs] == [b for _, b in beats]
        assert [o.time for o in beat_obs] == pytest.approx([t for t, _ in beats])
        chords = con.execute("select start_s, end_s, label from chords where track_id = ? order by start_s",
                             [row.track_id]).fetchall()
        chord_obs = jam.search(namespace="chord")[0].data
        assert len(chord_obs) == len(chords) > 0
        assert [o.value for o in chord_obs] == [label for _, _, label in chords]
        assert [o.duration for o in chord_obs] == pytest.approx([e - s for s, e, _ in chords])


def test_export_jams_never_overwrites_a_users_folder(catalog, tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        export_jams(catalog, out=user, force=True)
    assert (user / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt"]

    out = tmp_path / "jams"
    out.mkdir()  # an empty folder is filled
    first = export_jams(catalog, out=out, query="select track_id from tracks order by track_id limit 3")
    assert first.written == 3
    with pytest.raises(ConfigError, match="--force"):
        export_jams(catalog, out=out)
    (out / "stale.jams").write_text("{}")  # a file a previous export would not have: gone after --force
    again = export_jams(catalog, out=out, force=True, query="select track_id from tracks where key_mode = 'minor'")
    minor = connect(catalog).execute("select track_id from tracks where key_mode = 'minor'").fetchall()
    assert again.written == len(minor) > 0
    assert sorted(p.stem for p in out.glob("*.jams")) == sorted(t for (t,) in minor)
    # No temporary or replaced folders are left beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jams", "mine"]


@pytest.mark.slow  # two spawned processes import jams and scipy: 6-9 s here
def test_export_jams_in_parallel_writes_the_same_files(catalog, tmp_path, monkeypatch):
    import mirflow.query.export as export

    one = export_jams(catalog, out=tmp_path / "one")
    monkeypatch.setattr(export, "JAMS_CHUNK", 5)  # 24 tracks: 5 chunks over 2 processes
    calls = []
    two = export_jams(catalog, out=tmp_path / "two", workers=2, progress=lambda done, total: calls.append(done))
    assert two.written == one.written == 24 and two.failed == {}
    # Chunks finish in any order: one progress call per chunk, counting up to every track.
    assert len(calls) == 5 and calls == sorted(set(calls)) and calls[-1] == 24
    for f in sorted((tmp_path / "one").glob("*.jams")):
        assert (tmp_path / "two" / f.name).read_bytes() == f.read_bytes()


def test_export_jams_cli(catalog, tmp_path, capsys):
    out = tmp_path / "j"
    assert _cli(["export", "jams", str(catalog), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    n = len(list(out.glob("*.jams")))
    assert re.search(rf"written:\s+{n} JAMS", text)
    assert re.search(r"failed:\s+0 ", text)
    assert _cli(["export", "jams", str(catalog), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mirflow: error:") and "--force" in err


# --------------------------------------------------------------------------- CSV / Parquet


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_export_query_round_trips(catalog, tmp_path, kind, capsys):
    sql = "select track_id, tempo_bpm, key, beat_count from tracks where tempo_bpm > 100 order by track_id"
    expected = connect(catalog).sql(sql).df()
    out = tmp_path / "sub" / f"fast.{kind}"
    assert _cli(["export", kind, str(catalog), "--query", sql + ";", "--out", str(out)]) == 0
    assert f"wrote {len(expected)} rows" in capsys.readouterr().out
    got = pd.read_csv(out) if kind == "csv" else pd.read_parquet(out)
    assert list(got.columns) == list(expected.columns)
    assert len(got) == len(expected) > 0
    assert got["track_id"].tolist() == expected["track_id"].tolist()
    np.testing.assert_allclose(got["tempo_bpm"], expected["tempo_bpm"])
    assert got["key"].tolist() == expected["key"].tolist()
    assert got["beat_count"].tolist() == expected["beat_count"].tolist()


def test_export_query_default_is_the_tracks_table_with_embeddings_views(catalog, tmp_path):
    summary = export_query(catalog, out=tmp_path / "all.parquet")
    assert summary.rows == len(connect(catalog).sql("select * from tracks").df())
    emb = export_query(catalog, out=tmp_path / "emb.parquet", query="select * from embeddings_musicnn_msd")
    table = pd.read_parquet(tmp_path / "emb.parquet")
    assert emb.rows == len(table) > 0
    assert {len(v) for v in table["embedding"]} == {200}


def test_export_query_refuses_to_overwrite_without_force(catalog, tmp_path):
    out = tmp_path / "keys.csv"
    out.write_text("a user's file\n")
    with pytest.raises(ConfigError, match="--force"):
        export_query(catalog, out=out, query="select key from tracks")
    assert out.read_text() == "a user's file\n"
    summary = export_query(catalog, out=out, query="select key from tracks", force=True)
    assert pd.read_csv(out)["key"].notna().sum() == summary.rows > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.csv"]  # no temporary file left


@pytest.mark.parametrize("sql", ["select nope from tracks", "selec 1", "select * from no_such_table"])
def test_sql_error_is_one_config_error_line(catalog, tmp_path, sql, capsys):
    with pytest.raises(ConfigError) as info:
        export_query(catalog, out=tmp_path / "x.csv", query=sql)
    assert "\n" not in str(info.value) and "error" in str(info.value).lower()
    assert _cli(["export", "csv", str(catalog), "--query", sql, "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mirflow: error: SQL error:")
    assert not (tmp_path / "x.csv").exists()
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- show


def test_show_by_id_prefix_and_by_path(catalog, tracks, monkeypatch, capsys):
    row = tracks.iloc[0]
    assert _cli(["show", str(catalog), row.track_id[:8], "--width", "100"]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].split() == ["track", row.track_id]
    assert len(lines) < 60
    assert max(len(x) for x in lines) <= 100
    assert f"key {row.key}" in text
    assert re.search(rf"tempo_bpm {row.tempo_bpm:.5g} BPM", text)
    bars = [x for x in lines if re.match(r"^bar\s+\d+\s+\d+\.\d\ds \| ", x)]
    assert len(bars) >= row.downbeat_count
    assert re.search(rf"^bar\s+1\s+\d+\.\d\ds \| {CHORD}", text, re.M)
    assert f"{row.beat_count} beats" in text
    # a list with nothing in it (every extractor gave its values) reads as such, not as a count
    assert list(row.empty_reasons) == [] and "empty_reasons none" in text and "[0 values]" not in text

    # The same report from the absolute path and from a path relative to the current folder.
    path = Path(row.path)
    assert resolve_track(catalog, ref=str(path)) == row.track_id
    monkeypatch.chdir(path.parent.parent)
    relative = os.path.join(path.parent.name, path.name)
    assert _cli(["show", str(catalog), relative, "--width", "100"]) == 0
    assert capsys.readouterr().out == text


def test_show_unknown_or_short_references_are_errors(catalog, tracks, tmp_path, capsys):
    with pytest.raises(ConfigError, match="at least 6"):
        resolve_track(catalog, ref=tracks.iloc[0].track_id[:4])
    with pytest.raises(ConfigError, match="no track"):
        resolve_track(catalog, ref="ffffffffffff0000")
    stray = tmp_path / "never-analyzed.wav"
    stray.write_bytes(b"RIFF")
    with pytest.raises(ConfigError, match="not in catalog"):
        resolve_track(catalog, ref=str(stray))
    assert _cli(["show", str(catalog), "nothing-like-this"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mirflow: error:")


def test_show_lists_duplicates_errors_predictions_embeddings_and_tags(downstream_catalog, tmp_path):
    """On a copy: a second path of the same bytes, a failed path, and a classifier's predictions."""
    catalog = tmp_path / "catalog"
    shutil.copytree(downstream_catalog[0], catalog)
    cat = Catalog(catalog)
    con = connect(catalog)
    track_id, path = con.execute("select track_id, path from tracks order by track_id limit 1").fetchall()[0]
    now = dt.datetime.now(dt.timezone.utc)
    copy = str(Path(path).with_name("copy of it.wav"))
    (files_row,) = con.execute("select * from files where track_id = ?", [track_id]).df().to_dict("records")
    files_row.update(path=copy, path_bytes=None, seen_at=now)
    cat.write_part("files", path_key(copy), conform("files", {k: [v] for k, v in files_row.items()}))
    broken = str(Path(path).with_name("broken.wav"))
    cat.write_part("errors", path_key(broken), conform("errors", {
        "path": [broken], "path_bytes": [None], "track_id": [track_id], "stage": ["decode"],
        "error_type": ["DecodeError"], "message": ["truncated"], "pipeline": ["default"],
        "pipeline_version": ["x"], "occurred_at": [now]}))
    if "predictions" in load_schemas():
        cat.write_part("predictions", track_id, conform("predictions", {
            "track_id": [track_id] * 2, "model": ["drums"] * 2, "model_version": ["abc"] * 2,
            "label": ["drums", "no_drums"], "score": [0.25, 0.75]}), partition="drums")

    report = track_report(catalog, track=track_id)
    assert report.paths == sorted([path, copy])
    assert [e["stage"] for e in report.errors] == ["decode"]
    assert {e["model"]: e["dimension"] for e in report.embeddings} == {"descriptor": 65, "musicnn-msd": 200}
    vectors = con.execute("select model, embedding from embeddings where track_id = ?", [track_id]).fetchall()
    for model, vector in vectors:
        assert next(e["norm"] for e in report.embeddings if e["model"] == model) == pytest.approx(
            float(np.sqrt(np.sum(np.square(np.asarray(vector, dtype=np.float64))))), rel=1e-6)
    top = con.execute("select tag, probability from tags where track_id = ? order by probability desc limit 5",
                      [track_id]).fetchall()
    assert [t for t, _ in report.tags["musicnn-msd"]] == [t for t, _ in top]
    text = format_track_report(report)
    assert "copy of it.wav" in text and "[decode]" in text and "truncated" in text
    if "predictions" in load_schemas():
        assert report.predictions == {"drums": [("no_drums", 0.75), ("drums", 0.25)]}
        assert re.search(r"predicted\s+drums:\s+no_drums 0.75\s+drums 0.25", text)
    json.dumps(report.to_dict())  # JSON-ready
    with pytest.raises(ConfigError, match="stage decode"):
        resolve_track(catalog, ref=broken)


def test_timeline_puts_several_bars_on_a_line_for_long_tracks():
    beat_s = 0.5
    beats = [(i * beat_s, i % 4 + 1) for i in range(4 * 120)]  # 120 bars of 4/4
    labels = ["C:maj", "A:min", "F:maj", "G:maj"]
    chords = [(b * 4 * beat_s, (b + 1) * 4 * beat_s, labels[b % 4], 0.9) for b in range(120)]
    lines = timeline_lines(beats, chords, max_lines=20, width=200)
    assert len(lines) == 20
    assert lines[0].startswith("bars   1-6 ")
    assert lines[0].split("| ", 1)[1].split(" | ")[:2] == ["C:maj . . .", "A:min . . ."]
    short = timeline_lines(beats[:9], chords, max_lines=20)
    assert short[0].split() == ["bar", "1", "0.00s", "|", "C:maj", ".", ".", "."]
    assert short[2].split() == ["bar", "3", "4.00s", "|", "F:maj"]
    # A pickup before the first downbeat is bar 0.
    assert timeline_lines(beats[3:9], chords)[0].split()[:2] == ["bar", "0"]
    assert timeline_lines([], chords[:2])[0].split()[:3] == ["chords", "0.00s", "C:maj"]


# --------------------------------------------------------------------------- info


def test_info_lists_every_table_with_its_counts(catalog, capsys):
    assert _cli(["info", str(catalog)]) == 0
    text = capsys.readouterr().out
    con = connect(catalog)
    info = catalog_info(catalog)
    assert [t.name for t in info.tables] == sorted(load_schemas())
    manifest = json.loads((Path(catalog) / "manifest.json").read_text())
    for name in load_schemas():
        rows = con.execute(f"select count(*) from {name}").fetchall()[0][0]
        assert re.search(rf"^{name}\s+{rows:,}\s", text, re.M), name
        table = next(t for t in info.tables if t.name == name)
        assert table.rows == rows
        assert table.schema_version == manifest["schemas"].get(name)
    emb = next(t for t in info.tables if t.name == "embeddings")
    assert {(p.name, p.dimension, p.rows) for p in emb.partitions} == {("descriptor", 65, 24), ("musicnn-msd", 200, 24)}
    assert re.search(r"^\s+musicnn-msd\s+24\s+24\s+partition, 200-d", text, re.M)
    run = manifest["runs"][-1]
    assert re.search(rf"{run['run_id']}\s+{run['status']}\s+{run['analyzed']}\s+{run['skipped']}\s+{run['failed']}",
                     text)
    size = sum(f.stat().st_size for f in Path(catalog).rglob("*") if f.is_file())
    assert info.size_bytes == size
    assert info.tracks == 24
    assert "tracks      24" in format_catalog_info(info)


# --------------------------------------------------------------------------- compacted catalogs


@pytest.fixture(scope="module")
def compacted(catalog, tmp_path_factory) -> Path:
    """A compacted copy of the catalog: no loose part is left, every row is in ``_compacted/``."""
    from mirflow.catalog.compact import compact

    root = tmp_path_factory.mktemp("compacted") / "catalog"
    shutil.copytree(catalog, root)
    compact(Catalog(root))
    assert not Catalog(root).parts("tracks") and not Catalog(root).parts("beats")
    return root


def test_show_reads_a_compacted_catalog_alike(catalog, compacted, tracks, capsys):
    for row in tracks.iloc[:3].itertuples():
        assert _cli(["show", str(catalog), row.track_id[:8], "--width", "100"]) == 0
        loose = capsys.readouterr().out
        assert _cli(["show", str(compacted), row.track_id[:8], "--width", "100"]) == 0
        assert capsys.readouterr().out == loose
        assert resolve_track(compacted, ref=row.path) == row.track_id


def test_info_counts_a_compacted_catalog_alike(catalog, compacted, capsys):
    loose, info = catalog_info(catalog), catalog_info(compacted)
    assert info.tracks == loose.tracks == 24
    for before, after in zip(loose.tables, info.tables, strict=True):
        assert (after.name, after.rows) == (before.name, before.rows)
        assert [(p.name, p.rows, p.tracks, p.dimension) for p in after.partitions] == \
            [(p.name, p.rows, p.tracks, p.dimension) for p in before.partitions]
        assert before.generation is None and before.compacted_files == 0
        if before.rows:
            assert after.generation is not None and after.compacted_files > 0 and after.parts == 0
    assert _cli(["info", str(compacted)]) == 0
    text = capsys.readouterr().out
    tracks_info = next(t for t in info.tables if t.name == "tracks")
    assert f"compacted: generation {tracks_info.generation}" in text
    assert re.search(r"^tracks\s+24\s", text, re.M)


def test_export_jams_of_a_compacted_catalog_is_the_same(catalog, compacted, tracks, tmp_path):
    export_jams(catalog, out=tmp_path / "loose")
    summary = export_jams(compacted, out=tmp_path / "compacted")
    assert summary.written == len(tracks) and summary.failed == {}
    for row in tracks.itertuples():
        loose = jams.load(str(tmp_path / "loose" / f"{row.track_id}.jams"), validate=False)
        folded = jams.load(str(tmp_path / "compacted" / f"{row.track_id}.jams"), validate=False)
        for namespace in ("beat", "chord", "tempo", "key_mode"):
            assert [(o.time, o.duration, o.value) for o in folded.search(namespace=namespace)[0].data] == \
                [(o.time, o.duration, o.value) for o in loose.search(namespace=namespace)[0].data]
        assert folded.file_metadata.duration == loose.file_metadata.duration
        assert folded.sandbox.mirflow["paths"] == loose.sandbox.mirflow["paths"]
