"""Library-neutral rhythm helpers: onset envelopes, tempo salience, meter from beats.

Everything here uses numpy, scipy and librosa (ISC) only, so that the
``librosa`` backend (the permissive pipeline) and the cross-checks of the
other backends can share it. The inputs come from the shared
:class:`~mirflow.frontend.Frontend` (its cached mel spectrogram and STFT),
so nothing here decodes or transforms audio a second time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from mirflow.extractors._dsp import unbiased_autocovariance

log = logging.getLogger(__name__)

#: Analysis rate and hop of the shared spectrogram the generic features use.
FEATURE_SR = 22050
FEATURE_HOP = 512
FEATURE_FPS = FEATURE_SR / FEATURE_HOP


@dataclass(frozen=True)
class OnsetFeatures:
    """Frame-wise onset envelopes and chroma of one track at :data:`FEATURE_FPS`.

    Attributes
    ----------
    broad : ndarray
        Spectral-flux onset strength over all mel bands.
    low : ndarray
        Spectral-flux onset strength of the bands below ~200 Hz (kick, bass).
    chroma : ndarray
        ``(12, frames)`` chroma, for harmonic change at bar lines.
    noisiness : float
        Median over the sounding frames of the mean of the max-normalised
        chroma: about 0.8 for white, pink and brown noise and random clicks,
        0.1-0.35 for tonal music (0 when nothing sounds).
    fps : float
        Frames per second of the envelopes.
    """

    broad: np.ndarray
    low: np.ndarray
    chroma: np.ndarray
    noisiness: float = 0.0
    fps: float = FEATURE_FPS


def chroma_flux(chroma: np.ndarray) -> float:
    """Mean frame-to-frame change of the normalised chroma (total variation, 0-1).

    Tells a steady tone (no onsets and no harmonic change: measured 0.0003)
    from legato music whose notes change without attacks (organ chorales:
    0.10-0.14), which onset periodicity alone cannot.
    """
    c = np.asarray(chroma, dtype=np.float64)
    if c.ndim != 2 or min(c.shape) == 0:
        return 0.0
    if c.shape[0] == 12 and c.shape[1] != 12:
        c = c.T  # frames first
    if c.shape[0] < 2:
        return 0.0
    norm = c / np.maximum(c.sum(axis=1, keepdims=True), 1e-12)
    return float(np.mean(0.5 * np.abs(np.diff(norm, axis=0)).sum(axis=1)))


def onset_features(frontend: Any) -> OnsetFeatures:
    """Onset envelopes and chroma from the frontend's cached 22.05 kHz STFT and mel spectrogram.

    Parameters
    ----------
    frontend : Frontend
        The track's shared frontend.

    Returns
    -------
    OnsetFeatures
        Cached on the frontend under ``("rhythm", "onset_features")``.

    Examples
    --------
    >>> import numpy as np
    >>> from mirflow.frontend import Frontend
    >>> fe = Frontend.from_array(np.zeros(22050 * 2, dtype=np.float32), 22050)
    >>> onset_features(fe).broad.shape[0] > 0
    True
    """

    def compute() -> OnsetFeatures:
        import librosa

        mel = frontend.mel(sample_rate_hz=FEATURE_SR, hop_length=FEATURE_HOP)
        log_mel = librosa.power_to_db(mel, ref=1.0, top_db=None)
        # Clip far below full scale so that silence and digital zero give a
        # flat envelope instead of numerical noise at -100 dB.
        log_mel = np.maximum(log_mel, -80.0)
        flux = np.maximum(0.0, np.diff(log_mel, axis=1, prepend=log_mel[:, :1]))
        freqs = librosa.mel_frequencies(n_mels=mel.shape[0], fmin=0.0, fmax=FEATURE_SR / 2)
        low_bands = freqs < 200.0
        broad = flux.mean(axis=0)
        low = flux[low_bands].mean(axis=0) if low_bands.any() else np.zeros_like(broad)
        power = frontend.stft(sample_rate_hz=FEATURE_SR, hop_length=FEATURE_HOP) ** 2
        chroma = librosa.feature.chroma_stft(S=power, sr=FEATURE_SR, hop_length=FEATURE_HOP,
                                             tuning=0.0)  # bar-level change needs no tuning
        frame_power = mel.sum(axis=0)
        sounding = frame_power > 1e-4 * frame_power.max() if frame_power.size and frame_power.max() > 0 \
            else np.zeros(frame_power.size, dtype=bool)
        noisiness = float(np.median(chroma[:, sounding].mean(axis=0))) if sounding.any() else 0.0
        return OnsetFeatures(broad=broad.astype(np.float64), low=low.astype(np.float64),
                             chroma=chroma.astype(np.float64), noisiness=noisiness)

    return frontend.cached(("rhythm", "onset_features"), compute)


# --------------------------------------------------------------------- tempo
def autocorrelation(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Unbiased, mean-removed autocorrelation normalised by lag 0 (``r[0] == 1``).

    Returns zeros when ``x`` is constant (silence), so that callers read "no
    periodicity" rather than dividing by zero.
    """
    r = unbiased_autocovariance(x, max_lag)
    if r[0] <= 1e-12:
        return np.zeros(r.size)
    return r / r[0]


