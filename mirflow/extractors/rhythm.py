"""Tempo, beats, downbeats and meter.

Backends (parameter ``backend``):

* ``ensemble`` (default): madmom's joint beat/downbeat RNN and DBN for beats,
  downbeats and meter, with the metrical level decided from the beat,
  downbeat and onset evidence rather than taken from the tracker as is:
  the tracked level, half of it, twice it or two thirds of it (a 3:2 error:
  two eighths of a jig in 6/8), by :func:`decide_octave`; the other octave is
  reported with its own confidence.
* ``madmom``: the RNN + DBN downbeat tracker alone (models CC BY-NC-SA 4.0).
* ``essentia``: ``RhythmExtractor2013(method='multifeature')`` (AGPL-3.0);
  meter and downbeats from mirflow's accent-periodicity estimate.
* ``librosa``: ``librosa.feature.tempo`` with a log-normal prior and
  ``librosa.beat.beat_track`` on the shared mel onset envelope, the tempo
  octave re-checked by metrical salience (``octave_check``), meter and
  downbeats from mirflow's estimate (permissive: ISC + BSD).

**Tempo convention: the notated beat.** ``tempo_bpm`` counts the beats of
the time signature as music21 reads it (``TimeSignature.beatDuration``): the
quarter note in 2/4, 3/4 and 4/4, the half note in 2/2, the dotted quarter in
6/8, 9/8 and 12/8. Every corpus mirflow is measured on is labelled that way
(:mod:`mirflow.synth`, :mod:`mirflow.synth.scores`). The other octave is
``tempo_alt_bpm`` (where a 3:2 grid was moved: the tracked tempo, 1.5 times
the tempo). ``tempo_confidence`` is a probability that the tempo is within 4 %
of the notated beat, calibrated on the tuning corpus
(:mod:`mirflow.extractors.calibration`).

The ensemble's octave decision (:func:`~mirflow.extractors._octave.decide_octave`)
weighs the evidence at the tracked level with a multinomial logistic
regression fitted on the tuning corpus only (``octave_model.json``,
``benchmarks/fit_octave.py``): beat and downbeat activation on alternate
beats, onsets and harmonic change half-way between beats (the off-beat onsets
measured above the envelope's floor, :func:`~mirflow.extractors._octave.floored_ratio`, so that noise and
MP3 smear do not read as beats), one strong tracked beat in three with
onsets between the other two (a 3:2 grid), madmom's own tempo estimate (its
comb-filter tempo histogram of the same activation,
:func:`madmom_tempo_estimate`) at the other levels, and the tempo as a prior.
It switches only when another level
is at least the model's ``switch_p`` likely; short of that the tracked level
is kept with the probability the model gives it, so ambiguous evidence shows
in the confidence instead of moving the tempo (issue 9: slow Bach chorales
with noise or through 64 kb/s MP3 were reported at twice the notated tempo
with high confidence). A tempo madmom's estimate puts in no octave relation
at all is reported with less confidence (:data:`MADMOM_UNRELATED`).

One RNN pass per track gives both beat and downbeat activations; they are
cached on the :class:`~mirflow.frontend.Frontend` so that the ensemble and a
second rhythm extractor in the same pipeline share it.

A track has *no tempo* (every column null, ``beat_count`` 0, no beat rows)
when it is empty, shorter than ``min_duration_s``, quieter than
``silence_threshold_dbfs``, or when its onset evidence is not periodic
(white/pink/brown noise, a steady tone, random clicks); the reason is
recorded (``tracks.empty_reasons``). For the madmom-based backends that is
the periodicity strength of the RNN's beat activation below
``min_periodicity`` *and* noise-like chroma or no harmonic change: the
strength measured 0.07-0.12 on noise, tones and random clicks, 0.58-0.98 on
most generated tracks (including 6 dB SNR) and 0.66-0.82 on legato organ
chorales, but 0.12-0.17 on chorales sung by a choir patch through a 64 kb/s
MP3, which are music (chroma noisiness 0.25-0.32, chroma flux 0.14): those
get a tempo with a low confidence. The essentia and librosa backends use the onset
envelope together with chroma flatness (see :data:`NOISY_CHROMA`), since
the envelope alone is as flat on legato organ as on noise.

The tempo octave, the meter override and the thresholds were measured on
tracks from :mod:`mirflow.synth` and on Bach chorales (the constants below
say what was measured); ``benchmarks/rhythm_backends.py --levels`` prints the
evidence per track. With the rule-based octave decision of rhythm versions
before 7 (``docs/accuracy.md`` has the current figures), on 80 held-out
20-s generated tracks (60-200 BPM, 3/4 and 4/4, drums on and off, a fifth
with noise or MP3) the backends scored (tempo Accuracy1 / Accuracy2, beat
F-measure, downbeat F-measure, seconds per track on one busy core):

========  =====  =====  =====  =====  =====
backend   Acc1   Acc2   beatF  downF  s
========  =====  =====  =====  =====  =====
ensemble  0.99   1.00   0.98   0.91   0.44
madmom    0.94   1.00   0.97   0.82   0.40
essentia  0.78   1.00   0.86   0.53   0.29
librosa   0.71   0.95   0.85   0.71   0.05
========  =====  =====  =====  =====  =====
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mirflow.errors import ParameterError
from mirflow.extractors._octave import decide_octave, octave_evidence, peak_near
from mirflow.extractors._rhythm_backends import (
    MADMOM_FPS,
    RhythmTrack,
    essentia_track,
    librosa_track,
    madmom_activations,
    madmom_track,
)
from mirflow.extractors._rhythm_features import (
    FEATURE_FPS,
    chroma_flux,
    estimate_meter,
    metrical_salience,
    onset_features,
    periodicity_strength,
    tempo_stability,
)
from mirflow.extractors.base import Extraction, Extractor, Params, WindowPart, longest_reason, param
from mirflow.extractors.calibration import calibrate
from mirflow.extractors.requirements import ESSENTIA, LIBROSA, MADMOM, Requirement

log = logging.getLogger(__name__)

#: The onset envelope is a noisier pulse than madmom's beat activation: its
#: periodicity strength measured 0.02-0.10 on white, pink and brown noise and
#: random clicks, 0.21 and above on generated tracks, but down to 0.06 on
#: legato organ chorales. Below ``min_periodicity`` times this factor a track
#: has no tempo for the essentia and librosa backends if its chroma is also
#: flat (noisiness above :data:`NOISY_CHROMA`: noise measured 0.76-0.82,
#: chorales 0.27-0.33), and in any case below :data:`STEADY_PERIODICITY`
#: (a steady tone measured 0.00).
ONSET_PERIODICITY_SCALE = 0.15 / 0.18  # an onset threshold of 0.15 at the default min_periodicity
NOISY_CHROMA = 0.6
STEADY_PERIODICITY = 0.03
#: ...unless its harmony moves: legato organ chorales also have onset
#: periodicity below 0.03 but a chroma flux of 0.10-0.14 (a steady tone: 0.0003).
STEADY_CHROMA_FLUX = 0.02


@dataclass(frozen=True, kw_only=True)
class RhythmParams(Params):
    """Parameters of :class:`RhythmExtractor` (ranges and choices are declared per field)."""

    backend: str = param("ensemble", choices=("ensemble", "madmom", "essentia", "librosa"),
                         doc="Which analysis to run (see the module documentation)")
    min_bpm: float = param(55.0, range=(30.0, 120.0), doc="Slowest tempo considered")
    max_bpm: float = param(215.0, range=(120.0, 300.0), doc="Fastest tempo considered")
    beats_per_bar: tuple[int, ...] = param((3, 4), choices=(3, 4),
                                           doc="Meters the downbeat trackers choose from")
    octave_check: bool = param(True, doc="librosa backend: re-choose the tempo octave by metrical "
                                         "salience of the onsets instead of librosa's prior alone")
    min_duration_s: float = param(3.0, range=(1.0, 60.0),
                                  doc="Shorter tracks get no tempo")
    silence_threshold_dbfs: float = param(-60.0, range=(-120.0, -20.0),
                                          doc="RMS level below which a track counts as silent")
    min_periodicity: float = param(0.18, range=(0.0, 1.0),
                                   doc="Periodicity strength of the onset evidence below which "
                                       "a track has no tempo (noise, tones)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.beats_per_bar:
            raise ParameterError(f"{self._where('beats_per_bar')} must name at least one meter")
        if self.min_bpm >= self.max_bpm:
            raise ParameterError(f"{self._where('min_bpm')} must be below max_bpm")
        # one canonical order, so equal settings compare (and cache) equal
        object.__setattr__(self, "beats_per_bar", tuple(sorted(set(self.beats_per_bar))))


#: Factor on the confidence of a tempo that madmom's estimate puts in no octave relation at
#: all (3:2 and the like). Where that happened on the tuning corpus (3 of 120 tracks) madmom's
#: estimate was right twice and neither once; on a real game soundtrack (extremetuxracer's
#: calmrace) Essentia agreed with madmom's estimate against the tracked tempo.
MADMOM_UNRELATED = 0.5
#: How far (relative) from two thirds of the tracked tempo the DBN may go when a 3:2 grid is
#: tracked again (:meth:`RhythmExtractor._retracked`): on the 16 tuning tracks followed 3:2 too
#: fast the tracked tempo was within 1.1 % of 1.5 times the notated one, the rest of the width is
#: for rubato (±5 % in the corpora). ±10 % and ±20 % found the same beats on those 16 tracks.
RETRACK_WIDTH = 0.10
#: Accent-score margin above which the meter estimate overrules the DBN's meter.
METER_OVERRULE_MARGIN = 0.4


@functools.lru_cache(maxsize=4)
def _madmom_tempo_estimator(min_bpm: float, max_bpm: float) -> Any:
    """madmom's ``TempoEstimationProcessor`` (comb filter, its defaults), built once per process."""
    import warnings

    from madmom.features.tempo import TempoEstimationProcessor

    with warnings.catch_warnings():
        # madmom 0.17 deprecates its own default ``method`` argument; the behaviour is unchanged
        warnings.simplefilter("ignore", UserWarning)
        return TempoEstimationProcessor(fps=MADMOM_FPS, min_bpm=min_bpm, max_bpm=max_bpm)


