"""The ensemble's tempo level: the evidence per track and a fitted model that weighs it.

madmom's downbeat tracker follows the right pulse at the wrong metrical level
often enough to matter: the eighth notes of a slow chorale or an Alberti bass
(twice the notated beat), every other beat of a fast reel (half of it), two
eighths of a jig in 6/8 (1.5 times the dotted quarter). The ensemble
measures, at the tracked level, what tells those apart
(:func:`octave_evidence`: beat and downbeat activation on alternate beats,
onsets and harmonic change half-way between beats, one strong tracked beat in
three (:func:`three_two_evidence`), madmom's own tempo histogram at the other
levels, the tempo itself as a prior) and a multinomial logistic regression
turns the evidence, and each cue times the tempo (a cue may mean one level at
140 BPM and another at 80, :data:`TEMPO_INTERACTIONS`), into the
probabilities of the four levels (half, two thirds, kept, double).

The 3:2 level was a hand-set rule before (rhythm version 7 and earlier:
thresholds on the weakest of three tracked beats and the onsets between them,
measured on slow arpeggiated choir tracks); it never fired on a jig, whose
tracked beats between the dotted quarters are not weak, so the jigs of the
held-out corpora were reported 1.5 times too fast (fresh held-out corpus of
stop 19: tempo Accuracy1 0.30 on jigs, essentia 0.55). It is now one level
of the fitted model, with more tuning jigs to fit it on.

Why a fitted model and not hand-set thresholds: the rules it replaces
(thresholds on each cue, measured on generated tracks) were right on 96 of the
118 tuning tracks whose tracked level was an octave of the notated beat, one
more than keeping every tracked level; their confidence ranked right above
wrong poorly (ROC AUC 0.73), so a monotone calibration map could not repair
it. The weights live in ``octave_model.json`` beside this module as plain
numbers (no pickle), with the corpus and cross-validation figures of the fit;
``benchmarks/fit_octave.py`` refits them on the tuning corpus of
``benchmarks/accuracy.py`` only (never on a held-out corpus), choosing the
regularisation and the switch threshold by cross-validation within it.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit, softmax

from mirflow.extractors._rhythm_backends import MADMOM_FPS
from mirflow.extractors._rhythm_features import FEATURE_FPS, tempo_salience

#: The fitted weights, shipped with the package.
OCTAVE_MODEL_FILE = Path(__file__).with_name("octave_model.json")
#: The levels, relative to the tracked tempo, in the order of the model's classes: half, two
#: thirds (the tracker ran 3:2 too fast: two eighths of a 6/8 tune, three arpeggio notes per two
#: beats), kept, double.
FACTORS: tuple[float, ...] = (0.5, 2.0 / 3.0, 1.0, 2.0)
#: The evidence the model weighs, in the order of its weights (see :func:`octave_evidence`).
FEATURES: tuple[str, ...] = (
    "log2_tempo", "log2_tempo_squared", "alternation", "beat3_downbeat", "offbeat_activation",
    "low_offbeat_ratio", "onset_ratio", "quarter_onset_ratio", "harmonic_alternation",
    "harmonic_midpoint_ratio", "harmonic_change", "madmom_half_vote", "madmom_double_vote", "triple_meter",
    "three_two_weak", "three_two_support", "three_two_activation", "madmom_two_thirds_vote",
    "two_thirds_salience",
)
#: The cues whose weight the model lets change with the tempo: each enters the model a second time
#: multiplied by ``log2_tempo`` (:func:`model_terms`). With one weight per cue the tempo prior
#: outweighed the cues on slow pieces tracked at twice the beat (a piano piece at 70 BPM tracked at
#: 140, where most tuning tracks at 140 are right): onsets half-way between tracked beats and
#: madmom's vote for half the tempo read differently at 140 BPM than at 80. Chosen on the tuning
#: corpus alone (``benchmarks/fit_octave.py``, 10 x 5-fold, the 167 tuning tracks at a level of the
#: model): out-of-fold log loss 0.419 -> 0.333, right levels 139.9 -> 146.7, tempo Accuracy1 on all 180
#: tuning tracks 0.783 -> 0.817, against one weight per cue (rhythm 9). In one comparison on those
#: tracks (one weight per cue: 0.410), products with only ``onset_ratio`` and ``madmom_half_vote``
#: (0.376) or with nine cues (0.343), or a cubic tempo term (0.405), did less than every cue (0.325).
TEMPO_INTERACTIONS: tuple[str, ...] = FEATURES[2:]
#: The model's terms, in the order of its weights: the cues, then each of :data:`TEMPO_INTERACTIONS`
#: times ``log2_tempo``.
MODEL_TERMS: tuple[str, ...] = FEATURES + tuple(f"log2_tempo*{f}" for f in TEMPO_INTERACTIONS)
#: Ratios are clipped here: beyond it a cue says nothing more, and one odd track must not swing a weight.
RATIO_CLIP = 2.0
#: The hand-set 3:2 rule of rhythm version 7 and earlier, kept as a floor under the model's 3:2 level
#: (:func:`three_two_floor`) for a pattern the tuning corpus lacks. Measured (the level evidence that
#: ``benchmarks/rhythm_backends.py --levels`` prints) on a 150-track generated corpus (seed 0) and a
#: 112-track one (seed 1):
#: madmom's downbeat tracker ran 3:2 too fast on 3 slow arpeggiated pieces without drums (a choir patch
#: with soft attacks), where one tracked beat in every three had 0.07-0.15 of the beat activation of the
#: beat the 2:3 grid keeps; on the 259 other tracks the weakest of the three positions had at least 0.30,
#: hence 0.21, between the two on a log scale. The half-way point between the two dropped beats carried
#: 1.0-1.2 of their onset strength on those errors; at least ``THREE_TWO_SUPPORT`` is asked for, so that a
#: weak tracked beat alone (a drop-out, a drifting tracker) does not move the grid. No track of the
#: current tuning corpus has this pattern (its jigs, followed 3:2 too fast, show no weak tracked beat),
#: so the fitted model gives it 0.11-0.15 where the rule gives 0.95 (``tests/test_rhythm.py``).
THREE_TWO_WEAK = 0.21
THREE_TWO_SUPPORT = 0.60


@dataclass(frozen=True)
class OctaveDecision:
    """The metrical level chosen for the tempo and the evidence for the other one.

    Attributes
    ----------
    factor : float
        One of :data:`FACTORS`: 1.0 (keep the tracked level), 0.5 (halve), 2.0
        (double) or 2/3 (track again at two thirds of the tempo).
    p_chosen : float
        Probability (0-1) that the chosen level is the beat level.
    alt_factor : float
        The other level relative to the chosen tempo: 0.5 or 2.0, or 1.5 (the
        tracked level) when the chosen one is the 2:3 grid.
    p_alt : float
        Probability of that other level.
    reason : str
        Short explanation for the logs.
    """

    factor: float
    p_chosen: float
    alt_factor: float
    p_alt: float
    reason: str


def peak_near(env: np.ndarray, fps: float, times: np.ndarray, width_s: float = 0.03) -> np.ndarray:
    """The maximum of ``env`` within ``width_s`` of each time (0 where the window leaves the envelope)."""
    idx = np.round(np.asarray(times) * fps).astype(int)
    k = int(round(width_s * fps))
    return np.array([env[max(0, i - k): i + k + 1].max() if 0 <= i - k < env.size else 0.0
                     for i in idx])


def floored_ratio(mid_peaks: np.ndarray, beat_peaks: np.ndarray, floor: float) -> float:
    """Mean onset peak half-way between beats over that on the beats, both above the envelope's floor.

    Noise and an MP3's smeared transients lift every frame of a spectral-flux
    envelope by about the same amount, which pulled the plain ratio of peaks
    towards 1 on degraded chorales (0.61-0.80, read as "beats between the
    tracked beats") while their floor-subtracted ratio stayed at 0.25-0.41,
    as on clean chorales (measured on the 30 chorales of the tuning corpus,
    ``find_chorales(30, seed=0)``, a third with 10-25 dB noise, a third
    through 64 kb/s MP3). On clean generated tracks the floor is near 0 and
    the ratio is unchanged.

    Examples
    --------
    >>> import numpy as np
    >>> round(floored_ratio(np.array([0.6, 0.6]), np.array([1.0, 1.0]), 0.5), 2)
    0.2
    """
    mid = max(float(np.mean(mid_peaks)) - floor, 0.0)
    on = max(float(np.mean(beat_peaks)) - floor, 0.0)
    return mid / (on + 1e-9)


def madmom_support(tempi: np.ndarray | None, bpm: float) -> float:
    """Strength madmom's tempo histogram gives ``bpm`` (within 4 %); 0 without an estimate."""
    if tempi is None or not len(tempi):
        return 0.0
    tempi = np.atleast_2d(np.asarray(tempi, dtype=np.float64))
    near = np.abs(tempi[:, 0] / bpm - 1.0) <= 0.04
    return float(tempi[near, 1].max()) if near.any() else 0.0


def _alternate_ratio(values: np.ndarray) -> float:
    """Weaker over stronger of the means of alternate entries (1 = even, 0 = every other one absent)."""
    if values.size < 4:
        return 1.0
    halves = np.sort([values[0::2].mean(), values[1::2].mean()])
    return float(halves[0] / (halves[1] + 1e-9))


def _chroma_changes(chroma: np.ndarray, fps: float, times: np.ndarray) -> np.ndarray:
    """Harmonic change at each inner boundary of ``times``: half the L1 distance of the
    normalised mean chroma of the segments either side (0 = same harmony, 1 = disjoint)."""
    if chroma.ndim != 2 or chroma.shape[1] == 0 or times.size < 3:
        return np.zeros(0)
    idx = np.clip(np.round(times * fps).astype(int), 0, chroma.shape[1] - 1)
    segments = np.array([chroma[:, a:max(b, a + 1)].mean(axis=1) for a, b in zip(idx[:-1], idx[1:], strict=True)])
    segments /= np.maximum(segments.sum(axis=1, keepdims=True), 1e-12)
    return 0.5 * np.abs(np.diff(segments, axis=0)).sum(axis=1)


@dataclass(frozen=True)
class ThreeTwoEvidence:
    """How the tracked beats would look if they ran 3:2 too fast (three tracked beats per two real ones).

    Attributes
    ----------
    phase : int
        Index (0-2) of the first tracked beat the slower grid keeps: the one
        whose tracked beats carry the most beat activation against the other two.
    weakest : float
        Beat activation of the weaker of the two other positions relative to the kept one.
    support : float
        Onset strength half-way between the two dropped beats (where the slower
        grid puts a beat) relative to on them, the larger of the bass and
        broadband envelopes'.
    activation : float
        Beat activation at that half-way point relative to on the dropped beats.
    """

    phase: int
    weakest: float
    support: float
    activation: float


def three_two_evidence(act: np.ndarray, beats: np.ndarray, *, low_onsets: np.ndarray | None = None,
                       broad_onsets: np.ndarray | None = None, onset_fps: float = FEATURE_FPS) -> ThreeTwoEvidence:
    """Measure whether the tracked beats run 3:2 too fast, and where the slower grid would lie.

    Half/double errors are not the only metrical confusion. madmom's downbeat
    tracker can settle on two thirds of the beat period: two eighths of a jig
    in 6/8 (tracked as 3/4 at 1.5 times the dotted quarter), or three notes of
    a slow arpeggio per two beats. Such a grid shows itself in the tracker's
    own evidence: of every three tracked beats, one is where the real beats
    are and the other two fall between them; half-way between those two, where
    a real beat is, there are onsets and beat activation. The slower grid
    keeps every third tracked beat and puts one beat half-way between the two
    it drops; these are the places measured. Which third to keep is the
    tracked position with the most beat activation: good enough for the
    evidence, not for the beats (on the tuning corpus's 3:2 tracks it was the
    right one on 5 of 16, see ``RhythmExtractor._retracked``).

    Parameters
    ----------
    act, beats, low_onsets, broad_onsets, onset_fps
        As for :func:`octave_evidence`.

    Returns
    -------
    ThreeTwoEvidence
        Neutral values (phase 0, ratios 1) with fewer than nine tracked beats.

    Examples
    --------
    >>> import numpy as np
    >>> beats = np.arange(0, 12, 0.4)                     # tracked at 150 BPM
    >>> act = np.zeros((1300, 2))
    >>> real = np.arange(0, 12, 0.6)                      # the real beats: 100 BPM
    >>> act[np.round(real * 100).astype(int), 0] = 0.8
    >>> act[np.round(np.arange(0.4, 12, 1.2) * 100).astype(int), 0] = 0.5   # one weak tracked beat
    >>> ev = three_two_evidence(act, beats, broad_onsets=act[:, 0], onset_fps=100.0)
    >>> ev.phase, round(ev.weakest, 2), ev.support > 1.0
    (0, 0.0, True)
    """
    beats = np.asarray(beats, dtype=np.float64)
    n = beats.size
    if n < 9:
        return ThreeTwoEvidence(0, 1.0, 1.0, 1.0)
    total = act.sum(axis=1)
    on = peak_near(total, MADMOM_FPS, beats)
    position = [on[k::3].mean() for k in range(3)]
    phase = int(np.argmax(position))
    kept, drop1, drop2 = (np.arange(phase + k, n, 3) for k in range(3))
    dropped = np.concatenate([drop1, drop2])
    between = np.arange(phase + 1, n - 1, 3)  # half-way from each first dropped beat to the second
    mids = (beats[between] + beats[between + 1]) / 2.0
    weakest = float(min(on[drop1].mean(), on[drop2].mean()) / (on[kept].mean() + 1e-9))
    envelopes = [e for e in (low_onsets, broad_onsets) if e is not None and e.size]
    # without onset envelopes the half-way beats count as supported
    support = max((float(peak_near(e, onset_fps, mids, 0.035).mean()
                         / (peak_near(e, onset_fps, beats[dropped], 0.035).mean() + 1e-9)) for e in envelopes),
                  default=1.0)
    activation = float(peak_near(total, MADMOM_FPS, mids).mean() / (on[dropped].mean() + 1e-9))
    return ThreeTwoEvidence(phase, weakest, support, activation)


def octave_evidence(act: np.ndarray, beats: np.ndarray, positions: np.ndarray | None, meter: int | None,
                    tempo: float, *, low_onsets: np.ndarray | None = None, broad_onsets: np.ndarray | None = None,
                    chroma: np.ndarray | None = None, onset_fps: float = FEATURE_FPS,
                    madmom_tempi: np.ndarray | None = None) -> dict[str, float]:
    """What tells the tracked level from half, two thirds and twice it, measured at the tracked beats.

    Subdivisions are normally weaker than beats and beats are not: a tracker
    on the eighth notes of a slow piece shows every other tracked beat with
    less beat activation (``alternation``), no secondary downbeat on its
    "beat 3" (``beat3_downbeat``) and harmony changing on every other tracked
    beat (``harmonic_alternation``); a tracker on every other beat of a fast
    piece shows activation, bass onsets, onsets and harmonic change half-way
    between tracked beats nearly as strong as on them (``offbeat_activation``,
    ``low_offbeat_ratio``, ``onset_ratio``, ``harmonic_midpoint_ratio``).
    madmom's comb-filter tempo histogram of the same activation votes at the
    half and double tempo (log ratio of its strength there to that at the
    tracked tempo), and the tempo itself (log2 of BPM/120, and its square) lets
    the model learn which tempi notated beats take. A tracker 3:2 too fast shows
    one strong tracked beat in every three with onsets and beat activation
    half-way between the other two (:func:`three_two_evidence`), onsets that
    repeat every one and a half tracked beats more than every beat
    (``two_thirds_salience``), and madmom's histogram may vote for two thirds
    of the tracked tempo.

    Parameters
    ----------
    act : ndarray
        madmom's ``(frames, 2)`` beat and downbeat activations at 100 fps.
    beats : ndarray
        Tracked beat times in seconds.
    positions : ndarray or None
        Tracked position of each beat in its bar (1 = downbeat).
    meter : int or None
        Tracked beats per bar.
    tempo : float
        Tempo of the tracked level in BPM.
    low_onsets, broad_onsets : ndarray, optional
        Onset strength below ~200 Hz and over all bands, at ``onset_fps``.
    chroma : ndarray, optional
        ``(12, frames)`` chroma at ``onset_fps``.
    onset_fps : float
        Frame rate of the onset envelopes and chroma.
    madmom_tempi : ndarray, optional
        madmom's ranked ``(bpm, strength)`` tempi.

    Returns
    -------
    dict
        One float per name of :data:`FEATURES`, in that order.

    Examples
    --------
    >>> import numpy as np
    >>> act = np.zeros((1000, 2)); act[::50, 0] = 0.9   # clear beats every 0.5 s
    >>> ev = octave_evidence(act, np.arange(0.5, 9.5, 0.5), None, 4, 120.0)
    >>> ev["log2_tempo"], ev["alternation"] > 0.99
    (0.0, True)
    """
    beats = np.asarray(beats, dtype=np.float64)
    total = act.sum(axis=1)
    on = peak_near(total, MADMOM_FPS, beats)
    beat3 = 1.0  # no evidence against a real beat 3 unless measured
    if positions is not None and meter == 4 and np.any(positions == 1) and np.any(positions == 3):
        down = peak_near(act[:, 1], MADMOM_FPS, beats)
        beat3 = float(down[positions == 3].mean() / (down[positions == 1].mean() + 1e-9))
    mids = (beats[:-1] + beats[1:]) / 2.0
    offbeat = float(peak_near(total, MADMOM_FPS, mids).mean() / (on.mean() + 1e-9)) if mids.size else 0.0
    low_ratio = onset_ratio = quarter_ratio = 0.0
    if low_onsets is not None and mids.size and low_onsets.size:
        low_on = float(np.median(peak_near(low_onsets, onset_fps, beats, 0.035)))
        low_ratio = float(np.median(peak_near(low_onsets, onset_fps, mids, 0.035))) / (low_on + 1e-9)
    if broad_onsets is not None and mids.size and broad_onsets.size:
        floor = float(np.median(broad_onsets))
        on_beats = peak_near(broad_onsets, onset_fps, beats, 0.035)
        onset_ratio = floored_ratio(peak_near(broad_onsets, onset_fps, mids, 0.035), on_beats, floor)
        # the sixteenths of the tracked level: a tracker on eighths has little there
        span = np.diff(beats)
        quarters = np.concatenate([beats[:-1] + span / 4.0, beats[:-1] + 3.0 * span / 4.0])
        quarter_ratio = floored_ratio(peak_near(broad_onsets, onset_fps, quarters, 0.025), on_beats, floor)
    harmonic_alternation, harmonic_mid, harmonic_change = 1.0, 1.0, 0.0
    if chroma is not None and beats.size >= 5:
        at_beats = _chroma_changes(chroma, onset_fps, beats)
        harmonic_alternation = _alternate_ratio(at_beats)
        harmonic_change = float(at_beats.mean())
        # boundaries alternate mid, beat, mid, ... (the first inner one is the first midpoint)
        halves = _chroma_changes(chroma, onset_fps, np.sort(np.concatenate([beats, mids])))
        harmonic_mid = float(halves[0::2].mean() / (halves[1::2].mean() + 1e-9))
    kept = madmom_support(madmom_tempi, tempo)
    three_two = three_two_evidence(act, beats, low_onsets=low_onsets, broad_onsets=broad_onsets,
                                   onset_fps=onset_fps)
    two_thirds_salience = 0.0
    if broad_onsets is not None and broad_onsets.size:
        # onsets that repeat every 1.5 tracked beats (a dotted quarter under a tracked quarter)
        salience = tempo_salience(broad_onsets, onset_fps, np.array([tempo * 2.0 / 3.0, tempo]))
        two_thirds_salience = float(salience[0] - salience[1])
    log_tempo = float(np.log2(tempo / 120.0))
    values = {
        "log2_tempo": log_tempo,
        "log2_tempo_squared": log_tempo * log_tempo,
        "alternation": _alternate_ratio(on),
        "beat3_downbeat": beat3,
        "offbeat_activation": offbeat,
        "low_offbeat_ratio": low_ratio,
        "onset_ratio": onset_ratio,
        "quarter_onset_ratio": quarter_ratio,
        "harmonic_alternation": harmonic_alternation,
        "harmonic_midpoint_ratio": harmonic_mid,
        "harmonic_change": harmonic_change,
        "madmom_half_vote": float(np.log((madmom_support(madmom_tempi, tempo / 2.0) + 0.05) / (kept + 0.05))),
        "madmom_double_vote": float(np.log((madmom_support(madmom_tempi, tempo * 2.0) + 0.05) / (kept + 0.05))),
        "triple_meter": float(meter == 3),
        "three_two_weak": three_two.weakest,
        "three_two_support": three_two.support,
        "three_two_activation": three_two.activation,
        "madmom_two_thirds_vote": float(np.log((madmom_support(madmom_tempi, tempo * 2.0 / 3.0) + 0.05)
                                               / (kept + 0.05))),
        "two_thirds_salience": two_thirds_salience,
    }
    ratios = ("beat3_downbeat", "offbeat_activation", "low_offbeat_ratio", "onset_ratio", "quarter_onset_ratio",
              "harmonic_midpoint_ratio", "three_two_weak", "three_two_support", "three_two_activation")
    return {k: float(min(v, RATIO_CLIP)) if k in ratios else float(v) for k, v in values.items()}


def model_terms(evidence: dict[str, float]) -> np.ndarray:
    """The values of :data:`MODEL_TERMS` for one track's :func:`octave_evidence`.

    Examples
    --------
    >>> ev = dict.fromkeys(FEATURES, 0.5) | {"log2_tempo": -1.0}
    >>> terms = model_terms(ev)
    >>> terms.size == len(MODEL_TERMS), float(terms[MODEL_TERMS.index("log2_tempo*onset_ratio")])
    (True, -0.5)
    """
    tempo = evidence["log2_tempo"]
    return np.array([evidence[f] for f in FEATURES] + [tempo * evidence[f] for f in TEMPO_INTERACTIONS],
                    dtype=np.float64)


@dataclass(frozen=True)
class OctaveModel:
    """A multinomial logistic regression over standardised :data:`MODEL_TERMS` (see ``octave_model.json``)."""

    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray       # (len(FACTORS), len(features))
    intercept: np.ndarray  # (len(FACTORS),)
    switch_p: float
    provenance: dict[str, Any]

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "octave model") -> OctaveModel:
        """The model of an ``octave_model.json`` content (:func:`fit_octave_model`'s result).

        Raises
        ------
        ValueError
            If its terms are not :data:`MODEL_TERMS` or its shapes do not match.
        """
        model = cls(features=tuple(data["features"]), mean=np.asarray(data["mean"], dtype=np.float64),
                    scale=np.asarray(data["scale"], dtype=np.float64),
                    coef=np.asarray(data["coef"], dtype=np.float64),
                    intercept=np.asarray(data["intercept"], dtype=np.float64),
                    switch_p=float(data["switch_p"]), provenance=data.get("provenance", {}))
        k = len(MODEL_TERMS)
        if (model.features != MODEL_TERMS or tuple(data["factors"]) != FACTORS or model.coef.shape != (len(FACTORS), k)
                or model.mean.shape != (k,) or model.scale.shape != (k,)
                or model.intercept.shape != (len(FACTORS),)):
            raise ValueError(f"{where}: not an octave model for terms {MODEL_TERMS} and levels {FACTORS} "
                             "(refit it with benchmarks/fit_octave.py)")
        return model

    def probabilities(self, evidence: dict[str, float]) -> np.ndarray:
        """Probabilities of :data:`FACTORS` given the evidence."""
        x = (model_terms(evidence) - self.mean) / self.scale
        return softmax(self.coef @ x + self.intercept)


