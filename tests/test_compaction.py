"""Compaction of catalog parts: every reader sees every row exactly once, at every moment.

A small real catalog (metadata + librosa rhythm on generated tones, one bad
input for an ``errors`` row) is compacted, killed at each step of the
compaction, compacted again while ``analyze`` writes, and re-analyzed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from accounting import assert_accounted
from conftest import tone_mix, write_audio

from mirflow.catalog import Catalog
from mirflow.catalog.compact import (
    CRASH_ENV,
    CRASH_STEPS,
    CompactionBusy,
    compact,
    compaction_lock,
    maybe_compact,
)
from mirflow.catalog.layout import COMPACTED, path_from_columns
from mirflow.cli import compact_cmd
from mirflow.pipeline.runner import ClusterOptions, analyze
from mirflow.pipeline.task import long_table_rows
from mirflow.query import connect, read_table, to_dask

pytestmark = pytest.mark.slow

OPTS = ClusterOptions(workers=1, dashboard=False, worker_lifetime=None)
PIPELINE = "name: light\nextractors: [metadata, {name: rhythm, params: {backend: librosa}}]\n"
TABLES = ("tracks", "beats", "files", "errors")
#: Columns that identify a row once (the schemas' primary keys; path tables by path).
ROW_KEYS = {"tracks": ["track_id"], "beats": ["track_id", "time_s"], "files": ["path"], "errors": ["path"]}


def _corpus(root: Path, n: int, start: int = 0) -> Path:
    for i in range(start, start + n):
        write_audio(root / f"t{i}.wav", tone_mix(3.0, freqs=(200.0 + 20 * i, 300.0), seed=i))
    return root


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, Path, Path]:
    """``(music, catalog, pipeline)``: 4 analyzed tracks and one undecodable file (an errors row)."""
    root = tmp_path_factory.mktemp("compaction")
    music = _corpus(root / "music", 4)
    (music / "broken.wav").write_bytes(b"RIFF not really a wave file" * 20)
    pipeline = root / "light.yaml"
    pipeline.write_text(PIPELINE)
    catalog = root / "catalog"
    analyze([music], catalog, pipeline=str(pipeline), cluster=OPTS)
    return music, catalog, pipeline


@pytest.fixture
def work(base, tmp_path) -> tuple[Path, Path, Path]:
    music, catalog, pipeline = base
    copy = tmp_path / "catalog"
    shutil.copytree(catalog, copy)
    return music, copy, pipeline


def _rows(table) -> list[tuple]:
    cols = table.to_pydict() if hasattr(table, "to_pydict") else table.to_dict("list")
    if "path" in cols and "path_bytes" in cols:
        cols["path"] = [path_from_columns(t, r) for t, r in zip(cols["path"], cols["path_bytes"], strict=True)]
    return [tuple(cols[c][i] for c in cols) for i in range(len(next(iter(cols.values()))))]


def readers(catalog: Path) -> dict[str, dict[str, Counter]]:
    """Every table's row keys as each reader sees them (a Counter: a key seen twice shows as 2)."""
    cat = Catalog(catalog)
    con = connect(cat)
    out: dict[str, dict[str, Counter]] = {}
    for table in TABLES:
        keys = ROW_KEYS[table]
        out[table] = {
            "sql": Counter(con.execute(f"SELECT {', '.join(keys)} FROM {table}").fetchall()),
            "pandas": Counter(map(tuple, read_table(cat, table)[keys].itertuples(index=False))),
            "catalog": Counter(_rows(cat.read_table(table, columns=keys))),
        }
        if table == "beats":
            out[table]["dask"] = Counter(map(tuple, to_dask(cat, table)[keys].compute().itertuples(index=False)))
    out["tracks"]["existing_tracks"] = Counter((t,) for t in cat.existing_tracks())
    out["files"]["known_files"] = Counter((p,) for p in cat.known_files())
    con.close()
    return out


def assert_exactly_once(state: dict[str, dict[str, Counter]], expected: dict[str, set] | None = None) -> None:
    for table, views in state.items():
        for reader, counts in views.items():
            twice = [k for k, n in counts.items() if n > 1]
            assert not twice, f"{table} via {reader}: rows seen more than once: {twice[:3]}"
            if expected is not None:
                assert set(counts) == expected[table], f"{table} via {reader}: {set(counts) ^ expected[table]}"