def madmom_tempo_estimate(act: np.ndarray, *, min_bpm: float, max_bpm: float) -> np.ndarray:
    """madmom's ranked tempi ``(n, 2)`` (BPM, strength) from the beat + downbeat activation.

    The same estimate as madmom's tempo recipe, on the downbeat network's
    activation the ensemble already has (no second network pass).
    """
    if act.size == 0:
        return np.zeros((0, 2))
    out = _madmom_tempo_estimator(float(min_bpm), float(max_bpm))(act.sum(axis=1))
    return np.atleast_2d(np.asarray(out, dtype=np.float64)).reshape(-1, 2)


def _halve_beats(beats: np.ndarray, act: np.ndarray) -> np.ndarray:
    """Every other beat, the phase carrying more beat/downbeat activation."""
    on = peak_near(act.sum(axis=1), MADMOM_FPS, beats)
    phase = 0 if on[0::2].mean() >= on[1::2].mean() else 1
    return beats[phase::2]


def _double_beats(beats: np.ndarray) -> np.ndarray:
    """Tracked beats with the midpoints between them inserted."""
    out = np.empty(2 * beats.size - 1)
    out[0::2] = beats
    out[1::2] = (beats[:-1] + beats[1:]) / 2.0
    return out


def fitted_bpm(beats: np.ndarray) -> float | None:
    """Tempo from a least-squares line through the beat times (finer than 10-ms frames allow).

    Falls back to the median interval when the intervals are irregular
    (the fit is only better than the median on a steady pulse).

    Examples
    --------
    >>> import numpy as np
    >>> round(fitted_bpm(np.arange(20) * 0.31), 2)
    193.55
    """
    beats = np.asarray(beats, dtype=np.float64)
    if beats.size < 2:
        return None
    ibi = np.diff(beats)
    median = float(np.median(ibi))
    if median <= 0:
        return None
    if beats.size >= 4 and np.all(np.abs(ibi - median) < 0.25 * median):
        slope = float(np.polyfit(np.arange(beats.size), beats, 1)[0])
        if slope > 0:
            return 60.0 / slope
    return 60.0 / median


