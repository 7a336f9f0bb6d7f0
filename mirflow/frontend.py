"""The shared per-track frontend: decode once, transform once, share.

Every extractor of a pipeline receives the same :class:`Frontend` for a
track. It holds the decoded audio at the native rate and computes derived
inputs (a mono signal at some rate, an STFT, a mel spectrogram, or anything
an extractor registers with :meth:`Frontend.cached`) lazily, the first time
one is asked for, then keeps it for the other extractors. Nothing is
decoded or transformed twice for one track.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from mirflow.audio.decode import AudioWindow, DecodedAudio, DecodeLimits, decode, resample, to_mono
from mirflow.audio.probe import ProbeInfo, probe

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Frames per block of :func:`stft_magnitude` (2048 frames of a 2048-point STFT: 16 MB of complex64).
STFT_BLOCK_FRAMES = 2048


def stft_magnitude(y: np.ndarray, *, n_fft: int = 2048, hop_length: int = 512,
                   block_frames: int = STFT_BLOCK_FRAMES) -> np.ndarray:
    """``np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop_length))``, computed in blocks of frames.

    Centred, Hann, zero padding, as librosa's defaults. Each block of frames
    is cut from the (virtually) padded signal and transformed with
    ``center=False``: every frame gets the same samples and the same FFT, so
    the magnitudes are librosa's, bit for bit (``tests/test_long_inputs.py``),
    but the complex spectrogram and the padded copy of the signal are never
    held whole (for an hour at 22.05 kHz, 2048/512: 1.3 GB of complex64 for a
    0.6-GB result).

    Examples
    --------
    >>> import numpy as np
    >>> stft_magnitude(np.zeros(22050, np.float32)).shape
    (1025, 44)
    """
    import librosa

    y = np.asarray(y)
    pad = n_fft // 2
    if y.size <= pad or y.size < block_frames * hop_length:
        return np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop_length))
    n_frames = 1 + (y.size + 2 * pad - n_fft) // hop_length
    out = np.empty((1 + n_fft // 2, n_frames), dtype=np.float32 if y.dtype != np.float64 else np.float64)
    for a in range(0, n_frames, block_frames):
        b = min(a + block_frames, n_frames)
        start, stop = a * hop_length - pad, (b - 1) * hop_length + n_fft - pad
        chunk = y[max(start, 0):min(stop, y.size)]
        if start < 0 or stop > y.size:
            chunk = np.concatenate([np.zeros(max(0, -start), y.dtype), chunk,
                                    np.zeros(max(0, stop - y.size), y.dtype)])
        out[:, a:b] = np.abs(librosa.stft(chunk, n_fft=n_fft, hop_length=hop_length, center=False))
    return out


#: Inputs an extractor may declare in ``requires``.
INPUTS = frozenset({"probe", "signal", "channels", "stft", "mel", "cached"})


class Frontend:
    """Lazily computed, cached inputs of one track.

    Parameters
    ----------
    audio : DecodedAudio
        The decoded samples at the native rate.
    info : ProbeInfo, optional
        Container facts (absent for in-memory audio).
    window : AudioWindow, optional
        When ``audio`` is one window of a long track (analyzed window by
        window, then merged: :meth:`mirflow.extractors.base.Extractor.merge`),
        where it lies in the track. Times extractors report stay relative to
        the window's first sample; :meth:`core` is the window's own share.

    Examples
    --------
    >>> import numpy as np
    >>> sr = 22050
    >>> fe = Frontend.from_array(np.sin(2 * np.pi * 440 * np.arange(sr) / sr), sr)
    >>> fe.signal(11025).shape
    (11025,)
    >>> fe.signal(11025) is fe.signal(11025)  # computed once
    True
    """

    def __init__(self, audio: DecodedAudio, info: ProbeInfo | None = None, path: str | None = None, *,
                 window: AudioWindow | None = None) -> None:
        self.audio = audio
        self.info = info
        self.path = path
        self.window = window
        self._cache: dict[Hashable, Any] = {}
        self.computed: list[Hashable] = []  # keys in the order computed: shows sharing in tests

    @classmethod
    def from_file(cls, path: str | Path, *, info: ProbeInfo | None = None,
                  limits: DecodeLimits | None = None) -> Frontend:
        """Probe and decode ``path`` once (within ``limits``)."""
        info = info or probe(path)
        return cls(decode(path, info=info, limits=limits), info, str(path))

    @classmethod
    def from_array(cls, samples: np.ndarray, sample_rate_hz: int) -> Frontend:
        """Wrap in-memory samples (mono ``(n,)`` or ``(n, channels)``)."""
        arr = np.asarray(samples, dtype=np.float32)
        if arr.ndim == 1:
            arr = arr[:, None]
        return cls(DecodedAudio(np.ascontiguousarray(arr), int(sample_rate_hz)))

    # ------------------------------------------------------------------ basics
    @property
    def native_sample_rate_hz(self) -> int:
        return self.audio.sample_rate_hz

    @property
    def duration_s(self) -> float:
        return self.audio.duration_s

    def core(self, sample_rate_hz: int | None = None) -> slice:
        """The samples at ``sample_rate_hz`` that are this window's own share (all of them for a whole track).

        Extractors whose window values are sums (energy, peaks) take them over
        the share, so that the merged value counts every sample once.
        """
        if self.window is None:
            return slice(None)
        sr = sample_rate_hz or self.native_sample_rate_hz
        w = self.window
        return slice(int(round((w.core_start_s - w.start_s) * sr)), int(round((w.core_end_s - w.start_s) * sr)))

    @property
    def is_empty(self) -> bool:
        return self.audio.samples.shape[0] == 0

    def cached(self, key: Hashable, compute: Callable[[], T]) -> T:
        """Return ``compute()``, computing it only the first time ``key`` is asked for.

        Extractors use this for inputs two of them share (e.g. a beat
        activation function used by tempo and downbeat tracking).
        """
        if key not in self._cache:
            self._cache[key] = compute()
            self.computed.append(key)
        return self._cache[key]

    # ------------------------------------------------------------------ signals
    def channels(self, sample_rate_hz: int | None = None) -> np.ndarray:
        """All channels, ``(frames, channels)`` float32, at ``sample_rate_hz`` (native if None)."""
        sr = sample_rate_hz or self.native_sample_rate_hz
        if sr == self.native_sample_rate_hz:
            return self.audio.samples
        return self.cached(("channels", sr), lambda: resample(self.audio.samples, self.native_sample_rate_hz, sr))

    def signal(self, sample_rate_hz: int | None = None) -> np.ndarray:
        """Mono (channel mean) float32 signal at ``sample_rate_hz`` (native if None)."""
        sr = sample_rate_hz or self.native_sample_rate_hz
        mono = self.cached(("signal", self.native_sample_rate_hz), lambda: to_mono(self.audio.samples))
        if sr == self.native_sample_rate_hz or mono.size == 0:
            return mono
        return self.cached(("signal", sr), lambda: resample(mono, self.native_sample_rate_hz, sr))

    # ------------------------------------------------------------------ levels
    def rms_dbfs(self, sample_rate_hz: int | None = None) -> float:
        """RMS level of the mono signal in dBFS (``-inf`` for digital silence or no audio).

        Extractors use it for their "silent: no value" outcome, computed once per track.
        """

        def compute() -> float:
            y = self.signal(sample_rate_hz)
            rms = float(np.sqrt(np.mean(np.square(y, dtype=np.float64)))) if y.size else 0.0
            return 20.0 * float(np.log10(rms)) if rms > 0 else float("-inf")

        return self.cached(("rms_dbfs", sample_rate_hz or self.native_sample_rate_hz), compute)

    def peak_dbfs(self) -> float:
        """Largest absolute sample over all channels at the native rate, in dBFS (``-inf`` if none)."""

        def compute() -> float:
            s = self.audio.samples
            peak = float(np.max(np.abs(s))) if s.size else 0.0
            return 20.0 * float(np.log10(peak)) if peak > 0 else float("-inf")

        return self.cached("peak_dbfs", compute)

    # ------------------------------------------------------------------ spectra
    def stft(self, *, sample_rate_hz: int, n_fft: int = 2048, hop_length: int = 512) -> np.ndarray:
        """Magnitude STFT ``(1 + n_fft // 2, frames)`` of the mono signal (librosa, centred, Hann)."""

        return self.cached(("stft", sample_rate_hz, n_fft, hop_length),
                           lambda: stft_magnitude(self.signal(sample_rate_hz), n_fft=n_fft, hop_length=hop_length))

    def mel(self, *, sample_rate_hz: int, n_fft: int = 2048, hop_length: int = 512,
            n_mels: int = 128, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
        """Mel power spectrogram ``(n_mels, frames)`` built from the cached STFT."""

        def compute() -> np.ndarray:
            import librosa

            mag = self.stft(sample_rate_hz=sample_rate_hz, n_fft=n_fft, hop_length=hop_length)
            # Block by block, so that the power spectrogram (a copy as large as the STFT) is never whole.
            blocks = [librosa.feature.melspectrogram(S=mag[:, a:a + STFT_BLOCK_FRAMES] ** 2, sr=sample_rate_hz,
                                                     n_mels=n_mels, fmin=fmin, fmax=fmax)
                      for a in range(0, max(mag.shape[1], 1), STFT_BLOCK_FRAMES)]
            return np.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0]

        return self.cached(("mel", sample_rate_hz, n_fft, hop_length, n_mels, fmin, fmax), compute)
