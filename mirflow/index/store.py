"""Build, store, update and load FAISS similarity indexes inside a catalog.

Layout (one index per embedding model; a new build replaces the old one)::

    CATALOG/indexes/<embedding>/
      index.json                 sidecar, written last: the commit marker
      <kind>-<token>.faiss       faiss.write_index (FAISS's own format)
      ids-<token>.parquet        track_id, model_version in FAISS id order (id = row number)

Each build or update writes a fresh ``<token>`` pair of files (temporary name,
then ``os.replace``) and only then replaces ``index.json``, so a reader sees
either the old index or the new one, never a mix; files of older tokens are
deleted after the sidecar is replaced.

Cosine similarity is the inner product of L2-normalised float32 vectors
(``METRIC_INNER_PRODUCT``). The search-time parameters (HNSW ``efSearch``,
IVF ``nprobe`` and refine ``k_factor``) are calibrated at build time: the
cheapest setting whose recall@10 against exact search, on a sample of the
indexed vectors used as queries, reaches :data:`CALIBRATION_TARGET_RECALL`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import hashlib
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mirflow._version import __version__
from mirflow.catalog.layout import Catalog
from mirflow.errors import CatalogError, ConfigError

log = logging.getLogger(__name__)

INDEX_DIR = "indexes"
SIDECAR = "index.json"
FORMAT = "mirflow-similarity-index"
FORMAT_VERSION = 1

DEFAULT_EMBEDDING = "musicnn-msd"
DEFAULT_KIND = "hnsw"
KINDS = ("exact", "hnsw", "ivfpq")

#: HNSW graph degree and construction beam. M=32 is the FAISS benchmarks' usual choice for
#: 100–1000-d data; efConstruction=80 (FAISS default 40) bought recall on the 200-d random set of
#: benchmarks/index.py at a build-time cost we measured there (docs/similarity.md).
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
#: efSearch values tried at calibration, cheapest first.
EF_SEARCH_GRID = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
#: IVF-PQ: ``nprobe`` and refine ``k_factor`` values tried at calibration.
NPROBE_GRID = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
K_FACTOR_GRID = (2, 4, 8, 16, 32, 64, 128, 256, 512)
#: Below this many vectors IVF-PQ is not trained (too few points per centroid): exact search instead.
IVFPQ_MIN_VECTORS = 1000
#: FAISS's k-means wants ≥ 39 training points per centroid (it warns below that).
POINTS_PER_CENTROID = 39
#: An IVF-PQ index whose vector count grew beyond this factor of what it was trained on is
#: retrained on update: its coarse centroids no longer partition the data evenly.
IVFPQ_RETRAIN_GROWTH = 4.0
#: recall@10 the calibration aims for. The contract is ≥ 0.95; calibrating on a sample of
#: ≤ 500 queries leaves a standard error of about 0.01, hence the margin.
CALIBRATION_TARGET_RECALL = 0.97
CALIBRATION_QUERIES = 500
CALIBRATION_K = 10


class IndexNotFoundError(CatalogError):
    """No similarity index of this embedding has been built in the catalog."""


class StaleIndexError(CatalogError):
    """The catalog's embeddings changed since the index was built."""


class UnknownEmbeddingError(ConfigError):
    """The catalog has no embeddings of the requested model."""