def _agreeing(tempi_bpm: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Which of these tempi agree (within 4 %) with the one that the largest total weight agrees with."""
    agree = np.abs(tempi_bpm[None, :] / tempi_bpm[:, None] - 1.0) <= 0.04
    return agree[int(np.argmax(agree @ weights))]


def pulse_clarity(strength: float) -> float:
    """Rhythm strength 0-1: a periodicity strength rescaled from the noise level (~0.1) to clear music (~0.9)."""
    return float(np.clip((strength - 0.1) / 0.8, 0.0, 1.0))


def level_probability(tempo_bpm: float, madmom_tempi: np.ndarray, tracked_bpm: float | None = None) -> float:
    """:data:`MADMOM_UNRELATED` when madmom's own tempo estimate is neither ``tempo_bpm`` nor an
    octave of it (a 3:2 or worse disagreement between the chosen level and the estimate), else 1.

    An estimate at the tracked tempo ``tracked_bpm`` is no disagreement when the level model moved
    a 3:2 grid: the model weighed it (``madmom_two_thirds_vote``), and it is where madmom's
    histogram stands on most jigs followed 3:2 too fast.
    """
    if not len(madmom_tempi):
        return 1.0
    estimate = float(madmom_tempi[0, 0])
    related = [tempo_bpm * f for f in (0.5, 1.0, 2.0)] + ([tracked_bpm] if tracked_bpm else [])
    return 1.0 if any(abs(bpm / estimate - 1.0) <= 0.04 for bpm in related) else MADMOM_UNRELATED


@dataclass(frozen=True)
class OctaveSample:
    """One track's input to the ensemble's level decision and tempo confidence.

    The ensemble's raw ``tempo_confidence`` of the level ``f`` (of :data:`~mirflow.extractors._octave.FACTORS`)
    is ``level_probability(tempo_bpm * f, madmom_tempi, tempo_bpm) * P(f)``, ``P`` the level
    model's probability of the level chosen. ``clarity``, the pulse clarity, was a third factor
    up to rhythm version 11; it stays in the sample so that the old confidence (``clarity`` times
    the new one) can be rebuilt for comparison, as stop 28 did on the fresh held-out corpora.
    """

    tempo_bpm: float
    evidence: dict[str, float]
    clarity: float
    madmom_tempi: np.ndarray


class RhythmExtractor(Extractor):
    """Global tempo with confidence and alternative octave, beats, downbeats, meter, stability.

    Examples
    --------
    >>> import numpy as np
    >>> from mirflow.frontend import Frontend
    >>> sr = 22050
    >>> y = np.zeros(10 * sr, dtype=np.float32)
    >>> for t in np.arange(0.2, 10, 0.5):                   # a click every 0.5 s
    ...     i = int(t * sr); y[i:i + 200] = np.hanning(200)
    >>> out = RhythmExtractor().extract(Frontend.from_array(y, sr))
    >>> round(out.columns["tempo_bpm"]), round(out.columns["tempo_alt_bpm"]), out.columns["meter"]
    (120, 60, 4)
    >>> RhythmExtractor().extract(Frontend.from_array(np.zeros(sr, np.float32), sr)).columns["tempo_bpm"] is None
    True
    """

    name = "rhythm"
    # 7: the tempo octave from the fitted octave model (_octave.py, octave_model.json)
    # 8: the 3:2 level in the fitted model too (two eighths of 6/8; the old rule a floor under it),
    #    a 3:2 grid tracked again by the DBN at two thirds of the tempo
    # 9: the octave model refitted with reels at a reel's speed (the 12 varied reels rendered again,
    #    24 tuning reels added: benchmarks/accuracy.py --tuning-reels), and the tempo map after it
    # 10: each cue of the octave model weighed by the tempo too (_octave.TEMPO_INTERACTIONS), refitted;
    #     the tempo map after it
    # 11: the librosa backend's confidence map chosen by the one-standard-error rule
    #     (calibration.choose_method): Platt scaling instead of full isotonic regression
    # 12: the ensemble's raw tempo confidence is its level probability without the pulse clarity;
    #     its map refitted (the identity: the level probability is kept as it is)
    # 13: the octave model refitted with 24 tuning piano tracks added (slow piano pieces tracked at
    #     twice the beat: benchmarks/accuracy.py --tuning-pianos), and the maps after it
    version = "13"
    Params = RhythmParams
    columns = ("tempo_bpm", "tempo_confidence", "tempo_alt_bpm", "tempo_alt_confidence",
               "tempo_stability", "meter", "beat_count", "downbeat_count")
    tables = ("beats",)
    requires = ("signal", "stft", "mel", "cached")
    libraries = ("madmom", "essentia", "librosa", "numpy")
    licences = ("BSD-3-Clause code + CC BY-NC-SA 4.0 models (madmom: ensemble, madmom backends)",
                "AGPL-3.0 (essentia backend)", "ISC (librosa backend)")

    # ------------------------------------------------------------------ API
    def requirements(self) -> tuple[Requirement, ...]:
        return {"ensemble": (MADMOM, LIBROSA), "madmom": (MADMOM, LIBROSA), "essentia": (ESSENTIA, LIBROSA),
                "librosa": (LIBROSA,)}[self.params.backend]

    def extract(self, frontend: Any) -> Extraction:
        p: RhythmParams = self.params
        if frontend.is_empty:
            return self._none("empty audio: no tempo", "empty audio")
        if frontend.duration_s < p.min_duration_s:
            return self._none(f"{frontend.duration_s:.1f} s is shorter than {p.min_duration_s:g} s: no tempo", "too short")
        if frontend.rms_dbfs() <= p.silence_threshold_dbfs:
            return self._none("silent: no tempo", "silent")
        if p.backend in ("essentia", "librosa"):
            return self._from_generic(frontend, p.backend)
        return self._from_madmom(frontend, ensemble=p.backend == "ensemble")

    # ------------------------------------------------------------ outcomes
    def _none(self, note: str, reason: str) -> Extraction:
        log.debug("rhythm: %s", note)
        cols: dict[str, Any] = {c: None for c in self.columns}
        cols["beat_count"] = 0
        cols["downbeat_count"] = 0
        return self.result(cols, {"beats": {"time_s": [], "beat_in_bar": []}}, note, reason=reason)

    def _emit(self, *, beats: np.ndarray, beat_in_bar: np.ndarray | list[int] | None, meter: int | None,
              tempo: float | None, confidence: float | None, alt: float | None,
              alt_confidence: float | None, note: str) -> Extraction:
        beats = np.asarray(beats, dtype=np.float64)
        if tempo is None or beats.size < 2:
            return self._none(f"{note}; fewer than two beats: no tempo", "fewer than two beats")
        positions = [int(b) for b in beat_in_bar] if beat_in_bar is not None else None
        raw = None if confidence is None else float(np.clip(confidence, 0.0, 1.0))
        # a probability that the tempo is right (see mirflow.extractors.calibration); the
        # alternative keeps its odds against the tempo, so it never outranks it
        calibrated = calibrate("rhythm", self.params.backend, raw)
        alt_conf = None if alt_confidence is None else float(np.clip(alt_confidence, 0.0, 1.0))
        if alt_conf is not None and raw is not None and calibrated is not None:
            alt_conf = min(alt_conf * calibrated / raw, calibrated) if raw > 0 else min(alt_conf, calibrated)
        cols = {
            "tempo_bpm": float(tempo),
            "tempo_confidence": calibrated,
            "tempo_alt_bpm": None if alt is None else float(alt),
            "tempo_alt_confidence": alt_conf,
            "tempo_stability": tempo_stability(beats),
            "meter": meter,
            "beat_count": int(beats.size),
            "downbeat_count": int(sum(1 for b in positions if b == 1)) if positions is not None else 0,
        }
        table = {"time_s": [round(float(t), 4) for t in beats],
                 "beat_in_bar": positions if positions is not None else [None] * int(beats.size)}
        return self.result(cols, {"beats": table}, note)

    # -------------------------------------------------------------- madmom
    def _from_madmom(self, frontend: Any, *, ensemble: bool) -> Extraction:
        p: RhythmParams = self.params
        act = madmom_activations(frontend)
        strength = periodicity_strength(act[:, 0], float(MADMOM_FPS), p.min_bpm, p.max_bpm)
        if strength < p.min_periodicity:
            # A weak pulse is no reason to say nothing about music: only noise
            # (flat chroma) and a steady tone (no harmonic change) get no tempo.
            # Legato chorales through a 64 kb/s MP3 measured 0.12-0.17 here,
            # with chroma noisiness 0.25-0.32 and chroma flux 0.14.
            feats = onset_features(frontend)
            flux = chroma_flux(feats.chroma)
            if feats.noisiness > NOISY_CHROMA or flux < STEADY_CHROMA_FLUX:
                why = "steady tone" if flux < STEADY_CHROMA_FLUX and feats.noisiness <= NOISY_CHROMA \
                    else "no periodic pulse"
                return self._none(f"beat activation not periodic (strength {strength:.2f}, noisiness "
                                  f"{feats.noisiness:.2f}, chroma flux {flux:.3f}): no tempo", why)
        track = madmom_track(frontend, beats_per_bar=p.beats_per_bar, min_bpm=p.min_bpm, max_bpm=p.max_bpm)
        if track.beats.size < 2 or track.tempo_bpm is None:
            return self._none("madmom tracked fewer than two beats: no tempo", "fewer than two beats")
        beats, positions, meter = track.beats, track.beat_in_bar, track.meter
        tempo = fitted_bpm(beats)
        if tempo is None:
            return self._none("madmom's beats give no tempo: no tempo", "no tempo from the beats")
        if not ensemble:
            conf, alt, alt_conf = self._octave_confidences(act[:, 0], float(MADMOM_FPS), tempo,
                                                           pulse_clarity(strength))
            return self._emit(beats=beats, beat_in_bar=positions, meter=meter, tempo=tempo,
                              confidence=conf, alt=alt, alt_confidence=alt_conf, note="madmom")
        feats = onset_features(frontend)
        madmom_tempi = madmom_tempo_estimate(act, min_bpm=p.min_bpm, max_bpm=p.max_bpm)
        decision = decide_octave(act, beats, positions, meter, tempo, p.min_bpm, p.max_bpm,
                                 low_onsets=feats.low, broad_onsets=feats.broad, chroma=feats.chroma,
                                 onset_fps=feats.fps, madmom_tempi=madmom_tempi)
        log.debug("rhythm ensemble: %s", decision.reason)
        notes = [decision.reason]
        if decision.factor == 0.5:
            beats = _halve_beats(beats, act)
            meter, positions = self._estimated_meter(feats, beats)
        elif decision.factor == 2.0:
            first_down = int(np.argmax(positions == 1)) if positions is not None and np.any(positions == 1) else 0
            beats = _double_beats(beats)
            # the tracked bar held two real bars of ``meter`` beats each
            positions = np.array([((i - 2 * first_down) % meter) + 1 for i in range(beats.size)])
        elif decision.factor != 1.0:  # two thirds: madmom's DBN again, held near that tempo
            beats, positions, meter = self._retracked(frontend, tempo * decision.factor, (beats, positions, meter))
            meter, positions = self._check_meter(feats, beats, meter, positions)
        else:
            meter, positions = self._check_meter(feats, beats, meter, positions)
        tracked_bpm, tempo = tempo, fitted_bpm(beats)
        alt = tempo * decision.alt_factor
        p_level = level_probability(tempo, madmom_tempi, tracked_bpm)
        if p_level < 1.0:
            notes.append(f"madmom's tempo estimate {madmom_tempi[0, 0]:.1f} BPM is no octave of it")
        # The raw confidence is the level model's probability (times MADMOM_UNRELATED), not times
        # the pulse clarity too, as up to rhythm 11: out of fold on the 180 tuning tracks the
        # level probability ranks right tempi above wrong ones better alone (weighted ROC AUC 0.84)
        # than times the clarity (0.78; clarity alone 0.65), and it is a probability already. With
        # the clarity, reels, jigs and quartets (clarity 0.46-0.56, tempo right 0.58-0.81) got raw
        # confidences of 0.32-0.44 that no monotone map could lift without lifting the tracker's
        # failures too; the fresh held-out corpora showed the same (confidences under 0.4 right
        # far more often than they said). Leave-one-stratum-out Brier score of the calibrated
        # confidence 0.126 -> 0.102, the level probability needing no map (out-of-fold decisions, stop 28).
        # The periodicity strength behind the clarity still decides "no tempo" (min_periodicity) above.
        return self._emit(beats=beats, beat_in_bar=positions, meter=meter, tempo=tempo,
                          confidence=p_level * decision.p_chosen, alt=alt,
                          alt_confidence=p_level * decision.p_alt,
                          note="ensemble: " + "; ".join(notes))

    def _retracked(self, frontend: Any, target_bpm: float,
                   tracked: tuple[np.ndarray, np.ndarray | None, int | None]) -> tuple[np.ndarray, np.ndarray | None,
                                                                                    int | None]:
        """Beats, positions and meter of madmom's DBN on the same activation, its tempo held within
        :data:`RETRACK_WIDTH` of ``target_bpm``; the tracked ones where it finds fewer than two beats.

        Why track again rather than keep every third tracked beat and the midpoints of the
        others: which of the three tracked beats lies on a real one is what the DBN weighs
        best. On the 16 tuning tracks followed 3:2 too fast (14 jigs, 2 piano pieces), the
        grid re-tracked at two thirds of the tempo found the notated beats (beat F ≥ 0.96)
        on 9, the stronger-activation phase of the 2:3 grid on 5 (and the tempo on all 16).
        """
        p: RhythmParams = self.params
        track = madmom_track(frontend, beats_per_bar=p.beats_per_bar,
                             min_bpm=max(p.min_bpm, target_bpm * (1.0 - RETRACK_WIDTH)),
                             max_bpm=min(p.max_bpm, target_bpm * (1.0 + RETRACK_WIDTH)))
        if track.beats.size < 2:
            return tracked
        return track.beats, track.beat_in_bar, track.meter

    def octave_sample(self, frontend: Any) -> OctaveSample | None:
        """What the ensemble's level decision and confidence start from, for fitting them
        (``benchmarks/fit_octave.py``); None where the madmom tracker gives no tempo."""
        p: RhythmParams = self.params
        act = madmom_activations(frontend)
        track = madmom_track(frontend, beats_per_bar=p.beats_per_bar, min_bpm=p.min_bpm, max_bpm=p.max_bpm)
        tempo = fitted_bpm(track.beats) if track.beats.size >= 2 else None
        if tempo is None:
            return None
        feats = onset_features(frontend)
        madmom_tempi = madmom_tempo_estimate(act, min_bpm=p.min_bpm, max_bpm=p.max_bpm)
        evidence = octave_evidence(act, track.beats, track.beat_in_bar, track.meter, tempo,
                                   low_onsets=feats.low, broad_onsets=feats.broad, chroma=feats.chroma,
                                   onset_fps=feats.fps, madmom_tempi=madmom_tempi)
        strength = periodicity_strength(act[:, 0], float(MADMOM_FPS), p.min_bpm, p.max_bpm)
        return OctaveSample(tempo_bpm=tempo, evidence=evidence, clarity=pulse_clarity(strength),
                            madmom_tempi=madmom_tempi)

    def _estimated_meter(self, feats: Any, beats: np.ndarray) -> tuple[int | None, np.ndarray | None]:
        """Meter and bar positions of beats the ensemble moved, from the accent estimate.

        None for both when there are too few beats to tell the bars.
        """
        est = estimate_meter(feats, beats, self.params.beats_per_bar)
        if est is None:
            return None, None
        return est.meter, np.asarray(est.beat_in_bar(beats.size))

    def _check_meter(self, feats: Any, beats: np.ndarray, meter: int | None,
                     positions: np.ndarray | None) -> tuple[int | None, np.ndarray | None]:
        """Overrule the DBN's meter when the accent-periodicity estimate clearly disagrees.

        The two err on different tracks: on the 143 generated tracks (of 160)
        where the tracked tempo was right, the DBN's meter was right on 135
        and the accent estimate on 140. Where they disagreed, the estimate's
        score margin was 0.09-1.21 when it was right, but the DBN was right
        at margins up to 0.36 on Bach chorales (whose harmony changes on
        every beat, which blurs the chroma cue), so only a margin above
        :data:`METER_OVERRULE_MARGIN` counts.
        """
        p: RhythmParams = self.params
        est = estimate_meter(feats, beats, p.beats_per_bar)
        if est is None or meter is None or est.meter == meter or meter not in est.scores:
            return meter, positions
        margin = est.scores[est.meter] - est.scores[meter]
        if margin <= METER_OVERRULE_MARGIN:
            return meter, positions
        log.debug("rhythm ensemble: meter %d overruled by accent estimate %d (margin %.2f)",
                  meter, est.meter, margin)
        return est.meter, np.asarray(est.beat_in_bar(beats.size))

    # ------------------------------------------------- essentia and librosa
    def _from_generic(self, frontend: Any, backend: str) -> Extraction:
        p: RhythmParams = self.params
        feats = onset_features(frontend)
        strength = periodicity_strength(feats.broad, FEATURE_FPS, p.min_bpm, p.max_bpm)
        # Neither essentia's confidence (noise 0.9-2.6, legato organ chorales
        # 1.5-3.0) nor onset periodicity alone (noise up to 0.10, legato
        # chorales down to 0.06) separates noise from music; periodicity and
        # noisiness together do: noise is periodic below 0.15 *and* has flat
        # chroma, a steady tone has no onsets at all.
        steady = strength < STEADY_PERIODICITY and chroma_flux(feats.chroma) < STEADY_CHROMA_FLUX
        if steady or (strength < p.min_periodicity * ONSET_PERIODICITY_SCALE and feats.noisiness > NOISY_CHROMA):
            return self._none(f"onset envelope not periodic (strength {strength:.2f}, noisiness "
                              f"{feats.noisiness:.2f}): no tempo", "steady tone" if steady else "no periodic pulse")
        if backend == "essentia":
            track: RhythmTrack = essentia_track(frontend, min_bpm=p.min_bpm, max_bpm=p.max_bpm)
        else:
            track = librosa_track(frontend, min_bpm=p.min_bpm, max_bpm=p.max_bpm, octave_check=p.octave_check)
        if track.tempo_bpm is None or track.beats.size < 2:
            return self._none(f"{backend} found no beats: no tempo", "fewer than two beats")
        clarity = pulse_clarity(strength)
        est = estimate_meter(feats, track.beats, p.beats_per_bar)
        meter = est.meter if est is not None else None
        positions = est.beat_in_bar(track.beats.size) if est is not None else None
        tempo = float(track.tempo_bpm)
        # essentia's own confidence measures how well its beat trackers agree,
        # which is a better clarity figure than the onset periodicity
        if backend == "essentia":
            clarity = track.confidence
        conf, alt, alt_conf = self._octave_confidences(feats.broad, feats.fps, tempo, clarity)
        return self._emit(beats=track.beats, beat_in_bar=positions, meter=meter, tempo=tempo,
                          confidence=conf, alt=alt, alt_confidence=alt_conf, note=backend)

    def _octave_confidences(self, envelope: np.ndarray, fps: float, tempo: float,
                            clarity: float) -> tuple[float, float, float]:
        """Split ``clarity`` between the tempo and its likelier neighbouring octave.

        The single-library backends have no octave evidence of their own, so
        the tempo and the half/double candidates are weighed by the
        metrical salience (:func:`metrical_salience`) of the onset evidence
        at their beat periods; the share of the two is each one's confidence.

        Returns
        -------
        tuple of float
            Confidence of ``tempo``, the alternative tempo, its confidence.
        """
        p: RhythmParams = self.params
        candidates = [t for t in (tempo / 2.0, tempo * 2.0) if p.min_bpm <= t <= p.max_bpm]
        if not candidates:  # range narrower than an octave: name the nearer octave anyway
            candidates = [tempo / 2.0 if tempo / p.min_bpm < p.max_bpm / tempo else tempo * 2.0]
        sal = metrical_salience(envelope, fps, np.array([tempo, *candidates]))
        k = int(np.argmax(sal[1:]))
        total = float(sal[0] + sal[1 + k])
        share = float(sal[0] / total) if total > 0 else 0.5
        return clarity * share, float(candidates[k]), clarity * (1.0 - share)

    # ------------------------------------------------------ long tracks
    def merges_windows(self) -> bool:
        return True

    def merge(self, parts: Sequence[WindowPart]) -> Extraction:
        """Beats of every window's share in track time; the tempo that covers most of the track.

        A beat belongs to the window whose share holds it; one found by both
        windows at a share's edge (a few ms apart) is kept once. The tempo
        is the one most of the track's duration agrees with (windows within
        4 %, each weighted by its share), its confidence the share-weighted
        confidence of those windows over the whole track: a DJ mix whose
        tempo changes half-way gets the longer tempo with at most about half
        the confidence, and a low ``tempo_stability`` from its beats.
        """
        times: list[float] = []
        positions: list[Any] = []
        for part in parts:
            table = part.extraction.tables["beats"]
            t = np.asarray(table["time_s"], dtype=np.float64)
            mask = part.owns(t)
            times.extend((part.start_s + t[mask]).tolist())
            positions.extend(b for b, keep in zip(table["beat_in_bar"], mask, strict=True) if keep)
        beats = np.asarray(times)
        if beats.size > 2:
            gap = 0.5 * float(np.median(np.diff(beats)))
            keep = np.concatenate([[True], np.diff(beats) > gap])
            beats, positions = beats[keep], [b for b, k in zip(positions, keep, strict=True) if k]
        voted = [part for part in parts if part.extraction.columns["tempo_bpm"] is not None]
        if not voted or beats.size < 2:
            return self._none("no window gave a tempo", longest_reason(parts))
        tempo = np.array([part.extraction.columns["tempo_bpm"] for part in voted])
        weight = np.array([part.core_s for part in voted])
        group = _agreeing(tempo, weight)
        total = sum(part.core_s for part in parts)
        # the alternative: the one most of the agreeing windows name (half and double may both occur)
        alts = np.array([np.nan if (a := part.extraction.columns["tempo_alt_bpm"]) is None else a
                         for part in voted])
        named = group & np.isfinite(alts)
        alt_group = np.zeros_like(group)
        if named.any():
            alt_group[named] = _agreeing(alts[named], weight[named])

        def share(column: str, members: np.ndarray) -> float | None:
            values = [part.extraction.columns[column] for part, m in zip(voted, members, strict=True) if m]
            if not values or any(v is None for v in values):
                return None
            return float(np.dot(values, weight[members]) / total)

        meters: dict[int, float] = {}
        for part in voted:
            if part.extraction.columns["meter"] is not None:
                meters[part.extraction.columns["meter"]] = meters.get(part.extraction.columns["meter"], 0.0) + part.core_s
        cols = {
            "tempo_bpm": float(np.dot(tempo[group], weight[group]) / weight[group].sum()),
            "tempo_confidence": share("tempo_confidence", group),
            "tempo_alt_bpm": float(np.dot(alts[alt_group], weight[alt_group]) / weight[alt_group].sum())
            if alt_group.any() else None,
            "tempo_alt_confidence": share("tempo_alt_confidence", alt_group),
            "tempo_stability": tempo_stability(beats),
            "meter": max(meters, key=lambda m: (meters[m], -m)) if meters else None,
            "beat_count": int(beats.size),
            "downbeat_count": int(sum(1 for b in positions if b == 1)),
        }
        table = {"time_s": [round(float(t), 4) for t in beats], "beat_in_bar": positions}
        return self.result(cols, {"beats": table}, f"merged {len(parts)} windows")
