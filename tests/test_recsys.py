"""`mirflow duplicates` and `mirflow export recsys` on real, analyzed catalogs."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from mirflow.catalog.schema import parse_type
from mirflow.cli.main import main
from mirflow.errors import CatalogError, ConfigError
from mirflow.extractors.fingerprint import ITEM_DURATION_S
from mirflow.query import connect
from mirflow.recsys.duplicates import (
    DEFAULT_THRESHOLD,
    _canonical_order,
    best_offset_ber,
    find_duplicates,
    is_lossless,
)
from mirflow.recsys.export import export_recsys

PIPELINE = """\
name: dedupe-test
version: 1
description: container facts, fingerprints and the descriptor embedding only
extractors:
  - name: metadata
  - name: fingerprint
  - name: embeddings
    params: {model: descriptor}
"""


def _spec(seed: int, **kw):
    from mirflow.synth import TrackSpec

    base = dict(tempo_bpm=120.0, meter=4, tonic=0, mode="major", n_bars=11, drums=True, comping="arpeggio",
                program=0, melody=True, backend="numpy", sample_rate_hz=44100, seed=seed)
    base.update(kw)
    return TrackSpec(**base)


def _ffmpeg(src: Path, dst: Path, *codec: str) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(src), *codec, str(dst)], check=True)
    return dst


@pytest.fixture(scope="module")
def dup_catalog(tmp_path_factory):
    """Recording A as wav, 128 kb/s mp3, ogg and trimmed by 1 s; B (same tempo, key and chords, another
    seed: another melody) as wav and ogg; C (another key and comping) as wav. Analyzed on a LocalCluster."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    from mirflow.pipeline.runner import ClusterOptions, analyze
    from mirflow.synth import render_track

    root = tmp_path_factory.mktemp("dedupe")
    audio = root / "audio"
    audio.mkdir()
    a = audio / "a.wav"
    render_track(_spec(1), a)
    _ffmpeg(a, audio / "a_128k.mp3", "-c:a", "libmp3lame", "-b:a", "128k")
    _ffmpeg(a, audio / "a.ogg", "-c:a", "libvorbis", "-q:a", "3")
    y, sr = sf.read(a)
    sf.write(audio / "a_trim1s.flac", y[sr:], sr)  # the first second cut off
    b = audio / "b.wav"
    render_track(_spec(2), b)
    _ffmpeg(b, audio / "b.ogg", "-c:a", "libvorbis", "-q:a", "3")
    render_track(_spec(3, tonic=7, comping="sustain", program=24, drums=False), audio / "c.wav")
    pipeline = root / "pipeline.yaml"
    pipeline.write_text(PIPELINE, encoding="utf-8")
    catalog = root / "catalog"
    summary, _ = analyze([audio], catalog, pipeline=pipeline, cluster=ClusterOptions(workers=1, dashboard=False))
    assert summary.failed == 0, summary.failures
    return catalog


def _name(path: str) -> str:
    return Path(path).name


# --------------------------------------------------------------------------- BER
def test_best_offset_ber_finds_the_shift():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2**32, 300, dtype=np.uint64).astype(np.uint32)
    noisy = x ^ (rng.random((300, 32)) < 0.05).astype(np.uint32).dot(1 << np.arange(32, dtype=np.uint64)).astype(
        np.uint32)
    ber, d = best_offset_ber(noisy[7:], x, max_offset=20, min_overlap=50)
    assert d == 7
    assert ber == pytest.approx(0.05, abs=0.01)
    # unrelated sequences disagree in about half their bits at every offset
    other = rng.integers(0, 2**32, 300, dtype=np.uint64).astype(np.uint32)
    assert best_offset_ber(other, x, max_offset=20, min_overlap=50)[0] > 0.4
    assert best_offset_ber(x[:10], x, max_offset=5, min_overlap=50) == (1.0, 0)


def test_canonical_rule():
    tracks = pd.DataFrame({
        "track_id": ["a", "b", "c", "d", "e"],
        "codec": ["MPEG_LAYER_III", "PCM_16", "FLAC", "VORBIS", "MPEG_LAYER_III"],
        "bit_rate_bps": [320_000, 1_411_000, 700_000, 192_000, 320_000],
        "duration_s": [30.0, 29.0, 30.0, 30.0, 31.0],
    })
    assert _canonical_order(tracks)["track_id"].tolist() == ["b", "c", "e", "a", "d"]
    assert is_lossless("PCM_16") and is_lossless("flac") and is_lossless("alac")
    assert not is_lossless("aac") and not is_lossless("VORBIS") and not is_lossless(None)


