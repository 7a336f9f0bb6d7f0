"""Peak worker memory (RSS) of one track's analysis for long inputs: 5, 30 and 60 minutes by default.

Every measurement runs in a fresh process, as a Dask worker would: warm-up
first (imports, models, compiled code), then the kernel's peak-RSS counter
(``VmHWM``) is reset through ``/proc/self/clear_refs`` and one generated
stereo FLAC is analysed by the worker task's own code
(:func:`mirflow.pipeline.task.extract_track`: probe, hash check, decode,
extractors; window by window for tracks longer than twice the pipeline's
``decode.window_s``). Reported: the warmed-up RSS, the peak,
and the peak above the warm-up (what the track cost). Linux only.

The generated track (:func:`long_track`) is a DJ-mix-like sequence of
one-minute sections (a new key every section, drums throughout) whose tempo
changes half-way (120 -> 96 BPM by default), with the exact beat times
stored beside it; when the pipeline tracks beats, the beat F-measure
(mir_eval, ±70 ms) over the whole track is reported too. With
``--per-extractor`` each extractor is also measured alone after the decode
(one process each: slow for long inputs).

    python benchmarks/memory.py --minutes 5 30 60 --pipeline default
    python benchmarks/memory.py --minutes 60 --pipeline fast --keep /tmp/long-audio
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GIB = 1024.0**3
#: Length of one section of the generated long track.
SECTION_S = 60.0


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def long_track(path: str | os.PathLike[str], minutes: float, *, tempo_bpm: tuple[float, float] = (120.0, 96.0),
               seed: int = 3) -> np.ndarray:
    """Write a generated stereo FLAC of ``minutes`` whose tempo changes half-way; return its beat times.

    One-minute sections (mirflow.synth's numpy renderer, drums and bass,
    4/4, each section in the next key around the circle of fifths) are
    rendered and appended one at a time, so writing an hour holds one
    section in memory. Each section is a whole number of bars at its
    tempo, so beats continue seamlessly across sections: the first half at
    ``tempo_bpm[0]``, the rest at ``tempo_bpm[1]``. The beat times are also
    saved beside the audio as ``<path>.beats.npy``.
    """
    import soundfile as sf

    from mirflow.synth import TrackSpec, render_spec

    path = Path(path)
    total_s = minutes * 60.0
    beats: list[np.ndarray] = []
    t = 0.0
    section = 0
    with sf.SoundFile(path, "w", samplerate=44100, channels=2, format="FLAC", subtype="PCM_16") as fh:
        while t < total_s - 1.0:
            tempo = tempo_bpm[0] if t < total_s / 2.0 else tempo_bpm[1]
            bar_s = 4 * 60.0 / tempo
            n_bars = max(2, int(round(min(SECTION_S, total_s - t) / bar_s)))
            spec = TrackSpec(tempo_bpm=tempo, meter=4, n_bars=n_bars, drums=True, backend="numpy",
                             seed=seed + section, tonic=(7 * section) % 12, lead_in_s=0.0, tail_s=0.0,
                             comping="beats")
            y = render_spec(spec)
            # exactly n_bars of music: the next section's first beat follows the last bar's end
            n = int(round(n_bars * bar_s * spec.sample_rate_hz))
            y = np.resize(y, n) if y.size < n else y[:n]
            left, right = 0.95 * y, 0.85 * y
            fh.write(np.stack([left, right], axis=1))
            beats.append(t + np.arange(n_bars * 4) * 60.0 / tempo)
            t += n / spec.sample_rate_hz
            section += 1
    times = np.concatenate(beats)
    np.save(str(path) + ".beats.npy", times)
    return times


def _child(path: str, pipeline: str, only: str | None) -> None:
    """Measure in this (fresh) process and print one JSON line."""
    from mirflow._env import THREAD_ENV

    os.environ.update(THREAD_ENV)
    import warnings

    warnings.filterwarnings("ignore")
    import dataclasses

    from mirflow.audio.hashing import content_hash
    from mirflow.pipeline import load_pipeline
    from mirflow.pipeline.task import extract_track, warm_up

    cfg = load_pipeline(pipeline)
    if only is not None:
        cfg = dataclasses.replace(cfg, extractors=tuple(ex for ex in cfg.extractors if ex.name == only))
    warm_up(cfg)
    track_id = content_hash(path)  # as the run's hashing stage does, before the track's task
    with open("/proc/self/clear_refs", "w") as fh:  # reset VmHWM to the current RSS
        fh.write("5")
    base = _status_kib("VmRSS")
    started = time.perf_counter()
    # what a worker's task runs: probe, hash check, decode (whole or window by window), extractors
    _, tables, duration_s = extract_track(path, track_id, cfg)
    seconds = time.perf_counter() - started
    beats = np.asarray(tables["beats"]["time_s"], dtype=np.float64) if "beats" in tables else None
    rec = {"base_kib": base, "peak_kib": _status_kib("VmHWM"), "seconds": seconds,
           "audio_s": duration_s, "windowed": cfg.windowed(duration_s)}
    truth_path = Path(path + ".beats.npy")
    if beats is not None and truth_path.exists():
        import mir_eval

        rec["beat_f"] = float(mir_eval.beat.f_measure(np.load(truth_path), beats))
    print(json.dumps(rec))


def measure(path: Path, pipeline: str, only: str | None = None) -> dict:
    """Run :func:`_child` in a fresh interpreter; its JSON record."""
    from mirflow._env import THREAD_ENV

    # The worker environment from the start, as Dask's nanny sets it: glibc reads
    # MALLOC_TRIM_THRESHOLD_ only when the process starts (it also fixes the mmap
    # threshold, so large arrays go back to the system when freed).
    out = subprocess.run([sys.executable, __file__, "--child", str(path), pipeline, only or "-"],
                         capture_output=True, text=True, env={**os.environ, **THREAD_ENV})
    if out.returncode != 0:
        raise RuntimeError(f"measuring {path.name} ({pipeline}, {only or 'whole'}) failed "
                           f"(exit {out.returncode}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--minutes", type=float, nargs="+", default=[5.0, 30.0, 60.0], help="track lengths")
    ap.add_argument("--pipeline", default="default", help="pipeline name or YAML file")
    ap.add_argument("--per-extractor", action="store_true",
                    help="also measure each extractor alone after the decode (a process each)")
    ap.add_argument("--keep", type=Path, default=None,
                    help="write (and reuse) the generated tracks here instead of a temporary folder")
    ap.add_argument("--child", nargs=3, metavar=("PATH", "PIPELINE", "ONLY"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        path, pipeline, only = args.child
        _child(path, pipeline, None if only == "-" else only)
        return

    from mirflow.pipeline import load_pipeline

    names = list(dict.fromkeys(ex.name for ex in load_pipeline(args.pipeline).extractors))
    with tempfile.TemporaryDirectory(prefix="mirflow-memory-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        print(f"pipeline {args.pipeline}: peak RSS of one worker process (GiB), generated 44.1-kHz stereo FLAC, "
              f"tempo 120 -> 96 BPM half-way")
        print(f"{'input':>8} {'what':28} {'analysis':>9} {'warm RSS':>9} {'peak':>6} {'+track':>7} {'s':>7} "
              f"{'beat F':>7}")
        for minutes in args.minutes:
            path = root / f"long-{minutes:g}min.flac"
            if not path.exists() or not Path(str(path) + ".beats.npy").exists():
                long_track(path, minutes)
            for only in [*(names if args.per_extractor else []), None]:
                rec = measure(path, args.pipeline, only)
                label = "whole pipeline" if only is None else f"decode + {only}"
                beat_f = f"{rec['beat_f']:.3f}" if "beat_f" in rec else "-"
                print(f"{minutes:>6g} m {label:28} {'windows' if rec['windowed'] else 'whole':>9} "
                      f"{rec['base_kib'] * 1024 / GIB:>9.2f} "
                      f"{rec['peak_kib'] * 1024 / GIB:>6.2f} {(rec['peak_kib'] - rec['base_kib']) * 1024 / GIB:>+7.2f} "
                      f"{rec['seconds']:>7.1f} {beat_f:>7}", flush=True)


if __name__ == "__main__":
    main()
