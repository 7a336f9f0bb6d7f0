"""Similarity index (mirflow.index) and `mirflow similar`: real FAISS, real Parquet catalogs.

Two kinds of catalog: the shared analyzed ``downstream_catalog`` (24 tracks; copied before an
index is written into it) and synthetic catalogs of clustered random vectors written through
the catalog's own validated writer, with tempi and keys drawn at random.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import mirflow
from mirflow.catalog import Catalog, conform
from mirflow.cli.main import main
from mirflow.index import (
    IndexNotFoundError,
    UnknownEmbeddingError,
    UnknownTrackError,
    build_index,
    index_status,
    key_relation,
    load_index,
    mix_compatible_keys,
    similar,
    tempo_compatible,
    update_index,
)
from mirflow.index import search as index_search
from mirflow.labels import all_keys, parse_key

MIX_RELATIONS = {"same", "relative", "dominant", "subdominant"}


# ----------------------------------------------------------------------------- helpers
def clustered_vectors(n: int, d: int, *, seed: int, n_clusters: int = 40, spread: float = 0.6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(999).standard_normal((n_clusters, d))
    return (centres[rng.integers(0, n_clusters, n)] + spread * rng.standard_normal((n, d))).astype(np.float32)


def write_synthetic(root: Path, vectors: np.ndarray, *, start: int = 0, part: str = "p0",
                    model: str = "musicnn-msd", version: str = "v1", seed: int = 0) -> pd.DataFrame:
    """Tracks with random tempo/key and their vectors, written as one part per table (ids start..)."""
    cat = Catalog(root)
    cat.open_for("default")
    rng = np.random.default_rng(seed + start)
    n = len(vectors)
    ids = [f"{start + i:032x}" for i in range(n)]
    keys = [all_keys()[i] for i in rng.integers(0, 24, n)]
    keys = [None if i % 50 == 7 else k for i, k in enumerate(keys)]  # some tracks without a key
    tempi = rng.uniform(70, 170, n)
    now = dt.datetime.now(dt.timezone.utc)
    tracks = {
        "track_id": ids, "path": [f"/music/t{start + i:06d}.wav" for i in range(n)],
        "file_size_bytes": [1000] * n, "pipeline": ["default"] * n, "pipeline_version": ["x"] * n,
        "mirflow_version": [mirflow.__version__] * n, "analyzed_at": [now] * n,
        "analysis_sample_rate_hz": [22050] * n, "downmix": ["mean"] * n, "lineage": ["{}"] * n,
        "analysis_seconds": [0.0] * n, "tempo_bpm": [None if i % 50 == 3 else float(t) for i, t in enumerate(tempi)],
        "key": [None if k is None else k.mir_eval for k in keys],
        "key_camelot": [None if k is None else k.camelot for k in keys],
    }
    cat.write_part("tracks", part, conform("tracks", tracks, fill_missing=True))
    emb = {"track_id": ids, "model": [model] * n, "model_version": [version] * n,
           "embedding": [v.tolist() for v in vectors]}
    cat.write_part("embeddings", part, conform("embeddings", emb, sizes={"embedding": vectors.shape[1]}),
                   partition=model)
    return pd.DataFrame({"track_id": ids, "tempo_bpm": tracks["tempo_bpm"], "key": tracks["key"]})


def exact_neighbours(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row numbers of the k highest cosine similarities, by numpy (independent of FAISS)."""
    x = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    return np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :k]


def tracks_frame(catalog: Path) -> pd.DataFrame:
    from mirflow.query import read_table

    return read_table(catalog, "tracks").set_index("track_id")


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(autouse=True, scope="module")
def one_faiss_thread():
    # The test machine has two shared cores; OpenMP threads spinning against each other there made
    # IVF-PQ training 6x slower than one thread (measured while writing these tests).
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[Path, np.ndarray, pd.DataFrame]:
    """A catalog of 3000 clustered 48-d vectors with random tempi and keys (no index yet)."""
    root = tmp_path_factory.mktemp("synthetic") / "catalog"
    vectors = clustered_vectors(3000, 48, seed=1)
    meta = write_synthetic(root, vectors)
    return root, vectors, meta