@dataclasses.dataclass(frozen=True)
class IndexInfo:
    """What an index holds and what the last operation did.

    Attributes
    ----------
    embedding : str
        Embedding model (partition of the ``embeddings`` table).
    kind : str
        Requested kind: ``exact``, ``hnsw`` or ``ivfpq``.
    index_type : str
        What FAISS holds, e.g. ``IndexHNSWFlat`` (``IndexFlatIP`` when IVF-PQ fell back).
    count, dimension : int
        Vectors indexed and their length.
    model_versions : tuple of str
        Distinct ``model_version`` values of the indexed vectors.
    params : dict
        Construction and calibrated search parameters, and the measured calibration recall.
    fallback : str or None
        Why a different index type than ``kind`` was built (IVF-PQ on too few vectors).
    catalog_state : dict
        ``count``, ``pairs_blake2b`` (of the sorted ``(track_id, model_version)`` pairs) and
        ``last_run_id`` of the catalog when the index was last written.
    built_at, updated_at : str
        ISO-8601 UTC times of the full build and of the last write.
    path : Path or None
        The sidecar ``index.json``; ``None`` for an in-memory exact index.
    action : str
        ``built``, ``rebuilt``, ``updated``, ``unchanged``, ``loaded`` or ``in-memory``.
    added : int
        Vectors added by an update.
    message : str
        One line saying what happened and why (rebuild reasons, fallbacks).
    stale : bool
        The catalog's embeddings differ from those indexed (detected on load).
    stale_reason : str or None
        What differs, and the command that fixes it.
    """

    embedding: str
    kind: str
    index_type: str
    count: int
    dimension: int
    model_versions: tuple[str, ...]
    params: dict[str, Any]
    fallback: str | None
    catalog_state: dict[str, Any]
    built_at: str
    updated_at: str
    path: Path | None = None
    action: str = "loaded"
    added: int = 0
    message: str = ""
    stale: bool = False
    stale_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = dataclasses.asdict(self)
        d["path"] = str(self.path) if self.path is not None else None
        d["model_versions"] = list(self.model_versions)
        return d


# ----------------------------------------------------------------------------- catalog access
def open_catalog(catalog: str | os.PathLike[str] | Catalog) -> Catalog:
    """The :class:`Catalog`, checked to be one (has a manifest)."""
    cat = catalog if isinstance(catalog, Catalog) else Catalog(catalog)
    if cat.read_manifest() is None:
        raise CatalogError(f"{cat.url} is not a mirflow catalog (no manifest.json)")
    return cat


def check_embedding(cat: Catalog, embedding: str) -> None:
    """Raise :class:`UnknownEmbeddingError` unless the catalog has vectors of ``embedding``."""
    available = cat.partitions("embeddings")
    if embedding not in available:
        raise UnknownEmbeddingError(
            f"catalog {cat.url} has no embeddings of model {embedding!r}; "
            f"it has: {', '.join(available) or 'none'}")


