"""Group tracks of the same recording across formats, bit rates and small trims.

Two tracks are the same recording when their Chromaprint fingerprints
(the ``fingerprints`` table, :mod:`mirflow.extractors.fingerprint`) agree:
slide one sequence of 32-bit sub-fingerprints against the other over
±``max_offset_s`` and take the bit-error rate (BER, the share of differing
bits, popcount of XOR) at the best offset; below ``threshold`` they match.
Re-encodes flip a few percent of the bits; different music a fifth to a half
(figures in docs/recsys.md).

Comparing every pair would be quadratic, so candidate pairs come from a
blocking step first: tracks whose durations differ by at most
``duration_tolerance_s`` AND that share at least ``min_shared_keys``
sub-fingerprint values with the low bits masked (an inverted index: a
re-encode keeps many sub-fingerprints' high bits intact, unrelated music
shares almost none). Only candidates are verified with the BER, and
verified pairs are joined into groups (connected components).

Each group has one canonical track, the best copy to keep: lossless before
lossy, then the highest bit rate, then the longest duration, then the
smallest ``track_id`` (so the choice is deterministic).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mirflow.catalog.layout import Catalog
from mirflow.errors import CatalogError, ConfigError
from mirflow.extractors.fingerprint import ITEM_DURATION_S
from mirflow.query import connect

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_THRESHOLD", "DuplicateOptions", "best_offset_ber", "find_duplicates", "is_lossless"]

#: BER below which two fingerprints are the same recording. Measured on
#: generated 22-s tracks (docs/recsys.md): copies of one recording (mp3 at 64
#: and 128 kb/s, ogg, aac, 22 kHz, trims of 0–3 s at any fraction of a
#: Chromaprint hop) reach at most 0.068, the worst case being a trim by half a
#: hop; different tracks with the same tempo, key and chords (seed and melody
#: differ) reach at least 0.169. 0.12 sits in the middle of that gap.
DEFAULT_THRESHOLD = 0.12
#: Codecs that keep every sample (libsndfile's subtype names and ffmpeg's codec names).
_LOSSLESS_PREFIXES = ("PCM", "FLAC", "ALAC", "WAVPACK", "WV", "APE", "TTA", "FLOAT", "DOUBLE", "TRUEHD", "MLP",
                      "SHORTEN", "TAK", "WMALOSSLESS", "DSD")


@dataclass(frozen=True, kw_only=True)
class DuplicateOptions:
    """How fingerprints are blocked and compared (see the module docstring).

    Attributes
    ----------
    threshold : float
        Same recording when the best-offset BER is below this.
    max_offset_s : float
        Largest misalignment tried (a trim or added silence at the start).
    min_overlap_s : float
        Least overlap of the two fingerprints at an offset for it to count.
    duration_tolerance_s : float
        Candidates differ in duration by at most this.
    index_bits : int
        High bits of each sub-fingerprint kept as an inverted-index key. With
        24, copies of a 22-s generated track shared 67–135 keys, different
        tracks in the same key 0–4 (docs/recsys.md); 20 bits gave 1000× more
        candidate pairs on random fingerprints.
    min_shared_keys : int
        Candidates share at least this many distinct keys.
    max_posting : int
        Keys that more tracks than this share (silence, drones) are ignored
        for blocking: they say nothing and would make the index quadratic.
    """

    threshold: float = DEFAULT_THRESHOLD
    max_offset_s: float = 10.0
    min_overlap_s: float = 8.0
    duration_tolerance_s: float = 10.0
    index_bits: int = 24
    min_shared_keys: int = 4
    max_posting: int = 200

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"threshold (a bit-error rate) must be between 0 and 1, got {self.threshold}")
        if self.max_offset_s < 0 or self.min_overlap_s <= 0 or self.duration_tolerance_s < 0:
            raise ConfigError("max_offset_s and duration_tolerance_s must be >= 0, min_overlap_s > 0")
        if not 1 <= self.index_bits <= 32:
            raise ConfigError(f"index_bits must be 1-32, got {self.index_bits}")
        if self.min_shared_keys < 1 or self.max_posting < 2:
            raise ConfigError("min_shared_keys must be >= 1 and max_posting >= 2")


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint32 (numpy >= 2 has it built in; older numpy uses a 16-bit table)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    table = _POPCOUNT16
    return table[x & np.uint32(0xFFFF)] + table[x >> np.uint32(16)]


_POPCOUNT16 = np.unpackbits(np.arange(2**16, dtype="<u2").view(np.uint8).reshape(-1, 2), axis=1).sum(
    axis=1).astype(np.uint8)


def best_offset_ber(a: np.ndarray, b: np.ndarray, *, max_offset: int, min_overlap: int) -> tuple[float, int]:
    """Bit-error rate of two raw fingerprints at their best alignment.

    Parameters
    ----------
    a, b : numpy.ndarray
        ``uint32`` sub-fingerprints.
    max_offset : int
        Offsets ``-max_offset … max_offset`` (in items) of ``b`` against ``a`` are tried.
    min_overlap : int
        Offsets where fewer items overlap are skipped.

    Returns
    -------
    (float, int)
        The lowest BER (share of differing bits in the overlap, 0–1) and its
        offset ``d`` (``a[i]`` aligned with ``b[i + d]``); ``(1.0, 0)`` when no
        offset overlaps enough.

    Examples
    --------
    >>> x = np.arange(100, dtype=np.uint32) * 2654435761
    >>> best_offset_ber(x[5:], x, max_offset=10, min_overlap=20)
    (0.0, 5)
    """
    a = np.asarray(a, dtype=np.uint32)
    b = np.asarray(b, dtype=np.uint32)
    if a.size == 0 or b.size == 0:
        return 1.0, 0
    # All offsets at once: row r of the window views is b shifted by d = r - max_offset
    # against a, with zero padding where b has no item (masked out by `valid`).
    pad = np.zeros(max_offset, dtype=np.uint32)
    b_pad = np.concatenate([pad, b, pad, np.zeros(max(0, a.size - b.size), dtype=np.uint32)])
    valid = np.concatenate([pad.astype(bool), np.ones(b.size, bool), pad.astype(bool),
                            np.zeros(max(0, a.size - b.size), bool)])
    rows = 2 * max_offset + 1
    windows = np.lib.stride_tricks.sliding_window_view(b_pad, a.size)[:rows]
    mask = np.lib.stride_tricks.sliding_window_view(valid, a.size)[:rows]
    overlap = mask.sum(axis=1)
    bits = (_popcount(np.bitwise_xor(windows, a)) * mask).sum(axis=1, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ber = np.where(overlap >= max(min_overlap, 1), bits / (32.0 * overlap), np.inf)
    r = int(np.argmin(ber))  # the first (most negative) offset wins ties
    if not np.isfinite(ber[r]):
        return 1.0, 0
    return float(ber[r]), r - max_offset


def is_lossless(codec: str | None) -> bool:
    """True for codecs that keep every sample (PCM, FLAC, ALAC, WavPack, …)."""
    if not codec:
        return False
    name = str(codec).upper().replace("-", "").replace("_", "")
    return name.startswith(_LOSSLESS_PREFIXES) or name.startswith("PCM")


# --------------------------------------------------------------------------- reading
def _read(catalog: str | os.PathLike[str] | Catalog) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Tracks (id, path, codec, bit rate, duration) and their fingerprints (None-free list, aligned).

    Only the audio the catalog's paths hold now (``current_tracks``): the old track of a file re-tagged
    or re-encoded in place is the same recording at the same path, and grouping the two would offer
    the live file as the copy to delete.
    """
    con = connect(catalog)
    tracks = con.sql(
        "SELECT track_id, path, codec, bit_rate_bps, duration_s FROM current_tracks ORDER BY track_id").df()
    fps = con.sql("SELECT track_id, fingerprint FROM fingerprints ORDER BY track_id").arrow()
    if hasattr(fps, "read_all"):  # DuckDB returns a RecordBatchReader in some versions
        fps = fps.read_all()
    ids = fps.column("track_id").to_pylist()
    lists = fps.column("fingerprint").combine_chunks()
    values = lists.values.to_numpy(zero_copy_only=False).astype(np.uint32)
    offsets = lists.offsets.to_numpy()
    by_id = {tid: values[offsets[i]:offsets[i + 1]] for i, tid in enumerate(ids)}
    tracks["has_fingerprint"] = tracks["track_id"].isin(by_id)
    fingerprints = [by_id.get(t, np.zeros(0, np.uint32)) for t in tracks["track_id"]]
    return tracks, fingerprints


