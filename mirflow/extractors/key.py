"""Global key: tonic, mode, every label form, a confidence and the runner-up.

Every backend produces a 24-way probability vector over the keys in
:func:`mirflow.labels.all_keys` order (C major … B major, C minor … B
minor); the key is its arg-max, ``key_confidence`` its probability and
``key_alt`` the second-best key. Labels are rendered from the canonical
(tonic, mode) pair by :class:`mirflow.labels.Key`.

Backends:

* ``madmom``: Korzeniowski & Widmer's CNN key classifier (an ensemble of
  networks; softmax output, already a probability vector). Code BSD,
  models CC BY-NC-SA 4.0.
* ``essentia``: ``KeyExtractor`` with the chosen ``profile`` (default
  ``bgate``, Essentia's own default). Essentia only reports the best key and
  a correlation strength, so the probability vector puts the strength on
  that key and spreads the rest over the other keys by MIREX proximity
  (fifths and relatives first). AGPL-3.0.
* ``librosa`` (permissive): CQT chroma (or STFT chroma from the shared
  frontend STFT), averaged over the track, correlated with rotated key
  profiles (default Sha'ath's); the 24 correlations go through a softmax
  (``temperature`` 0.05). ISC / BSD.
* ``ensemble`` (default): the madmom, essentia and librosa probability
  vectors pooled log-linearly (``pooling='log'``: a weighted geometric mean,
  renormalised; weights ``ensemble_weights``, 0.5/0.2/0.3), or averaged
  (``pooling='linear'``, the rule before key version 8).

Why log-linear pooling: a key one backend all but rules out stays ruled out
(a product of experts), where an average lets two backends' moderate votes
carry a key the third rejects; the pooled probability is also sharper where
the backends agree, so it reads as a probability nearly as it stands. The
pooling and its weights were chosen on the tuning corpus of
``benchmarks/accuracy.py`` alone (``benchmarks/fit_key_ensemble.py``: a 0.1
grid of weights for each pooling, mean MIREX weighted score on its 180
tracks): log-linear 0.5/0.2/0.3 scored 0.911, the best average
(0.4/0.2/0.4) 0.892, the average shipped before (0.4/0.4/0.2) 0.880.

The ensemble then takes a second look at its best key against the key a fifth
below it (:func:`subdominant_refinement`, version 11): the dominant of the true
key was its most common wrong key on every corpus (88 of 162 wrong keys on seven
fresh held-out corpora; librosa's and essentia's too), a key that shares six
of seven scale notes with the true one. The seventh (F against F sharp for C
against G major) is weighed with the two keys' pooled odds by a logistic
regression fitted on the tuning corpus. Since version 12 the corpora score a
render's key only where the span it holds has its piece's key
(:func:`mirflow.synth.corpus.span_key`), and the regression is refitted on those
keys: the tuning corpus alone then shows no gain from it (7 of its 167 scored
keys are a fifth below the pooled best), while on the nine fresh held-out
corpora (not fitted on) MIREX weighted rises on every one, 0.943 to 0.967 over
their 1021 scored keys. It is kept on that evidence (docs/accuracy.md says
which corpus came after the choice).

The averaged weights before version 8 (0.4/0.4/0.2) were chosen on 90 plain
triad arrangements (FluidSynth clean and with noise or MP3, an additive
renderer), where madmom errs confidently (p ≥ 0.97 on a wrong key; MIREX
weighted madmom 0.85, Essentia bgate 1.00, librosa/Sha'ath 0.94). On the
rendered scores of the tuning corpus (chorales, quartets, piano works, folk
songs, jigs, reels) madmom alone is the strongest of the three (0.847,
Essentia 0.788, librosa 0.757), as on real music (GiantSteps: madmom ≈ 0.75,
edma ≈ 0.66), hence its larger weight now; the bare triads of
``tests/test_key.py`` still come out right.

No key is reported (all columns null) when the audio is silent (RMS below
``silence_dbfs``) or has no tonal centre: the pitch-class profile of the
track is nearly flat (flatness of the summed STFT chroma above
``max_chroma_flatness``, 0.96) *and* so is every frame (chroma noisiness
above :data:`NOISY_FRAMES`). Measured on 30 generated tracks clean and
30 degraded (noise at 6-30 dB SNR, MP3) the flatness stayed ≤ 0.92, on
white, pink and brown noise ≥ 0.998, but a real soundtrack (lincity-ng's
"lincity" by pronobozo) reached 0.98: flatness alone withheld its key. madmom's own output entropy separates
too (music ≤ 0.76, noise ≥ 0.87 of the maximum) but is not available to the
permissive backend, so one rule serves all backends.

The madmom spectrograms and the librosa chroma are computed once per track
and shared with the chord extractor (:mod:`mirflow.extractors.chords`)
through :mod:`mirflow.extractors._tonal_features`: the key network takes
every second frame of the 65–2100 Hz log-filtered spectrogram, which is
exactly the 5 frames/s input it was trained on (identical output to
madmom's own ``CNNKeyRecognitionProcessor``, checked to 0.0).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit, softmax

from mirflow.errors import ParameterError
from mirflow.extractors._rhythm_features import onset_features
from mirflow.extractors._tonal_features import (
    LIBROSA_SR,
    MADMOM_SR,
    librosa_chroma,
    madmom_log_filtered,
    quiet_onnxruntime,
)
from mirflow.extractors.base import Extraction, Extractor, Params, WindowPart, longest_reason, param
from mirflow.extractors.calibration import calibrate
from mirflow.extractors.requirements import ESSENTIA, LIBROSA, MADMOM, Requirement
from mirflow.labels import Key

log = logging.getLogger(__name__)

#: madmom's key labels are ordered A major … G# major, A minor … G# minor;
#: this maps our index (C = 0) to theirs.
_MADMOM_ORDER = np.array([(i % 12 + 3) % 12 + (12 if i >= 12 else 0) for i in range(24)])

ESSENTIA_PROFILES = ("edma", "edmm", "bgate", "braw", "temperley", "temperley2005", "krumhansl",
                     "shaath", "gomez", "noland", "diatonic", "tonictriad", "thpcp", "weichai")

# Key profiles for the librosa backend (index 0 = tonic).
#: Krumhansl & Kessler (1982) probe-tone ratings.
_KRUMHANSL = (
    np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88]),
    np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17]),
)
#: Temperley (1999) "Kostka-Payne" profiles.
_TEMPERLEY = (
    np.array([5.0, 2.0, 3.5, 2.0, 4.5, 4.0, 2.0, 4.5, 2.0, 3.5, 1.5, 4.0]),
    np.array([5.0, 2.0, 3.5, 4.5, 2.0, 4.0, 2.0, 4.5, 3.5, 2.0, 1.5, 4.0]),
)
#: Sha'ath (2011) profiles, tuned on popular and electronic music.
_SHAATH = (
    np.array([6.6, 2.0, 3.5, 2.3, 4.6, 4.0, 2.5, 5.2, 2.4, 3.7, 2.3, 3.4]),
    np.array([6.5, 2.7, 3.5, 5.4, 2.6, 3.5, 2.5, 5.2, 4.0, 2.7, 4.3, 3.2]),
)
LIBROSA_PROFILES = {"krumhansl": _KRUMHANSL, "temperley": _TEMPERLEY, "shaath": _SHAATH}
#: How the ensemble may pool its backends' probabilities (:meth:`KeyExtractor.combine`).
POOLINGS = ("log", "linear")
#: Floor on each backend's probabilities before log-linear pooling: a strong vote against a key,
#: never ``-inf``, and no single backend's certainty beyond it. On the 502 tuning and held-out
#: tracks of ``benchmarks/accuracy.py`` the librosa backend's softmax (temperature 0.05) gave its
#: least likely key 1e-16 to 1e-14, madmom's network ~4e-4 (median) and Essentia's vector ~3e-3.
#: The weights were chosen with this floor (``benchmarks/fit_key_ensemble.py``).
LOG_POOL_FLOOR = 1e-6
#: The ensemble's second look at its best key against the key a fifth below
#: (:func:`subdominant_refinement`): logistic-regression weights of the pitch-class evidence
#: (:func:`subdominant_evidence`) and of the pooled log odds of that key over the best one, and the
#: intercept. Fitted by ``benchmarks/fit_key_ensemble.py --subdominant`` on the 167 tuning tracks
#: whose key is scored (stop 32: a render keeps its piece's key only where its span holds it,
#: :func:`mirflow.synth.corpus.span_key`) alone (scikit-learn ``LogisticRegression``, C = 10 of
#: 0.1/1/10 by out-of-fold log loss in 10 x 5-fold cross-validation, 0.071 against 0.174 for the prior
#: alone). On 7 of them the key is a fifth below the pooled best, and out of fold the refinement moves
#: 5 keys, 3 to the key and 2 away from it (MIREX weighted -0.003): the tuning corpus alone no longer
#: shows a gain. Stop 30 fitted it on 204 tracks (the movement's key as every render's truth), 11 of
#: whose 18 keys a fifth below the pooled best were renders whose span does not hold that key.
SUBDOMINANT_WEIGHTS: tuple[float, float] = (3.197, 1.126)
SUBDOMINANT_INTERCEPT = 2.718
#: Added to both pitch-class shares of :func:`subdominant_evidence` (profiles sum to 1): a pitch class
#: that is all but absent from both keys' music says nothing either way.
SUBDOMINANT_PC_FLOOR = 0.01


@dataclass(frozen=True, kw_only=True)
class KeyParams(Params):
    backend: str = param("ensemble", choices=("ensemble", "madmom", "essentia", "librosa"),
                         doc="Key estimator; 'ensemble' pools the probabilities of all three (see pooling)")
    profile: str = param("bgate", choices=ESSENTIA_PROFILES,
                         doc="Essentia KeyExtractor profile (essentia and ensemble backends)")
    librosa_profile: str = param("shaath", choices=tuple(LIBROSA_PROFILES),
                                 doc="Key profile correlated with the chroma (librosa and ensemble backends)")
    chroma: str = param("cqt", choices=("cqt", "stft"),
                        doc="Chroma of the librosa backend: constant-Q, or from the shared frontend STFT")
    ensemble_weights: tuple[float, ...] = param((0.5, 0.2, 0.3),
                                                doc="Weights of madmom, essentia and librosa in the ensemble")
    pooling: str = param("log", choices=POOLINGS,
                         doc="How the ensemble pools its backends' probabilities: a weighted geometric mean "
                             "('log') or a weighted average ('linear')")
    temperature: float = param(0.05, range=(1e-3, 10.0),
                               doc="Softmax temperature turning profile correlations into probabilities")
    silence_dbfs: float = param(-60.0, range=(-140.0, 0.0),
                                doc="RMS level below which the track counts as silent (no key)")
    max_chroma_flatness: float = param(0.96, range=(0.0, 1.0),
                                       doc="Flatness of the summed STFT chroma above which there is no key (noise, atonal)")
    refine_subdominant: bool = param(True, doc="ensemble backend: weigh its best key against the key a fifth "
                                               "below by the pitch class that tells them apart "
                                               "(subdominant_refinement)")

    def __post_init__(self) -> None:
        super().__post_init__()
        w = self.ensemble_weights
        if len(w) != 3 or any(not isinstance(x, (int, float)) or x < 0 for x in w) or sum(w) <= 0:
            raise ParameterError(f"{self._where('ensemble_weights')} must be three non-negative numbers "
                                 f"(madmom, essentia, librosa) with a positive sum, got {w!r}")


# --------------------------------------------------------------------- madmom
@functools.lru_cache(maxsize=1)
def _madmom_key_network() -> Any:
    """The key CNN ensemble, loaded once per process (never stored on an instance)."""
    from madmom.ml.nn import NeuralNetworkEnsemble
    from madmom.models import KEY_CNN

    from mirflow.models.onnx_memory import without_arena

    quiet_onnxruntime()
    # One ONNX thread and no process pool: workers are the unit of parallelism; no
    # memory arena, which would keep the largest track's buffers for the worker's life.
    return without_arena(NeuralNetworkEnsemble.load(list(KEY_CNN), num_threads=1, intra_op_num_threads=1))


def madmom_key_probabilities(frontend: Any) -> np.ndarray:
    """24 key probabilities (our index order) from madmom's CNN."""
    spec = madmom_log_filtered(frontend, 65.0, 2100.0)[::2]  # 5 frames/s, as trained
    # the softmax CNNKeyRecognitionProcessor applies (madmom's is the same formula)
    out = softmax(np.asarray(_madmom_key_network()(spec)).reshape(1, 24), axis=1)
    return np.asarray(out, dtype=np.float64).reshape(24)[_MADMOM_ORDER]