def expected_rows(state) -> dict[str, set]:
    return {table: set(views["catalog"]) for table, views in state.items()}


def loose_parts(catalog: Path) -> int:
    cat = Catalog(catalog)
    return sum(len(cat.loose_parts(t)) for t in TABLES)


def _compact_in_subprocess(catalog: Path, crash_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, CRASH_ENV: crash_at} if crash_at else dict(os.environ)
    code = "import sys; from mirflow.catalog.compact import compact; compact(sys.argv[1])"
    return subprocess.run([sys.executable, "-c", code, str(catalog)], env=env, capture_output=True, text=True,
                          timeout=120)


# --------------------------------------------------------------------------- tests
def test_compaction_keeps_every_row_once_and_empties_the_shards(work):
    music, catalog, _ = work
    before = readers(catalog)
    assert_exactly_once(before)
    expected = expected_rows(before)
    assert len(expected["tracks"]) == 4 and len(expected["errors"]) == 1 and expected["beats"]
    assert loose_parts(catalog) >= 4 + 4 + 4 + 1

    assert maybe_compact(catalog, min_loose_parts=100) is None  # below analyze's threshold
    summary = maybe_compact(catalog, min_loose_parts=1)
    assert {t.table for t in summary.tables if t.generation} == set(TABLES)
    assert loose_parts(catalog) == 0  # every folded part deleted
    assert_exactly_once(readers(catalog), expected)
    for table in TABLES:
        files = [f for f in (catalog / table / COMPACTED).rglob("part-*.parquet")]
        assert len(files) == 1
        assert pq.ParquetFile(files[0]).metadata.row_group(0).column(0).compression == "ZSTD"
    assert_accounted(catalog, [music])
    # Nothing new: a second compaction writes no generation.
    assert all(t.generation is None for t in compact(catalog).tables)


@pytest.mark.parametrize("step", CRASH_STEPS)
def test_killed_compaction_leaves_every_row_once(work, step):
    music, catalog, _ = work
    expected = expected_rows(readers(catalog))
    run = _compact_in_subprocess(catalog, crash_at=step)
    assert run.returncode == 99, run.stderr[-2000:]  # it really died at the step
    assert_exactly_once(readers(catalog), expected)
    assert_accounted(catalog, [music])
    again = _compact_in_subprocess(catalog)
    assert again.returncode == 0, again.stderr[-2000:]
    assert_exactly_once(readers(catalog), expected)
    assert loose_parts(catalog) == 0
    # Crash leftovers (unreferenced generations) are gone; at most current + previous remain.
    for table in TABLES:
        gens = [d for d in (catalog / table / COMPACTED).iterdir() if d.is_dir()]
        assert 1 <= len(gens) <= 2, (table, gens)


def test_rerun_of_a_compacted_catalog_plans_from_the_compacted_tables(work):
    music, catalog, pipeline = work
    compact(catalog)
    assert loose_parts(catalog) == 0
    summary, plan = analyze([music], catalog, pipeline=str(pipeline), dry_run=True)
    # The 4 tracks are current; only the file that failed is tried again.
    assert len(plan.skipped) == 4 and [Path(j.path).name for j in plan.to_analyze] == ["broken.wav"]
    summary, plan = analyze([music], catalog, pipeline=str(pipeline), cluster=OPTS)
    assert summary.skipped == 4 and summary.failed == 1
    assert_accounted(catalog, [music], summary)


def test_forced_reanalysis_after_compaction_shows_the_new_rows_only(work):
    music, catalog, pipeline = work
    expected = expected_rows(readers(catalog))
    compact(catalog)
    compacted_at = time.time()
    summary, plan = analyze([music], catalog, pipeline=str(pipeline), cluster=OPTS, force=True)
    assert len(plan.to_analyze) == 5 and summary.failed == 1
    assert_exactly_once(readers(catalog), expected)
    analyzed = read_table(catalog, "tracks")["analyzed_at"]
    assert (analyzed.map(lambda t: t.timestamp()) > compacted_at).all()  # the new rows, not the old ones
    assert_accounted(catalog, [music], summary)
    compact(catalog)
    assert_exactly_once(readers(catalog), expected)
    assert loose_parts(catalog) == 0


