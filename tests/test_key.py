"""Key extractor on generated audio with a known key (every backend), label formats, silence and noise."""

from __future__ import annotations

import pickle

import mir_eval
import numpy as np
import pytest

from mirflow.errors import ParameterError
from mirflow.extractors import registry
from mirflow.extractors.key import KeyExtractor, subdominant_refinement
from mirflow.frontend import Frontend
from mirflow.labels import PITCH_NAMES, Key, mirex_score, parse_key

SR = 22050

#: (scale degree, quality) of the progressions, relative to the tonic.
PROGRESSIONS = {
    "major": ((0, "maj"), (5, "maj"), (7, "maj"), (0, "maj")),    # I IV V I
    "minor": ((0, "min"), (5, "min"), (7, "maj"), (0, "min")),    # i iv V i (harmonic minor)
}


def synth_progression(tonic: int, mode: str, *, chord_s: float = 2.0, repeats: int = 2,
                      seed: int = 0) -> tuple[np.ndarray, str, list[tuple[float, float, str]]]:
    """Additive-synthesis triads (three close chord tones + the root an octave below).

    Returns the mono signal at :data:`SR`, the mir_eval key and the chord
    segments ``(start_s, end_s, harte)``. Each chord is struck once and decays
    like a piano; partials fall off by 0.6 per harmonic. (Shared with
    ``tests/test_chords.py``.)
    """
    rng = np.random.default_rng(seed)
    n = int(chord_s * SR)
    t = np.arange(n) / SR
    envelope = np.minimum(1.0, t / 0.02) * np.exp(-0.7 * t)
    parts, segments = [], []
    for i, (degree, quality) in enumerate(PROGRESSIONS[mode] * repeats):
        root = (tonic + degree) % 12
        third = 3 if quality == "min" else 4
        x = np.zeros(n)
        for midi in (48 + root, 60 + root, 60 + root + third, 60 + root + 7):
            f0 = 440.0 * 2.0 ** ((midi - 69) / 12)
            for h in range(1, 6):
                x += 0.6 ** (h - 1) * np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi))
        parts.append(x * envelope)
        segments.append((i * chord_s, (i + 1) * chord_s, f"{PITCH_NAMES[root]}:{quality}"))
    y = np.concatenate(parts)
    return (0.3 * y / np.abs(y).max()).astype(np.float32), Key(tonic, mode).mir_eval, segments


# Keys spread over the circle of fifths, both modes, awkward spellings included.
KEYS = [(0, "major"), (9, "minor"), (6, "major"), (3, "minor"), (10, "major"), (8, "minor")]
BACKENDS = ["madmom", "essentia", "librosa", "ensemble"]


@pytest.fixture(scope="module")
def tracks() -> list[tuple[np.ndarray, str]]:
    return [synth_progression(t, m, seed=i)[:2] for i, (t, m) in enumerate(KEYS)]


def _check_columns(cols: dict) -> None:
    key = parse_key(cols["key"])
    mir_eval.key.validate_key(cols["key"])
    assert key is not None and cols["key"] == key.mir_eval
    assert (cols["key_tonic"], cols["key_mode"]) == (key.tonic, key.mode)
    assert cols["key_jams"] == key.jams
    assert parse_key(cols["key_camelot"]) == key and parse_key(cols["key_openkey"]) == key
    assert cols["key_alt"] != cols["key"]
    mir_eval.key.validate_key(cols["key_alt"])
    assert 0.0 <= cols["key_alt_confidence"] <= cols["key_confidence"] <= 1.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_key_accuracy(backend: str, tracks: list) -> None:
    # Single backends may slip once on these bare triads (madmom hears G# minor
    # as G# major: 0.2); the ensemble must get all six (next test).
    extractor = KeyExtractor(backend=backend)
    scores = []
    for y, truth in tracks:
        out = extractor.extract(Frontend.from_array(y, SR))
        _check_columns(out.columns)
        scores.append(mirex_score(truth, out.columns["key"]))
    assert np.mean(scores) >= 0.85, scores


def test_ensemble_exact_on_all_test_keys(tracks: list) -> None:
    for y, truth in tracks:
        assert KeyExtractor().extract(Frontend.from_array(y, SR)).columns["key"] == truth


@pytest.mark.parametrize("backend", BACKENDS)
def test_silence_and_noise_give_no_key(backend: str) -> None:
    extractor = KeyExtractor(backend=backend)
    rng = np.random.default_rng(1)
    cases = {
        "silence": np.zeros(10 * SR, dtype=np.float32),
        "near silence": (1e-5 * rng.standard_normal(10 * SR)).astype(np.float32),
        "white noise": (0.1 * rng.standard_normal(10 * SR)).astype(np.float32),
        "empty": np.zeros(0, dtype=np.float32),
    }
    for name, y in cases.items():
        out = extractor.extract(Frontend.from_array(y, SR))
        assert all(v is None for v in out.columns.values()), (name, out.columns)
        assert set(out.columns) == set(KeyExtractor.columns)