# -------------------------------------------------------------------- essentia
def _spread(best: Key, p_best: float) -> np.ndarray:
    """A 24-vector with ``p_best`` on ``best`` and the rest on its neighbours by MIREX proximity."""
    from mirflow.labels import all_keys, mirex_score

    near = np.array([mirex_score(best, k) if k != best else 0.0 for k in all_keys()]) + 0.05
    near[best.index] = 0.0
    probs = (1.0 - p_best) * near / near.sum()
    probs[best.index] = p_best
    return probs


def essentia_key_probabilities(frontend: Any, profile: str) -> np.ndarray:
    """24 pseudo-probabilities from Essentia's ``KeyExtractor``: its strength on its key, the rest spread."""
    from mirflow.extractors._essentia import essentia_standard

    es = essentia_standard()

    from mirflow.labels import parse_key

    audio = np.ascontiguousarray(frontend.signal(MADMOM_SR), dtype=np.float32)
    tonic, scale, strength = es.KeyExtractor(profileType=profile, sampleRate=float(MADMOM_SR))(audio)
    best = parse_key(f"{tonic} {scale}")
    if best is None:
        return np.full(24, 1.0 / 24)
    # The strength is the profile correlation of the winning key. On 90
    # generated tracks it ranged 0.76-0.98 and did not separate right from
    # wrong keys (edma's two errors had 0.80 and 0.84), so no fitted map:
    # it is used as the probability directly.
    return _spread(best, float(np.clip(strength, 1.0 / 24, 0.99)))