# --------------------------------------------------------------------------- duplicates
@pytest.mark.slow
def test_same_recording_groups_and_different_tracks_do_not(dup_catalog):
    groups = find_duplicates(dup_catalog)
    by_group = {frozenset(_name(p) for p in g["path"]): g for _, g in groups.groupby("group_id")}
    assert set(by_group) == {frozenset({"a.wav", "a_128k.mp3", "a.ogg", "a_trim1s.flac"}),
                             frozenset({"b.wav", "b.ogg"})}
    a = by_group[frozenset({"a.wav", "a_128k.mp3", "a.ogg", "a_trim1s.flac"})]
    canonical = a[a["is_canonical"]]
    assert len(canonical) == 1
    assert _name(canonical["path"].iloc[0]) == "a.wav"  # lossless and the highest bit rate
    assert (a["group_id"] == canonical["track_id"].iloc[0]).all()
    assert (a["ber_to_canonical"] < DEFAULT_THRESHOLD).all()
    assert (a.loc[~a["is_canonical"], "ber_to_canonical"] > 0).all()  # re-encodes are not bit-identical

    # The measured separation behind DEFAULT_THRESHOLD (docs/recsys.md): every copy pair well below it,
    # every pair of different recordings well above it.
    con = connect(dup_catalog)
    fps = con.sql("select t.path, f.fingerprint from fingerprints f join tracks t using (track_id)").df()
    fp = {_name(p): np.asarray(v, dtype=np.uint32) for p, v in zip(fps["path"], fps["fingerprint"], strict=True)}
    rec = {n: n.split("_")[0].split(".")[0] for n in fp}
    mo, mi = int(10 / ITEM_DURATION_S), int(8 / ITEM_DURATION_S)
    same, diff = [], []
    for x, y in itertools.combinations(sorted(fp), 2):
        (same if rec[x] == rec[y] else diff).append(best_offset_ber(fp[x], fp[y], max_offset=mo, min_overlap=mi)[0])
    assert max(same) < DEFAULT_THRESHOLD - 0.03, same
    assert min(diff) > DEFAULT_THRESHOLD + 0.03, diff


@pytest.mark.slow
def test_threshold_controls_grouping(dup_catalog):
    # with a threshold near 0 only bit-identical fingerprints could group; re-encodes and trims flip bits
    strict = find_duplicates(dup_catalog, threshold=1e-9)
    assert (strict["ber_to_canonical"] == 0).all() and len(strict) < len(find_duplicates(dup_catalog))
    everything = find_duplicates(dup_catalog, threshold=0.6, include_singletons=True)
    assert len(everything) == 7
    singles = find_duplicates(dup_catalog, include_singletons=True)
    assert len(singles) == 7 and singles["group_id"].nunique() == 3
    with pytest.raises(ConfigError, match="threshold"):
        find_duplicates(dup_catalog, threshold=1.5)


