"""What else the rhythm ensemble's level decision could weigh, measured out of fold on the tuning corpus.

Issue 9 asks for tempo Accuracy1 of at least 0.90 on held-out music; the
ensemble reaches 0.83 pooled over the fresh held-out corpora. This script
measures, on the tuning corpus of ``benchmarks/accuracy.py`` alone (no
held-out corpus is read), whether the level decision
(:mod:`mirflow.extractors._octave`) gains from:

``more-music``
    more tuning jigs and reels (``--extra-jigs``, ``--extra-reels``): rendered
    from the pieces of Ryan's Mammoth Collection that no held-out corpus
    (seed 1 and the fresh seeds up to ``--fresh-up-to``) and no tuning corpus
    uses (up to seed 24 that leaves no jig). The octave model is fitted with
    them; its right levels are counted on the original tuning tracks, and on
    the new ones.
``keep-floor``
    leaving the tracked level when its own probability is under a floor,
    even where no other level reaches ``switch_p``
    (:func:`~mirflow.extractors._octave.choose_level` keeps it).
``periodicity``
    the periodicity (:func:`~mirflow.extractors._rhythm_features.tempo_salience`)
    of the broadband and bass onsets, of harmonic change and of madmom's beat and
    downbeat activations at half, two thirds and twice the tracked tempo, against
    at the tracked tempo, as more cues of the model (each also times ``log2_tempo``).
``library-votes``
    whether essentia's and librosa's own tempo (their recipes in
    ``benchmarks/accuracy.py``) agree with each level or its octave.
``candidates``
    a second model ranking candidate tempi, the four levels and madmom's three
    strongest histogram tempi with their halves and doubles, from the level
    model's (out-of-fold) probability, madmom's histogram and the tempo prior:
    reaching tempi no level of the tracked one is (a reel tracked at 0.57 of its beat).

Each variant is scored by the right levels out of fold (5-fold, stratified by
level, repeated), the measure ``fit_octave.py`` chooses ``switch_p`` by; the
candidate ranker by tempo Accuracy1 with folds grouped by piece. Stop 34's
figures are in ``docs/accuracy.md``.

Usage, after ``benchmarks/accuracy.py --out OUT`` has rendered the tuning corpus and run
the ``essentia`` and ``librosa`` systems on it::

    OMP_NUM_THREADS=1 python benchmarks/octave_ablations.py OUT --extra-jigs 48 --extra-reels 48
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from fit_octave import measure, octave_label  # noqa: E402
from measure_cache import measure_cached  # noqa: E402

from mirflow.evaluate import TEMPO_TOLERANCE, tempo_accuracy, tempo_error_kind  # noqa: E402
from mirflow.extractors import _octave as octave  # noqa: E402
from mirflow.extractors.rhythm import RhythmExtractor  # noqa: E402

#: The tuning corpus of ``benchmarks/accuracy.py``'s documented run, folders under OUT.
TUNING = ("corpus-n48-seed0", "varied-n12-seed2", "varied-jigs-n24-seed5", "varied-reels-n24-seed7",
          "varied-pianos-n24-seed9")
#: The rhythm extractor's default tempo range.
MIN_BPM, MAX_BPM = RhythmExtractor().params.min_bpm, RhythmExtractor().params.max_bpm
#: Repeats of every 5-fold split (seeds 0 to REPEATS - 1); the refits keep the shipped model's ``C``.
REPEATS = 5


def _paths(out: Path, folders: Sequence[str]) -> dict[str, dict]:
    """Audio path -> truth record, for every track of the folders' ``truth.jsonl``."""
    rows = {}
    for name in folders:
        root = (out / name).resolve()
        for line in (root / "truth.jsonl").read_text().splitlines():
            t = json.loads(line)
            rows[str((root / t["path"]).resolve())] = t
    return rows


def _cached(out: Path, cache_name: str, paths: Sequence[str], fn: Callable[[str], dict], what: str,
            workers: int) -> dict[str, dict]:
    cache = out / cache_name
    done = {d["path"]: d for d in map(json.loads, cache.read_text().splitlines())} if cache.is_file() else {}
    return measure_cached(paths, fn, cache, done=done, workers=workers, what=what)