def test_brown_noise_gives_no_key() -> None:
    from scipy.signal import lfilter

    rng = np.random.default_rng(2)
    brown = lfilter([1.0], [1.0, -0.995], rng.standard_normal(10 * SR))  # leaky integrator: 1/f^2
    y = (0.3 * brown / np.abs(brown).max()).astype(np.float32)
    assert KeyExtractor(backend="librosa").extract(Frontend.from_array(y, SR)).columns["key"] is None


def test_noisy_music_keeps_its_key(tracks: list) -> None:
    y, truth = tracks[1]
    rng = np.random.default_rng(3)
    noisy = y + np.sqrt(np.mean(y**2) / 10 ** 0.6) * rng.standard_normal(y.size).astype(np.float32)  # 6 dB SNR
    assert KeyExtractor().extract(Frontend.from_array(noisy, SR)).columns["key"] == truth


def test_deterministic_and_small_when_pickled(tracks: list) -> None:
    y, _ = tracks[2]
    extractor = KeyExtractor()
    first = extractor.extract(Frontend.from_array(y, SR)).columns
    second = extractor.extract(Frontend.from_array(y, SR)).columns
    assert first == second
    assert len(pickle.dumps(extractor)) < 2000  # no model on the instance
    assert pickle.loads(pickle.dumps(extractor)) == extractor
    from mirflow.extractors.key import _madmom_key_network

    assert _madmom_key_network.cache_info().currsize == 1  # loaded once per process


def test_stft_chroma_and_profiles(tracks: list) -> None:
    y, truth = tracks[0]
    for kwargs in ({"chroma": "stft"}, {"librosa_profile": "krumhansl"}, {"librosa_profile": "shaath"}):
        out = KeyExtractor(backend="librosa", **kwargs).extract(Frontend.from_array(y, SR))
        assert mirex_score(truth, out.columns["key"]) >= 0.5, kwargs
    out = KeyExtractor(backend="essentia", profile="krumhansl").extract(Frontend.from_array(y, SR))
    assert out.columns["key"] == truth


def test_spectrogram_shared_with_chords(tracks: list) -> None:
    from mirflow.extractors.chords import ChordExtractor

    y, _ = tracks[0]
    fe = Frontend.from_array(y, SR)
    KeyExtractor(backend="madmom").extract(fe)
    ChordExtractor(backend="madmom", madmom_model="deepchroma").extract(fe)
    ChordExtractor(backend="madmom").extract(fe)
    # one STFT and its filtered spectrograms, computed once for all three models
    assert len([k for k in fe.computed if k[0] == "madmom"]) == 1


def test_shared_spectrogram_matches_madmom_processor(tracks: list) -> None:
    from madmom.audio.signal import Signal
    from madmom.features.key import KEY_LABELS, CNNKeyRecognitionProcessor

    from mirflow.extractors.key import madmom_key_probabilities

    y, _ = tracks[1]
    fe = Frontend.from_array(y, SR)
    theirs = CNNKeyRecognitionProcessor()(Signal(fe.signal(44100), sample_rate=44100)).reshape(24)
    by_key = {parse_key(label): p for label, p in zip(KEY_LABELS, theirs, strict=True)}
    expected = [by_key[Key.from_index(i)] for i in range(24)]
    np.testing.assert_allclose(madmom_key_probabilities(fe), expected, atol=1e-6)


def test_params_and_registry() -> None:
    assert registry.get("key") is KeyExtractor
    assert registry.create("key", {"backend": "librosa"}).params.backend == "librosa"
    with pytest.raises(ParameterError):
        KeyExtractor(backend="keyfinder")
    with pytest.raises(ParameterError):
        KeyExtractor(profile="nonsense")
    for weights in ((1.0, 2.0), (1.0, -1.0, 1.0), (0.0, 0.0, 0.0)):
        with pytest.raises(ParameterError):
            KeyExtractor(ensemble_weights=weights)
    assert KeyExtractor(ensemble_weights=[1, 0, 0]).params.ensemble_weights == (1, 0, 0)


def test_ensemble_pools_log_linearly_by_default() -> None:
    ex = KeyExtractor()
    assert (ex.params.pooling, ex.params.ensemble_weights) == ("log", (0.5, 0.2, 0.3))
    with pytest.raises(ParameterError):
        KeyExtractor(pooling="mean")


