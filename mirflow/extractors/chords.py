"""Time-stamped major/minor chords in Harte syntax, with per-track summaries.

Backends:

* ``ensemble`` (default): madmom's CNN chord evidence and the librosa
  template evidence below, combined per frame (weighted geometric mean of
  the two 25-way distributions, ``ensemble_weight`` on madmom) and decoded
  with the same sticky Viterbi. Licences of both.
* ``madmom``: Korzeniowski & Widmer's chord models, decoded with
  their linear-chain CRF at 10 frames/s. ``madmom_model='cnn'`` (default)
  uses the fully convolutional feature extractor (``CNNChordFeatureProcessor``
  + ``CRFChordRecognitionProcessor``); ``'deepchroma'`` the deep-chroma
  network (``DeepChromaProcessor`` + ``DeepChromaChordRecognitionProcessor``).
  Both start from the 8192-point STFT the key extractor also uses, computed
  once per track (:func:`mirflow.extractors._tonal_features.madmom_log_filtered`).
  Code BSD, models CC BY-NC-SA 4.0.
* ``essentia``: HPCP frames (4096/2048 at 44.1 kHz) and ``ChordsDetection``
  (best triad over a sliding ``essentia_window_s`` window). AGPL-3.0.
  ``ChordsDetectionBeats`` needs beat times, which this extractor does not
  compute, so the frame-wise detector is used.
* ``librosa`` (permissive): CQT chroma (shared with the key extractor's
  librosa backend), cosine similarity with 24 triad templates plus a
  no-chord state, decoded with ``librosa.sequence.viterbi`` over a sticky
  transition matrix (``self_transition``). ISC / BSD.

Every label is Harte syntax with roots spelled by
:data:`mirflow.labels.PITCH_NAMES` (``C:maj``, ``Bb:min``, ``N``) and
parses with ``mir_eval.chord``; adjacent equal labels are merged.

Measured (``benchmarks/tonal_scratch.py``; 90 generated 20-s tracks in three
corpora: FluidSynth clean, FluidSynth with noise/MP3, numpy renderer;
majmin WCSR clean / degraded / numpy): ensemble 0.92 / 0.91 / 0.95,
madmom CNN+CRF 0.89 / 0.89 / 0.94, deep chroma+CRF 0.86 / 0.85 / 0.89,
librosa 0.89 / 0.90 / 0.92, Essentia 0.75 / 0.75 / 0.76. The two best err on different tracks (the CNN
merges short chords, the templates are misled by melody notes), which is
why their product beats either. madmom frames are centred on their
time stamps, so segment boundaries sit half a frame (50 ms) before the
frame times; this alone added 0.015. A prior favouring the diatonic
chords of the track's key added at most 0.004 even with the true key, so
chords are not smoothed with key evidence.

Silence (RMS below ``silence_dbfs``) yields one ``N`` segment spanning the
track: the table then says "analysed, no chord" rather than nothing, and
the summaries are 0 distinct chords, 0 changes per minute and an empty top
list. Empty audio and audio shorter than 1 s yield null summaries and no
rows (not analysed).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import softmax

from mirflow.extractors._tonal_features import (
    LIBROSA_HOP,
    LIBROSA_SR,
    MADMOM_FPS,
    MADMOM_SR,
    librosa_chroma,
    madmom_log_filtered,
    quiet_onnxruntime,
)
from mirflow.extractors.base import Extraction, Extractor, Params, WindowPart, longest_reason, param
from mirflow.extractors.requirements import ESSENTIA, LIBROSA, MADMOM, Requirement
from mirflow.labels import MAJMIN_LABELS, to_harte

log = logging.getLogger(__name__)

#: Shorter audio gets null summaries and no rows: the deep-chroma network needs
#: 1.5 s of context and a chord label for a fraction of a second is noise.
MIN_DURATION_S = 1.0


@dataclass(frozen=True, kw_only=True)
class ChordParams(Params):
    backend: str = param("ensemble", choices=("ensemble", "madmom", "essentia", "librosa"),
                         doc="Chord recogniser; 'ensemble' combines madmom's CNN and the librosa templates")
    madmom_model: str = param("cnn", choices=("cnn", "deepchroma"),
                              doc="madmom backend: CNN chord features or deep chroma, each with its CRF "
                                  "(the ensemble always uses the CNN, the better of the two)")
    essentia_window_s: float = param(1.0, range=(0.1, 10.0),
                                     doc="Essentia ChordsDetection window in seconds (1 s: WCSR 0.75 on "
                                         "generated songs, 0.5 s and Essentia's default 2 s: 0.68, 0.67)")
    ensemble_weight: float = param(0.5, range=(0.0, 1.0),
                                   doc="ensemble backend: exponent of madmom's distribution (the templates get the rest)")
    self_transition: float = param(0.95, range=(0.0, 0.999),
                                   doc="librosa and ensemble backends: probability of staying on a chord from one frame to the next")
    no_chord_threshold: float = param(0.02, range=(0.0, 1.0),
                                      doc="librosa backend: frame chroma energy (relative to the track's loudest frame) below which the frame is N")
    silence_dbfs: float = param(-60.0, range=(-140.0, 0.0),
                                doc="RMS level below which the whole track is one N segment")
    top_n: int = param(5, range=(1, 24), doc="How many most frequent chords chords_top lists")


Segment = tuple[float, float, str, float | None]


# ---------------------------------------------------------------------- madmom
@functools.lru_cache(maxsize=2)
def _madmom_models(model: str) -> tuple[Any, Any]:
    """(feature network, CRF) for ``model``, loaded once per process, single-threaded."""
    from madmom.ml.crf import ConditionalRandomField
    from madmom.ml.nn import NeuralNetwork, NeuralNetworkEnsemble
    from madmom.models import CHORDS_CFCRF, CHORDS_CNN_FEAT, CHORDS_DCCRF, CHROMA_DNN

    from mirflow.models.onnx_memory import without_arena

    quiet_onnxruntime()
    # No onnxruntime memory arena: it would keep the longest track's buffers for the worker's life.
    if model == "cnn":
        nn = without_arena(NeuralNetwork.load(CHORDS_CNN_FEAT[0], intra_op_num_threads=1))
        return nn, ConditionalRandomField.load(CHORDS_CFCRF[0])
    nn = without_arena(NeuralNetworkEnsemble.load(list(CHROMA_DNN), num_threads=1, intra_op_num_threads=1))
    return nn, ConditionalRandomField.load(CHORDS_DCCRF[0])


def madmom_chord_features(frontend: Any, model: str) -> np.ndarray:
    """Frame features (10 frames/s) the madmom CRF decodes: CNN features or deep chroma.

    The stages after the spectrogram of madmom's ``CNNChordFeatureProcessor``
    and ``DeepChromaProcessor``, fed the shared spectrogram; the features
    equal those processors' output exactly (checked to 0.0).
    """
    # Private madmom stages, not the public processors: those compute their own STFT (deep
    # chroma 75 ms instead of 10 ms per 30-s track) and the CNN one loads its network unthreaded.
    from madmom.audio.chroma import _dcp_flatten
    from madmom.audio.signal import FramedSignal, Signal
    from madmom.features.chords import _cnncfp_avg, _cnncfp_pad, _cnncfp_superframes

    nn, _ = _madmom_models(model)
    if model == "cnn":
        spec = madmom_log_filtered(frontend, 60.0, 2600.0)
        return np.asarray(_cnncfp_avg(_cnncfp_superframes(nn(_cnncfp_pad(spec)))))
    # The same 65-2100 Hz spectrogram the key network reads (shared via the frontend).
    spec = madmom_log_filtered(frontend, 65.0, 2100.0)
    frames = FramedSignal(Signal(spec, sample_rate=MADMOM_FPS), frame_size=15, hop_size=1, fps=MADMOM_FPS)
    return np.asarray(nn(_dcp_flatten(frames)))


#: Our class index (MAJMIN_LABELS: C:maj … B:maj, C:min … B:min, N) to madmom's (A-based).
_FROM_MADMOM = np.array([(j + 3) % 12 + (12 if j >= 12 else 0) for j in range(24)] + [24])


def _madmom_unary(feats: np.ndarray, crf: Any) -> np.ndarray:
    """Per-frame softmax of the CRF's unary potentials, ``(25, frames)`` in MAJMIN_LABELS order."""
    return softmax(crf.c + feats @ crf.W, axis=1)[:, _FROM_MADMOM].T


