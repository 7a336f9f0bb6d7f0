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
from mirflow.extractors.key import POOLINGS, KeyExtractor  # noqa: E402
from mirflow.labels import Key  # noqa: E402

BACKENDS = ("madmom", "essentia", "librosa")


def measure(path: str) -> dict:
    """The three backends' key probabilities of one file (in a worker process), as JSON."""
    from mirflow.frontend import Frontend

    probs = KeyExtractor(backend="ensemble").probabilities(Frontend.from_file(path))
    return {"path": path, **{name: np.asarray(probs[name]).tolist() for name in BACKENDS}}


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


def mean_score(rows: list[dict], truth: dict[str, str], extractor: KeyExtractor) -> float:
    """Mean MIREX weighted score of the keys ``extractor`` pools from the measured probabilities."""
    scores = []
    for row in rows:
        pooled = extractor.combine({name: np.asarray(row[name]) for name in BACKENDS})
        scores.append(key_scores(truth[row["path"]], Key.from_index(int(np.argmax(pooled))).mir_eval)[0])
    return float(np.mean(scores))


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
    args = ap.parse_args(argv)
    if any("heldout" in m.parent.name or "fresh" in m.parent.name for m in args.manifests):
        ap.error("the key ensemble is chosen on the tuning corpus only, not on a held-out corpus")
    tuning = load(args.manifests)
    heldout = {m.parent.name: load([m]) for m in args.heldout}
    cache = args.cache or args.manifests[0].resolve().parent.parent / "key-probabilities.jsonl"
    done = {r["path"]: r for r in map(json.loads, cache.read_text().splitlines())} if cache.is_file() else {}
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
