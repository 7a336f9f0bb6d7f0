"""The read-only HTTP API (mirflow.serve) through a real uvicorn server on 127.0.0.1.

One server (port 0, in a background thread) serves a private copy of the
shared ``downstream_catalog`` for the whole module; requests are real HTTP
(urllib, http.client, raw sockets where the test needs to control the body).
Expected values come from the catalog's own tables, never from constants.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import uvicorn

from mirflow.labels import parse_key
from mirflow.query import read_table
from mirflow.serve import create_app
from mirflow.serve.analysis import AnalysisFailed, AnalysisPool

#: A small upload limit, so the oversized-upload test moves little data; the
#: catalog's own WAV files (about 0.6 MB) fit under it.
MAX_UPLOAD_BYTES = 1024 * 1024


class Served:
    def __init__(self, base: str, port: int, catalog: Path, uploads: Path, tracks) -> None:
        self.base, self.port, self.catalog, self.uploads, self.tracks = base, port, catalog, uploads, tracks

    def request(self, method: str, path: str, *, body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, object]:
        """(status, parsed JSON); rejects NaN/Infinity tokens, which are not JSON."""
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        return status, json.loads(raw, parse_constant=_no_constants) if raw else None

    def get(self, path: str, **params) -> tuple[int, object]:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        return self.request("GET", path + (f"?{query}" if query else ""))

    def raw_get(self, raw_path: str) -> tuple[int, bytes]:
        """GET with the path sent byte for byte (no client-side normalisation)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.putrequest("GET", raw_path, skip_accept_encoding=True)
            conn.endheaders()
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def upload(self, data: bytes, *, filename: str = "song.wav", field: str = "file", query: str = "",
               timeout: float = 180) -> tuple[int, object]:
        body, ctype = multipart(data, filename=filename, field=field)
        return self.request("POST", "/similar" + query, body=body, headers={"Content-Type": ctype},
                            timeout=timeout)


def _no_constants(token: str):
    raise ValueError(f"response holds {token}, which is not JSON")


def multipart(data: bytes, *, filename: str, field: str = "file") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def served(downstream_catalog, tmp_path_factory):
    source, _ = downstream_catalog
    root = tmp_path_factory.mktemp("serve")
    catalog = root / "catalog"
    shutil.copytree(source, catalog)
    uploads = root / "uploads"
    uploads.mkdir()
    before = _snapshot(catalog)
    app = create_app(catalog, max_upload_bytes=MAX_UPLOAD_BYTES, upload_dir=uploads, analysis_timeout_s=240)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    tracks = read_table(catalog, "tracks")
    yield Served(f"http://127.0.0.1:{port}", port, catalog, uploads, tracks)
    server.should_exit = True
    thread.join(timeout=30)
    assert not thread.is_alive(), "server did not shut down"
    assert _snapshot(catalog) == before, "the server wrote into the catalog"


