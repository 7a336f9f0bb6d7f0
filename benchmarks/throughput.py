"""Throughput of mirflow against Essentia's MusicExtractor and the libraries' usual recipes.

One run, the same generated files for every system (wav, flac, ogg and mp3
from :mod:`mirflow.synth`; nothing is downloaded), each system on one core
in this process, warmed up first (imports, model loading, numba compilation
are outside the timings). Files are visited in turn and every system
analyses each file before the next one, so that load from other processes
on a shared machine spreads over all systems alike. Systems:

* ``mirflow default`` / ``mirflow fast``: decode once + every extractor of
  the pipeline, as one worker does it (no Dask, no Parquet).
* ``essentia MusicExtractor``: ``essentia.standard.MusicExtractor`` with
  mean/stdev statistics (the AcousticBrainz extractor), on the path.
* ``librosa recipe``: ``librosa.load`` (22.05 kHz mono), ``beat_track``,
  ``chroma_cqt`` and a Krumhansl key-profile correlation: the recipe of
  librosa's documentation.
* ``madmom recipe``: madmom's own processors on the path (built once):
  ``RNNDownBeatProcessor`` + ``DBNDownBeatTrackingProcessor`` (3/4 and 4/4),
  ``CNNKeyRecognitionProcessor``, ``CNNChordFeatureProcessor`` +
  ``CRFChordRecognitionProcessor``.

Then ``mirflow analyze`` (Dask, Parquet writes, hashing) with 1 and 2
workers on the same files, for the scaling figure. Prints a Markdown table;
``--write docs/performance.md`` writes it with the machine and the date.

    python benchmarks/throughput.py --tracks 16 --seconds 30 --write docs/performance.md
"""

from __future__ import annotations

import os

# Every system must run on one core like each worker does: limit
# BLAS/OpenMP/FFT threads before numpy and friends are imported.
from mirflow._env import THREAD_ENV  # noqa: E402  (imports no numerical library)

for _key, _value in THREAD_ENV.items():
    os.environ.setdefault(_key, _value)

import argparse  # noqa: E402
import datetime  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from machine import cpu_name  # noqa: E402

FORMATS = (".wav", ".flac", ".ogg", ".mp3")
ANCHOR = "essentia MusicExtractor"


@dataclass
class Timing:
    """Seconds spent by one system, per file."""

    name: str
    outputs: str
    seconds: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- corpus
def make_corpus(root: Path, n: int, seconds: float, seed: int = 1) -> list[Path]:
    """``n`` generated tracks of ``seconds`` in a mix of wav, flac, ogg and mp3 (mirflow.synth)."""
    from mirflow.synth import make_demo_catalog

    make_demo_catalog(root, n=n, seed=seed, duration_s=(seconds, seconds))
    return sorted(p for p in root.rglob("*") if p.suffix in FORMATS)


def audio_seconds(path: Path) -> float:
    import soundfile as sf

    return float(sf.info(os.fsencode(path)).duration)


# ----------------------------------------------------------------------------- systems
#: Seconds per pipeline step, summed over the timed files: ``{pipeline: {step: seconds}}``.
STEP_SECONDS: dict[str, dict[str, float]] = {}


def mirflow_system(pipeline: str) -> Callable[[Path], None]:
    """Decode once and run every extractor of ``pipeline``: one worker's work without Dask.

    The time of each step (decode, each extractor in order) is added to
    :data:`STEP_SECONDS`; an extractor's time includes the shared inputs it
    is the first to ask the frontend for.
    """
    from mirflow.frontend import Frontend
    from mirflow.pipeline import load_pipeline
    from mirflow.pipeline.task import warm_up

    cfg = load_pipeline(pipeline)
    warm_up(cfg)
    limits = cfg.decode_limits
    steps = STEP_SECONDS.setdefault(pipeline, {})
    labels = [f"{ex.name} ({getattr(ex.params, 'backend', None) or getattr(ex.params, 'model', '')})".replace(" ()", "")
              for ex in cfg.extractors]

    def run(path: Path) -> None:
        t0 = time.perf_counter()
        fe = Frontend.from_file(path, limits=limits)
        t1 = time.perf_counter()
        steps["decode"] = steps.get("decode", 0.0) + t1 - t0
        for label, ex in zip(labels, cfg.extractors, strict=True):
            ex.extract(fe)
            t0, t1 = t1, time.perf_counter()
            steps[label] = steps.get(label, 0.0) + t1 - t0

    return run


def music_extractor_system() -> Callable[[Path], None]:
    """Essentia's MusicExtractor (the AcousticBrainz extractor), mean and stdev statistics."""
    import essentia

    essentia.log.infoActive = False
    essentia.log.warningActive = False
    import essentia.standard as es

    stats = ["mean", "stdev"]
    extractor = es.MusicExtractor(lowlevelStats=stats, rhythmStats=stats, tonalStats=stats)

    def run(path: Path) -> None:
        extractor(str(path))

    return run


