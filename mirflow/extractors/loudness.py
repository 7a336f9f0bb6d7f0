"""Loudness per EBU R128: integrated loudness, loudness range, true peak, RMS.

Backends:

* ``essentia`` (default): ``LoudnessEBUR128`` (integrated + range).
* ``pyloudnorm`` (MIT, for the permissive pipeline): integrated loudness from
  pyloudnorm's BS.1770-4 meter; pyloudnorm has no loudness range, so the
  EBU Tech 3342 range is computed here from its K-weighting filters
  (short-term 3-s windows every 100 ms, absolute gate −70 LUFS, relative
  gate −20 LU, 10th to 95th percentile).

True peak (both backends) is the largest absolute sample after 4× soxr
oversampling, as ITU-R BS.1770-4 Annex 2 prescribes; essentia's
``TruePeakDetector`` reports per-sample positions we do not need.

A track whose sample peak is below ``silence_threshold_dbfs`` is *silent*:
``is_silent`` is true and the loudness columns are null (rather than −inf or
the −70 LUFS gate floor, which look like measurements).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mirflow.extractors.base import Extraction, Extractor, Params, WindowPart, param
from mirflow.extractors.requirements import ESSENTIA, PYLOUDNORM, Requirement


@dataclass(frozen=True, kw_only=True)
class LoudnessParams(Params):
    backend: str = param("essentia", choices=("essentia", "pyloudnorm"),
                         doc="Integrated loudness / range implementation")
    sample_rate_hz: int = param(44100, choices=(44100, 48000),
                                doc="Rate the meter runs at (K-weighting is defined for 48 kHz; both are exact in the backends)")
    silence_threshold_dbfs: float = param(-70.0, range=(-140.0, -20.0),
                                          doc="Sample peak below which the track counts as silent")


def _db(x: float) -> float | None:
    return float(20.0 * np.log10(x)) if x > 0 else None


def true_peak_dbtp(channels: np.ndarray, sample_rate_hz: int) -> float | None:
    """True peak in dBTP of ``(frames, channels)`` audio (4× oversampling).

    Streamed through soxr in blocks: the 4× signal of a long track would
    otherwise be held whole (an hour of stereo at 44.1 kHz is 5 GB of
    float32), for the sake of one maximum. Same values as one-shot resampling.
    """
    import soxr

    if channels.size == 0:
        return None
    stream = soxr.ResampleStream(sample_rate_hz, 4 * sample_rate_hz, channels.shape[1],
                                 dtype="float32", quality="HQ")
    block = 1 << 16
    peak = 0.0
    for start in range(0, channels.shape[0], block):
        chunk = np.ascontiguousarray(channels[start:start + block], dtype=np.float32)
        up = stream.resample_chunk(chunk, last=start + block >= channels.shape[0])
        if up.size:
            peak = max(peak, float(np.max(np.abs(up))))
    return _db(peak)


def loudness_range_lu(short_term_lufs: np.ndarray) -> float | None:
    """EBU Tech 3342 loudness range from short-term loudness values."""
    st = short_term_lufs[np.isfinite(short_term_lufs) & (short_term_lufs > -70.0)]
    if st.size == 0:
        return None
    power = 10.0 ** (st / 10.0)
    gate = 10.0 * np.log10(power.mean()) - 20.0
    st = st[st > gate]
    if st.size == 0:
        return None
    lo, hi = np.percentile(st, [10, 95])
    return float(hi - lo)


#: Samples per block of the streamed K-weighting (:func:`bs1770_loudness`): 2**16 frames keep the
#: float64 working copies at about 2 MB whatever the track's length.
_FILTER_BLOCK = 1 << 16


def _block_bounds(n_samples: int, sr: int, block_s: float, overlap: float) -> tuple[np.ndarray, np.ndarray]:
    """Start and end samples of pyloudnorm's gating blocks, with its own float arithmetic (same integers)."""
    step = 1.0 - overlap
    n_blocks = int(np.round((n_samples / sr - block_s) / (block_s * step))) + 1
    j = np.arange(max(n_blocks, 0), dtype=np.float64)
    lower = (block_s * (j * step) * sr).astype(np.int64)
    upper = (block_s * (j * step + 1) * sr).astype(np.int64)
    return lower, upper


