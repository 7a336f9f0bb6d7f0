"""Feature matrices from catalog tables: embedding vectors and numeric ``tracks`` columns.

A feature is named by the user as one of

* an **embedding model** of the catalog (a partition of ``embeddings``,
  e.g. ``musicnn-msd`` or ``descriptor``): its vector, one value per dimension;
* a numeric **tracks column** (``tempo_bpm``, ``onset_rate_per_s``, …); a
  fixed-size list column (``mfcc_mean``, ``chroma_mean``) is expanded to one
  value per entry.

Names are validated against the catalog's embedding partitions and the
``tracks`` schema (:func:`mirflow.catalog.table_schema`), never guessed.
Rows are read per track from the track's own parts (the catalog's layout
names each part by its track id), so a batch of a few hundred tracks reads a
few hundred small files, however large the catalog.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mirflow.catalog import Catalog, table_schema
from mirflow.ml.errors import FeatureError, IncompatibleModelError

log = logging.getLogger(__name__)

#: Default embedding models, in order of preference: musicnn's learned
#: vector when the pipeline computed it, else the descriptor vector.
DEFAULT_EMBEDDINGS = ("musicnn-msd", "descriptor")

_NUMERIC_SCALARS = {"bool", "int16", "int32", "int64", "float32", "float64"}
_FIXED = re.compile(r"^(\w+)\[(\d+)\]$")


@dataclass(frozen=True)
class Feature:
    """One named block of the feature matrix.

    Attributes
    ----------
    name : str
        Embedding model name or ``tracks`` column name.
    kind : {"embedding", "column"}
    width : int
        Number of values it contributes (embedding dimension, list length, or 1).
    type : str
        The schema type string (``float32[200]`` for an embedding of 200 values).
    model_version : str or None
        For an embedding: the ``model_version`` of every vector it was read with.
    """

    name: str
    kind: str
    width: int
    type: str
    model_version: str | None = None

    @property
    def value_names(self) -> list[str]:
        """One name per column of the matrix: ``name`` or ``name[i]``."""
        if self.kind == "column" and not _FIXED.match(self.type):
            return [self.name]
        return [f"{self.name}[{i}]" for i in range(self.width)]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Feature:
        return cls(name=d["name"], kind=d["kind"], width=int(d["width"]), type=d["type"],
                   model_version=d.get("model_version"))


def split_names(features: str | Iterable[str] | None) -> list[str] | None:
    """``"a,b"`` or ``["a", "b,c"]`` → ``["a", "b", "c"]`` (order kept, duplicates dropped)."""
    if features is None:
        return None
    items = [features] if isinstance(features, str) else list(features)
    out: list[str] = []
    for item in items:
        for name in str(item).split(","):
            name = name.strip()
            if name and name not in out:
                out.append(name)
    return out or None


def numeric_columns() -> list[str]:
    """``tracks`` columns usable as features (numeric scalars and fixed-size numeric lists)."""
    return [c.name for c in table_schema("tracks").columns if _column_width(c.type) is not None]


def _column_width(type_str: str) -> int | None:
    if type_str in _NUMERIC_SCALARS:
        return 1
    m = _FIXED.match(type_str)
    if m and m.group(1) in _NUMERIC_SCALARS:
        return int(m.group(2))
    return None


def embedding_versions(cat: Catalog, model: str) -> dict[str, tuple[int, int]]:
    """``model_version -> (rows, dimension)`` of an embedding partition (empty when absent)."""
    if model not in cat.partitions("embeddings"):
        return {}
    # read_table: the partition's compacted rows plus its live loose parts.
    data = cat.read_table("embeddings", columns=["model_version", "embedding"], partition=model)
    if data.num_rows == 0:
        return {}
    import duckdb

    con = duckdb.connect()
    try:
        con.register("partition_rows", data)
        rows = con.execute(
            "SELECT model_version, count(*), max(len(embedding::FLOAT[])) "
            "FROM partition_rows GROUP BY model_version ORDER BY model_version"
        ).fetchall()
    finally:
        con.close()
    return {str(v): (int(n), int(d)) for v, n, d in rows}


def resolve_features(cat: Catalog, names: Sequence[str] | None) -> list[Feature]:
    """Validate feature names against the catalog and the ``tracks`` schema.

    Parameters
    ----------
    cat : Catalog
    names : sequence of str or None
        Embedding model names and/or ``tracks`` columns; None picks the
        default (the first of :data:`DEFAULT_EMBEDDINGS` the catalog has).

    Raises
    ------
    FeatureError
        An unknown name, a non-numeric column, an embedding with several
        model versions in the catalog, or no default available.
    """
    models = cat.partitions("embeddings")
    if names is None:
        default = next((m for m in DEFAULT_EMBEDDINGS if m in models), None)
        if default is None:
            raise FeatureError(
                f"catalog {cat.url} has no {' or '.join(DEFAULT_EMBEDDINGS)} embeddings; "
                f"name features with --features (embedding models here: {', '.join(models) or 'none'}; "
                "or numeric tracks columns such as mfcc_mean, onset_rate_per_s)")
        names = [default]
    tracks = table_schema("tracks")
    out = []
    for name in names:
        if name in models:
            versions = embedding_versions(cat, name)
            if len(versions) != 1:
                found = ", ".join(f"{v} ({n} tracks)" for v, (n, _) in versions.items()) or "none"
                raise FeatureError(
                    f"embedding {name!r} has {len(versions)} model versions in {cat.url}: {found}; "
                    "re-analyze with --force so that every track uses one")
            (version, (_, dim)), = versions.items()
            out.append(Feature(name=name, kind="embedding", width=dim, type=f"float32[{dim}]",
                               model_version=version))
        elif name in tracks.names:
            col = tracks.column(name)
            width = _column_width(col.type)
            if width is None:
                raise FeatureError(
                    f"tracks column {name!r} is of type {col.type}, not numeric; numeric columns: "
                    f"{', '.join(numeric_columns())}")
            out.append(Feature(name=name, kind="column", width=width, type=col.type))
        else:
            raise FeatureError(
                f"unknown feature {name!r}: not an embedding model of {cat.url} "
                f"({', '.join(models) or 'none'}) nor a numeric tracks column "
                f"(e.g. {', '.join(numeric_columns()[:8])}, …)")
    return out


def feature_names(features: Sequence[Feature]) -> list[str]:
    """Column names of the matrix :func:`load_features` builds."""
    return [n for f in features for n in f.value_names]


def load_features(cat: Catalog, features: Sequence[Feature],
                  track_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The feature matrix of ``track_ids``.

    Returns
    -------
    X : ndarray of float64, shape (len(track_ids), n_values)
        NaN where a column value is null (the pipeline's imputer fills it).
    usable : ndarray of bool
        False for a track that is not committed (no ``tracks`` part) or lacks
        one of the embeddings; its row is all NaN and must not be used.

    Raises
    ------
    IncompatibleModelError
        A vector's model_version or length differs from the feature's.
    """
    n = len(track_ids)
    width = sum(f.width for f in features)
    X = np.full((n, width), np.nan)
    row_of = {t: i for i, t in enumerate(track_ids)}
    columns = [f for f in features if f.kind == "column"]
    tracks = _read_parts(cat, "tracks", None, track_ids, ["track_id"] + [f.name for f in columns])
    usable = np.zeros(n, dtype=bool)
    rows = np.zeros(0, dtype=np.intp)
    if tracks is not None:
        rows = np.array([row_of[t] for t in tracks.column("track_id").to_pylist()], dtype=np.intp)
        usable[rows] = True
    offset = 0
    for f in features:
        block = slice(offset, offset + f.width)
        offset += f.width
        if f.kind == "column":
            if len(rows):
                X[rows, block] = _column_values(tracks.column(f.name), f)
            continue
        emb = _read_parts(cat, "embeddings", f.name, track_ids, ["track_id", "model_version", "embedding"])
        have = np.zeros(n, dtype=bool)
        if emb is not None and emb.num_rows:
            versions = set(emb.column("model_version").to_pylist())
            if versions != {f.model_version}:
                raise IncompatibleModelError(
                    f"embedding {f.name!r}: the classifier was trained on model_version "
                    f"{f.model_version}, the catalog holds {', '.join(sorted(versions))}")
            vectors = emb.column("embedding").combine_chunks()
            if vectors.type.list_size != f.width:
                raise IncompatibleModelError(
                    f"embedding {f.name!r} has {vectors.type.list_size} dimensions, the classifier expects {f.width}")
            erows = np.array([row_of[t] for t in emb.column("track_id").to_pylist()], dtype=np.intp)
            values = vectors.flatten().to_numpy(zero_copy_only=False).reshape(-1, f.width)
            X[erows, block] = values
            have[erows] = True
        usable &= have
    X[~usable] = np.nan
    return X, usable


def _read_parts(cat: Catalog, table: str, partition: str | None, track_ids: Sequence[str],
                columns: list[str]) -> pa.Table | None:
    """Rows of ``track_ids``, loose or compacted (:meth:`Catalog.rows_of_many`); ``None`` when none has rows."""
    try:
        data = cat.rows_of_many(table, track_ids, partition=partition, columns=columns)
    except (KeyError, pa.ArrowInvalid) as exc:
        # A part written before a column existed: say which, not a pyarrow trace.
        raise IncompatibleModelError(f"catalog {cat.url}: {table} parts lack a feature column: {exc}") from None
    if data is None:
        return None
    return data.filter(pc.is_in(data.column("track_id"), value_set=pa.array(list(track_ids), type=pa.string())))


def _column_values(col: pa.ChunkedArray, f: Feature) -> np.ndarray:
    if f.width == 1 and not _FIXED.match(f.type):
        return pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)[:, None]
    # Fixed-size lists: a null list becomes a row of NaN (imputed later).
    nan_row = [np.nan] * f.width
    return np.array([v if v is not None else nan_row for v in col.to_pylist()], dtype=np.float64)
