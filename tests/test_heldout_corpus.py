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


def test_two_beat_reels_are_rendered_at_a_reels_speed():
    """A reel in 2/2 or 2/4 gets 90-115 beats a minute, not the family's range up to 4/4 hornpipes' 200."""
    from mirflow.synth.scores import REEL_TWO_BEAT_TEMPI, plan_heldout_corpus

    plan = plan_heldout_corpus(n_per_stratum=8, seed=1, strata=("reel",))
    two_beat = [t for t in plan if load_score(t.args["origin"], family="reel", number=t.args["number"])
                .time_signature in ("2/2", "2/4")]
    assert len(two_beat) >= 4
    tempi = [t.args["tempo_bpm"] for t in two_beat]
    lo, hi = REEL_TWO_BEAT_TEMPI
    assert all(lo <= bpm <= hi for bpm in tempi), tempi
    # the stratified draws keep their order and spread once scaled
    assert tempi == sorted(tempi) and tempi[-1] - tempi[0] > (hi - lo) / 2


def _write_score(path, fifths: tuple[int, ...]) -> None:
    """A four-bar C-major scale score with one key signature per bar in ``fifths`` (music21 writes it)."""
    import zipfile

    from music21 import key, meter, note, stream

    part = stream.Part()
    for k, (f, pitch) in enumerate(zip(fifths, ("C4", "E4", "G4", "C5"), strict=False)):
        m = stream.Measure(number=k + 1)
        if k == 0:
            m.append(meter.TimeSignature("4/4"))
        if k == 0 or f != fifths[k - 1]:
            m.append(key.KeySignature(f))
        m.append(note.Note(pitch, quarterLength=4))
        part.append(m)
    score = stream.Score([part])
    xml = path.with_suffix(".musicxml")
    score.write("musicxml", fp=str(xml))
    if path.suffix == ".mxl":  # compressed as MusicXML 3 says: the score beside META-INF/container.xml
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("META-INF/container.xml", '<container><rootfiles><rootfile full-path="score.xml"/>'
                                                 "</rootfiles></container>")
            z.write(xml, "score.xml")
        xml.unlink()


@pytest.mark.parametrize("suffix", [".musicxml", ".mxl"])
def test_a_key_signature_change_is_read_before_the_parse_and_agrees_with_it(tmp_path, suffix):
    from music21 import converter

    from mirflow.synth.corpus import key_signatures_change, signature_key

    changing, steady = tmp_path / f"changing{suffix}", tmp_path / f"steady{suffix}"
    _write_score(changing, (0, 0, 2, 2))
    _write_score(steady, (0, 0, 0, 0))
    assert key_signatures_change(changing)
    assert not key_signatures_change(steady)
    # what the scan refuses, the parsed score's own rule refuses too
    parsed = converter.parse(str(changing))
    assert len({ks.sharps for ks in parsed.recurse().getElementsByClass("KeySignature")}) == 2
    assert signature_key(parsed) is None
    # not MusicXML, or not readable: the parse decides
    (tmp_path / "tune.abc").write_text("X:1\nK:C\nCDEF|\n")
    (tmp_path / "broken.mxl").write_bytes(b"not a zip file")
    assert not key_signatures_change(tmp_path / "tune.abc")
    assert not key_signatures_change(tmp_path / "broken.mxl")


# ---------------------------------------------------------------- the varied tuning corpus (issue 9)
def test_find_pieces_skips_excluded_pieces():
    from mirflow.synth.scores import find_pieces, piece_id

    first = find_pieces("jig", 2, seed=1)
    names = {piece_id(o, n) for o, n in first}
    again = find_pieces("jig", 2, seed=1, exclude=names)
    assert len(again) == 2 and not names & {piece_id(o, n) for o, n in again}


def test_plan_refuses_an_excluded_seed_and_keeps_its_draws_without_exclusions():
    from mirflow.synth.scores import plan_heldout_corpus
    from mirflow.synth.spec import SpecError

    plan = plan_heldout_corpus(n_per_stratum=3, seed=1, strata=("swing",))
    assert [t.filename.split(".")[0] for t in plan] == ["swing000", "swing001", "swing002"]
    assert plan == plan_heldout_corpus(n_per_stratum=3, seed=1, strata=("swing",))  # nothing else is drawn
    with pytest.raises(SpecError, match="excluded"):
        plan_heldout_corpus(n_per_stratum=3, seed=1, strata=("swing",), exclude_seeds={plan[1].seed})


