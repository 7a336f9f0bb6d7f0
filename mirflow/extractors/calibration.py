"""Calibrated confidences: ``tempo_confidence`` and ``key_confidence`` as probabilities.

An extractor's raw confidence (the ensemble's clarity times its metrical-level
probability, the key ensemble's averaged probability) ranks tracks well but is
not a probability: on the tuning corpus raw key confidences of 0.5 were right
far more than half the time. Each (extractor, backend) pair gets a monotone
map from raw confidence to the share of tracks that were right, fitted by
isotonic regression (scikit-learn) on the tuning corpus of
``benchmarks/accuracy.py`` and stored as plain breakpoints in
``calibration.json`` next to this module (no pickle): the map is
``numpy.interp(raw, x, y)``, clipped to the end points. "Right" means tempo
Accuracy1 (within 4 % of the notated beat) and the exact key.

A pair without a stored map keeps its raw confidence. The file records the
corpus, seeds, sizes and date of the fit; :func:`fit_calibration` and
``benchmarks/accuracy.py --fit-calibration`` make it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: The breakpoints, shipped with the package.
CALIBRATION_FILE = Path(__file__).with_name("calibration.json")
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
    if raw is None or _DISABLED[0]:
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


def fit_isotonic(raw: Sequence[float | None], correct: Sequence[float]) -> tuple[list[float], list[float]]:
    """Isotonic breakpoints ``(x, y)`` mapping raw confidence to the share right.

    A missing raw confidence counts as 0.

    Examples
    --------
    >>> x, y = fit_isotonic([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])
    >>> float(np.interp(0.85, x, y))
    1.0
    """
    from sklearn.isotonic import IsotonicRegression

    r = np.array([0.0 if v is None or not np.isfinite(v) else float(v) for v in raw], dtype=float)
    hit = np.asarray(correct, dtype=float)
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip", increasing=True).fit(r, hit)
    x = [round(float(v), 6) for v in iso.X_thresholds_]
    y = [round(float(v), 6) for v in iso.y_thresholds_]
    return x, y


def fit_calibration(samples: dict[str, tuple[Sequence[float | None], Sequence[float]]], *, corpus: str,
                    path: Path | None = None) -> dict[str, Any]:
    """Fit and write the maps of several (extractor, backend) pairs.

    Parameters
    ----------
    samples : dict
        ``'rhythm/ensemble'`` -> (raw confidences, 1/0 right) on the tuning corpus.
    corpus : str
        What the samples were measured on (corpus, seeds, sizes), recorded in the file.
    path : Path, optional
        Where to write (default :data:`CALIBRATION_FILE`).

    Returns
    -------
    dict
        What was written.
    """
    maps = {}
    for key, (raw, correct) in sorted(samples.items()):
        if len(raw) < 10:
            log.warning("calibration %s: only %d samples, not fitted", key, len(raw))
            continue
        x, y = fit_isotonic(raw, correct)
        maps[key] = {"x": x, "y": y, "n": len(raw), "share_right": round(float(np.mean(correct)), 4)}
    data = {"about": "Isotonic maps raw confidence -> P(right), see mirflow.extractors.calibration; "
                     "right = tempo within 4 % of the notated beat / exact key.",
            "fitted_on": corpus, "fitted_at": f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}",
            "maps": maps}
    target = path or CALIBRATION_FILE
    target.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    _load.cache_clear()
    return data