# --------------------------------------------------------------------- basics
def test_health_and_openapi(served):
    status, health = served.get("/health")
    assert status == 200 and health["status"] == "ok"
    assert health["tracks"] == len(served.tracks)
    assert health["duckdb_locked_down"] is True
    assert health["max_upload_bytes"] == MAX_UPLOAD_BYTES
    status, spec = served.get("/openapi.json")
    assert status == 200
    assert {"/health", "/tracks", "/tracks/{track_id}", "/tracks/{track_id}/similar", "/similar"} <= set(spec["paths"])
    params = {p["name"]: p for p in spec["paths"]["/tracks"]["get"]["parameters"]}
    assert {"tempo_min", "tempo_max", "key", "camelot", "limit", "offset"} <= set(params)
    assert all(p.get("description") for p in params.values())
    upload = spec["paths"]["/similar"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload
    # Column descriptions come from the schema.
    track_schema = spec["components"]["schemas"]["Track"]["properties"]
    assert "BPM" in track_schema["tempo_bpm"]["description"]


def test_track_by_id_matches_the_catalog(served):
    for _, expected in served.tracks.sample(3, random_state=0).iterrows():
        status, row = served.get(f"/tracks/{expected.track_id}")
        assert status == 200
        assert set(row) >= set(served.tracks.columns)
        assert row["track_id"] == expected.track_id and row["path"] == expected.path
        assert row["key"] == expected.key and row["key_camelot"] == expected.key_camelot
        assert row["tempo_bpm"] == pytest.approx(expected.tempo_bpm)
        # Vectors as lists of the declared size; timestamps ISO 8601 in UTC.
        assert isinstance(row["mfcc_mean"], list) and len(row["mfcc_mean"]) == len(expected.mfcc_mean)
        assert isinstance(row["chords_top"], list)
        assert row["analyzed_at"].startswith(expected.analyzed_at.isoformat()[:19])
        for column, value in expected.items():
            if isinstance(value, float) and np.isnan(value):
                assert row[column] is None, column


def test_unknown_and_malformed_track_ids(served):
    missing = "0" * 32
    assert missing not in set(served.tracks.track_id)
    status, body = served.get(f"/tracks/{missing}")
    assert status == 404 and missing in body["detail"]
    status, _ = served.get(f"/tracks/{missing}/similar")
    assert status == 404
    real = served.tracks.track_id.iloc[0]
    for bad in (real.upper(), real[:-1], real + "0", "g" * 32, "%20" + real[3:]):
        status, body = served.get(f"/tracks/{bad}")
        assert status == 422, bad
        assert isinstance(body["detail"], str) and "track_id" in body["detail"]


@pytest.mark.parametrize("raw_path", [
    "/tracks/..%2F..%2Fetc%2Fpasswd", "/tracks/%2e%2e", "/tracks/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/tracks/../../etc/passwd", "/tracks/%2Fetc%2Fpasswd", "/tracks//etc/passwd", "/tracks/~root",
    "/tracks/..%5C..%5Cwindows", "/tracks/%00", "/tracks/{}/similar/../../../etc/passwd",
])
def test_path_tricks_are_refused(served, raw_path):
    raw_path = raw_path.replace("{}", served.tracks.track_id.iloc[0])
    status, body = served.raw_get(raw_path)
    assert 400 <= status < 500, (raw_path, status)
    assert b"root:" not in body
    assert "detail" in json.loads(body)


# -------------------------------------------------------------------- filters
def _ids(served, **params) -> tuple[int, list[dict]]:
    status, page = served.get("/tracks", limit=1000, **params)
    assert status == 200, page
    assert page["total"] == len(page["items"])
    return page["total"], page["items"]


def test_tempo_filter_honoured_on_every_row(served):
    tempi = served.tracks.tempo_bpm.dropna().sort_values()
    low, high = float(tempi.quantile(0.25)), float(tempi.quantile(0.75))
    total, items = _ids(served, tempo_min=low, tempo_max=high)
    expected = set(served.tracks.track_id[(served.tracks.tempo_bpm >= low) & (served.tracks.tempo_bpm <= high)])
    assert 0 < total < len(served.tracks)
    assert {r["track_id"] for r in items} == expected
    assert all(low <= r["tempo_bpm"] <= high for r in items)
    _, above = _ids(served, tempo_min=high)
    assert {r["track_id"] for r in above} == set(served.tracks.track_id[served.tracks.tempo_bpm >= high])


def test_key_and_camelot_filters_honoured_on_every_row(served):
    key = served.tracks.key.dropna().value_counts().index[0]
    parsed = parse_key(key)
    expected = set(served.tracks.track_id[served.tracks.key == key])
    # Any spelling parse_key reads selects the same tracks.
    for spelling in (key, parsed.jams, parsed.camelot, key.lower()):
        _, items = _ids(served, key=spelling)
        assert {r["track_id"] for r in items} == expected, spelling
        assert all(r["key"] == key for r in items)
    camelot = served.tracks.key_camelot.dropna().value_counts().index[-1]
    _, items = _ids(served, camelot=camelot.lower())
    assert {r["track_id"] for r in items} == set(served.tracks.track_id[served.tracks.key_camelot == camelot])
    assert items and all(r["key_camelot"] == camelot for r in items)
    # Filters combine with AND.
    tempo_min = float(served.tracks.tempo_bpm.median())
    _, both = _ids(served, key=key, tempo_min=tempo_min)
    assert {r["track_id"] for r in both} == set(served.tracks.track_id[
        (served.tracks.key == key) & (served.tracks.tempo_bpm >= tempo_min)])


def test_limit_offset_paging_is_stable_and_complete(served):
    seen: list[str] = []
    offset = 0
    while True:
        status, page = served.get("/tracks", limit=5, offset=offset)
        assert status == 200 and page["total"] == len(served.tracks)
        assert len(page["items"]) <= 5
        if not page["items"]:
            break
        seen += [r["track_id"] for r in page["items"]]
        offset += 5
    assert seen == sorted(served.tracks.track_id)
    status, page = served.get("/tracks", limit=3, offset=len(served.tracks) + 10)
    assert status == 200 and page["items"] == [] and page["total"] == len(served.tracks)


@pytest.mark.parametrize("params", [
    {"limit": 0}, {"limit": 1001}, {"limit": "ten"}, {"offset": -1}, {"offset": 10**20},
    {"tempo_min": "fast"}, {"tempo_min": -5}, {"tempo_max": 5000}, {"tempo_min": "nan"}, {"tempo_max": "inf"},
    {"tempo_min": 150, "tempo_max": 90}, {"key": "H minor"}, {"key": "X"}, {"key": "A minor'; DROP TABLE x; --"},
    {"key": ""}, {"camelot": "13A"}, {"camelot": "8C"}, {"camelot": "A minor"},
])
def test_bad_parameters_are_422_with_a_message(served, params):
    status, body = served.get("/tracks", **params)
    assert status == 422, (params, body)
    assert isinstance(body["detail"], str) and body["detail"]
    status, body = served.get(f"/tracks/{served.tracks.track_id.iloc[0]}/similar", **params)
    assert status == 422 or "limit" in params or "offset" in params


def test_duckdb_is_confined_to_the_catalog(served):
    import duckdb

    from mirflow.serve.store import CatalogStore

    store = CatalogStore(served.catalog)
    try:
        assert store.locked_down
        con = store._cursor()
        with pytest.raises(duckdb.Error):
            con.execute("SELECT * FROM read_csv('/etc/passwd')").fetchall()
        with pytest.raises(duckdb.Error):
            con.execute("SET enable_external_access = true")
        # The catalog itself still reads: the cursor sees the store's summary
        # table, and the locked connection its catalog views (built on Arrow
        # datasets registered on that connection, which cursors cannot see).
        assert con.execute("SELECT count(*) FROM serve_track_summary").fetchone()[0] == len(served.tracks)
        assert store._con.execute("SELECT count(*) FROM tracks").fetchone()[0] == len(served.tracks)
        with pytest.raises(duckdb.Error):
            store._con.execute("SELECT * FROM read_csv('/etc/passwd')").fetchall()
    finally:
        store.close()


# ------------------------------------------------------------------- similar
def test_similar_by_track_id(served):
    query = served.tracks.track_id.iloc[0]
    status, body = served.get(f"/tracks/{query}/similar", k=5)
    assert status == 200, body
    items = body["items"]
    assert [r["rank"] for r in items] == list(range(1, 6))
    assert query not in {r["track_id"] for r in items}
    assert {r["track_id"] for r in items} <= set(served.tracks.track_id)
    scores = [r["score"] for r in items]
    assert scores == sorted(scores, reverse=True)
    # A filter holds on every neighbour.
    camelot = served.tracks.key_camelot.dropna().value_counts().index[0]
    status, body = served.get(f"/tracks/{query}/similar", k=50, camelot=camelot)
    assert status == 200
    expected = set(served.tracks.track_id[served.tracks.key_camelot == camelot]) - {query}
    assert {r["track_id"] for r in body["items"]} == expected
    status, body = served.get(f"/tracks/{query}/similar", k=5, mix="true")
    assert status == 200 and len(body["items"]) <= 5
    assert all(r["key_relation"] is not None for r in body["items"])


# -------------------------------------------------------------------- uploads
def test_garbage_upload_is_a_clear_4xx_and_the_server_keeps_serving(served):
    noise = np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    status, body = served.upload(noise, filename="noise.wav")
    assert 400 <= status < 500, body
    assert "analyze" in body["detail"]
    assert list(served.uploads.iterdir()) == []
    assert served.get("/health")[0] == 200


def test_upload_protocol_errors(served):
    # Not multipart at all.
    status, body = served.request("POST", "/similar", body=b"RIFF....", headers={"Content-Type": "audio/wav"})
    assert status == 415 and "multipart" in body["detail"]
    # Multipart without a `file` field.
    status, body = served.upload(b"RIFF....", field="audio")
    assert status == 422 and "file" in body["detail"]
    # Truncated multipart body.
    full, ctype = multipart(b"x" * 1000, filename="a.wav")
    status, body = served.request("POST", "/similar", body=full[:-20], headers={"Content-Type": ctype})
    assert status == 422
    assert list(served.uploads.iterdir()) == []


def test_oversized_upload_is_refused_while_streaming(served):
    sock = socket.create_connection(("127.0.0.1", served.port), timeout=10)
    try:
        boundary = "b" * 16
        sock.sendall(f"POST /similar HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                     f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode())

        def chunk(data: bytes) -> bytes:
            return f"{len(data):x}\r\n".encode() + data + b"\r\n"

        sock.sendall(chunk(f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                           "filename=\"big.wav\"\r\n\r\n".encode()))
        block = b"\0" * 32768
        for _ in range(MAX_UPLOAD_BYTES // len(block) + 2):  # just past the limit; the body never ends
            sock.sendall(chunk(block))
        response = sock.recv(65536)
        assert response.startswith(b"HTTP/1.1 413"), response[:200]
        # The server stopped reading: far more data than any socket buffer cannot all be sent.
        sent = 0
        sock.settimeout(3)
        with pytest.raises(OSError):
            while sent < 256 * 1024 * 1024:
                sock.sendall(chunk(block))
                sent += len(block)
        assert sent < 64 * 1024 * 1024
    finally:
        sock.close()
    assert list(served.uploads.iterdir()) == []
    # A declared Content-Length over the limit is refused before any body is sent.
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    try:
        conn.putrequest("POST", "/similar")
        conn.putheader("Content-Type", "multipart/form-data; boundary=x")
        conn.putheader("Content-Length", str(100 * MAX_UPLOAD_BYTES))
        conn.endheaders()
        resp = conn.getresponse()
        assert resp.status == 413 and "limit" in json.loads(resp.read())["detail"]
    finally:
        conn.close()
    assert served.get("/health")[0] == 200


@pytest.mark.slow
def test_real_audio_upload_finds_itself_first(served):
    track = served.tracks.sort_values("track_id").iloc[0]
    data = Path(track.path).read_bytes()
    assert len(data) < MAX_UPLOAD_BYTES
    status, body = served.upload(data, filename=Path(track.path).name, query="?k=4")
    assert status == 200, body
    assert body["query"]["track_id"] == track.track_id
    assert body["query"]["key"] == track.key
    assert "warning" not in body["query"]  # same model weights as the catalog's
    items = body["items"]
    assert len(items) == 4
    # The same bytes analyze to the same embedding: the track itself is the nearest.
    assert items[0]["track_id"] == track.track_id and items[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert items[0]["key_relation"] == "same"
    assert list(served.uploads.iterdir()) == []
    # A filter applies to upload queries too.
    status, body = served.upload(data, filename="again.wav", query=f"?k=50&camelot={track.key_camelot}")
    assert status == 200
    assert {r["track_id"] for r in body["items"]} == set(
        served.tracks.track_id[served.tracks.key_camelot == track.key_camelot])


def test_jsonable_values():
    import datetime as dt

    import pandas as pd

    from mirflow.serve.store import jsonable

    when = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)
    value = {"nan": float("nan"), "f32": np.float32(np.inf), "arr": np.array([1.5, np.nan]), "tuple": (1, 2),
             "ts": pd.Timestamp(when), "nat": pd.NaT, "na": pd.NA, "bytes": b"\xff/a", "int": np.int16(3)}
    out = jsonable(value)
    assert out == {"nan": None, "f32": None, "arr": [1.5, None], "tuple": [1, 2], "ts": when.isoformat(),
                   "nat": None, "na": None, "bytes": "/y9h", "int": 3}
    json.dumps(out, allow_nan=False)


# ---------------------------------------------------------- the worker pool
def _crash() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _sleep(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


def test_analysis_pool_survives_a_crash_and_a_timeout():
    import asyncio

    async def scenario() -> list[object]:
        pool = AnalysisPool(timeout_s=3.0)
        out: list[object] = []
        try:
            for fn, args in ((_crash, ()), (_sleep, (30,)), (_sleep, (0,))):
                try:
                    out.append(await pool.run(fn, *args))
                except AnalysisFailed as exc:
                    out.append(exc.status)
        finally:
            pool.close()
        return out

    started = time.monotonic()
    assert asyncio.run(scenario()) == [422, 504, "slept"]
    assert time.monotonic() - started < 25  # the 30-s job was stopped at its 3-s limit


# ----------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_cli_serve_prints_the_url_and_binds_loopback(served):
    proc = subprocess.Popen([sys.executable, "-m", "mirflow", "serve", str(served.catalog), "--port", "0",
                             "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        base = f"http://127.0.0.1:{match.group(1)}"
        with urllib.request.urlopen(f"{base}/health", timeout=30) as resp:
            assert json.loads(resp.read())["tracks"] == len(served.tracks)
        # Its analysis worker process spawns from the CLI's main module too.
        body, ctype = multipart(b"not audio at all" * 100, filename="notes.mp3")
        req = urllib.request.Request(f"{base}/similar", data=body, headers={"Content-Type": ctype})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=120)
        assert err.value.code == 422 and "ProbeError" in json.loads(err.value.read())["detail"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    bad = subprocess.run([sys.executable, "-m", "mirflow", "serve", str(served.catalog / "tracks")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "mirflow: error:" in bad.stderr


# ------------------------------------------------------------------- compacted catalogs
def test_store_reads_a_compacted_catalog(served, tmp_path):
    """After a compaction the part files are gone: tracks come from the compacted files."""
    from mirflow.catalog import Catalog
    from mirflow.catalog.compact import compact
    from mirflow.serve.store import CatalogStore

    compacted = tmp_path / "compacted"
    shutil.copytree(served.catalog, compacted)
    compact(Catalog(compacted))
    assert not Catalog(compacted).parts("tracks"), "the compaction left loose tracks parts"
    loose_store, store = CatalogStore(served.catalog), CatalogStore(compacted)
    try:
        assert store.track_count == loose_store.track_count == len(served.tracks)
        for track_id in served.tracks.track_id:
            assert store.has_track(track_id)
            assert store.get_track(track_id) == loose_store.get_track(track_id)
        missing = "0" * 32
        assert not store.has_track(missing) and store.get_track(missing) is None
        # A removed track (a zero-row tombstone part over its compacted rows) is gone.
        gone = served.tracks.track_id.iloc[0]
        assert Catalog(compacted).remove_part("tracks", gone)
        assert store.get_track(gone) is None and not store.has_track(gone)
    finally:
        store.close()
        loose_store.close()