def read_vectors(cat: Catalog, embedding: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(track_ids, model_versions, vectors)`` of one embedding, sorted by track id.

    ``vectors`` is float32, C-contiguous and L2-normalised (zero vectors stay zero).
    """
    check_embedding(cat, embedding)
    table = cat.read_table("embeddings", columns=["track_id", "model_version", "embedding"],
                           partition=embedding)
    ids = np.asarray(table.column("track_id").to_pylist(), dtype=object)
    versions = np.asarray(table.column("model_version").to_pylist(), dtype=object)
    vectors = _to_matrix(table.column("embedding"), embedding)
    order = np.argsort(ids, kind="stable")
    vectors = np.ascontiguousarray(vectors[order])
    faiss.normalize_L2(vectors)
    return ids[order], versions[order], vectors


def _to_matrix(column: pa.ChunkedArray, embedding: str) -> np.ndarray:
    arr = column.combine_chunks()
    n = len(arr)
    if n == 0:
        raise CatalogError(f"the catalog has no vectors of embedding {embedding!r}")
    lengths = pc.list_value_length(arr)
    bounds = pc.min_max(lengths)
    d_min, d_max = bounds["min"].as_py(), bounds["max"].as_py()
    if d_min != d_max or not d_min:
        raise CatalogError(f"embedding {embedding!r} has vectors of lengths {d_min}–{d_max}; "
                           "one model must have one dimension")
    flat = arr.flatten().to_numpy(zero_copy_only=False)
    vectors = np.asarray(flat, dtype=np.float32).reshape(n, d_min)
    if not np.isfinite(vectors).all():
        raise CatalogError(f"embedding {embedding!r} holds non-finite values")
    return vectors


def read_pairs(cat: Catalog, embedding: str) -> tuple[np.ndarray, np.ndarray]:
    """``(track_ids, model_versions)`` of one embedding (no vectors), sorted by track id."""
    check_embedding(cat, embedding)
    table = cat.read_table("embeddings", columns=["track_id", "model_version"], partition=embedding)
    ids = np.asarray(table.column("track_id").to_pylist(), dtype=object)
    versions = np.asarray(table.column("model_version").to_pylist(), dtype=object)
    order = np.argsort(ids, kind="stable")
    return ids[order], versions[order]


def pairs_digest(ids: np.ndarray, versions: np.ndarray) -> str:
    """BLAKE2b-128 of the sorted ``track_id\\tmodel_version`` lines: identifies what was indexed."""
    h = hashlib.blake2b(digest_size=16)
    for tid, ver in sorted(zip(ids.tolist(), versions.tolist(), strict=True)):
        h.update(f"{tid}\t{ver}\n".encode())
    return h.hexdigest()


def catalog_state(cat: Catalog, ids: np.ndarray, versions: np.ndarray) -> dict[str, Any]:
    runs = (cat.read_manifest() or {}).get("runs") or []
    return {"count": int(len(ids)), "pairs_blake2b": pairs_digest(ids, versions),
            "last_run_id": runs[-1].get("run_id") if runs else None}


# ----------------------------------------------------------------------------- index construction
def _hnsw(vectors: np.ndarray) -> tuple[faiss.Index, dict[str, Any]]:
    d = vectors.shape[1]
    index = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    index.add(vectors)
    return index, {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION}


def _ivfpq_shape(n: int, d: int) -> dict[str, int]:
    # ~sqrt(n) lists (the FAISS wiki's lower rule of thumb), at least 39 points each.
    nlist = int(min(65536, max(1, n // POINTS_PER_CENTROID), max(1, round(math.sqrt(n)))))
    # 8-bit codes need 39 × 256 training points; smaller sets get fewer bits per sub-quantizer.
    nbits = int(min(8, max(4, math.floor(math.log2(n / POINTS_PER_CENTROID)))))
    # Sub-quantizers of about 8 dimensions each (the divisor of d closest to d / 8) with 8-bit
    # codes: FAISS trained 4-d sub-quantizers 26x slower (45 s vs 1.7 s for 20 000 × 200-d, one
    # core). Small sets (fewer bits) get 4-d ones, which were needed there for the re-ranked
    # shortlist to reach recall@10 0.95 on 3000 random 48-d vectors (tests/test_index.py data).
    dims_per_code = 8 if nbits == 8 else 4
    divisors = [m for m in range(1, d + 1) if d % m == 0]
    m = min(divisors, key=lambda m: (abs(m - d / dims_per_code), m))
    return {"nlist": nlist, "m": m, "nbits": nbits}


def _ivfpq(vectors: np.ndarray) -> tuple[faiss.Index, dict[str, Any]]:
    n, d = vectors.shape
    shape = _ivfpq_shape(n, d)
    quantizer = faiss.IndexFlatIP(d)
    ivf = faiss.IndexIVFPQ(quantizer, d, shape["nlist"], shape["m"], shape["nbits"], faiss.METRIC_INNER_PRODUCT)
    train_n = min(n, max(50 * shape["nlist"], 100 * 2 ** shape["nbits"], 10_000))
    rng = np.random.default_rng(0)
    train = vectors if train_n == n else vectors[np.sort(rng.choice(n, size=train_n, replace=False))]
    ivf.train(train)
    # Exact re-ranking of the PQ shortlist against the stored float32 vectors: PQ distances
    # alone rank near neighbours poorly on unstructured data.
    index = faiss.IndexRefineFlat(ivf)
    index.add(vectors)
    return index, {**shape, "trained_on": int(train_n), "trained_at_count": int(n)}


def make_index(vectors: np.ndarray, kind: str) -> tuple[faiss.Index, dict[str, Any], str | None]:
    """A FAISS index of ``kind`` over normalised ``vectors``, calibrated.

    Returns ``(index, params, fallback)``; ``fallback`` says why IVF-PQ became exact search.
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
    n, d = vectors.shape
    t0 = time.perf_counter()
    fallback = None
    if kind == "hnsw":
        index, params = _hnsw(vectors)
    elif kind == "ivfpq" and n >= IVFPQ_MIN_VECTORS:
        index, params = _ivfpq(vectors)
    else:
        if kind == "ivfpq":
            fallback = (f"exact search (IndexFlatIP): {n} vectors are too few to train IVF-PQ "
                        f"(needs ≥ {IVFPQ_MIN_VECTORS}); `mirflow index update` trains it once there are enough")
            log.warning("ivfpq index: %s", fallback)
        index, params = faiss.IndexFlatIP(d), {}
        index.add(vectors)
    params["construction_s"] = round(time.perf_counter() - t0, 3)
    params.update(calibrate(index, vectors))
    return index, params, fallback


def index_type(index: faiss.Index) -> str:
    if isinstance(index, faiss.IndexRefine):
        return f"{type(index).__name__}({type(faiss.downcast_index(index.base_index)).__name__})"
    return type(index).__name__


def _recall(found: np.ndarray, truth: np.ndarray, query_ids: np.ndarray, k: int) -> float:
    hits = total = 0
    for row_found, row_truth, self_id in zip(found, truth, query_ids, strict=True):
        t = [i for i in row_truth if i >= 0 and i != self_id][:k]
        f = [i for i in row_found if i >= 0 and i != self_id][:k]
        hits += len(set(t) & set(f))
        total += len(t)
    return hits / total if total else 1.0


def calibrate(index: faiss.Index, vectors: np.ndarray, *, k: int = CALIBRATION_K,
              target: float = CALIBRATION_TARGET_RECALL, n_queries: int = CALIBRATION_QUERIES) -> dict[str, Any]:
    """Set the cheapest search parameters reaching ``target`` recall@k; return them and the recall.

    Queries are a seeded sample of the indexed vectors; each query's own id is left out of both
    the exact and the approximate neighbour lists (as :func:`mirflow.index.similar` does).
    """
    n = vectors.shape[0]
    if isinstance(index, faiss.IndexFlat):
        return {"recall_at_10": 1.0, "calibration_queries": 0}
    rng = np.random.default_rng(0)
    query_ids = np.sort(rng.choice(n, size=min(n_queries, n), replace=False)).astype(np.int64)
    queries = vectors[query_ids]
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, truth = exact.search(queries, k + 1)
    del exact
    result: dict[str, Any] = {"calibration_queries": int(len(query_ids)), "calibration_target": target}
    if isinstance(index, faiss.IndexHNSW):
        recall = 0.0
        for ef in EF_SEARCH_GRID:
            index.hnsw.efSearch = ef
            _, found = index.search(queries, k + 1)
            recall = _recall(found, truth, query_ids, k)
            if recall >= target:
                break
        else:
            log.warning("HNSW recall@%d %.3f < %.2f even at efSearch=%d", k, recall, target, ef)
        result.update(efSearch=int(index.hnsw.efSearch), recall_at_10=round(recall, 4),
                      target_reached=recall >= target)
        return result
    if isinstance(index, faiss.IndexRefine):
        ivf = faiss.extract_index_ivf(index)
        best = None
        for nprobe in [p for p in NPROBE_GRID if p < ivf.nlist] + [ivf.nlist]:
            ivf.nprobe = nprobe
            # The largest shortlist first: if even that misses the target, no smaller one reaches it.
            index.k_factor = float(K_FACTOR_GRID[-1])
            _, found = index.search(queries, k + 1)
            recall = _recall(found, truth, query_ids, k)
            best = (nprobe, K_FACTOR_GRID[-1], recall)
            if recall < target:
                continue
            for k_factor in K_FACTOR_GRID[:-1]:
                index.k_factor = float(k_factor)
                _, found = index.search(queries, k + 1)
                recall = _recall(found, truth, query_ids, k)
                if recall >= target:
                    best = (nprobe, k_factor, recall)
                    break
            break
        else:
            log.warning("IVF-PQ recall@%d %.3f < %.2f even at nprobe=%d", k, best[2], target, best[0])
        ivf.nprobe, index.k_factor = best[0], float(best[1])
        result.update(nprobe=int(best[0]), k_factor=int(best[1]), recall_at_10=round(best[2], 4),
                      target_reached=best[2] >= target)
        return result
    raise TypeError(f"cannot calibrate {index_type(index)}")


def apply_search_params(index: faiss.Index, params: dict[str, Any]) -> faiss.Index:
    """Set the calibrated search parameters on a loaded index."""
    if isinstance(index, faiss.IndexHNSW) and "efSearch" in params:
        index.hnsw.efSearch = int(params["efSearch"])
    if isinstance(index, faiss.IndexRefine):
        index.k_factor = float(params.get("k_factor", 4))
        faiss.extract_index_ivf(index).nprobe = int(params.get("nprobe", 8))
    return index


def flat_storage(index: faiss.Index) -> faiss.IndexFlat:
    """The IndexFlat holding the exact (normalised) vectors of any of our index types.

    The returned object does not own its memory: keep ``index`` alive while using it.
    """
    if isinstance(index, faiss.IndexFlat):
        return index
    if isinstance(index, faiss.IndexHNSW):
        return faiss.downcast_index(index.storage)
    if isinstance(index, faiss.IndexRefine):
        return faiss.downcast_index(index.refine_index)
    raise TypeError(f"no flat storage in {index_type(index)}")


def stored_vectors(index: faiss.Index) -> np.ndarray:
    """A read-only, zero-copy ``(ntotal, d)`` view of the index's stored vectors."""
    flat = flat_storage(index)
    view = faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d).reshape(flat.ntotal, flat.d)
    view.flags.writeable = False
    return view


