"""Timbre, spectral, tonal and "feel" descriptors of a track (``tracks`` columns).

Everything spectral is computed from the shared per-track
:class:`~mirflow.frontend.Frontend` STFT and mel spectrogram, so a pipeline
that also runs other extractors at the same rate and frame settings computes
each spectrum once. Frame-level descriptors (centroid, roll-off, flux,
flatness, contrast, MFCC, onsets, pulse) are computed the same way in both
backends (librosa and numpy on the shared spectra); the backends differ only
where essentia has its own algorithm:

* ``essentia`` (AGPL-3.0): HPCP chroma, ``TuningFrequency``, ``Dissonance``
  (all three from one essentia ``SpectralPeaks`` pass over the shared STFT),
  ``DynamicComplexity`` and ``Danceability`` (DFA) on the signal.
* ``librosa`` (ISC, for the permissive pipeline): STFT chroma and
  ``estimate_tuning``; the essentia-only columns (dynamic complexity, DFA
  danceability, dissonance) are null.

The four 0-1 scores (``energy``, ``danceability``, ``acousticness``,
``instrumentalness``) are transparent heuristics over the backend-independent
descriptors, so they are the same in both backends; docs/descriptors.md gives
every formula. They are in the spirit of Spotify's retired audio features but
are not Spotify's models and are not calibrated against them.

Statistics are taken over *active* frames (frame RMS above the silence
threshold), so leading/trailing digital silence does not drag a centroid to
0 Hz. A track with no active frame (empty or silent) gets null columns.

The frame-level features are also the input of the ``descriptor`` embedding
(:mod:`mirflow.extractors.embeddings`); :func:`frame_features` caches them on
the frontend so that the two extractors share one computation.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mirflow.errors import ExtractionError
from mirflow.extractors._dsp import unbiased_autocovariance
from mirflow.extractors.base import (
    Extraction,
    Extractor,
    Params,
    WindowPart,
    longest_reason,
    param,
    window_weights,
)
from mirflow.extractors.requirements import ESSENTIA, LIBROSA, Requirement

log = logging.getLogger(__name__)

#: Number of MFCCs (0-12) and of spectral-contrast rows (6 sub-bands + the rest).
N_MFCC = 13
N_CONTRAST = 7
#: Mel bands of the shared mel spectrogram the MFCCs and onsets come from.
N_MELS = 128
#: Spectral roll-off share.
ROLL_PERCENT = 0.85
#: Frames per block of the frame-level features (2048 frames of a 2048-point STFT: 8 MB).
FRAME_BLOCK = 2048
#: Samples per block of the level and zero-crossing sums.
SAMPLE_BLOCK = 1 << 20
#: Lags of the onset autocorrelation searched for a pulse: 0.3-1.0 s = 200-60 BPM.
PULSE_LAG_S = (0.3, 1.0)
#: Onset-envelope floors, in the envelope's unit (mean positive dB change over the
#: mel bands per frame): stationary tones and noise stay well below them, a
#: drum hit or a plucked note is tens of dB. Without them a normalized envelope
#: turns the numeric ripple of a steady tone into "onsets" and a "clear pulse".
ONSET_DELTA_DB = 2.0
PULSE_VARIANCE_FLOOR_DB2 = 1.0
#: Band whose syllable-rate modulation suggests a voice (telephone band).
VOICE_BAND_HZ = (300.0, 3400.0)
#: Floor of the voice-band level below its maximum, dB.
VOICE_FLOOR_DB = 40.0
#: Modulation frequencies of syllables (numerator) and of all considered modulation (denominator).
SYLLABLE_MOD_HZ = (3.0, 8.0)
ALL_MOD_HZ = (0.5, 20.0)

TRACK_COLUMNS: tuple[str, ...] = (
    "spectral_centroid_mean_hz", "spectral_centroid_std_hz",
    "spectral_rolloff_mean_hz", "spectral_rolloff_std_hz",
    "spectral_flux_mean", "spectral_flux_std",
    "spectral_flatness_mean", "spectral_flatness_std",
    "spectral_contrast_mean", "spectral_contrast_std",
    "mfcc_mean", "mfcc_cov", "chroma_mean",
    "zero_crossing_rate", "onset_rate_per_s", "pulse_clarity",
    "dynamic_complexity_db", "danceability_dfa", "dissonance", "tuning_frequency_hz",
    "energy", "danceability", "acousticness", "instrumentalness",
)  # fmt: skip
#: Columns only the essentia backend fills.
ESSENTIA_ONLY: tuple[str, ...] = ("dynamic_complexity_db", "danceability_dfa", "dissonance")


@dataclass(frozen=True, kw_only=True)
class DescriptorParams(Params):
    backend: str = param("essentia", choices=("essentia", "librosa"),
                         doc="essentia (AGPL) for HPCP/tuning/dissonance/dynamic complexity/DFA danceability; "
                             "librosa (permissive) leaves the essentia-only columns null")
    sample_rate_hz: int = param(22050, choices=(22050, 44100),
                                doc="Analysis rate of the shared STFT/mel")
    n_fft: int = param(2048, choices=(1024, 2048, 4096), doc="STFT window and FFT size (Hann)")
    hop_length: int = param(512, choices=(256, 512, 1024), doc="STFT hop in samples")
    silence_threshold_dbfs: float = param(-70.0, range=(-140.0, -20.0),
                                          doc="Frame RMS below which a frame is inactive; a track without "
                                              "active frames gets null columns")


# ----------------------------------------------------------------------------- frame features
@dataclass(frozen=True)
class FrameFeatures:
    """Backend-independent frame-level features of one track (active frames only).

    Attributes
    ----------
    sample_rate_hz, hop_length : int
        Analysis rate and hop of the frames.
    duration_s : float
        Duration of the analysed signal.
    active : numpy.ndarray
        bool ``(frames,)``: frame RMS above the silence threshold.
    centroid_hz, rolloff_hz, flux, flatness, rms_db : numpy.ndarray
        ``(active frames,)`` float64.
    contrast : numpy.ndarray
        ``(7, active frames)`` spectral contrast in dB.
    mfcc : numpy.ndarray
        ``(13, active frames)``.
    chroma : numpy.ndarray
        ``(12, active frames)`` STFT chroma (tuning 0, per-frame max 1).
    onset_env : numpy.ndarray
        ``(frames,)`` onset strength over *all* frames (it is a time series).
    voice_level_db : numpy.ndarray
        ``(frames,)`` level of the 300-3400 Hz mel bands, dB, floored at
        40 dB below its maximum.
    level_dbfs : float
        RMS level of the whole mono signal, dBFS.
    zero_crossing_rate : float
        Share of successive samples whose signs differ.
    """

    sample_rate_hz: int
    hop_length: int
    duration_s: float
    active: np.ndarray
    centroid_hz: np.ndarray
    rolloff_hz: np.ndarray
    flux: np.ndarray
    flatness: np.ndarray
    rms_db: np.ndarray
    contrast: np.ndarray
    mfcc: np.ndarray
    chroma: np.ndarray
    onset_env: np.ndarray
    voice_level_db: np.ndarray
    level_dbfs: float
    zero_crossing_rate: float

    @property
    def n_active(self) -> int:
        return int(self.active.sum())

    @property
    def frame_rate_hz(self) -> float:
        return self.sample_rate_hz / self.hop_length


def frame_features(frontend: Any, *, sample_rate_hz: int = 22050, n_fft: int = 2048, hop_length: int = 512,
                   silence_threshold_dbfs: float = -70.0) -> FrameFeatures | None:
    """Compute (once per track, cached on the frontend) the frame-level features.

    Parameters
    ----------
    frontend : Frontend
        The track's shared frontend.
    sample_rate_hz, n_fft, hop_length : int
        Settings of the shared STFT / mel spectrogram.
    silence_threshold_dbfs : float
        Frames whose RMS is below this are inactive.

    Returns
    -------
    FrameFeatures or None
        None when the track is shorter than one window (``n_fft``
        samples) or has no active frame.
    """
    key = ("descriptors.frames", sample_rate_hz, n_fft, hop_length, float(silence_threshold_dbfs))
    return frontend.cached(key, lambda: _compute_frame_features(frontend, sample_rate_hz, n_fft, hop_length,
                                                                silence_threshold_dbfs))


def _compute_frame_features(frontend: Any, sr: int, n_fft: int, hop: int,
                            threshold_dbfs: float) -> FrameFeatures | None:
    import librosa

    y = frontend.signal(sr)
    if y.size < n_fft:
        # Shorter than one analysis window (< 93 ms at the defaults): nothing
        # frame-based is meaningful, and librosa would warn about padding.
        return None
    mag = frontend.stft(sample_rate_hz=sr, n_fft=n_fft, hop_length=hop)
    mel = frontend.mel(sample_rate_hz=sr, n_fft=n_fft, hop_length=hop, n_mels=N_MELS)
    # Frame RMS from the magnitude STFT (Parseval with librosa's Hann window),
    # so that inactive frames are found without another pass over the signal.
    # Everything from the STFT is per frame (flux: per pair of frames), so it
    # is computed FRAME_BLOCK frames at a time: the same values as whole-track
    # calls, without librosa's whole-track temporaries (an hour at the
    # defaults: several copies of a 0.6-GB spectrogram).
    n_frames = mag.shape[1]
    rms_db_parts, centroid, rolloff, flatness, contrast, chroma, flux_all = [], [], [], [], [], [], []
    previous_unit = None
    for a in range(0, n_frames, FRAME_BLOCK):
        block = mag[:, a:a + FRAME_BLOCK]
        rms = librosa.feature.rms(S=block, frame_length=n_fft)[0].astype(np.float64)
        with np.errstate(divide="ignore"):
            rms_db = 20.0 * np.log10(rms)
        rms_db_parts.append(rms_db)
        block_active = rms_db > threshold_dbfs
        # Flux between L2-normalized spectra: independent of the level, bounded by √2.
        norm = np.linalg.norm(block, axis=0)
        unit = block / np.where(norm > 0, norm, 1.0)
        if previous_unit is None:
            flux_all.append(np.concatenate([[0.0], np.linalg.norm(np.diff(unit, axis=1), axis=0)]))
        else:
            flux_all.append(np.linalg.norm(np.diff(np.concatenate([previous_unit, unit], axis=1), axis=1), axis=0))
        previous_unit = unit[:, -1:]
        if not block_active.any():
            continue
        mag_a = block[:, block_active]
        centroid.append(librosa.feature.spectral_centroid(S=mag_a, sr=sr, n_fft=n_fft)[0])
        rolloff.append(librosa.feature.spectral_rolloff(S=mag_a, sr=sr, n_fft=n_fft, roll_percent=ROLL_PERCENT)[0])
        flatness.append(librosa.feature.spectral_flatness(S=mag_a)[0])
        contrast.append(librosa.feature.spectral_contrast(S=mag_a, sr=sr, n_fft=n_fft))
        chroma.append(librosa.feature.chroma_stft(S=mag_a**2, sr=sr, n_fft=n_fft, tuning=0.0))
    rms_db_all = np.concatenate(rms_db_parts)
    active = rms_db_all > threshold_dbfs
    if not active.any():
        return None
    centroid, rolloff, flatness = np.concatenate(centroid), np.concatenate(rolloff), np.concatenate(flatness)
    contrast, chroma = np.concatenate(contrast, axis=1), np.concatenate(chroma, axis=1)
    flux_all = np.concatenate(flux_all)
    # The first frame has no predecessor; a frame after silence has a flux
    # against a zero spectrum (1.0), which is an onset and is kept.
    flux_mask = active.copy()
    flux_mask[0] = False
    flux = flux_all[flux_mask] if flux_mask.any() else np.zeros(1)
    mel_db = librosa.power_to_db(mel)  # ref 1.0, top_db 80: the usual MFCC input
    mfcc = librosa.feature.mfcc(S=mel_db, n_mfcc=N_MFCC)[:, active]
    onset_env = librosa.onset.onset_strength(S=mel_db, sr=sr, hop_length=hop).astype(np.float64)
    freqs = librosa.mel_frequencies(n_mels=N_MELS, fmax=sr / 2.0)
    band = (freqs >= VOICE_BAND_HZ[0]) & (freqs <= VOICE_BAND_HZ[1])
    voice = 10.0 * np.log10(np.maximum(mel[band].sum(axis=0, dtype=np.float64), 1e-20))
    # A 40-dB floor: gaps between notes would otherwise swing the level by
    # 100 dB and turn any staccato line into "syllables".
    voice = np.maximum(voice, voice.max() - VOICE_FLOOR_DB)
    # Level and zero crossings over blocks of samples (float64 and sign copies of
    # an hour would be 0.6 GB and 0.2 GB); blocks overlap by one sample for the crossings.
    energy, crossings = 0.0, 0
    for a in range(0, y.size, SAMPLE_BLOCK):
        chunk = y[a:a + SAMPLE_BLOCK + 1]
        head = chunk[:SAMPLE_BLOCK].astype(np.float64)
        energy += float(np.dot(head, head))
        crossings += int(np.count_nonzero(np.signbit(chunk[1:]) != np.signbit(chunk[:-1])))
    level = float(np.sqrt(energy / y.size))
    zcr = float(crossings / (y.size - 1))
    return FrameFeatures(
        sample_rate_hz=sr, hop_length=hop, duration_s=y.size / float(sr), active=active,
        centroid_hz=centroid.astype(np.float64), rolloff_hz=rolloff.astype(np.float64),
        flux=flux.astype(np.float64), flatness=flatness.astype(np.float64),
        rms_db=rms_db_all[active], contrast=contrast.astype(np.float64), mfcc=mfcc.astype(np.float64),
        chroma=chroma.astype(np.float64), onset_env=onset_env, voice_level_db=voice,
        level_dbfs=20.0 * math.log10(level) if level > 0 else -math.inf, zero_crossing_rate=zcr,
    )


# ----------------------------------------------------------------------------- derived measures
def pulse(features: FrameFeatures) -> tuple[float, float | None]:
    """Pulse clarity and its tempo from the onset-strength autocorrelation.

    The autocorrelation of the smoothed, mean-removed onset envelope is normalized per
    lag by the number of overlapping frames (unbiased) and by its lag-0
    value, or by :data:`PULSE_VARIANCE_FLOOR_DB2` where that is larger (so a
    nearly flat envelope has no clear pulse); the pulse clarity is its
    value at the lag between 0.3 and 1.0 s that maximizes it times a
    log-normal tempo prior (centre 120 BPM, one octave standard deviation),
    clipped to [0, 1]; the tempo is 60 / that lag.

    Returns
    -------
    (clarity, tempo_bpm)
        ``(0.0, None)`` when the envelope is flat or shorter than 1 s of lags.
    """
    # Smooth over ±2 frames (Hann) first: onset peaks are a frame or two wide,
    # and a beat period that falls between two integer lags would otherwise
    # lose half its correlation to the frame grid.
    kernel = np.hanning(7)[1:-1]
    env = np.convolve(features.onset_env, kernel / kernel.sum(), mode="same")
    env = env - env.mean()
    n = env.size
    lo = int(math.ceil(PULSE_LAG_S[0] * features.frame_rate_hz))
    hi = int(math.floor(PULSE_LAG_S[1] * features.frame_rate_hz))
    if n <= hi + 1 or not np.any(env):
        return 0.0, None
    ac = unbiased_autocovariance(env, hi)
    if ac[0] <= 0:
        return 0.0, None
    ac = ac / max(ac[0], PULSE_VARIANCE_FLOOR_DB2)
    lags = np.arange(lo, hi + 1)
    # Pick the lag with a broad log-normal tempo prior (120 BPM, one octave),
    # as librosa's tempo estimator does, so that a pulse at 0.5 s wins over
    # its equally periodic multiple at 1.0 s; the clarity is the unweighted value.
    bpm = 60.0 * features.frame_rate_hz / lags
    prior = np.exp(-0.5 * np.log2(bpm / 120.0) ** 2)
    lag = int(lags[np.argmax(ac[lo: hi + 1] * prior)])
    return float(np.clip(ac[lag], 0.0, 1.0)), 60.0 * features.frame_rate_hz / lag


def onset_rate(features: FrameFeatures) -> float:
    """Onsets per second: librosa's peak picking on the shared onset envelope.

    The envelope is not normalized (librosa's default) but thresholded at an
    absolute :data:`ONSET_DELTA_DB` above its local mean, so steady sounds
    have no onsets.
    """
    import librosa

    if features.duration_s <= 0:
        return 0.0
    onsets = librosa.onset.onset_detect(onset_envelope=features.onset_env.astype(np.float32),
                                        sr=features.sample_rate_hz, hop_length=features.hop_length,
                                        normalize=False, delta=ONSET_DELTA_DB)
    return float(len(onsets) / features.duration_s)


def syllable_modulation_ratio(features: FrameFeatures) -> float | None:
    """Share of the voice-band level's modulation energy at syllable rates (3-8 Hz).

    The level of the 300-3400 Hz mel bands (dB, floored 40 dB below its
    maximum) is a time series; its power spectrum (Hann window, mean
    removed) between 3 and 8 Hz is divided by that between 0.5 and 20 Hz.
    Speech and singing move the voice band's level at syllable rate (the
    modulation spectrum of speech peaks near 4 Hz); accompaniment mostly
    moves it at beat and chord rates below 3 Hz.

    Returns
    -------
    float or None
        None for tracks shorter than 2 s (too few modulation periods);
        0.0 when the band level does not move at all.
    """
    x = features.voice_level_db
    if features.duration_s < 2.0 or x.size < 8:
        return None
    x = (x - x.mean()) * np.hanning(x.size)
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, d=1.0 / features.frame_rate_hz)
    total = power[(freqs >= ALL_MOD_HZ[0]) & (freqs <= ALL_MOD_HZ[1])].sum()
    if total <= 1e-9 * x.size:
        return 0.0
    return float(power[(freqs >= SYLLABLE_MOD_HZ[0]) & (freqs <= SYLLABLE_MOD_HZ[1])].sum() / total)


def _ramp(x: float, lo: float, hi: float) -> float:
    """0 at ``lo``, 1 at ``hi``, linear in between, clipped."""
    return float(min(1.0, max(0.0, (x - lo) / (hi - lo))))


def scores(features: FrameFeatures, onsets_per_s: float, clarity: float,
           tempo_bpm: float | None) -> dict[str, float | None]:
    """The four 0-1 heuristic scores (formulas in docs/descriptors.md).

    Parameters
    ----------
    features : FrameFeatures
        Frame-level features of the track.
    onsets_per_s, clarity : float
        :func:`onset_rate` and the clarity of :func:`pulse`.
    tempo_bpm : float or None
        Tempo of :func:`pulse`.

    Returns
    -------
    dict
        ``energy``, ``danceability``, ``acousticness``, ``instrumentalness``.
    """
    loud = _ramp(features.level_dbfs, -40.0, -6.0)
    busy = _ramp(onsets_per_s, 0.0, 8.0)
    bright = _ramp(float(features.centroid_hz.mean()), 500.0, 3000.0)
    energy = 0.5 * loud + 0.25 * busy + 0.25 * bright
    # A log-Gaussian preference for ~120 BPM (one octave off -> 0.14).
    tempo_fit = 0.0 if tempo_bpm is None else math.exp(-0.5 * (math.log2(tempo_bpm / 120.0) / 0.5) ** 2)
    danceability = clarity * (0.5 + 0.5 * tempo_fit)
    high = _ramp(float(features.rolloff_hz.mean()), 2000.0, 8000.0)
    noisy = _ramp(math.log10(max(float(features.flatness.mean()), 1e-12)), -3.0, -0.5)
    steady = 1.0 - _ramp(float(features.rms_db.std()), 0.0, 10.0)
    acousticness = 1.0 - (high + noisy + steady) / 3.0
    ratio = syllable_modulation_ratio(features)
    instrumentalness = None if ratio is None else 1.0 - _ramp(ratio, 0.25, 0.6)
    return {"energy": energy, "danceability": danceability, "acousticness": acousticness,
            "instrumentalness": instrumentalness}


# ----------------------------------------------------------------------------- essentia
def _essentia_tonal(mag: np.ndarray, active: np.ndarray, sr: int, n_fft: int) -> tuple[np.ndarray, float, float]:
    """HPCP mean (C = 0), tuning frequency and mean dissonance from one spectral-peak pass.

    The shared STFT (librosa, unnormalized Hann) is scaled by 4 / n_fft so a
    full-scale sinusoid peaks at 1.0, the scale essentia's normalized
    ``Windowing`` + ``Spectrum`` chain gives and its ``Dissonance`` and
    ``SpectralPeaks`` thresholds assume.
    """
    from mirflow.extractors._essentia import essentia_standard

    es = essentia_standard()

    peaks = es.SpectralPeaks(sampleRate=float(sr), minFrequency=20.0, maxFrequency=5000.0, maxPeaks=100,
                             magnitudeThreshold=1e-5, orderBy="frequency")
    dissonance = es.Dissonance()
    tuning = es.TuningFrequency()
    spec = np.ascontiguousarray((mag[:, active] * (4.0 / n_fft)).T, dtype=np.float32)
    found = []
    diss = []
    tuning_hz = 440.0
    for frame in spec:
        freqs, mags = peaks(frame)
        if freqs.size == 0:
            continue
        found.append((freqs, mags))
        diss.append(float(dissonance(freqs, mags)))
        tuning_hz = float(tuning(freqs, mags)[0])  # running estimate over all frames so far
    if not found:
        return np.zeros(12), 440.0, 0.0
    hpcp = es.HPCP(size=12, referenceFrequency=tuning_hz, sampleRate=float(sr), minFrequency=40.0,
                   maxFrequency=5000.0, normalized="unitMax")
    profile = np.mean([hpcp(f, m) for f, m in found], axis=0)
    # Essentia's bin 0 is the reference pitch class A; roll so that C (3 bins up) is bin 0.
    return np.roll(profile, -3), tuning_hz, float(np.mean(diss))


# ----------------------------------------------------------------------------- extractor
def _num(x: float | None) -> float | None:
    """A finite float, or None (never NaN/inf in a column)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _vec(x: np.ndarray) -> list[float] | None:
    arr = np.asarray(x, dtype=np.float32).ravel()
    return [float(v) for v in arr] if np.all(np.isfinite(arr)) else None