def madmom_chords(frontend: Any, model: str) -> list[Segment]:
    """madmom chord segments; confidence = mean per-frame softmax of the CRF's label potentials."""
    feats = madmom_chord_features(frontend, model)
    _, crf = _madmom_models(model)
    if len(feats) == 0:
        return []
    path = np.asarray(crf.process(feats), dtype=int)
    # The CRF gives only a path; its unary potentials, normalised per frame,
    # say how strongly the features alone support the chosen label.
    posterior = _madmom_unary(feats, crf)
    ours = np.argsort(_FROM_MADMOM)[path]
    conf = posterior[ours, np.arange(len(path))]
    return frames_to_segments([MAJMIN_LABELS[i] for i in ours], conf, 1.0 / MADMOM_FPS,
                              frontend.duration_s, offset_s=-0.5 / MADMOM_FPS)


# -------------------------------------------------------------------- essentia
def essentia_chords(frontend: Any, window_s: float) -> list[Segment]:
    """Essentia HPCP + ``ChordsDetection`` segments; confidence = mean chord strength."""
    from mirflow.extractors._essentia import essentia_standard

    es = essentia_standard()

    audio = np.ascontiguousarray(frontend.signal(MADMOM_SR), dtype=np.float32)
    frame, hop = 4096, 2048  # ChordsDetection assumes frame = 2 x hop
    window = es.Windowing(type="blackmanharris62")
    spectrum = es.Spectrum()
    peaks = es.SpectralPeaks(orderBy="magnitude", magnitudeThreshold=1e-5, minFrequency=40,
                             maxFrequency=5000, maxPeaks=100, sampleRate=MADMOM_SR)
    hpcp = es.HPCP(size=36, referenceFrequency=440.0, harmonics=8, bandPreset=True, minFrequency=40.0,
                   maxFrequency=5000.0, weightType="cosine", nonLinear=False, windowSize=1.0,
                   sampleRate=MADMOM_SR)
    pcps, energy = [], []
    for f in es.FrameGenerator(audio, frameSize=frame, hopSize=hop, startFromZero=True):
        spec = spectrum(window(f))
        pcps.append(hpcp(*peaks(spec)))
        energy.append(float(np.mean(f.astype(np.float64) ** 2)))
    if not pcps:
        return []
    chords, strength = es.ChordsDetection(hopSize=hop, windowSize=window_s, sampleRate=MADMOM_SR)(
        np.asarray(pcps, dtype=np.float32))
    # Essentia never says "no chord": frames far below the track's level are N.
    quiet = np.asarray(energy) < 1e-6 * max(max(energy), 1e-20)
    labels = ["N" if q else to_harte(c) for c, q in zip(chords, quiet, strict=True)]
    return frames_to_segments(labels, np.asarray(strength, dtype=float), hop / MADMOM_SR, frontend.duration_s)


