"""``mirflow doctor``: which decoders and backends work on this machine."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    required: bool = False


def _module(name: str, required: bool = False) -> Check:
    try:
        mod = importlib.import_module(name)
    except Exception as exc:  # a broken native extension raises anything
        return Check(name, False, f"not importable: {type(exc).__name__}: {exc}", required)
    return Check(name, True, f"version {getattr(mod, '__version__', '?')}", required)


def _roundtrip(fmt: str, subtype: str | None) -> Check:
    import soundfile as sf

    from mirflow.audio import decode, probe

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"t.{fmt.lower()}"
        y = (0.2 * np.sin(2 * np.pi * 440 * np.arange(22050) / 22050)).astype(np.float32)
        try:
            sf.write(path, y, 22050, format=fmt, subtype=subtype)
            info = probe(path)
            audio = decode(path, info=info)
        except Exception as exc:
            return Check(f"libsndfile {fmt.lower()}", False, f"{type(exc).__name__}: {exc}")
        return Check(f"libsndfile {fmt.lower()}", True, f"{info.codec}, {audio.duration_s:.2f} s decoded")


def _ffmpeg(fmt: str, codec: str) -> Check:
    from mirflow.audio import decode, ffmpeg_available, probe

    if not ffmpeg_available():
        return Check(f"ffmpeg {fmt}", False, "ffmpeg/ffprobe not on PATH (apt-get install ffmpeg)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"t.{fmt}"
        cmd = ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", codec, str(path)]
        if subprocess.run(cmd, capture_output=True, check=False).returncode != 0:
            return Check(f"ffmpeg {fmt}", False, f"ffmpeg cannot encode {codec}")
        try:
            info = probe(path)
            audio = decode(path, info=info)
        except Exception as exc:
            return Check(f"ffmpeg {fmt}", False, f"{type(exc).__name__}: {exc}")
        return Check(f"ffmpeg {fmt}", True, f"{info.codec} via {info.decoder}, {audio.duration_s:.2f} s decoded")


def run_checks() -> list[Check]:
    """Run every check (a few seconds)."""
    import soundfile as sf

    checks = [_module(m, required=True) for m in ("numpy", "soundfile", "soxr", "librosa", "pyarrow", "duckdb",
                                                  "distributed")]
    checks.append(Check("libsndfile", True, sf.__libsndfile_version__, True))
    for fmt, subtype in (("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III")):
        checks.append(_roundtrip(fmt, subtype))
    checks.append(Check("ffmpeg", shutil.which("ffmpeg") is not None, shutil.which("ffmpeg") or "not found"))
    for fmt, codec in (("m4a", "aac"), ("opus", "libopus")):
        checks.append(_ffmpeg(fmt, codec))
    for name in ("essentia", "madmom", "faiss", "sklearn", "onnxruntime", "pyloudnorm"):
        checks.append(_module(name))
    fs = shutil.which("fluidsynth")
    checks.append(Check("fluidsynth", fs is not None, fs or "not found (only needed to render MIDI test audio)"))
    from mirflow.synth import find_soundfont

    try:
        soundfont = find_soundfont()
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        soundfont = None
        why = str(exc)
    checks.append(Check("GM soundfont", soundfont is not None,
                        str(soundfont) if soundfont else f"{why} (apt-get install fluid-soundfont-gm)"))
    from mirflow.models import store

    weights = store.installed_musicnn_weights(verify=True)
    checks.append(Check("musicnn weights", weights is not None,
                        str(weights) if weights else "not installed (mirflow models install musicnn)"))
    from mirflow.pipeline import available_pipelines, load_pipeline
    from mirflow.pipeline.config import requirement_problems

    for name in available_pipelines():
        problems = requirement_problems(load_pipeline(name), fetch=False)
        detail = "can run here" if not problems else "; ".join(
            f"{req.name} missing ({req.install})" for req in problems)
        checks.append(Check(f"pipeline {name}", not problems, detail))
    from mirflow.extractors import registry

    for name in registry.names():
        try:
            registry.get(name)
            checks.append(Check(f"extractor {name}", True, "importable"))
        except Exception as exc:
            checks.append(Check(f"extractor {name}", False, f"{type(exc).__name__}: {exc}"))
    return checks
