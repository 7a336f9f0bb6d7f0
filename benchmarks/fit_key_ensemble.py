"""Choose the key ensemble's pooling and weights (``KeyParams.pooling``, ``ensemble_weights``) on the tuning corpus.

For every track of the given tuning manifests (``truth.jsonl`` of the corpora
``benchmarks/accuracy.py`` renders, **never a held-out corpus**) the 24-way key
probabilities of madmom, essentia and librosa are measured exactly as the
extractor measures them (:meth:`~mirflow.extractors.key.KeyExtractor.probabilities`).
Each pooling of :data:`~mirflow.extractors.key.POOLINGS` is then scored with
every weight triple of a grid (step ``--step``, weights summing to 1) by the
mean MIREX weighted score (``mir_eval.key.weighted_score``) of the key it picks,
through :meth:`~mirflow.extractors.key.KeyExtractor.combine` itself. The best
few of each pooling and the shipped defaults are printed.

``--heldout`` manifests are scored with the chosen pooling and weights and with
the defaults, and reported beside them; they choose nothing.

``--subdominant`` fits the ensemble's second look at its best key against the key
a fifth below (:func:`~mirflow.extractors.key.subdominant_refinement`) on the same
tuning tracks: for the shipped pooling and weights, a logistic regression of
"the key is a fifth below the pooled best" on
:func:`~mirflow.extractors.key.subdominant_evidence` (from the librosa backend's
pitch-class profile, measured too) and the two keys' pooled log odds, ``C`` the
one of 0.1/1/10 with the lowest out-of-fold log loss (10 x 5-fold stratified). It
prints the weights to put in ``SUBDOMINANT_WEIGHTS``/``SUBDOMINANT_INTERCEPT``
and the out-of-fold and ``--heldout`` figures with and without the refinement,
and writes ``key-oof.jsonl`` beside the corpora: per tuning track, the ensemble's
raw key confidence and whether its key is exact with the refinement fitted
without that track. ``benchmarks/accuracy.py --fit-calibration`` fits the
ensemble's key map on those: the refinement is surer of the tracks it was
fitted on than of new music.

Usage (after ``benchmarks/accuracy.py --out OUT`` has rendered the corpora)::

    OMP_NUM_THREADS=1 python benchmarks/fit_key_ensemble.py OUT/corpus-n48-seed0/truth.jsonl \\
        OUT/varied-n12-seed2/truth.jsonl OUT/varied-jigs-n24-seed5/truth.jsonl \\
        OUT/varied-reels-n24-seed7/truth.jsonl --heldout OUT/fresh-n20-seed4/truth.jsonl

The measurements are cached in ``--cache`` (one JSON line per file).
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

from mirflow.evaluate import key_scores, load_truth  # noqa: E402
from mirflow.extractors.key import (  # noqa: E402
    POOLINGS,
    KeyExtractor,
    subdominant_features,
    subdominant_pair,
    subdominant_refinement,
)
from mirflow.labels import Key  # noqa: E402

BACKENDS = ("madmom", "essentia", "librosa")


def measure(path: str) -> dict:
    """The three backends' key probabilities and the librosa backend's pitch-class profile of one file
    (in a worker process), as JSON."""
    from mirflow.frontend import Frontend

    extractor = KeyExtractor(backend="ensemble")
    frontend = Frontend.from_file(path)
    probs = extractor.probabilities(frontend)
    return {"path": path, **{name: np.asarray(probs[name]).tolist() for name in BACKENDS},
            "pcp": extractor.pcp(frontend).tolist()}


def weight_grid(step: float) -> list[tuple[float, float, float]]:
    """Every (madmom, essentia, librosa) weight triple on a ``step`` grid that sums to 1.

    Examples
    --------
    >>> len(weight_grid(0.5)), weight_grid(0.5)[0]
    (6, (0.0, 0.0, 1.0))
    """
    n = round(1 / step)
    return [(round(a * step, 6), round(b * step, 6), round((n - a - b) * step, 6))
            for a in range(n + 1) for b in range(n + 1 - a)]


def mean_score(rows: list[dict], truth: dict[str, str], extractor: KeyExtractor, *,
               refine: bool = False) -> float:
    """Mean MIREX weighted score of the keys ``extractor`` pools from the measured probabilities
    (``refine``: after :func:`~mirflow.extractors.key.subdominant_refinement`)."""
    scores = []
    for row in rows:
        pooled = extractor.combine({name: np.asarray(row[name]) for name in BACKENDS})
        if refine:
            pooled = subdominant_refinement(pooled, np.asarray(row["pcp"]))
        scores.append(key_scores(truth[row["path"]], Key.from_index(int(np.argmax(pooled))).mir_eval)[0])
    return float(np.mean(scores))


def subdominant_samples(rows: list[dict], truth: dict[str, str],
                        extractor: KeyExtractor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per track: the refinement's two features, whether the key is a fifth below the pooled best,
    and the MIREX gain of switching to it."""
    x, y, gain = [], [], []
    for row in rows:
        pooled = extractor.combine({name: np.asarray(row[name]) for name in BACKENDS})
        best, below = (Key.from_index(i) for i in subdominant_pair(pooled))
        x.append(subdominant_features(pooled, np.asarray(row["pcp"])))
        ref = truth[row["path"]]
        y.append(key_scores(ref, below.mir_eval)[1] == 1.0)
        gain.append(key_scores(ref, below.mir_eval)[0] - key_scores(ref, best.mir_eval)[0])
    return np.array(x), np.array(y, dtype=int), np.array(gain)