def _cumulative_power_at(stereo: np.ndarray, sr: int, positions: np.ndarray) -> np.ndarray:
    """Running sum of the K-weighted signal's square per channel, at ``positions`` (``(len, channels)``).

    The K-weighting is pyloudnorm's own (its meter's filter stages, each
    ``gain * lfilter(b, a, x)``), run block by block with the filter state
    carried over, which gives the same samples as filtering the whole track
    at once while holding only one block in float64.
    """
    import pyloudnorm as pyln
    import scipy.signal

    stages = [(f.b, f.a, f.passband_gain) for f in pyln.Meter(sr)._filters.values()]
    channels = stereo.shape[1]
    states = [np.zeros((max(len(a), len(b)) - 1, channels)) for b, a, _ in stages]
    out = np.zeros((positions.size, channels))
    carry = np.zeros(channels)
    # positions are sorted; the running sum at p covers samples [0, p)
    k = int(np.searchsorted(positions, 0, side="right"))
    for start in range(0, stereo.shape[0], _FILTER_BLOCK):
        x = stereo[start:start + _FILTER_BLOCK].astype(np.float64)
        for i, (b, a, gain) in enumerate(stages):
            y, states[i] = scipy.signal.lfilter(b, a, x, axis=0, zi=states[i])
            x = gain * y
        csum = np.cumsum(x * x, axis=0)
        csum += carry
        end = start + x.shape[0]
        stop = int(np.searchsorted(positions, end, side="right"))
        out[k:stop] = csum[positions[k:stop] - start - 1]
        k = stop
        carry = csum[-1]
    out[k:] = carry  # positions past the end (pyloudnorm's slices stop at the end too)
    return out


def gated_loudness_lufs(block_lufs: np.ndarray) -> float:
    """BS.1770-4 integrated loudness from the loudness of its 400-ms gating blocks (−inf when all are gated out).

    Absolute gate −70 LUFS, relative gate 10 LU below the mean power of the
    blocks above it. With channel gains of 1 a block's loudness carries its
    channel sum, so this equals gating per channel (pyloudnorm's order).
    """
    L = np.asarray(block_lufs, dtype=np.float64)
    L = L[np.isfinite(L) & (L >= -70.0)]
    if L.size == 0:
        return float("-inf")
    relative = -0.691 + 10.0 * np.log10(np.mean(10.0 ** ((L + 0.691) / 10.0))) - 10.0
    kept = L[(L > relative) & (L > -70.0)]
    if kept.size == 0:
        return float("-inf")
    return float(-0.691 + 10.0 * np.log10(np.mean(10.0 ** ((kept + 0.691) / 10.0))))


