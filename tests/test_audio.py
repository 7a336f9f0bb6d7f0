"""Audio I/O: probe, decode, resample, hash on real files of every format."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from conftest import make_bad_inputs, tone_mix, write_audio

from mirflow.audio import content_hash, decode, probe, resample, to_mono
from mirflow.errors import DecodeError, ProbeError


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus"])
def test_decode_every_format(tmp_path, suffix):
    if suffix in (".m4a", ".opus") and not shutil.which("ffmpeg"):
        pytest.skip("ffmpeg not installed")
    y = tone_mix(3.0)
    path = write_audio(tmp_path / f"x{suffix}", y)
    info = probe(path)
    audio = decode(path, info=info)
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 2
    assert abs(audio.duration_s - 3.0) < 0.1, audio.duration_s
    assert info.channels == audio.channels == 1
    assert info.decoder == ("ffmpeg" if suffix in (".m4a",) else info.decoder)
    # Lossy codecs change samples but not the signal's energy much.
    assert 0.5 < np.std(audio.samples) / np.std(y) < 1.5


def test_probe_facts(tmp_path):
    path = tmp_path / "st.flac"
    sf.write(path, np.zeros((48000, 2), dtype=np.float32), 48000, subtype="PCM_24")
    info = probe(path)
    assert (info.container, info.codec, info.sample_rate_hz, info.channels) == ("FLAC", "PCM_24", 48000, 2)
    assert info.duration_s == pytest.approx(1.0)
    assert info.file_size_bytes == path.stat().st_size


def test_downmix_and_resample():
    sr = 44100
    left = np.sin(2 * np.pi * 440 * np.arange(sr) / sr).astype(np.float32)
    stereo = np.stack([left, -left], axis=1)
    assert np.allclose(to_mono(stereo), 0.0)
    down = resample(left, sr, 16000)
    assert down.shape == (16000,) and down.dtype == np.float32
    # A 440 Hz tone stays a 440 Hz tone.
    spec = np.abs(np.fft.rfft(down))
    assert abs(np.argmax(spec) * 16000 / down.size - 440) < 2


def test_content_hash_is_of_bytes(tmp_path):
    a = write_audio(tmp_path / "a.wav", tone_mix(1.0))
    b = tmp_path / "copy of a.wav"
    shutil.copy(a, b)
    assert content_hash(a) == content_hash(b)
    assert len(content_hash(a)) == 32
    with open(b, "ab") as fh:
        fh.write(b"\0")
    assert content_hash(a) != content_hash(b)


def test_bad_inputs_raise_clear_errors(tmp_path):
    bad = make_bad_inputs(tmp_path)
    expectations = {
        "empty": (ProbeError, "empty file"),
        "truncated_mp3": (DecodeError, "truncated"),
        "truncated_flac": (DecodeError, "flac|truncated"),
        "text_as_mp3": (ProbeError, "not audio"),
        "random_wma": (ProbeError, "not audio"),
        "no_audio_stream": (ProbeError, "no audio stream"),
        "directory": (ProbeError, "directory"),
    }
    for kind, (exc_type, words) in expectations.items():
        if kind not in bad:
            continue
        with pytest.raises(exc_type, match=words):
            decode(bad[kind], info=probe(bad[kind]))
    with pytest.raises(ProbeError, match="vanished|does not exist"):
        probe(tmp_path / "gone.wav")


def test_unreadable_file_is_a_probe_error(tmp_path):
    path = write_audio(tmp_path / "locked.wav", tone_mix(1.0))
    os.chmod(path, 0)
    os.chmod(tmp_path, 0o755)
    code = (
        "import os, sys\n"
        "from mirflow.audio import probe\n"
        "from mirflow.errors import ProbeError\n"
        # root reads anything: import first, then drop to nobody
        "if os.geteuid() == 0: os.setgid(65534); os.setuid(65534)\n"
        f"try:\n    probe({str(path)!r})\nexcept ProbeError as e:\n    print('PROBE-ERROR', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "PROBE-ERROR permission denied" in out.stdout, out.stdout + out.stderr


def test_non_ascii_path(tmp_path):
    path = write_audio(tmp_path / "Sigur Rós – Hoppípolla ♫.ogg", tone_mix(2.0))
    assert decode(path).duration_s == pytest.approx(2.0, abs=0.05)
