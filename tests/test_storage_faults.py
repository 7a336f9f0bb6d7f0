"""Faults the catalog's storage must survive: damaged parts, a full disk, concurrent sweeps, glob
characters in the catalog path, and SQL that tries to write."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from accounting import assert_accounted
from conftest import tone_mix, write_audio

from mirflow.catalog import Catalog
from mirflow.catalog.layout import _HOST, part_is_intact
from mirflow.errors import CatalogError
from mirflow.pipeline.runner import ClusterOptions, analyze
from mirflow.query import connect, read_table

pytestmark = pytest.mark.slow

OPTS = ClusterOptions(workers=1, dashboard=False, worker_lifetime=None)
PIPELINE = "name: store\nextractors: [metadata, {name: rhythm, params: {backend: librosa}}]\n"


def _corpus(root: Path, n: int = 4) -> Path:
    for i in range(n):
        write_audio(root / f"t{i}.wav", tone_mix(3.0, freqs=(200.0 + 20 * i, 300.0), seed=i))
    return root


def _pipeline(tmp_path: Path) -> str:
    path = tmp_path / "store.yaml"
    path.write_text(PIPELINE)
    return str(path)


def _mirflow(*args: str, timeout: float = 300):
    return subprocess.run([sys.executable, "-m", "mirflow", *args], capture_output=True, text=True, timeout=timeout)


def test_damaged_parts_are_skipped_by_readers_and_reanalyzed(tmp_path):
    music = _corpus(tmp_path / "music")
    catalog = tmp_path / "cat"
    analyze([music], catalog, pipeline=_pipeline(tmp_path), cluster=OPTS)
    cat = Catalog(catalog)
    tracks = cat.parts("tracks")
    truncated = tracks[0]
    truncated.write_bytes(truncated.read_bytes()[:100])  # a copy cut short
    junk = next(p for p in cat.parts("beats") if p.stem != truncated.stem)
    junk.write_bytes(b"these are not the rows you are looking for" * 10)
    assert not part_is_intact(truncated) and not part_is_intact(junk)

    # Every other row stays readable: SQL, pandas.
    out = _mirflow("query", str(catalog), "select count(*) n from tracks")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "3"
    assert len(read_table(catalog, "tracks")) == 3
    assert connect(catalog).sql("select count(distinct track_id) from beats").fetchall()[0][0] == 2

    # The next run quarantines both parts and analyzes their tracks again.
    summary, _ = analyze([music], catalog, pipeline=_pipeline(tmp_path), cluster=OPTS)
    assert summary.analyzed == 2 and summary.skipped == 2
    assert len(list((catalog / "_quarantine").rglob("*.parquet"))) == 2
    assert all(part_is_intact(p) for p in cat.parts("tracks") + cat.parts("beats"))
    assert connect(catalog).sql("select count(distinct track_id) from beats").fetchall()[0][0] == 4
    assert_accounted(catalog, [music], summary)


def test_full_disk_stops_with_one_message_and_resumes(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        music = _corpus(tmp_path / "music", n=24)
        catalog = mount / "cat"
        args = ["analyze", str(music), "--catalog", str(catalog), "--pipeline", _pipeline(tmp_path),
                "--workers", "1", "--no-dashboard", "--no-progress"]
        out = _mirflow(*args)
        assert out.returncode == 2, out.stdout + out.stderr
        assert "mirflow: error: the catalog's disk is full" in out.stderr
        assert "Traceback" not in out.stderr and "ENOSPC" not in out.stderr
        # Nothing half-done is served: every beats row belongs to a committed track.
        con = connect(catalog)
        served = con.sql("select count(*) from beats where track_id not in (select track_id from tracks)")
        assert served.fetchall()[0][0] == 0
        assert not [p for p in catalog.rglob("*.tmp")]
        # Free space (grow the file system) and run again: every track exactly once.
        subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)
        out = _mirflow(*args)
        assert out.returncode == 0, out.stdout + out.stderr
        assert_accounted(catalog, [music])
        assert len(read_table(catalog, "tracks")) == 24
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _sweep_setup(tmp_path: Path) -> tuple[Catalog, Path, subprocess.Popen]:
    """A catalog, a part folder in it, and a live process to name as a temporary file's writer."""
    cat = Catalog(tmp_path / "cat")
    folder = cat.root / "tracks" / "ab"
    folder.mkdir(parents=True)
    return cat, folder, subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_first_run_killed_while_writing_its_manifest_leaves_a_usable_folder(tmp_path):
    """A kill between the temporary manifest and its rename leaves only that file: the folder stays the catalog's."""
    catalog = tmp_path / "cat"
    killed = subprocess.run([sys.executable, "-c", (
        "import os, signal, sys\n"
        "from mirflow.catalog import Catalog\n"
        "os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)\n"
        f"Catalog({str(catalog)!r}).open_for('store')\n")], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    leftover = [p.name for p in catalog.iterdir()]
    assert len(leftover) == 1 and leftover[0].startswith(".manifest.json.") and leftover[0].endswith(".tmp")

    music = _corpus(tmp_path / "music", n=2)
    summary, _ = analyze([music], catalog, pipeline=_pipeline(tmp_path), cluster=OPTS, progress=None)
    assert summary.analyzed == 2 and Catalog(catalog).read_manifest()["pipeline"] == "store"
    assert_accounted(catalog, [music], summary)

    # A user's folder is still refused, and left as it was, whatever temporary file it holds.
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    (user / leftover[0]).write_text("{")
    with pytest.raises(CatalogError, match="not a mirflow catalog"):
        Catalog(user).open_for("store")
    assert sorted(p.name for p in user.iterdir()) == sorted(["notes.txt", leftover[0]])


def test_sweep_leaves_a_live_writers_temporary_files(tmp_path):
    cat, folder, sleeper = _sweep_setup(tmp_path)
    try:
        live = folder / f".abcd.{_HOST}.{sleeper.pid}.x1y2z3.tmp"
        live.write_bytes(b"in flight")
        dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                                  capture_output=True, text=True).stdout.strip()
        dead = folder / f".abef.{_HOST}.{dead_pid}.q1w2e3.tmp"
        dead.write_bytes(b"left by a killed writer")
        dead_dotted = cat.root / f"._manifest.json.{_HOST}.{dead_pid}.a1s2d3.tmp"  # a stem with a dot
        dead_dotted.write_bytes(b"{")
        live_dotted = cat.root / f"._manifest.json.{_HOST}.{sleeper.pid}.f4g5h6.tmp"
        live_dotted.write_bytes(b"{")
        other_host_recent = folder / ".abff.elsewhere.123.r4t5y6.tmp"
        other_host_recent.write_bytes(b"another machine is writing")
        other_host_old = folder / ".ab00.elsewhere.456.u7i8o9.tmp"
        other_host_old.write_bytes(b"long dead")
        old = time.time() - 3 * 24 * 3600
        os.utime(other_host_old, (old, old))
        assert cat.sweep_temporary() == 3
        assert live.exists() and live_dotted.exists() and other_host_recent.exists()
        assert not dead.exists() and not dead_dotted.exists() and not other_host_old.exists()
    finally:
        sleeper.kill()


