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

from dataclasses import dataclass

import numpy as np

from mirflow.extractors.base import Extraction, Extractor, Params, param
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


def _pyloudnorm_range(stereo: np.ndarray, sr: int) -> float | None:
    import pyloudnorm as pyln

    meter = pyln.Meter(sr)
    weighted = stereo.astype(np.float64)
    for filt in meter._filters.values():  # the meter's own K-weighting stages
        weighted = filt.apply_filter(weighted)
    power = (weighted**2).sum(axis=1)  # BS.1770 channel weights are 1 for L/R
    win, hop = int(3.0 * sr), int(0.1 * sr)
    if power.size < win:
        return None
    csum = np.concatenate([[0.0], np.cumsum(power)])
    starts = np.arange(0, power.size - win + 1, hop)
    mean_sq = (csum[starts + win] - csum[starts]) / win
    with np.errstate(divide="ignore"):
        st = -0.691 + 10.0 * np.log10(mean_sq)
    return loudness_range_lu(st)


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
    version = "1"
    Params = LoudnessParams
    columns = ("is_silent", "loudness_integrated_lufs", "loudness_range_lu", "true_peak_dbtp",
               "sample_peak_dbfs", "rms_dbfs")
    requires = ("channels", "signal")
    libraries = ("essentia", "pyloudnorm", "soxr")
    licences = ("AGPL-3.0 (essentia backend)", "MIT (pyloudnorm backend)")

    def requirements(self) -> tuple[Requirement, ...]:
        return (ESSENTIA,) if self.params.backend == "essentia" else (PYLOUDNORM,)

    def extract(self, frontend) -> Extraction:
        p: LoudnessParams = self.params
        sr = p.sample_rate_hz
        chans = frontend.channels(sr)
        if chans.shape[0] == 0:
            return self.empty("empty audio", reason="empty audio")
        peak = float(np.max(np.abs(chans)))
        silent = peak <= 10.0 ** (p.silence_threshold_dbfs / 20.0)
        if silent:
            return self.result({"is_silent": True, "loudness_integrated_lufs": None, "loudness_range_lu": None,
                                "true_peak_dbtp": None, "sample_peak_dbfs": _db(peak), "rms_dbfs": None},
                               None, "silent: loudness not measured", reason="silent")
        # BS.1770 sums channel powers; a mono file is one channel (pad with a
        # silent second channel for the stereo-only meters). Beyond two
        # channels we keep the front pair, since surround weights need a
        # channel layout that most catalogs do not declare.
        stereo = chans[:, :2] if chans.shape[1] >= 2 else np.concatenate([chans, np.zeros_like(chans)], axis=1)
        stereo = np.ascontiguousarray(stereo, dtype=np.float32)
        if p.backend == "essentia":
            from mirflow.extractors._essentia import essentia_standard

            es = essentia_standard()

            _, _, integrated, lra = es.LoudnessEBUR128(sampleRate=float(sr))(stereo)
            integrated = float(integrated) if np.isfinite(integrated) and integrated > -70.0 else None
            lra = float(lra) if integrated is not None else None
        else:
            import pyloudnorm as pyln

            meter = pyln.Meter(sr)
            value = meter.integrated_loudness(stereo.astype(np.float64)) if stereo.shape[0] >= int(0.4 * sr) else -np.inf
            integrated = float(value) if np.isfinite(value) else None
            lra = _pyloudnorm_range(stereo, sr) if integrated is not None else None
        mono = frontend.signal(sr)
        rms = float(np.sqrt(np.mean(np.square(mono, dtype=np.float64))))
        cols = {
            "is_silent": False,
            "loudness_integrated_lufs": integrated,
            "loudness_range_lu": lra,
            "true_peak_dbtp": true_peak_dbtp(chans, sr),
            "sample_peak_dbfs": _db(peak),
            "rms_dbfs": _db(rms),
        }
        # BS.1770 gating needs 400-ms blocks; EBU 3342's range needs 3-s ones.
        reason = "too short" if any(v is None for v in cols.values()) else None
        return self.result(cols, None, reason=reason)
