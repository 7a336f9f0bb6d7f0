"""Chord extractor on generated triad progressions (every backend), label syntax, silence, summaries."""

from __future__ import annotations

import pickle

import mir_eval
import numpy as np
import pytest
from test_key import SR, synth_progression  # the additive triad generator (tests/ is on sys.path)

from mirflow.errors import ParameterError
from mirflow.extractors import registry
from mirflow.extractors.chords import ChordExtractor, frames_to_segments, summarize
from mirflow.frontend import Frontend

KEYS = [(0, "major"), (9, "minor"), (6, "major")]
SYSTEMS = {
    "ensemble": {"backend": "ensemble"},
    "madmom": {"backend": "madmom"},
    "madmom-deepchroma": {"backend": "madmom", "madmom_model": "deepchroma"},
    "essentia": {"backend": "essentia"},
    "librosa": {"backend": "librosa"},
}
#: Minimum mean majmin WCSR on the test triads (issue target 0.9). Deep chroma and
#: Essentia's frame-wise detector lag at chord changes and confuse some minor
#: triads (benchmarks/tonal_scratch.py: 0.85 and 0.73 on generated songs), so
#: they get a lower bar.
MIN_WCSR = {"ensemble": 0.9, "madmom": 0.9, "madmom-deepchroma": 0.75, "essentia": 0.8, "librosa": 0.9}


def wcsr(reference: list, table: dict) -> float:
    """majmin weighted chord symbol recall of an extractor's table against reference segments."""
    ref_iv = np.array([[s, e] for s, e, _ in reference])
    ref_lab = [lab for _, _, lab in reference]
    est_iv = np.column_stack([table["start_s"], table["end_s"]])
    est_iv, est_lab = mir_eval.util.adjust_intervals(est_iv, list(table["label"]), ref_iv.min(), ref_iv.max(),
                                                     mir_eval.chord.NO_CHORD, mir_eval.chord.NO_CHORD)
    iv, ref, est = mir_eval.util.merge_labeled_intervals(ref_iv, ref_lab, est_iv, est_lab)
    return float(mir_eval.chord.weighted_accuracy(mir_eval.chord.majmin(ref, est),
                                                  mir_eval.util.intervals_to_durations(iv)))


@pytest.fixture(scope="module")
def tracks() -> list:
    return [synth_progression(t, m, seed=10 + i) for i, (t, m) in enumerate(KEYS)]


def _check_table(table: dict, duration: float) -> None:
    starts, ends, labels = table["start_s"], table["end_s"], table["label"]
    assert len(starts) == len(ends) == len(labels) == len(table["confidence"]) > 0
    assert starts[0] == 0.0 and ends[-1] == pytest.approx(duration, abs=1e-3)
    for i, lab in enumerate(labels):
        mir_eval.chord.encode(lab)  # raises on a label mir_eval cannot parse
        assert ends[i] > starts[i]
        if i:
            assert starts[i] == ends[i - 1]          # contiguous
            assert labels[i] != labels[i - 1]        # merged
    for c in table["confidence"]:
        assert c is None or 0.0 <= c <= 1.0


@pytest.mark.parametrize("system", list(SYSTEMS))
def test_chord_accuracy(system: str, tracks: list) -> None:
    extractor = ChordExtractor(**SYSTEMS[system])
    scores = []
    for y, _, reference in tracks:
        out = extractor.extract(Frontend.from_array(y, SR))
        _check_table(out.tables["chords"], y.size / SR)
        assert out.columns["chord_count_distinct"] >= 2
        scores.append(wcsr(reference, out.tables["chords"]))
    assert np.mean(scores) >= MIN_WCSR[system], scores


def test_summaries_on_a_known_progression(tracks: list) -> None:
    y, _, reference = tracks[0]  # C: I IV V I I IV V I
    out = ChordExtractor().extract(Frontend.from_array(y, SR))
    assert out.columns["chord_count_distinct"] == 3
    assert set(out.columns["chords_top"]) == {"C:maj", "F:maj", "G:maj"}
    assert out.columns["chords_top"][0] == "C:maj"                     # longest in total
    assert out.columns["chord_changes_per_minute"] == pytest.approx(6 / (16 / 60), rel=0.2)


