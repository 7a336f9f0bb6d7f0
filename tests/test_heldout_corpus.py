"""Held-out material (issue 9): music21 scores rendered at the notated beat, with rubato and swing."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("music21", reason="the held-out pieces come from music21's corpus")

from mirflow.synth.scores import heldout_stratum, load_score, render_score, rubato_map  # noqa: E402

JIG = "ryansMammoth/MountYourBaggageJig.abc"


def test_six_eight_jig_counts_dotted_quarters():
    piece = load_score(JIG, family="jig")
    assert piece is not None and piece.time_signature == "6/8"
    assert piece.beat_q == 1.5 and piece.meter == 2
    onsets = np.array([q for q, _ in piece.beats])
    assert np.allclose(np.diff(onsets), 1.5)


def test_rendered_truth_follows_the_notated_beat_and_the_rubato(tmp_path):
    steady = render_score(tmp_path / "a.wav", origin=JIG, family="jig", tempo_bpm=110.0, backend="numpy",
                          max_duration_s=10.0)
    steady.validate()
    assert steady.source == "score" and steady.meter == 2
    assert np.allclose(np.diff(steady.beats), 60.0 / 110.0, atol=1e-9)
    drifting = render_score(tmp_path / "b.wav", origin=JIG, family="jig", tempo_bpm=110.0, backend="numpy",
                            max_duration_s=10.0, rubato=0.05)
    ibi = np.diff(drifting.beats) / (60.0 / 110.0)
    assert 0.93 < ibi.min() < 0.99 and 1.01 < ibi.max() < 1.07  # ±5 % drift, beats follow it
    with pytest.raises(ValueError, match="swing"):  # swing needs a quarter-note beat
        render_score(tmp_path / "c.wav", origin=JIG, family="jig", tempo_bpm=110.0, backend="numpy", swing=0.2)


def test_rubato_map_keeps_the_mean_tempo():
    q = np.arange(0, 129.0)
    t = rubato_map(q, beat_s=0.5, depth=0.05, period_q=16.0, phase=1.0)
    assert t[0] == 0.0 and abs(t[-1] - 64.0) < 0.05


def test_stratum_names_come_from_track_ids():
    assert heldout_stratum("jig003") == "jigs and slip jigs (6/8, 9/8)"
    assert heldout_stratum("chorale000") == "chorales, slow, degraded"
    assert heldout_stratum("zzz") == "other"