@pytest.fixture()
def synthetic_copy(synthetic, tmp_path):
    root, vectors, meta = synthetic
    shutil.copytree(root, tmp_path / "catalog")
    return tmp_path / "catalog", vectors, meta


@pytest.fixture()
def ds_catalog(downstream_catalog, tmp_path) -> Path:
    """A private copy of the analyzed downstream catalog, to write an index into."""
    shutil.copytree(downstream_catalog[0], tmp_path / "catalog")
    return tmp_path / "catalog"


# ----------------------------------------------------------------------------- harmony
def test_key_relations_follow_the_camelot_wheel():
    seen = set()
    for q in all_keys():
        compatible = set(mix_compatible_keys(q))
        number, letter = int(q.camelot[:-1]), q.camelot[-1]
        for o in all_keys():
            rel = key_relation(q.mir_eval, o.jams)  # any spelling parse_key reads
            seen.add(rel)
            o_number, o_letter = int(o.camelot[:-1]), o.camelot[-1]
            step = (o_number - number) % 12
            wheel_neighbour = (o_letter == letter and step in (0, 1, 11)) or (o_number == number)
            assert (o.mir_eval in compatible) == wheel_neighbour, (q, o)
            assert (rel in MIX_RELATIONS) == wheel_neighbour, (q, o, rel)
            if o.tonic == q.tonic and o.mode != q.mode:
                assert rel == "parallel"
    assert seen == {"same", "relative", "dominant", "subdominant", "parallel", "other"}
    assert key_relation("C major", "G major") == "dominant" and key_relation("C major", "F major") == "subdominant"
    assert key_relation(None, "C major") is None and key_relation("C major", float("nan")) is None
    assert tempo_compatible(120.0, 126.0) and not tempo_compatible(120.0, 128.0)
    assert tempo_compatible(120.0, 61.0) and tempo_compatible(120.0, 236.0) and not tempo_compatible(120.0, None)


# ----------------------------------------------------------------------------- recall and storage
@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_recall_at_10_against_exact(synthetic_copy, kind):
    root, vectors, meta = synthetic_copy
    info = build_index(root, kind=kind)
    assert info.kind == kind and info.fallback is None and info.count == len(vectors) and info.dimension == 48
    assert info.index_type == {"hnsw": "IndexHNSWFlat", "ivfpq": "IndexRefineFlat(IndexIVFPQ)"}[kind]
    index = load_index(root)
    assert not index.stale and len(index) == len(vectors)
    # Held-out queries from the same clusters: none of them is in the index.
    queries = clustered_vectors(200, 48, seed=77)
    truth = exact_neighbours(vectors, queries, 10)
    _, found = index.search(queries, 10)
    row_of = {t: i for i, t in enumerate(meta["track_id"])}
    hits = sum(len({row_of[t] for t in f} & set(t_rows)) for f, t_rows in zip(found, truth, strict=True))
    recall = hits / truth.size
    assert recall >= 0.95, f"{kind} recall@10 {recall:.3f}"


def test_index_files_sidecar_and_atomic_replacement(synthetic_copy):
    root, vectors, meta = synthetic_copy
    build_index(root, kind="hnsw")
    folder = root / "indexes" / "musicnn-msd"
    sidecar = json.loads((folder / "index.json").read_text())
    assert sidecar["embedding"] == "musicnn-msd" and sidecar["model_versions"] == ["v1"]
    assert sidecar["dimension"] == 48 and sidecar["kind"] == "hnsw" and sidecar["count"] == 3000
    assert sidecar["catalog_state"]["count"] == 3000 and sidecar["catalog_state"]["last_run_id"] is None
    assert sidecar["params"]["recall_at_10"] >= 0.95 and sidecar["params"]["target_reached"] is True
    assert sidecar["params"]["efSearch"] >= 16
    # FAISS's own format, readable by FAISS alone; ids in FAISS row order.
    raw = faiss.read_index(str(folder / sidecar["index_file"]))
    assert raw.ntotal == 3000 and raw.d == 48
    ids = pq.read_table(folder / sidecar["ids_file"]).column("track_id").to_pylist()
    assert sorted(ids) == sorted(meta["track_id"]) and len(ids) == 3000
    first = sidecar["index_file"]
    build_index(root, kind="exact")  # replaces the HNSW index: one index per embedding
    sidecar = json.loads((folder / "index.json").read_text())
    assert sidecar["kind"] == "exact" and sidecar["index_file"] != first
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == sorted(
        ["index.json", sidecar["index_file"], sidecar["ids_file"]])