# --------------------------------------------------------------------- librosa
def profile_correlations(pcp: np.ndarray, profile: str = "shaath") -> np.ndarray:
    """Pearson correlation of a 12-bin pitch-class profile with the 24 rotated key profiles.

    Examples
    --------
    >>> pcp = np.zeros(12); pcp[[0, 4, 7]] = 1.0  # a C major triad
    >>> int(np.argmax(profile_correlations(pcp)))  # 0 = C major
    0
    """
    major, minor = LIBROSA_PROFILES[profile]
    x = pcp - pcp.mean()
    out = np.empty(24)
    for mode, prof in enumerate((major, minor)):
        for tonic in range(12):
            y = np.roll(prof, tonic)
            y = y - y.mean()
            denom = np.linalg.norm(x) * np.linalg.norm(y)
            out[12 * mode + tonic] = float(x @ y / denom) if denom > 0 else 0.0
    return out


def subdominant_evidence(pcp: np.ndarray, best: Key) -> float:
    """Log ratio of the pitch class only the key a fifth below ``best`` has to the one only ``best`` has.

    A key and the key a fifth below it share six of their seven scale notes; G major has F sharp
    where C major has F (the subdominant's fourth degree against the key's leading tone), E minor F
    sharp where A minor has F (natural minor). A piece in C major whose opening dwells on the
    dominant (melody on G and D, cadences on G) correlates with G major's profile, yet has F and
    little F sharp: the one note that tells the two keys apart. Each share is floored at
    :data:`SUBDOMINANT_PC_FLOOR`.

    Examples
    --------
    >>> import numpy as np
    >>> c_major = np.zeros(12); c_major[[0, 2, 4, 5, 7, 9, 11]] = 1.0
    >>> round(subdominant_evidence(c_major, Key(7, "major")), 2)  # G major's F# is absent, C major's F is there
    2.73
    >>> subdominant_evidence(np.roll(c_major, 7), Key(7, "major")) < 0  # a G major scale: F#, no F
    True
    """
    pcp = np.asarray(pcp, dtype=np.float64)
    pcp = pcp / pcp.sum() if pcp.sum() > 0 else np.full(12, 1.0 / 12)
    only_below, only_best = ((best.tonic + 10) % 12, (best.tonic + 11) % 12) if best.mode == "major" else \
        ((best.tonic + 1) % 12, (best.tonic + 2) % 12)
    return float(np.log((pcp[only_below] + SUBDOMINANT_PC_FLOOR) / (pcp[only_best] + SUBDOMINANT_PC_FLOOR)))