def test_log_pooling_is_a_weighted_geometric_mean_and_linear_an_average() -> None:
    names, weights = ("madmom", "essentia", "librosa"), (0.5, 0.2, 0.3)
    probs = dict(zip(names, np.random.default_rng(0).dirichlet(np.ones(24), size=3), strict=True))
    assert min(v.min() for v in probs.values()) > 1e-6  # above the floor: the geometric mean exactly
    geometric = np.prod([probs[n] ** w for n, w in zip(names, weights, strict=True)], axis=0)
    np.testing.assert_allclose(KeyExtractor().combine(probs), geometric / geometric.sum(), rtol=1e-9)
    average = sum(w * probs[n] for n, w in zip(names, weights, strict=True))
    np.testing.assert_allclose(KeyExtractor(pooling="linear").combine(probs), average, rtol=1e-9)
    # a key one backend rounds to zero is a strong vote against it, not a NaN or -inf
    probs["madmom"] = np.where(np.arange(24) == 3, 0.0, probs["madmom"])
    pooled = KeyExtractor().combine(probs)
    assert np.isfinite(pooled).all() and 0 < pooled[3] < np.sort(pooled)[-2]
    # one backend is itself, whatever the pooling
    only = {"librosa": probs["librosa"]}
    np.testing.assert_array_equal(KeyExtractor(pooling="log").combine(only), probs["librosa"])


def test_subdominant_refinement_moves_probability_only_between_the_best_key_and_the_key_a_fifth_below() -> None:
    rng = np.random.default_rng(3)
    scale = np.zeros(12)
    scale[[0, 2, 4, 5, 7, 9, 11]] = 1.0  # C major (A natural minor)
    for _ in range(20):
        probs, pcp = rng.dirichlet(np.ones(24)), rng.uniform(0.0, 1.0, 12)
        out = subdominant_refinement(probs, pcp)
        best = Key.from_index(int(np.argmax(probs)))
        below = Key((best.tonic + 5) % 12, best.mode).index
        others = [i for i in range(24) if i not in (best.index, below)]
        np.testing.assert_array_equal(out[others], probs[others])
        assert out[[best.index, below]].sum() == pytest.approx(probs[[best.index, below]].sum())
    # G major pooled first, C major second: the scale decides (C major's F against G major's F#)
    probs = np.full(24, 0.01)
    probs[Key(7, "major").index], probs[Key(0, "major").index] = 0.55, 0.23
    assert int(np.argmax(subdominant_refinement(probs, scale))) == Key(0, "major").index
    assert int(np.argmax(subdominant_refinement(probs, np.roll(scale, 7)))) == Key(7, "major").index
    # minor: E minor pooled first, A minor second; A natural minor has F, E minor F#
    probs = np.full(24, 0.01)
    probs[Key(4, "minor").index], probs[Key(9, "minor").index] = 0.55, 0.23
    assert int(np.argmax(subdominant_refinement(probs, scale))) == Key(9, "minor").index
    assert int(np.argmax(subdominant_refinement(probs, np.roll(scale, 7)))) == Key(4, "minor").index
    # a probability given directly (out of fold) splits the pair the same way; one input is needed
    split = subdominant_refinement(probs, p_below=0.9)
    assert split[Key(9, "minor").index] == pytest.approx(0.9 * 0.78) and split[Key(4, "minor").index] == pytest.approx(0.1 * 0.78)
    with pytest.raises(ValueError):
        subdominant_refinement(probs)
    # more of the note only the lower key has, more probability for it
    shares = [subdominant_refinement(probs, np.where(np.arange(12) == 5, f, np.roll(scale, 7)))[Key(9, "minor").index]
              for f in (0.0, 0.5, 1.0, 2.0)]
    assert shares == sorted(shares) and shares[-1] > shares[0]


def test_subdominant_refinement_is_a_declared_switch_of_the_ensemble(tracks: list) -> None:
    with pytest.raises(ParameterError):
        KeyExtractor(refine_subdominant="yes")
    for y, truth in tracks[:3]:
        frontend = Frontend.from_array(y, SR)
        on, off = KeyExtractor(), KeyExtractor(refine_subdominant=False)
        pooled = off.combine(off.probabilities(frontend))
        refined = subdominant_refinement(pooled, on.pcp(frontend))
        assert off.extract(frontend).columns["key"] == Key.from_index(int(np.argmax(pooled))).mir_eval == truth
        assert on.extract(frontend).columns["key"] == Key.from_index(int(np.argmax(refined))).mir_eval == truth
        # the other backends are not refined: the refinement was fitted on the ensemble's probabilities
        librosa = KeyExtractor(backend="librosa")
        assert librosa.extract(frontend).columns["key_confidence"] == \
            KeyExtractor(backend="librosa", refine_subdominant=False).extract(frontend).columns["key_confidence"]
