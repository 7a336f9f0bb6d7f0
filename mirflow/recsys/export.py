"""``mirflow export recsys``: item features and an all-tracks kNN table for a recommender.

The export folder holds:

``items.parquet``
    One row per track: standardized numeric features of ``tracks``,
    encoded key / mode / Camelot / meter, one embedding as a fixed-size
    list, and the duplicate grouping (``is_canonical``, ``duplicate_group``).
``neighbors/part-*.parquet``
    For every track with an embedding, its ``k`` nearest other tracks by
    cosine similarity (``track_id``, ``neighbor_id``, ``rank``, ``score``),
    computed in blocks on Dask (:mod:`mirflow.recsys.knn`).
``columns.json``
    What every column is, its type and how it was encoded, including the
    mean and standard deviation used to standardize each feature.

The folder is written under a temporary name next to ``out`` and renamed
into place at the end, so a reader sees the old export or the new one,
never half of one. An existing ``out`` is replaced only when it is empty or
a previous export (its ``columns.json`` says so): a user's data is never
overwritten.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mirflow._version import __version__
from mirflow.catalog.layout import Catalog, replace_folder
from mirflow.catalog.schema import table_schema
from mirflow.errors import CatalogError, ConfigError
from mirflow.query import connect
from mirflow.recsys.duplicates import DEFAULT_THRESHOLD, find_duplicates
from mirflow.recsys.knn import (
    NEIGHBOR_COLUMNS,
    default_block_size,
    embedding_rows,
    embedding_track_ids,
    knn_blocked,
    start_client,
)

log = logging.getLogger(__name__)

__all__ = ["EXPORT_FORMAT", "ExportSummary", "export_recsys", "is_export"]

EXPORT_FORMAT = "mirflow-recsys-export"
EXPORT_FORMAT_VERSION = 1
COLUMNS_FILE = "columns.json"
#: Embedding models tried, in order, when none is named.
EMBEDDING_PREFERENCE = ("musicnn-msd", "descriptor")
#: Numeric ``tracks`` columns that are not item features: container and run
#: facts (they describe the file or the analysis, not the music), counts
#: that only restate duration × tempo, and integer codes exported as
#: categories instead (key_tonic, meter).
NOT_FEATURES = frozenset({
    "file_size_bytes", "sample_rate_hz", "channels", "bit_rate_bps", "analysis_sample_rate_hz",
    "analysis_seconds", "beat_count", "downbeat_count", "key_tonic", "meter",
})
_SCALAR_TYPES = ("float64", "float32", "int64", "int32", "int16")
_VECTOR_TYPE = re.compile(r"^float(32|64)\[(\d+)\]$")
PITCHES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


@dataclass(frozen=True)
class ExportSummary:
    """What :func:`export_recsys` wrote."""

    out: Path
    items: int
    neighbor_rows: int
    k: int
    embedding: str
    dim: int
    duplicate_groups: int
    duplicate_tracks: int
    seconds: float


def is_export(folder: str | os.PathLike[str]) -> bool:
    """True when ``folder`` holds a previous recsys export (its columns.json names the format)."""
    path = Path(folder) / COLUMNS_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("format") == EXPORT_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not is_export(out):
        raise ConfigError(f"--out {out} is not empty and is not a previous recsys export; "
                          "refusing to overwrite it (choose a new or empty folder)")


def _pick_embedding(catalog: Catalog, embedding: str | None) -> str:
    models = catalog.partitions("embeddings")
    if embedding is not None:
        if embedding not in models:
            raise ConfigError(f"the catalog has no embedding {embedding!r}; it has {models or 'none'}")
        return embedding
    for name in EMBEDDING_PREFERENCE:
        if name in models:
            return name
    if not models:
        raise CatalogError(f"catalog {catalog.url} has no embeddings: analyze it with a pipeline that runs "
                           "the 'embeddings' extractor")
    return models[0]


# --------------------------------------------------------------------------- features
#: ``tracks`` columns the categorical encodings read.
_CATEGORY_SOURCES = ("key_tonic", "key_mode", "key_camelot", "meter")


def _read_tracks(con) -> pd.DataFrame:
    """The ``tracks`` columns the export uses (not the lineage JSON and run facts), in track_id order,
    of the audio the catalog's paths hold now (``current_tracks``).

    A catalog written before a column existed lacks it; it is read as null.
    """
    spec = table_schema("tracks")
    present = {row[0] for row in con.sql("DESCRIBE tracks").fetchall()}
    wanted = ["track_id", "path", *_CATEGORY_SOURCES]
    wanted += [c.name for c in spec.columns if c.name not in NOT_FEATURES and c.name not in wanted
               and (c.type in _SCALAR_TYPES or _VECTOR_TYPE.match(c.type))]
    select = ", ".join(c if c in present else f"NULL AS {c}" for c in wanted)
    return con.sql(f"SELECT {select} FROM current_tracks ORDER BY track_id").df()


def _describe(name: str) -> str:
    col = table_schema("tracks").column(name)
    return col.description + (f" [{col.unit}]" if col.unit else "")


def _floats(values: pd.Series) -> np.ndarray:
    """A column as float64 with NaN for missing values (pandas may hold them as NA or None)."""
    return pd.to_numeric(values, errors="coerce").astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)


def _standardize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values - mean) / std per column over the non-missing values; NaN stays NaN.

    A constant column has std 0 and becomes 0 (scikit-learn's rule).
    """
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(values)
    return scaler.transform(values), scaler.mean_, np.sqrt(scaler.var_)