# ----------------------------------------------------------------------------- filters
def test_filter_removing_99_percent_is_exact_and_honoured(synthetic_copy):
    root, vectors, meta = synthetic_copy
    build_index(root, kind="hnsw")
    query = meta["track_id"][10]
    where = "tempo_bpm BETWEEN 100 AND 101"  # ≈1 % of uniform 70–170 BPM
    allowed = meta[(meta["tempo_bpm"] >= 100) & (meta["tempo_bpm"] <= 101) & (meta["track_id"] != query)]
    assert 0 < len(allowed) < 0.02 * len(meta)
    got = similar(root, track_id=query, k=10, where=where)
    assert len(got) == min(10, len(allowed))
    assert got["tempo_bpm"].between(100, 101).all() and query not in set(got["track_id"])
    # Exactly the exact answer over the allowed subset.
    rows = allowed.index.to_numpy()
    expect = rows[exact_neighbours(vectors[rows], vectors[[10]], len(got))[0]]
    assert list(got["track_id"]) == list(meta["track_id"][expect])
    assert np.all(np.diff(got["score"]) <= 1e-6) and list(got["rank"]) == list(range(1, len(got) + 1))
    np.testing.assert_allclose(got["distance"], 1 - got["score"])


def test_filtered_graph_search_with_selector(synthetic_copy, monkeypatch):
    root, vectors, meta = synthetic_copy
    build_index(root, kind="hnsw")
    # Force the IDSelector path (normally taken only above 10 000 allowed tracks).
    monkeypatch.setattr(index_search, "EXACT_SUBSET_MAX", 0)
    monkeypatch.setattr(index_search, "EXACT_SUBSET_FRACTION", 0.0)
    hits = total = 0
    for q in range(0, 300, 30):
        query = meta["track_id"][q]
        got = similar(root, track_id=query, k=10, filters={"tempo_min": 90, "tempo_max": 130})
        assert len(got) == 10 and got["tempo_bpm"].between(90, 130).all() and query not in set(got["track_id"])
        allowed = meta[meta["tempo_bpm"].between(90, 130) & (meta["track_id"] != query)]
        rows = allowed.index.to_numpy()
        truth = set(meta["track_id"][rows[exact_neighbours(vectors[rows], vectors[[q]], 10)[0]]])
        hits += len(truth & set(got["track_id"]))
        total += 10
    assert hits / total >= 0.95


def test_structured_filters_are_bound_and_checked(synthetic_copy):
    root, _, meta = synthetic_copy
    query = meta["track_id"][0]
    got = similar(root, track_id=query, k=20, filters={"camelot": "8A"})
    assert len(got) > 0 and (got["key"] == "A minor").all() and (got["key_camelot"] == "8A").all()
    got = similar(root, track_id=query, k=20, filters={"key": "f# minor", "tempo_max": 120})
    assert (got["key"] == "F# minor").all() and (got["tempo_bpm"] <= 120).all()
    with pytest.raises(ValueError, match="unknown filter"):
        similar(root, track_id=query, filters={"genre": "rock"})
    with pytest.raises(ValueError):
        similar(root, track_id=query, filters={"key": "A minor' OR 1=1 --"})
    with pytest.raises(ValueError):
        similar(root, track_id=query, filters={"camelot": "A minor"})
    with pytest.raises(ValueError):
        similar(root, track_id=query, filters={"tempo_min": "fast"})