def test_sweep_removes_a_killed_writers_file_before_its_process_is_reaped(tmp_path):
    # A writer killed with its run is a zombie until someone reaps it; it
    # still answers kill(pid, 0), but it will never rename its file.
    import psutil

    cat, folder, writer = _sweep_setup(tmp_path)
    try:
        left = folder / f".abcd.{_HOST}.{writer.pid}.k1l2m3.tmp"
        left.write_bytes(b"half a part")
        writer.kill()  # not waited for: a zombie until the finally
        deadline = time.time() + 30
        while psutil.Process(writer.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.time() < deadline, "the killed writer never became a zombie"
            time.sleep(0.01)
        os.kill(writer.pid, 0)  # the old liveness test would have kept its file
        assert cat.sweep_temporary() == 1
        assert not left.exists()
    finally:
        writer.kill()
        writer.wait()


def test_glob_characters_in_the_catalog_path(tmp_path):
    music = _corpus(tmp_path / "music [live] *best*", n=2)
    catalog = tmp_path / "cat[1]?"
    for _ in range(2):
        summary, _ = analyze([music], catalog, pipeline=_pipeline(tmp_path), cluster=OPTS)
    assert summary.skipped == 2 and summary.analyzed == 0
    assert connect(catalog).sql("select count(*) from tracks").fetchall()[0][0] == 2
    assert len(read_table(catalog, "beats")) > 0
    assert_accounted(catalog, [music], summary)


def test_query_is_read_only(tmp_path, good_audio):
    music = next(iter(good_audio.values())).parent
    catalog = tmp_path / "cat"
    analyze([music], catalog, pipeline=_pipeline(tmp_path), cluster=OPTS, limit=1)
    before = sorted(p.relative_to(catalog) for p in catalog.rglob("*") if p.is_file())
    target = catalog / "tracks" / "zz" / "injected.parquet"
    refused = {
        f"copy (select * from tracks) to '{target}' (format parquet)": "COPY statement",
        f"attach '{tmp_path / 'x.db'}'": "ATTACH statement",
        "install httpfs": "statement",
        "set enable_external_access = true": "SET statement",
        "select * from read_csv('/etc/passwd')": "Permission Error",
        "select nope": "SQL error:",
    }
    for sql, words in refused.items():
        out = _mirflow("query", str(catalog), sql)
        assert out.returncode == 2, (sql, out.stdout)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mirflow: error:") and words in lines[0], (sql, out.stderr)
    assert not target.exists()
    after = sorted(p.relative_to(catalog) for p in catalog.rglob("*") if p.is_file())
    assert after == before
    shutil.rmtree(catalog)
