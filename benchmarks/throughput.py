"""Throughput of `mirflow analyze` on generated audio, for 1 and 2 workers.

Prints tracks/s and audio-seconds per wall-second, and the same figures for
the libraries run directly in one process on the same files (the anchor), so
that the Dask overhead is visible. Nothing is downloaded: the audio comes
from mirflow.synth.

    python benchmarks/throughput.py --tracks 24 --seconds 30 --pipeline default
"""

from __future__ import annotations

import os

# The in-process anchor must run on one core like each worker does: limit
# BLAS/OpenMP/FFT threads before numpy and friends are imported.
from mirflow._env import THREAD_ENV  # noqa: E402  (imports no numerical library)

for _key, _value in THREAD_ENV.items():
    os.environ.setdefault(_key, _value)

import argparse  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from mirflow.pipeline import load_pipeline  # noqa: E402
from mirflow.pipeline.runner import ClusterOptions, analyze  # noqa: E402


def _corpus(root: Path, n: int, seconds: float) -> list[Path]:
    from mirflow.synth import make_demo_catalog

    make_demo_catalog(root, n=n, seed=1, duration_s=(seconds, seconds))
    return sorted(p for p in root.rglob("*") if p.suffix in {".wav", ".flac", ".ogg", ".mp3"})


def _in_process(files: list[Path], pipeline: str) -> tuple[float, float]:
    """The same extractors called directly, one process, no Dask: the anchor."""
    from mirflow.frontend import Frontend

    cfg = load_pipeline(pipeline)
    t0 = time.perf_counter()
    audio = 0.0
    for f in files:
        fe = Frontend.from_file(f)
        audio += fe.duration_s
        for ex in cfg.extractors:
            ex.extract(fe)
    return time.perf_counter() - t0, audio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--pipeline", default="default")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    tmp = Path(tempfile.mkdtemp(prefix="mirflow-bench-"))
    try:
        files = _corpus(tmp / "audio", args.tracks, args.seconds)
        # Warm-up: import and compile (numba, model loading) outside the timings.
        _in_process(files[:1], args.pipeline)
        wall, audio = _in_process(files, args.pipeline)
        rows = [("in-process, 1 core (anchor)", len(files) / wall, audio / wall, wall, wall)]
        for w in args.workers:
            cat = tmp / f"catalog-{w}"
            summary, _ = analyze([tmp / "audio"], cat, pipeline=args.pipeline,
                                 cluster=ClusterOptions(workers=w, dashboard=False, worker_lifetime=None))
            assert summary.failed == 0, summary.failures
            rows.append((f"mirflow analyze, {w} worker(s)", summary.analyzed / summary.analyze_seconds,
                         summary.audio_seconds / summary.analyze_seconds, summary.analyze_seconds,
                         summary.wall_seconds))
        print(f"pipeline={args.pipeline} tracks={len(files)} seconds/track={args.seconds:.0f}")
        print("tracks/s and audio s/s over the analysis stage; 'total s' adds cluster start-up and hashing")
        print(f"{'system':<32} {'tracks/s':>9} {'audio s/s':>10} {'analysis s':>10} {'total s':>8}")
        for name, tps, aps, wall, total in rows:
            print(f"{name:<32} {tps:>9.2f} {aps:>10.1f} {wall:>10.1f} {total:>8.1f}")
        base = rows[1][2]
        for name, _, aps, _, _ in rows[2:]:
            print(f"speed-up of {name} over 1 worker: {aps / base:.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
