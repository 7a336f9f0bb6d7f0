"""Benchmark of the key and chord extractors on generated audio (not part of the test suite).

Usage: ``python benchmarks/tonal_backends.py [--n 30] [--source numpy|fluidsynth]``
Prints MIREX weighted key score, chord majmin WCSR and seconds per track per backend.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mirflow.labels import PITCH_NAMES, Key  # noqa: E402

MAJOR_PROG = [(0, "maj"), (5, "maj"), (7, "maj"), (0, "maj")]        # I IV V I
MINOR_PROG = [(0, "min"), (5, "min"), (7, "maj"), (0, "min")]        # i iv V i
ALT_MAJOR = [(0, "maj"), (9, "min"), (5, "maj"), (7, "maj")]         # I vi IV V
ALT_MINOR = [(0, "min"), (8, "maj"), (5, "min"), (7, "maj")]         # i VI iv V


def synth_progression(tonic: int, mode: str, *, sr: int = 22050, chord_s: float = 2.0, repeats: int = 2,
                      alt: bool = False, seed: int = 0, noise_db: float | None = None):
    """Additive-synthesis triads with a bass note: (audio, key label, [(start, end, harte)])."""
    rng = np.random.default_rng(seed)
    prog = (ALT_MAJOR if alt else MAJOR_PROG) if mode == "major" else (ALT_MINOR if alt else MINOR_PROG)
    prog = prog * repeats
    n = int(chord_s * sr)
    t = np.arange(n) / sr
    env = np.minimum(1.0, t / 0.02) * np.exp(-t * 0.7)
    out, segs = [], []
    for i, (deg, q) in enumerate(prog):
        root = (tonic + deg) % 12
        third = 3 if q == "min" else 4
        notes = [48 + root, 60 + root, 60 + root + third, 60 + root + 7]
        notes = [m if i == 0 else m for m in notes]
        x = np.zeros(n)
        for m in notes:
            f0 = 440.0 * 2 ** ((m - 69) / 12) * (1 + rng.normal(0, 0.001))
            for h in range(1, 6):
                if f0 * h < sr / 2:
                    x += (0.6 ** (h - 1)) * np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi))
        out.append(x * env)
        segs.append((i * chord_s, (i + 1) * chord_s, f"{PITCH_NAMES[root]}:{q}"))
    y = np.concatenate(out)
    y = 0.3 * y / np.max(np.abs(y))
    if noise_db is not None:
        y = y + rng.normal(0, 1, y.size) * np.sqrt(np.mean(y**2) / 10 ** (noise_db / 10))
    return y.astype(np.float32), Key(tonic, mode).mir_eval, segs


# ----------------------------------------------------------------------------- corpus
def corpus(n: int, source: str, cache: Path, duration_s: float = 20.0, degrade: float = 0.0):
    """[(audio float32, sr, key, [(start, end, label)])] — project generator, or the additive synth above."""
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    if source == "additive":
        for i in range(n):
            tonic, mode = i % 12, ("major", "minor")[(i // 12) % 2]
            y, key, segs = synth_progression(tonic, mode, alt=bool(i % 3 == 1), seed=i)
            out.append((y, 22050, key, segs))
        return out
    from mirflow.synth.midi import arrange
    from mirflow.synth.render import finish, render_arrangement
    from mirflow.synth.spec import plan_specs
    from mirflow.synth.truth import truth_from_spec

    for i, spec in enumerate(plan_specs(n, seed=7, duration_s=duration_s, backend=source,
                                        degrade_fraction=degrade)):
        truth = truth_from_spec(spec, path=cache / f"t{i:03d}.wav")
        # The generator is under development: key the cache on the full spec so a
        # changed recipe never pairs stale audio with new truth.
        digest = hashlib.blake2b(repr(spec).encode(), digest_size=8).hexdigest()
        f = cache / f"{source}_{digest}.npy"
        if f.exists():
            y = np.load(f)
        else:
            sr = spec.sample_rate_hz
            y = render_arrangement(arrange(spec), backend=spec.backend, sample_rate_hz=sr,
                                   lead_in_s=spec.lead_in_s, n_samples=int(round(truth.duration_s * sr)),
                                   seed=spec.seed)
            lead = int(spec.lead_in_s * sr)
            y = finish(y, sample_rate_hz=sr, seed=spec.seed, noise_snr_db=spec.noise_snr_db,
                       mp3_kbps=spec.mp3_kbps, music_region=(lead, y.shape[0]))
            np.save(f, y)
        out.append((y, spec.sample_rate_hz, truth.key, [tuple(c) for c in truth.chords]))
    return out


def wcsr(ref, est) -> float:
    """Chord majmin weighted chord symbol recall of est segments against ref segments."""
    import mir_eval

    ri = np.array([[s[0], s[1]] for s in ref])
    rl = [s[2] for s in ref]
    ei = np.array([[s[0], s[1]] for s in est])
    el = [s[2] for s in est]
    ei, el = mir_eval.util.adjust_intervals(ei, el, ri.min(), ri.max(), mir_eval.chord.NO_CHORD,
                                            mir_eval.chord.NO_CHORD)
    iv, r, e = mir_eval.util.merge_labeled_intervals(ri, rl, ei, el)
    comp = mir_eval.chord.majmin(r, e)
    return float(mir_eval.chord.weighted_accuracy(comp, mir_eval.util.intervals_to_durations(iv)))


KEY_SYSTEMS = {
    "madmom": {"backend": "madmom"},
    "essentia-bgate": {"backend": "essentia", "profile": "bgate"},
    "essentia-edma": {"backend": "essentia", "profile": "edma"},
    "essentia-krumhansl": {"backend": "essentia", "profile": "krumhansl"},
    "librosa-shaath": {"backend": "librosa", "librosa_profile": "shaath"},
    "librosa-krumhansl": {"backend": "librosa", "librosa_profile": "krumhansl"},
    "librosa-shaath-stft": {"backend": "librosa", "chroma": "stft"},
    "ensemble (default)": {"backend": "ensemble"},
}
CHORD_SYSTEMS = {
    "madmom-cnn": {"backend": "madmom"},
    "madmom-deepchroma": {"backend": "madmom", "madmom_model": "deepchroma"},
    "essentia": {"backend": "essentia"},
    "librosa": {"backend": "librosa"},
    "ensemble (default)": {"backend": "ensemble"},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--source", default="fluidsynth", choices=("fluidsynth", "numpy", "additive"))
    ap.add_argument("--degrade", type=float, default=0.0)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--dump", default="", help="write raw probabilities (npz) for ensemble tuning")
    args = ap.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING)
    from mirflow.extractors.chords import ChordExtractor
    from mirflow.extractors.key import KeyExtractor
    from mirflow.frontend import Frontend
    from mirflow.labels import mirex_score

    cache = Path(tempfile.gettempdir()) / "mirflow_tonal_corpus"
    tracks = corpus(args.n, args.source, cache, args.duration, args.degrade)
    # Warm-up: load models and compile numba code outside the timings.
    y0, sr0, _, _ = tracks[0]
    for kw in KEY_SYSTEMS.values():
        KeyExtractor(**kw).extract(Frontend.from_array(y0[: sr0 * 3], sr0))
    for kw in CHORD_SYSTEMS.values():
        ChordExtractor(**kw).extract(Frontend.from_array(y0[: sr0 * 3], sr0))

    key_scores = {k: [] for k in KEY_SYSTEMS}
    key_time = {k: 0.0 for k in KEY_SYSTEMS}
    chord_scores = {k: [] for k in CHORD_SYSTEMS}
    chord_time = {k: 0.0 for k in CHORD_SYSTEMS}
    shared_time = 0.0
    dump: dict[str, list] = {"truth": [], "madmom": [], "essentia": [], "librosa": [], "flatness": []}
    for y, sr, key, segs in tracks:
        y = y if y.ndim == 1 else y.mean(axis=1)
        for name, kw in KEY_SYSTEMS.items():
            fe = Frontend.from_array(y, sr)
            t = time.perf_counter()
            out = KeyExtractor(**kw).extract(fe)
            key_time[name] += time.perf_counter() - t
            key_scores[name].append(mirex_score(key, out.columns["key"]))
        for name, kw in CHORD_SYSTEMS.items():
            fe = Frontend.from_array(y, sr)
            t = time.perf_counter()
            out = ChordExtractor(**kw).extract(fe)
            chord_time[name] += time.perf_counter() - t
            est = list(zip(out.tables["chords"]["start_s"], out.tables["chords"]["end_s"],
                           out.tables["chords"]["label"], strict=True))
            chord_scores[name].append(wcsr(segs, est))
        # Default key + default chords on one frontend: what the pipeline runs.
        fe = Frontend.from_array(y, sr)
        t = time.perf_counter()
        KeyExtractor().extract(fe)
        ChordExtractor().extract(fe)
        shared_time += time.perf_counter() - t
        if args.dump:
            ke = KeyExtractor()
            fe = Frontend.from_array(y, sr)
            probs = ke.probabilities(fe)
            dump["truth"].append(key)
            for b in ("madmom", "essentia", "librosa"):
                dump[b].append(probs[b])
            dump["flatness"].append(ke.tonal_evidence(fe)[1])
    n = len(tracks)
    print(f"\n{n} tracks, source={args.source}, degrade={args.degrade}, duration={args.duration}s")
    print(f"{'key system':24s} {'weighted':>9s} {'correct':>8s} {'s/track':>8s}")
    for name in KEY_SYSTEMS:
        s = np.array(key_scores[name])
        print(f"{name:24s} {s.mean():9.3f} {np.mean(s == 1.0):8.3f} {key_time[name] / n:8.3f}")
    print(f"{'chord system':24s} {'majmin':>9s} {'min':>8s} {'s/track':>8s}")
    for name in CHORD_SYSTEMS:
        s = np.array(chord_scores[name])
        print(f"{name:24s} {s.mean():9.3f} {s.min():8.3f} {chord_time[name] / n:8.3f}")
    print(f"default key + default chords on one frontend (shared inputs): {shared_time / n:.3f} s/track")
    if args.dump:
        np.savez(args.dump, truth=np.array(dump["truth"]), madmom=np.array(dump["madmom"]),
                 essentia=np.array(dump["essentia"]), librosa=np.array(dump["librosa"]),
                 flatness=np.array(dump["flatness"]))


if __name__ == "__main__":
    main()


# ----------------------------------------------------------------------------- ensemble tuning
def collect(tracks, path: str) -> None:
    """Raw per-track key evidence for offline tuning of calibration and ensemble weights."""
    import essentia.standard as es

    from mirflow.extractors.key import (
        ESSENTIA_PROFILES,
        MADMOM_SR,
        librosa_chroma,
        madmom_key_probabilities,
    )
    from mirflow.frontend import Frontend
    from mirflow.labels import parse_key

    profiles = [p for p in ESSENTIA_PROFILES if p not in ("weichai",)]
    rows: dict[str, list] = {"truth": [], "madmom": [], "cqt_sum": [], "cqt_norm": [], "stft_sum": [],
                             **{f"ess_{p}": [] for p in profiles}}
    for y, sr, key, _ in tracks:
        y = y if y.ndim == 1 else y.mean(axis=1)
        fe = Frontend.from_array(y, sr)
        rows["truth"].append(parse_key(key).index)
        rows["madmom"].append(madmom_key_probabilities(fe))
        cqt = librosa_chroma(fe, "cqt")
        rows["cqt_sum"].append(cqt.sum(axis=1))
        rows["cqt_norm"].append((cqt / np.maximum(cqt.max(axis=0, keepdims=True), 1e-12)).mean(axis=1))
        rows["stft_sum"].append(librosa_chroma(fe, "stft").sum(axis=1))
        audio = np.ascontiguousarray(fe.signal(MADMOM_SR), dtype=np.float32)
        for p in profiles:
            tonic, scale, strength = es.KeyExtractor(profileType=p, sampleRate=float(MADMOM_SR))(audio)
            rows[f"ess_{p}"].append((parse_key(f"{tonic} {scale}").index, float(strength)))
    np.savez(path, **{k: np.array(v) for k, v in rows.items()})
