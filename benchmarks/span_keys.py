"""Does the key of the excerpt a render holds agree with the movement's key, the corpus's truth?

``mirflow.synth`` takes a score piece's key from the whole movement
(:func:`mirflow.synth.corpus.signature_key`: one key signature, music21's four
profile methods agreeing on it), but a render holds only the movement's first
30 s or less. For every quartet and piano piece of the given corpora this runs
the same four methods on the span a 30-s render holds at the piece's median
rendered tempo and says whether they agree on the movement's key. With
``--results`` (``results-<corpus>`` folders of ``benchmarks/accuracy.py``) and
``--oof`` (the tuning corpus's ``key-oof.jsonl``), it gives a system's share of
exact keys on the renders of the pieces whose span agrees and of those whose
span does not (``docs/accuracy.md``, stop 31).

Usage (after ``benchmarks/accuracy.py --out OUT`` has rendered and measured the corpora)::

    python benchmarks/span_keys.py OUT/varied-n12-seed2 OUT/varied-pianos-n24-seed9 OUT/heldout-n6-seed1 \\
        OUT/fresh-n20-seed20 --oof OUT/key-oof.jsonl --results OUT/results-fresh-n20-seed*
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mirflow.labels import Key  # noqa: E402

#: The families whose pieces are movements of scores (the Irish tunes and folk songs are whole tunes).
FAMILIES = ("quartet", "piano")
#: Longest render, in seconds (``max_duration_s`` of the corpora's specs).
RENDER_S = 30.0


def span_key(origin: str, family: str, tempo_bpm: float) -> tuple[str, str]:
    """The movement's key and the key music21's four methods agree on over the span a render at
    ``tempo_bpm`` holds (:func:`mirflow.synth.corpus.agreed_key`; ``'disagree'`` when they do not)."""
    from mirflow.synth.corpus import agreed_key
    from mirflow.synth.scores import _parse, load_score

    piece = load_score(origin, family=family)
    span_q = min(piece.end_q, RENDER_S * tempo_bpm / 60.0 * piece.beat_q)
    span = _parse(origin, None).flatten().getElementsByOffset(
        0.0, span_q, includeEndBoundary=False, mustBeginInSpan=True).stream()
    agreed = agreed_key(span)
    return Key(piece.tonic, piece.mode).mir_eval, "disagree" if agreed is None else Key(*agreed).mir_eval


def track_origins(corpus: Path) -> dict[str, str]:
    """Resolved audio path -> score origin, for the quartet and piano tracks of a corpus folder."""
    out = {}
    for line in (corpus / "truth.jsonl").read_text(encoding="utf-8").splitlines():
        t = json.loads(line)
        if t.get("spec", {}).get("family") in FAMILIES:
            out[str((corpus / t["path"]).resolve())] = t["spec"]["origin"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpora", nargs="+", type=Path, help="corpus folders (with truth.jsonl) whose pieces to check")
    ap.add_argument("--oof", type=Path, help="the tuning corpus's key-oof.jsonl (exact keys out of fold)")
    ap.add_argument("--results", nargs="*", type=Path, default=[], help="results-<corpus> folders of accuracy.py")
    ap.add_argument("--system", default="mirflow-default", help="system folder inside each results folder")
    args = ap.parse_args(argv)

    tempi: dict[tuple[str, str], list[float]] = {}
    for corpus in args.corpora:
        for line in (corpus / "truth.jsonl").read_text(encoding="utf-8").splitlines():
            t = json.loads(line)
            spec = t.get("spec", {})
            if spec.get("family") in FAMILIES:
                tempi.setdefault((spec["origin"], spec["family"]), []).append(float(t["tempo_bpm"]))
    agrees = {}
    for (origin, family), bpm in sorted(tempi.items()):
        median = sorted(bpm)[len(bpm) // 2]
        movement, span = span_key(origin, family, median)
        agrees[origin] = span == movement
        print(f"{origin:40s} {family:7s} movement {movement:9s} span at {median:5.1f} BPM: {span:9s}"
              f"{'' if agrees[origin] else '   <- not the movement key'}")
    print(f"{sum(not v for v in agrees.values())} of {len(agrees)} pieces: the span's key is not the movement's")

    def report(label: str, origins: pd.Series, exact: pd.Series) -> None:
        known = origins.isin(list(agrees))
        frame = pd.DataFrame({"agrees": origins[known].map(agrees), "exact": exact[known].astype(float)})
        for flag, group in frame.groupby("agrees"):
            print(f"{label}: {'span agrees' if flag else 'span differs'}: exact {group['exact'].mean():.3f} "
                  f"of {len(group)} renders")

    if args.oof:
        oof = pd.read_json(args.oof, lines=True)
        origins = {p: o for c in args.corpora for p, o in track_origins(c).items()}
        report("tuning, out of fold", oof["path"].map(origins), oof["correct"])
    frames = []
    for results in args.results:
        per_track = pd.read_parquet(results / args.system / "per_track.parquet")
        corpus = results.parent / results.name.removeprefix("results-")
        origins = track_origins(corpus)
        per_track["origin"] = [origins.get(str(Path(p).resolve())) for p in per_track["path"]]
        frames.append(per_track)
    if frames:
        both = pd.concat(frames, ignore_index=True)
        report(f"{args.system} on {len(frames)} results folders", both["origin"], both["key_exact"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