def subdominant_pair(probs: np.ndarray) -> tuple[int, int]:
    """Indices of the pooled best key and of the key a fifth below it (same mode)."""
    best = Key.from_index(int(np.argmax(probs)))
    return best.index, Key((best.tonic + 5) % 12, best.mode).index


def subdominant_features(probs: np.ndarray, pcp: np.ndarray) -> np.ndarray:
    """What :func:`subdominant_refinement` weighs: :func:`subdominant_evidence` and the pooled log odds
    of the key a fifth below the best one over the best (both floored at 1e-9), the order of
    :data:`SUBDOMINANT_WEIGHTS` (``benchmarks/fit_key_ensemble.py`` fits on these)."""
    best, below = subdominant_pair(probs)
    log_odds = float(np.log(max(probs[below], 1e-9)) - np.log(max(probs[best], 1e-9)))
    return np.array([subdominant_evidence(pcp, Key.from_index(best)), log_odds])


def subdominant_refinement(probs: np.ndarray, pcp: np.ndarray | None = None, *,
                           p_below: float | None = None) -> np.ndarray:
    """The ensemble's 24 probabilities with its best key's and the key a fifth below's share of their
    joint probability set again from the pitch class that tells them apart.

    Before it (key version 10), the ensemble's most common wrong key, on the tuning corpus and on
    every held-out corpus, was the dominant of the true key (88 of 162 wrong keys on the seven fresh
    held-out corpora of stop 30); all three backends make that mistake. The probability that the key a fifth below the best one
    is the key is a logistic regression (:data:`SUBDOMINANT_WEIGHTS`, fitted on the tuning corpus)
    of :func:`subdominant_evidence` and of the two keys' pooled log odds; the two keys share their
    joint probability in that proportion, the other 22 keys keep theirs. ``p_below`` (instead of
    ``pcp``) gives that probability directly, e.g. from a model fitted without the track.

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.full(24, 0.01); probs[7], probs[0] = 0.55, 0.23   # G major first, C major second
    >>> c_major = np.zeros(12); c_major[[0, 2, 4, 5, 7, 9, 11]] = 1.0
    >>> int(np.argmax(subdominant_refinement(probs, c_major)))  # C major's F and no F#: C major
    0
    >>> int(np.argmax(subdominant_refinement(probs, np.roll(c_major, 7))))  # G major's F#: stays
    7
    """
    probs = np.asarray(probs, dtype=np.float64)
    best, below = subdominant_pair(probs)
    if p_below is None:
        if pcp is None:
            raise ValueError("subdominant_refinement needs the pitch-class profile or p_below")
        p_below = float(expit(np.dot(SUBDOMINANT_WEIGHTS, subdominant_features(probs, pcp)) + SUBDOMINANT_INTERCEPT))
    out = probs.copy()
    joint = probs[best] + probs[below]
    out[below], out[best] = p_below * joint, (1.0 - p_below) * joint
    return out