def measure_cues(path: str) -> dict:
    """Periodicity of five envelopes at half, two thirds, one and two times the tracked tempo (in a worker)."""
    from mirflow.extractors._rhythm_backends import MADMOM_FPS, madmom_activations
    from mirflow.extractors._rhythm_features import onset_features, tempo_salience
    from mirflow.extractors.rhythm import RhythmExtractor
    from mirflow.frontend import Frontend

    frontend = Frontend.from_file(path)
    sample = RhythmExtractor().octave_sample(frontend)  # the tracked tempo, as the ensemble tracks it
    if sample is None:
        return {"path": path, "tempo": None}
    tempo = sample.tempo_bpm
    feats, act = onset_features(frontend), madmom_activations(frontend)  # cached on the frontend
    chroma = feats.chroma / np.maximum(feats.chroma.sum(axis=0, keepdims=True), 1e-9)
    harmonic = np.concatenate([[0.0], 0.5 * np.abs(np.diff(chroma, axis=1)).sum(axis=0)])
    bpms = np.array([tempo / 2.0, tempo * 2.0 / 3.0, tempo, tempo * 2.0])
    row: dict = {"path": path, "tempo": tempo}
    for name, env, fps in (("broad", feats.broad, feats.fps), ("low", feats.low, feats.fps),
                           ("harmonic", harmonic, feats.fps), ("beat", act.sum(axis=1), float(MADMOM_FPS)),
                           ("downbeat", act[:, 1], float(MADMOM_FPS))):
        row[name] = tempo_salience(env, fps, bpms).tolist()
    return row


def render_extra(out: Path, family: str, n: int, seed: int, fresh_up_to: int) -> str | None:
    """Render ``n`` tuning tracks of a family from pieces no held-out or tuning corpus uses.

    Returns the folder name, or None where no such piece is left.
    """
    from mirflow.synth import read_truth_jsonl
    from mirflow.synth.scores import (
        FRESH_PER_STRATUM,
        find_pieces,
        generate_heldout_corpus,
        piece_id,
        varied_tuning_exclusions,
    )

    name = f"extra-{family}s-n{n}-seed{seed}"
    if (out / name / "truth.jsonl").is_file():
        return name
    corpora = [read_truth_jsonl(out / f / "truth.jsonl") for f in (*TUNING, "heldout-n6-seed1")]
    pieces: set[str] = set()
    seeds: set[int] = set()
    for truths in corpora:
        p, s = varied_tuning_exclusions(truths)
        pieces |= p
        seeds |= s
    varied_pieces = varied_tuning_exclusions(corpora[1])[0]
    # a fresh corpus drew its pieces with the varied corpus's excluded, and (since a family's tuning
    # tracks existed) theirs too: both draws are kept out
    for fresh_seed in (3, *range(4, fresh_up_to + 1, 2)):
        for excluded in (varied_pieces, pieces):
            pieces |= {piece_id(o, k) for o, k in find_pieces(family, FRESH_PER_STRATUM, seed=fresh_seed,
                                                              exclude=excluded)}
    left = find_pieces(family, n, seed=seed, exclude=pieces)
    print(f"{len(left)} usable {family} pieces left outside every held-out and tuning corpus (fresh seeds up to "
          f"{fresh_up_to})")
    if not left:
        return None
    generate_heldout_corpus(out / name, n_per_stratum=n, seed=seed, strata=(family,), exclude_pieces=pieces,
                            exclude_seeds=seeds, backend="fluidsynth")
    return name


def _library_tempi(out: Path, folders: Sequence[str], system: str) -> dict[str, float]:
    tempi = {}
    for name in folders:
        tag = name.replace("corpus-", "")
        pred = out / f"predictions-{tag}" / f"{system}.jsonl"
        if pred.is_file():
            for row in map(json.loads, pred.read_text().splitlines()):
                tempi[str(Path(row["path"]).resolve())] = float(row["tempo"]) if row.get("tempo") else np.nan
    return tempi


class Tuning:
    """The tuning tracks' octave samples, labels and out-of-fold level probabilities."""

    def __init__(self, samples: dict[str, dict], truth: dict[str, dict], c: float) -> None:
        self.rows = [(samples[p], t) for p, t in truth.items() if samples.get(p, {}).get("tempo") is not None]
        labelled = [(s, t, octave_label(t["tempo_bpm"], s["tempo"])) for s, t in self.rows]
        self.fit = [(s, t, lab) for s, t, lab in labelled if lab is not None]
        self.y = np.array([octave.FACTORS.index(lab) for _, _, lab in self.fit])
        self.c = c

    def terms(self, extra: Callable[[dict], list[float]] | None = None, *, with_tempo: bool = False) -> np.ndarray:
        rows = []
        for s, _, _ in self.fit:
            more = extra(s) if extra else []
            tempo = s["evidence"]["log2_tempo"]
            rows.append([*octave.model_terms(s["evidence"]), *more, *([tempo * v for v in more] if with_tempo else [])])
        return np.array(rows)

    def out_of_fold(self, x: np.ndarray, seed: int) -> np.ndarray:
        """Level probabilities of each track from models fitted without it: one stratified 5-fold split."""
        return octave._out_of_fold(x, self.y, self.c, 5, 1, seed)[0]

    def right_levels(self, p: np.ndarray, *, switch_p: float = 0.5, keep_floor: float = 0.0,
                     score: set[str] | None = None) -> int:
        """Right levels of probabilities ``p``: the shipped rule, or the kept level left below ``keep_floor``."""
        right = 0
        for (s, _, lab), probs in zip(self.fit, p, strict=True):
            if score is not None and s["path"] not in score:
                continue
            chosen, _, q = octave.choose_level(octave.three_two_floor(probs, s["evidence"]), s["tempo"],
                                               MIN_BPM, MAX_BPM, switch_p)
            kept = octave.FACTORS.index(1.0)
            if chosen == kept and q[kept] < keep_floor:
                chosen = max((i for i in range(len(q)) if i != kept), key=lambda i: q[i])
            right += octave.FACTORS[chosen] == lab
        return right

    def mean_right(self, x: np.ndarray, **kw: object) -> float:
        return float(np.mean([self.right_levels(self.out_of_fold(x, seed), **kw) for seed in range(REPEATS)]))