def test_silence_is_one_no_chord_segment() -> None:
    for backend in ("ensemble", "madmom", "essentia", "librosa"):
        out = ChordExtractor(backend=backend).extract(Frontend.from_array(np.zeros(5 * SR), SR))
        assert dict(out.tables["chords"]) == {"start_s": [0.0], "end_s": [5.0], "label": ["N"],
                                              "confidence": [None]}
        assert out.columns == {"chord_count_distinct": 0, "chord_changes_per_minute": 0.0, "chords_top": []}


def test_empty_and_too_short_audio() -> None:
    t = np.arange(SR // 2) / SR
    blip = 0.2 * np.sin(2 * np.pi * 440.0 * t)
    for y in (np.zeros(0), blip):
        for kwargs in SYSTEMS.values():
            out = ChordExtractor(**kwargs).extract(Frontend.from_array(y, SR))
            assert all(v is None for v in out.columns.values())
            assert not out.tables["chords"]


def test_noise_labels_still_parse() -> None:
    y = (0.1 * np.random.default_rng(0).standard_normal(6 * SR)).astype(np.float32)
    for kwargs in SYSTEMS.values():
        out = ChordExtractor(**kwargs).extract(Frontend.from_array(y, SR))
        _check_table(out.tables["chords"], 6.0)


def test_deterministic_and_small_when_pickled(tracks: list) -> None:
    y = tracks[1][0]
    extractor = ChordExtractor()
    assert extractor.extract(Frontend.from_array(y, SR)) == extractor.extract(Frontend.from_array(y, SR))
    assert len(pickle.dumps(extractor)) < 2000
    assert pickle.loads(pickle.dumps(extractor)) == extractor
    from mirflow.extractors.chords import _madmom_models

    misses = _madmom_models.cache_info().misses
    extractor.extract(Frontend.from_array(y, SR))
    assert _madmom_models.cache_info().misses == misses  # models are not reloaded per track


def test_frames_to_segments_merges_and_clips() -> None:
    segs = frames_to_segments(["N", "C:maj", "C:maj", "G:maj", "G:maj"], np.array([1.0, 0.5, 0.7, 0.9, 0.1]),
                              0.1, 0.45)
    assert segs == [(0.0, 0.1, "N", 1.0), (0.1, 0.3, "C:maj", 0.6), (0.3, 0.45, "G:maj", 0.5)]
    assert frames_to_segments([], None, 0.1, 1.0) == []


def test_summarize_ignores_no_chord() -> None:
    segs = [(0.0, 1.0, "N", None), (1.0, 3.0, "A:min", 0.9), (3.0, 4.0, "N", None), (4.0, 6.0, "A:min", 0.8),
            (6.0, 9.0, "E:maj", 0.7), (9.0, 12.0, "N", None)]
    out = summarize(segs, 12.0, top_n=1)
    assert out == {"chord_count_distinct": 2, "chord_changes_per_minute": 5.0, "chords_top": ["A:min"]}


def test_params_and_registry() -> None:
    assert registry.get("chords") is ChordExtractor
    with pytest.raises(ParameterError):
        ChordExtractor(backend="chordino")
    with pytest.raises(ParameterError):
        ChordExtractor(self_transition=1.5)


def test_madmom_features_equal_madmoms_processors(tracks: list) -> None:
    """The shared spectrogram + madmom's later stages give exactly what madmom's public processors give."""
    from madmom.audio.chroma import DeepChromaProcessor
    from madmom.audio.signal import Signal
    from madmom.features.chords import CNNChordFeatureProcessor

    from mirflow.extractors.chords import madmom_chord_features

    fe = Frontend.from_array(tracks[1][0], SR)
    signal = Signal(fe.signal(44100), sample_rate=44100, num_channels=1)
    np.testing.assert_array_equal(madmom_chord_features(fe, "deepchroma"),
                                  DeepChromaProcessor(num_threads=1, intra_op_num_threads=1)(signal))
    np.testing.assert_array_equal(madmom_chord_features(fe, "cnn"), CNNChordFeatureProcessor()(signal))
