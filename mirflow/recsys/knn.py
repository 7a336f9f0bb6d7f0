"""Exact all-tracks k-nearest neighbours by cosine similarity, in blocks on Dask.

The vectors never meet in one process. The tracks that have an embedding
of the chosen model are cut into blocks of ``block_size`` (in ``track_id``
order), and the graph has three kinds of tasks:

``pack``
    One per block: reads that block's embedding rows from the catalog
    (loose parts, or a filtered read of the compacted files), L2-normalises the vectors (cosine = inner product) and saves
    them as ``.npy`` in a scratch folder next to the export.
``partial``
    One per (query block, base block) pair: loads the two blocks and keeps
    each query's top k by inner product (FAISS's exact ``knn``), itself
    excluded.
``merge`` / ``write``
    The partial top-k lists of one query block are merged pairwise (a
    binary tree, so a task holds two lists at a time) into its running
    top k, and written as one Parquet part of the neighbours table.

Only small records (row counts) come back to the client. The scratch
folder must be visible to every worker, like the catalog itself.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mirflow._env import THREAD_ENV
from mirflow.catalog.layout import KEY_COLUMN, Catalog, read_parquet

log = logging.getLogger(__name__)

__all__ = ["NEIGHBOR_COLUMNS", "embedding_rows", "embedding_track_ids", "knn_blocked", "start_client"]

#: Columns of the neighbours table, with what each holds (described in the export's columns.json).
NEIGHBOR_COLUMNS = {
    "track_id": ("string", "The query track (content hash)"),
    "neighbor_id": ("string", "A neighbouring track; never the query itself"),
    "rank": ("int32", "1 for the most similar neighbour, then 2, 3, … up to k"),
    "score": ("float32", "Cosine similarity of the two embeddings (-1 to 1), non-increasing with rank"),
}


def embedding_track_ids(catalog: str | os.PathLike[str] | Catalog, model: str) -> list[str]:
    """The tracks with an embedding of ``model``, in ``track_id`` order.

    From :meth:`Catalog.snapshot`: the names of the live loose parts (a
    listing, no file read, while the partition was never compacted) plus the
    key column of the compacted files, less the keys a loose part overrides
    and the tombstones (zero-row parts) of removed tracks.
    """
    import pyarrow.parquet as pq

    cat = catalog if isinstance(catalog, Catalog) else Catalog(catalog)
    if model not in cat.partitions("embeddings"):
        return []
    snap = cat.snapshot("embeddings", model)
    keys: set[str] = set()
    for _, f in snap.compacted:
        keys.update(read_parquet(f, columns=[KEY_COLUMN], filesystem=cat.arrow_fs).column(KEY_COLUMN).to_pylist())
    keys -= snap.hidden_keys().get(model, set())
    for p in snap.loose:
        # Tombstones exist only over compacted rows: without a generation every part holds its track.
        if not snap.compacted or pq.ParquetFile(str(p.path), filesystem=cat.arrow_fs).metadata.num_rows:
            keys.add(p.key)
    return sorted(keys)


def embedding_rows(catalog: str | os.PathLike[str] | Catalog, model: str, track_ids: Sequence[str]):
    """``track_id`` and ``embedding`` of ``track_ids`` (those that have one), as an Arrow table in id order.

    Without a compaction each track's own part is read; once the partition
    is compacted, one :meth:`Catalog.snapshot` per call: the tracks' live
    loose parts plus one read of each compacted file filtered on its sorted
    key column (row-group statistics prune it).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    cat = catalog if isinstance(catalog, Catalog) else Catalog(catalog)
    table = cat.rows_of_many("embeddings", track_ids, partition=model, columns=["track_id", "embedding"])
    if table is None:
        return pa.table({"track_id": pa.array([], pa.string()), "embedding": pa.array([], pa.list_(pa.float32()))})
    table = table.filter(pc.is_in(table.column("track_id"), value_set=pa.array(list(track_ids), pa.string())))
    return table.sort_by("track_id")


