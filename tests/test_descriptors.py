"""Descriptor extractor: schema conformance, silence, determinism, sanity on known signals."""

from __future__ import annotations

import datetime
import sys

import numpy as np
import pytest
from test_embeddings import render

from mirflow.catalog.schema import conform, table_schema
from mirflow.errors import ExtractionError
from mirflow.extractors.descriptors import ESSENTIA_ONLY, TRACK_COLUMNS, DescriptorExtractor
from mirflow.frontend import Frontend

SR = 22050
BACKENDS = ("essentia", "librosa")
SCORES = ("energy", "danceability", "acousticness", "instrumentalness")


def tone(freq: float, seconds: float = 4.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def conform_row(columns: dict) -> None:
    """Conform one tracks row holding the descriptor columns (the rest filled with nulls)."""
    row = {"track_id": ["t" * 32], "path": ["x"], "file_size_bytes": [1], "pipeline": ["p"],
           "pipeline_version": ["v"], "mirflow_version": ["0"],
           "analyzed_at": [datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)],
           "analysis_sample_rate_hz": [44100], "downmix": ["mean"], "lineage": ["{}"], "analysis_seconds": [0.0]}
    row.update({k: [v] for k, v in columns.items()})
    conform("tracks", row, fill_missing=True)


@pytest.fixture(scope="module")
def music() -> dict[bool, list[np.ndarray]]:
    return {d: [render(3000 + 2 * i + d, d, duration_s=6.0) for i in range(4)] for d in (False, True)}


def test_columns_are_declared_with_units_and_descriptions() -> None:
    spec = table_schema("tracks")
    for name in TRACK_COLUMNS:
        col = spec.column(name)
        assert col.nullable and col.description
    for name in ("mfcc_mean", "mfcc_cov", "chroma_mean", "spectral_contrast_mean"):
        assert spec.column(name).type in ("float32[13]", "float32[91]", "float32[12]", "float32[7]")