def candidate_ranker(tuning: Tuning, margins: Sequence[float] = (0.0, 1.0, 2.0)) -> dict[float, tuple[float, float, float]]:
    """Out-of-fold tempo Accuracy1 of ranking candidate tempi, against the level decision alone.

    Returns
    -------
    dict
        margin -> (right with levels only, right with the ranker, tracks), means over repeats; the
        ranker moves away from the chosen level only when its score is ``margin`` higher (logits).
    """
    from sklearn.model_selection import GroupKFold

    oof = np.mean([tuning.out_of_fold(tuning.terms(), seed) for seed in range(REPEATS)], axis=0)
    p_of = {s["path"]: p for (s, _, _), p in zip(tuning.fit, oof, strict=True)}
    model = octave.load_octave_model()
    tracks = []
    for s, t in tuning.rows:
        p = p_of.get(s["path"], model.probabilities(s["evidence"]))
        chosen, _, q = octave.choose_level(octave.three_two_floor(p, s["evidence"]), s["tempo"], MIN_BPM, MAX_BPM,
                                           model.switch_p)
        hist = np.asarray(s["madmom_tempi"]).reshape(-1, 2)
        cands = [(s["tempo"] * f, i) for i, f in enumerate(octave.FACTORS)
                 if MIN_BPM <= s["tempo"] * f <= MAX_BPM or f == 1.0]
        for bpm, _ in hist[:3]:
            for m in (0.5, 1.0, 2.0):
                if MIN_BPM <= bpm * m <= MAX_BPM and all(abs(bpm * m / c - 1.0) > TEMPO_TOLERANCE for c, _ in cands):
                    cands.append((bpm * m, -1))
        kept_support = octave.madmom_support(hist, s["tempo"])
        feats = []
        for bpm, level in cands:
            lt = np.log2(bpm / 120.0)
            support = octave.madmom_support(hist, bpm)
            feats.append([np.log((q[level] if level >= 0 else 0.0) + 0.01), float(level >= 0), lt, lt * lt, support,
                          octave.madmom_support(hist, 2 * bpm), octave.madmom_support(hist, bpm / 2),
                          np.log((support + 0.05) / (kept_support + 0.05))])
        right = [bool(tempo_accuracy(t["tempo_bpm"], bpm)[0]) for bpm, _ in cands]
        at_choice = next(k for k, (_, level) in enumerate(cands) if level == chosen)
        tracks.append((np.array(feats), np.array(right), at_choice, t.get("origin") or t["track_id"]))
    groups = np.array([g for *_, g in tracks])
    base = 0.0
    ranked = dict.fromkeys(margins, 0.0)
    names = np.unique(groups)
    for rep in range(REPEATS):
        order = dict(zip(np.random.default_rng(rep).permutation(names), range(names.size), strict=True))
        for train, test in GroupKFold(5).split(groups, groups=[order[g] for g in groups]):
            x = np.vstack([tracks[i][0] for i in train])
            y = np.concatenate([tracks[i][1] for i in train]).astype(int)
            ranker = octave._logistic(1.0).fit(x, y)
            for i in test:
                feats, right, at_choice, _ = tracks[i]
                score = ranker.decision_function(feats)
                best = int(np.argmax(score))
                base += right[at_choice]
                for margin in margins:
                    ranked[margin] += right[best if score[best] - score[at_choice] >= margin else at_choice]
    return {m: (base / REPEATS, ranked[m] / REPEATS, float(len(tracks))) for m in margins}