@pytest.mark.slow
def test_default_varied_tuning_tracks_share_no_piece_and_no_seed_with_the_heldout_corpus():
    """The benchmark's defaults (``--n 48 --seed 0``, held-out 6 × seed 1, varied 12 × seed 2, tuning jigs
    24 × seed 5, tuning reels 24 × seed 7, tuning piano tracks 24 × seed 9, fresh 20 × seed 4, and the fresh
    corpora rendered before the tuning jigs, reels or piano tracks: seeds 3-12): the tuning corpus and each
    held-out corpus are disjoint sets.

    ``benchmarks/accuracy.py`` also checks the rendered corpora on every run.
    """
    from mirflow.synth.corpus import find_chorales
    from mirflow.synth.scores import (
        FRESH_BEFORE_TUNING,
        FRESH_PER_STRATUM,
        FRESH_SEED,
        HELDOUT_PER_STRATUM,
        HELDOUT_SEED,
        HELDOUT_STRATA,
        TUNING_EXTRA_ORIGINS,
        TUNING_JIGS,
        TUNING_JIGS_SEED,
        TUNING_PIANOS,
        TUNING_PIANOS_SEED,
        TUNING_REELS,
        TUNING_REELS_SEED,
        VARIED_PER_STRATUM,
        VARIED_SEED,
        plan_heldout_corpus,
        tuning_family_exclusions,
        varied_tuning_exclusions,
    )

    tuning_chorales = tuple(find_chorales(6, seed=0))  # corpus-n48-seed0's chorales
    heldout = plan_heldout_corpus(n_per_stratum=HELDOUT_PER_STRATUM, seed=HELDOUT_SEED,
                                  exclude_chorales=tuning_chorales)
    pieces, seeds = varied_tuning_exclusions(heldout)
    varied = plan_heldout_corpus(n_per_stratum=VARIED_PER_STRATUM, seed=VARIED_SEED,
                                 exclude_chorales=tuning_chorales, exclude_pieces=pieces, exclude_seeds=seeds,
                                 extra_pieces=True)
    assert VARIED_SEED != HELDOUT_SEED
    assert len(heldout) == HELDOUT_PER_STRATUM * len(HELDOUT_STRATA)
    assert len(varied) == VARIED_PER_STRATUM * len(HELDOUT_STRATA)
    assert {t.stratum for t in varied} == {t.stratum for t in heldout}
    heldout_pieces = {t.piece for t in heldout if t.piece}
    varied_pieces = {t.piece for t in varied if t.piece}
    assert len(heldout_pieces) >= 25 and len(varied_pieces) >= 20  # the sets compared are not trivially empty
    assert not heldout_pieces & varied_pieces
    assert not varied_pieces & set(tuning_chorales) and not heldout_pieces & set(tuning_chorales)
    assert not {t.seed for t in heldout} & {t.seed for t in varied}
    swing_specs = [t.args["spec"] for t in heldout + varied if t.kind == "swing"]
    assert len({s.seed for s in swing_specs}) == len(swing_specs)
    # the tuning jigs keep clear of the held-out corpus, the varied tracks and stop 19's fresh corpus;
    # the tuning reels of those, the jigs and the fresh corpora of stops 19-21
    vpieces, vseeds = varied_tuning_exclusions(varied)
    # drawn first, while music21's parsed pieces are in load_score's cache for the exclusions below
    earlier = {(family, seed): plan_heldout_corpus(n_per_stratum=FRESH_PER_STRATUM, seed=seed, strata=(family,),
                                                   exclude_pieces=vpieces)
               for family in ("jig", "reel", "piano") for seed in FRESH_BEFORE_TUNING[family]}
    jig_pieces, jig_seeds = tuning_family_exclusions("jig", heldout, varied)
    jigs = plan_heldout_corpus(n_per_stratum=TUNING_JIGS, seed=TUNING_JIGS_SEED, strata=("jig",),
                               exclude_pieces=jig_pieces, exclude_seeds=jig_seeds)
    reel_pieces, reel_seeds = tuning_family_exclusions("reel", heldout, varied, jigs)
    reels = plan_heldout_corpus(n_per_stratum=TUNING_REELS, seed=TUNING_REELS_SEED, strata=("reel",),
                                exclude_pieces=reel_pieces, exclude_seeds=reel_seeds)
    # the tuning piano tracks draw the tuning piano pool, which the varied tracks drew too: other seeds
    piano_pieces, piano_seeds = tuning_family_exclusions("piano", heldout, varied, jigs, reels)
    pianos = plan_heldout_corpus(n_per_stratum=TUNING_PIANOS, seed=TUNING_PIANOS_SEED, strata=("piano",),
                                 exclude_pieces=piano_pieces, exclude_seeds=piano_seeds, extra_pieces=True)
    assert len(pianos) == TUNING_PIANOS and {t.stratum for t in pianos} == {"piano works"}
    assert {t.piece for t in pianos} == set(TUNING_EXTRA_ORIGINS["piano"]) and not {t.piece for t in pianos} & heldout_pieces
    assert not {t.seed for t in pianos} & (vseeds | {t.seed for t in jigs + reels} | {t.seed for t in heldout})
    extra_pieces = {t.piece for t in jigs + reels}
    tuning_pieces = varied_pieces | extra_pieces | {t.piece for t in pianos} | set(tuning_chorales)
    tuning_seeds = vseeds | {t.seed for t in jigs + reels + pianos}
    assert len(extra_pieces) == TUNING_JIGS + TUNING_REELS and not extra_pieces & (heldout_pieces | vpieces)
    assert {t.stratum for t in reels} == {"reels and hornpipes (fast)"}
    # the fresh held-out corpus (rendered after the fits) keeps clear of the whole tuning corpus
    assert FRESH_SEED not in (VARIED_SEED, HELDOUT_SEED, TUNING_JIGS_SEED, TUNING_REELS_SEED, TUNING_PIANOS_SEED, 0)
    extra_tuning_pieces, extra_tuning_seeds = varied_tuning_exclusions(jigs + reels + pianos)
    fresh = plan_heldout_corpus(n_per_stratum=FRESH_PER_STRATUM, seed=FRESH_SEED, exclude_chorales=tuning_chorales,
                                exclude_pieces=vpieces | extra_tuning_pieces,
                                exclude_seeds=vseeds | extra_tuning_seeds)
    fresh_pieces = {t.piece for t in fresh if t.piece}
    assert len(fresh_pieces) >= 40 and not fresh_pieces & tuning_pieces
    assert not {t.seed for t in fresh} & tuning_seeds
    fresh_swing = {t.args["spec"].seed for t in fresh if t.kind == "swing"}
    assert len(fresh_swing) == FRESH_PER_STRATUM and not fresh_swing & {s.seed for s in swing_specs}
    # the fresh corpora rendered before a family's tuning tracks (drawn with the varied tracks excluded)
    # share none of that family's pieces with them; their other strata exclude the same tuning music as
    # before (the varied tracks and the chorales), and a family's pieces are drawn apart from the others'
    # (find_pieces)
    for plan in earlier.values():
        assert len(plan) == FRESH_PER_STRATUM and not {t.piece for t in plan} & tuning_pieces


