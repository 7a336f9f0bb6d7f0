"""Peak memory of one track's analysis, per extractor and for the whole pipeline (not a test).

Every measurement runs in a fresh process, as a Dask worker would: warm-up
first (imports, models, compiled code), then the kernel's peak-RSS counter
(``VmHWM``) is reset through ``/proc/self/clear_refs`` and one generated
stereo track is decoded and analysed; the peak above the warmed-up resident
size is what that track cost. Prints one row per extractor (run alone after
the decode) and one for the whole pipeline, per track length. Linux only.

    python benchmarks/memory.py --seconds 30 300 --pipeline default
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

GIB = 1024.0**3


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _child(path: str, pipeline: str, only: str | None) -> None:
    """Measure in this (fresh) process and print one JSON line."""
    from mirflow._env import THREAD_ENV

    os.environ.update(THREAD_ENV)
    from mirflow.frontend import Frontend
    from mirflow.pipeline import load_pipeline
    from mirflow.pipeline.task import warm_up

    cfg = load_pipeline(pipeline)
    extractors = [ex for ex in cfg.extractors if only is None or ex.name == only]
    warm_up(cfg)
    with open("/proc/self/clear_refs", "w") as fh:  # reset VmHWM to the current RSS
        fh.write("5")
    base = _status_kib("VmRSS")
    frontend = Frontend.from_file(path)
    for ex in extractors:
        ex.extract(frontend)
    print(json.dumps({"base_kib": base, "peak_kib": _status_kib("VmHWM")}))


def _track(root: Path, seconds: float) -> Path:
    import soundfile as sf

    from mirflow.synth import TrackSpec, render_spec

    spec = TrackSpec(tempo_bpm=120.0, meter=4, n_bars=max(2, round(seconds / 2.0)), drums=True,
                     backend="numpy", seed=3, lead_in_s=0.0, tail_s=0.0)
    path = root / f"track-{seconds:g}s.flac"
    sf.write(path, render_spec(spec), spec.sample_rate_hz)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, nargs="+", default=[30.0, 300.0])
    ap.add_argument("--pipeline", default="default")
    ap.add_argument("--child", nargs=3, metavar=("PATH", "PIPELINE", "ONLY"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        path, pipeline, only = args.child
        _child(path, pipeline, None if only == "-" else only)
        return

    from mirflow.pipeline import load_pipeline

    names = list(dict.fromkeys(ex.name for ex in load_pipeline(args.pipeline).extractors))
    with tempfile.TemporaryDirectory() as tmp:
        for seconds in args.seconds:
            path = _track(Path(tmp), seconds)
            print(f"\n{seconds:g}-s stereo track, pipeline {args.pipeline}: peak RSS above the warmed-up "
                  f"worker (GiB)")
            for only in [*names, "-"]:
                out = subprocess.run([sys.executable, __file__, "--child", str(path), args.pipeline, only],
                                     capture_output=True, text=True, check=True)
                rec = json.loads(out.stdout.strip().splitlines()[-1])
                extra = (rec["peak_kib"] - rec["base_kib"]) * 1024 / GIB
                label = "whole pipeline" if only == "-" else f"decode + {only}"
                print(f"  {label:28s} +{extra:5.2f}  (warmed-up RSS {rec['base_kib'] * 1024 / GIB:.2f}, "
                      f"peak {rec['peak_kib'] * 1024 / GIB:.2f})", flush=True)


if __name__ == "__main__":
    main()