def _features(tracks: pd.DataFrame) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, str]]]:
    """Encoded feature columns (name -> pyarrow array), their descriptions, and dropped columns."""
    import pyarrow as pa

    spec = table_schema("tracks")
    cols: dict[str, Any] = {}
    described: list[dict[str, Any]] = []
    dropped: list[dict[str, str]] = []
    for c in spec.columns:
        if c.name in NOT_FEATURES or c.name not in tracks:
            continue
        if c.type in _SCALAR_TYPES:
            x = _floats(tracks[c.name])
            if np.isnan(x).all():
                dropped.append({"name": c.name, "reason": "no value in any track (the pipeline does not compute it)"})
                continue
            z, mean, std = _standardize(x[:, None])
            name = f"{c.name}_z"
            cols[name] = pa.array(z[:, 0], pa.float64(), mask=np.isnan(z[:, 0]))
            described.append({
                "name": name, "source": f"tracks.{c.name}", "meaning": _describe(c.name),
                "encoding": "standardized: (value - mean) / std over the tracks that have a value; "
                            "null where the track has none (impute 0, the mean, if a model needs a value)",
                "mean": float(mean[0]), "std": float(std[0])})
        elif m := _VECTOR_TYPE.match(c.type):
            n = int(m.group(2))
            present = np.array([isinstance(v, (list, tuple, np.ndarray)) and len(v) == n for v in tracks[c.name]],
                               dtype=bool)
            if not present.any():
                dropped.append({"name": c.name, "reason": "no value in any track (the pipeline does not compute it)"})
                continue
            x = np.full((len(tracks), n), np.nan)
            x[present] = np.stack([np.asarray(v, dtype=np.float64) for v in tracks[c.name][present]])
            z, mean, std = _standardize(x)
            name = f"{c.name}_z"
            flat = pa.array(np.nan_to_num(z).astype(np.float32).ravel(), pa.float32())
            cols[name] = pa.FixedSizeListArray.from_arrays(flat, n, mask=pa.array(~present))
            described.append({
                "name": name, "source": f"tracks.{c.name}", "meaning": _describe(c.name),
                "encoding": f"standardized per element: (value[i] - mean[i]) / std[i], {n} elements; "
                            "null where the track has none",
                "mean": [float(v) for v in mean], "std": [float(v) for v in std]})
    # Categories. Key and Camelot say the same thing in two ways; both are
    # given because models use them differently (identity vs. wheel distance).
    tonic = _floats(tracks["key_tonic"])
    mode = tracks["key_mode"].to_numpy(dtype=object)
    minor = mode == "minor"
    has_key = ~np.isnan(tonic) & ((mode == "major") | minor)
    key_code = np.where(has_key, np.nan_to_num(tonic).astype(np.int64) + 12 * minor, 0)
    cols["key_code"] = pa.array(key_code, pa.int16(), mask=~has_key)
    onehot = np.zeros((len(tracks), 24), dtype=np.float32)
    onehot[np.flatnonzero(has_key), key_code[has_key]] = 1.0
    cols["key_onehot"] = pa.FixedSizeListArray.from_arrays(pa.array(onehot.ravel(), pa.float32()), 24)
    cols["mode_code"] = pa.array(minor.astype(np.int64), pa.int16(), mask=~has_key)
    camelot = np.array([int(v[:-1]) if isinstance(v, str) and v[:-1].isdigit() else 0
                        for v in tracks["key_camelot"]], dtype=np.int64)
    has_cam = camelot > 0
    angle = 2 * np.pi * (camelot - 1) / 12
    cols["camelot_number"] = pa.array(camelot, pa.int16(), mask=~has_cam)
    cols["camelot_sin"] = pa.array(np.sin(angle).astype(np.float32), pa.float32(), mask=~has_cam)
    cols["camelot_cos"] = pa.array(np.cos(angle).astype(np.float32), pa.float32(), mask=~has_cam)
    meter = _floats(tracks["meter"])
    cols["meter"] = pa.array(np.nan_to_num(meter).astype(np.int64), pa.int16(), mask=np.isnan(meter))
    key_names = [f"{p} major" for p in PITCHES] + [f"{p} minor" for p in PITCHES]
    described += [
        {"name": "key_code", "source": "tracks.key_tonic, tracks.key_mode", "meaning": "Estimated key",
         "encoding": "integer code 0-23: tonic pitch class (C = 0) for major keys, 12 + tonic for minor keys; "
                     "null when no key was found", "categories": key_names},
        {"name": "key_onehot", "source": "tracks.key_tonic, tracks.key_mode", "meaning": "Estimated key",
         "encoding": "one-hot over the 24 key_code categories (index = key_code); all zeros when no key",
         "categories": key_names},
        {"name": "mode_code", "source": "tracks.key_mode", "meaning": "Mode of the estimated key",
         "encoding": "0 = major, 1 = minor; null when no key", "categories": ["major", "minor"]},
        {"name": "camelot_number", "source": "tracks.key_camelot",
         "meaning": "Position on the Camelot wheel (neighbouring numbers mix harmonically)",
         "encoding": "integer 1-12 (the letter, A minor / B major, is mode_code); null when no key"},
        {"name": "camelot_sin", "source": "tracks.key_camelot", "meaning": "Camelot wheel position as an angle",
         "encoding": "sin(2π (camelot_number - 1) / 12): with camelot_cos, adjacent wheel positions are close "
                     "in Euclidean distance and 12 is next to 1; null when no key"},
        {"name": "camelot_cos", "source": "tracks.key_camelot", "meaning": "Camelot wheel position as an angle",
         "encoding": "cos(2π (camelot_number - 1) / 12); null when no key"},
        {"name": "meter", "source": "tracks.meter", "meaning": _describe("meter"),
         "encoding": "integer code: beats per bar as estimated (3 or 4); null when unknown"},
    ]
    return cols, described, dropped