def test_removed_and_superseded_rows_stay_hidden_after_compaction(work):
    """A removal after compaction is a tombstone; long-table rows of another pipeline are not current."""
    music, catalog, _ = work
    compact(catalog)
    cat = Catalog(catalog)
    tracks = cat.existing_tracks()
    gone, stale = sorted(tracks)[:2]
    # An extractor of another pipeline (or other parameters) left rows for `stale`.
    [(_, rows)] = long_table_rows("beats", stale, {"time_s": [0.5, 1.0], "beat_in_bar": [1, 2]},
                                  pipeline_version="another-pipeline")
    cat.write_part("beats", stale, rows)
    assert cat.remove_part("beats", gone)  # e.g. a forced re-analysis that found no beats
    assert cat.part_path("beats", gone).exists()  # a tombstone, not a deletion
    for _ in range(2):  # before and after folding them
        con = connect(cat)
        served = {t for (t,) in con.execute("SELECT DISTINCT track_id FROM beats").fetchall()}
        assert gone not in served and stale not in served
        assert served == set(tracks) - {gone, stale}
        assert set(read_table(cat, "beats")["track_id"]) == served
        assert set(to_dask(cat, "beats")["track_id"].compute()) == served
        # The catalog-level reader returns the rows with the version that wrote them.
        raw = cat.read_table("beats", with_versions=True).to_pydict()
        assert {v for t, v in zip(raw["track_id"], raw["_pipeline_version"], strict=True) if t == stale} == \
            {"another-pipeline"}
        assert gone not in raw["track_id"]
        con.close()
        compact(catalog)
    assert loose_parts(catalog) == 0


def test_a_second_compaction_is_refused_while_one_runs(work):
    _, catalog, _ = work
    with compaction_lock(Catalog(catalog), wait=False):
        with pytest.raises(CompactionBusy, match="another compaction"):
            compact(catalog)
        run = _compact_in_subprocess(catalog)
        assert run.returncode != 0 and "another compaction" in run.stderr
        # The CLI says so in one line.
        parser = argparse.ArgumentParser()
        compact_cmd.register(parser.add_subparsers())
        args = parser.parse_args(["compact", str(catalog)])
        with pytest.raises(CompactionBusy):
            args.func(args)
    assert _compact_in_subprocess(catalog).returncode == 0
    args = parser.parse_args(["compact", str(catalog)])
    assert args.func(args) == 0