def _cadences(*tonics: int, bars: int = 4) -> np.ndarray:
    """(onset, duration, pitch, part) rows: I-IV-V-I in major on each tonic in turn, a bar each."""
    rows, q = [], 0.0
    for tonic in tonics:
        for _ in range(bars // 4):
            for root, third in ((0, 4), (5, 4), (7, 4), (0, 4)):
                for i, step in enumerate((0, third, 7)):
                    rows.append((q, 4.0, 60 + tonic + root + step, i))
                q += 4.0
    return np.array(rows, dtype=float)


def test_a_render_keeps_its_pieces_key_only_where_the_span_holds_it():
    from mirflow.synth.corpus import span_key

    assert span_key(_cadences(0), (0, "major")) == ((0, "major"), None)
    key, note = span_key(_cadences(7), (0, "major"))  # an excerpt in the dominant
    assert key is None and note == "the rendered span is in G major, the piece in C major"
    key, note = span_key(_cadences(0, 6), (0, "major"))  # half the span a tritone away: no agreed key
    assert key is None and "agree" in note


QUARTET_INTRO = "beethoven/opus59no3/movement1.mxl"


def test_a_movement_whose_opening_is_in_another_key_is_rendered_with_its_key_unscored(tmp_path):
    """Op. 59 no. 3's first movement is in C major; the slow introduction a 30-s render holds is not
    (stop 31: no system found C major in it)."""
    import jams

    from mirflow.evaluate import Prediction, evaluate_predictions, load_truth
    from mirflow.synth import read_truth_jsonl, write_truth_jsonl

    piece = load_score(QUARTET_INTRO, family="quartet")
    assert (piece.tonic, piece.mode) == (0, "major")
    truth = render_score(tmp_path / "intro.wav", origin=QUARTET_INTRO, family="quartet", tempo_bpm=82.0,
                         backend="numpy", transpose=2, jams_path=tmp_path / "intro.jams")
    truth.validate()
    assert truth.key is None and truth.tonic is None and truth.mode is None
    assert truth.key_note.startswith("the rendered span is in ") and "C major" in truth.key_note
    assert not jams.load(str(tmp_path / "intro.jams")).search(namespace="key_mode")
    (back,) = read_truth_jsonl(write_truth_jsonl([truth], tmp_path / "truth.jsonl"))
    assert back == truth and back.key_note == truth.key_note
    # the key is not scored, the rest is
    (record,) = load_truth(tmp_path / "truth.jsonl")
    per_track, _ = evaluate_predictions([record], [Prediction(truth.track_id, [truth.path], key="D major",
                                                              tempo=82.0)])
    assert per_track["key_weighted"].isna().all() and per_track["tempo_acc1"].eq(1.0).all()
    # a movement that opens in its key keeps it, transposed with the render
    steady = render_score(tmp_path / "k545.wav", origin="mozart/k545/movement1_exposition.mxl", family="piano",
                          tempo_bpm=100.0, backend="numpy", transpose=2, max_duration_s=12.0)
    assert steady.key == "D major" and steady.key_note is None