def three_two_floor(p: np.ndarray, evidence: dict[str, float]) -> np.ndarray:
    """The model's level probabilities with the 3:2 level raised to the hand-set rule's, where that is higher.

    The rule (:data:`THREE_TWO_WEAK`, :data:`THREE_TWO_SUPPORT`) is a smooth step on the weakest
    of three tracked beats and the onsets half-way between the two dropped ones; the other levels
    keep their proportions.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([0.0, 0.1, 0.9, 0.0])
    >>> three_two_floor(p, {"three_two_weak": 0.1, "three_two_support": 1.0}).round(2).tolist()
    [0.0, 0.97, 0.03, 0.0]
    >>> three_two_floor(p, {"three_two_weak": 0.8, "three_two_support": 1.0}).tolist() == p.tolist()
    True
    """
    rule = float(expit((THREE_TWO_WEAK - evidence["three_two_weak"]) / 0.03)
                 * expit((evidence["three_two_support"] - THREE_TWO_SUPPORT) / 0.08))
    i = FACTORS.index(2.0 / 3.0)
    if rule <= p[i]:
        return p
    out = p * (1.0 - rule) / max(1.0 - p[i], 1e-12)
    out[i] = rule
    return out


@functools.lru_cache(maxsize=4)
def load_octave_model(path: str = str(OCTAVE_MODEL_FILE)) -> OctaveModel:
    """The fitted octave model (cached per process).

    Raises
    ------
    FileNotFoundError
        If the file is missing (a broken installation: it ships with the package).
    ValueError
        If its terms are not :data:`MODEL_TERMS` or its shapes do not match.
    """
    return OctaveModel.from_dict(json.loads(Path(path).read_text(encoding="utf-8")), where=path)