#: Krumhansl & Kessler (1982) probe-tone profiles, the ones librosa users usually correlate with.
_KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def librosa_system() -> Callable[[Path], None]:
    """librosa's documented recipe: load at 22.05 kHz, beat_track, chroma_cqt + key profiles."""
    import librosa

    profiles = np.array([np.roll(p, k) for p in (_KK_MAJOR, _KK_MINOR) for k in range(12)])

    def run(path: Path) -> None:
        y, sr = librosa.load(path, sr=22050, mono=True)
        librosa.beat.beat_track(y=y, sr=sr)
        chroma = librosa.feature.chroma_cqt(y=y, sr=sr).mean(axis=1)
        int(np.argmax([np.corrcoef(chroma, p)[0, 1] for p in profiles]))

    return run


def madmom_system() -> Callable[[Path], None]:
    """madmom's processors as its documentation chains them, built once, one thread each."""
    from madmom.audio.signal import Signal
    from madmom.features.chords import CNNChordFeatureProcessor, CRFChordRecognitionProcessor
    from madmom.features.downbeats import DBNDownBeatTrackingProcessor, RNNDownBeatProcessor
    from madmom.features.key import CNNKeyRecognitionProcessor

    from mirflow.extractors._tonal_features import quiet_onnxruntime

    quiet_onnxruntime()
    downbeat_rnn = RNNDownBeatProcessor(num_threads=1)
    downbeat_dbn = DBNDownBeatTrackingProcessor(beats_per_bar=[3, 4], fps=100)
    key = CNNKeyRecognitionProcessor()
    chord_features, chord_crf = CNNChordFeatureProcessor(), CRFChordRecognitionProcessor()

    def run(path: Path) -> None:
        sig = Signal(str(path), num_channels=1, sample_rate=44100)
        downbeat_dbn(downbeat_rnn(sig))
        key(sig)
        chord_crf(chord_features(sig))

    return run


SYSTEMS: dict[str, tuple[str, Callable[[], Callable[[Path], None]]]] = {
    "mirflow default": ("tempo + alt, beats, downbeats, meter, key, chords, EBU R128 loudness, 24 descriptors, "
                        "musicnn embedding + 50 tags, descriptor embedding, fingerprint",
                        lambda: mirflow_system("default")),
    "mirflow fast": ("tempo + alt, beats, meter, key, EBU R128 loudness, descriptor embedding",
                     lambda: mirflow_system("fast")),
    ANCHOR: ("BPM, beats, key (3 profiles), chords, loudness, ~100 low-level descriptors (statistics)",
             music_extractor_system),
    "librosa recipe": ("tempo, beats, key", librosa_system),
    "madmom recipe": ("beats, downbeats, key, chords", madmom_system),
}


# ----------------------------------------------------------------------------- runs
def time_systems(files: list[Path], names: list[str]) -> list[Timing]:
    """Each system on each file in turn (file-major, so load spikes hit every system)."""
    runners, timings = {}, {}
    for name in names:
        outputs, build = SYSTEMS[name]
        runners[name] = build()
        runners[name](files[0])  # warm-up outside the timings: first-call caches, lazy imports
        timings[name] = Timing(name, outputs)
    for steps in STEP_SECONDS.values():
        steps.clear()  # the warm-up's steps are not part of the figures (the runners hold these dicts)
    for path in files:
        for name in names:
            t0 = time.perf_counter()
            try:
                runners[name](path)
            except Exception as exc:  # noqa: BLE001 - a failing anchor is reported, not fatal
                timings[name].failures.append(f"{path.name}: {type(exc).__name__}: {exc}")
                continue
            timings[name].seconds.append(time.perf_counter() - t0)
    return [timings[n] for n in names]


def time_dask(audio_dir: Path, root: Path, pipeline: str, workers: list[int]) -> list[tuple[int, object]]:
    """``mirflow analyze`` with each worker count: (workers, RunSummary)."""
    from mirflow.pipeline.runner import ClusterOptions, analyze

    out = []
    for w in workers:
        summary, _ = analyze([audio_dir], root / f"catalog-{pipeline}-{w}", pipeline=pipeline,
                             cluster=ClusterOptions(workers=w, dashboard=False, worker_lifetime=None))
        if summary.failed:
            raise RuntimeError(f"{summary.failed} tracks failed with {w} workers: {summary.failures}")
        out.append((w, summary))
    return out