# --------------------------------------------------------------------- librosa
def _templates() -> np.ndarray:
    """(24, 12) unit-norm triad templates in :data:`MAJMIN_LABELS` order (C:maj … B:min)."""
    out = np.zeros((24, 12))
    for q, third in enumerate((4, 3)):
        for root in range(12):
            out[12 * q + root, [root, (root + third) % 12, (root + 7) % 12]] = 1.0
    return out / np.linalg.norm(out, axis=1, keepdims=True)


#: Softmax temperature of the template similarities (0.05 and 0.1 measured alike
#: in the ensemble; 0.1 is better for the librosa backend alone).
TEMPLATE_TEMPERATURE = 0.1


def librosa_observations(frontend: Any, no_chord_threshold: float) -> np.ndarray:
    """Per-frame 25-way chord likelihoods ``(25, frames)`` from CQT chroma and triad templates."""
    chroma = librosa_chroma(frontend, "cqt")
    energy = chroma.sum(axis=0)
    norm = np.linalg.norm(chroma, axis=0)
    unit = chroma / np.where(norm > 0, norm, 1.0)
    sims = _templates() @ unit  # cosine similarity, (24, frames)
    # Observation likelihoods: a sharp softmax of the similarities over the
    # 24 chords; N takes the mass of frames that are too quiet to hold a chord.
    # (Centred before scaling, so the values are bit-identical to those the
    # temperature was tuned with; softmax's own shift is then zero.)
    obs = softmax((sims - sims.max(axis=0, keepdims=True)) / TEMPLATE_TEMPERATURE, axis=0)
    quiet = energy < no_chord_threshold * max(float(energy.max(initial=0.0)), 1e-12)
    p_n = np.where(quiet, 0.99, 0.01)
    return np.vstack([obs * (1.0 - p_n), p_n])