def choose_level(p: np.ndarray, tempo: float, min_bpm: float, max_bpm: float,
                 switch_p: float) -> tuple[int, int, np.ndarray]:
    """The chosen and the alternative level (indices of :data:`FACTORS`) from the model's probabilities.

    Levels outside ``[min_bpm, max_bpm]`` get probability 0 (the rest renormalised);
    the tracked level is kept unless another is at least ``switch_p`` likely; the
    alternative is the chosen level's more probable octave among the levels (half
    or double), or the tracked level where the chosen one is two thirds of it.

    Returns
    -------
    (int, int, ndarray)
        Chosen index, alternative index, the renormalised probabilities.

    Examples
    --------
    >>> import numpy as np
    >>> choose_level(np.array([0.5, 0.05, 0.4, 0.05]), 120.0, 55.0, 215.0, 0.6)[:2]
    (2, 0)
    """
    allowed = np.array([min_bpm <= tempo * f <= max_bpm or f == 1.0 for f in FACTORS])
    p = np.where(allowed, p, 0.0)
    p = p / p.sum()
    kept = FACTORS.index(1.0)
    best = int(np.argmax(p))
    chosen = best if best == kept or p[best] >= switch_p else kept
    octaves = [i for i, f in enumerate(FACTORS) if np.isclose(f / FACTORS[chosen], 0.5) or
               np.isclose(f / FACTORS[chosen], 2.0)]
    return chosen, max(octaves, key=lambda i: p[i]) if octaves else kept, p


