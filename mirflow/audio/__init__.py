"""Audio I/O: probe, decode, downmix, resample, hash."""

from mirflow.audio.decode import DecodedAudio, decode, resample, to_mono
from mirflow.audio.hashing import content_hash
from mirflow.audio.probe import AUDIO_EXTENSIONS, ProbeInfo, ffmpeg_available, probe

__all__ = [
    "AUDIO_EXTENSIONS",
    "DecodedAudio",
    "ProbeInfo",
    "content_hash",
    "decode",
    "ffmpeg_available",
    "probe",
    "resample",
    "to_mono",
]
