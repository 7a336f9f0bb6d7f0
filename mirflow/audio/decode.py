"""Decode a file once, at its native rate; downmix and resample on demand."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from mirflow.audio.probe import ProbeInfo, probe
from mirflow.errors import DecodeError, ProbeError

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


@dataclass(frozen=True)
class DecodeLimits:
    """What one track may cost before any sample is decoded, enforced again while decoding.

    The header of a file says how many samples it holds, and a few kilobytes
    can declare gigabytes (an hour of 8-channel 192-kHz silence compresses to
    1.4 MB of FLAC and decodes to 22 GiB). :meth:`check` rejects such files
    from the probe alone; :func:`decode` counts what it decodes and stops at
    the same limits, for containers that declare no length (streamed
    Matroska/WebM, some Ogg) or declare a wrong one.

    Parameters
    ----------
    max_duration_s : float
        Longest audio accepted.
    max_decoded_bytes : int
        Largest decoded size accepted: float32 samples at the native rate,
        all channels.
    min_sample_rate_hz, max_sample_rate_hz : int
        Native rates outside this range are not audio mirflow analyzes (a WAV
        that claims 1 Hz would be upsampled 44,100-fold).
    max_channels : int
        Most channels accepted.
    """

    max_duration_s: float = 3600.0
    max_decoded_bytes: int = 3600 * 48000 * 2 * 4
    min_sample_rate_hz: int = 4000
    max_sample_rate_hz: int = 768000
    max_channels: int = 64

    @classmethod
    def for_duration(cls, max_duration_s: float) -> DecodeLimits:
        """Limits whose size cap is ``max_duration_s`` of 48-kHz stereo (1.3 GiB for an hour)."""
        return cls(max_duration_s=max_duration_s, max_decoded_bytes=int(max_duration_s * 48000 * 2 * 4))

    def max_frames(self, sample_rate_hz: int, channels: int) -> int:
        """Most frames a file of this rate and channel count may decode to."""
        by_size = self.max_decoded_bytes // (4 * max(channels, 1))
        return int(min(by_size, self.max_duration_s * sample_rate_hz))

    def check(self, info: ProbeInfo) -> None:
        """Reject from the header alone, before anything is allocated.

        Raises
        ------
        ProbeError
            ``too long`` / ``too large`` / unsupported rate or channels.
        """
        if not self.min_sample_rate_hz <= info.sample_rate_hz <= self.max_sample_rate_hz:
            raise ProbeError(f"unsupported sample rate: {info.sample_rate_hz} Hz (mirflow analyzes "
                             f"{self.min_sample_rate_hz}-{self.max_sample_rate_hz} Hz)")
        if info.channels > self.max_channels:
            raise ProbeError(f"too many channels: {info.channels} (at most {self.max_channels})")
        if info.duration_s > self.max_duration_s:
            raise ProbeError(f"too long: {info.duration_s:.0f} s exceeds the pipeline's max_duration_s "
                             f"of {self.max_duration_s:.0f} s")
        decoded = info.duration_s * info.sample_rate_hz * info.channels * 4
        if decoded > self.max_decoded_bytes:
            raise ProbeError(
                f"too large: {info.duration_s:.0f} s of {info.channels} channels at {info.sample_rate_hz} Hz "
                f"decodes to {_size(decoded)}, over the limit of {_size(self.max_decoded_bytes)} "
                "(decode.max_decoded_mib)")

    def over(self, frames: int, sample_rate_hz: int, channels: int) -> DecodeError:
        """The error for a decode that passed the limits while running."""
        seconds = frames / sample_rate_hz
        if seconds > self.max_duration_s:
            return DecodeError(f"too long: decoding passed the pipeline's max_duration_s of "
                               f"{self.max_duration_s:.0f} s (the container declares no or a wrong length)")
        return DecodeError(f"too large: decoding passed {_size(self.max_decoded_bytes)} of samples "
                           f"({channels} channels at {sample_rate_hz} Hz); the container declares no or a wrong length")


def _size(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.0f} MiB"


#: Frames read per block when the length is not known up front.
_BLOCK_FRAMES = 1 << 18


def _read_blocks(read, max_frames: int, channels: int) -> np.ndarray | None:
    """Read blocks of ``(frames, channels)`` float32 with ``read(n)`` until it returns fewer; ``None`` past ``max_frames``."""
    blocks, total = [], 0
    while True:
        block = read(_BLOCK_FRAMES)
        if block.shape[0]:
            blocks.append(block)
            total += block.shape[0]
        if total > max_frames:
            return None
        if block.shape[0] < _BLOCK_FRAMES:
            break
    return np.concatenate(blocks) if blocks else np.zeros((0, channels), dtype=np.float32)


def _decode_libsndfile(path: Path, info: ProbeInfo, limits: DecodeLimits) -> tuple[np.ndarray, int]:
    try:
        # Bytes, not str: soundfile encodes a str strictly and fails on file
        # names that are not UTF-8 (PEP 383 surrogates).
        with sf.SoundFile(os.fsencode(path)) as fh:
            sr, ch = fh.samplerate, fh.channels
            cap = limits.max_frames(sr, ch)
            if 0 < fh.frames <= cap and fh.seekable():
                # The header's length is within the limits: one allocation of
                # at most the cap, and reading stops there even if it lies.
                samples = fh.read(frames=min(fh.frames, cap + 1), dtype="float32", always_2d=True)
                if samples.shape[0] > cap:
                    raise limits.over(samples.shape[0], sr, ch)
                return samples, sr
            samples = _read_blocks(lambda n: fh.read(n, dtype="float32", always_2d=True), cap, ch)
            if samples is None:
                raise limits.over(cap + 1, sr, ch)
            return samples, sr
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise DecodeError(f"libsndfile failed: {exc}") from exc


def _decode_ffmpeg(path: Path, info: ProbeInfo, timeout_s: float, limits: DecodeLimits) -> np.ndarray:
    """Decode through an ffmpeg subprocess, streaming its output and stopping at the limits."""
    cap = limits.max_frames(info.sample_rate_hz, info.channels)
    # -t bounds ffmpeg itself too; one frame more than the cap tells "over" from "exactly at".
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0", "-vn",
           "-t", f"{cap / info.sample_rate_hz + 1.0:.3f}",
           "-f", "f32le", "-acodec", "pcm_f32le", "-ac", str(info.channels),
           "-ar", str(info.sample_rate_hz), "pipe:1"]
    frame_bytes = 4 * info.channels
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    timed_out = threading.Event()

    def kill_on_timeout() -> None:
        timed_out.set()
        proc.kill()

    killer = threading.Timer(timeout_s, kill_on_timeout)
    killer.daemon = True
    killer.start()
    try:
        assert proc.stdout is not None
        samples = _read_blocks(lambda n: _frames_from(proc.stdout, n, info.channels, frame_bytes), cap,
                               info.channels)
        if samples is None:
            proc.kill()
            proc.wait()
            raise limits.over(cap + 1, info.sample_rate_hz, info.channels)
        stderr = proc.stderr.read() if proc.stderr is not None else b""
        returncode = proc.wait()
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    if returncode != 0:
        if timed_out.is_set():
            raise DecodeError(f"ffmpeg decode timed out after {timeout_s:.0f} s")
        lines = stderr.decode("utf-8", "replace").strip().splitlines()
        raise DecodeError(f"ffmpeg failed: {lines[-1] if lines else returncode}")
    return samples


def _frames_from(stream, n: int, channels: int, frame_bytes: int) -> np.ndarray:
    """Up to ``n`` frames of f32le from ``stream`` (fewer only at the end)."""
    data = stream.read(n * frame_bytes)
    usable = len(data) - len(data) % frame_bytes
    return np.frombuffer(data[:usable], dtype="<f4").reshape(-1, channels).copy()


def decode(path: str | os.PathLike[str], *, info: ProbeInfo | None = None,
           timeout_s: float = 600.0, limits: DecodeLimits | None = None) -> DecodedAudio:
    """Decode ``path`` to float32 samples at the file's own sample rate.

    libsndfile decodes wav/flac/ogg/mp3/aiff in-process; anything else goes
    through an ``ffmpeg`` subprocess (which also isolates crashes of its
    codecs from the worker). Both are read block-wise when the container
    declares no length, and stop at ``limits``.

    Raises
    ------
    ProbeError
        When the header alone shows the file is over ``limits``.
    DecodeError
        When decoding fails, passes ``limits`` (``too long`` / ``too large``)
        or the file is truncated (fewer samples than the container declares).
    """
    path = Path(path)
    info = info or probe(path)
    limits = limits or DecodeLimits()
    limits.check(info)
    if info.decoder == "libsndfile":
        samples, sr = _decode_libsndfile(path, info, limits)
    else:
        samples, sr = _decode_ffmpeg(path, info, timeout_s, limits), info.sample_rate_hz
    if samples.shape[0] == 0:
        raise DecodeError("decoded no audio samples")
    decoded_s = samples.shape[0] / sr
    # Without a declared length (streams) truncation cannot be told from the
    # end of the file; the decoder's own errors are all there is.
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
