"""Decode a file once, at its native rate; downmix and resample on demand."""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from mirflow.audio.probe import ProbeInfo, probe
from mirflow.errors import DecodeError

log = logging.getLogger(__name__)

#: A decode that yields less than this share of the duration the container
#: declares is a truncated file, not a short one.
TRUNCATION_TOLERANCE = 0.97


@dataclass(frozen=True)
class DecodedAudio:
    """Decoded samples, ``(frames, channels)`` float32 in [-1, 1], at the native rate."""

    samples: np.ndarray
    sample_rate_hz: int

    @property
    def duration_s(self) -> float:
        return self.samples.shape[0] / float(self.sample_rate_hz)

    @property
    def channels(self) -> int:
        return int(self.samples.shape[1])


def _decode_ffmpeg(path: Path, info: ProbeInfo, timeout_s: float) -> np.ndarray:
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0", "-vn",
           "-f", "f32le", "-acodec", "pcm_f32le", "-ac", str(info.channels),
           "-ar", str(info.sample_rate_hz), "pipe:1"]
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise DecodeError(f"ffmpeg decode timed out after {timeout_s:.0f} s") from None
    if out.returncode != 0:
        lines = out.stderr.decode("utf-8", "replace").strip().splitlines()
        raise DecodeError(f"ffmpeg failed: {lines[-1] if lines else out.returncode}")
    data = np.frombuffer(out.stdout, dtype="<f4")
    if data.size % info.channels:
        data = data[: data.size - data.size % info.channels]
    return data.reshape(-1, info.channels).copy()


def decode(path: str | os.PathLike[str], *, info: ProbeInfo | None = None,
           timeout_s: float = 600.0) -> DecodedAudio:
    """Decode ``path`` to float32 samples at the file's own sample rate.

    libsndfile decodes wav/flac/ogg/mp3/aiff in-process; anything else goes
    through an ``ffmpeg`` subprocess (which also isolates crashes of its
    codecs from the worker).

    Raises
    ------
    DecodeError
        When decoding fails or the file is truncated (fewer samples than the
        container declares).
    """
    path = Path(path)
    info = info or probe(path)
    if info.decoder == "libsndfile":
        try:
            samples, sr = sf.read(str(path), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise DecodeError(f"libsndfile failed: {exc}") from exc
    else:
        samples, sr = _decode_ffmpeg(path, info, timeout_s), info.sample_rate_hz
    if samples.shape[0] == 0:
        raise DecodeError("decoded no audio samples")
    decoded_s = samples.shape[0] / sr
    if info.duration_s > 0 and decoded_s < TRUNCATION_TOLERANCE * info.duration_s:
        raise DecodeError(
            f"truncated file: decoded {decoded_s:.2f} s of {info.duration_s:.2f} s the container declares"
        )
    if not np.all(np.isfinite(samples)):
        raise DecodeError("decoder produced non-finite samples")
    return DecodedAudio(samples=np.ascontiguousarray(samples, dtype=np.float32), sample_rate_hz=int(sr))


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Downmix ``(frames, channels)`` to mono by the channel mean."""
    if samples.ndim == 1:
        return samples.astype(np.float32, copy=False)
    return samples.mean(axis=1, dtype=np.float32)


def resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample with soxr (high quality); works on mono or ``(frames, channels)``."""
    if orig_sr == target_sr:
        return y
    return soxr.resample(y, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)
