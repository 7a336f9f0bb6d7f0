"""Benchmark of the rhythm backends on generated tracks (not a test).

Renders ``--n`` tracks with :mod:`mirflow.synth` (tempo 60-200 BPM, 3/4 and
4/4, drums on and off, numpy and FluidSynth renderers, some with noise or an
MP3 round trip), runs every ``rhythm`` backend on each, and prints tempo
Accuracy1/Accuracy2 (4 % tolerance; Acc2 also accepts x2, x1/2, x3, x1/3),
beat F-measure, downbeat F-measure, meter accuracy and seconds per track.

``--corpus TRUTH.jsonl`` scores an already rendered corpus instead (for
example the one ``benchmarks/accuracy.py`` renders; downbeats and meter are
then not scored, its truth has no bars). ``--levels`` also prints, per track,
the evidence the ``ensemble`` backend weighs when it chooses the metrical
level of madmom's tracked beats (:func:`~mirflow.extractors._octave.decide_octave`,
whose model ``benchmarks/fit_octave.py`` fits) and the model's probability of each level.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/rhythm_backends.py --n 40 --seed 3
    OMP_NUM_THREADS=1 python benchmarks/rhythm_backends.py --backends ensemble --levels \\
        --corpus bench-accuracy/corpus-n150-seed0/truth.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from collections import defaultdict
from pathlib import Path

import mir_eval
import numpy as np
import soundfile as sf

from mirflow.audio import decode
from mirflow.evaluate import load_truth
from mirflow.extractors._octave import FACTORS, load_octave_model
from mirflow.extractors.rhythm import RhythmExtractor
from mirflow.frontend import Frontend
from mirflow.synth import (
    find_chorales,
    fluidsynth_available,
    plan_specs,
    render_chorale,
    render_spec,
    truth_from_spec,
)

BACKENDS = ("ensemble", "madmom", "essentia", "librosa")


def tempo_hits(est: float | None, ref: float) -> tuple[bool, bool]:
    """Accuracy1 and Accuracy2 hits with a 4 % tolerance."""
    if est is None:
        return False, False
    acc1 = abs(est - ref) <= 0.04 * ref
    acc2 = any(abs(est - f * ref) <= 0.04 * f * ref for f in (1.0, 2.0, 0.5, 3.0, 1 / 3))
    return acc1, acc2


def f_measure(ref: np.ndarray, est: np.ndarray) -> float:
    ref = mir_eval.beat.trim_beats(np.asarray(ref, dtype=float))
    est = mir_eval.beat.trim_beats(np.asarray(est, dtype=float))
    if ref.size == 0 or est.size == 0:
        return 0.0
    return float(mir_eval.beat.f_measure(ref, est))


def level_evidence(fe: Frontend, ref_bpm: float) -> str:
    """madmom's tracked level against the truth, the 3:2 evidence and the level model's probabilities."""
    sample = RhythmExtractor().octave_sample(fe)
    if sample is None:
        return "levels: no tracked tempo"
    ev = sample.evidence
    p = load_octave_model().probabilities(ev)
    return (f"levels: tracked {sample.tempo_bpm / ref_bpm:.3f}x | 3:2 weakest {ev['three_two_weak']:.2f} "
            f"support {ev['three_two_support']:.2f} activation {ev['three_two_activation']:.2f} | "
            + " ".join(f"p(x{f:.3g}) {q:.2f}" for f, q in zip(FACTORS, p, strict=True)))


class _CorpusTruth:
    """A rendered corpus's truth record, shaped like ``truth_from_spec`` output (no bars)."""

    def __init__(self, record, duration_s: float) -> None:
        self.beats = record.beats if record.beats is not None else np.array([])
        self.beat_in_bar = np.full(self.beats.size, -1)
        self.meter = None
        self.tempo_bpm = record.tempo
        self.duration_s = duration_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--degrade", type=float, default=0.2)
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--chorales", type=int, default=0, help="also score this many Bach chorales (music21)")
    ap.add_argument("--cache", default="/tmp/mirflow_rhythm_bench")
    ap.add_argument("--corpus", help="score this rendered corpus (truth.jsonl) instead of generating tracks")
    ap.add_argument("--levels", action="store_true",
                    help="print the ensemble's metrical-level evidence for every track")
    args = ap.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    for noisy in ("numba", "matplotlib", "mirflow.synth"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    backends = args.backends.split(",")
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)

    renderers = ["numpy", "fluidsynth"] if fluidsynth_available() else ["numpy"]
    specs = []
    for i, r in enumerate(renderers):
        specs += plan_specs(args.n // len(renderers) + (i < args.n % len(renderers)),
                            seed=args.seed + 100 * i, duration_s=args.duration, backend=r,
                            degrade_fraction=args.degrade)
    extractors = {b: RhythmExtractor(backend=b) for b in backends}
    # warm-up: model loading and numba compilation are per process, not per track
    warm = Frontend.from_array(np.random.default_rng(0).standard_normal(44100 * 4).astype(np.float32) * 0.1,
                               44100)
    for ex in extractors.values():
        ex.extract(warm)

    def corpus_items():
        for record in load_truth(args.corpus):
            path = Path(record.path)
            if not path.is_absolute():
                path = Path(args.corpus).parent / path
            audio = decode(path)  # mirflow's decoder: the corpus holds mp3, ogg and flac too
            y, sr = audio.samples, audio.sample_rate_hz
            yield ("chorale" if "chorale" in path.name else "synth"), path.name, y, sr, \
                _CorpusTruth(record, len(y) / sr)

    def items():
        if args.corpus:
            yield from corpus_items()
            return
        for spec in specs:
            # keyed by the spec itself: the generator's recipes may change between runs
            digest = hashlib.sha1(json.dumps(spec.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
            path = cache / f"{digest}.npy"
            if path.exists():
                y = np.load(path)
            else:
                y = render_spec(spec)
                np.save(path, y)
            truth = truth_from_spec(spec, path=str(path), channels=1 if y.ndim == 1 else y.shape[1])
            label = (f"{spec.tempo_bpm:6.1f} {spec.meter}/4 drums={int(spec.drums)} {spec.comping:8s} "
                     f"{spec.backend[:5]} snr={spec.noise_snr_db} mp3={spec.mp3_kbps}")
            yield "synth", label, y, spec.sample_rate_hz, truth
        rng = np.random.default_rng(args.seed)
        for j, origin in enumerate(find_chorales(args.chorales, seed=args.seed) if args.chorales else []):
            tempo = round(float(rng.uniform(60.0, 100.0)), 1)
            path = cache / f"chorale_{args.seed}_{j}_{tempo}.wav"
            truth = render_chorale(path, origin=origin, tempo_bpm=tempo, backend=renderers[j % len(renderers)],
                                   max_duration_s=args.duration, seed=j)
            y, sr = sf.read(path, dtype="float32")
            yield "chorale", f"{tempo:6.1f} {truth.meter if hasattr(truth, 'meter') else ''} {origin}", y, sr, truth

    scores: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for group, label, y, sr, truth in items():
        ref_beats = np.asarray(truth.beats)
        ref_pos = np.asarray(truth.beat_in_bar)
        ref_down = ref_beats[ref_pos == 1]
        ref_meter = truth.meter
        line = [label]
        notes: dict[str, tuple[str, ...]] = {}
        frontends: dict[str, Frontend] = {}
        for b, ex in extractors.items():
            fe = frontends[b] = Frontend.from_array(y, sr)
            t0 = time.perf_counter()
            out = ex.extract(fe)
            dt = time.perf_counter() - t0
            notes[b] = out.notes
            cols = out.columns
            est_beats = np.asarray(out.tables["beats"].get("time_s", []), dtype=float)
            pos = out.tables["beats"].get("beat_in_bar", [])
            est_down = np.array([t for t, p in zip(est_beats, pos, strict=True) if p == 1])
            a1, a2 = tempo_hits(cols["tempo_bpm"], truth.tempo_bpm)
            s = scores[(group, b)]
            s["acc1"].append(a1)
            s["acc2"].append(a2)
            s["beat_f"].append(f_measure(ref_beats, est_beats))
            if ref_meter is not None:  # a corpus's truth has no bars
                s["down_f"].append(f_measure(ref_down, est_down) if est_down.size else 0.0)
                s["meter"].append(cols["meter"] == ref_meter)
            s["seconds"].append(dt / max(truth.duration_s, 1e-9) * 20.0)
            tb = cols["tempo_bpm"]
            line.append(f"{b[:4]}={tb:6.1f}" if tb else f"{b[:4]}=  None")
            if not a1:
                line[-1] += "*"
        if args.levels:
            # the ensemble's frontend, where it exists, already holds the RNN's activations
            line.append(level_evidence(frontends.get("ensemble") or Frontend.from_array(y, sr), truth.tempo_bpm))
            if "ensemble" in notes:  # what the ensemble decided, octave evidence included
                line.append(f"| {'; '.join(notes['ensemble'])}")
        print(" ".join(line), flush=True)

    for group in ("synth", "chorale"):
        if (group, backends[0]) not in scores:
            continue
        n = len(scores[(group, backends[0])]["acc1"])
        source = args.corpus or f"seed {args.seed}"
        print(f"\n{group}: {n} tracks ({source}); seconds per 20 s of audio")
        print(f"{'backend':10s} {'Acc1':>6s} {'Acc2':>6s} {'beatF':>6s} {'downF':>6s} {'meter':>6s} {'s/track':>8s}")
        for b in backends:
            s = scores[(group, b)]
            print(f"{b:10s} {np.mean(s['acc1']):6.3f} {np.mean(s['acc2']):6.3f} {np.mean(s['beat_f']):6.3f} "
                  f"{np.mean(s['down_f']) if s['down_f'] else np.nan:6.3f} "
                  f"{np.mean(s['meter']) if s['meter'] else np.nan:6.3f} {np.mean(s['seconds']):8.3f}")


if __name__ == "__main__":
    main()
