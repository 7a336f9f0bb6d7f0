"""Probe a file's container facts without decoding it.

libsndfile (through soundfile) answers for wav, flac, ogg/vorbis, mp3 and
aiff; ``ffprobe`` answers for everything else (m4a/aac, opus, wma …).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from mirflow.errors import ProbeError

log = logging.getLogger(__name__)

#: Extensions mirflow treats as audio when it walks a directory.
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".mp3", ".m4a", ".aac", ".mp4", ".opus",
     ".wma", ".aif", ".aiff", ".aifc", ".au", ".snd", ".webm", ".mka", ".caf", ".w64", ".alac"}
)


@dataclass(frozen=True)
class ProbeInfo:
    """Container facts of one file."""

    container: str
    codec: str
    sample_rate_hz: int
    channels: int
    duration_s: float
    bit_rate_bps: int | None
    decoder: str  # "libsndfile" or "ffmpeg"
    file_size_bytes: int


def check_readable(path: Path) -> int:
    """Fail with a clear :class:`ProbeError` unless ``path`` is a non-empty readable file.

    Returns the file size in bytes.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ProbeError(f"file vanished or does not exist: {path}") from None
    except PermissionError:
        raise ProbeError("permission denied: the file or its folder is not readable") from None
    except OSError as exc:
        raise ProbeError(f"cannot stat file: {exc.strerror or exc}") from None
    if os.path.isdir(path):
        raise ProbeError("path is a directory, not an audio file")
    if st.st_size == 0:
        raise ProbeError("empty file (0 bytes)")
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except PermissionError:
        raise ProbeError("permission denied: file is not readable") from None
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise ProbeError(f"file vanished while reading: {path}") from None
        raise ProbeError(f"cannot read file: {exc.strerror or exc}") from None
    return int(st.st_size)


def ffmpeg_available() -> bool:
    """Whether both ``ffmpeg`` and ``ffprobe`` are on PATH."""
    return shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None


def _probe_ffprobe(path: Path, size: int) -> ProbeInfo:
    if not ffmpeg_available():
        raise ProbeError("not a format libsndfile reads, and ffmpeg/ffprobe is not installed")
    cmd = ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
           "stream=codec_name,sample_rate,channels,duration:format=format_name,duration,bit_rate",
           "-of", "json", str(path)]
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        raise ProbeError("ffprobe timed out after 60 s") from None
    if out.returncode != 0:
        msg = out.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = msg[-1] if msg else f"exit code {out.returncode}"
        # ffprobe prefixes its message with the path; keep only the reason.
        detail = detail.replace(str(path) + ": ", "")
        raise ProbeError(f"not audio, or a format no decoder here reads (ffprobe: {detail})")
    info = json.loads(out.stdout or b"{}")
    streams = info.get("streams") or []
    if not streams:
        raise ProbeError("no audio stream in the file")
    st, fmt = streams[0], info.get("format", {})
    try:
        duration = float(st.get("duration") or fmt.get("duration") or 0.0)
        sr = int(st.get("sample_rate") or 0)
        ch = int(st.get("channels") or 0)
    except (TypeError, ValueError):
        raise ProbeError("ffprobe reported malformed stream facts") from None
    if sr <= 0 or ch <= 0:
        raise ProbeError("audio stream without sample rate or channels (unsupported or encrypted)")
    br = fmt.get("bit_rate")
    return ProbeInfo(
        container=str(fmt.get("format_name", "unknown")),
        codec=str(st.get("codec_name", "unknown")),
        sample_rate_hz=sr,
        channels=ch,
        duration_s=duration,
        bit_rate_bps=int(br) if br and str(br).isdigit() else (int(size * 8 / duration) if duration > 0 else None),
        decoder="ffmpeg",
        file_size_bytes=size,
    )


def probe(path: str | os.PathLike[str]) -> ProbeInfo:
    """Container facts of ``path``.

    Raises
    ------
    ProbeError
        For a missing, empty, unreadable, non-audio or unsupported file.

    Examples
    --------
    >>> import numpy as np, soundfile as sf, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "tone.wav"
    >>> sf.write(p, np.zeros(22050, dtype="float32"), 22050)
    >>> info = probe(p)
    >>> (info.container, info.codec, info.sample_rate_hz, info.channels, info.duration_s)
    ('WAV', 'PCM_16', 22050, 1, 1.0)
    """
    path = Path(path)
    size = check_readable(path)
    try:
        info = sf.info(os.fsencode(path))  # bytes: names that are not UTF-8 too
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        log.debug("libsndfile cannot open %s (%s); trying ffprobe", path, exc)
        return _probe_ffprobe(path, size)
    if info.samplerate <= 0 or info.channels <= 0:
        return _probe_ffprobe(path, size)
    duration = info.frames / info.samplerate if info.frames > 0 else 0.0
    return ProbeInfo(
        container=str(info.format),
        codec=str(info.subtype),
        sample_rate_hz=int(info.samplerate),
        channels=int(info.channels),
        duration_s=float(duration),
        bit_rate_bps=int(size * 8 / duration) if duration > 0 else None,
        decoder="libsndfile",
        file_size_bytes=size,
    )
