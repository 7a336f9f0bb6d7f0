"""The whole pipeline on a real LocalCluster (2 process workers), read back with pyarrow and DuckDB."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from accounting import assert_accounted
from conftest import TESTS_DIR, kill_once_landed, make_bad_inputs, tone_mix, write_audio

from mirflow.catalog import Catalog, conform, table_schema
from mirflow.pipeline.runner import ClusterOptions, analyze

pytestmark = pytest.mark.slow

PIPELINE = """
name: e2e
version: 1
decode: {max_duration_s: 40}
runtime: {timeout_s: 120, retries: 1}
extractors:
  - metadata
  - name: loudness
    params: {backend: pyloudnorm}
  - name: test_misbehave
    params: {sleep_s: %(sleep)s}
"""


@pytest.fixture()
def plugins_env(monkeypatch):
    """Make the misbehaving test extractors importable here and in worker processes."""
    monkeypatch.setenv("MIRFLOW_PLUGINS", "mirflow_test_plugins")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")])))
    from mirflow.extractors import registry

    monkeypatch.setattr(registry, "_plugins_loaded", False)


def _pipeline_file(tmp_path: Path, sleep: float = 0.0) -> Path:
    path = tmp_path / "e2e.yaml"
    path.write_text(PIPELINE % {"sleep": sleep})
    return path


def test_analyze_catalog_end_to_end(tmp_path, good_audio, plugins_env):
    music = next(iter(good_audio.values())).parent
    inputs = tmp_path / "inputs"
    shutil.copytree(music, inputs / "music")
    shutil.copy(good_audio["a.wav"], inputs / "music" / "a duplicate of a.wav")
    bad = make_bad_inputs(inputs / "bad")
    write_audio(inputs / "bad" / "decoder_raise.wav", tone_mix(2.0, seed=11))
    write_audio(inputs / "bad" / "native_crash.wav", tone_mix(2.0, seed=12))
    write_audio(inputs / "bad" / "huge.flac", tone_mix(45.0, seed=13))  # over max_duration_s
    manifest = tmp_path / "manifest.txt"
    manifest.write_text(f"{inputs / 'bad' / 'vanished.wav'}\n")  # listed, gone before it is read

    catalog = tmp_path / "catalog"
    pipeline = _pipeline_file(tmp_path)
    opts = ClusterOptions(workers=2, dashboard=False, worker_lifetime=None)
    summary, plan = analyze([inputs, manifest], catalog, pipeline=str(pipeline), cluster=opts)

    all_inputs = set(plan.paths)
    n_dupes = 1
    con = duckdb.connect()
    glob = lambda t: str(catalog / t / "**" / "*.parquet")  # noqa: E731
    tracks = con.execute(f"select track_id, path from read_parquet('{glob('tracks')}')").fetchall()
    errors = con.execute(f"select path, stage, error_type, message from read_parquet('{glob('errors')}')").fetchall()
    files = con.execute(f"select path, track_id from read_parquet('{glob('files')}')").fetchall()

    # Every input is a track or an error; duplicates collapse to one track.
    accounted = assert_accounted(catalog, [inputs, manifest], summary)
    assert accounted["tracked"] | accounted["failed"] == all_inputs
    file_of = dict(files)
    assert summary.analyzed == len(tracks) and summary.failed == len(errors)
    assert summary.duplicate_paths == n_dupes
    assert file_of[str(inputs / "music" / "a duplicate of a.wav")] == file_of[str(inputs / "music" / "a.wav")]

    by_name = {Path(p).name: (stage, etype, msg) for p, stage, etype, msg in errors}
    assert by_name["empty.wav"][0] == "probe" and "empty" in by_name["empty.wav"][2]
    assert by_name["trunc.mp3"][0] == "decode" and "truncated" in by_name["trunc.mp3"][2]
    assert by_name["trunc.flac"][0] == "decode"
    assert "not audio" in by_name["notes.mp3"][2]
    assert "not audio" in by_name["garbage.wma"][2]
    if "no_audio_stream" in bad:
        assert "no audio stream" in by_name["video_only.m4a"][2]
    assert "directory" in by_name["album.flac"][2]
    assert "vanished" in by_name["vanished.wav"][2]
    assert by_name["decoder_raise.wav"][0] == "extract:test_misbehave"
    assert "simulated decoder failure" in by_name["decoder_raise.wav"][2]
    assert by_name["native_crash.wav"][0] == "worker" and by_name["native_crash.wav"][1] == "KilledWorker"
    assert "too long" in by_name["huge.flac"][2]
    if os.geteuid() != 0:  # root reads a chmod-000 file; test_audio covers the permission error as nobody
        assert "permission denied" in by_name["locked.wav"][2]
    # The non-ASCII path succeeded.
    assert any("Björk – Jóga ♫.flac" in p for _, p in tracks)

    # Every table matches its schema, read back with pyarrow.
    cat = Catalog(catalog)
    for table in ("tracks", "errors", "files"):
        data = cat.read_table(table)
        assert data.num_rows > 0
        conform(table, data)  # raises on drift
        assert data.schema.names == table_schema(table).names
        part = pq.read_table(cat.parts(table)[0])
        assert part.schema.metadata[b"mirflow.schema_version"] == str(table_schema(table).version).encode()
    silent = con.execute(f"select is_silent, loudness_integrated_lufs from read_parquet('{glob('tracks')}') "
                         "where path like '%silent.wav'").fetchall()
    assert silent == [(True, None)]
    manifest_json = cat.read_manifest()
    assert manifest_json["pipeline"] == "e2e" and manifest_json["runs"][-1]["analyzed"] == len(tracks)

    # A second run analyzes nothing and skips every track.
    summary2, plan2 = analyze([inputs, manifest], catalog, pipeline=str(pipeline), cluster=opts)
    assert summary2.analyzed == 0 and summary2.skipped == len(tracks)
    assert_accounted(catalog, [inputs, manifest], summary2)
    # A changed file is analyzed again; --force recomputes without duplicating.
    write_audio(inputs / "music" / "b.flac", tone_mix(4.0, seed=99))
    summary3, _ = analyze([inputs / "music"], catalog, pipeline=str(pipeline), cluster=opts, force=False)
    assert summary3.analyzed == 1
    assert_accounted(catalog, [inputs / "music"], summary3)
    summary4, _ = analyze([inputs / "music"], catalog, pipeline=str(pipeline), cluster=opts, force=True)
    assert summary4.analyzed == summary4.unique_tracks
    assert_accounted(catalog, [inputs / "music"], summary4)
    ids = [r[0] for r in con.execute(f"select track_id from read_parquet('{glob('tracks')}')").fetchall()]
    assert len(ids) == len(set(ids))


def test_killed_run_resumes_without_duplicates_or_gaps(tmp_path, plugins_env):
    inputs = tmp_path / "inputs"
    n = 16
    for i in range(n):
        write_audio(inputs / f"t{i:02d}.wav", tone_mix(1.5, freqs=(200.0 + 10 * i, 300.0), seed=i))
    catalog = tmp_path / "catalog"
    pipeline = _pipeline_file(tmp_path, sleep=0.4)
    cmd = [sys.executable, "-m", "mirflow", "analyze", str(inputs), "--catalog", str(catalog),
           "--pipeline", str(pipeline), "--workers", "2", "--no-progress", "--no-dashboard"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    kill_once_landed(proc, lambda: len(list((catalog / "tracks").rglob("*.parquet"))), 3)
    landed = len(list((catalog / "tracks").rglob("*.parquet")))
    assert 3 <= landed < n, "the kill must land mid-run"

    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    # Exactly the tracks that landed before the kill are skipped; the rest are analyzed once.
    assert f"analyzed:  {n - landed}   skipped (already in catalog): {landed}" in out.stdout, out.stdout
    con = duckdb.connect()
    rows = con.execute(
        f"select count(*), count(distinct track_id) from read_parquet('{catalog}/tracks/**/*.parquet')"
    ).fetchone()
    assert rows == (n, n)
    assert not list(catalog.rglob("*.tmp"))
    assert_accounted(catalog, [inputs])


def test_dry_run_lists_without_writing(tmp_path, good_audio):
    music = next(iter(good_audio.values())).parent
    catalog = tmp_path / "catalog"
    summary, plan = analyze([music], catalog, dry_run=True)
    assert len(plan.to_analyze) == len(good_audio) and not plan.skipped
    assert not catalog.exists()


def test_cli_query_and_doctor(tmp_path, good_audio):
    music = next(iter(good_audio.values())).parent
    catalog = tmp_path / "cat"
    # the fast pipeline: this test is about the commands, and a default worker's warm-up (every model) is 30 s
    run = subprocess.run([sys.executable, "-m", "mirflow", "analyze", str(music), "--catalog", str(catalog),
                          "--pipeline", "fast", "--workers", "1", "--no-dashboard", "--no-progress", "--limit", "2"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "analyzed:  2" in run.stdout
    q = subprocess.run([sys.executable, "-m", "mirflow", "query", str(catalog),
                        "select count(*) as n from tracks"], capture_output=True, text=True, timeout=120)
    assert q.returncode == 0 and q.stdout.split()[-1] == "2"
    p = subprocess.run([sys.executable, "-m", "mirflow", "plot", str(catalog), "--out", str(tmp_path / "plots")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    pngs = sorted(f.name for f in (tmp_path / "plots").glob("*.png"))
    assert {"tempo.png", "keys.png", "loudness.png"} <= set(pngs)
    assert all((tmp_path / "plots" / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in pngs)
    bad = subprocess.run([sys.executable, "-m", "mirflow", "analyze", str(music), "--catalog", str(catalog),
                          "--pipeline", "no-such-pipeline"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no pipeline named" in bad.stderr


def test_embeddings_bit_identical_across_runs_and_worker_counts(tmp_path):
    """Same files, same vectors, bit for bit, whether analyzed by 1 or 2 worker processes."""
    from mirflow.synth import make_demo_catalog

    make_demo_catalog(tmp_path / "corpus", n=3, seed=4, duration_s=(8.0, 8.0))
    pipeline = tmp_path / "emb.yaml"
    pipeline.write_text(
        "name: emb\nextractors:\n"
        "  - {name: embeddings, params: {model: musicnn}}\n"
        "  - {name: embeddings, params: {model: descriptor}}\n"
    )
    vectors = []
    for workers in (1, 2):
        catalog = tmp_path / f"cat{workers}"
        summary, _ = analyze([tmp_path / "corpus"], catalog, pipeline=str(pipeline),
                             cluster=ClusterOptions(workers=workers, dashboard=False, worker_lifetime=None))
        assert summary.analyzed == 3 and summary.failed == 0
        assert_accounted(catalog, [tmp_path / "corpus"], summary)
        con = duckdb.connect()
        rows = con.execute(
            f"select model, track_id, embedding from read_parquet('{catalog}/embeddings/**/*.parquet') "
            "order by model, track_id"
        ).fetchall()
        assert {m for m, _, _ in rows} == {"musicnn-msd", "descriptor"}
        vectors.append([(m, t, tuple(e)) for m, t, e in rows])
    assert vectors[0] == vectors[1]


def test_existing_scheduler_address(tmp_path, good_audio):
    """--scheduler: run on a cluster someone else started (here a LocalCluster of 2 processes)."""
    from distributed import LocalCluster

    music = next(iter(good_audio.values())).parent
    pipeline = tmp_path / "light.yaml"
    pipeline.write_text("name: light\nextractors: [metadata, {name: loudness, params: {backend: pyloudnorm}}]\n")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        summary, _ = analyze([music], tmp_path / "cat", pipeline=str(pipeline),
                             cluster=ClusterOptions(scheduler=cluster.scheduler_address, dashboard=False),
                             limit=2)
        assert summary.analyzed == 2 and summary.failed == 0
        assert_accounted(tmp_path / "cat", [music], summary)
        assert len(cluster.scheduler.workers) == 2  # the run did not stop the cluster it was given