# --------------------------------------------------------------------------- export
def _read_embeddings(catalog: Catalog, model: str, track_ids: list[str], dim: int):
    """The embeddings of ``track_ids`` (a block) as a FixedSizeList array, null where a track has none."""
    import pyarrow as pa

    vectors = np.zeros((len(track_ids), max(dim, 1)), dtype=np.float32)
    table = embedding_rows(catalog, model, track_ids)
    got = dict(zip(table.column("track_id").to_pylist(), range(table.num_rows), strict=True))
    if table.num_rows:
        flat = table.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        flat = flat.astype(np.float32).reshape(table.num_rows, -1)
        for i, t in enumerate(track_ids):
            if t in got:
                vectors[i] = flat[got[t]]
    mask = pa.array([t not in got for t in track_ids])
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), max(dim, 1), mask=mask)


def export_recsys(catalog: str | os.PathLike[str] | Catalog, out: str | os.PathLike[str], *, k: int = 50,
                  embedding: str | None = None, threshold: float = DEFAULT_THRESHOLD,
                  block_size: int | None = None, scheduler: str | None = None, workers: int = 2,
                  client: Any = None) -> ExportSummary:
    """Write item features, the duplicate grouping and an all-tracks kNN table into ``out``.

    Parameters
    ----------
    catalog : path or Catalog
        An analyzed catalog.
    out : path
        Export folder: created, or replaced when empty or a previous export; anything else is refused.
    k : int
        Neighbours per track.
    embedding : str, optional
        Embedding model (a partition of the ``embeddings`` table); default the first of
        ``musicnn-msd``, ``descriptor`` that the catalog has.
    threshold : float
        Bit-error rate of :func:`~mirflow.recsys.duplicates.find_duplicates`.
    block_size : int, optional
        Tracks per kNN block (default: what fits about 256 MB per task).
    scheduler : str, optional
        Address of a ``dask.distributed`` scheduler; default a LocalCluster of ``workers`` processes.
    workers : int
        Worker processes of the LocalCluster.
    client : distributed.Client, optional
        An existing client to use instead (it is not closed).

    Returns
    -------
    ExportSummary

    Raises
    ------
    ConfigError
        ``out`` is not empty and not a previous export, or a setting is invalid.
    CatalogError
        The catalog is not one, or has no embeddings.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    started = time.perf_counter()
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    if block_size is not None and block_size < 1:
        raise ConfigError(f"block size must be at least 1, got {block_size}")
    if workers < 1:
        raise ConfigError("workers must be at least 1")
    out = Path(out).expanduser().resolve()
    _check_out(out)
    con = connect(catalog)  # raises CatalogError for a folder that is not a catalog
    cat = catalog if isinstance(catalog, Catalog) else Catalog(catalog)
    model = _pick_embedding(cat, embedding)

    tracks = _read_tracks(con)
    if tracks.empty:
        raise CatalogError(f"catalog {cat.url} has no tracks")
    try:
        groups = find_duplicates(cat, threshold=threshold, include_singletons=True)
        duplicates_available = True
    except CatalogError as exc:  # no fingerprints: every track is its own group
        log.warning("%s; every track is exported as canonical", exc)
        groups = pd.DataFrame({"group_id": tracks["track_id"], "track_id": tracks["track_id"],
                               "is_canonical": True})
        duplicates_available = False
    groups = groups.set_index("track_id").reindex(tracks["track_id"])
    # A track absent from the grouping (none is, but be safe) is its own canonical group.
    group_id = groups["group_id"].fillna(pd.Series(tracks["track_id"].to_numpy(), index=groups.index))
    is_canonical = groups["is_canonical"].fillna(True).astype(bool)

    feature_cols, described, dropped = _features(tracks)
    emb_ids = embedding_track_ids(cat, model)
    dim = 0
    if emb_ids:
        dim = embedding_rows(cat, model, emb_ids[:1]).column("embedding").type.list_size
    block = block_size or default_block_size(len(emb_ids), max(dim, 1))

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    own_client = client is None
    cluster = None
    try:
        # ---- items.parquet, in row groups of one block so embeddings are read a block at a time
        base = {"track_id": pa.array(tracks["track_id"], pa.string()),
                "path": pa.array(tracks["path"], pa.string()),
                "is_canonical": pa.array(is_canonical.to_numpy(), pa.bool_()),
                "duplicate_group": pa.array(group_id.to_numpy(), pa.string())}
        base.update(feature_cols)
        head = pa.table(base)
        emb_type = pa.list_(pa.float32(), max(dim, 1))
        meta = {"mirflow.export": EXPORT_FORMAT, "mirflow.embedding_model": model,
                "mirflow.size.embedding": str(dim)}
        schema = head.schema.append(pa.field("embedding", emb_type)).with_metadata(meta)
        ids = tracks["track_id"].tolist()
        with pq.ParquetWriter(tmp / "items.parquet", schema, compression="zstd") as writer:
            for start in range(0, len(ids), block):
                chunk = head.slice(start, block)
                emb = _read_embeddings(cat, model, ids[start:start + block], dim)
                writer.write_table(chunk.append_column(schema.field("embedding"), emb))
        described_all = [
            {"name": "track_id", "source": "tracks.track_id", "meaning": _describe("track_id"), "encoding": "as is"},
            {"name": "path", "source": "tracks.path", "meaning": _describe("path"), "encoding": "as is"},
            {"name": "is_canonical", "source": "mirflow duplicates",
             "meaning": "True for the copy to keep of each recording (every track without duplicates is canonical)",
             "encoding": "canonical rule: lossless codec first, then highest bit rate, then longest duration, "
                         "then smallest track_id" + ("" if duplicates_available else
                                                     "; the catalog has no fingerprints, so all are canonical")},
            {"name": "duplicate_group", "source": "mirflow duplicates",
             "meaning": "The group of copies of the same recording (formats, bit rates, small trims)",
             "encoding": "track_id of the group's canonical track (a track without duplicates is its own group)"},
            *described,
            {"name": "embedding", "source": f"embeddings (model {model})",
             "meaning": f"The track's {model} embedding, as stored in the catalog (not normalised)",
             "encoding": f"fixed-size list of {dim} float32 (Arrow FixedSizeList); null when the track has "
                         "no embedding of this model"},
        ]
        types = {f.name: _type_string(f.type) for f in schema}
        for d in described_all:
            d["type"] = types[d["name"]]

        # ---- neighbors/ on Dask
        neighbors_dir = tmp / "neighbors"
        neighbors_dir.mkdir()
        scratch = tmp / "_blocks"
        scratch.mkdir()
        rows = 0
        if emb_ids:
            if own_client:
                client, cluster = start_client(scheduler=scheduler, workers=workers)
            rows, _ = knn_blocked(cat, model, emb_ids, k=k, block_size=block, scratch=scratch,
                                  out_dir=neighbors_dir, client=client)
        shutil.rmtree(scratch)

        n_groups = int((group_id.value_counts() > 1).sum())
        n_dup = int((~is_canonical).sum())
        manifest = {
            "format": EXPORT_FORMAT, "format_version": EXPORT_FORMAT_VERSION, "mirflow_version": __version__,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(), "catalog": cat.url,
            "k": k, "block_size": block,
            "embedding": {"model": model, "dim": dim, "tracks": len(emb_ids), "metric": "cosine"},
            "duplicates": {"available": duplicates_available, "threshold": threshold,
                           "groups_with_copies": n_groups, "non_canonical_tracks": n_dup},
            "tables": {
                "items": {"path": "items.parquet", "rows": len(ids), "columns": described_all},
                "neighbors": {"path": "neighbors/", "rows": rows, "columns": [
                    {"name": n, "type": t, "meaning": d,
                     "encoding": "exact cosine kNN (FAISS inner product of L2-normalised vectors) over every track "
                                 f"with a {model} embedding; k rows per track, fewer when the catalog has "
                                 "k tracks or fewer"}
                    for n, (t, d) in NEIGHBOR_COLUMNS.items()]},
            },
            "dropped_columns": dropped,
        }
        (tmp / COLUMNS_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if own_client and client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    return ExportSummary(out=out, items=len(ids), neighbor_rows=rows, k=k, embedding=model, dim=dim,
                         duplicate_groups=n_groups, duplicate_tracks=n_dup,
                         seconds=time.perf_counter() - started)


def _type_string(t) -> str:
    """An Arrow type in the catalog schemas' vocabulary (schemas/*.yaml): ``float32``, ``float32[24]``, …"""
    import pyarrow as pa

    if pa.types.is_fixed_size_list(t):
        return f"{_type_string(t.value_type)}[{t.list_size}]"
    names = {pa.string(): "string", pa.bool_(): "bool", pa.int16(): "int16", pa.int32(): "int32",
             pa.int64(): "int64", pa.float32(): "float32", pa.float64(): "float64"}
    return names.get(t, str(t))


def _replace(tmp: Path, out: Path) -> None:
    """Move the finished export into place, replacing an empty folder or a previous export."""
    _check_out(out)  # again: something may have appeared while we worked
    replace_folder(tmp, out)