def decide_octave(act: np.ndarray, beats: np.ndarray, positions: np.ndarray | None,
                  meter: int | None, tempo: float, min_bpm: float, max_bpm: float, *,
                  low_onsets: np.ndarray | None = None, broad_onsets: np.ndarray | None = None,
                  chroma: np.ndarray | None = None, onset_fps: float = FEATURE_FPS,
                  madmom_tempi: np.ndarray | None = None, model: OctaveModel | None = None) -> OctaveDecision:
    """Decide whether the tracked beat level is the tempo, half, two thirds or twice it.

    The model's probabilities of the levels (:func:`octave_evidence`,
    :class:`OctaveModel`, :func:`three_two_floor`), levels outside ``[min_bpm, max_bpm]`` removed. The
    tracked level is left unless another is at least the model's
    ``switch_p`` likely: ambiguous evidence lowers the confidence instead of
    moving the tempo (issue 9). The alternative is as :func:`choose_level` says.

    Parameters
    ----------
    act, beats, positions, meter, tempo, low_onsets, broad_onsets, chroma, onset_fps, madmom_tempi
        As for :func:`octave_evidence`.
    min_bpm, max_bpm : float
        Allowed tempo range.
    model : OctaveModel, optional
        Default: the shipped one (:func:`load_octave_model`).

    Returns
    -------
    OctaveDecision

    Examples
    --------
    >>> import numpy as np
    >>> act = np.zeros((2000, 2)); act[::50, 0] = 0.9; act[::200, 1] = 0.9   # clear 4/4 at 120 BPM
    >>> beats = np.arange(0.5, 19.5, 0.5); positions = np.arange(beats.size) % 4 + 1
    >>> decide_octave(act, beats, positions, 4, 120.0, 55.0, 215.0).factor
    1.0
    """
    model = model or load_octave_model()
    evidence = octave_evidence(act, beats, positions, meter, tempo, low_onsets=low_onsets,
                               broad_onsets=broad_onsets, chroma=chroma, onset_fps=onset_fps,
                               madmom_tempi=madmom_tempi)
    chosen, alt, p = choose_level(three_two_floor(model.probabilities(evidence), evidence), tempo, min_bpm, max_bpm,
                                  model.switch_p)
    kept = FACTORS.index(1.0)
    if chosen == kept:
        reason = f"tracked level kept (p {p[kept]:.2f}; x{FACTORS[alt]:.3g} {p[alt]:.2f})"
    else:
        reason = f"x{FACTORS[chosen]:.3g} of the tracked level (p {p[chosen]:.2f}; kept {p[kept]:.2f})"
    if FACTORS[chosen] == 2.0 / 3.0:
        reason += ": 3:2 grid"
    return OctaveDecision(FACTORS[chosen], float(p[chosen]), FACTORS[alt] / FACTORS[chosen], float(p[alt]), reason)