# ----------------------------------------------------------------------------- storage
def index_dir(cat: Catalog, embedding: str) -> Path:
    return cat.local_root("a similarity index") / INDEX_DIR / embedding


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    # One writer per index folder; readers need no lock (the sidecar is replaced atomically).
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _replace_into(path: Path, write) -> None:
    # ".name.tmp": the pattern Catalog.sweep_temporary removes after a killed writer.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save(cat: Catalog, embedding: str, *, kind: str, index: faiss.Index, ids: np.ndarray,
         versions: np.ndarray, params: dict[str, Any], fallback: str | None, state: dict[str, Any],
         built_at: str, history: list[dict[str, Any]], action: str, added: int = 0,
         message: str = "") -> IndexInfo:
    """Write index, ids and sidecar (sidecar last) and delete the files they replace."""
    folder = index_dir(cat, embedding)
    folder.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    index_file, ids_file = f"{kind}-{token}.faiss", f"ids-{token}.parquet"
    _replace_into(folder / index_file, lambda p: faiss.write_index(index, str(p)))
    ids_table = pa.table({"track_id": pa.array(ids.tolist(), pa.string()),
                          "model_version": pa.array(versions.tolist(), pa.string())})
    _replace_into(folder / ids_file, lambda p: pq.write_table(ids_table, p, compression="zstd"))
    updated_at = _now()
    sidecar = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "embedding": embedding, "kind": kind, "index_type": index_type(index),
        "metric": "cosine: inner product of L2-normalised float32 vectors",
        "count": int(index.ntotal), "dimension": int(index.d),
        "model_versions": sorted(set(versions.tolist())),
        "params": params, "fallback": fallback,
        "index_file": index_file, "ids_file": ids_file,
        "catalog_state": state,
        "built_at": built_at, "updated_at": updated_at,
        "mirflow_version": __version__, "faiss_version": faiss.__version__,
        "history": history[-20:],
    }
    path = folder / SIDECAR
    _replace_into(path, lambda p: p.write_text(json.dumps(sidecar, indent=2), encoding="utf-8"))
    for old in list(folder.glob("*.faiss")) + list(folder.glob("ids-*.parquet")):
        if old.name not in (index_file, ids_file):
            old.unlink(missing_ok=True)
    return _info(sidecar, path, action=action, added=added, message=message)