def track_pcp(chroma: np.ndarray) -> np.ndarray:
    """Mean pitch-class profile of a track, each frame normalised first so loud passages do not dominate."""
    if chroma.size == 0:
        return np.zeros(12)
    frame_max = chroma.max(axis=0, keepdims=True)
    frames = chroma / np.where(frame_max > 0, frame_max, 1.0)
    return frames.mean(axis=1)


def chroma_flatness(pcp: np.ndarray) -> float:
    """Spectral flatness (geometric / arithmetic mean) of a pitch-class profile: 1 = flat (noise)."""
    pcp = np.maximum(np.asarray(pcp, dtype=np.float64), 1e-12)
    return float(np.exp(np.mean(np.log(pcp))) / np.mean(pcp))


# ------------------------------------------------------------------- extractor
#: Frame-wise chroma noisiness (:attr:`~mirflow.extractors._rhythm_features.OnsetFeatures.noisiness`)
#: above which a flat pitch-class profile means noise: white, pink and brown noise and random
#: clicks measured 0.76-0.82, generated music 0.1-0.35, 13 game-soundtrack excerpts
#: (Debian lincity-ng-data, extremetuxracer-data) 0.17-0.42.
NOISY_FRAMES = 0.6
#: Unpitched percussion: a drum kit alone (mirflow.synth's numpy kit) measured flatness 0.95 and
#: noisiness 0.59; music up to 0.98 flatness but noisiness at most 0.42 (see :data:`NOISY_FRAMES`),
#: and generated music with 6-30 dB noise or MP3 at most 0.92 flatness.
UNPITCHED_FLATNESS = 0.94
UNPITCHED_NOISINESS = 0.5