def _viterbi(prob: np.ndarray, self_transition: float) -> np.ndarray:
    import librosa

    return librosa.sequence.viterbi(prob, librosa.sequence.transition_loop(25, self_transition))


def librosa_chords(frontend: Any, self_transition: float, no_chord_threshold: float) -> list[Segment]:
    """Template matching + sticky-HMM Viterbi over 24 triads and N; confidence = mean frame probability."""
    prob = librosa_observations(frontend, no_chord_threshold)
    if prob.shape[1] == 0:
        return []
    path = _viterbi(prob, self_transition)
    conf = prob[path, np.arange(len(path))]
    return frames_to_segments([MAJMIN_LABELS[i] for i in path], conf, LIBROSA_HOP / LIBROSA_SR,
                              frontend.duration_s)


def ensemble_chords(frontend: Any, weight: float, self_transition: float,
                    no_chord_threshold: float) -> list[Segment]:
    """madmom CNN × librosa templates, per frame at 10 frames/s, then sticky Viterbi.

    Confidence = mean combined frame probability of the chosen label.
    """
    feats = madmom_chord_features(frontend, "cnn")
    if len(feats) == 0:
        return []
    _, crf = _madmom_models("cnn")
    p_madmom = _madmom_unary(feats, crf)
    p_templates = librosa_observations(frontend, no_chord_threshold)
    # Sample the template evidence at the madmom frame times (nearest frame).
    times = np.arange(p_madmom.shape[1]) / MADMOM_FPS
    nearest = np.clip(np.round(times * LIBROSA_SR / LIBROSA_HOP).astype(int), 0, p_templates.shape[1] - 1)
    log_p = weight * np.log(p_madmom + 1e-9) + (1.0 - weight) * np.log(p_templates[:, nearest] + 1e-9)
    prob = softmax(log_p, axis=0)
    path = _viterbi(prob, self_transition)
    conf = prob[path, np.arange(len(path))]
    return frames_to_segments([MAJMIN_LABELS[i] for i in path], conf, 1.0 / MADMOM_FPS,
                              frontend.duration_s, offset_s=-0.5 / MADMOM_FPS)


