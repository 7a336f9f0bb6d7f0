"""Benchmark: FAISS indexes of mirflow.index against scikit-learn's exact cosine search.

Run: ``.venv/bin/python benchmarks/index.py [--n 1000000] [--catalog CATALOG] [--embedding musicnn-msd]``

For each data set — ``--n`` random 200-d float32 vectors uniform on the unit sphere
(normalised Gaussians: no structure, the hardest case for graph and quantization
indexes), the same number of clustered vectors (``--clustered``, on by default), and the
vectors of a real catalog (``--catalog``) — it builds each index kind exactly as
``mirflow index build`` does (same code, same build-time calibration of efSearch / nprobe /
k_factor for recall@10 ≥ 0.95) and measures:

* build time (all cores; includes the calibration, reported separately),
* queries per second on ONE core (``faiss.omp_set_num_threads(1)``, one BLAS thread for
  scikit-learn), one batch of ``--queries`` held-out queries,
* recall@10 against exact search (FAISS ``IndexFlatIP``),

next to ``sklearn.neighbors.NearestNeighbors(metric="cosine", algorithm="brute")``. A real
catalog is usually small, so its vectors are their own queries (each query's own track is
left out of both answers). Prints markdown tables.
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import time
from pathlib import Path

import faiss
import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mirflow.index import store  # noqa: E402

K = 10


def sphere(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d), dtype=np.float32)
    faiss.normalize_L2(x)
    return x


def clustered(n: int, d: int, seed: int, n_clusters: int = 1000, spread: float = 0.35) -> np.ndarray:
    # Clusters of unit-sphere centres with Gaussian spread, then normalised: closer to what
    # audio embeddings look like (genres, instrumentations) than uniform noise.
    centres = sphere(n_clusters, d, 12345)
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, n_clusters, n)] + spread / np.sqrt(d) * rng.standard_normal((n, d), dtype=np.float32)
    x = np.ascontiguousarray(x, dtype=np.float32)
    faiss.normalize_L2(x)
    return x


def recall_at(found: np.ndarray, truth: np.ndarray, self_ids: np.ndarray | None, k: int = K) -> float:
    hits = total = 0
    for r in range(len(truth)):
        skip = -2 if self_ids is None else self_ids[r]
        t = [i for i in truth[r] if i >= 0 and i != skip][:k]
        f = [i for i in found[r] if i >= 0 and i != skip][:k]
        hits += len(set(t) & set(f))
        total += len(t)
    return hits / total if total else 1.0


def timed_search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    faiss.omp_set_num_threads(1)
    t0 = time.perf_counter()
    _, found = index.search(queries, k)
    seconds = time.perf_counter() - t0
    return found, len(queries) / seconds


def run_set(name: str, vectors: np.ndarray, queries: np.ndarray, self_ids: np.ndarray | None, *,
            sklearn_queries: int, threads: int, kinds: list[str]) -> list[dict]:
    n, d = vectors.shape
    kq = K + (1 if self_ids is not None else 0)
    rows = []
    print(f"\n## {name}: {n:,} × {d}-d, {len(queries)} queries", flush=True)

    # Exact FAISS: the ground truth and a row of its own.
    faiss.omp_set_num_threads(threads)
    t0 = time.perf_counter()
    exact = faiss.IndexFlatIP(d)
    exact.add(vectors)
    build_s = time.perf_counter() - t0
    truth, qps = timed_search(exact, queries, kq)
    rows.append({"set": name, "method": "FAISS exact (IndexFlatIP)", "params": "", "build_s": build_s,
                 "calib_s": 0.0, "qps": qps, "recall": 1.0})
    print(f"  exact: {qps:,.0f} q/s", flush=True)
    del exact
    gc.collect()

    # scikit-learn exact, one BLAS thread (fewer queries: it is the slow one).
    from sklearn.neighbors import NearestNeighbors

    sq = queries[:sklearn_queries]
    with threadpool_limits(1):
        t0 = time.perf_counter()
        nn = NearestNeighbors(n_neighbors=min(kq, n), metric="cosine", algorithm="brute").fit(vectors)
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        _, sk_found = nn.kneighbors(sq)
        sk_qps = len(sq) / (time.perf_counter() - t0)
    sk_recall = recall_at(sk_found, truth[:len(sq)], None if self_ids is None else self_ids[:len(sq)])
    rows.append({"set": name, "method": "scikit-learn exact (brute, cosine)", "params": "", "build_s": build_s,
                 "calib_s": 0.0, "qps": sk_qps, "recall": sk_recall})
    print(f"  sklearn: {sk_qps:,.0f} q/s", flush=True)
    del nn
    gc.collect()

    for kind in kinds:
        faiss.omp_set_num_threads(threads)
        t0 = time.perf_counter()
        index, params, fallback = store.make_index(vectors, kind)
        build_s = time.perf_counter() - t0
        found, qps = timed_search(index, queries, kq)
        recall = recall_at(found, truth, self_ids)
        desc = {"hnsw": lambda p: f"M={p['M']}, efC={p['efConstruction']}, efSearch={p['efSearch']}",
                "ivfpq": lambda p: (f"nlist={p['nlist']}, m={p['m']}×{p['nbits']}b, nprobe={p['nprobe']}, "
                                    f"k_factor={p['k_factor']}") if "nlist" in p else "",
                "exact": lambda p: ""}[kind](params)
        label = {"hnsw": "FAISS HNSW (IndexHNSWFlat)", "ivfpq": "FAISS IVF-PQ + exact re-rank",
                 "exact": "FAISS exact"}[kind]
        if fallback:
            label += " (fell back to exact: too few vectors)"
        rows.append({"set": name, "method": label, "params": desc, "build_s": build_s,
                     "calib_s": build_s - params["construction_s"], "qps": qps, "recall": recall})
        print(f"  {kind}: build {build_s:.1f} s, {qps:,.0f} q/s, recall@10 {recall:.3f} ({desc})", flush=True)
        if kind == "hnsw" and "efSearch" in params:
            for ef in (16, 32, 64, 128, 256, 512, 1024):
                index.hnsw.efSearch = ef
                found, qps_ef = timed_search(index, queries, kq)
                print(f"    efSearch={ef:<5} {qps_ef:>10,.0f} q/s  recall@10 {recall_at(found, truth, self_ids):.3f}"
                      f"  ({qps_ef / sk_qps:,.0f}× sklearn)", flush=True)
        del index
        gc.collect()
    for r in rows:
        r["speedup"] = r["qps"] / sk_qps
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="synthetic vectors per set")
    ap.add_argument("--d", type=int, default=200, help="dimension of the synthetic vectors (musicnn: 200)")
    ap.add_argument("--queries", type=int, default=1000, help="held-out queries per synthetic set")
    ap.add_argument("--sklearn-queries", type=int, default=200, help="queries timed for scikit-learn")
    ap.add_argument("--no-clustered", action="store_true", help="skip the clustered synthetic set")
    ap.add_argument("--no-random", action="store_true", help="skip the uniform random set")
    ap.add_argument("--catalog", help="also benchmark this catalog's vectors")
    ap.add_argument("--embedding", default="musicnn-msd", help="embedding model of --catalog")
    ap.add_argument("--kinds", nargs="+", default=["hnsw", "ivfpq"], choices=["hnsw", "ivfpq"])
    ap.add_argument("--threads", type=int, default=faiss.omp_get_max_threads(), help="threads for building")
    args = ap.parse_args()

    print(f"mirflow.index benchmark: faiss {faiss.__version__}, {platform.processor() or platform.machine()}, "
          f"{faiss.omp_get_max_threads()} OpenMP threads (build with {args.threads}; queries on 1)")
    t_start = time.perf_counter()
    rows: list[dict] = []
    sets = []
    if not args.no_random:
        sets.append(("random (unit sphere)", lambda: (sphere(args.n, args.d, 0), sphere(args.queries, args.d, 1))))
    if not args.no_clustered:
        sets.append(("clustered", lambda: (clustered(args.n, args.d, 0), clustered(args.queries, args.d, 1))))
    for name, make in sets:
        vectors, queries = make()
        rows += run_set(f"{name} n={args.n:,}", vectors, queries, None, sklearn_queries=args.sklearn_queries,
                        threads=args.threads, kinds=args.kinds)
        del vectors, queries
        gc.collect()
    if args.catalog:
        cat = store.open_catalog(args.catalog)
        ids, _, vectors = store.read_vectors(cat, args.embedding)
        self_ids = np.arange(len(ids))
        rows += run_set(f"catalog {args.embedding} n={len(ids)}", vectors, vectors.copy(), self_ids,
                        sklearn_queries=len(ids), threads=args.threads, kinds=args.kinds)

    print("\n| data | method | parameters | build s (calibration) | queries/s, 1 core | × sklearn | recall@10 |")
    print("|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        calib = f" ({r['calib_s']:.1f})" if r["calib_s"] > 0.05 else ""
        print(f"| {r['set']} | {r['method']} | {r['params']} | {r['build_s']:.1f}{calib} | {r['qps']:,.0f} | "
              f"{r['speedup']:,.1f} | {r['recall']:.3f} |")
    print(f"\ntotal wall time {time.perf_counter() - t_start:.0f} s; command: {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
