"""Expected calibration error of a mirflow system over several held-out corpora pooled.

``benchmarks/accuracy.py`` reports each corpus's ECE beside the ECE a perfectly
calibrated confidence would show on that many tracks: on 140 tracks that floor
is about 0.06, so a target of 0.05 cannot be shown on one corpus. Pooling the
per-track results of corpora measured in separate runs (``--fresh-seed 4`` and
``--fresh-seed 6``, say) halves the floor's spread. The catalogs hold raw
confidences; they go through the shipped maps
(``mirflow/extractors/calibration.json``) as in ``accuracy.py``.

Usage::

    python benchmarks/pooled_calibration.py OUT/results-fresh-n20-seed4 OUT/results-fresh-n20-seed6
    python benchmarks/pooled_calibration.py ... --backend raw    # the raw confidences
    python benchmarks/pooled_calibration.py ... --plot docs/accuracy-reliability-pooled.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from accuracy import CALIBRATED, ece_uncertainty, reliability_plot  # noqa: E402

from mirflow.evaluate import calibration_error  # noqa: E402
from mirflow.extractors.calibration import calibrate  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", type=Path, help="results-<corpus> folders written by accuracy.py")
    ap.add_argument("--system", default="mirflow-default", help="system folder inside each results folder")
    ap.add_argument("--backend", default="ensemble", help="backend whose maps calibrate the confidences; "
                    "one without a map (e.g. 'raw') leaves them raw")
    ap.add_argument("--plot", type=Path, help="write the pooled reliability diagram (PNG) here")
    args = ap.parse_args(argv)
    df = pd.concat([pd.read_parquet(r / args.system / "per_track.parquet") for r in args.results],
                   ignore_index=True)
    print(f"{args.system} on {len(df)} tracks of {', '.join(r.name for r in args.results)}")
    corpus = f"{len(args.results)} held-out corpora pooled, {len(df)} tracks"
    tables = {}
    for extractor, conf, hit in CALIBRATED:
        rows = df[df[hit].notna()]
        calibrated = [None if pd.isna(v) else calibrate(extractor, args.backend, float(v)) for v in rows[conf]]
        ece, table = calibration_error(calibrated, rows[hit].tolist())
        family = "tempo" if extractor == "rhythm" else extractor
        tables[f"{args.system.replace('-', ' ')} / {corpus} / {family}"] = table
        u = ece_uncertainty(calibrated, rows[hit].tolist())
        print(f"  {conf}: {len(rows)} tracks, share right {rows[hit].mean():.3f}, ECE {ece:.3f} "
              f"[95 % CI {u['lo']:.3f}, {u['hi']:.3f}]; perfectly calibrated: mean {u['floor']:.3f}, "
              f"95th percentile {u['floor95']:.3f}")
    if args.plot:
        print(f"wrote {reliability_plot(tables, args.plot, corpus=corpus)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