def test_mix_returns_exactly_the_compatible_tracks(synthetic_copy):
    root, _, meta = synthetic_copy
    build_index(root, kind="hnsw")
    for q in (5, 40, 61):
        query = meta.iloc[q]
        assert query["tempo_bpm"] is not None and query["key"] is not None
        got = similar(root, track_id=query["track_id"], k=len(meta), mix=True)
        compatible = {
            t for t, tempo, key in zip(meta["track_id"], meta["tempo_bpm"], meta["key"], strict=True)
            if t != query["track_id"] and key is not None and tempo_compatible(query["tempo_bpm"], tempo)
            and key_relation(query["key"], key) in MIX_RELATIONS}
        assert set(got["track_id"]) == compatible and len(compatible) > 3
        assert got["key_relation"].isin(MIX_RELATIONS).all()
        ratio = got["tempo_ratio"].to_numpy()
        assert np.all([any(abs(r / f - 1) <= 0.06 + 1e-9 for f in (1.0, 0.5, 2.0)) for r in ratio])
        top = similar(root, track_id=query["track_id"], k=5, mix=True)
        assert list(top["track_id"]) == list(got["track_id"][:5])


# ----------------------------------------------------------------------------- stale index and update
def test_stale_detection_and_update_adds_tracks(synthetic_copy, caplog):
    root, vectors, meta = synthetic_copy
    build_index(root, kind="hnsw")
    new_vectors = clustered_vectors(60, 48, seed=5)
    new = write_synthetic(root, new_vectors, start=10_000, part="p1")
    with caplog.at_level(logging.WARNING, logger="mirflow.index"):
        index = load_index(root)
    assert index.stale and "gained 60 tracks" in index.info.stale_reason and "mirflow index update" in caplog.text
    status = {r["embedding"]: r for r in index_status(root)}
    assert status["musicnn-msd"]["stale"] is True
    info = update_index(root)
    assert info.action == "updated" and info.added == 60 and info.count == 3060
    index = load_index(root)
    assert not index.stale and len(index) == 3060
    # A new track is found by its own vector, and is a neighbour like any other.
    _, found = index.search(new_vectors[:3], 1)
    assert list(found[:, 0]) == list(new["track_id"][:3])
    assert update_index(root).action == "unchanged"


def test_update_rebuilds_when_vectors_changed(synthetic_copy):
    root, vectors, meta = synthetic_copy
    build_index(root, kind="ivfpq")
    # Re-analysis with another model version rewrites every vector of the part.
    write_synthetic(root, vectors[::-1].copy(), version="v2")
    index = load_index(root)
    assert index.stale and "changed 3000" in index.info.stale_reason
    info = update_index(root)
    assert info.action == "rebuilt" and "model_version" in info.message and info.model_versions == ("v2",)
    assert info.kind == "ivfpq" and not load_index(root).stale


def test_ivfpq_on_too_few_vectors_falls_back_to_exact(ds_catalog):
    info = build_index(ds_catalog, kind="ivfpq")
    assert info.index_type == "IndexFlatIP" and "too few" in info.fallback
    sidecar = json.loads(info.path.read_text())
    assert sidecar["fallback"] == info.fallback and sidecar["kind"] == "ivfpq"


# ----------------------------------------------------------------------------- downstream catalog
def test_similar_on_analyzed_catalog_without_and_with_index(ds_catalog, caplog):
    from mirflow.query import read_table

    emb = read_table(ds_catalog, "embeddings", partition="musicnn-msd")
    vectors = np.stack(emb["embedding"].to_numpy()).astype(np.float32)
    tracks = tracks_frame(ds_catalog)
    for q in (0, 7):
        query = emb["track_id"][q]
        with caplog.at_level(logging.INFO, logger="mirflow.index"):
            exact = similar(ds_catalog, track_id=query, k=5)
        assert "no index built" in caplog.text
        order = [i for i in exact_neighbours(vectors, vectors[[q]], 6)[0] if i != q][:5]
        assert list(exact["track_id"]) == list(emb["track_id"][order])
        assert query not in set(exact["track_id"])
        for _, row in exact.iterrows():
            t = tracks.loc[row["track_id"]]
            assert row["path"] == t["path"] and row["key"] == t["key"]
            assert row["tempo_ratio"] == pytest.approx(t["tempo_bpm"] / tracks.loc[query, "tempo_bpm"])
            assert row["key_relation"] == key_relation(tracks.loc[query, "key"], t["key"])
    build_index(ds_catalog, kind="hnsw")
    index = load_index(ds_catalog)
    for query in emb["track_id"]:
        got = similar(ds_catalog, track_id=query, k=23, index=index)
        assert len(got) == 23 and query not in set(got["track_id"])  # every other track, never itself


