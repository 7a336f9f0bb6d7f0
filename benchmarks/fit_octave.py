"""Fit the rhythm ensemble's octave model (``mirflow/extractors/octave_model.json``) on the tuning corpus.

For every track of the given tuning manifests (``truth.jsonl`` of the corpora
``benchmarks/accuracy.py`` renders: the generated corpus and the varied tuning
tracks, **never a held-out corpus**) the ensemble's tracked tempo, octave
evidence and confidence factors are measured exactly as the extractor measures
them (:meth:`~mirflow.extractors.rhythm.RhythmExtractor.octave_sample`); tracks
whose tracked tempo is a level of the model (half, two thirds, same or double
the notated beat, within 4 %) are the fitting data, the rest (tracker failures,
3 times the beat) are counted and left out. :func:`~mirflow.extractors._octave.fit_octave_model`
chooses the regularisation and the switch threshold by cross-validation within
those tracks, and the script prints the out-of-fold figures next to the
baseline of keeping every tracked level.

It also writes ``octave-oof.jsonl`` beside the corpora: per tuning track, the
raw ``tempo_confidence`` and whether the tempo is right (Accuracy1) when the
octave is decided by a model fitted *without* that track
(:func:`~mirflow.extractors._octave.out_of_fold_probabilities`).
``benchmarks/accuracy.py --fit-calibration`` fits the ensemble's tempo
calibration on those instead of on the catalog's in-sample confidences: a
model is surer of the tracks it was fitted on than of new music.

Usage (after ``benchmarks/accuracy.py --out OUT`` has rendered the corpora)::

    OMP_NUM_THREADS=1 python benchmarks/fit_octave.py OUT/corpus-n48-seed0/truth.jsonl \\
        OUT/varied-n12-seed2/truth.jsonl OUT/varied-jigs-n24-seed5/truth.jsonl \\
        OUT/varied-reels-n24-seed7/truth.jsonl OUT/varied-pianos-n24-seed9/truth.jsonl --write

The measurements are cached in ``--cache`` (one JSON line per file), so a refit
after a change to the fitting alone takes seconds.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from measure_cache import measure_cached  # noqa: E402

from mirflow.evaluate import tempo_accuracy  # noqa: E402
from mirflow.extractors._octave import (  # noqa: E402
    FACTORS,
    FEATURES,
    OctaveModel,
    choose_level,
    fit_octave_model,
    out_of_fold_probabilities,
    three_two_floor,
    write_octave_model,
)

#: Where the tuning tracks' out-of-fold confidences go, relative to the folder holding the corpora.
OOF_NAME = "octave-oof.jsonl"


def octave_label(truth_bpm: float, tracked_bpm: float) -> float | None:
    """The level of :data:`FACTORS` whose tempo is right (Accuracy1), else None (any other ratio)."""
    return next((f for f in FACTORS if tempo_accuracy(truth_bpm, tracked_bpm * f)[0]), None)


def measure(path: str) -> dict:
    """The octave sample of one file (in a worker process), as JSON."""
    from mirflow.extractors.rhythm import RhythmExtractor
    from mirflow.frontend import Frontend

    sample = RhythmExtractor().octave_sample(Frontend.from_file(path))
    if sample is None:
        return {"path": path, "tempo": None}
    return {"path": path, "tempo": sample.tempo_bpm, "evidence": sample.evidence, "clarity": sample.clarity,
            "madmom_tempi": np.asarray(sample.madmom_tempi).tolist()}


def raw_confidence(row: dict, p: np.ndarray, switch_p: float) -> tuple[float, float]:
    """The level the ensemble would choose from probabilities ``p``, and its raw tempo confidence
    (as :meth:`RhythmExtractor._from_madmom` computes it, the tempo of the level standing in for
    the refitted beats')."""
    from mirflow.extractors.rhythm import RhythmExtractor, level_probability

    params = RhythmExtractor().params
    chosen, _, p = choose_level(three_two_floor(p, row["evidence"]), row["tempo"], params.min_bpm, params.max_bpm,
                                switch_p)
    tempo = row["tempo"] * FACTORS[chosen]
    p_level = level_probability(tempo, np.asarray(row["madmom_tempi"]).reshape(-1, 2), row["tempo"])
    return FACTORS[chosen], p_level * float(p[chosen])  # no clarity factor since rhythm 12


def out_of_fold_confidences(rows: list[dict], truth: dict[str, float], model: OctaveModel,
                            fit: list[tuple[dict, float]]) -> list[dict]:
    """Per tuning track: raw tempo confidence and Accuracy1 with an octave model fitted without it.

    Tracks outside the octave fit (no octave of their tracked tempo is right) take the
    shipped model's probabilities, which were not fitted on them either.
    """
    oof = out_of_fold_probabilities([r["evidence"] for r, _ in fit], [lab for _, lab in fit],
                                    c=float(model.provenance["C"]))
    p_of = {r["path"]: p for (r, _), p in zip(fit, oof, strict=True)}
    out = []
    for r in rows:
        if r["tempo"] is None:
            out.append({"path": r["path"], "raw": None, "correct": False})
            continue
        p = p_of.get(r["path"])
        factor, raw = raw_confidence(r, model.probabilities(r["evidence"]) if p is None else p, model.switch_p)
        out.append({"path": r["path"], "raw": round(raw, 6),
                    "correct": octave_label(truth[r["path"]], r["tempo"]) == factor})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifests", nargs="+", type=Path, help="truth.jsonl files of the tuning corpus")
    ap.add_argument("--cache", type=Path, help="measurement cache (default: octave-samples.jsonl beside the "
                                               "first manifest's folder)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--write", action="store_true", help="write mirflow/extractors/octave_model.json")
    args = ap.parse_args(argv)
    if any("heldout" in m.parent.name or "fresh" in m.parent.name for m in args.manifests):
        ap.error("the octave model is fitted on the tuning corpus only, not on a held-out corpus")
    root = args.manifests[0].resolve().parent.parent
    cache = args.cache or root / "octave-samples.jsonl"
    truth: dict[str, float] = {}
    for manifest in args.manifests:
        for line in manifest.read_text().splitlines():
            t = json.loads(line)
            truth[str((manifest.parent / t["path"]).resolve())] = float(t["tempo_bpm"])
    done = {}
    if cache.is_file():
        # a sample measured with other evidence (an earlier FEATURES) is measured again
        done = {r["path"]: r for r in map(json.loads, cache.read_text().splitlines())
                if r["path"] in truth and (r["tempo"] is None or tuple(r["evidence"]) == FEATURES)}
    done = measure_cached(truth, measure, cache, done=done, workers=args.workers, what="octave samples")
    rows = [done[p] for p in truth]
    labelled = [(r, octave_label(truth[r["path"]], r["tempo"])) for r in rows if r["tempo"] is not None]
    fit = [(r, lab) for r, lab in labelled if lab is not None]
    print(f"{len(rows)} tuning tracks: {len(fit)} tracked at a level of the model from the notated beat "
          f"({', '.join(f'x{f:.3g} right: {sum(1 for _, lab in fit if lab == f)}' for f in FACTORS)}), "
          f"{len(labelled) - len(fit)} at another ratio, {len(rows) - len(labelled)} without a tempo")
    corpus = ("benchmarks/fit_octave.py on the tuning corpus of benchmarks/accuracy.py: "
              + " + ".join(f"{m.parent.name} ({sum(1 for p in truth if Path(p).is_relative_to(m.parent.resolve()))}"
                           " tracks)" for m in args.manifests) + "; held-out corpora not used")
    data = fit_octave_model([r["evidence"] for r, _ in fit], [lab for _, lab in fit], corpus=corpus)
    prov = data["provenance"]
    print(f"chosen: {prov['method']}, switch_p {data['switch_p']}")
    print(f"out-of-fold log loss by C: {prov['cv_log_loss']}")
    print(f"out-of-fold right levels by switch_p: {prov['cv_right_levels']} of {len(fit)}; keeping every "
          f"tracked level: {sum(1 for _, lab in fit if lab == 1.0)}")
    if args.write:
        print(f"wrote {write_octave_model(data)}")
    oof = out_of_fold_confidences(rows, truth, OctaveModel.from_dict(data), fit)
    (root / OOF_NAME).write_text("".join(json.dumps(r) + "\n" for r in oof))
    print(f"tempo Accuracy1 on the {len(oof)} tuning tracks with out-of-fold octave decisions: "
          f"{np.mean([r['correct'] for r in oof]):.3f}; written with their raw confidences to {root / OOF_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
