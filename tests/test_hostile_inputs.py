"""Real catalogs as a hostile tester sees them: odd names, files that change, bombs, bad manifests.

Each test reproduces one way a real catalog lost or corrupted data, on a
real LocalCluster, and checks with :func:`accounting.assert_accounted` that
every input path ends in exactly one of tracks or errors.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from accounting import assert_accounted
from conftest import tone_mix, write_audio

from mirflow.audio.hashing import content_hash
from mirflow.catalog import Catalog
from mirflow.catalog.layout import path_text
from mirflow.errors import ConfigError
from mirflow.pipeline.inputs import expand
from mirflow.pipeline.runner import ClusterOptions, _memory_limit, analyze

pytestmark = pytest.mark.slow

LIGHT = "name: light\ndecode: {max_duration_s: %(max_s)s}\nruntime: {timeout_s: 120, retries: 1}\nextractors: [metadata]\n"
OPTS = ClusterOptions(workers=2, dashboard=False, worker_lifetime=None)


def _pipeline(tmp_path: Path, max_s: float = 60) -> str:
    path = tmp_path / f"light{int(max_s)}.yaml"
    path.write_text(LIGHT % {"max_s": max_s})
    return str(path)


def _rows(catalog: Path, table: str) -> list[dict]:
    return Catalog(catalog).read_table(table).to_pylist()


def _errors_by_name(catalog: Path) -> dict[str, dict]:
    return {Path(r["path"]).name: r for r in _rows(catalog, "errors")}


# ----------------------------------------------------------------------------- 1. file names
def test_non_utf8_file_name_is_analyzed_and_stored_losslessly(tmp_path):
    music = tmp_path / "music"
    music.mkdir()
    raw_name = b"Caf\xe9 del Mar - \xc0 bient\xf4t.wav"  # latin-1 bytes: not valid UTF-8
    odd = os.path.join(os.fsencode(music), raw_name)
    sf.write(odd, tone_mix(2.0, seed=1), 22050)
    for i in range(3):  # batch-mates of the odd name, in the same hash batch
        write_audio(music / f"ok{i}.wav", tone_mix(2.0, seed=10 + i))
    catalog = tmp_path / "cat"
    summary, _ = analyze([music], catalog, pipeline=_pipeline(tmp_path), cluster=OPTS)
    assert summary.analyzed == 4 and summary.failed == 0
    odd_str = os.fsdecode(odd)
    track = next(r for r in _rows(catalog, "tracks") if r["path_bytes"] is not None)
    assert track["path_bytes"] == odd  # lossless
    assert track["path"] == path_text(odd_str) and "\\xe9" in track["path"]  # readable
    assert track["track_id"] == content_hash(odd)
    files = _rows(catalog, "files")
    assert sum(r["path_bytes"] == odd for r in files) == 1
    assert_accounted(catalog, [music], summary)
    manifest = Catalog(catalog).read_manifest()
    assert manifest["runs"][-1]["status"] == "finished"
    # A re-run reuses the stored hash of the odd name (rebuilt from path_bytes) and skips it.
    summary2, _ = analyze([music], catalog, pipeline=_pipeline(tmp_path), cluster=OPTS)
    assert summary2.skipped == 4 and summary2.analyzed == 0
    # The CLI shows it readably (no UnicodeEncodeError on a UTF-8 terminal).
    out = subprocess.run([sys.executable, "-m", "mirflow", "analyze", str(music), "--catalog", str(catalog),
                          "--pipeline", _pipeline(tmp_path), "--dry-run"],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert out.returncode == 0, out.stderr
    assert "Caf\\xe9 del Mar" in out.stdout


def test_a_failing_run_is_not_left_marked_running(tmp_path):
    music = tmp_path / "music"
    write_audio(music / "a.wav", tone_mix(1.0))

    def boom(stage, done, total):
        raise RuntimeError("the client lost its scheduler")

    with pytest.raises(RuntimeError):
        analyze([music], tmp_path / "cat", pipeline=_pipeline(tmp_path), cluster=OPTS, progress=boom)
    run = Catalog(tmp_path / "cat").read_manifest()["runs"][-1]
    assert run["status"] == "failed" and "lost its scheduler" in run["error"]


# ----------------------------------------------------------------------------- 2. files that change
def test_file_swapped_between_hashing_and_analysis(tmp_path):
    music = tmp_path / "music"
    a, dup, b = music / "a.wav", music / "a copy.wav", music / "b.wav"
    write_audio(a, tone_mix(2.0, seed=1))
    shutil.copy(a, dup)  # same bytes: one track, two paths
    write_audio(b, tone_mix(2.0, seed=2))
    old_a, old_b = content_hash(a), content_hash(b)
    swapped = []

    def swap_before_analysis(stage, done, total):
        if stage == "analyze" and done == 0 and not swapped:
            # New content under both paths that were hashed; the copy keeps a's bytes.
            write_audio(a, tone_mix(2.0, seed=3))
            write_audio(b, tone_mix(2.5, seed=4))
            swapped.append(True)

    catalog = tmp_path / "cat"
    summary, _ = analyze([music], catalog, pipeline=_pipeline(tmp_path), cluster=OPTS,
                         progress=swap_before_analysis)
    assert swapped
    tracks = {r["track_id"]: r for r in _rows(catalog, "tracks")}
    # a's old bytes still exist at the copy: the track is analyzed from there, under its true id.
    assert tracks[old_a]["path"] == str(dup)
    # b's old bytes are gone: never stored under b's old id.
    assert old_b not in tracks
    errors = _errors_by_name(catalog)
    assert errors["b.wav"]["stage"] == "changed" and errors["a.wav"]["stage"] == "changed"
    assert_accounted(catalog, [music], summary)
    # The next run analyzes the new content under its own ids and clears the errors.
    summary2, _ = analyze([music], catalog, pipeline=_pipeline(tmp_path), cluster=OPTS)
    tracks = {r["track_id"]: r for r in _rows(catalog, "tracks")}
    assert content_hash(a) in tracks and content_hash(b) in tracks
    assert tracks[content_hash(b)]["duration_s"] == pytest.approx(2.5, abs=0.01)
    assert not _rows(catalog, "errors")
    assert_accounted(catalog, [music], summary2)


def test_rewrite_with_restored_size_and_mtime_is_hashed_again(tmp_path):
    music = tmp_path / "music"
    path = write_audio(music / "x.wav", tone_mix(2.0, seed=1))
    catalog = tmp_path / "cat"
    analyze([music], catalog, pipeline=_pipeline(tmp_path), cluster=OPTS)
    st = os.stat(path)
    old_id = content_hash(path)
    write_audio(path, tone_mix(2.0, seed=2))  # same length and format: same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size and os.stat(path).st_mtime_ns == st.st_mtime_ns
    summary, plan = analyze([music], catalog, pipeline=_pipeline(tmp_path), cluster=OPTS)
    assert summary.analyzed == 1 and plan.to_analyze[0].track_id == content_hash(path) != old_id
    files = _rows(catalog, "files")
    assert [r["track_id"] for r in files] == [content_hash(path)]
    assert_accounted(catalog, [music], summary)


# ----------------------------------------------------------------------------- 3. limits
def _flac_bomb(path: Path, *, seconds: int = 3600, sr: int = 192000, channels: int = 8) -> Path:
    """A 250-byte FLAC whose header declares an hour of 8-channel 192-kHz audio (22 GiB decoded)."""
    buf = io.BytesIO()
    sf.write(buf, np.zeros((sr // 10, channels), dtype=np.float32), sr, format="FLAC", subtype="PCM_16")
    data = bytearray(buf.getvalue())
    # STREAMINFO: bytes 18..25 hold rate (20 bits), channels-1 (3), bits-1 (5), total samples (36).
    packed = int.from_bytes(data[18:26], "big")
    packed = (packed & ~((1 << 36) - 1)) | seconds * sr
    data[18:26] = packed.to_bytes(8, "big")
    data[26:42] = bytes(16)  # MD5 of the (unknown) audio
    path.write_bytes(bytes(data))
    return path


def _wav_claiming_1_hz(path: Path, frames: int = 3500) -> Path:
    """A 7-KB PCM WAV whose header says 1 Hz: a worker would upsample it 44,100-fold."""
    data = (np.sin(np.arange(frames)) * 10000).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, 1, 2, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def _stream_without_duration(path: Path, *, seconds: int = 600, channels: int = 8) -> Path:
    """Live Matroska (FLAC inside) written to a pipe: the container declares no duration."""
    with open(path, "wb") as out:
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"anoisesrc=r=48000:a=0.01:d={seconds}",
                        "-ac", str(channels), "-c:a", "flac", "-live", "1", "-f", "matroska", "pipe:1"],
                       stdout=out, check=True)
    return path


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as fh:  # VmHWM back to the current RSS
        fh.write("5")


def _peak_rss_kib() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
def test_bombs_and_streams_rejected_on_first_attempt_with_bounded_memory(tmp_path):
    from distributed import Client, LocalCluster

    from mirflow.audio.probe import probe

    bombs = tmp_path / "bombs"
    bombs.mkdir()
    _flac_bomb(bombs / "hour_8ch_192k.flac")  # over max_duration_s
    _flac_bomb(bombs / "59s_8ch_192k.flac", seconds=59)  # under it, but 360 MiB decoded
    _wav_claiming_1_hz(bombs / "one_hertz.wav")
    stream = _stream_without_duration(bombs / "live.mka")  # 10 min of 8 channels: 0.9 GiB decoded
    _stream_without_duration(bombs / "live_stereo.mka", seconds=120, channels=2)
    assert probe(stream).duration_s == 0  # the container declares no length
    write_audio(bombs / "fine.wav", tone_mix(2.0))
    catalog = tmp_path / "cat"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        # The worker's peak RSS during the run alone: ru_maxrss would also count the
        # pages a worker process inherited at fork from this (large) test process.
        client.run(_reset_peak_rss)
        summary, _ = analyze([bombs], catalog, pipeline=_pipeline(tmp_path, max_s=60),
                             cluster=ClusterOptions(scheduler=cluster.scheduler_address, dashboard=False))
        peak_kib = max(client.run(_peak_rss_kib).values())
        # Each rejection happened inside the task: the worker never died.
        assert len(cluster.scheduler.workers) == 1
    errors = _errors_by_name(catalog)
    assert errors["hour_8ch_192k.flac"]["stage"] == "probe"
    assert errors["hour_8ch_192k.flac"]["message"].startswith("too long")
    assert errors["59s_8ch_192k.flac"]["stage"] == "probe"
    assert errors["59s_8ch_192k.flac"]["message"].startswith("too large")
    assert "sample rate: 1 Hz" in errors["one_hertz.wav"]["message"]
    assert errors["live.mka"]["stage"] == "decode" and errors["live.mka"]["message"].startswith("too large")
    assert errors["live_stereo.mka"]["stage"] == "decode"
    assert errors["live_stereo.mka"]["message"].startswith("too long")
    assert all(e["error_type"] != "KilledWorker" for e in errors.values())
    assert summary.analyzed == 1 and summary.failed == 5
    assert peak_kib < 1024 * 1024, f"worker peaked at {peak_kib / 1024:.0f} MiB"
    assert_accounted(catalog, [bombs], summary)


def test_default_memory_limit_fits_the_machine():
    from distributed.system import MEMORY_LIMIT

    for workers in (1, 2, 8, 32):
        assert _memory_limit(ClusterOptions(workers=workers)) * workers <= MEMORY_LIMIT


# ----------------------------------------------------------------------------- 4. stale rows
def test_path_that_failed_once_and_later_holds_a_good_file(tmp_path):
    music = tmp_path / "music"
    music.mkdir()
    bad = music / "song.mp3"
    bad.write_text("not audio yet")
    good_twin = write_audio(music / "twin.wav", tone_mix(2.0, seed=5))
    catalog = tmp_path / "cat"
    summary, _ = analyze([music], catalog, pipeline=_pipeline(tmp_path), cluster=OPTS)
    assert set(_errors_by_name(catalog)) == {"song.mp3"}
    assert_accounted(catalog, [music], summary)
    # The same path now holds a good file: its old error row must go.
    bad.unlink()
    write_audio(music / "song.mp3", tone_mix(2.0, seed=6))
    summary2, _ = analyze([music], catalog, pipeline=_pipeline(tmp_path), cluster=OPTS)
    assert summary2.failed == 0 and not _rows(catalog, "errors")
    assert_accounted(catalog, [music], summary2)
    # A path that failed before and now holds bytes of a track already in the catalog (skipped).
    (music / "later.wav").write_text("garbage")
    analyze([music], catalog, pipeline=_pipeline(tmp_path), cluster=OPTS)
    assert set(_errors_by_name(catalog)) == {"later.wav"}
    shutil.copy(good_twin, music / "later.wav")
    summary3, _ = analyze([music], catalog, pipeline=_pipeline(tmp_path), cluster=OPTS)
    assert summary3.analyzed == 0 and summary3.failed == 0 and not _rows(catalog, "errors")
    assert_accounted(catalog, [music], summary3)


def test_duplicate_paths_of_a_failed_track_are_errors_too(tmp_path):
    music = tmp_path / "music"
    music.mkdir()
    # Same (truncated) bytes under two names: one track, which fails; both paths are errors.
    full = write_audio(tmp_path / "full.flac", tone_mix(6.0, seed=1)).read_bytes()
    (music / "one.flac").write_bytes(full[: len(full) // 3])
    (music / "two.flac").write_bytes(full[: len(full) // 3])
    summary, _ = analyze([music], tmp_path / "cat", pipeline=_pipeline(tmp_path), cluster=OPTS)
    errors = _errors_by_name(tmp_path / "cat")
    assert set(errors) == {"one.flac", "two.flac"}
    assert {e["stage"] for e in errors.values()} == {"decode", "duplicate"}
    assert summary.failed == 2
    assert_accounted(tmp_path / "cat", [music], summary)


# ----------------------------------------------------------------------------- 5. input expansion
def test_symlink_loops_terminate_and_folder_links_are_followed(tmp_path):
    root = tmp_path / "lib"
    (root / "a").mkdir(parents=True)
    (root / "a" / "1.wav").write_bytes(b"x")
    (root / "a" / "loop").symlink_to(root)  # a link back to the top
    (root / "self").symlink_to(".")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "2.flac").write_bytes(b"x")
    (root / "linked").symlink_to(elsewhere)  # a folder link: followed
    started = time.perf_counter()
    walked = expand([root]).paths
    globbed = expand([str(root / "**" / "*.wav")]).paths
    both = expand([str(root / "**")]).paths
    assert time.perf_counter() - started < 10
    assert [Path(p).name for p in walked] == ["1.wav", "2.flac"]
    assert [Path(p).name for p in globbed] == ["1.wav"]
    assert {Path(p).name for p in both} >= {"1.wav", "2.flac"}


def test_unreadable_subfolder_is_reported(tmp_path):
    base = Path("/tmp") / f"mirflow-perm-{os.getpid()}"
    shutil.rmtree(base, ignore_errors=True)
    (base / "open").mkdir(parents=True)
    (base / "locked").mkdir()
    (base / "open" / "a.wav").write_bytes(b"x")
    (base / "locked" / "b.wav").write_bytes(b"x")
    os.chmod(base, 0o755)
    os.chmod(base / "locked", 0)
    code = (
        "import json, os\n"
        "from mirflow.pipeline.inputs import expand\n"
        # root lists anything: import first, then drop to nobody
        "if os.geteuid() == 0: os.setgid(65534); os.setuid(65534)\n"
        f"e = expand([{str(base)!r}])\n"
        "print(json.dumps({'paths': e.paths, 'problems': [[p.path, p.message] for p in e.problems]}))\n"
    )
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    finally:
        os.chmod(base / "locked", 0o755)
        shutil.rmtree(base, ignore_errors=True)
    if os.geteuid() != 0 and out.returncode != 0:
        pytest.skip("cannot drop privileges here")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert [Path(p).name for p in got["paths"]] == ["a.wav"]
    assert got["problems"] == [[str(base / "locked"), "cannot list folder: Permission denied"]]


def test_empty_inputs_are_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no music here")
    for folder in ("empty", "notes"):
        with pytest.raises(ConfigError, match="holds no audio files"):
            expand([tmp_path / folder])
    out = subprocess.run([sys.executable, "-m", "mirflow", "analyze", str(tmp_path / "empty"),
                          "--catalog", str(tmp_path / "cat")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "holds no audio files" in out.stderr
    assert "Traceback" not in out.stderr


# ----------------------------------------------------------------------------- 6. dead workers and hashing
def test_hash_results_are_released_before_analysis(tmp_path):
    from distributed import default_client

    music = tmp_path / "music"
    for i in range(70):  # three hash batches
        write_audio(music / f"t{i:02d}.wav", tone_mix(0.3, freqs=(200.0 + i, 300.0), seed=i))
    held: list[list[str]] = []

    def look(stage, done, total):
        if stage == "analyze" and done == 0:
            client = default_client()
            deadline = time.time() + 10
            while True:  # releases reach the scheduler asynchronously
                keys = client.run_on_scheduler(
                    lambda dask_scheduler: [str(k) for k in dask_scheduler.tasks if "hash_paths" in str(k)])
                if not keys or time.time() > deadline:
                    break
                time.sleep(0.1)
            held.append(keys)

    summary, _ = analyze([music], tmp_path / "cat", pipeline=_pipeline(tmp_path), cluster=OPTS, progress=look)
    assert held == [[]], f"hash results still held by the cluster: {held}"
    assert summary.analyzed == 70
    assert_accounted(tmp_path / "cat", [music], summary)


# ----------------------------------------------------------------------------- 7. manifests
def test_bad_manifests_give_clear_messages_or_error_rows(tmp_path):
    music = tmp_path / "music"
    write_audio(music / "a.wav", tone_mix(1.0, seed=1))
    latin_name = b"B\xe9b\xe9 sings.wav"  # a latin-1 file name on disk
    sf.write(os.path.join(os.fsencode(music), latin_name), tone_mix(1.0, seed=2), 22050)
    write_audio(music / "Ünïcode.wav", tone_mix(1.0, seed=3))

    cases = {
        "empty.csv": (b"", "is empty"),
        "blank.txt": (b"\n\n# only a comment\n", "lists no paths"),
        "nopath.csv": (b"file,genre\na.wav,x\n", "no 'path' column"),
        "broken.csv": (b'path,genre\n"a.wav,x\nb.wav,"y\n"c', "not a readable csv"),
        "binary.parquet": (b"PAR1 this is not parquet", "not a readable parquet"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ConfigError, match=message):
            expand([tmp_path / name])
        out = subprocess.run([sys.executable, "-m", "mirflow", "analyze", str(tmp_path / name),
                              "--catalog", str(tmp_path / "never")], capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and "Traceback" not in out.stderr and "mirflow: error:" in out.stderr, name

    # A latin-1 playlist with relative paths (against the playlist's folder), one naming a
    # latin-1 file, one a UTF-8 name written in latin-1, a URL and a comment.
    m3u = music / "list.m3u"
    m3u.write_bytes(b"#EXTM3U\n#EXTINF:1,A\na.wav\n" + latin_name + b"\n" + "Ünïcode.wav".encode("latin-1")
                    + b"\nhttp://radio.example/stream\n")
    # A CSV with an empty cell.
    csv = tmp_path / "tracks.csv"
    csv.write_text(f"path,genre\n{music / 'a.wav'},x\n,y\n")
    expansion = expand([m3u, csv])
    assert [Path(p).name for p in expansion.paths] == ["a.wav", os.fsdecode(latin_name), "Ünïcode.wav"]
    assert all(os.path.exists(p) for p in expansion.paths)
    assert [(Path(p.path).name, p.message) for p in expansion.problems] == [
        ("list.m3u:6", "not a local file path or an object-storage URL: http://radio.example/stream"),
        ("tracks.csv:3", "empty path in the manifest"),
    ]
    catalog = tmp_path / "cat"
    summary, _ = analyze([m3u, csv], catalog, pipeline=_pipeline(tmp_path), cluster=OPTS)
    assert summary.analyzed == 3 and summary.input_problems == 2
    stages = {Path(r["path"]).name: r["stage"] for r in _rows(catalog, "errors")}
    assert stages == {"list.m3u:6": "input", "tracks.csv:3": "input"}
    assert_accounted(catalog, [m3u, csv], summary)


# ----------------------------------------------------------------------------- 8. exposure
def test_dashboard_listens_on_localhost_only():
    from mirflow.pipeline.runner import _start

    client, cluster = _start(ClusterOptions(workers=1, worker_lifetime=None))
    try:
        port = cluster.scheduler.http_server.port
        assert client.dashboard_link.startswith("http://127.0.0.1:")
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        try:
            outward = socket.gethostbyname(socket.gethostname())
        except OSError:
            outward = None
        if outward and not outward.startswith("127."):
            with pytest.raises(OSError):
                socket.create_connection((outward, port), timeout=2).close()
    finally:
        client.close()
        cluster.close()