# ----------------------------------------------------------------------------- report
def render(timings: list[Timing], dask_rows: list[tuple[int, object]], *, n_files: int, mean_audio_s: float,
           formats: dict[str, int], command: str, pipeline: str) -> str:
    anchor = next((t for t in timings if t.name == ANCHOR and t.seconds), None)
    anchor_s = float(np.mean(anchor.seconds)) if anchor else None
    lines = [
        f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {cpu_name()} "
        f"({os.cpu_count()} cores, shared with other jobs while it ran, so absolute figures are noisy; the "
        "systems ran file by file in turn so that the load hit all of them alike), Python "
        f"{platform.python_version()}.",
        "",
        f"Corpus: n = {n_files} generated tracks of {mean_audio_s:.0f} s (mirflow.synth, numpy renderer; "
        + ", ".join(f"{k} {v}" for k, v in sorted(formats.items())) + "), decoded by each system itself. "
        "Every system ran on one core (BLAS/OpenMP/ONNX threads 1) after a warm-up on the first file.",
        "",
        f"Command: `{command}`",
        "",
        "| system | outputs | s per track (mean ± sd) | × real time | speed vs MusicExtractor |",
        "|---|---|---:|---:|---:|",
    ]
    for t in timings:
        if not t.seconds:
            lines.append(f"| {t.name} | {t.outputs} | failed | | |")
            continue
        mean, sd = float(np.mean(t.seconds)), float(np.std(t.seconds))
        ratio = f"{anchor_s / mean:.2f}×" if anchor_s else "n/a"
        lines.append(f"| {t.name} | {t.outputs} | {mean:.3f} ± {sd:.3f} | {mean_audio_s / mean:.0f} | {ratio} |")
    for pipeline_name, steps in STEP_SECONDS.items():
        total = sum(steps.values())
        if total <= 0:
            continue
        lines += ["", f"Where `mirflow {pipeline_name}` spends its time (seconds per track, share of the total; "
                      "a step includes the shared inputs it is first to compute):", "",
                  "| step | s per track | share |", "|---|---:|---:|"]
        lines += [f"| {step} | {sec / n_files:.3f} | {100 * sec / total:.0f} % |" for step, sec in steps.items()]
    failures = [f for t in timings for f in t.failures]
    if failures:
        lines += ["", "Failures: " + "; ".join(failures)]
    if dask_rows:
        lines += [
            "",
            f"`mirflow analyze --pipeline {pipeline}` on the same {n_files} files (Dask LocalCluster, one thread "
            "per worker, hashing and Parquet writes included; the analysis stage is timed from the first task "
            "submitted to the last result, after every worker warmed up):",
            "",
            "| workers | analysis s | tracks/s | × real time | speed-up over 1 worker | total s (with start-up) |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        base = None
        for w, s in dask_rows:
            rate = s.audio_seconds / s.analyze_seconds
            base = base or rate
            lines.append(f"| {w} | {s.analyze_seconds:.1f} | {s.analyzed / s.analyze_seconds:.2f} | {rate:.1f} | "
                         f"{rate / base:.2f}× | {s.wall_seconds:.1f} |")
    return "\n".join(lines) + "\n"


def write_doc(path: Path, table: str) -> None:
    head = """# Performance

How fast mirflow analyzes a track compared with Essentia's `MusicExtractor` (the extractor behind
AcousticBrainz) and with the usual recipes of librosa and madmom, on the same files in one run.
Regenerate with `benchmarks/throughput.py` (below); memory on long files: `benchmarks/memory.py`
(figures in the section after the table).

"""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    marker = "<!-- throughput -->"
    block = f"{marker}\n{table}{marker}\n"
    if marker in text:
        before, _, rest = text.partition(marker)
        _, _, after = rest.partition(marker)
        text = before + block + after.lstrip("\n")
    else:
        text = head + block + ("\n" + text if text else "")
    path.write_text(text, encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--tracks", type=int, default=16, help="generated tracks (all four formats in turn)")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each track")
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS), metavar="SYSTEM",
                    help=f"systems to time, of {list(SYSTEMS)}")
    ap.add_argument("--workers", type=int, nargs="*", default=[1, 2],
                    help="worker counts for `mirflow analyze` (none: skip the Dask runs)")
    ap.add_argument("--pipeline", default="default", help="pipeline of the Dask runs")
    ap.add_argument("--audio", type=Path, default=None,
                    help="use these files instead of generating a corpus (a folder)")
    ap.add_argument("--write", type=Path, default=None, help="write the table into this Markdown file")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # distributed configures its loggers when imported: import it first, then quiet it
    import distributed  # noqa: F401

    for noisy in ("distributed", "bokeh", "tornado", "numba", "mirflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    tmp = Path(tempfile.mkdtemp(prefix="mirflow-bench-"))
    try:
        if args.audio:
            files = sorted(p for p in args.audio.rglob("*") if p.suffix in FORMATS)
            audio_dir = args.audio
        else:
            files = make_corpus(tmp / "corpus", args.tracks, args.seconds)
            audio_dir = tmp / "corpus" / "audio"
        durations = [audio_seconds(p) for p in files]
        formats: dict[str, int] = {}
        for p in files:
            formats[p.suffix.lstrip(".")] = formats.get(p.suffix.lstrip("."), 0) + 1
        timings = time_systems(files, args.systems)
        dask_rows = time_dask(audio_dir, tmp, args.pipeline, args.workers) if args.workers else []
        command = "python benchmarks/throughput.py " + " ".join(
            [f"--tracks {args.tracks}", f"--seconds {args.seconds:g}"]
            + ([f"--systems {' '.join(repr(s) for s in args.systems)}"] if args.systems != list(SYSTEMS) else [])
            + ([f"--workers {' '.join(map(str, args.workers))}"] if args.workers != [1, 2] else []))
        table = render(timings, dask_rows, n_files=len(files), mean_audio_s=float(np.mean(durations)),
                       formats=formats, command=command, pipeline=args.pipeline)
        print(table)
        if args.write:
            write_doc(args.write, table)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