def tempo_salience(envelope: np.ndarray, fps: float, bpms: np.ndarray) -> np.ndarray:
    """Periodicity of ``envelope`` at each tempo in ``bpms`` (0-1, higher = more periodic).

    The salience of a beat period is the mean autocorrelation at the period
    and its first multiples: a true beat period repeats, a spurious one
    (e.g. a single echo lag) does not.

    Examples
    --------
    >>> import numpy as np
    >>> env = np.zeros(2000); env[::50] = 1.0          # 120 BPM at 100 fps
    >>> s = tempo_salience(env, 100.0, np.array([90.0, 120.0]))
    >>> bool(s[1] > s[0])
    True
    """
    bpms = np.asarray(bpms, dtype=np.float64)
    periods = 60.0 * fps / bpms
    max_lag = int(np.ceil(periods.max() * 4)) + 2
    r = autocorrelation(envelope, max_lag)
    lags = np.arange(r.size)
    out = np.zeros(bpms.size)
    for i, p in enumerate(periods):
        vals = []
        for k in (1, 2, 3, 4):
            lag = k * p
            if lag >= r.size - 1:
                break
            # a +-2 % window absorbs small tempo drift and frame quantisation
            lo, hi = int(np.floor(lag * 0.98)), int(np.ceil(lag * 1.02)) + 1
            vals.append(r[lo:hi].max() if hi > lo else np.interp(lag, lags, r))
        out[i] = max(0.0, float(np.mean(vals))) if vals else 0.0
    return out


def metrical_salience(envelope: np.ndarray, fps: float, bpms: np.ndarray) -> np.ndarray:
    """How much each tempo in ``bpms`` stands out as *the* beat level (0-1).

    Plain periodicity cannot tell a tempo from half of it: whatever repeats
    every beat also repeats every two beats. This contrast does: it is the
    autocorrelation at the beat period and its multiples minus the
    autocorrelation half-way between them, so a level whose half-way points
    carry as much onset energy as its beats (it is too slow) or whose beats
    carry none (too fast) scores low.

    Examples
    --------
    >>> import numpy as np
    >>> env = np.zeros(2000); env[::50] = 1.0          # 120 BPM at 100 fps
    >>> s = metrical_salience(env, 100.0, np.array([60.0, 120.0, 240.0]))
    >>> int(np.argmax(s))
    1
    """
    bpms = np.asarray(bpms, dtype=np.float64)
    periods = 60.0 * fps / bpms
    max_lag = int(np.ceil(periods.max() * 4)) + 2
    r = autocorrelation(envelope, max_lag)

    def at(lag: float) -> float:
        lo, hi = int(np.floor(lag * 0.98)), int(np.ceil(lag * 1.02)) + 1
        return float(r[lo:hi].max()) if hi <= r.size and hi > lo else 0.0

    out = np.zeros(bpms.size)
    for i, p in enumerate(periods):
        ks = [k for k in (1, 2, 3, 4) if k * p < r.size - 1]
        if not ks:
            continue
        on = np.mean([at(k * p) for k in ks])
        half = np.mean([at((k - 0.5) * p) for k in ks])
        out[i] = max(0.0, float(on - half))
    return out


def periodicity_strength(envelope: np.ndarray, fps: float, min_bpm: float = 40.0,
                         max_bpm: float = 240.0) -> float:
    """Largest tempo salience between ``min_bpm`` and ``max_bpm`` (0 for noise and silence).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> periodicity_strength(rng.random(3000), 100.0) < 0.2
    True
    """
    if envelope.size < 4 or not np.any(envelope > 0):
        return 0.0
    bpms = np.geomspace(min_bpm, max_bpm, 160)
    return float(tempo_salience(envelope, fps, bpms).max())


def tempo_stability(beats: np.ndarray) -> float | None:
    """``1 - CV`` of the inter-beat intervals, clipped to 0-1; ``None`` with fewer than 3 beats.

    Examples
    --------
    >>> tempo_stability(np.arange(10) * 0.5)
    1.0
    """
    beats = np.asarray(beats, dtype=np.float64)
    if beats.size < 3:
        return None
    ibi = np.diff(beats)
    mean = ibi.mean()
    if mean <= 0:
        return None
    return float(np.clip(1.0 - ibi.std() / mean, 0.0, 1.0))


