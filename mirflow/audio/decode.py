"""Decode a file once, at its native rate; downmix and resample on demand."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from collections.abc import Iterator
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
    blocks = _ffmpeg_blocks(path, info, timeout_s, seconds=cap / info.sample_rate_hz + 1.0)
    try:
        samples = _read_blocks(lambda _n: next(blocks, np.zeros((0, info.channels), np.float32)), cap,
                               info.channels)
        if samples is None:
            raise limits.over(cap + 1, info.sample_rate_hz, info.channels)
        for _ in blocks:  # the end of the stream: ffmpeg's exit status
            pass
    finally:
        blocks.close()
    return samples


def _ffmpeg_blocks(path: Path, info: ProbeInfo, timeout_s: float, *, seconds: float) -> Iterator[np.ndarray]:
    """``(frames, channels)`` float32 blocks of :data:`_BLOCK_FRAMES` (fewer at the end) from ffmpeg.

    The subprocess isolates crashes of ffmpeg's codecs from the worker; it is
    killed after ``timeout_s`` and when the consumer stops early (closing the
    generator). ``seconds`` bounds ffmpeg itself.
    """
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0", "-vn",
           "-t", f"{seconds:.3f}",
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
        while True:
            block = _frames_from(proc.stdout, _BLOCK_FRAMES, info.channels, frame_bytes)
            if block.shape[0]:
                yield block
            if block.shape[0] < _BLOCK_FRAMES:
                break
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


@dataclass(frozen=True)
class AudioWindow:
    """One window of a long track, decoded on its own (see :func:`iter_windows`).

    Attributes
    ----------
    audio : DecodedAudio
        The window's samples: its own share plus context on either side.
    start_s : float
        Track time of the window's first sample.
    core_start_s, core_end_s : float
        Track times of the window's own share. The shares of consecutive
        windows tile the track without gaps or overlap; the context around a
        share is there so that what an extractor finds near the share's
        edges is found with music on both sides.
    """

    audio: DecodedAudio
    start_s: float
    core_start_s: float
    core_end_s: float


def _libsndfile_blocks(path: Path) -> Iterator[tuple[np.ndarray, int]]:
    try:
        with sf.SoundFile(os.fsencode(path)) as fh:
            while True:
                block = fh.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
                if block.shape[0]:
                    yield block, fh.samplerate
                if block.shape[0] < _BLOCK_FRAMES:
                    return
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise DecodeError(f"libsndfile failed: {exc}") from exc


def iter_windows(path: str | os.PathLike[str], *, window_s: float, context_s: float,
                 info: ProbeInfo | None = None, timeout_s: float = 600.0,
                 limits: DecodeLimits | None = None) -> Iterator[AudioWindow]:
    """Decode ``path`` once, front to back, as windows of ``window_s`` plus ``context_s`` either side.

    The last window's share is between half and one and a half ``window_s``
    when the container declares the track's length (any length otherwise).

    Only one window (and the context the next one needs) is in memory at a
    time, whatever the track's length: this is how a worker analyzes an hour
    in the memory of a few minutes. The checks are :func:`decode`'s: the
    header against ``limits``, the running count against ``limits``,
    non-finite samples, truncation against the declared length (raised at the
    end, instead of the last window).

    Examples
    --------
    >>> import tempfile, numpy as np, soundfile as sf
    >>> path = tempfile.mktemp(suffix=".wav")
    >>> sf.write(path, np.zeros((10 * 8000, 1), np.float32), 8000)
    >>> [(w.start_s, w.core_start_s, w.core_end_s) for w in iter_windows(path, window_s=4.0, context_s=1.0)]
    [(0.0, 0.0, 4.0), (3.0, 4.0, 8.0), (7.0, 8.0, 10.0)]
    """
    path = Path(path)
    info = info or probe(path)
    limits = limits or DecodeLimits()
    limits.check(info)
    if info.decoder == "libsndfile":
        blocks: Iterator[tuple[np.ndarray, int]] = _libsndfile_blocks(path)
    else:
        cap_s = limits.max_frames(info.sample_rate_hz, info.channels) / info.sample_rate_hz + 1.0
        blocks = ((b, info.sample_rate_hz) for b in _ffmpeg_blocks(path, info, timeout_s, seconds=cap_s))
    sr = info.sample_rate_hz
    core, context = int(round(window_s * sr)), int(round(context_s * sr))
    if core <= 0 or context < 0:
        raise ValueError(f"window_s must be positive and context_s not negative, got {window_s}, {context_s}")
    declared = int(info.duration_s * sr) if info.duration_s > 0 else None
    pending: list[np.ndarray] = []  # decoded samples from track frame ``buffer_start`` on
    buffered = buffer_start = total = 0
    core_start = 0  # first frame of the next window's share

    def window(end: int) -> AudioWindow:
        nonlocal pending, buffered, buffer_start
        samples = np.concatenate(pending) if len(pending) > 1 else pending[0]
        first = max(core_start - context, 0)
        audio = samples[first - buffer_start:min(end + context, total) - buffer_start]
        keep_from = max(end - context, 0)  # the next window's context before its share
        rest = samples[keep_from - buffer_start:]
        pending, buffered, buffer_start = [rest], rest.shape[0], keep_from
        return AudioWindow(DecodedAudio(np.ascontiguousarray(audio), sr), first / sr, core_start / sr,
                           min(end, total) / sr)

    try:
        for block, rate in blocks:
            if rate != sr:
                raise DecodeError(f"decoder gave {rate} Hz where the probe said {sr} Hz")
            if not np.all(np.isfinite(block)):
                raise DecodeError("decoder produced non-finite samples")
            pending.append(block)
            buffered += block.shape[0]
            total += block.shape[0]
            if total > limits.max_frames(sr, block.shape[1]):
                raise limits.over(total, sr, block.shape[1])
            # A window is complete once its share and the context after it are decoded. Where the
            # container's length says less than half a window would be left after it, the last
            # window takes the rest instead (up to 1.5 shares), so no window is a sliver; a length
            # that proves wrong by more than half a share (codec padding is milliseconds) stops counting.
            while total >= core_start + core + context and (
                    declared is None or total > declared + core // 2 or core_start + core + core // 2 <= declared):
                yield window(core_start + core)
                core_start += core
    finally:
        if hasattr(blocks, "close"):
            blocks.close()
    if total == 0:
        raise DecodeError("decoded no audio samples")
    if info.duration_s > 0 and total / sr < TRUNCATION_TOLERANCE * info.duration_s:
        raise DecodeError(f"truncated file: decoded {total / sr:.2f} s of {info.duration_s:.2f} s "
                          "the container declares")
    if total > core_start:
        yield window(total)


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
