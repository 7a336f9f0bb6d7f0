"""Shared fixtures: generated audio (nothing is downloaded) and bad inputs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

TESTS_DIR = Path(__file__).resolve().parent


def plugin_env() -> dict[str, str]:
    """The environment of a subprocess that can load the misbehaving test extractors (mirflow_test_plugins)."""
    return {**os.environ, "MIRFLOW_PLUGINS": "mirflow_test_plugins",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))}


def kill_once_landed(proc: subprocess.Popen, landed, at_least: int, *, timeout_s: float = 240.0) -> None:
    """SIGKILL ``proc``'s process group once ``landed()`` (committed tracks) reaches ``at_least``: mid-run."""
    import signal
    import time

    deadline = time.time() + timeout_s
    while landed() < at_least:
        if proc.poll() is not None:
            pytest.fail(f"run ended before it could be killed: {proc.stdout.read().decode()[-2000:]}")
        if time.time() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("no track landed in time")
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and everything it started
    proc.wait(timeout=30)
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))


def tone_mix(seconds: float, sr: int = 22050, freqs=(220.0, 277.18, 329.63), seed: int = 0) -> np.ndarray:
    """A chord of decaying tones re-struck every half second, plus a little noise (deterministic)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    env = np.exp(-3.0 * (t % 0.5))
    y = sum(np.sin(2 * np.pi * f * t) for f in freqs) * env / len(freqs)
    y = 0.5 * y + 0.01 * rng.standard_normal(t.size)
    return y.astype(np.float32)


def write_audio(path: Path, y: np.ndarray, sr: int = 22050) -> Path:
    """Write ``y`` in the format the suffix names (m4a through ffmpeg)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix in (".m4a", ".opus"):
        wav = path.with_suffix(".tmp.wav")
        sf.write(wav, y, sr)
        codec = "aac" if suffix == ".m4a" else "libopus"
        subprocess.run(["ffmpeg", "-y", "-v", "error", "-i", str(wav), "-c:a", codec, str(path)], check=True)
        wav.unlink()
    elif suffix == ".mp3":
        sf.write(path, y, sr, format="MP3")
    else:
        sf.write(path, y, sr)
    return path


@pytest.fixture(scope="session")
def good_audio(tmp_path_factory) -> dict[str, Path]:
    """A handful of real audio files in several formats (and a non-ASCII name)."""
    root = tmp_path_factory.mktemp("good")
    files = {}
    names = ["a.wav", "b.flac", "c.ogg", "d.mp3", "Björk – Jóga ♫.flac"]
    if shutil.which("ffmpeg"):
        names.append("e.m4a")
    for i, name in enumerate(names):
        y = tone_mix(6.0, freqs=(220.0 * (1 + i / 8), 330.0, 440.0 * (1 + i / 16)), seed=i)
        files[name] = write_audio(root / "music" / name, y)
    files["silent.wav"] = write_audio(root / "music" / "silent.wav", np.zeros(22050 * 3, dtype=np.float32))
    return files


def make_bad_inputs(root: Path) -> dict[str, Path]:
    """Every kind of bad input the pipeline must survive, keyed by kind."""
    root.mkdir(parents=True, exist_ok=True)
    bad: dict[str, Path] = {}
    bad["empty"] = root / "empty.wav"
    bad["empty"].write_bytes(b"")
    y = tone_mix(10.0, seed=7)
    for kind, name in (("truncated_mp3", "trunc.mp3"), ("truncated_flac", "trunc.flac")):
        full = write_audio(root / f"full_{name}", y)
        data = full.read_bytes()
        full.unlink()
        (root / name).write_bytes(data[: len(data) * 4 // 10])
        bad[kind] = root / name
    bad["text_as_mp3"] = root / "notes.mp3"
    bad["text_as_mp3"].write_text("these are my notes, not an mp3\n" * 20)
    bad["random_wma"] = root / "garbage.wma"
    bad["random_wma"].write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    if shutil.which("ffmpeg"):
        # A valid MP4 container with no audio stream, named like music.
        bad["no_audio_stream"] = root / "video_only.m4a"
        subprocess.run(["ffmpeg", "-y", "-v", "error", "-f", "lavfi", "-i", "testsrc=duration=1:size=64x64:rate=5",
                        "-f", "mp4", str(bad["no_audio_stream"])], check=True)
    bad["directory"] = root / "album.flac"
    bad["directory"].mkdir()
    bad["unreadable"] = write_audio(root / "locked.wav", tone_mix(2.0, seed=3))
    os.chmod(bad["unreadable"], 0)
    return bad


@pytest.fixture(scope="session")
def downstream_catalog(tmp_path_factory) -> tuple[Path, Path]:
    """``(catalog, labels_csv)``: 24 generated tracks analyzed by the default pipeline (see downstream_catalog.py).

    Shared by the downstream layer's tests in one session; a test that writes
    into the catalog must copy it first (``shutil.copytree``).
    """
    import downstream_catalog

    return downstream_catalog.get(tmp_path_factory.mktemp("downstream"))