def bpm_from_beats(beats: np.ndarray) -> float | None:
    """Tempo from the median inter-beat interval (robust to a dropped or extra beat)."""
    beats = np.asarray(beats, dtype=np.float64)
    if beats.size < 2:
        return None
    ibi = float(np.median(np.diff(beats)))
    return 60.0 / ibi if ibi > 0 else None


# --------------------------------------------------------------------- meter
def _beat_sync(env: np.ndarray, fps: float, beats: np.ndarray, before: float = 0.05,
               after: float = 0.08) -> np.ndarray:
    """Largest envelope value in a short window around each beat (the beat's accent)."""
    idx = np.round(beats * fps).astype(int)
    lo = np.clip(idx - int(round(before * fps)), 0, env.size)
    hi = np.clip(idx + int(round(after * fps)) + 1, 0, env.size)
    return np.array([env[a:b].max() if b > a else 0.0 for a, b in zip(lo, hi, strict=True)])


def _chroma_novelty(chroma: np.ndarray, fps: float, beats: np.ndarray) -> np.ndarray:
    """Cosine distance between the chroma of each beat span and the previous one."""
    idx = np.clip(np.round(beats * fps).astype(int), 0, chroma.shape[1])
    bounds = np.r_[idx, chroma.shape[1]]
    spans = np.stack([chroma[:, a:b].mean(axis=1) if b > a else np.zeros(12)
                      for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
    norms = np.linalg.norm(spans, axis=1) + 1e-9
    unit = spans / norms[:, None]
    nov = np.zeros(len(beats))
    nov[1:] = 1.0 - np.sum(unit[1:] * unit[:-1], axis=1)
    return nov


def _zscore(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / sd if sd > 1e-9 else np.zeros_like(x)


@dataclass(frozen=True)
class MeterEstimate:
    """A meter and the bar phase of the first beat, with the per-meter scores.

    Attributes
    ----------
    meter : int
        Beats per bar.
    phase : int
        Index (0-based) of the first downbeat among the beats.
    scores : dict
        Meter to its accent-contrast score (higher = clearer).
    """

    meter: int
    phase: int
    scores: dict[int, float]

    def beat_in_bar(self, n: int) -> list[int]:
        """Positions in the bar (1 = downbeat) of ``n`` beats."""
        return [int((i - self.phase) % self.meter) + 1 for i in range(n)]


def estimate_meter(features: OnsetFeatures, beats: np.ndarray,
                   candidates: tuple[int, ...] = (3, 4)) -> MeterEstimate | None:
    """Meter and downbeat phase from accent periodicity at bar lags.

    Bar lines carry a louder low end (kick, bass notes) and harmonic change
    (a new chord). Each beat gets three beat-synchronous cues: the
    low-frequency onset strength, the broadband onset strength and the
    chroma novelty. For each candidate meter ``m`` and phase ``p`` the score
    is how far the cues at beats ``p, p+m, p+2m, ...`` rise above the mean;
    the meter whose best phase stands out most wins.

    Parameters
    ----------
    features : OnsetFeatures
        The track's onset envelopes and chroma.
    beats : ndarray
        Beat times in seconds.
    candidates : tuple of int
        Meters to consider.

    Returns
    -------
    MeterEstimate or None
        ``None`` with fewer than two bars of the longest candidate.

    Examples
    --------
    >>> import numpy as np
    >>> fps = FEATURE_FPS
    >>> beats = np.arange(24) * 0.5 + 0.25
    >>> low = np.zeros(int(13 * fps)); low[(beats[::3] * fps).astype(int)] = 1.0
    >>> feats = OnsetFeatures(broad=low.copy(), low=low, chroma=np.ones((12, low.size)))
    >>> est = estimate_meter(feats, beats)
    >>> est.meter, est.phase
    (3, 0)
    """
    beats = np.asarray(beats, dtype=np.float64)
    if beats.size < 2 * max(candidates) + 1:
        return None
    fps = features.fps
    cues = [
        (1.0, _zscore(_beat_sync(features.low, fps, beats))),
        (0.5, _zscore(_beat_sync(features.broad, fps, beats))),
        (1.0, _zscore(_chroma_novelty(features.chroma, fps, beats))),
    ]
    best: dict[int, tuple[float, int]] = {}
    for m in candidates:
        phase_scores = []
        for p in range(m):
            s = 0.0
            for w, cue in cues:
                s += w * float(cue[p::m].mean())
            phase_scores.append(s)
        # The contrast between the best phase and the others: the
        # z-scored cues average to 0, so a folded mean near 0 everywhere
        # means the meter does not fit.
        p_best = int(np.argmax(phase_scores))
        best[m] = (float(phase_scores[p_best]), p_best)
    meter = max(candidates, key=lambda m: (best[m][0], -m))
    return MeterEstimate(meter=meter, phase=best[meter][1],
                         scores={m: v[0] for m, v in best.items()})