def _stats(x: np.ndarray) -> tuple[float | None, float | None]:
    return _num(float(np.mean(x))), _num(float(np.std(x)))


class DescriptorExtractor(Extractor):
    """Spectral, timbral, tonal and rhythmic descriptors plus 0-1 "feel" scores.

    Examples
    --------
    >>> import numpy as np
    >>> from mirflow.frontend import Frontend
    >>> sr = 22050
    >>> tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(3 * sr) / sr)
    >>> out = DescriptorExtractor(backend="librosa").extract(Frontend.from_array(tone, sr))
    >>> round(out.columns["tuning_frequency_hz"]), int(np.argmax(out.columns["chroma_mean"]))
    (440, 9)
    """

    name = "descriptors"
    version = "2"  # 2: empty values carry their reason (tracks.empty_reasons)
    Params = DescriptorParams
    columns = TRACK_COLUMNS
    requires = ("signal", "stft", "mel", "cached")
    libraries = ("librosa", "essentia", "numpy")
    licences = ("AGPL-3.0 (essentia backend)", "ISC (librosa backend)")

    def requirements(self) -> tuple[Requirement, ...]:
        return (ESSENTIA, LIBROSA) if self.params.backend == "essentia" else (LIBROSA,)

    def extract(self, frontend: Any) -> Extraction:
        from threadpoolctl import threadpool_limits

        if frontend.is_empty:
            return self.empty("empty audio", reason="empty audio")
        # One BLAS thread: matrix products (mel filterbank, covariance) can
        # round differently with another thread count, and the values must
        # be the same bit for bit on any host; workers use one core each anyway.
        with threadpool_limits(1):
            return self._extract(frontend)

    def _extract(self, frontend: Any) -> Extraction:
        p: DescriptorParams = self.params
        feats = frame_features(frontend, sample_rate_hz=p.sample_rate_hz, n_fft=p.n_fft,
                               hop_length=p.hop_length, silence_threshold_dbfs=p.silence_threshold_dbfs)
        if feats is None:
            return self.empty("silent or shorter than one analysis window: no descriptors",
                              reason="silent or too short")
        import librosa

        cols: dict[str, Any] = {}
        cols["spectral_centroid_mean_hz"], cols["spectral_centroid_std_hz"] = _stats(feats.centroid_hz)
        cols["spectral_rolloff_mean_hz"], cols["spectral_rolloff_std_hz"] = _stats(feats.rolloff_hz)
        cols["spectral_flux_mean"], cols["spectral_flux_std"] = _stats(feats.flux)
        cols["spectral_flatness_mean"], cols["spectral_flatness_std"] = _stats(feats.flatness)
        cols["spectral_contrast_mean"] = _vec(feats.contrast.mean(axis=1))
        cols["spectral_contrast_std"] = _vec(feats.contrast.std(axis=1))
        cols["mfcc_mean"] = _vec(feats.mfcc.mean(axis=1))
        if feats.n_active > 1:
            cov = np.cov(feats.mfcc)  # rows are variables (coefficients), ddof 1
            cols["mfcc_cov"] = _vec(cov[np.triu_indices(N_MFCC)])
        else:
            cols["mfcc_cov"] = None  # a covariance needs two frames
        cols["zero_crossing_rate"] = _num(feats.zero_crossing_rate)
        rate = onset_rate(feats)
        clarity, tempo = pulse(feats)
        cols["onset_rate_per_s"] = _num(rate)
        cols["pulse_clarity"] = _num(clarity)
        notes: list[str] = []
        if p.backend == "essentia":
            try:
                from mirflow.extractors._essentia import essentia_standard

                es = essentia_standard()
            except ImportError as exc:
                raise ExtractionError("descriptors: backend 'essentia' needs essentia (pip install "
                                      "'mirflow[full]'); use backend: librosa for the permissive pipeline",
                                      stage=f"extract:{self.name}") from exc
            mag = frontend.stft(sample_rate_hz=p.sample_rate_hz, n_fft=p.n_fft, hop_length=p.hop_length)
            chroma, tuning_hz, diss = _essentia_tonal(mag, feats.active, p.sample_rate_hz, p.n_fft)
            y = np.ascontiguousarray(frontend.signal(p.sample_rate_hz), dtype=np.float32)
            complexity, _ = es.DynamicComplexity(sampleRate=float(p.sample_rate_hz))(y)
            dfa, _ = es.Danceability(sampleRate=float(p.sample_rate_hz))(y)
            cols["chroma_mean"] = _vec(chroma)
            cols["tuning_frequency_hz"] = _num(tuning_hz)
            cols["dissonance"] = _num(diss)
            cols["dynamic_complexity_db"] = _num(complexity)
            cols["danceability_dfa"] = _num(dfa)
        else:
            mag = frontend.stft(sample_rate_hz=p.sample_rate_hz, n_fft=p.n_fft, hop_length=p.hop_length)
            mag_a = mag[:, feats.active]
            # estimate_tuning returns a fraction of a semitone bin in [-0.5, 0.5).
            bins = float(librosa.estimate_tuning(S=mag_a, sr=p.sample_rate_hz, n_fft=p.n_fft))
            chroma = librosa.feature.chroma_stft(S=mag_a**2, sr=p.sample_rate_hz, n_fft=p.n_fft, tuning=bins)
            cols["chroma_mean"] = _vec(chroma.mean(axis=1))
            cols["tuning_frequency_hz"] = _num(440.0 * 2.0 ** (bins / 12.0))
            for c in ESSENTIA_ONLY:
                cols[c] = None
            notes.append("librosa backend: essentia-only columns are null")
        cols.update({k: _num(v) for k, v in scores(feats, rate, clarity, tempo).items()})
        missing = [c for c in self.columns if cols.get(c) is None]
        reason = None
        if missing:
            reason = ("not computed by the librosa backend" if set(missing) <= set(ESSENTIA_ONLY)
                      else f"not measurable on this audio: {', '.join(missing)}")
        return self.result(cols, None, *notes, reason=reason, summary={"active_frames": feats.n_active})

    # ------------------------------------------------------ long tracks
    def merges_windows(self) -> bool:
        return True

    def merge(self, parts: Sequence[WindowPart]) -> Extraction:
        """Window values combined as statistics of the whole track's active frames.

        Means are weighted by each window's active frames in its share;
        standard deviations and the MFCC covariance are pooled (within plus
        between windows), which is what the whole track's frames give up to
        frames near the windows' edges. The other columns (rates, pulse
        clarity, tuning, Essentia's dynamic complexity, DFA and dissonance,
        the feel scores) are the same weighted means of the window values: a
        long track's value is its typical window's, not one figure over the
        hour (these are defined on a few minutes of music).
        """
        valid = [part for part in parts if part.extraction.summary.get("active_frames")]
        if not valid:
            return self.empty("silent or shorter than one analysis window: no descriptors",
                              reason=longest_reason(parts))
        weights = window_weights(valid, [part.extraction.summary["active_frames"] for part in valid])

        def values(column: str) -> tuple[np.ndarray, np.ndarray] | None:
            pairs = [(np.asarray(part.extraction.columns[column], dtype=np.float64), w)
                     for part, w in zip(valid, weights, strict=True) if part.extraction.columns[column] is not None]
            if not pairs:
                return None
            return np.stack([v for v, _ in pairs]), np.array([w for _, w in pairs])

        def mean(column: str) -> np.ndarray | None:
            got = values(column)
            return None if got is None else np.average(got[0], axis=0, weights=got[1])

        cols: dict[str, Any] = {}
        pooled = {"spectral_centroid_std_hz": "spectral_centroid_mean_hz", "spectral_rolloff_std_hz":
                  "spectral_rolloff_mean_hz", "spectral_flux_std": "spectral_flux_mean",
                  "spectral_flatness_std": "spectral_flatness_mean", "spectral_contrast_std": "spectral_contrast_mean"}
        for column in self.columns:
            if column in pooled or column == "mfcc_cov":
                continue
            m = mean(column)
            cols[column] = None if m is None else (_num(float(m)) if m.ndim == 0 else _vec(m))
        for std_column, mean_column in pooled.items():
            stds, means = values(std_column), values(mean_column)
            if stds is None or means is None or len(stds[1]) != len(means[1]):
                cols[std_column] = None
                continue
            second = np.average(stds[0] ** 2 + means[0] ** 2, axis=0, weights=stds[1])
            m = np.average(means[0], axis=0, weights=means[1])
            pooled_std = np.sqrt(np.maximum(second - m**2, 0.0))
            cols[std_column] = _num(float(pooled_std)) if pooled_std.ndim == 0 else _vec(pooled_std)
        covs, means = values("mfcc_cov"), values("mfcc_mean")
        cols["mfcc_cov"] = None
        if covs is not None and means is not None and len(covs[1]) == len(means[1]):
            iu = np.triu_indices(N_MFCC)
            second = np.zeros((N_MFCC, N_MFCC))
            for flat, mu, w in zip(covs[0], means[0], covs[1], strict=True):
                cov = np.zeros((N_MFCC, N_MFCC))
                cov[iu] = flat
                cov = cov + np.triu(cov, 1).T
                second += w * (cov + np.outer(mu, mu))
            m = np.average(means[0], axis=0, weights=means[1])
            cols["mfcc_cov"] = _vec((second / covs[1].sum() - np.outer(m, m))[iu])
        missing = [c for c in self.columns if cols.get(c) is None]
        reason = None
        if missing:
            reason = ("not computed by the librosa backend" if set(missing) <= set(ESSENTIA_ONLY)
                      else f"not measurable on this audio: {', '.join(missing)}")
        return self.result(cols, None, f"merged {len(valid)} of {len(parts)} windows", reason=reason)