#: Where the tuning tracks' out-of-fold key confidences go, relative to the folder holding the corpora.
OOF_NAME = "key-oof.jsonl"


def fit_subdominant(x: np.ndarray, y: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """Choose C by out-of-fold log loss, print the out-of-fold switches and the weights to ship.

    Returns the chosen C's out-of-fold probabilities that the key is a fifth below the pooled best.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold

    repeats, folds = 10, 5
    results = {}
    for c in (0.1, 1.0, 10.0):
        oof = np.zeros(len(y))
        for rep in range(repeats):
            for train, test in StratifiedKFold(folds, shuffle=True, random_state=rep).split(x, y):
                oof[test] += LogisticRegression(C=c).fit(x[train], y[train]).predict_proba(x[test])[:, 1] / repeats
        results[c] = (log_loss(y, oof), oof)
        switched = oof > 0.5
        print(f"C={c:g}: out-of-fold log loss {results[c][0]:.3f} (prior alone "
              f"{log_loss(y, np.full(len(y), y.mean())):.3f}); switched {int(switched.sum())}: "
              f"{int((switched & (y == 1)).sum())} to the key, {int((switched & (gain < 0)).sum())} away from it; "
              f"MIREX weighted {gain[switched].sum() / len(y):+.4f}")
    c = min(results, key=lambda k: (results[k][0], -k))
    model = LogisticRegression(C=c).fit(x, y)
    print(f"chosen C={c:g} ({int(y.sum())} of {len(y)} tuning tracks have the key a fifth below the pooled best): "
          f"SUBDOMINANT_WEIGHTS = ({model.coef_[0][0]:.3f}, {model.coef_[0][1]:.3f}), "
          f"SUBDOMINANT_INTERCEPT = {model.intercept_[0]:.3f}")
    return results[c][1]


def out_of_fold_keys(rows: list[dict], truth: dict[str, str], extractor: KeyExtractor,
                     p_below: np.ndarray) -> list[dict]:
    """Per tuning track: the raw key confidence and exactness with the out-of-fold refinement
    (each track's probability from models fitted without it), as the extractor would compute them."""
    out = []
    for row, p in zip(rows, p_below, strict=True):
        pooled = subdominant_refinement(extractor.combine({name: np.asarray(row[name]) for name in BACKENDS}),
                                        p_below=float(p))
        out.append({"path": row["path"], "raw": round(float(pooled.max()), 6),
                    "correct": bool(key_scores(truth[row["path"]], Key.from_index(int(np.argmax(pooled))).mir_eval)[1])})
    return out


def load(manifests: list[Path]) -> dict[str, str]:
    """Resolved audio path -> key of the manifests' tracks that have one."""
    return {r.path: r.key for m in manifests for r in load_truth(m) if r.key and r.path}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifests", nargs="+", type=Path, help="truth.jsonl files of the tuning corpus")
    ap.add_argument("--heldout", nargs="*", type=Path, default=[], help="truth.jsonl files reported, not fitted on")
    ap.add_argument("--cache", type=Path, help="measurement cache (default: key-probabilities.jsonl beside the "
                                               "first manifest's folder)")
    ap.add_argument("--step", type=float, default=0.1, help="weight grid step")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--subdominant", action="store_true",
                    help="fit the refinement against the key a fifth below (see above)")
    args = ap.parse_args(argv)
    if any("heldout" in m.parent.name or "fresh" in m.parent.name for m in args.manifests):
        ap.error("the key ensemble is chosen on the tuning corpus only, not on a held-out corpus")
    tuning = load(args.manifests)
    heldout = {m.parent.name: load([m]) for m in args.heldout}
    cache = args.cache or args.manifests[0].resolve().parent.parent / "key-probabilities.jsonl"
    # a sample measured before the pitch-class profile was kept is measured again
    done = ({r["path"]: r for r in map(json.loads, cache.read_text().splitlines()) if "pcp" in r}
            if cache.is_file() else {})
    done = measure_cached(list(tuning) + [p for t in heldout.values() for p in t], measure, cache, done=done,
                          workers=args.workers, what="key probabilities")
    rows = [done[p] for p in tuning]
    shipped = KeyExtractor(backend="ensemble")
    print(f"{len(rows)} tuning tracks; shipped ({shipped.params.pooling}, {shipped.params.ensemble_weights}): "
          f"{mean_score(rows, tuning, shipped):.4f}")
    results = sorted(((mean_score(rows, tuning, KeyExtractor(ensemble_weights=w, pooling=pooling)), pooling, w)
                      for pooling in POOLINGS for w in weight_grid(args.step) if w[0] + w[1] + w[2] > 0),
                     key=lambda r: -r[0])
    for pooling in POOLINGS:
        top = [r for r in results if r[1] == pooling][:5]
        print(f"best {pooling} pooling: " + "; ".join(f"{w} {s:.4f}" for s, _, w in top))
    score, pooling, weights = results[0]
    print(f"chosen: {pooling} pooling, weights {weights} (tuning {score:.4f})")
    for name, truth in heldout.items():
        held = [done[p] for p in truth]
        chosen = KeyExtractor(ensemble_weights=weights, pooling=pooling)
        print(f"held-out {name} ({len(held)} tracks, not fitted on): chosen {mean_score(held, truth, chosen):.4f}, "
              f"shipped {mean_score(held, truth, shipped):.4f}")
    if args.subdominant:
        p_below = fit_subdominant(*subdominant_samples(rows, tuning, shipped))
        oof = out_of_fold_keys(rows, tuning, shipped, p_below)
        oof_file = args.manifests[0].resolve().parent.parent / OOF_NAME
        oof_file.write_text("".join(json.dumps(r) + "\n" for r in oof))
        print(f"exact keys on the {len(oof)} tuning tracks with the out-of-fold refinement: "
              f"{np.mean([r['correct'] for r in oof]):.3f}; written with their raw confidences to {oof_file}")
        for name, truth in heldout.items():
            held = [done[p] for p in truth]
            print(f"held-out {name}: without the refinement {mean_score(held, truth, shipped):.4f}, with the shipped "
                  f"weights {mean_score(held, truth, shipped, refine=True):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
