"""FAISS similarity indexes over a catalog's embeddings, and metadata-filtered search.

Cosine similarity = inner product of L2-normalised float32 vectors. One index per
embedding model is stored inside the catalog (``CATALOG/indexes/<embedding>/``,
FAISS's own file format plus a JSON sidecar and a Parquet file of track ids; see
:mod:`mirflow.index.store`), built as exact (``IndexFlatIP``), HNSW
(``IndexHNSWFlat``) or IVF-PQ with exact re-ranking (``IndexRefineFlat`` over
``IndexIVFPQ``), with search parameters calibrated for recall@10 ≥ 0.95.

Reads catalogs only through :mod:`mirflow.query` and :mod:`mirflow.catalog`;
never imports :mod:`mirflow.pipeline`.

Examples
--------
>>> from mirflow.index import build_index, similar          # doctest: +SKIP
>>> build_index("cat/", embedding="musicnn-msd", kind="hnsw")  # doctest: +SKIP
>>> similar("cat/", track_id="3f2a…", k=5, mix=True)          # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy
import pandas

from mirflow.catalog.layout import Catalog
from mirflow.index import search as _search
from mirflow.index import store as _store
from mirflow.index.harmony import KEY_RELATIONS, key_relation, mix_compatible_keys, tempo_compatible
from mirflow.index.search import FILTER_KEYS, SimilarityIndex, UnknownTrackError
from mirflow.index.store import (
    DEFAULT_EMBEDDING,
    DEFAULT_KIND,
    KINDS,
    IndexInfo,
    IndexNotFoundError,
    StaleIndexError,
    UnknownEmbeddingError,
)

__all__ = [
    "DEFAULT_EMBEDDING",
    "DEFAULT_KIND",
    "FILTER_KEYS",
    "KEY_RELATIONS",
    "KINDS",
    "IndexInfo",
    "IndexNotFoundError",
    "SimilarityIndex",
    "StaleIndexError",
    "UnknownEmbeddingError",
    "UnknownTrackError",
    "build_index",
    "index_status",
    "key_relation",
    "load_index",
    "mix_compatible_keys",
    "similar",
    "tempo_compatible",
    "update_index",
]

CatalogLike = str | os.PathLike[str] | Catalog


def build_index(catalog: CatalogLike, *, embedding: str = DEFAULT_EMBEDDING, kind: str = DEFAULT_KIND) -> IndexInfo:
    """Build the similarity index of one embedding model and store it in the catalog.

    Replaces any index of that embedding. IVF-PQ falls back to exact search when there
    are too few vectors to train it (``info.fallback`` says so).

    Parameters
    ----------
    catalog : path or Catalog
    embedding : str
        Embedding model, i.e. a partition of the ``embeddings`` table.
    kind : {'hnsw', 'ivfpq', 'exact'}

    Returns
    -------
    IndexInfo

    Raises
    ------
    UnknownEmbeddingError
        The catalog has no vectors of ``embedding``.
    """
    return _store.build(catalog, embedding=embedding, kind=kind)


def update_index(catalog: CatalogLike, *, embedding: str = DEFAULT_EMBEDDING) -> IndexInfo:
    """Add the catalog's new tracks to the stored index without rebuilding it.

    Rebuilds (``info.action == 'rebuilt'``, ``info.message`` says why) when vectors of
    indexed tracks changed or tracks left the catalog (FAISS graph and IVF indexes
    cannot replace vectors in place), when an IVF-PQ fallback now has enough vectors
    to train, or when an IVF-PQ index outgrew its training set fourfold.

    Raises
    ------
    IndexNotFoundError
        No index of ``embedding`` was built.
    """
    return _store.update(catalog, embedding=embedding)


def load_index(catalog: CatalogLike, *, embedding: str = DEFAULT_EMBEDDING, check_stale: bool = True,
               on_stale: str = "warn") -> SimilarityIndex:
    """Load the stored index of ``embedding``; ``.search(vectors, k)`` queries it.

    Parameters
    ----------
    check_stale : bool
        Compare the catalog's ``(track_id, model_version)`` pairs with those indexed
        (reads two columns of the embeddings partition).
    on_stale : {'warn', 'error', 'ignore'}
        What a stale index does: log a warning (``index.info.stale`` is set), raise
        :class:`StaleIndexError`, or nothing.

    Raises
    ------
    IndexNotFoundError
        No index of ``embedding`` was built.
    """
    return _search.load(catalog, embedding=embedding, check_stale=check_stale, on_stale=on_stale)


def index_status(catalog: CatalogLike) -> list[dict]:
    """Per embedding model of the catalog: indexed or not, kind, size, parameters, stale or fresh."""
    return _store.status(catalog)


def similar(catalog: CatalogLike, *, track_id: str | None = None, vector: numpy.ndarray | None = None,
            k: int = 10, where: str | None = None, filters: Mapping[str, object] | None = None,
            mix: bool = False, embedding: str = DEFAULT_EMBEDDING, query_tempo_bpm: float | None = None,
            query_key: str | None = None, index: SimilarityIndex | None = None) -> pandas.DataFrame:
    """The ``k`` tracks most similar to a catalog track or a vector, best first, with the why.

    Parameters
    ----------
    catalog : path or Catalog
    track_id : str, optional
        Query by a catalog track (its stored vector; its tempo and key for ``mix``). The
        track itself is never returned.
    vector : numpy.ndarray, optional
        Query by a vector of the embedding's dimension (normalised here). Exactly one of
        ``track_id`` and ``vector``.
    k : int
        Neighbours to return (fewer when fewer tracks pass the filters).
    where : str, optional
        SQL predicate over the ``tracks`` view, run in DuckDB on the catalog. Trusted text
        (the CLI user's own); never pass text from a remote client here, use ``filters``.
    filters : mapping, optional
        Structured filters, turned into SQL with bound parameters only: ``tempo_min``,
        ``tempo_max`` (BPM), ``key`` (any spelling :func:`mirflow.labels.parse_key` reads,
        e.g. ``"A minor"``), ``camelot`` (e.g. ``"8A"``). Unknown keys raise ``ValueError``.
    mix : bool
        Harmonic-mixing query: neighbour tempo within ±6 % of the query tempo or of its half
        or double, and a Camelot-compatible key (same code, ±1 with the same letter, or the
        same number with the other letter); see :mod:`mirflow.index.harmony`.
    embedding : str
        Embedding model.
    query_tempo_bpm, query_key : optional
        Tempo and key of a ``vector`` query (for ``mix``, ``tempo_ratio``, ``key_relation``);
        taken from the ``tracks`` table for a ``track_id`` query.
    index : SimilarityIndex, optional
        An index already loaded (a server keeps one); by default the stored index is loaded,
        or, when none was built, an exact search runs over the catalog's vectors (logged).

    Returns
    -------
    pandas.DataFrame
        One row per neighbour: ``rank`` (1 = most similar), ``track_id``, ``path``, ``score``
        (cosine similarity), ``distance`` (1 − score), ``tempo_bpm``, ``key``,
        ``key_camelot``, ``tempo_ratio`` (neighbour tempo / query tempo, null when either is
        null) and ``key_relation`` (``same``, ``relative``, ``dominant``, ``subdominant``,
        ``parallel``, ``other``; null when either key is null). Every row satisfies the filters.

    Raises
    ------
    UnknownTrackError
        ``track_id`` is not in the catalog or has no vector of ``embedding``.
    UnknownEmbeddingError
        The catalog has no vectors of ``embedding``.
    ValueError
        Bad ``k``, ``filters`` or ``vector``.
    mirflow.errors.ConfigError
        ``where`` is not valid SQL over ``tracks``.
    """
    return _search.similar(catalog, track_id=track_id, vector=vector, k=k, where=where, filters=filters,
                           mix=mix, embedding=embedding, query_tempo_bpm=query_tempo_bpm,
                           query_key=query_key, index=index)
