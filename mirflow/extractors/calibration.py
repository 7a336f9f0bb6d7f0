"""Calibrated confidences: ``tempo_confidence`` and ``key_confidence`` as probabilities.

An extractor's raw confidence (the rhythm ensemble's metrical-level
probability, the key ensemble's pooled probability) ranks tracks well but is
not a probability: on the tuning corpus raw key confidences of 0.5 were right
far more than half the time. Each (extractor, backend) pair gets a monotone
map from raw confidence to the share of tracks that were right, fitted on the
tuning corpus of ``benchmarks/accuracy.py`` and stored as plain breakpoints in
``calibration.json`` next to this module (no pickle): the map is
``numpy.interp(raw, x, y)``, clipped to the end points. "Right" means tempo
Accuracy1 (within 4 % of the notated beat) and the exact key.

The map's family is chosen per pair by cross-validation *within* the tuning
corpus (:func:`cross_validate`, repeated stratified k-fold, weighted Brier
score): the raw confidence itself, Platt scaling (a logistic curve of the raw
confidence, scikit-learn's ``LogisticRegression`` with Platt's smoothed
targets), isotonic regression on a few equal-count bins, or full isotonic
regression (scikit-learn). On a few dozen tracks full isotonic regression
fits the sample's noise; the smoother families usually win. A more flexible
family replaces a simpler one only when it wins by more than one standard error
of the cross-validated score (:func:`choose_method`). Where the samples carry
their tuning strata (chorales, swing, jigs, ...), the file also records each
family's scores leaving one stratum out (``cv_by_stratum``): each kind of music
calibrated by a map fitted on the others, as held-out music will be. They do
not choose the family: ten strata of unequal difficulty make their standard
error two to three times the random folds', and the one-standard-error rule
then kept raw scores whose ECE was 0.18-0.20 (librosa's key and tempo, stop 28).

The rhythm ensemble's tempo confidence depends on its octave model, itself
fitted on the tuning corpus; its map is fitted on each tuning track's
confidence and tempo from an octave model fitted *without* that track
(``benchmarks/fit_octave.py`` writes them), since the in-sample ones are too
sure of themselves.

A pair without a stored map keeps its raw confidence. The file records the
corpus, seeds, sizes, method, cross-validation scores and date of the fit;
:func:`fit_calibration` and ``benchmarks/accuracy.py --fit-calibration`` make
it. With the environment variable ``MIRFLOW_RAW_CONFIDENCES=1`` (inherited by
Dask workers) or inside :func:`raw_confidences`, :func:`calibrate` returns the
raw confidence: that is how the fitting data are collected.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: The breakpoints, shipped with the package.
CALIBRATION_FILE = Path(__file__).with_name("calibration.json")
#: Environment variable that turns calibration off (raw confidences), in every process that inherits it.
RAW_ENV = "MIRFLOW_RAW_CONFIDENCES"
#: Map families :func:`fit_calibration` chooses from, simplest first (a tie goes to the simpler).
METHODS: tuple[str, ...] = ("identity", "platt", "isotonic-5", "isotonic")
#: The m of :func:`fit_isotonic`'s m-estimate per bin: two tracks' worth of prior at the share right of
#: all samples (the strength of Laplace's rule of succession). With it the key ensemble's top bins say
#: 0.99 instead of 1.0 (stop 32).
BIN_PRIOR_TRACKS = 2.0
_DISABLED = [False]


@functools.lru_cache(maxsize=4)
def _load(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # a broken file must not stop an analysis
        log.warning("ignoring the confidence calibration in %s: %s", p, exc)
        return {}
    return data.get("maps", {})


def calibrate(extractor: str, backend: str, raw: float | None, *, path: Path | None = None) -> float | None:
    """Map a raw confidence to a calibrated probability (unchanged where no map is stored).

    Parameters
    ----------
    extractor : str
        ``'rhythm'`` or ``'key'``.
    backend : str
        The extractor's backend (``'ensemble'``, ``'librosa'``, ...).
    raw : float or None
        The raw confidence; None stays None.
    path : Path, optional
        Another calibration file (tests).

    Returns
    -------
    float or None

    Examples
    --------
    >>> calibrate("rhythm", "no-such-backend", 0.42)
    0.42
    """
    if raw is None or _DISABLED[0] or os.environ.get(RAW_ENV, "") not in ("", "0"):
        return raw
    m = _load(str(path or CALIBRATION_FILE)).get(f"{extractor}/{backend}")
    if not m:
        return raw
    return float(np.interp(float(raw), m["x"], m["y"]))


@contextlib.contextmanager
def raw_confidences() -> Iterator[None]:
    """Within this block, :func:`calibrate` returns raw confidences (to collect fitting data)."""
    _DISABLED[0] = True
    try:
        yield
    finally:
        _DISABLED[0] = False


def _as_arrays(raw: Sequence[float | None], correct: Sequence[float],
               sample_weight: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r = np.array([0.0 if v is None or not np.isfinite(v) else float(v) for v in raw], dtype=float)
    hit = np.asarray(correct, dtype=float)
    w = np.ones_like(r) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    if not r.size == hit.size == w.size:
        raise ValueError("raw, correct and sample_weight differ in length")
    return r, hit, w


def fit_isotonic(raw: Sequence[float | None], correct: Sequence[float], *,
                 sample_weight: Sequence[float] | None = None,
                 bins: int | None = None) -> tuple[list[float], list[float]]:
    """Isotonic breakpoints ``(x, y)`` mapping raw confidence to the share right.

    A missing raw confidence counts as 0.

    Parameters
    ----------
    raw, correct : sequence
        Raw confidences and 1/0 outcomes.
    sample_weight : sequence of float, optional
        Weight of each sample.
    bins : int, optional
        Fit on this many equal-count groups of the sorted raw confidences instead
        of on every sample: at most ``bins`` breakpoints, a smoother map for a
        small corpus. A group's share right is an m-estimate,
        ``(right + m * share) / (tracks + m)`` with ``share`` the share right of
        all samples and ``m`` = :data:`BIN_PRIOR_TRACKS` (weights rescaled to a
        mean of 1), not the bare share: 33 tuning keys all right are no proof of
        certainty, and the bare share made the key ensemble's map say 1.0
        (stop 32). Zadrozny & Elkan (2001) smooth calibration bins the same way;
        toward the overall share, not 1/2, because a system right nine times in
        ten is not a coin.

    Examples
    --------
    >>> x, y = fit_isotonic([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])
    >>> float(np.interp(0.85, x, y))
    1.0
    >>> x, y = fit_isotonic([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], bins=2)  # (2 + 2 * 0.5) / (2 + 2)
    >>> y
    [0.25, 0.75]
    """
    from sklearn.isotonic import IsotonicRegression

    r, hit, w = _as_arrays(raw, correct, sample_weight)
    if bins is not None and r.size > bins:
        order = np.argsort(r, kind="stable")
        groups = [g for g in np.array_split(order, bins) if g.size]
        scaled = w * (w.size / w.sum())  # tracks' worth, for the m-estimate
        prior = BIN_PRIOR_TRACKS * float(np.average(hit, weights=scaled))
        wsum = np.array([scaled[g].sum() for g in groups])
        r = np.array([np.average(r[g], weights=w[g]) for g in groups])
        hit = np.array([(np.dot(hit[g], scaled[g]) + prior) / (n + BIN_PRIOR_TRACKS)
                        for g, n in zip(groups, wsum, strict=True)])
        w = wsum
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip", increasing=True)
    iso.fit(r, hit, sample_weight=w)
    x = [round(float(v), 6) for v in iso.X_thresholds_]
    y = [round(float(v), 6) for v in iso.y_thresholds_]
    return x, y


def fit_platt(raw: Sequence[float | None], correct: Sequence[float], *,
              sample_weight: Sequence[float] | None = None, grid: int = 51) -> tuple[list[float], list[float]]:
    """Platt scaling: ``P(right) = 1 / (1 + exp(-(a * raw + b)))``, as breakpoints on a grid of 0-1.

    Fitted by scikit-learn's ``LogisticRegression`` (practically unregularized)
    on Platt's (1999) smoothed targets ``(N₊ + 1) / (N₊ + 2)`` and ``1 / (N₋ + 2)``,
    which keep the curve off 0 and 1 when one class is rare; each sample
    enters as a right and a wrong copy weighted by its target. A curve that
    does not rise (no evidence that a higher raw confidence is right more
    often) is replaced by the constant share right.

    Examples
    --------
    >>> x, y = fit_platt([0.1, 0.2, 0.3, 0.7, 0.8, 0.9], [0, 0, 1, 0, 1, 1])
    >>> bool(y[0] < 0.5 < y[-1]) and len(x) == 51
    True
    """
    from sklearn.linear_model import LogisticRegression

    r, hit, w = _as_arrays(raw, correct, sample_weight)
    n_pos, n_neg = float(w[hit > 0.5].sum()), float(w[hit <= 0.5].sum())
    scale = r.size / w.sum() if w.sum() > 0 else 1.0  # weights as counts: Platt's priors count samples
    t_pos, t_neg = (n_pos * scale + 1) / (n_pos * scale + 2), 1 / (n_neg * scale + 2)
    target = np.where(hit > 0.5, t_pos, t_neg)
    xs = np.linspace(0.0, 1.0, grid)
    lr = LogisticRegression(C=1e6, max_iter=1000)
    lr.fit(np.concatenate([r, r])[:, None], np.r_[np.ones_like(r), np.zeros_like(r)],
           sample_weight=np.concatenate([w * target, w * (1 - target)]))
    ys = lr.predict_proba(xs[:, None])[:, 1]
    if lr.coef_[0, 0] <= 0:
        ys = np.full_like(xs, float(np.average(target, weights=w)))
    return [round(float(v), 6) for v in xs], [round(float(v), 6) for v in ys]


def fit_map(method: str, raw: Sequence[float | None], correct: Sequence[float], *,
            sample_weight: Sequence[float] | None = None) -> tuple[list[float], list[float]]:
    """Breakpoints of one map family of :data:`METHODS` (``'identity'``: raw stays raw).

    Examples
    --------
    >>> fit_map("identity", [0.3], [1])
    ([0.0, 1.0], [0.0, 1.0])
    """
    if method == "identity":
        return [0.0, 1.0], [0.0, 1.0]
    if method == "platt":
        return fit_platt(raw, correct, sample_weight=sample_weight)
    if method == "isotonic":
        return fit_isotonic(raw, correct, sample_weight=sample_weight)
    if method.startswith("isotonic-"):
        return fit_isotonic(raw, correct, sample_weight=sample_weight, bins=int(method.split("-", 1)[1]))
    raise ValueError(f"unknown calibration method {method!r}; choose from {METHODS}")


def weighted_ece(confidence: np.ndarray, correct: np.ndarray, weight: np.ndarray | None = None, *,
                 bins: int = 10) -> float:
    """Expected calibration error with sample weights (equal-width bins; ``mirflow.evaluate.calibration_error``'s too).

    Examples
    --------
    >>> round(weighted_ece(np.array([0.9, 0.9, 0.1, 0.1]), np.array([1, 1, 0, 0])), 2)
    0.1
    """
    c, hit = np.clip(np.asarray(confidence, float), 0, 1), np.asarray(correct, float)
    w = np.ones_like(c) if weight is None else np.asarray(weight, float)
    idx = np.clip(np.digitize(c, np.linspace(0, 1, bins + 1)[1:-1]), 0, bins - 1)
    total = w.sum()
    gaps = [w[idx == b].sum() / total * abs(np.average(c[idx == b], weights=w[idx == b])
                                            - np.average(hit[idx == b], weights=w[idx == b]))
            for b in range(bins) if w[idx == b].sum() > 0]
    return float(np.sum(gaps))


def cross_validate(raw: Sequence[float | None], correct: Sequence[float], *,
                   sample_weight: Sequence[float] | None = None, methods: Sequence[str] = METHODS,
                   folds: int = 5, repeats: int = 20, seed: int = 0,
                   groups: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Out-of-fold Brier score and ECE of each map family, by repeated stratified k-fold.

    Every sample's calibrated confidence comes from a map fitted without it;
    the weighted Brier score (mean squared error against 1/0, a proper
    scoring rule, the criterion) and the weighted ECE are averaged over the
    repeats. ``brier_se`` is the standard error of the cross-validated Brier
    score: the standard deviation of the per-fold scores (every fold of every
    repeat) over the square root of the number of folds, as in Hastie,
    Tibshirani and Friedman, *The Elements of Statistical Learning*, 7.10.

    With ``groups`` (a stratum per sample: chorales, swing, reels, ...) the
    folds are the strata instead (leave one stratum out, scikit-learn's
    ``LeaveOneGroupOut``, no repeats): every stratum is calibrated by a map
    fitted on the *other* kinds of music, which is what a held-out corpus
    asks of the map. Random folds put tracks of every stratum on both sides
    and so reward a map that learns the tuning corpus's mixture.

    Returns
    -------
    dict
        ``method -> {'brier': ..., 'brier_se': ..., 'ece': ...}``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> raw = rng.uniform(size=60)
    >>> right = (rng.uniform(size=60) < raw).astype(float)
    >>> cv = cross_validate(raw, right, groups=["a", "b", "c"] * 20, methods=("identity", "platt"))
    >>> sorted(cv), cv["identity"]["brier"] > 0
    (['identity', 'platt'], True)
    """
    from sklearn.model_selection import KFold, LeaveOneGroupOut, StratifiedKFold

    r, hit, w = _as_arrays(raw, correct, sample_weight)
    # Each round is one partition of the samples into folds: the strata once, or a repeat of k-fold.
    rounds: list[list[tuple[np.ndarray, np.ndarray]]] = []
    if groups is not None:
        g = np.asarray(list(groups))
        if g.size != r.size:
            raise ValueError("groups and raw differ in length")
        rounds.append(list(LeaveOneGroupOut().split(r[:, None], hit, g)))
    else:
        labels = (hit > 0.5).astype(int)
        k = min(folds, int(np.bincount(labels, minlength=2).min()))
        for rep in range(repeats):
            splitter = (StratifiedKFold(k, shuffle=True, random_state=seed + rep) if k >= 2
                        else KFold(min(folds, r.size), shuffle=True, random_state=seed + rep))
            rounds.append(list(splitter.split(r[:, None], labels)))
    scores: dict[str, list[tuple[float, float]]] = {m: [] for m in methods}
    fold_briers: dict[str, list[float]] = {m: [] for m in methods}
    for splits in rounds:
        oof = {m: np.empty_like(r) for m in methods}
        for train, test in splits:
            for m in methods:
                x, y = fit_map(m, r[train], hit[train], sample_weight=w[train])
                oof[m][test] = np.interp(r[test], x, y)
                fold_briers[m].append(float(np.average((oof[m][test] - hit[test]) ** 2, weights=w[test])))
        for m in methods:
            scores[m].append((float(np.average((oof[m] - hit) ** 2, weights=w)), weighted_ece(oof[m], hit, w)))
    n_folds = len(rounds[-1])
    return {m: {"brier": round(float(np.mean([b for b, _ in v])), 5),
                "brier_se": round(float(np.std(fold_briers[m], ddof=1) / np.sqrt(n_folds)), 5),
                "ece": round(float(np.mean([e for _, e in v])), 4)}
            for m, v in scores.items()}


def choose_method(cv: dict[str, dict[str, float]]) -> str:
    """The simplest family within one standard error of the lowest cross-validated Brier score.

    The one-standard-error rule (Hastie, Tibshirani and Friedman, *The Elements
    of Statistical Learning*, 7.10): a more flexible map must beat a simpler
    one by more than the cross-validation's own noise (the best family's
    ``brier_se``; 0.001 where ``cv`` has none). With a fixed 0.001 the key
    ensemble's map became isotonic regression on 5 bins (stop 25) on a Brier
    gain over its raw probability of 0.0045 (0.1528 -> 0.1483), a fraction of
    one standard error (0.0106); on the three fresh held-out corpora that map
    was the worse confidence (ECE 0.070 against 0.037 raw, 420 tracks; stop
    26, which adopted this rule after seeing that).

    Examples
    --------
    >>> choose_method({"identity": {"brier": 0.2}, "platt": {"brier": 0.1}, "isotonic": {"brier": 0.0995}})
    'platt'
    >>> choose_method({"identity": {"brier": 0.124, "brier_se": 0.005},
    ...                "isotonic-5": {"brier": 0.119, "brier_se": 0.005}})
    'identity'
    """
    best = min(cv, key=lambda m: cv[m]["brier"])
    tolerance = cv[best].get("brier_se", 1e-3)
    order = [m for m in METHODS if m in cv] + [m for m in cv if m not in METHODS]
    return next(m for m in order if cv[m]["brier"] <= cv[best]["brier"] + tolerance)


def fit_calibration(samples: dict[str, tuple[Sequence[float | None], Sequence[float]]
                                 | tuple[Sequence[float | None], Sequence[float], Sequence[float]]],
                    *, corpus: str, path: Path | None = None, method: str = "cv") -> dict[str, Any]:
    """Fit and write the maps of several (extractor, backend) pairs.

    Parameters
    ----------
    samples : dict
        ``'rhythm/ensemble'`` -> (raw confidences, 1/0 right[, sample weights[, strata]]) on the
        tuning corpus. With strata, the leave-one-stratum-out scores are recorded too
        (``cv_by_stratum``); the family is chosen by the random folds' (``cv``).
    corpus : str
        What the samples were measured on (corpus, seeds, sizes), recorded in the file.
    path : Path, optional
        Where to write (default :data:`CALIBRATION_FILE`).
    method : str
        ``'cv'`` (default): per pair, the family of :data:`METHODS` that
        :func:`cross_validate` scores best (:func:`choose_method`); or one family for all.

    Returns
    -------
    dict
        What was written.
    """
    maps = {}
    for key, sample in sorted(samples.items()):
        raw, correct = sample[0], sample[1]
        weight = sample[2] if len(sample) > 2 else None
        strata = sample[3] if len(sample) > 3 else None
        if len(raw) < 10:
            log.warning("calibration %s: only %d samples, not fitted", key, len(raw))
            continue
        entry: dict[str, Any] = {}
        chosen = method
        if method == "cv":
            entry["cv"] = cross_validate(raw, correct, sample_weight=weight)
            chosen = choose_method(entry["cv"])
            if strata is not None and len(set(strata)) > 1:
                entry["cv_by_stratum"] = cross_validate(raw, correct, sample_weight=weight, groups=strata)
        x, y = fit_map(chosen, raw, correct, sample_weight=weight)
        w = np.ones(len(raw)) if weight is None else np.asarray(weight, dtype=float)
        maps[key] = {"method": chosen, "x": x, "y": y, "n": len(raw),
                     "share_right": round(float(np.average(np.asarray(correct, dtype=float), weights=w)), 4),
                     **entry}
    data = {"about": "Maps raw confidence -> P(right) (numpy.interp over x, y), see mirflow.extractors.calibration; "
                     "right = tempo within 4 % of the notated beat / exact key; method chosen per map by "
                     "cross-validated Brier score within the tuning corpus ('cv': out-of-fold scores).",
            "fitted_on": corpus, "fitted_at": f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}",
            "maps": maps}
    target = path or CALIBRATION_FILE
    target.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    _load.cache_clear()
    return data