def test_stale_after_embedding_rewritten(ds_catalog):
    build_index(ds_catalog)
    cat = Catalog(ds_catalog)
    part = sorted((ds_catalog / "embeddings" / "musicnn-msd").rglob("*.parquet"))[0]
    old = pq.read_table(part).to_pydict()
    table = conform("embeddings", {**old, "model_version": ["new-weights"] * len(old["track_id"])},
                    sizes={"embedding": 200})
    cat.write_part("embeddings", part.stem, table, partition="musicnn-msd")
    index = load_index(ds_catalog)
    assert index.stale and "changed 1" in index.info.stale_reason
    info = update_index(ds_catalog)
    assert info.action == "rebuilt" and set(info.model_versions) >= {"new-weights"}


# ----------------------------------------------------------------------------- CLI
def test_cli_build_similar_status_end_to_end(ds_catalog, downstream_catalog, capsys):
    cat = str(ds_catalog)
    labels = pd.read_csv(downstream_catalog[1])
    rc, out, _ = run_cli(capsys, "index", "build", cat, "--kind", "hnsw")
    assert rc == 0 and "built hnsw index of 24 musicnn-msd vectors" in out and "recall@10" in out
    rc, out, _ = run_cli(capsys, "index", "status", cat)
    assert rc == 0 and "musicnn-msd" in out and "fresh" in out and "descriptor" in out and "not indexed" in out
    tracks = tracks_frame(ds_catalog)
    query = tracks.index[3]
    rc, out, err = run_cli(capsys, "similar", cat, "--track", query, "-k", "5", "--format", "json")
    assert rc == 0, err
    rows = json.loads(out)
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    assert set(rows[0]) == {"rank", "track_id", "path", "score", "distance", "tempo_bpm", "key", "key_camelot",
                            "tempo_ratio", "key_relation"}
    assert all(r["track_id"] != query for r in rows) and all(r["path"] in set(labels["path"]) for r in rows)
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    # --path finds the same track; --where is honoured; csv and table render.
    rc, out, _ = run_cli(capsys, "similar", cat, "--path", tracks.loc[query, "path"], "-k", "5", "--format", "csv")
    from io import StringIO

    by_path = pd.read_csv(StringIO(out))
    assert rc == 0 and list(by_path["track_id"]) == [r["track_id"] for r in rows]
    rc, out, _ = run_cli(capsys, "similar", cat, "--track", query, "--where", "tempo_bpm > 120", "--format", "json")
    assert rc == 0 and all(r["tempo_bpm"] > 120 for r in json.loads(out))
    rc, out, _ = run_cli(capsys, "similar", cat, "--track", query, "-k", "3")
    assert rc == 0 and "key_relation" in out and len(out.strip().splitlines()) == 4
    rc, out, _ = run_cli(capsys, "similar", cat, "--track", query, "--mix", "--format", "json")
    assert rc == 0
    q = tracks.loc[query]
    for r in json.loads(out):
        assert r["key_relation"] in MIX_RELATIONS and tempo_compatible(q["tempo_bpm"], r["tempo_bpm"])


