"""Catalogs and inputs in object storage, against a real S3 server (moto's server mode) the tests start.

The server runs as its own process on a free local port; mirflow reaches it
through the standard ``AWS_ENDPOINT_URL`` variable, exactly as it would reach
MinIO or AWS, and the Dask workers (separate processes) inherit it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
from accounting import assert_accounted
from conftest import tone_mix, write_audio

pytest.importorskip("s3fs")
pytest.importorskip("moto")

from mirflow.catalog import Catalog  # noqa: E402
from mirflow.catalog.compact import CRASH_ENV  # noqa: E402
from mirflow.errors import MirflowError  # noqa: E402
from mirflow.pipeline.runner import ClusterOptions, analyze  # noqa: E402
from mirflow.query import connect, read_table, to_dask  # noqa: E402

pytestmark = pytest.mark.slow

PIPELINE = """
name: s3test
version: 1
decode: {max_duration_s: 40}
runtime: {timeout_s: 120, retries: 1}
extractors:
  - metadata
  - name: loudness
    params: {backend: pyloudnorm}
  - name: rhythm
    params: {backend: librosa}
"""

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server():
    """A real S3 endpoint (moto in server mode, its own process) and the variables that point at it."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("moto's S3 server did not start")
            time.sleep(0.1)
    env = {**CREDENTIALS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.fixture()
def bucket(s3_server):
    """A fresh bucket: ``(s3fs filesystem, name)``."""
    import fsspec

    fs = fsspec.filesystem("s3")
    name = f"mirflow-{uuid.uuid4().hex[:10]}"
    fs.mkdir(name)
    fs.invalidate_cache()
    return fs, name


def _upload_corpus(fs, bucket: str, tmp_path, n: int, seconds: float = 4.0) -> str:
    """``n`` generated tracks (wav/flac/ogg/mp3), a copy of one, a corrupt file and a text file, under a prefix."""
    local = tmp_path / "upload"
    formats = ["wav", "flac", "ogg", "mp3"]
    for i in range(n):
        y = tone_mix(seconds, freqs=(180.0 + 15 * i, 270.0 + 10 * i), seed=i)
        write_audio(local / f"album {i % 2}" / f"t{i:02d}.{formats[i % 4]}", y)
    (local / "junk.flac").write_bytes(b"not audio at all" * 10)
    (local / "notes.txt").write_text("not an input")
    fs.put(str(local) + "/", f"{bucket}/music/", recursive=True)
    fs.invalidate_cache()
    return f"s3://{bucket}/music/"


def _pipeline(tmp_path):
    path = tmp_path / "s3test.yaml"
    path.write_text(PIPELINE)
    return str(path)


def test_analyze_s3_inputs_into_s3_catalog_and_query(tmp_path, bucket):
    fs, name = bucket
    n = 6
    inputs = _upload_corpus(fs, name, tmp_path, n)
    fs.copy(f"{name}/music/album 0/t00.wav", f"{name}/music/copy of t00.wav")  # the same bytes twice
    catalog = f"s3://{name}/catalog"
    opts = ClusterOptions(workers=2, dashboard=False, worker_lifetime=None)
    summary, plan = analyze([inputs], catalog, pipeline=_pipeline(tmp_path), cluster=opts, progress=None)

    assert len(plan.paths) == n + 2 and all(p.startswith(f"s3://{name}/music/") for p in plan.paths)
    assert summary.analyzed == n and summary.failed == 1  # junk.flac
    accounted = assert_accounted(catalog, [inputs], summary)
    assert f"s3://{name}/music/junk.flac" in accounted["failed"]
    assert f"s3://{name}/music/copy of t00.wav" in accounted["tracked"]  # a duplicate is a track, not an error

    # Everything is in the bucket, nothing on the local disk, no temporary objects.
    keys = fs.find(f"{name}/catalog")
    assert any(k.endswith("manifest.json") for k in keys)
    assert not [k for k in keys if k.endswith(".tmp")]
    assert len([k for k in keys if "/tracks/" in k]) == n

    # Readers: DuckDB views, pandas, Dask, and the per-track long tables.
    con = connect(catalog)
    assert con.execute("select count(*), count(distinct track_id) from tracks").fetchone() == (n, n)
    assert con.execute("select count(*) from tracks where tempo_bpm is not null").fetchone()[0] == n
    beats = con.execute("select count(distinct track_id) from beats").fetchone()[0]
    assert beats == n
    errors = read_table(catalog, "errors")
    assert errors["path"].tolist() == [f"s3://{name}/music/junk.flac"] and errors["stage"].iloc[0] in ("probe", "decode")
    assert to_dask(catalog, "tracks").compute()["track_id"].nunique() == n

    # A second run reuses every hash (the objects' ETags are unchanged) and analyzes nothing.
    again, plan2 = analyze([inputs], catalog, pipeline=_pipeline(tmp_path), cluster=opts, progress=None)
    assert again.analyzed == 0 and again.skipped == n
    assert_accounted(catalog, [inputs], again)

    # An object rewritten with other audio is analyzed anew; its old analysis stays in tracks (history,
    # by track id) and leaves current_tracks, so every path is listed once.
    write_audio(tmp_path / "new.flac", tone_mix(4.0, freqs=(500.0, 750.0), seed=99))
    fs.put(str(tmp_path / "new.flac"), f"{name}/music/album 1/t01.flac")
    fs.invalidate_cache()
    third, _ = analyze([inputs], catalog, pipeline=_pipeline(tmp_path), cluster=opts, progress=None)
    assert third.analyzed == 1
    assert_accounted(catalog, [inputs], third)
    con = connect(catalog)
    assert con.execute("select count(*) from tracks").fetchone()[0] == n + 1
    assert con.execute("select count(*), count(distinct path) from current_tracks").fetchone() == (n, n)


def test_cli_query_and_damaged_part_on_s3(tmp_path, bucket):
    fs, name = bucket
    inputs = _upload_corpus(fs, name, tmp_path, 3, seconds=3.0)
    catalog = f"s3://{name}/cat"
    cmd = [sys.executable, "-m", "mirflow"]
    out = subprocess.run([*cmd, "analyze", inputs, "--catalog", catalog, "--pipeline", _pipeline(tmp_path),
                          "--workers", "1", "--no-progress", "--no-dashboard"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    q = subprocess.run([*cmd, "query", catalog, "select count(*) as n from tracks"],
                       capture_output=True, text=True, timeout=120)
    assert q.returncode == 0 and "3" in q.stdout, q.stdout + q.stderr
    refused = subprocess.run([*cmd, "query", catalog, f"copy tracks to '{tmp_path}/x.csv'"],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "only queries" in refused.stderr

    # A part cut short by another tool: readers leave it out, the next run quarantines and re-analyzes it.
    part = next(k for k in fs.find(f"{name}/cat/tracks") if k.endswith(".parquet"))
    fs.pipe_file(part, fs.cat_file(part)[:40])
    fs.invalidate_cache()
    assert connect(catalog).execute("select count(*) from tracks").fetchone()[0] == 2
    summary, _ = analyze([inputs], catalog, pipeline=_pipeline(tmp_path),
                         cluster=ClusterOptions(workers=1, dashboard=False, worker_lifetime=None), progress=None)
    assert summary.analyzed == 1
    assert connect(catalog).execute("select count(*) from tracks").fetchone()[0] == 3
    assert fs.find(f"{name}/cat/_quarantine")

    # Compaction on S3: the parts fold into one object per table, every row still once.
    before = connect(catalog).execute("select track_id, tempo_bpm from tracks order by track_id").fetchall()
    compacted = subprocess.run([*cmd, "compact", catalog], capture_output=True, text=True, timeout=120)
    assert compacted.returncode == 0, compacted.stdout + compacted.stderr
    fs.invalidate_cache()
    assert not [k for k in fs.find(f"{name}/cat/tracks") if "/_compacted/" not in k]
    assert not fs.exists(f"{name}/cat/.compact.lock")
    assert connect(catalog).execute("select track_id, tempo_bpm from tracks order by track_id").fetchall() == before
    assert len(read_table(catalog, "tracks")) == 3 and to_dask(catalog, "beats")["track_id"].nunique().compute() == 3

    info = subprocess.run([*cmd, "info", catalog], capture_output=True, text=True, timeout=120)
    assert info.returncode == 0 and catalog in info.stdout, info.stdout + info.stderr
    track = before[0][0]
    show = subprocess.run([*cmd, "show", catalog, track[:12]], capture_output=True, text=True, timeout=120)
    assert show.returncode == 0 and track in show.stdout, show.stdout + show.stderr

    # Work that needs a local file system says so instead of failing half-way.
    report = subprocess.run([*cmd, "report", catalog], capture_output=True, text=True, timeout=120)
    assert report.returncode == 2 and "object storage" in report.stderr, report.stderr


def test_reads_in_object_storage_release_every_file_before_they_return(tmp_path, bucket, monkeypatch):
    """No Arrow thread still holds a file Arrow reads through Python once a read has returned.

    A pool thread that drops such a file while the interpreter exits aborts
    the process (exit -6, see ``mirflow.catalog.layout.python_backed``): with
    ``pq.read_table`` between one read in seven and one in three left its file to a pool thread
    (three runs of 200 reads of a local file through the same handler, stop 33).
    """
    import weakref

    import pyarrow as pa
    import pyarrow.fs as pafs

    from mirflow.catalog.compact import compact
    from mirflow.query.inspect import catalog_info, read_track_part

    fs, name = bucket
    inputs = _upload_corpus(fs, name, tmp_path, 2, seconds=3.0)
    catalog = f"s3://{name}/cat"
    analyze([inputs], catalog, pipeline=_pipeline(tmp_path), progress=None,
            cluster=ClusterOptions(workers=1, dashboard=False, worker_lifetime=None))
    opened: list[weakref.ref] = []

    class Handle:
        # What Arrow holds of an opened file, and nothing else does: it dies when Arrow lets go (the
        # s3fs file itself sits in reference cycles, so its own lifetime would say nothing).
        def __init__(self, raw):
            self.raw = raw

        def __getattr__(self, name):
            return getattr(self.raw, name)

    class Recording(pafs.FSSpecHandler):
        def open_input_file(self, path):
            handle = Handle(self.fs.open(path, mode="rb"))
            opened.append(weakref.ref(handle))
            return pa.PythonFile(handle, mode="r")

    monkeypatch.setattr(pafs, "FSSpecHandler", Recording)

    def released(what: str) -> None:
        assert opened, f"{what}: read nothing through the recording handler"
        alive = sum(ref() is not None for ref in opened)
        assert alive == 0, f"{what}: {alive} of {len(opened)} files still open after the read returned"
        opened.clear()

    for state in ("loose", "compacted"):
        cat = Catalog(catalog)
        ids = cat.read_table("tracks", columns=["track_id"]).column("track_id").to_pylist()
        released(f"{state}: Catalog.read_table")
        assert len(ids) == 2
        assert cat.rows_of("beats", ids[0]).num_rows > 0
        released(f"{state}: Catalog.rows_of")
        assert cat.rows_of_many("beats", ids).num_rows > 0
        released(f"{state}: Catalog.rows_of_many")
        assert read_track_part(cat, "tracks", ids[1]) is not None
        released(f"{state}: read_track_part")
        assert len(read_table(catalog, "beats")) > 0
        released(f"{state}: mirflow.query.read_table")
        assert to_dask(catalog, "tracks")["track_id"].nunique().compute(scheduler="sync") == 2
        released(f"{state}: mirflow.query.to_dask")
        assert catalog_info(catalog).tables
        released(f"{state}: catalog_info")
        con = connect(catalog)
        assert con.execute("select count(*) from beats").fetchone()[0] > 0
        con.close()
        released(f"{state}: connect")
        if state == "loose":
            compact(catalog)
            released("compact")
            fs.invalidate_cache()


def test_killed_run_on_s3_resumes_without_duplicates_or_gaps(tmp_path, bucket):
    fs, name = bucket
    n = 10
    inputs = _upload_corpus(fs, name, tmp_path, n, seconds=3.0)
    catalog = f"s3://{name}/catalog"
    slow = tmp_path / "slow.yaml"
    slow.write_text(PIPELINE.replace("name: s3test", "name: s3slow") + """  - name: test_misbehave
    params: {sleep_s: 0.6}
""")
    from conftest import kill_once_landed, plugin_env

    env = plugin_env()
    cmd = [sys.executable, "-m", "mirflow", "analyze", inputs, "--catalog", catalog, "--pipeline", str(slow),
           "--workers", "2", "--no-progress", "--no-dashboard"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, env=env)

    def landed() -> int:
        fs.invalidate_cache()
        try:
            return len([k for k in fs.find(f"{name}/catalog/tracks") if k.endswith(".parquet")])
        except FileNotFoundError:
            return 0

    kill_once_landed(proc, landed, 2)
    before = landed()
    good = n  # and junk.flac fails
    assert 2 <= before < good, "the kill must land mid-run"

    out = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"analyzed:  {good - before}   skipped (already in catalog): {before}" in out.stdout, out.stdout
    con = connect(catalog)
    assert con.execute("select count(*), count(distinct track_id) from tracks").fetchone() == (good, good)
    # Every committed track has its long-table rows exactly once (one beats part per track).
    per_track = con.execute("select count(distinct track_id) from beats").fetchone()[0]
    assert per_track == good
    assert_accounted(catalog, [inputs])


def test_object_inputs_that_fail_are_errors_not_crashes(tmp_path, bucket):
    fs, name = bucket
    fs.pipe_file(f"{name}/odd/empty.wav", b"")
    write_audio(tmp_path / "ok.wav", tone_mix(3.0, seed=5))
    fs.put(str(tmp_path / "ok.wav"), f"{name}/odd/ok.wav")
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"s3://{name}/odd/ok.wav\ns3://{name}/odd/missing.wav\nhttps://example.org/a.mp3\n")
    catalog = tmp_path / "local-catalog"  # object inputs, local catalog
    summary, plan = analyze([f"s3://{name}/odd/", manifest], catalog, pipeline=_pipeline(tmp_path),
                            cluster=ClusterOptions(workers=1, dashboard=False, worker_lifetime=None), progress=None)
    errors = read_table(catalog, "errors").set_index("path")
    assert errors.loc[f"s3://{name}/odd/empty.wav", "message"] == "empty file (0 bytes)"
    assert "vanished" in errors.loc[f"s3://{name}/odd/missing.wav", "message"] or \
        "read" in errors.loc[f"s3://{name}/odd/missing.wav", "message"]
    assert errors.loc[f"{manifest}:3", "stage"] == "input"
    assert summary.analyzed == 1
    assert Catalog(catalog).read_table("tracks").num_rows == 1
    with pytest.raises(MirflowError, match="does not exist"):
        analyze([f"s3://{name}/nothing-here/"], catalog, pipeline=_pipeline(tmp_path), dry_run=True)
    assert np.isfinite(read_table(catalog, "tracks")["loudness_integrated_lufs"].iloc[0])


def test_storage_failures_are_one_clear_error_line(tmp_path, s3_server):
    """A missing bucket or missing credentials: one `mirflow: error:` line and exit 2, not a traceback."""
    wav = write_audio(tmp_path / "a.wav", tone_mix(2.0, seed=3))
    cmd = [sys.executable, "-m", "mirflow"]
    out = subprocess.run([*cmd, "analyze", str(wav), "--catalog", "s3://no-such-bucket/cat", "--workers", "1",
                          "--pipeline", _pipeline(tmp_path), "--no-progress", "--no-dashboard"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "mirflow: error: cannot write to s3://no-such-bucket/cat" in out.stderr and "bucket" in out.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_EC2_METADATA_DISABLED="true")
    out = subprocess.run([*cmd, "query", "s3://some-bucket/cat", "select 1"], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "NoCredentialsError" in out.stderr and "AWS_ACCESS_KEY_ID" in out.stderr


# The steps where S3 differs from a folder: new objects written but not committed, the one-PUT commit,
# conditional deletes half done (tests/test_compaction.py kills the shared protocol at all six steps).
@pytest.mark.parametrize("step", ["written", "committed", "deleting"])
def test_compaction_killed_at_each_step_on_s3_keeps_every_row_once(tmp_path, s3_catalog, step):
    """A compaction killed at a step leaves every row readable once; the next one takes over its lock."""
    fs, source, expected = s3_catalog
    catalog = f"{source}-{step}"
    fs.copy(source.removeprefix("s3://") + "/", catalog.removeprefix("s3://") + "/", recursive=True)
    fs.invalidate_cache()
    code = "import sys; from mirflow.catalog.compact import compact; compact(sys.argv[1])"
    killed = subprocess.run([sys.executable, "-c", code, catalog], env={**os.environ, CRASH_ENV: step},
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == 99, killed.stderr
    assert _rows_seen(catalog) == expected
    assert fs.exists(catalog.removeprefix("s3://") + "/.compact.lock")  # left by the killed process
    done = subprocess.run([sys.executable, "-c", code, catalog], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    fs.invalidate_cache()
    assert _rows_seen(catalog) == expected
    loose = [k for k in fs.find(catalog.removeprefix("s3://")) if k.endswith(".parquet") and "/_compacted/" not in k]
    assert not loose


@pytest.fixture(scope="module")
def s3_catalog(s3_server, tmp_path_factory):
    """A small analyzed catalog in S3 (not compacted) and the rows each reader must see."""
    import fsspec

    fs = fsspec.filesystem("s3")
    name = f"mirflow-{uuid.uuid4().hex[:10]}"
    fs.mkdir(name)
    root = tmp_path_factory.mktemp("s3cat")
    for i in range(3):
        write_audio(root / "music" / f"t{i}.wav", tone_mix(3.0, freqs=(200.0 + 20 * i, 300.0), seed=i))
    (root / "music" / "broken.wav").write_bytes(b"RIFF not really a wave file" * 20)
    catalog = f"s3://{name}/catalog"
    analyze([root / "music"], catalog, pipeline=_pipeline(root), progress=None,
            cluster=ClusterOptions(workers=1, dashboard=False, worker_lifetime=None))
    return fs, catalog, _rows_seen(catalog)


def _rows_seen(catalog: str) -> dict[str, object]:
    """Each table's rows through SQL, pandas and the catalog reader; a row seen twice would show."""
    con = connect(catalog)
    out = {}
    for table, key in (("tracks", "track_id"), ("beats", "track_id, time_s"), ("files", "path"), ("errors", "path")):
        sql = sorted(con.execute(f"select {key} from {table}").fetchall())
        frame = read_table(catalog, table)
        pandas = sorted(map(tuple, frame[[k.strip() for k in key.split(",")]].itertuples(index=False)))
        assert sql == pandas, table
        out[table] = sql
    con.close()
    return out


def test_one_compaction_at_a_time_on_s3(s3_catalog, monkeypatch):
    """The lock object keeps a second compaction out while the holder lives and refreshes it."""
    from mirflow.catalog import remote
    from mirflow.catalog.compact import CompactionBusy, compact, compaction_lock

    fs, catalog, expected = s3_catalog
    monkeypatch.setattr(remote, "LOCK_HEARTBEAT_S", 0.2)
    cat = Catalog(catalog)
    with compaction_lock(cat, wait=False):
        first = fs.info(catalog.removeprefix("s3://") + "/.compact.lock")["ETag"]
        assert cat.compaction_running()
        with pytest.raises(CompactionBusy, match="another compaction"):
            compact(catalog)
        time.sleep(1.0)
        fs.invalidate_cache()
        assert fs.info(catalog.removeprefix("s3://") + "/.compact.lock")["ETag"] != first  # refreshed
    assert not cat.compaction_running()
    assert _rows_seen(catalog) == expected