# --------------------------------------------------------------------------- blocking
def _candidate_pairs(fingerprints: list[np.ndarray], durations: np.ndarray,
                     opts: DuplicateOptions) -> np.ndarray:
    """Index pairs ``(i, j)``, ``i < j``, that share keys and have similar durations."""
    shift = 32 - opts.index_bits
    track_idx, keys = [], []
    for i, fp in enumerate(fingerprints):
        if fp.size:
            k = np.unique(fp >> np.uint32(shift))
            keys.append(k)
            track_idx.append(np.full(k.size, i, dtype=np.int64))
    if not keys:
        return np.zeros((0, 2), dtype=np.int64)
    key = np.concatenate(keys)
    idx = np.concatenate(track_idx)
    order = np.argsort(key, kind="stable")
    key, idx = key[order], idx[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    sizes = np.diff(np.r_[starts, key.size])
    # Keys shared by very many tracks (silence, drones, common chords) say
    # little and would make the pair list quadratic: they are left out.
    common = sizes > opts.max_posting
    if common.any():
        log.debug("blocking ignores %d keys shared by more than %d tracks", int(common.sum()), opts.max_posting)
    keep = np.repeat(~common, sizes)
    key, idx = key[keep], idx[keep]
    sizes = sizes[~common]
    # Every pair within each key's posting list, without a Python loop: the
    # element at position p pairs with the `later[p]` elements after it in its list.
    ends = np.repeat(np.cumsum(sizes), sizes)
    later = ends - np.arange(key.size) - 1
    total = int(later.sum())
    if total == 0:
        return np.zeros((0, 2), dtype=np.int64)
    left = np.repeat(np.arange(key.size), later)
    step = np.arange(total) - np.repeat(np.cumsum(later) - later, later)
    a, b = idx[left], idx[left + 1 + step]
    close = np.abs(durations[a] - durations[b]) <= opts.duration_tolerance_s
    a, b = a[close], b[close]
    n = len(fingerprints)
    codes, counts = np.unique(np.minimum(a, b) * n + np.maximum(a, b), return_counts=True)
    codes = codes[counts >= opts.min_shared_keys]
    return np.stack([codes // n, codes % n], axis=1)


def _canonical_order(tracks: pd.DataFrame) -> pd.DataFrame:
    """Tracks sorted best first by the canonical rule."""
    key = pd.DataFrame({
        "lossless": tracks["codec"].map(is_lossless).astype(bool),
        "bit_rate": tracks["bit_rate_bps"].fillna(-1).astype("float64"),
        "duration": tracks["duration_s"].fillna(-1).astype("float64"),
        "track_id": tracks["track_id"],
    }, index=tracks.index)
    return key.sort_values(["lossless", "bit_rate", "duration", "track_id"],
                           ascending=[False, False, False, True])


# --------------------------------------------------------------------------- API
def find_duplicates(catalog: str | os.PathLike[str] | Catalog, *, threshold: float = DEFAULT_THRESHOLD,
                    options: DuplicateOptions | None = None,
                    include_singletons: bool = False) -> pd.DataFrame:
    """Groups of tracks that are the same recording.

    Parameters
    ----------
    catalog : path or Catalog
        An analyzed catalog whose pipeline ran the ``fingerprint`` extractor.
    threshold : float
        Bit-error rate below which two tracks match (0–1; default 0.12, see docs/recsys.md).
    options : DuplicateOptions, optional
        Blocking and alignment settings; its ``threshold`` is replaced by ``threshold``.
    include_singletons : bool
        Also list tracks without a duplicate, each as its own canonical group
        (what ``mirflow export recsys`` uses).

    Returns
    -------
    pandas.DataFrame
        Columns ``group_id`` (the canonical track's ``track_id``), ``track_id``,
        ``path``, ``is_canonical`` and ``ber_to_canonical`` (0 for the canonical
        track; NaN when it was joined to the group through another member and
        the two do not overlap enough to compare), sorted by group and canonical first.

    Raises
    ------
    CatalogError
        When the catalog has no fingerprints at all.
    """
    opts = options or DuplicateOptions()
    if options is None or threshold != options.threshold:
        opts = DuplicateOptions(**{**opts.__dict__, "threshold": threshold})
    tracks, fingerprints = _read(catalog)
    if len(tracks) and not tracks["has_fingerprint"].any():
        raise CatalogError("the catalog has no fingerprints: analyze it with a pipeline that runs the "
                           "'fingerprint' extractor (default and permissive do)")
    durations = tracks["duration_s"].fillna(-1e9).to_numpy(dtype=np.float64)
    pairs = _candidate_pairs(fingerprints, durations, opts)
    max_offset = int(round(opts.max_offset_s / ITEM_DURATION_S))
    min_overlap = int(round(opts.min_overlap_s / ITEM_DURATION_S))
    edges = []
    for i, j in pairs:
        ber, _ = best_offset_ber(fingerprints[i], fingerprints[j], max_offset=max_offset, min_overlap=min_overlap)
        if ber < opts.threshold:
            edges.append((i, j))
    log.info("duplicates: %d tracks, %d candidate pairs, %d verified", len(tracks), len(pairs), len(edges))

    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(tracks)
    if edges:
        e = np.asarray(edges, dtype=np.int64)
        graph = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
        _, labels = connected_components(graph, directed=False)
    else:
        labels = np.arange(n)
    tracks = tracks.assign(_component=labels)
    order = _canonical_order(tracks)
    rows = []
    for _, members in tracks.loc[order.index].groupby("_component", sort=False):
        if len(members) < 2 and not include_singletons:
            continue
        canon = members.index[0]
        for idx, row in members.iterrows():
            if idx == canon:
                ber = 0.0
            else:
                ber, _ = best_offset_ber(fingerprints[canon], fingerprints[idx], max_offset=max_offset,
                                         min_overlap=min_overlap)
                ber = ber if ber < 1.0 else float("nan")
            rows.append({"group_id": tracks.at[canon, "track_id"], "track_id": row["track_id"],
                         "path": row["path"], "is_canonical": idx == canon, "ber_to_canonical": ber})
    out = pd.DataFrame(rows, columns=["group_id", "track_id", "path", "is_canonical", "ber_to_canonical"])
    if len(out):
        out = out.sort_values(["group_id", "is_canonical", "ber_to_canonical", "track_id"],
                              ascending=[True, False, True, True], ignore_index=True)
    return out.astype({"is_canonical": bool, "ber_to_canonical": "float64"})