def _info(sidecar: dict[str, Any], path: Path | None, **extra: Any) -> IndexInfo:
    return IndexInfo(
        embedding=sidecar["embedding"], kind=sidecar["kind"], index_type=sidecar["index_type"],
        count=int(sidecar["count"]), dimension=int(sidecar["dimension"]),
        model_versions=tuple(sidecar["model_versions"]), params=dict(sidecar["params"]),
        fallback=sidecar.get("fallback"), catalog_state=dict(sidecar["catalog_state"]),
        built_at=sidecar["built_at"], updated_at=sidecar["updated_at"], path=path, **extra)


def read_sidecar(cat: Catalog, embedding: str) -> tuple[dict[str, Any], Path]:
    path = index_dir(cat, embedding) / SIDECAR
    try:
        sidecar = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexNotFoundError(
            f"no similarity index of embedding {embedding!r} in {cat.url}; "
            f"build one with `mirflow index build {cat.url} --embedding {embedding}`") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise CatalogError(f"unreadable index sidecar {path}: {exc}") from None
    if sidecar.get("format") != FORMAT or sidecar.get("format_version") != FORMAT_VERSION:
        raise CatalogError(f"{path} is not a mirflow similarity index of format version {FORMAT_VERSION}; "
                           f"rebuild it with `mirflow index build {cat.url} --embedding {embedding}`")
    return sidecar, path


