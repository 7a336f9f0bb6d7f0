"""Fit the rhythm ensemble's octave model (``mirflow/extractors/octave_model.json``) on the tuning corpus.

For every track of the given tuning manifests (``truth.jsonl`` of the corpora
``benchmarks/accuracy.py`` renders: the generated corpus and the varied tuning
tracks, **never a held-out corpus**) the ensemble's tracked tempo and octave
evidence are measured exactly as the extractor measures them
(:meth:`~mirflow.extractors.rhythm.RhythmExtractor.octave_evidence`); tracks
whose tracked tempo is an octave of the notated beat (half, same, double,
within 4 %) are the fitting data, the rest (3:2 errors, tracker failures) are
counted and left out. :func:`~mirflow.extractors._octave.fit_octave_model`
chooses the regularisation and the switch threshold by cross-validation within
those tracks, and the script prints the out-of-fold figures next to the
baseline of keeping every tracked level.

Usage (after ``benchmarks/accuracy.py --out OUT`` has rendered the corpora)::

    OMP_NUM_THREADS=1 python benchmarks/fit_octave.py OUT/corpus-n48-seed0/truth.jsonl \\
        OUT/varied-n12-seed2/truth.jsonl --write

The evidence is cached in ``--cache`` (one JSON line per file), so a refit
after a change to the fitting alone takes seconds.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mirflow.extractors._octave import (  # noqa: E402
    FACTORS,
    fit_octave_model,
    octave_label,
    write_octave_model,
)


def measure(path: str) -> dict:
    """The tracked tempo and octave evidence of one file (in a worker process)."""
    from mirflow.extractors.rhythm import RhythmExtractor
    from mirflow.frontend import Frontend

    out = RhythmExtractor().octave_evidence(Frontend.from_file(path))
    if out is None:
        return {"path": path, "tempo": None}
    return {"path": path, "tempo": out[0], "evidence": out[1]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifests", nargs="+", type=Path, help="truth.jsonl files of the tuning corpus")
    ap.add_argument("--cache", type=Path, help="evidence cache (default: octave-evidence.jsonl beside the first "
                                               "manifest's folder)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--write", action="store_true", help="write mirflow/extractors/octave_model.json")
    args = ap.parse_args(argv)
    if any("heldout" in m.parent.name for m in args.manifests):
        ap.error("the octave model is fitted on the tuning corpus only, not on a held-out corpus")
    cache = args.cache or args.manifests[0].parent.parent / "octave-evidence.jsonl"
    truth: dict[str, float] = {}
    for manifest in args.manifests:
        for line in manifest.read_text().splitlines():
            t = json.loads(line)
            truth[str((manifest.parent / t["path"]).resolve())] = float(t["tempo_bpm"])
    done = {}
    if cache.is_file():
        done = {r["path"]: r for r in map(json.loads, cache.read_text().splitlines()) if r["path"] in truth}
    todo = [p for p in truth if p not in done]
    if todo:
        print(f"measuring the octave evidence of {len(todo)} files", file=sys.stderr)
        with ProcessPoolExecutor(args.workers) as pool, cache.open("a") as f:
            for i, row in enumerate(pool.map(measure, todo, chunksize=2), 1):
                done[row["path"]] = row
                f.write(json.dumps(row) + "\n")
                f.flush()
                if i % 20 == 0:
                    print(f"  {i}/{len(todo)}", file=sys.stderr)
    rows = [done[p] for p in truth]
    labelled = [(r, octave_label(truth[r["path"]], r["tempo"])) for r in rows if r["tempo"] is not None]
    fit = [(r, lab) for r, lab in labelled if lab is not None]
    print(f"{len(rows)} tuning tracks: {len(fit)} tracked at an octave of the notated beat "
          f"({', '.join(f'x{f:g} right: {sum(1 for _, lab in fit if lab == f)}' for f in FACTORS)}), "
          f"{len(labelled) - len(fit)} at another ratio, {len(rows) - len(labelled)} without a tempo")
    corpus = ("benchmarks/fit_octave.py on the tuning corpus of benchmarks/accuracy.py: "
              + " + ".join(f"{m.parent.name} ({sum(1 for p in truth if Path(p).is_relative_to(m.parent))} tracks)"
                           for m in args.manifests) + "; held-out corpora not used")
    model = fit_octave_model([r["evidence"] for r, _ in fit], [lab for _, lab in fit], corpus=corpus)
    prov = model["provenance"]
    print(f"chosen: {prov['method']}, switch_p {model['switch_p']}")
    print(f"out-of-fold log loss by C: {prov['cv_log_loss']}")
    print(f"out-of-fold right levels by switch_p: {prov['cv_right_levels']} of {len(fit)}; keeping every "
          f"tracked level: {sum(1 for _, lab in fit if lab == 1.0)}")
    if args.write:
        print(f"wrote {write_octave_model(model)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