def test_compaction_while_analyze_writes_keeps_every_track_once(work, tmp_path):
    music, catalog, pipeline = work
    more = _corpus(music, 6, start=4)  # 6 new tracks for the running analyze
    script = (f"from mirflow.pipeline.runner import ClusterOptions, analyze\n"
              f"if __name__ == '__main__':\n"
              f"    analyze([{str(more)!r}], {str(catalog)!r}, pipeline={str(pipeline)!r}, force=True,\n"
              f"            cluster=ClusterOptions(workers=1, dashboard=False, worker_lifetime=None))\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rounds = 0
    try:
        while proc.poll() is None:
            compact(catalog, wait=True)
            rounds += 1
            state = readers(catalog)
            assert_exactly_once(state)
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, proc.stderr.read()[-2000:]
    assert rounds >= 2
    compact(catalog)
    state = readers(catalog)
    assert_exactly_once(state)
    assert len(state["tracks"]["catalog"]) == 10
    assert_accounted(catalog, [music])


def test_partitioned_tables_keep_one_vector_size_per_model(work):
    """Embeddings (partitioned by model, FLOAT[N] per model) compact per partition; the views still cast."""
    _, catalog, _ = work
    cat = Catalog(catalog)
    ids = sorted(cat.existing_tracks())
    fingerprint = next(iter(cat.existing_tracks().values()))
    for dim, model in ((3, "small"), (5, "wide")):
        for i, tid in enumerate(ids):
            [(part, rows)] = long_table_rows("embeddings", tid, {
                "model": [model], "model_version": ["1"], "embedding": [[float(i + 1)] * dim]},
                pipeline_version=fingerprint)
            cat.write_part("embeddings", tid, rows, partition=part)

    def seen():
        con = connect(cat)
        out = {m: con.execute(f"SELECT track_id, array_cosine_similarity(embedding, embedding) FROM embeddings_{m}")
               .fetchall() for m in ("small", "wide")}
        out["all"] = con.execute("SELECT model, count(*) FROM embeddings GROUP BY model ORDER BY model").fetchall()
        con.close()
        return out

    before = seen()
    assert before["all"] == [("small", 4), ("wide", 4)]
    compact(catalog)
    assert cat.partitions("embeddings") == ["small", "wide"]
    assert sorted(seen()["small"]) == sorted(before["small"]) and sorted(seen()["wide"]) == sorted(before["wide"])
    assert seen()["all"] == before["all"]
    # A re-analysis that no longer produces the `wide` model: the stale row is hidden by a tombstone.
    assert cat.remove_part("embeddings", ids[0], partition="wide")
    assert seen()["all"] == [("small", 4), ("wide", 3)]
    assert len(read_table(cat, "embeddings", partition="wide")) == 3
    compact(catalog)
    assert seen()["all"] == [("small", 4), ("wide", 3)]


def test_rows_of_one_key_before_and_after_compaction(work):
    _, catalog, _ = work
    cat = Catalog(catalog)
    tid = sorted(cat.existing_tracks())[0]
    before = cat.rows_of("beats", tid).to_pydict()
    assert before["time_s"]
    compact(catalog)
    assert not cat.part_path("beats", tid).exists()
    assert cat.rows_of("beats", tid).select(list(before)).to_pydict() == before
    assert cat.rows_of("tracks", tid).column("track_id").to_pylist() == [tid]
    cat.remove_part("beats", tid)
    assert cat.rows_of("beats", tid).num_rows == 0
    assert cat.rows_of("tracks", "0" * 32).num_rows == 0


def _joins_tracks(con, view: str) -> bool:
    plan = "\n".join(row[1] for row in con.execute(f"EXPLAIN SELECT * FROM {view}").fetchall())
    return "SEMI" in plan


def test_rows_proven_current_at_compaction_are_served_without_the_tracks_join(work):
    """The compactor records which tracks generation a long table's rows are all current for; readers skip the
    join with tracks only while tracks is still exactly that (same generation, no loose part)."""
    music, catalog, _ = work
    compact(catalog)
    cat = Catalog(catalog)
    tracks_gen = cat.compaction_record("tracks")["generation"]
    assert cat.compaction_record("beats")["current_with"] == tracks_gen
    expected = expected_rows(readers(catalog))
    con = connect(cat)
    assert not _joins_tracks(con, "beats")
    assert_exactly_once(readers(catalog), expected)
    con.close()

    # A removed track is a tombstone in tracks: its compacted beats must disappear, so the join is back.
    gone = sorted(cat.existing_tracks())[0]
    assert cat.remove_part("tracks", gone)
    con = connect(cat)
    assert _joins_tracks(con, "beats")
    assert gone not in {t for (t,) in con.execute("SELECT DISTINCT track_id FROM beats").fetchall()}
    con.close()
    # Compacted again, the beats of the removed track are orphans: not provably current, so still joined.
    compact(catalog)
    assert cat.compaction_record("beats")["current_with"] is None
    con = connect(cat)
    assert _joins_tracks(con, "beats")
    served = {t for (t,) in con.execute("SELECT DISTINCT track_id FROM beats").fetchall()}
    assert gone not in served and served == set(cat.existing_tracks())
    con.close()


def test_killed_run_on_a_compacted_catalog_resumes_without_duplicates_or_gaps(work, tmp_path):
    """The kill/resume guarantee of tests/test_catalog_e2e.py, on the compacted layout."""
    from conftest import kill_once_landed, plugin_env

    music, catalog, _ = work
    compact(catalog)
    assert loose_parts(catalog) == 0
    _corpus(music, 8, start=4)
    slow = tmp_path / "light.yaml"  # the same pipeline name, slowed down so that the kill lands mid-run
    slow.write_text(PIPELINE.replace("]\n", ", {name: test_misbehave, params: {sleep_s: 0.5}}]\n"))
    env = plugin_env()
    cmd = [sys.executable, "-m", "mirflow", "analyze", str(music), "--catalog", str(catalog), "--pipeline", str(slow),
           "--workers", "1", "--no-progress", "--no-dashboard"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    cat = Catalog(catalog)
    kill_once_landed(proc, lambda: len(cat.loose_parts("tracks")), 2)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    state = readers(catalog)
    assert_exactly_once(state)
    assert len(state["tracks"]["catalog"]) == 12
    assert_accounted(catalog, [music])
