"""Long inputs: the block-wise and compact replacements equal the originals, and memory stays bounded.

* The downbeat DBN's compact Viterbi (one byte per tempo-change state and
  frame instead of madmom's four per state and frame) gives madmom's beats.
* The streamed BS.1770 loudness equals pyloudnorm's meter.
* The block-wise STFT and mel spectrogram equal librosa's.

Long tracks analyzed window by window (memory, merges, beats across a tempo
change): ``tests/test_windows.py``.
"""

from __future__ import annotations

import numpy as np
import pytest


def _activations(n_frames: int, period: int, seed: int) -> np.ndarray:
    """Beat/downbeat activations at 100 fps: peaks every ``period`` frames, a downbeat every 4th, noise."""
    rng = np.random.default_rng(seed)
    act = np.clip(rng.normal(0.02, 0.015, size=(n_frames, 2)), 0.0, 0.2)
    for k, frame in enumerate(range(5, n_frames, period)):
        col = 1 if k % 4 == 0 else 0
        act[frame, col] = rng.uniform(0.5, 0.95)
        if frame + 1 < n_frames:
            act[frame + 1, col] = 0.3
    return act


@pytest.mark.parametrize(("n_frames", "period", "seed"), [(1500, 50, 0), (2200, 37, 1), (1800, 71, 2)])
def test_compact_viterbi_gives_madmoms_downbeats(n_frames, period, seed):
    from mirflow.extractors._rhythm_backends import _madmom_dbn, dbn_downbeats

    act = _activations(n_frames, period, seed)
    expected = _madmom_dbn((3, 4), 55.0, 215.0)(act)
    got = dbn_downbeats(act, beats_per_bar=(3, 4), min_bpm=55.0, max_bpm=215.0)
    assert expected.shape[0] > 10
    np.testing.assert_array_equal(got, expected)


def test_compact_viterbi_handles_no_activation():
    from mirflow.extractors._rhythm_backends import dbn_downbeats

    out = dbn_downbeats(np.zeros((300, 2)), beats_per_bar=(3, 4), min_bpm=55.0, max_bpm=215.0)
    assert out.shape == (0, 2)


@pytest.mark.parametrize("channels", [1, 2])
def test_streamed_loudness_equals_pyloudnorm(channels):
    import pyloudnorm as pyln

    from mirflow.extractors.loudness import _FILTER_BLOCK, bs1770_loudness

    sr = 44100
    rng = np.random.default_rng(channels)
    n = 27 * _FILTER_BLOCK + 12345  # 40 s: many filter blocks, the last one partial
    t = np.arange(n) / sr
    envelope = 0.1 + 0.4 * (np.sin(2 * np.pi * 0.05 * t) > 0)  # 10 s loud, 10 s 14 dB quieter
    y = (envelope * np.sin(2 * np.pi * 440.0 * t))[:, None] * np.ones((1, channels))
    y += 0.01 * rng.standard_normal((n, channels))
    y = y.astype(np.float32)
    padded = y if channels == 2 else np.concatenate([y, np.zeros_like(y)], axis=1)
    expected = pyln.Meter(sr).integrated_loudness(padded.astype(np.float64))
    integrated, lra = bs1770_loudness(y, sr)
    assert integrated == pytest.approx(expected, abs=1e-9)
    assert lra is not None and 8.0 < lra < 16.0  # the 14-dB step, less what the 3-s windows smooth


@pytest.mark.parametrize(("seconds", "n_fft", "hop"), [(50.3, 2048, 512), (230.0, 8192, 2048), (0.05, 2048, 512)])
def test_blockwise_stft_and_mel_equal_librosa(seconds, n_fft, hop):
    import librosa

    from mirflow.frontend import Frontend, stft_magnitude

    sr = 22050
    y = (0.1 * np.random.default_rng(7).standard_normal(int(seconds * sr))).astype(np.float32)
    expected = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop))
    np.testing.assert_array_equal(stft_magnitude(y, n_fft=n_fft, hop_length=hop), expected)
    mel = Frontend.from_array(y, sr).mel(sample_rate_hz=sr, n_fft=n_fft, hop_length=hop)
    # The mel product is a float32 GEMM, which OpenBLAS (DYNAMIC_ARCH) blocks by the matrix's width:
    # block by block and whole it was bit-identical on Intel Xeon, and differed in the last bits on
    # AMD EPYC (at most 1.1e-6 relative, 2026-12-02). Those bits are the kernel's, not the blocking's.
    np.testing.assert_allclose(mel, librosa.feature.melspectrogram(S=expected**2, sr=sr), rtol=4e-6, atol=0)