# ---------------------------------------------------------------------- shared
def frames_to_segments(labels: Sequence[str], confidence: np.ndarray | None, frame_s: float,
                       duration_s: float, offset_s: float = 0.0) -> list[Segment]:
    """Merge runs of equal frame labels into ``(start, end, label, mean confidence)`` segments.

    Frame ``i`` covers ``[i * frame_s + offset_s, (i + 1) * frame_s + offset_s)``
    (``offset_s = -frame_s / 2`` for frames centred on their time stamps);
    the first segment starts at 0 and the last is clipped or extended to the
    track duration.

    Examples
    --------
    >>> frames_to_segments(["C:maj", "C:maj", "N"], np.array([0.5, 1.0, 0.2]), 0.5, 1.4)
    [(0.0, 1.0, 'C:maj', 0.75), (1.0, 1.4, 'N', 0.2)]
    """
    segments: list[Segment] = []
    start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            t0 = round(max(start * frame_s + offset_s, 0.0), 6) if start else 0.0
            t1 = round(min(max(i * frame_s + offset_s, 0.0), duration_s), 6)
            if t1 > t0:
                conf = float(np.mean(confidence[start:i])) if confidence is not None else None
                if segments and segments[-1][2] == labels[start]:  # after clipping
                    prev = segments.pop()
                    t0 = prev[0]
                segments.append((t0, t1, labels[start], conf))
            start = i
    # Frame-wise detectors that drop a trailing partial frame (Essentia's
    # FrameGenerator) stop short of the end: the last label holds to the end.
    if segments and segments[-1][1] < duration_s:
        t0, _, label, conf = segments.pop()
        segments.append((t0, round(duration_s, 6), label, conf))
    return segments


def summarize(segments: Sequence[Segment], duration_s: float, top_n: int = 5) -> dict[str, Any]:
    """Distinct chords (excluding N), chord changes per minute and the most frequent chords by duration.

    A change is a boundary between two different chords; entering or leaving
    ``N`` is not a chord change.

    Examples
    --------
    >>> segs = [(0.0, 2.0, "C:maj", None), (2.0, 4.0, "G:maj", None), (4.0, 6.0, "C:maj", None)]
    >>> summarize(segs, 6.0)
    {'chord_count_distinct': 2, 'chord_changes_per_minute': 20.0, 'chords_top': ['C:maj', 'G:maj']}
    """
    chords = [s for s in segments if s[2] != "N"]
    totals: dict[str, float] = {}
    for s in chords:
        totals[s[2]] = totals.get(s[2], 0.0) + (s[1] - s[0])
    changes = sum(1 for a, b in zip(chords, chords[1:], strict=False) if a[2] != b[2])
    minutes = duration_s / 60.0
    top = sorted(totals, key=lambda lab: (-totals[lab], lab))[:top_n]
    return {
        "chord_count_distinct": len(totals),
        "chord_changes_per_minute": float(changes / minutes) if minutes > 0 else 0.0,
        "chords_top": top,
    }