def test_cli_bad_inputs_exit_2(ds_catalog, capsys):
    cat = str(ds_catalog)
    some = tracks_frame(ds_catalog).index[0]
    cases = [
        (["similar", cat, "--track", "0" * 32], "no track"),
        (["similar", cat, "--track", some, "--embedding", "no-such-model"], "no embeddings of model"),
        (["similar", cat, "--track", some, "--path", "/x.wav"], "exactly one of --track, --path or --audio"),
        (["similar", cat], "exactly one of"),
        (["similar", cat, "--path", "/not/in/catalog.wav"], "not in catalog"),
        (["similar", cat, "--track", some, "--where", "no_such_column > 1"], "invalid filter"),
        (["index", "update", cat], "no similarity index"),
        (["index", "build", cat, "--embedding", "no-such-model"], "no embeddings of model"),
    ]
    for argv, message in cases:
        rc, out, err = run_cli(capsys, *argv)
        assert rc == 2, argv
        assert err.startswith("mirflow: error:") and message in err, (argv, err)


def test_api_errors(ds_catalog):
    some = tracks_frame(ds_catalog).index[0]
    with pytest.raises(UnknownTrackError):
        similar(ds_catalog, track_id="f" * 32)
    with pytest.raises(UnknownEmbeddingError):
        load_index(ds_catalog, embedding="nope")
    with pytest.raises(IndexNotFoundError):
        load_index(ds_catalog)
    with pytest.raises(ValueError, match="exactly one"):
        similar(ds_catalog, track_id=some, vector=np.zeros(200, np.float32))
    with pytest.raises(ValueError, match="200 values"):
        similar(ds_catalog, vector=np.ones(7, np.float32))
    # A vector query: the track's own vector finds the track itself first.
    from mirflow.query import read_table

    emb = read_table(ds_catalog, "embeddings", partition="musicnn-msd")
    got = similar(ds_catalog, vector=np.asarray(emb["embedding"][2], np.float32), k=3)
    assert got["track_id"][0] == emb["track_id"][2] and got["score"][0] == pytest.approx(1.0, abs=1e-5)
    assert got["tempo_ratio"].isna().all() and got["key_relation"].isna().all()


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(mirflow, "analyze_file"), reason="mirflow.analyze_file not available yet")
def test_cli_audio_query(ds_catalog, downstream_catalog, tmp_path, capsys):
    # A re-encoded copy of a catalog track: other bytes, so a new track, with near-identical content.
    import soundfile as sf

    src = pd.read_csv(downstream_catalog[1])["path"][4]
    y, sr = sf.read(src, dtype="float32")
    new = tmp_path / "copy.flac"
    sf.write(new, y, sr)
    rc, out, err = run_cli(capsys, "similar", str(ds_catalog), "--audio", str(new), "-k", "3", "--format", "json")
    assert rc == 0, err
    rows = json.loads(out)
    assert rows[0]["path"] == src and rows[0]["score"] > 0.95
    assert rows[0]["tempo_ratio"] == pytest.approx(1.0, abs=0.05) and rows[0]["key_relation"] == "same"


def test_parse_key_spellings_used_by_filters():
    # Guards the mapping filters rely on: every Camelot code names the key column's spelling.
    for key in all_keys():
        assert parse_key(key.camelot).mir_eval == key.mir_eval


# ----------------------------------------------------------------------------- compacted catalogs
def test_similar_on_a_compacted_catalog_is_the_same(ds_catalog, tmp_path):
    """After a compaction no embedding part is left: query vectors come from the compacted files."""
    from mirflow.catalog.compact import compact

    compacted = tmp_path / "compacted"
    shutil.copytree(ds_catalog, compacted)
    compact(Catalog(compacted))
    assert not Catalog(compacted).parts("embeddings")
    ids = sorted(Catalog(ds_catalog).existing_tracks())
    for query in ids[:3]:
        loose = similar(ds_catalog, track_id=query, k=5)
        folded = similar(compacted, track_id=query, k=5)
        assert list(folded["track_id"]) == list(loose["track_id"])
        np.testing.assert_allclose(folded["score"], loose["score"], rtol=1e-6)
    build_index(compacted, kind="hnsw")
    got = similar(compacted, track_id=ids[0], k=23, index=load_index(compacted))
    assert len(got) == 23 and ids[0] not in set(got["track_id"])