def bs1770_blocks(stereo: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Loudness of pyloudnorm's 400-ms gating blocks and of 3-s short-term windows, with their start times.

    One pass of pyloudnorm's own K-weighting with running sums
    (:func:`_cumulative_power_at`): blocks every 100 ms at pyloudnorm's
    sample positions, short-term windows every 100 ms.

    Returns
    -------
    tuple of arrays
        Block start times (s), block loudness (LUFS), short-term start times
        (s), short-term loudness (LUFS; empty under 3 s of audio).
    """
    n = stereo.shape[0]
    lower, upper = _block_bounds(n, sr, 0.400, 0.75)
    win, hop = int(3.0 * sr), int(0.1 * sr)
    starts = np.arange(0, n - win + 1, hop, dtype=np.int64) if n >= win else np.zeros(0, np.int64)
    positions = np.unique(np.concatenate([lower, np.minimum(upper, n), starts, starts + win]))
    csum = _cumulative_power_at(stereo, sr, positions)

    def at(p: np.ndarray) -> np.ndarray:
        return csum[np.searchsorted(positions, np.minimum(p, n))]

    z = (at(upper) - at(lower)) / (0.400 * sr)  # (blocks, channels): mean square per block, pyloudnorm's eq. 1
    power = at(starts + win).sum(axis=1) - at(starts).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        block_lufs = -0.691 + 10.0 * np.log10(z.sum(axis=1))  # channel gains 1 for the front pair
        short_term = -0.691 + 10.0 * np.log10(np.maximum(power, 0.0) / win)
    return lower / sr, block_lufs, starts / sr, short_term


def bs1770_loudness(stereo: np.ndarray, sr: int) -> tuple[float, float | None]:
    """Integrated loudness (LUFS) and loudness range (LU) of ``(frames, channels)`` audio in one pass.

    The integrated loudness is pyloudnorm's ``Meter.integrated_loudness``
    (BS.1770-4: K-weighting, 400-ms blocks every 100 ms, absolute gate
    -70 LUFS, relative gate -10 LU), computed from running sums instead of
    pyloudnorm's Python loop over blocks and its whole-track float64 copies:
    equal to pyloudnorm to 1e-9 LU (``tests/test_long_inputs.py``), 20× faster,
    and memory independent of the track's length. The range is EBU Tech 3342
    on 3-s windows every 100 ms of the same K-weighted signal
    (:func:`loudness_range_lu`).

    Returns
    -------
    tuple
        Integrated loudness (``-inf`` when every block is gated out) and the
        range (None when the track is shorter than 3 s or fully gated).
    """
    _, block_lufs, starts, short_term = bs1770_blocks(stereo, sr)
    integrated = gated_loudness_lufs(block_lufs)
    return integrated, (loudness_range_lu(short_term) if starts.size else None)


class LoudnessExtractor(Extractor):
    """EBU R128 loudness, loudness range, true peak, sample peak and RMS.

    Examples
    --------
    >>> import numpy as np
    >>> from mirflow.frontend import Frontend
    >>> sr = 44100
    >>> tone = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(5 * sr) / sr)
    >>> out = LoudnessExtractor(backend="pyloudnorm").extract(Frontend.from_array(tone, sr))
    >>> round(out.columns["sample_peak_dbfs"], 1), out.columns["is_silent"]
    (-6.0, False)
    """

    name = "loudness"
    # 2: the pyloudnorm backend's range filters along time (version 1 ran the
    # K-weighting across the two channels of each frame); essentia unchanged.
    version = "2"
    Params = LoudnessParams
    columns = ("is_silent", "loudness_integrated_lufs", "loudness_range_lu", "true_peak_dbtp",
               "sample_peak_dbfs", "rms_dbfs")
    requires = ("channels", "signal")
    libraries = ("essentia", "pyloudnorm", "soxr")
    licences = ("AGPL-3.0 (essentia backend)", "MIT (pyloudnorm backend)")

    def requirements(self) -> tuple[Requirement, ...]:
        return (ESSENTIA,) if self.params.backend == "essentia" else (PYLOUDNORM,)

    def merges_windows(self) -> bool:
        return True

    def _silent_at(self, peak: float) -> bool:
        return peak <= 10.0 ** (self.params.silence_threshold_dbfs / 20.0)

    def _silent(self, peak: float, summary: dict | None = None) -> Extraction:
        """Silence: the sample peak, no loudness (rather than -inf or the -70 LUFS gate floor)."""
        return self.result({"is_silent": True, "loudness_integrated_lufs": None, "loudness_range_lu": None,
                            "true_peak_dbtp": None, "sample_peak_dbfs": _db(peak), "rms_dbfs": None},
                           None, "silent: loudness not measured", reason="silent", summary=summary)

    def extract(self, frontend) -> Extraction:
        p: LoudnessParams = self.params
        sr = p.sample_rate_hz
        chans = frontend.channels(sr)
        if chans.shape[0] == 0:
            return self.empty("empty audio", reason="empty audio")
        # Peaks and energy over the window's own share (the whole track when not windowed):
        # merged, they count every sample once.
        own = chans[frontend.core(sr)]
        # max and -min, not max(abs): no copy of the whole track
        peak = float(max(own.max(), -own.min())) if own.size else 0.0
        mono = frontend.signal(sr)[frontend.core(sr)]
        # float64 squares block by block: an hour at 44.1 kHz would be 1.3 GB in one piece
        energy = sum(float(np.square(mono[i:i + _FILTER_BLOCK], dtype=np.float64).sum())
                     for i in range(0, mono.size, _FILTER_BLOCK))
        summary: dict = {"peak": peak, "energy": energy, "samples": int(mono.size)}
        if self._silent_at(peak):
            return self._silent(peak, summary={**summary, "true_peak_dbtp": None, "blocks": None, "short_term": None})
        # BS.1770 sums channel powers; a mono file is one channel (pad with a
        # silent second channel for the stereo-only meters). Beyond two
        # channels we keep the front pair, since surround weights need a
        # channel layout that most catalogs do not declare.
        front = chans[:, :2]
        if p.backend == "essentia":
            from mirflow.extractors._essentia import essentia_standard

            es = essentia_standard()
            stereo = front if front.shape[1] == 2 else np.concatenate([front, np.zeros_like(front)], axis=1)
            stereo = np.ascontiguousarray(stereo, dtype=np.float32)

            momentary, short_term, integrated, lra = es.LoudnessEBUR128(sampleRate=float(sr))(stereo)
            integrated = float(integrated) if np.isfinite(integrated) and integrated > -70.0 else None
            lra = float(lra) if integrated is not None else None
            # both every 100 ms (the meter's hopSize) from the start
            block_lufs, short_term = np.asarray(momentary, np.float64), np.asarray(short_term, np.float64)
            block_s, short_s = 0.1 * np.arange(block_lufs.size), 0.1 * np.arange(short_term.size)
        else:
            # a silent second channel adds nothing to the channel sums: mono is measured as is
            block_s, block_lufs, short_s, short_term = bs1770_blocks(front, sr)
            if front.shape[0] >= int(0.4 * sr):
                value = gated_loudness_lufs(block_lufs)
                lra = loudness_range_lu(short_term) if short_s.size else None
            else:
                value, lra = float("-inf"), None
            integrated = float(value) if np.isfinite(value) else None
            lra = lra if integrated is not None else None
        true_peak = true_peak_dbtp(own, sr)
        cols = {
            "is_silent": False,
            "loudness_integrated_lufs": integrated,
            "loudness_range_lu": lra,
            "true_peak_dbtp": true_peak,
            "sample_peak_dbfs": _db(peak),
            "rms_dbfs": _db(float(np.sqrt(energy / mono.size))) if mono.size else None,
        }
        summary.update(true_peak_dbtp=true_peak, blocks=(block_s, block_lufs), short_term=(short_s, short_term))
        # BS.1770 gating needs 400-ms blocks; EBU 3342's range needs 3-s ones.
        reason = "too short" if any(v is None for v in cols.values()) else None
        return self.result(cols, None, reason=reason, summary=summary)

    def merge(self, parts: Sequence[WindowPart]) -> Extraction:
        """Gate the blocks of every window's share together: the track's BS.1770 loudness and EBU 3342 range.

        Each window lists its 400-ms blocks and 3-s short-term windows (every
        100 ms); a block belongs to the window whose share holds its start,
        so the merged gating sees each of the track's blocks once, as a
        whole-track meter would (it differs only by blocks that straddle two
        windows' context, at the same positions). The range uses
        :func:`loudness_range_lu` for both backends (Essentia's own range
        differs from it by interpolation, about 0.03 LU).
        """
        summaries = [part.extraction.summary for part in parts if part.extraction.summary]
        if not summaries:
            return self.empty("empty audio", reason="empty audio")
        peak = max(s["peak"] for s in summaries)
        samples = sum(s["samples"] for s in summaries)
        energy = sum(s["energy"] for s in summaries)
        if self._silent_at(peak):
            return self._silent(peak)

        def owned(key: str) -> np.ndarray:
            values = [v[part.owns(t)] for part in parts if (s := part.extraction.summary).get(key) is not None
                      for t, v in [s[key]]]
            return np.concatenate(values) if values else np.zeros(0)

        integrated = gated_loudness_lufs(owned("blocks"))
        integrated_lufs = float(integrated) if np.isfinite(integrated) and integrated > -70.0 else None
        short_term = owned("short_term")
        peaks = [s["true_peak_dbtp"] for s in summaries if s.get("true_peak_dbtp") is not None]
        cols = {
            "is_silent": False,
            "loudness_integrated_lufs": integrated_lufs,
            "loudness_range_lu": loudness_range_lu(short_term) if integrated_lufs is not None and short_term.size
            else None,
            "true_peak_dbtp": max(peaks) if peaks else None,
            "sample_peak_dbfs": _db(peak),
            "rms_dbfs": _db(float(np.sqrt(energy / samples))) if samples else None,
        }
        reason = "too short" if any(v is None for v in cols.values()) else None
        return self.result(cols, None, reason=reason)