# --------------------------------------------------------------------------- tasks
def _pack(root: str, model: str, track_ids: Sequence[str], scratch: str, block: int) -> tuple[int, int]:
    """Read one block's vectors from the catalog, L2-normalise and save them; returns (rows, dim)."""
    table = embedding_rows(root, model, track_ids)
    ids = np.asarray(table.column("track_id").to_pylist(), dtype="U")
    emb = table.column("embedding").combine_chunks()
    dim = emb.type.list_size
    vectors = emb.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    # A zero vector has no direction: it stays zero and scores 0 with everything.
    vectors = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    np.save(Path(scratch, f"vectors-{block:06d}.npy"), vectors)
    np.save(Path(scratch, f"ids-{block:06d}.npy"), ids)
    return int(vectors.shape[0]), int(dim)


def _partial(scratch: str, q: int, b: int, start_q: int, start_b: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top k of query block ``q`` against base block ``b``: (scores, global row indices), each (nq, k)."""
    import faiss

    faiss.omp_set_num_threads(1)  # one thread per task: Dask runs tasks in parallel
    xq = np.load(Path(scratch, f"vectors-{q:06d}.npy"))
    xb = np.load(Path(scratch, f"vectors-{b:06d}.npy"))
    kk = min(k + (1 if q == b else 0), xb.shape[0])  # one extra to drop the query itself
    scores, idx = faiss.knn(xq, xb, kk, metric=faiss.METRIC_INNER_PRODUCT)
    idx = idx.astype(np.int64) + start_b
    if q == b:
        self_rows = np.arange(xq.shape[0], dtype=np.int64)[:, None] + start_q
        scores = np.where(idx == self_rows, -np.inf, scores).astype(np.float32)
    return _top(scores, idx, k)


def _top(scores: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k best by score (ties: smaller index first), padded with (-inf, -1)."""
    # Excluded or missing entries carry -inf; their index is set to -1 so padding is recognisable.
    idx = np.where(np.isfinite(scores), idx, -1)
    order = np.lexsort((np.where(idx < 0, np.iinfo(np.int64).max, idx), -scores.astype(np.float64)), axis=-1)
    scores = np.take_along_axis(scores, order, axis=1)[:, :k]
    idx = np.take_along_axis(idx, order, axis=1)[:, :k]
    if scores.shape[1] < k:
        pad = k - scores.shape[1]
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        idx = np.pad(idx, ((0, 0), (0, pad)), constant_values=-1)
    return scores.astype(np.float32), idx


def _merge(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], k: int):
    """Running top k: the best k of two partial lists of the same query block."""
    return _top(np.concatenate([a[0], b[0]], axis=1), np.concatenate([a[1], b[1]], axis=1), k)


