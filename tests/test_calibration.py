"""Calibrated confidences (issue 9): maps stored as JSON breakpoints, chosen by cross-validation, and the ECE."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mirflow.evaluate import calibration_error
from mirflow.extractors import calibration
from mirflow.extractors.calibration import (
    CALIBRATION_FILE,
    calibrate,
    fit_calibration,
    fit_isotonic,
    raw_confidences,
)


def test_isotonic_map_is_monotone_and_fixes_an_overconfident_score():
    rng = np.random.default_rng(0)
    raw = rng.uniform(0, 1, 400)
    right = (rng.uniform(0, 1, 400) < raw ** 3).astype(float)  # raw claims far more than it delivers
    x, y = fit_isotonic(raw.tolist(), right.tolist())
    assert np.all(np.diff(x) >= 0) and np.all(np.diff(y) >= 0) and 0.0 <= min(y) <= max(y) <= 1.0
    before, _ = calibration_error(raw.tolist(), right.tolist())
    after, _ = calibration_error(np.interp(raw, x, y).tolist(), right.tolist())
    assert before > 0.15 and after < 0.05  # in-sample, as a fit should be


def test_binned_isotonic_map_never_claims_certainty_from_a_sample():
    """Every track of the top bin right is no proof of certainty: an m-estimate toward the share right of all
    samples keeps it below 1 (the key ensemble's map said 1.0 above a raw 0.906 before stop 32), and the
    weights' scale does not matter."""
    raw = np.linspace(0.0, 1.0, 100)
    right = (raw > 0.4).astype(float)  # 60 of 100 right: the top three of five bins of 20
    x, y = fit_isotonic(raw.tolist(), right.tolist(), bins=5)
    m = calibration.BIN_PRIOR_TRACKS
    assert y[-1] == pytest.approx((20 + 0.6 * m) / (20 + m), abs=1e-6)
    assert y[0] == pytest.approx(0.6 * m / (20 + m), abs=1e-6)
    assert np.all(np.diff(y) >= 0) and 0.0 < min(y) and max(y) < 1.0
    assert fit_isotonic(raw.tolist(), right.tolist(), bins=5, sample_weight=[7.0] * 100) == (x, y)


def test_maps_are_plain_json_applied_per_extractor_and_backend(tmp_path):
    path = tmp_path / "calibration.json"
    data = fit_calibration({"rhythm/ensemble": ([0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99],
                                                [0, 0, 0, 1, 0, 1, 1, 1, 1, 1])},
                           corpus="test", path=path, method="isotonic")
    stored = json.loads(path.read_text())
    assert stored["maps"] == data["maps"] and stored["fitted_on"] == "test"
    assert calibrate("rhythm", "ensemble", 0.15, path=path) == pytest.approx(0.0)
    assert calibrate("rhythm", "ensemble", 0.97, path=path) == pytest.approx(1.0)
    assert calibrate("rhythm", "librosa", 0.42, path=path) == 0.42  # no map: raw
    assert calibrate("key", "ensemble", None, path=path) is None
    with raw_confidences():
        assert calibrate("rhythm", "ensemble", 0.15, path=path) == 0.15
    calibration._load.cache_clear()


def test_shipped_calibration_is_well_formed():
    if not CALIBRATION_FILE.is_file():
        pytest.skip("no calibration.json shipped (benchmarks/accuracy.py --fit-calibration makes it)")
    data = json.loads(CALIBRATION_FILE.read_text())
    assert data["fitted_on"] and {"rhythm/ensemble", "key/ensemble"} <= set(data["maps"])
    for m in data["maps"].values():
        assert len(m["x"]) == len(m["y"]) >= 1 and m["n"] >= 10
        assert np.all(np.diff(m["x"]) >= 0) and np.all(np.diff(m["y"]) >= 0)
        assert 0.0 <= min(m["y"]) <= max(m["y"]) <= 1.0


def test_expected_calibration_error_counts_missing_confidence_as_zero():
    ece, table = calibration_error([None, 1.0], [0, 1])
    assert ece == pytest.approx(0.0) and table["n"].sum() == 2
    ece, _ = calibration_error([0.9] * 10, [1] * 5 + [0] * 5)
    assert ece == pytest.approx(0.4)


def test_platt_and_binned_isotonic_maps_are_smooth_monotone_probabilities():
    rng = np.random.default_rng(1)
    raw = rng.uniform(0, 1, 300)
    right = (rng.uniform(0, 1, 300) < 0.2 + 0.6 * raw).astype(float)
    for method in ("platt", "isotonic-5"):
        x, y = calibration.fit_map(method, raw.tolist(), right.tolist())
        assert np.all(np.diff(x) >= 0) and np.all(np.diff(y) >= 0) and 0.0 < min(y) and max(y) < 1.0
        assert len(x) <= (51 if method == "platt" else 5)
        # the truth is P(right | raw) = 0.2 + 0.6 raw: both maps get near it
        assert abs(np.interp(0.5, x, y) - 0.5) < 0.1 and np.interp(0.9, x, y) - np.interp(0.1, x, y) > 0.3
    # a score that carries no information gets the constant share right, not a falling curve
    x, y = calibration.fit_platt([0.1, 0.2, 0.8, 0.9] * 5, [1, 1, 0, 0] * 5)
    assert np.ptp(y) == pytest.approx(0.0)


def test_cross_validation_prefers_a_smooth_map_on_a_small_sample_and_respects_weights():
    rng = np.random.default_rng(2)
    raw = rng.uniform(0, 1, 120)
    right = (rng.uniform(0, 1, 120) < raw ** 2).astype(float)  # over-confident raw scores
    cv = calibration.cross_validate(raw.tolist(), right.tolist(), repeats=5)
    assert set(cv) == set(calibration.METHODS) and all(v["brier_se"] > 0 for v in cv.values())
    best = min(cv, key=lambda m: cv[m]["brier"])
    assert cv["identity"]["brier"] > cv[best]["brier"] + cv[best]["brier_se"]  # raw is beaten out of fold
    assert calibration.choose_method(cv) not in ("identity", "isotonic")
    # a raw score that is already a probability keeps its values: no map wins by one standard error
    right = (rng.uniform(0, 1, 120) < raw).astype(float)
    assert calibration.choose_method(calibration.cross_validate(raw.tolist(), right.tolist(), repeats=5)) == "identity"
    # weights move the fit: weighting the wrong half heavily lowers the fitted probabilities
    w = np.where(right > 0, 1.0, 5.0)
    _, y_plain = calibration.fit_map("platt", raw.tolist(), right.tolist())
    _, y_weighted = calibration.fit_map("platt", raw.tolist(), right.tolist(), sample_weight=w.tolist())
    assert np.mean(y_weighted) < np.mean(y_plain) - 0.1


def test_leave_one_stratum_out_shows_a_map_that_only_learned_the_tuning_mixture():
    # Two strata whose raw score says nothing: one always right, one always wrong. Random folds mix
    # both and a map learns the mixture's 0.5 (Brier ~0.25); a stratum calibrated by a map fitted on
    # the other alone is told 1 or 0 and is always wrong (Brier ~1): the shift a held-out corpus brings.
    rng = np.random.default_rng(4)
    raw = rng.uniform(0.3, 0.7, 80)
    right = np.r_[np.ones(40), np.zeros(40)]
    groups = ["always right"] * 40 + ["always wrong"] * 40
    mixed = calibration.cross_validate(raw, right, methods=("platt", "isotonic-5"), repeats=3)
    by_stratum = calibration.cross_validate(raw, right, methods=("platt", "isotonic-5"), groups=groups)
    for method in ("platt", "isotonic-5"):
        assert mixed[method]["brier"] < 0.3
        assert by_stratum[method]["brier"] > 0.8 and by_stratum[method]["ece"] > 0.8
    # strata whose score means the same thing calibrate each other as well as random folds do
    right = (rng.uniform(0, 1, 80) < raw).astype(float)
    same = calibration.cross_validate(raw, right, methods=("platt",), groups=[f"s{i % 4}" for i in range(80)])
    assert same["platt"]["brier"] < 0.3 and same["platt"]["brier_se"] > 0
    with pytest.raises(ValueError, match="groups"):
        calibration.cross_validate(raw, right, groups=["a"] * 3)


def test_fit_with_strata_records_leave_one_stratum_out_scores_but_chooses_by_random_folds(tmp_path):
    rng = np.random.default_rng(5)
    raw = rng.uniform(0, 1, 90)
    right = (rng.uniform(0, 1, 90) < raw ** 2).astype(float)
    strata = [f"stratum {i % 3}" for i in range(90)]
    data = fit_calibration({"rhythm/ensemble": (raw.tolist(), right.tolist(), np.ones(90).tolist(), strata)},
                           corpus="test", path=tmp_path / "calibration.json")
    m = data["maps"]["rhythm/ensemble"]
    assert set(m["cv_by_stratum"]) == set(calibration.METHODS)
    assert m["cv_by_stratum"] == calibration.cross_validate(raw, right, sample_weight=np.ones(90), groups=strata)
    assert m["method"] == calibration.choose_method(m["cv"])


def test_fit_records_the_method_and_cross_validation_and_env_var_gives_raw(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    raw = rng.uniform(0, 1, 40)
    right = (rng.uniform(0, 1, 40) < raw).astype(float)
    path = tmp_path / "calibration.json"
    data = fit_calibration({"key/ensemble": (raw.tolist(), right.tolist(), np.ones(40).tolist())},
                           corpus="test", path=path)
    m = json.loads(path.read_text())["maps"]["key/ensemble"]
    assert m["method"] == data["maps"]["key/ensemble"]["method"] in calibration.METHODS
    assert set(m["cv"]) == set(calibration.METHODS) and m["method"] == calibration.choose_method(m["cv"])
    assert "cv_by_stratum" not in m  # no strata given
    calibrated = calibrate("key", "ensemble", 0.3, path=path)
    assert calibrated == pytest.approx(float(np.interp(0.3, m["x"], m["y"])))
    monkeypatch.setenv(calibration.RAW_ENV, "1")
    assert calibrate("key", "ensemble", 0.3, path=path) == 0.3
    monkeypatch.setenv(calibration.RAW_ENV, "0")
    assert calibrate("key", "ensemble", 0.3, path=path) == pytest.approx(calibrated)
    calibration._load.cache_clear()
