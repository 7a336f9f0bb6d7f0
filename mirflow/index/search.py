"""Nearest-neighbour search with metadata filters, and the neighbour table of :func:`similar`."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

import faiss
import numpy as np
import pandas as pd

from mirflow.catalog.layout import Catalog
from mirflow.errors import CatalogError, ConfigError, MirflowError
from mirflow.index import store
from mirflow.index.harmony import key_relation, mix_compatible_keys, tempo_ranges
from mirflow.index.store import IndexInfo, IndexNotFoundError, StaleIndexError
from mirflow.labels import parse_key

log = logging.getLogger(__name__)

#: Keys of the structured ``filters`` of :func:`similar` (the HTTP API's safe form of ``where``).
FILTER_KEYS = ("tempo_min", "tempo_max", "key", "camelot")
#: A filter that leaves at most this many tracks, or less than EXACT_SUBSET_FRACTION of the index,
#: is searched exactly over just those vectors: one matrix-vector product over ≤ 10k × 200 floats
#: takes ≈ 1 ms on one core here, less than a filtered graph search that must skip most nodes.
EXACT_SUBSET_MAX = 10_000
EXACT_SUBSET_FRACTION = 0.05
#: Filtered approximate search widens its beam by 1 / (share of tracks allowed), up to this factor.
FILTER_WIDEN_MAX = 32

COLUMNS = ["rank", "track_id", "path", "score", "distance", "tempo_bpm", "key", "key_camelot",
           "tempo_ratio", "key_relation"]


class UnknownTrackError(CatalogError):
    """The query track (id or path) is not in the catalog, or has no vector of the embedding."""


class SimilarityIndex:
    """A loaded (or in-memory exact) FAISS index and the track ids of its rows.

    FAISS ids are row numbers: row ``i`` holds the vector of ``track_ids[i]``.

    Attributes
    ----------
    info : IndexInfo
        What the index holds (kind, parameters, catalog state); ``info.stale`` says whether
        the catalog's embeddings changed since it was written.
    track_ids : numpy.ndarray
        Track id of each row (object array of str).
    index : faiss.Index
        The FAISS index (downcast), search parameters applied.
    """

    def __init__(self, index: faiss.Index, track_ids: np.ndarray, info: IndexInfo) -> None:
        # Index objects FAISS's Python layer returns are already of their concrete class and own
        # their memory; faiss.downcast_index would make a second, non-owning wrapper.
        self.index = index
        self.track_ids = np.asarray(track_ids, dtype=object)
        self.info = info
        self._position: dict[str, int] | None = None

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def __contains__(self, track_id: object) -> bool:
        return track_id in self.positions

    def __repr__(self) -> str:
        return (f"SimilarityIndex({self.info.embedding!r}, kind={self.info.kind!r}, "
                f"type={self.info.index_type}, n={len(self)}, stale={self.info.stale})")

    @property
    def stale(self) -> bool:
        return self.info.stale

    @property
    def dimension(self) -> int:
        return int(self.index.d)

    @property
    def positions(self) -> dict[str, int]:
        """``track_id -> row``."""
        if self._position is None:
            self._position = {t: i for i, t in enumerate(self.track_ids.tolist())}
        return self._position

    def vector(self, track_id: str) -> np.ndarray:
        """The stored (normalised) vector of an indexed track."""
        try:
            row = self.positions[track_id]
        except KeyError:
            raise UnknownTrackError(f"track {track_id!r} is not in the {self.info.embedding} index") from None
        return store.stored_vectors(self.index)[row].copy()

    def normalise(self, vectors: np.ndarray) -> np.ndarray:
        """Queries as a C-contiguous, L2-normalised float32 ``(n, d)`` copy."""
        q = np.array(vectors, dtype=np.float32, copy=True, ndmin=2)
        if q.ndim != 2 or q.shape[1] != self.dimension:
            raise ValueError(f"query vectors must have {self.dimension} values each "
                             f"(embedding {self.info.embedding}), got shape {np.shape(vectors)}")
        if not np.isfinite(q).all():
            raise ValueError("query vectors must be finite")
        q = np.ascontiguousarray(q)
        faiss.normalize_L2(q)
        return q

    def search(self, vectors: np.ndarray, k: int, *, allowed: Iterable[str] | None = None,
               exclude: Iterable[str] = ()) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar indexed tracks of each query vector.

        Parameters
        ----------
        vectors : numpy.ndarray
            ``(d,)`` or ``(n, d)`` query vectors (normalised here).
        k : int
            Neighbours per query.
        allowed : iterable of str, optional
            Only these track ids may be returned (ids not in the index are ignored).
        exclude : iterable of str
            Track ids never returned (e.g. the query track).

        Returns
        -------
        scores : numpy.ndarray
            ``(n, k)`` float32 cosine similarities, best first; NaN where fewer than ``k``
            tracks qualify.
        track_ids : numpy.ndarray
            ``(n, k)`` object array of track ids; ``None`` where fewer than ``k`` qualify.
        """
        if k < 1:
            raise ValueError(f"k must be ≥ 1, got {k}")
        queries = self.normalise(vectors)
        pos = self.positions
        excluded = np.array(sorted({pos[t] for t in exclude if t in pos}), dtype=np.int64)
        allowed_rows = None
        if allowed is not None:
            allowed_rows = np.array(sorted({pos[t] for t in allowed if t in pos}), dtype=np.int64)
            allowed_rows = np.setdiff1d(allowed_rows, excluded, assume_unique=True)
        scores = np.full((len(queries), k), np.nan, dtype=np.float32)
        ids = np.full((len(queries), k), None, dtype=object)
        for r, q in enumerate(queries):
            rows, sims = self._search_one(q, k, allowed_rows, excluded)
            scores[r, :len(rows)] = sims
            ids[r, :len(rows)] = self.track_ids[rows]
        return scores, ids

    # ------------------------------------------------------------------ internals
    def _exact(self, q: np.ndarray, k: int, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        stored = store.stored_vectors(self.index)
        subset = stored if rows is None else stored[rows]
        if len(subset) == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        flat = faiss.IndexFlatIP(self.dimension)
        flat.add(np.ascontiguousarray(subset))
        sims, found = flat.search(q[None], min(k, len(subset)))
        found = found[0]
        keep = found >= 0
        found, sims = found[keep], sims[0][keep]
        return (found if rows is None else rows[found]), sims

    def _params(self, selector: faiss.IDSelector | None, share: float) -> faiss.SearchParameters:
        widen = min(FILTER_WIDEN_MAX, 1.0 / max(share, 1e-9))
        p = self.info.params
        if isinstance(self.index, faiss.IndexHNSW):
            ef = int(p.get("efSearch", 64))
            return faiss.SearchParametersHNSW(sel=selector, efSearch=min(int(math.ceil(ef * widen)), max(ef, 8192)))
        if isinstance(self.index, faiss.IndexRefine):
            nlist = faiss.extract_index_ivf(self.index).nlist
            ivf = faiss.SearchParametersIVF(sel=selector, nprobe=int(min(nlist, math.ceil(p.get("nprobe", 8) * widen))))
            return faiss.IndexRefineSearchParameters(k_factor=float(p.get("k_factor", 4)), base_index_params=ivf)
        return faiss.SearchParameters(sel=selector)

    def _search_one(self, q: np.ndarray, k: int, allowed: np.ndarray | None,
                    excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(self)
        if allowed is None:
            want = min(k, n - len(excluded))
            if want <= 0:
                return np.empty(0, np.int64), np.empty(0, np.float32)
            sims, found = self.index.search(q[None], min(n, k + len(excluded)))
            keep = (found[0] >= 0) & ~np.isin(found[0], excluded)
            rows, sims = found[0][keep][:k], sims[0][keep][:k]
            if len(rows) < want:
                # The graph search came back short (rare; a disconnected HNSW region): exact instead.
                log.info("approximate search returned %d of %d neighbours; exact search instead", len(rows), want)
                rows, sims = self._exact(q, k + len(excluded), None)
                keep = ~np.isin(rows, excluded)
                rows, sims = rows[keep][:k], sims[keep][:k]
            return rows, sims
        m = len(allowed)
        if m == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        if m <= EXACT_SUBSET_MAX or m < EXACT_SUBSET_FRACTION * n or isinstance(self.index, faiss.IndexFlat):
            return self._exact(q, k, allowed)
        selector = faiss.IDSelectorBatch(allowed)
        params = self._params(selector, m / n)
        sims, found = self.index.search(q[None], min(k, m), params=params)
        keep = found[0] >= 0
        rows, sims = found[0][keep], sims[0][keep]
        if len(rows) < min(k, m):
            log.info("filtered search returned %d of %d neighbours; exact search over the %d allowed tracks",
                     len(rows), min(k, m), m)
            return self._exact(q, k, allowed)
        return rows, sims


# ----------------------------------------------------------------------------- loading
def load(catalog: str | os.PathLike[str] | Catalog, *, embedding: str = store.DEFAULT_EMBEDDING,
         check_stale: bool = True, on_stale: str = "warn") -> SimilarityIndex:
    """See :func:`mirflow.index.load_index`."""
    if on_stale not in ("warn", "error", "ignore"):
        raise ValueError(f"on_stale must be 'warn', 'error' or 'ignore', got {on_stale!r}")
    cat = store.open_catalog(catalog)
    store.check_embedding(cat, embedding)
    sidecar, path, index, ids, versions = store.read_stored(cat, embedding)
    stale = store.staleness(cat, embedding, sidecar, ids, versions) if check_stale else None
    if stale:
        if on_stale == "error":
            raise StaleIndexError(stale)
        if on_stale == "warn":
            log.warning(stale)
    info = store._info(sidecar, path, action="loaded", stale=stale is not None, stale_reason=stale)
    return SimilarityIndex(index, ids, info)


def exact_in_memory(catalog: str | os.PathLike[str] | Catalog, *,
                    embedding: str = store.DEFAULT_EMBEDDING) -> SimilarityIndex:
    """An exact (IndexFlatIP) index over the catalog's current vectors, not stored."""
    cat = store.open_catalog(catalog)
    ids, versions, vectors = store.read_vectors(cat, embedding)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    state = store.catalog_state(cat, ids, versions)
    now = store._now()
    info = IndexInfo(embedding=embedding, kind="exact", index_type="IndexFlatIP", count=len(ids),
                     dimension=int(vectors.shape[1]), model_versions=tuple(sorted(set(versions.tolist()))),
                     params={}, fallback=None, catalog_state=state, built_at=now, updated_at=now,
                     path=None, action="in-memory",
                     message=f"no index built: exact search over {len(ids)} {embedding} vectors")
    return SimilarityIndex(index, ids, info)


# ----------------------------------------------------------------------------- filters
def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"filter {name} must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"filter {name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"filter {name} must be finite, got {value!r}")
    return number


def filters_sql(filters: Mapping[str, object] | None) -> tuple[list[str], list[Any]]:
    """SQL conditions over ``tracks`` and their bound parameters (``?``) for structured filters.

    Values never enter the SQL text: every one is a bound parameter.

    Raises
    ------
    ValueError
        On an unknown key or a value of the wrong type / spelling.
    """
    if not filters:
        return [], []
    unknown = sorted(set(filters) - set(FILTER_KEYS))
    if unknown:
        raise ValueError(f"unknown filter(s) {', '.join(map(repr, unknown))}; known: {', '.join(FILTER_KEYS)}")
    conditions: list[str] = []
    params: list[Any] = []
    for name in FILTER_KEYS:
        value = filters.get(name)
        if value is None:
            continue
        if name == "tempo_min":
            conditions.append("tempo_bpm >= ?")
            params.append(_number(name, value))
        elif name == "tempo_max":
            conditions.append("tempo_bpm <= ?")
            params.append(_number(name, value))
        else:
            if not isinstance(value, str):
                raise ValueError(f"filter {name} must be a string, got {value!r}")
            key = parse_key(value)
            if key is None:
                raise ValueError(f"filter {name}={value!r} names no key")
            if name == "camelot" and key.camelot != value.strip().upper().lstrip("0"):
                raise ValueError(f"filter camelot must be a Camelot code such as '8A', got {value!r}")
            # The key column holds the mir_eval spelling; any accepted spelling maps onto it.
            conditions.append("key = ?")
            params.append(key.mir_eval)
    return conditions, params


def mix_sql(query_tempo_bpm: float | None, query_key: str | None) -> tuple[list[str], list[Any]]:
    """Conditions of the harmonic-mixing query (tempo ±6 % incl. half/double, Camelot-compatible key)."""
    if query_tempo_bpm is None or (isinstance(query_tempo_bpm, float) and math.isnan(query_tempo_bpm)) \
            or query_key is None or (isinstance(query_key, float) and math.isnan(query_key)):
        raise MirflowError("a harmonic-mixing query (--mix) needs the query's tempo and key, "
                           f"but its tempo is {query_tempo_bpm!r} and its key {query_key!r}")
    ranges = tempo_ranges(float(query_tempo_bpm))
    keys = mix_compatible_keys(query_key)
    tempo = "(" + " OR ".join("tempo_bpm BETWEEN ? AND ?" for _ in ranges) + ")"
    key = f"key IN ({', '.join('?' for _ in keys)})"
    return [tempo, key], [v for r in ranges for v in r] + keys


# ----------------------------------------------------------------------------- similar()
def similar(catalog: str | os.PathLike[str] | Catalog, *, track_id: str | None = None,
            vector: np.ndarray | None = None, k: int = 10, where: str | None = None,
            filters: Mapping[str, object] | None = None, mix: bool = False,
            embedding: str = store.DEFAULT_EMBEDDING, query_tempo_bpm: float | None = None,
            query_key: str | None = None, index: SimilarityIndex | None = None) -> pd.DataFrame:
    """See :func:`mirflow.index.similar`."""
    import duckdb

    from mirflow.query import connect

    if (track_id is None) == (vector is None):
        raise ValueError("give exactly one of track_id or vector")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    conditions, params = filters_sql(filters)
    cat = store.open_catalog(catalog)
    store.check_embedding(cat, embedding)
    if index is None:
        try:
            index = load(cat, embedding=embedding)
        except IndexNotFoundError:
            index = exact_in_memory(cat, embedding=embedding)
            log.info("%s (build one with `mirflow index build %s --embedding %s`)",
                     index.info.message, cat.url, embedding)
    # One connection per call, closed here: the HTTP API calls this per request.
    con = connect(cat)
    try:
        # Audio no path holds any more (a file rewritten since) is not offered as a neighbour: its
        # vector may still be in the index, which is keyed by track id (see CURRENT_TRACKS_VIEW).
        exclude: list[str] = [r[0] for r in con.execute(
            "SELECT track_id FROM tracks EXCEPT SELECT track_id FROM current_tracks").fetchall()]
        if track_id is not None:
            row = con.execute("SELECT tempo_bpm, key FROM tracks WHERE track_id = ?", [track_id]).fetchone()
            if track_id in index:
                query = index.vector(track_id)
            else:
                query = _catalog_vector(cat, embedding, track_id)
                if query is None:
                    if row is None:
                        raise UnknownTrackError(f"no track {track_id!r} in catalog {cat.url}")
                    raise UnknownTrackError(f"track {track_id!r} has no {embedding} embedding")
                log.warning("track %s is not in the %s index (it is newer); searching with its catalog vector",
                            track_id, embedding)
            query_tempo_bpm, query_key = row if row is not None else (None, None)
            exclude.append(track_id)
        else:
            query = np.asarray(vector, dtype=np.float32)
        if mix:
            more, more_params = mix_sql(query_tempo_bpm, query_key)
            conditions += more
            params += more_params
        if where:
            # The CLI user's own SQL over their own catalog; the HTTP API passes `filters` instead.
            conditions.insert(0, f"({where})")
        allowed = None
        if conditions:
            sql = "SELECT track_id FROM current_tracks WHERE " + " AND ".join(conditions)
            try:
                allowed = [r[0] for r in con.execute(sql, params).fetchall()]
            except duckdb.Error as exc:
                raise ConfigError(f"invalid filter (where: {where!r}): {str(exc).splitlines()[0]}") from None
        scores, ids = index.search(query, int(k), allowed=allowed, exclude=exclude)
        found = [(t, float(s)) for t, s in zip(ids[0], scores[0], strict=True) if t is not None]
        return _neighbour_table(con, found, query_tempo_bpm, query_key)
    finally:
        con.close()


def _catalog_vector(cat: Catalog, embedding: str, track_id: str) -> np.ndarray | None:
    # rows_of: the track's loose part, or a point look-up in the compacted files.
    data = cat.rows_of("embeddings", track_id, partition=embedding)
    if data.num_rows == 0:
        return None
    rows = [i for i, t in enumerate(data.column("track_id").to_pylist()) if t == track_id]
    if not rows:
        return None
    return np.asarray(data.column("embedding")[rows[0]].as_py(), dtype=np.float32)


def _neighbour_table(con, found: list[tuple[str, float]], query_tempo_bpm: float | None,
                     query_key: str | None) -> pd.DataFrame:
    ids = [t for t, _ in found]
    meta = con.execute(
        "SELECT track_id, path, tempo_bpm, key, key_camelot FROM current_tracks WHERE list_contains(?::VARCHAR[], track_id)",
        [ids]).df().drop_duplicates("track_id").set_index("track_id") if ids else None
    rows = []
    q_tempo = float(query_tempo_bpm) if query_tempo_bpm is not None and not pd.isna(query_tempo_bpm) else None
    for rank, (tid, score) in enumerate(found, start=1):
        m = meta.loc[tid] if meta is not None and tid in meta.index else None
        tempo = None if m is None or pd.isna(m["tempo_bpm"]) else float(m["tempo_bpm"])
        key = None if m is None or pd.isna(m["key"]) else str(m["key"])
        score = float(np.clip(score, -1.0, 1.0))
        rows.append({
            "rank": rank, "track_id": tid, "path": None if m is None else m["path"],
            "score": score, "distance": 1.0 - score, "tempo_bpm": tempo, "key": key,
            "key_camelot": None if m is None or pd.isna(m["key_camelot"]) else m["key_camelot"],
            "tempo_ratio": tempo / q_tempo if tempo is not None and q_tempo else None,
            "key_relation": key_relation(query_key if query_key is None or not pd.isna(query_key) else None, key),
        })
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["rank"] = frame["rank"].astype("int64")
    for col in ("score", "distance", "tempo_bpm", "tempo_ratio"):
        frame[col] = frame[col].astype("float64")
    return frame