def read_stored(cat: Catalog, embedding: str) -> tuple[dict[str, Any], Path, faiss.Index, np.ndarray, np.ndarray]:
    """``(sidecar, sidecar_path, index, ids, versions)`` of the committed index."""
    for attempt in range(3):
        sidecar, path = read_sidecar(cat, embedding)
        folder = path.parent
        try:
            index = faiss.read_index(str(folder / sidecar["index_file"]))
            ids_table = pq.read_table(folder / sidecar["ids_file"])
            break
        except (FileNotFoundError, RuntimeError):
            # A concurrent build replaced the sidecar and deleted these files: read the new one.
            if attempt == 2 or (folder / sidecar["index_file"]).exists():
                raise CatalogError(f"index files named in {path} are missing or unreadable; "
                                   f"rebuild with `mirflow index build {cat.url} --embedding {embedding}`") from None
    ids = np.asarray(ids_table.column("track_id").to_pylist(), dtype=object)
    versions = np.asarray(ids_table.column("model_version").to_pylist(), dtype=object)
    if not (index.ntotal == len(ids) == sidecar["count"]):
        raise CatalogError(f"index {path} is inconsistent ({index.ntotal} vectors, {len(ids)} ids, "
                           f"sidecar says {sidecar['count']}); rebuild it")
    index = apply_search_params(index, sidecar["params"])
    return sidecar, path, index, ids, versions


def build(catalog: str | os.PathLike[str] | Catalog, *, embedding: str = DEFAULT_EMBEDDING,
          kind: str = DEFAULT_KIND) -> IndexInfo:
    """Build (or replace) the index of ``embedding``; see :func:`mirflow.index.build_index`."""
    if kind not in KINDS:
        raise ConfigError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
    cat = open_catalog(catalog)
    check_embedding(cat, embedding)
    with _locked(index_dir(cat, embedding)):
        return _build_locked(cat, embedding, kind, action="built")