class KeyExtractor(Extractor):
    """Global key with confidence and runner-up, rendered in mir_eval, JAMS, Camelot and Open Key form.

    Examples
    --------
    >>> import numpy as np
    >>> from mirflow.frontend import Frontend
    >>> sr = 22050
    >>> t = np.arange(8 * sr) / sr
    >>> triad = sum(np.sin(2 * np.pi * f * t) for f in (261.63, 329.63, 392.0, 130.81))
    >>> out = KeyExtractor(backend="librosa").extract(Frontend.from_array(0.2 * triad, sr))
    >>> out.columns["key"], out.columns["key_camelot"]
    ('C major', '8B')
    """

    name = "key"
    # 3: key confidences through the maps refitted on the varied tuning corpus (calibration.json;
    # the ensemble keeps its raw probability, which cross-validation preferred); 4: the CQT chroma
    # tuned by the STFT chroma's tuning estimate (one estimate instead of two); 5: the essentia and
    # librosa backends' confidence maps refitted on the 84-track varied tuning corpus; 6: those maps
    # refitted again with the 24 tuning jigs; 7: and with the 24 tuning reels (the ensemble's map is
    # still the identity); 8: the ensemble pools log-linearly with weights 0.5/0.2/0.3 (chosen on the
    # tuning corpus, benchmarks/fit_key_ensemble.py) and its confidence map is refitted; 9: the
    # ensemble's confidence is its pooled probability again (the one-standard-error rule of
    # calibration.choose_method keeps the identity map); 10: the essentia and librosa backends' maps
    # refitted with the 24 tuning piano tracks (the ensemble's is still the identity); 11: the ensemble
    # weighs its best key against the key a fifth below (subdominant_refinement) and the maps are refitted;
    # 12: the refinement and every map refitted on the tuning corpus's scored keys (a render keeps its
    # piece's key only where its span holds it, mirflow.synth.corpus.span_key)
    version = "12"
    Params = KeyParams
    columns = ("key", "key_tonic", "key_mode", "key_jams", "key_camelot", "key_openkey",
               "key_confidence", "key_alt", "key_alt_confidence")
    requires = ("signal", "stft", "mel", "cached")
    libraries = ("madmom", "essentia", "librosa")
    licences = ("BSD-3-Clause code + CC BY-NC-SA 4.0 models (madmom backend)",
                "AGPL-3.0 (essentia backend)", "ISC (librosa backend)")

    def probabilities(self, frontend: Any) -> dict[str, np.ndarray]:
        """The 24-way key probabilities of each backend the configured ``backend`` uses."""
        p: KeyParams = self.params
        out: dict[str, np.ndarray] = {}
        if p.backend in ("madmom", "ensemble"):
            out["madmom"] = madmom_key_probabilities(frontend)
        if p.backend in ("essentia", "ensemble"):
            out["essentia"] = essentia_key_probabilities(frontend, p.profile)
        if p.backend in ("librosa", "ensemble"):
            out["librosa"] = softmax(profile_correlations(self.pcp(frontend), p.librosa_profile) / p.temperature)
        return out

    def pcp(self, frontend: Any) -> np.ndarray:
        """The track's pitch-class profile (the librosa backend's, and the ensemble's refinement's)."""
        return track_pcp(librosa_chroma(frontend, self.params.chroma))

    def combine(self, probs: dict[str, np.ndarray]) -> np.ndarray:
        """The backends' probability vectors pooled with ``ensemble_weights`` (one backend: itself).

        ``pooling='log'`` is the weighted geometric mean, renormalised
        (probabilities floored at :data:`LOG_POOL_FLOOR` first); ``'linear'``
        the weighted average.

        Examples
        --------
        >>> import numpy as np
        >>> madmom, other = np.full(24, 0.5 / 22), np.full(24, 0.3 / 22)
        >>> madmom[0], madmom[1], other[0], other[1] = 0.5, 1e-4, 0.1, 0.6
        >>> probs = {"madmom": madmom, "essentia": other, "librosa": other}
        >>> weights = (0.34, 0.33, 0.33)
        >>> int(np.argmax(KeyExtractor(ensemble_weights=weights).combine(probs)))  # madmom rules key 1 out
        0
        >>> int(np.argmax(KeyExtractor(ensemble_weights=weights, pooling="linear").combine(probs)))
        1
        """
        p: KeyParams = self.params
        if len(probs) == 1:
            return next(iter(probs.values()))
        weights = dict(zip(("madmom", "essentia", "librosa"), p.ensemble_weights, strict=False))
        total = sum(weights.get(name, 0.0) for name in probs)
        if total <= 0:
            raise ParameterError("ensemble_weights give every available backend weight zero")
        if p.pooling == "linear":
            return sum(weights.get(name, 0.0) * v for name, v in probs.items()) / total
        log_pooled = sum(weights.get(name, 0.0) / total * np.log(np.maximum(v, LOG_POOL_FLOOR))
                         for name, v in probs.items())
        return softmax(log_pooled)

    def tonal_evidence(self, frontend: Any) -> tuple[float, float]:
        """RMS level in dBFS and chroma flatness of the track: the no-key evidence.

        The flatness is that of the summed STFT chroma (8192-point frames at
        22.05 kHz, whatever the backend): on generated music, clean, with
        noise at 6-30 dB SNR or through MP3, it stayed at or below 0.92, on white, pink and
        brown noise at or above 0.998, whereas the CQT chroma's flatness let
        noisy music and brown noise overlap (0.98 each).
        """
        rms_db = frontend.rms_dbfs(LIBROSA_SR)
        if rms_db < self.params.silence_dbfs:
            return rms_db, 1.0
        return rms_db, chroma_flatness(librosa_chroma(frontend, "stft").sum(axis=1))

    def requirements(self) -> tuple[Requirement, ...]:
        return {"ensemble": (MADMOM, ESSENTIA, LIBROSA), "madmom": (MADMOM, LIBROSA), "essentia": (ESSENTIA,),
                "librosa": (LIBROSA,)}[self.params.backend]

    def extract(self, frontend: Any) -> Extraction:
        p: KeyParams = self.params
        if frontend.is_empty or frontend.duration_s < 1.0:
            return self.empty("no key: empty or shorter than 1 s", reason="too short")
        rms_db, flatness = self.tonal_evidence(frontend)
        if rms_db < p.silence_dbfs:
            return self.empty(f"no key: silent (RMS {rms_db:.1f} dBFS)", reason="silent")
        if flatness > UNPITCHED_FLATNESS:
            # A flat profile over the whole track is also what dense, chromatic
            # or modulating music gives (a real game soundtrack measured 0.98);
            # noise is flat in every frame too, music is not.
            noisiness = onset_features(frontend).noisiness
            if flatness > p.max_chroma_flatness and noisiness > NOISY_FRAMES:
                return self.empty(f"no key: flat pitch-class profile (flatness {flatness:.2f}) and noise-like "
                                  f"frames (noisiness {noisiness:.2f})", reason="flat pitch-class profile")
            if noisiness > UNPITCHED_NOISINESS:
                return self.empty(f"no key: nearly flat pitch-class profile (flatness {flatness:.2f}) and "
                                  f"noisy frames (noisiness {noisiness:.2f}): unpitched percussion",
                                  reason="no pitched content")
        probs = self.combine(self.probabilities(frontend))
        note = f"chroma flatness {flatness:.2f}"
        if p.backend == "ensemble" and p.refine_subdominant:
            refined = subdominant_refinement(probs, self.pcp(frontend))
            if np.argmax(refined) != np.argmax(probs):
                note += f"; {Key.from_index(int(np.argmax(refined)))} over {Key.from_index(int(np.argmax(probs)))} " \
                        "by the pitch class that tells them apart"
            probs = refined
        return self._decide(probs, note)

    def _decide(self, probs: np.ndarray, note: str) -> Extraction:
        """The key, its runner-up and their calibrated confidences from the 24 combined probabilities."""
        p: KeyParams = self.params
        order = np.argsort(-probs, kind="stable")
        best, alt = Key.from_index(int(order[0])), Key.from_index(int(order[1]))
        # a probability that the key is right (see mirflow.extractors.calibration); the runner-up
        # keeps its odds against the key, so it never outranks it
        raw, raw_alt = float(probs[order[0]]), float(probs[order[1]])
        confidence = calibrate("key", p.backend, raw)
        alt_confidence = min(raw_alt * confidence / raw, confidence) if raw > 0 else 0.0
        return self.result({
            "key": best.mir_eval,
            "key_tonic": best.tonic,
            "key_mode": best.mode,
            "key_jams": best.jams,
            "key_camelot": best.camelot,
            "key_openkey": best.openkey,
            "key_confidence": confidence,
            "key_alt": alt.mir_eval,
            "key_alt_confidence": alt_confidence,
        }, None, note, summary={"probabilities": probs})

    # ------------------------------------------------------ long tracks
    def merges_windows(self) -> bool:
        return True

    def merge(self, parts: Sequence[WindowPart]) -> Extraction:
        """The key of the windows' probabilities averaged over their shares (windows without a key left out).

        The no-key rules ran per window: silence, noise or drums alone in
        one window do not withhold the key of the music around them, and a
        track gets no key only when no window has one (with the reason of
        the longest-lasting).
        """
        keyed = [part for part in parts if "probabilities" in part.extraction.summary]
        if not keyed:
            return self.empty("no key in any window", reason=longest_reason(parts))
        weights = np.array([part.core_s for part in keyed])
        probs = np.sum([w * part.extraction.summary["probabilities"] for w, part in zip(weights, keyed,
                                                                                          strict=True)], axis=0)
        return self._decide(probs / weights.sum(), f"merged {len(keyed)} of {len(parts)} windows")