def _logistic(c: float) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))


def _fitting_data(evidence: Sequence[dict[str, float]], labels: Sequence[float],
                  folds: int) -> tuple[np.ndarray, np.ndarray, int]:
    x = np.array([model_terms(e) for e in evidence], dtype=np.float64)
    y = np.array([FACTORS.index(float(v)) for v in labels])
    k = min(folds, int(np.bincount(y, minlength=len(FACTORS)).min()))
    if k < 2:
        raise ValueError("every level needs at least two tuning tracks to fit the octave model")
    return x, y, k


def _out_of_fold(x: np.ndarray, y: np.ndarray, c: float, folds: int, repeats: int, seed: int) -> list[np.ndarray]:
    from sklearn.model_selection import StratifiedKFold

    runs = []
    for rep in range(repeats):
        oof = np.zeros((y.size, len(FACTORS)))
        for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed + rep).split(x, y):
            oof[test] = _logistic(c).fit(x[train], y[train]).predict_proba(x[test])
        runs.append(oof)
    return runs


def out_of_fold_probabilities(evidence: Sequence[dict[str, float]], labels: Sequence[float], *, c: float,
                              folds: int = 5, repeats: int = 10, seed: int = 0) -> np.ndarray:
    """Each track's level probabilities from models fitted without it, averaged over ``repeats`` splits.

    What the octave model says about music it was not fitted on: the confidence
    calibration is fitted on these, not on the in-sample probabilities, which
    are too sure of themselves (on the 118 tuning tracks of the first fit, 111
    levels right in-sample, 101.5 out of fold).

    Returns
    -------
    ndarray
        ``(tracks, len(FACTORS))``.
    """
    x, y, k = _fitting_data(evidence, labels, folds)
    return np.mean(_out_of_fold(x, y, c, k, repeats, seed), axis=0)