def _build_locked(cat: Catalog, embedding: str, kind: str, *, action: str, reason: str = "",
                  history: list[dict[str, Any]] | None = None) -> IndexInfo:
    t0 = time.perf_counter()
    ids, versions, vectors = read_vectors(cat, embedding)
    index, params, fallback = make_index(vectors, kind)
    seconds = time.perf_counter() - t0
    now = _now()
    message = f"{action} {kind} index of {len(ids)} {embedding} vectors ({vectors.shape[1]}-d) in {seconds:.1f} s"
    if reason:
        message += f": {reason}"
    if fallback:
        message += f"; {fallback}"
    log.info(message)
    entry = {"action": action, "at": now, "count": int(len(ids)), "seconds": round(seconds, 3)}
    if reason:
        entry["reason"] = reason
    return save(cat, embedding, kind=kind, index=index, ids=ids, versions=versions, params=params,
                fallback=fallback, state=catalog_state(cat, ids, versions), built_at=now,
                history=[*(history or []), entry], action=action, message=message)


def update(catalog: str | os.PathLike[str] | Catalog, *, embedding: str = DEFAULT_EMBEDDING) -> IndexInfo:
    """Add new tracks to the index; see :func:`mirflow.index.update_index`."""
    cat = open_catalog(catalog)
    check_embedding(cat, embedding)
    with _locked(index_dir(cat, embedding)):
        sidecar, path, index, old_ids, old_versions = read_stored(cat, embedding)
        kind, history = sidecar["kind"], list(sidecar.get("history", []))
        ids, versions, vectors = read_vectors(cat, embedding)
        diff = diff_ids(old_ids, old_versions, ids, versions)
        # Same ids and versions: also compare the vectors themselves (a re-analysis with other
        # extractor parameters can change vectors without changing model_version).
        position = {tid: i for i, tid in enumerate(ids.tolist())}
        kept = [position[t] for t in old_ids.tolist() if t in position]
        changed_vectors = 0
        if not diff["removed"] and not diff["changed"] and len(kept) == len(old_ids):
            stored = stored_vectors(index)
            changed_vectors = int((np.abs(stored - vectors[kept]).max(axis=1) > 1e-5).sum())
        reasons = []
        if diff["changed"]:
            reasons.append(f"{diff['changed']} tracks have a new model_version")
        if changed_vectors:
            reasons.append(f"{changed_vectors} tracks' vectors changed")
        if diff["removed"]:
            reasons.append(f"{diff['removed']} indexed tracks left the catalog")
        if reasons:
            reason = ("; ".join(reasons) + ": FAISS cannot replace or remove vectors of an "
                      f"{sidecar['index_type']} in place, so the index was rebuilt")
            log.warning("index %s: %s", embedding, reason)
            return _build_locked(cat, embedding, kind, action="rebuilt", reason=reason, history=history)
        if sidecar.get("fallback") and kind == "ivfpq" and len(ids) >= IVFPQ_MIN_VECTORS:
            return _build_locked(cat, embedding, kind, action="rebuilt", history=history,
                                 reason=f"{len(ids)} vectors are now enough to train IVF-PQ")
        trained = sidecar["params"].get("trained_at_count")
        if trained and len(ids) > IVFPQ_RETRAIN_GROWTH * trained:
            return _build_locked(cat, embedding, kind, action="rebuilt", history=history,
                                 reason=f"the catalog grew from {trained} to {len(ids)} vectors since "
                                        "IVF-PQ was trained; retrained its centroids")
        state = catalog_state(cat, ids, versions)
        if not diff["new"]:
            message = f"index of {embedding} is up to date ({len(ids)} vectors)"
            if state != sidecar["catalog_state"]:
                sidecar["catalog_state"] = state
                _replace_into(path, lambda p: p.write_text(json.dumps(sidecar, indent=2), encoding="utf-8"))
            return _info(sidecar, path, action="unchanged", message=message)
        t0 = time.perf_counter()
        old_set = set(old_ids.tolist())
        new_rows = np.array([i for i, t in enumerate(ids.tolist()) if t not in old_set], dtype=np.int64)
        # FAISS ids are row numbers of the ids file: new tracks are appended after the old ones.
        index.add(np.ascontiguousarray(vectors[new_rows]))
        all_ids = np.concatenate([old_ids, ids[new_rows]])
        all_versions = np.concatenate([old_versions, versions[new_rows]])
        params = dict(sidecar["params"])
        params.update(calibrate(index, stored_vectors(index).copy()))
        seconds = time.perf_counter() - t0
        now = _now()
        message = f"added {len(new_rows)} tracks to the {kind} index of {embedding} (now {len(all_ids)}) in {seconds:.1f} s"
        log.info(message)
        history.append({"action": "updated", "at": now, "added": int(len(new_rows)),
                        "count": int(len(all_ids)), "seconds": round(seconds, 3)})
        return save(cat, embedding, kind=kind, index=index, ids=all_ids, versions=all_versions,
                    params=params, fallback=sidecar.get("fallback"), state=state,
                    built_at=sidecar["built_at"], history=history, action="updated",
                    added=len(new_rows), message=message)