def level_counts(samples: dict[str, dict], truth: dict[str, dict]) -> dict[str, Counter]:
    """Per family, the tracked tempo's metrical level against the notated beat
    (:func:`mirflow.evaluate.tempo_error_kind`: ``right``, ``x2``, ``x3/4``, ...)."""
    out: dict[str, Counter] = {}
    for p, t in truth.items():
        s = samples.get(p)
        if s is None or s["tempo"] is None:
            continue
        out.setdefault(Path(p).stem.rstrip("0123456789"), Counter())[tempo_error_kind(t["tempo_bpm"], s["tempo"])] += 1
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="benchmarks/accuracy.py's --out folder")
    ap.add_argument("--extra-jigs", type=int, default=0)
    ap.add_argument("--extra-jigs-seed", type=int, default=11)
    ap.add_argument("--extra-reels", type=int, default=0)
    ap.add_argument("--extra-reels-seed", type=int, default=13)
    ap.add_argument("--fresh-up-to", type=int, default=24,
                    help="the last fresh held-out seed whose pieces extra tracks keep clear of (default %(default)s)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    out = args.out.resolve()
    model = octave.load_octave_model()
    c = float(model.provenance["C"])
    rendered = [render_extra(out, family, n, seed, args.fresh_up_to)
                for family, n, seed in (("jig", args.extra_jigs, args.extra_jigs_seed),
                                        ("reel", args.extra_reels, args.extra_reels_seed)) if n > 0]
    extra = [name for name in rendered if name is not None]
    truth = _paths(out, TUNING)
    more = _paths(out, extra)
    samples = _cached(out, "octave-samples.jsonl", [*truth, *more], measure, "octave samples", args.workers)
    tuning = Tuning(samples, truth, c)
    x = tuning.terms()
    print(f"{len(tuning.rows)} tuning tracks with a tempo, {len(tuning.fit)} at a level of the model; "
          f"right levels out of fold ({REPEATS} repeats of 5 folds, C={c:g}, switch_p 0.5):")
    print(f"  shipped evidence: {tuning.mean_right(x):.1f}")

    if extra:
        for name in extra:
            counts = level_counts(samples, _paths(out, [name]))
            print(f"  {name}, tracked tempo against the notated beat: "
                  + "; ".join(f"{fam} {dict(cnt)}" for fam, cnt in counts.items()))
        both = Tuning(samples, {**truth, **more}, c)
        xb = both.terms()
        runs = [both.out_of_fold(xb, seed) for seed in range(REPEATS)]
        on_original = np.mean([both.right_levels(p, score=set(truth)) for p in runs])
        on_extra = np.mean([both.right_levels(p, score=set(more)) for p in runs])
        print(f"  more-music: fitted with the {len(more)} extra tracks too: {on_original:.1f} on the original tracks; "
              f"{on_extra:.1f} of {sum(1 for s, _, _ in both.fit if s['path'] in more)} extra tracks at a level")

    for floor in (0.1, 0.2, 0.3, 0.4):
        print(f"  keep-floor {floor}: {tuning.mean_right(x, keep_floor=floor):.1f}")

    cues = _cached(out, "octave-cues.jsonl", list(truth), measure_cues, "periodicity cues", args.workers)
    names = ("broad", "low", "harmonic", "beat", "downbeat")

    def periodicity(which: Sequence[str]) -> Callable[[dict], list[float]]:
        return lambda s: [cues[s["path"]][n][k] - cues[s["path"]][n][2] for n in which for k in (0, 1, 3)]

    for which in [[n] for n in names] + [list(names)]:
        print(f"  periodicity {'+'.join(which)}: {tuning.mean_right(tuning.terms(periodicity(which), with_tempo=True)):.1f}")

    for systems in (["essentia"], ["librosa"], ["essentia", "librosa"]):
        tempi = [_library_tempi(out, TUNING, name) for name in systems]
        if not all(tempi):
            print(f"  library-votes {'+'.join(systems)}: no predictions in {out} (run accuracy.py with them)")
            continue

        def votes(s: dict, tempi: list[dict[str, float]] = tempi) -> list[float]:
            agree = [[float(abs(t.get(s["path"], np.nan) / (s["tempo"] * f * m) - 1.0) <= TEMPO_TOLERANCE)
                      for f in octave.FACTORS] for t in tempi for m in (1.0, 2.0, 0.5)]
            return [v for row in agree for v in row]

        print(f"  library-votes {'+'.join(systems)}: {tuning.mean_right(tuning.terms(votes)):.1f}")

    for margin, (base, ranked, n) in candidate_ranker(tuning).items():
        print(f"  candidates, margin {margin:g}: tempo right on {ranked:.1f} of {n:.0f} tracks, {base:.1f} with the "
              "levels alone (folds grouped by piece)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