def fit_octave_model(evidence: Sequence[dict[str, float]], labels: Sequence[float], *, corpus: str,
                     cs: Sequence[float] = (0.1, 0.3, 1.0, 3.0), switch_ps: Sequence[float] = (0.5, 0.6, 0.7),
                     folds: int = 5, repeats: int = 10, seed: int = 0) -> dict[str, Any]:
    """Fit the level model's weights; choose its regularisation and switch threshold by cross-validation.

    scikit-learn's ``LogisticRegression`` (multinomial, L2) on standardised
    evidence. ``C`` is the one of ``cs`` with the lowest out-of-fold log loss
    over ``repeats`` × ``folds``-fold stratified splits; ``switch_p`` the one of
    ``switch_ps`` with the most right levels out of fold (ties to the higher,
    which switches less).

    Parameters
    ----------
    evidence : sequence of dict
        :func:`octave_evidence` of each tuning track.
    labels : sequence of float
        The right level of each (tracks without one left out by the caller).
    corpus : str
        What the tracks are, recorded in the file.

    Returns
    -------
    dict
        The content of ``octave_model.json``.
    """
    from sklearn.metrics import log_loss

    x, y, k = _fitting_data(evidence, labels, folds)
    runs = {c: _out_of_fold(x, y, c, k, repeats, seed) for c in cs}

    def right(oof: np.ndarray, switch_p: float) -> int:  # every level allowed: no tempo range here
        return sum(choose_level(p, 1.0, 0.0, np.inf, switch_p)[0] == label for p, label in zip(oof, y, strict=True))

    losses = {c: float(np.mean([log_loss(y, oof, labels=range(len(FACTORS))) for oof in r])) for c, r in runs.items()}
    c_best = min(cs, key=lambda c: (losses[c], -c))
    counts = {s: float(np.mean([right(oof, s) for oof in runs[c_best]])) for s in switch_ps}
    s_best = max(switch_ps, key=lambda s: (counts[s], s))
    fitted = _logistic(c_best).fit(x, y)
    scaler, lr = fitted.named_steps["standardscaler"], fitted.named_steps["logisticregression"]
    return {
        "features": list(MODEL_TERMS), "factors": list(FACTORS),
        "mean": scaler.mean_.round(6).tolist(), "scale": scaler.scale_.round(6).tolist(),
        "coef": lr.coef_.round(6).tolist(), "intercept": lr.intercept_.round(6).tolist(),
        "switch_p": s_best,
        "provenance": {
            "fitted_on": corpus, "tracks": int(y.size), "C": c_best,
            "tracks_per_level": dict(zip((f"{f:.4g}" for f in FACTORS), np.bincount(y, minlength=len(FACTORS)).tolist(),
                                         strict=True)),
            "method": f"scikit-learn LogisticRegression (multinomial, L2, C={c_best:g}) on the standardised evidence and its "
                      "products with log2_tempo",
            "cv": f"{repeats} x {k}-fold stratified, seeds {seed}-{seed + repeats - 1}",
            "cv_log_loss": {f"{c:g}": round(v, 4) for c, v in losses.items()},
            "cv_right_levels": {f"{s:g}": round(v, 1) for s, v in counts.items()},
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        },
    }


def write_octave_model(model: dict[str, Any], path: Path | None = None) -> Path:
    """Write a :func:`fit_octave_model` result (default: the shipped file) and drop the cached model."""
    target = Path(path or OCTAVE_MODEL_FILE)
    target.write_text(json.dumps(model, indent=1) + "\n", encoding="utf-8")
    load_octave_model.cache_clear()
    return target