def diff_ids(old_ids: np.ndarray, old_versions: np.ndarray, ids: np.ndarray,
             versions: np.ndarray) -> dict[str, int]:
    """Counts of ``new``, ``removed`` and ``changed`` (other model_version) tracks."""
    old = dict(zip(old_ids.tolist(), old_versions.tolist(), strict=True))
    cur = dict(zip(ids.tolist(), versions.tolist(), strict=True))
    return {"new": sum(1 for t in cur if t not in old),
            "removed": sum(1 for t in old if t not in cur),
            "changed": sum(1 for t, v in cur.items() if t in old and old[t] != v)}


def staleness(cat: Catalog, embedding: str, sidecar: dict[str, Any], ids: np.ndarray,
              versions: np.ndarray) -> str | None:
    """``None`` when the catalog's embeddings are those indexed, else what changed and the fix."""
    cur_ids, cur_versions = read_pairs(cat, embedding)
    if (len(cur_ids) == sidecar["catalog_state"]["count"]
            and pairs_digest(cur_ids, cur_versions) == sidecar["catalog_state"]["pairs_blake2b"]):
        return None
    d = diff_ids(ids, versions, cur_ids, cur_versions)
    return (f"the similarity index of {embedding} is stale: since it was written ({sidecar['updated_at']}) "
            f"the catalog gained {d['new']} tracks, lost {d['removed']} and changed {d['changed']}; "
            f"run `mirflow index update {cat.url} --embedding {embedding}`")


def status(catalog: str | os.PathLike[str] | Catalog) -> list[dict[str, Any]]:
    """One dict per embedding model of the catalog: whether it is indexed, and fresh."""
    cat = open_catalog(catalog)
    rows = []
    for embedding in cat.partitions("embeddings"):
        row: dict[str, Any] = {"embedding": embedding}
        try:
            sidecar, path, _, ids, versions = read_stored(cat, embedding)
        except IndexNotFoundError:
            row.update(indexed=False, stale=None, message="not indexed")
            rows.append(row)
            continue
        stale = staleness(cat, embedding, sidecar, ids, versions)
        row.update(indexed=True, kind=sidecar["kind"], index_type=sidecar["index_type"],
                   count=sidecar["count"], dimension=sidecar["dimension"], params=sidecar["params"],
                   fallback=sidecar.get("fallback"), built_at=sidecar["built_at"],
                   updated_at=sidecar["updated_at"], path=str(path), stale=stale is not None,
                   message=stale or "up to date")
        rows.append(row)
    return rows