def _write(merged: tuple[np.ndarray, np.ndarray], scratch: str, q: int, starts: Sequence[int],
           out_file: str) -> int:
    """Write one query block's neighbours as a Parquet part; returns its row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    scores, idx = merged
    keep = idx >= 0
    rows, ranks = np.nonzero(keep)
    neighbors = idx[keep]
    # Map global row indices to track ids, loading only the blocks they fall in.
    block_of = np.searchsorted(np.asarray(starts), neighbors, side="right") - 1
    neighbor_ids = np.empty(neighbors.size, dtype=object)
    for blk in np.unique(block_of):
        ids = np.load(Path(scratch, f"ids-{blk:06d}.npy"))
        sel = block_of == blk
        neighbor_ids[sel] = ids[neighbors[sel] - starts[blk]]
    query_ids = np.load(Path(scratch, f"ids-{q:06d}.npy"))
    table = pa.table({
        "track_id": pa.array(query_ids[rows], pa.string()),
        "neighbor_id": pa.array(neighbor_ids, pa.string()),
        "rank": pa.array(ranks + 1, pa.int32()),
        "score": pa.array(scores[keep], pa.float32()),
    }, schema=neighbor_schema())
    tmp = out_file + ".tmp"
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, out_file)
    return table.num_rows


def neighbor_schema():
    """The Arrow schema of the neighbours table (column descriptions in the field metadata)."""
    import pyarrow as pa

    types = {"string": pa.string(), "int32": pa.int32(), "float32": pa.float32()}
    return pa.schema([pa.field(name, types[t], nullable=False, metadata={"description": d})
                      for name, (t, d) in NEIGHBOR_COLUMNS.items()])


# --------------------------------------------------------------------------- driver
def start_client(*, scheduler: str | None = None, workers: int = 2):
    """A Dask client: to ``scheduler`` when given, else to a new LocalCluster of ``workers`` processes.

    Returns ``(client, cluster)``; ``cluster`` is None for an external scheduler.
    """
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler), None
    # One BLAS/OpenMP thread per worker process, set before the process
    # starts (the nanny reads this when it spawns the worker).
    with dask.config.set({"distributed.nanny.pre-spawn-environ": dict(THREAD_ENV)}):
        # ":0": the scheduler's HTTP server always starts; a free port keeps
        # it from colliding with another cluster's 8787.
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0", silence_logs=logging.ERROR)
    return Client(cluster), cluster


def knn_blocked(catalog: str | os.PathLike[str] | Catalog, model: str, track_ids: Sequence[str], *, k: int,
                block_size: int, scratch: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                client) -> tuple[int, int]:
    """All-tracks kNN of the ``model`` embeddings of ``track_ids``; writes ``out_dir/part-NNNNNN.parquet``.

    Parameters
    ----------
    catalog : path or Catalog
        The catalog (visible to the workers at the same path).
    model : str
        The embedding partition.
    track_ids : sequence of str
        Tracks with an embedding of ``model``, in ``track_id`` order (:func:`embedding_track_ids`).
    k : int
        Neighbours per track (fewer when the catalog has at most k tracks).
    block_size : int
        Tracks per block; a task holds two blocks' vectors.
    scratch, out_dir : path
        Folders for the packed blocks and for the output parts; both must be
        visible to the workers.
    client : distributed.Client
        Where the tasks run.

    Returns
    -------
    (int, int)
        Rows written and the embedding dimension.
    """
    from dask import delayed

    scratch, out_dir = str(scratch), str(out_dir)
    root = (catalog if isinstance(catalog, Catalog) else Catalog(catalog)).url
    blocks = [list(track_ids[i:i + block_size]) for i in range(0, len(track_ids), block_size)]
    n_blocks = len(blocks)
    if n_blocks == 0:
        return 0, 0
    # Stage 1: pack the blocks (the workers read the catalog; the client only lists tracks).
    packed = client.gather(client.map(_pack, [root] * n_blocks, [model] * n_blocks, blocks, [scratch] * n_blocks,
                                      list(range(n_blocks)), pure=False))
    dims = {d for _, d in packed}
    if len(dims) != 1:
        raise ValueError(f"embedding parts of one model have different dimensions: {sorted(dims)}")
    starts = np.cumsum([0] + [n for n, _ in packed])[:-1].tolist()
    # Stage 2: query blocks × base blocks, merged per query block, written by the workers.
    partial, merge, write = (delayed(_partial, pure=True), delayed(_merge, pure=True),
                             delayed(_write, pure=True))
    writes = []
    for q in range(n_blocks):
        level = [partial(scratch, q, b, starts[q], starts[b], k) for b in range(n_blocks)]
        while len(level) > 1:
            level = [merge(level[i], level[i + 1], k) if i + 1 < len(level) else level[i]
                     for i in range(0, len(level), 2)]
        writes.append(write(level[0], scratch, q, starts, os.path.join(out_dir, f"part-{q:06d}.parquet")))
    log.info("kNN: %d tracks in %d blocks, %d block pairs", len(track_ids), n_blocks, n_blocks ** 2)
    rows = client.gather(client.compute(writes))
    return int(sum(rows)), int(dims.pop())


def default_block_size(n_tracks: int, dim: int, *, memory_bytes: float = 256e6) -> int:
    """Tracks per block so that a partial task's two blocks and score matrix fit in ``memory_bytes``."""
    # Two blocks of float32 vectors plus one float32 score matrix (block × block).
    b = int((-2 * dim + math.sqrt(4 * dim * dim + 4 * memory_bytes / 4)) / 2)
    return max(64, min(b, max(n_tracks, 64)))