class ChordExtractor(Extractor):
    """Time-stamped major/minor chords (Harte syntax) and per-track chord summaries.

    Examples
    --------
    >>> import numpy as np
    >>> from mirflow.frontend import Frontend
    >>> sr = 22050
    >>> t = np.arange(4 * sr) / sr
    >>> c_major = sum(np.sin(2 * np.pi * f * t) for f in (261.63, 329.63, 392.0))
    >>> out = ChordExtractor(backend="librosa").extract(Frontend.from_array(0.2 * c_major, sr))
    >>> out.tables["chords"]["label"], out.columns["chords_top"]
    (['C:maj'], ['C:maj'])
    """

    name = "chords"
    # 2: the CQT chroma tuned by the STFT chroma's tuning estimate (one estimate instead of two)
    version = "2"
    Params = ChordParams
    columns = ("chord_count_distinct", "chord_changes_per_minute", "chords_top")
    tables = ("chords",)
    requires = ("signal", "stft", "cached")  # stft: the 8192-point STFT whose tuning estimate tunes the CQT chroma
    libraries = ("madmom", "essentia", "librosa")
    licences = ("BSD-3-Clause code + CC BY-NC-SA 4.0 models (madmom and ensemble backends)",
                "AGPL-3.0 (essentia backend)", "ISC (librosa and ensemble backends)")

    def segments(self, frontend: Any) -> list[Segment]:
        """Chord segments of the configured backend (before the silence rule)."""
        p: ChordParams = self.params
        if p.backend == "ensemble":
            return ensemble_chords(frontend, p.ensemble_weight, p.self_transition, p.no_chord_threshold)
        if p.backend == "madmom":
            return madmom_chords(frontend, p.madmom_model)
        if p.backend == "essentia":
            return essentia_chords(frontend, p.essentia_window_s)
        return librosa_chords(frontend, p.self_transition, p.no_chord_threshold)

    def requirements(self) -> tuple[Requirement, ...]:
        return {"ensemble": (MADMOM, LIBROSA), "madmom": (MADMOM,), "essentia": (ESSENTIA,),
                "librosa": (LIBROSA,)}[self.params.backend]

    def extract(self, frontend: Any) -> Extraction:
        p: ChordParams = self.params
        if frontend.is_empty or frontend.duration_s < MIN_DURATION_S:
            return self.empty(f"no chords: audio shorter than {MIN_DURATION_S} s", reason="too short")
        duration = float(frontend.duration_s)
        if frontend.rms_dbfs(LIBROSA_SR) <= p.silence_dbfs:
            segs: list[Segment] = [(0.0, round(duration, 6), "N", None)]
            note = reason = "silent: one N segment"
        else:
            segs = self.segments(frontend) or [(0.0, round(duration, 6), "N", None)]
            note = f"{len(segs)} segments"
            reason = "no chord found: one N segment" if all(s[2] == "N" for s in segs) else None
        table = {
            "start_s": [s[0] for s in segs],
            "end_s": [s[1] for s in segs],
            "label": [s[2] for s in segs],
            "confidence": [s[3] for s in segs],
        }
        return self.result(summarize(segs, duration, p.top_n), {"chords": table}, note, reason=reason)

    # ------------------------------------------------------ long tracks
    def merges_windows(self) -> bool:
        return True

    def merge(self, parts: Sequence[WindowPart]) -> Extraction:
        """Every window's segments clipped to its share, in track time, joined where one chord spans two shares."""
        p: ChordParams = self.params
        segs: list[Segment] = []
        for part in parts:
            table = part.extraction.tables["chords"]
            if not table:  # a window too short for chords: its share is N below
                continue
            for t0, t1, label, conf in zip(table["start_s"], table["end_s"], table["label"], table["confidence"],
                                           strict=True):
                a = max(part.start_s + t0, part.core_start_s)
                b = min(part.start_s + t1, part.core_end_s)
                if b <= a:
                    continue
                if segs and segs[-1][2] == label and abs(segs[-1][1] - a) < 1e-6:
                    prev = segs.pop()
                    # the joined segment's confidence: its pieces' mean weighted by their lengths
                    confs = [(prev[3], prev[1] - prev[0]), (conf, b - a)]
                    merged = None if any(c is None for c, _ in confs) else \
                        sum(c * d for c, d in confs) / sum(d for _, d in confs)
                    segs.append((prev[0], round(b, 6), label, merged))
                else:
                    segs.append((round(a, 6), round(b, 6), label, conf))
        duration = float(parts[-1].core_end_s)
        if segs and abs(segs[-1][1] - duration) < 1e-3:  # the last window's end, to the track's rounding
            segs[-1] = (segs[-1][0], round(duration, 6), segs[-1][2], segs[-1][3])
        covered = sum(s[1] - s[0] for s in segs)
        if covered < duration - 1e-6:  # shares without chords (windows too short) are no-chord time
            filled: list[Segment] = []
            t = 0.0
            for seg in segs:
                if seg[0] > t + 1e-6:
                    filled.append((round(t, 6), seg[0], "N", None))
                filled.append(seg)
                t = seg[1]
            if t < duration - 1e-6:
                filled.append((round(t, 6), round(duration, 6), "N", None))
            segs = filled
        reason = None
        if all(s[2] == "N" for s in segs):
            reason = longest_reason(parts) if any(part.extraction.reasons for part in parts) \
                else "no chord found: one N segment"
        table = {"start_s": [s[0] for s in segs], "end_s": [s[1] for s in segs],
                 "label": [s[2] for s in segs], "confidence": [s[3] for s in segs]}
        return self.result(summarize(segs, duration, p.top_n), {"chords": table},
                           f"{len(segs)} segments from {len(parts)} windows", reason=reason)