@pytest.mark.parametrize("backend", BACKENDS)
def test_music_conforms_and_is_deterministic(backend: str, music) -> None:
    ex = DescriptorExtractor(backend=backend)
    y = music[True][0]
    a = ex.extract(Frontend.from_array(y, SR)).columns
    b = ex.extract(Frontend.from_array(y, SR)).columns
    assert a == b  # bit for bit: floats and lists compare exactly
    conform_row(a)
    for name, value in a.items():
        if backend == "librosa" and name in ESSENTIA_ONLY:
            assert value is None
            continue
        assert value is not None, name
        values = value if isinstance(value, list) else [value]
        assert all(isinstance(v, float) and np.isfinite(v) for v in values), name
    assert len(a["mfcc_mean"]) == 13 and len(a["mfcc_cov"]) == 91 and len(a["chroma_mean"]) == 12
    for name in SCORES + ("pulse_clarity", "spectral_flatness_mean"):
        assert 0.0 <= a[name] <= 1.0, name
    # The covariance's diagonal entries (variances) are the ones at the row starts of the triangle.
    diag = [a["mfcc_cov"][i * 13 - i * (i - 1) // 2] for i in range(13)]
    assert all(v >= 0 for v in diag)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("samples", [np.zeros(SR * 3, dtype=np.float32), np.zeros(0, dtype=np.float32),
                                     np.full(100, 0.5, dtype=np.float32), 1e-5 * tone(440.0)])
def test_silence_empty_and_tiny_give_nulls(backend: str, samples: np.ndarray) -> None:
    out = DescriptorExtractor(backend=backend).extract(Frontend.from_array(samples, SR))
    assert out.columns == {c: None for c in TRACK_COLUMNS}
    conform_row(out.columns)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tones_tuning_chroma_and_noise(backend: str) -> None:
    ex = DescriptorExtractor(backend=backend)
    a = ex.extract(Frontend.from_array(tone(440.0), SR)).columns
    sharp = ex.extract(Frontend.from_array(tone(440.0 * 2 ** (20 / 1200)), SR)).columns  # +20 cents
    noise = ex.extract(Frontend.from_array(
        (0.2 * np.random.default_rng(0).standard_normal(4 * SR)).astype(np.float32), SR)).columns
    assert a["tuning_frequency_hz"] == pytest.approx(440.0, abs=1.5)
    assert sharp["tuning_frequency_hz"] == pytest.approx(445.1, abs=1.5)
    assert int(np.argmax(a["chroma_mean"])) == 9  # A, with C = 0
    assert a["spectral_centroid_mean_hz"] == pytest.approx(440.0, rel=0.05)
    assert noise["spectral_flatness_mean"] > 100 * a["spectral_flatness_mean"]
    assert noise["zero_crossing_rate"] == pytest.approx(0.5, abs=0.02)
    # Steady sounds have no onsets but their start (one in 4 s) and no pulse.
    for cols in (a, noise):
        assert cols["onset_rate_per_s"] <= 0.25 and cols["pulse_clarity"] < 0.1


def test_click_track_pulse_and_onsets() -> None:
    rng = np.random.default_rng(1)
    y = np.zeros(8 * SR, dtype=np.float32)
    for start in range(0, y.size - 400, SR // 2):  # 120 BPM
        y[start:start + 400] += (0.8 * rng.standard_normal(400) * np.exp(-np.arange(400) / 60)).astype(np.float32)
    cols = DescriptorExtractor(backend="librosa").extract(Frontend.from_array(y, SR)).columns
    assert cols["onset_rate_per_s"] == pytest.approx(2.0, abs=0.2)
    assert cols["pulse_clarity"] > 0.8
    assert cols["danceability"] > 0.7  # a clear pulse at 120 BPM


def _syllables(seconds: float = 6.0) -> np.ndarray:
    """A crude sung line: a 150-Hz harmonic tone whose formant alternates 500/1500 Hz, 4 syllables per s."""
    t = np.arange(int(seconds * SR)) / SR
    f0 = 150.0 * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))  # 5-Hz vibrato
    phase = 2 * np.pi * np.cumsum(f0) / SR
    formant = np.where(np.sin(2 * np.pi * 2 * t) >= 0, 1500.0, 500.0)
    y = sum((np.exp(-0.5 * ((k * f0 - formant) / 250.0) ** 2) + 0.05 / k) * np.sin(k * phase) for k in range(1, 40))
    y *= 0.5 * (1 + np.sin(2 * np.pi * 4 * t))
    return (0.3 * y / np.max(np.abs(y))).astype(np.float32)


def test_instrumentalness_responds_to_syllable_rate_modulation() -> None:
    ex = DescriptorExtractor(backend="librosa")
    chord = sum(tone(f, seconds=6.0) / k for k, f in enumerate((220.0, 277.2, 329.6, 440.0), 1))
    voice = ex.extract(Frontend.from_array(_syllables(), SR)).columns
    organ = ex.extract(Frontend.from_array(chord, SR)).columns
    both = ex.extract(Frontend.from_array(0.5 * _syllables() + 0.5 * chord, SR)).columns
    assert organ["instrumentalness"] == 1.0
    assert voice["instrumentalness"] < 0.5 and both["instrumentalness"] < 0.5
    short = ex.extract(Frontend.from_array(_syllables(1.5), SR)).columns
    assert short["instrumentalness"] is None  # under 2 s: too few modulation periods


def test_scores_follow_the_generator(music) -> None:
    ex = DescriptorExtractor(backend="librosa")
    cols = {d: [ex.extract(Frontend.from_array(y, SR)).columns for y in ys] for d, ys in music.items()}

    def mean(d: bool, key: str) -> float:
        return float(np.mean([c[key] for c in cols[d]]))

    # Hi-hats and snares add noise (flatness, roll-off) and steady attacks.
    assert mean(True, "acousticness") < mean(False, "acousticness")
    assert mean(True, "spectral_flatness_mean") > mean(False, "spectral_flatness_mean")
    assert mean(True, "pulse_clarity") > mean(False, "pulse_clarity")
    # Generated music has no voice: mostly instrumental (fast arpeggios can read as syllables).
    assert mean(False, "instrumentalness") > 0.6 and mean(True, "instrumentalness") > 0.6


def test_backends_share_the_frontend_stft() -> None:
    fe = Frontend.from_array(render(3100, True, duration_s=4.0), SR)
    DescriptorExtractor(backend="essentia").extract(fe)
    DescriptorExtractor(backend="librosa").extract(fe)
    stfts = [k for k in fe.computed if k[0] == "stft"]
    assert stfts == [("stft", SR, 2048, 512)]


def test_frame_independent_columns_agree_across_backends(music) -> None:
    y = music[False][1]
    a = DescriptorExtractor(backend="essentia").extract(Frontend.from_array(y, SR)).columns
    b = DescriptorExtractor(backend="librosa").extract(Frontend.from_array(y, SR)).columns
    same = [c for c in TRACK_COLUMNS if c not in ESSENTIA_ONLY + ("chroma_mean", "tuning_frequency_hz")]
    assert {c: a[c] for c in same} == {c: b[c] for c in same}
    # HPCP and STFT chroma weigh harmonics and bass differently, but agree on the pitch classes in use.
    assert np.corrcoef(a["chroma_mean"], b["chroma_mean"])[0, 1] > 0.5


def test_missing_essentia_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "essentia.standard", None)
    monkeypatch.setitem(sys.modules, "essentia", None)
    with pytest.raises(ExtractionError, match="backend: librosa"):
        DescriptorExtractor(backend="essentia").extract(Frontend.from_array(tone(440.0), SR))