@pytest.mark.slow
def test_duplicates_cli(dup_catalog, capsys):
    assert main(["duplicates", str(dup_catalog), "--format", "csv"]) == 0
    from io import StringIO

    rows = pd.read_csv(StringIO(capsys.readouterr().out))
    assert list(rows.columns) == ["group_id", "track_id", "path", "is_canonical", "ber_to_canonical"]
    assert len(rows) == 6 and rows["is_canonical"].sum() == 2
    assert main(["duplicates", str(dup_catalog), "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 6
    assert main(["duplicates", str(dup_catalog)]) == 0
    table = capsys.readouterr().out
    assert "* 0.000" in table and "a_trim1s.flac" in table and "c.wav" not in table


def test_duplicates_needs_fingerprints(tmp_path, downstream_catalog):
    catalog = tmp_path / "catalog"
    shutil.copytree(downstream_catalog[0], catalog)
    shutil.rmtree(catalog / "fingerprints", ignore_errors=True)
    with pytest.raises(CatalogError, match="fingerprint"):
        find_duplicates(catalog)
    assert main(["duplicates", str(catalog)]) == 2


# --------------------------------------------------------------------------- export
def _brute_force(items: pd.DataFrame, k: int) -> dict[str, list[tuple[str, float]]]:
    have = items[items["embedding"].notna()]
    x = np.stack(have["embedding"].to_numpy()).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    ids = have["track_id"].to_numpy()
    out = {}
    for i, tid in enumerate(ids):
        order = np.argsort(-sims[i], kind="stable")[:k]
        out[tid] = [(ids[j], sims[i, j]) for j in order]
    return out


def _check_export(out: Path, catalog: Path, k: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    items = pd.read_parquet(out / "items.parquet")
    meta = json.loads((out / "columns.json").read_text())
    n_tracks = len(connect(catalog).sql("select track_id from tracks").df())
    assert len(items) == n_tracks and items["track_id"].is_unique

    # columns.json describes every column of both tables, with the stored type
    schema = pq.read_schema(out / "items.parquet")
    described = {c["name"]: c for c in meta["tables"]["items"]["columns"]}
    assert set(described) == set(schema.names)
    for field in schema:
        declared = parse_type(described[field.name]["type"])  # the catalog schemas' type vocabulary
        if isinstance(field.type, pa.FixedSizeListType):
            assert (declared.value_type, declared.list_size) == (field.type.value_type, field.type.list_size)
        else:
            assert declared == field.type
        assert described[field.name]["meaning"] and described[field.name]["encoding"]
    nb_schema = pq.read_schema(next((out / "neighbors").glob("*.parquet")))
    assert {c["name"] for c in meta["tables"]["neighbors"]["columns"]} == set(nb_schema.names)

    # standardized features: mean 0, std 1 over the tracks that have a value, with the mean/std stored
    tracks = connect(catalog).sql("select * from tracks order by track_id").df().set_index("track_id")
    z_cols = [c for c in items.columns if c.endswith("_z") and described[c]["source"].startswith("tracks.")]
    assert "duration_s_z" in z_cols
    for col in z_cols:
        d = described[col]
        if isinstance(d["std"], list):
            values = np.stack(items[col].dropna().to_numpy())
            assert np.allclose(values.mean(axis=0), 0, atol=1e-5)
            ok = np.asarray(d["std"]) > 0
            assert np.allclose(values.std(axis=0)[ok], 1, atol=1e-4)
            continue
        values = items[col].dropna().to_numpy()
        assert abs(values.mean()) < 1e-9
        if d["std"] > 0:
            assert values.std() == pytest.approx(1.0, abs=1e-9)
            raw = tracks.loc[items["track_id"], d["source"].split(".", 1)[1]].to_numpy(dtype=float)
            assert np.allclose((raw - d["mean"]) / d["std"], items[col].to_numpy(dtype=float), equal_nan=True)
    assert isinstance(schema.field("embedding").type, pa.FixedSizeListType)
    assert isinstance(schema.field("key_onehot").type, pa.FixedSizeListType)

    # categorical encodings agree with the catalog's key columns
    for row in items.itertuples():
        t = tracks.loc[row.track_id]
        if isinstance(t["key"], str):
            assert row.key_code == int(t["key_tonic"]) + 12 * (t["key_mode"] == "minor")
            assert np.argmax(row.key_onehot) == row.key_code and row.key_onehot.sum() == 1
            assert f"{int(row.camelot_number)}{'A' if row.mode_code else 'B'}" == t["key_camelot"]
    # kNN: k rows per track, ranks 1..k, no self-neighbours, scores sorted, equal to brute force
    nb = pd.read_parquet(out / "neighbors")
    assert meta["tables"]["neighbors"]["rows"] == len(nb)
    assert (nb.groupby("track_id").size() == k).all()
    assert nb["track_id"].nunique() == items["embedding"].notna().sum()
    assert not (nb["track_id"] == nb["neighbor_id"]).any()
    truth = _brute_force(items, k)
    for tid, g in nb.groupby("track_id"):
        g = g.sort_values("rank")
        assert g["rank"].tolist() == list(range(1, k + 1))
        assert (np.diff(g["score"].to_numpy()) <= 1e-6).all()
        expected = truth[tid]
        assert np.allclose(g["score"].to_numpy(), [s for _, s in expected], atol=1e-5)
        # ids agree wherever the brute-force scores are not tied
        for (nid, s), got in zip(expected, g["neighbor_id"], strict=True):
            ties = [n for n, s2 in expected if abs(s2 - s) < 1e-6]
            assert got == nid or got in ties
    return items, nb


@pytest.mark.slow
def test_export_recsys_on_the_downstream_catalog(downstream_catalog, tmp_path):
    catalog, _ = downstream_catalog
    out = tmp_path / "export"
    summary = export_recsys(catalog, out, k=5, workers=1)
    assert summary.items == 24 and summary.neighbor_rows == 24 * 5
    items, _ = _check_export(out, catalog, 5)
    assert {"tempo_bpm_z", "loudness_integrated_lufs_z", "mfcc_mean_z", "chroma_mean_z"} <= set(items.columns)
    assert items["is_canonical"].all()  # 24 different generated tracks: no duplicates
    assert (items["duplicate_group"] == items["track_id"]).all()
    assert not list(tmp_path.glob(".export.tmp-*"))  # the temporary folder was renamed into place

    # again, with 2 workers, another embedding and blocks of 5 (5 × 5 block pairs, a ragged last block):
    # the same answer, and the previous export is replaced
    assert main(["export", "recsys", str(catalog), "--out", str(out), "--k", "4", "--embedding", "descriptor",
                 "--block-size", "5", "--workers", "2"]) == 0
    meta = json.loads((out / "columns.json").read_text())
    assert meta["embedding"]["model"] == "descriptor" and meta["block_size"] == 5 and meta["k"] == 4
    _check_export(out, catalog, 4)
    # a run that fails leaves the previous export as it was
    before = (out / "columns.json").read_text()
    with pytest.raises(ConfigError, match="embedding"):
        export_recsys(catalog, out, embedding="nope")
    assert (out / "columns.json").read_text() == before and (out / "items.parquet").exists()


@pytest.mark.slow
def test_export_marks_duplicates(dup_catalog, tmp_path):
    export_recsys(dup_catalog, tmp_path / "x", k=3, workers=1, block_size=3)
    items, nb = _check_export(tmp_path / "x", dup_catalog, 3)
    items["name"] = items["path"].map(_name)
    a = items[items["name"].str.startswith("a")]
    assert a["duplicate_group"].nunique() == 1
    assert a.set_index("name")["is_canonical"].to_dict() == {
        "a.wav": True, "a_128k.mp3": False, "a.ogg": False, "a_trim1s.flac": False}
    assert items["is_canonical"].sum() == 3  # a, b, c


def test_export_refuses_to_overwrite_user_data(downstream_catalog, tmp_path):
    catalog, _ = downstream_catalog
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.txt").write_text("precious")
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        export_recsys(catalog, user, k=2)
    assert (user / "thesis.txt").read_text() == "precious" and len(list(user.iterdir())) == 1
    assert main(["export", "recsys", str(catalog), "--out", str(catalog), "--k", "2"]) == 2  # not into the catalog
    a_file = tmp_path / "file.parquet"
    a_file.write_bytes(b"x")
    with pytest.raises(ConfigError, match="not a folder"):
        export_recsys(catalog, a_file, k=2)
    with pytest.raises(ConfigError, match="embedding"):
        export_recsys(catalog, tmp_path / "new", embedding="nope")
    assert not (tmp_path / "new").exists() and not list(tmp_path.glob(".new.tmp-*"))


@pytest.mark.slow
def test_export_of_a_compacted_catalog_is_the_same(downstream_catalog, tmp_path):
    """After a compaction no embedding part is left: the export reads the compacted files alike."""
    from distributed import Client

    from mirflow.catalog import Catalog
    from mirflow.catalog.compact import compact

    catalog, _ = downstream_catalog
    compacted = tmp_path / "compacted"
    shutil.copytree(catalog, compacted)
    compact(Catalog(compacted))
    assert not Catalog(compacted).parts("embeddings")
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        loose = export_recsys(catalog, tmp_path / "loose", k=4, block_size=5, client=client)
        folded = export_recsys(compacted, tmp_path / "folded", k=4, block_size=5, client=client)
    assert (folded.items, folded.neighbor_rows) == (loose.items, loose.neighbor_rows) == (24, 24 * 4)
    items, _ = _check_export(tmp_path / "folded", compacted, 4)
    assert items["embedding"].notna().all()
    expected = pd.read_parquet(tmp_path / "loose" / "items.parquet")
    assert items["track_id"].tolist() == expected["track_id"].tolist()
    np.testing.assert_array_equal(np.stack(items["embedding"]), np.stack(expected["embedding"]))
    order = ["track_id", "rank"]
    got = pd.read_parquet(tmp_path / "folded" / "neighbors").sort_values(order).reset_index(drop=True)
    want = pd.read_parquet(tmp_path / "loose" / "neighbors").sort_values(order).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want)
