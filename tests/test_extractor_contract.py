"""Every registered extractor passes the same checks (scikit-learn's check_estimator idea)."""

from __future__ import annotations

import dataclasses
import datetime
import pickle

import numpy as np
import pytest
from conftest import tone_mix

from mirflow.catalog.schema import conform, table_schema
from mirflow.errors import ParameterError
from mirflow.extractors import Extraction, registry
from mirflow.frontend import INPUTS, Frontend

# Extractors whose backends need a model that may be absent are still checked
# when importable; a missing module is reported, not silently skipped.
NAMES = registry.names()


def _instance(name):
    try:
        cls = registry.get(name)
    except ImportError as exc:
        pytest.fail(f"registered extractor {name!r} cannot be imported: {exc}")
    return cls()


def _conforms(ex, out: Extraction) -> None:
    assert isinstance(out, Extraction)
    assert set(out.columns) == set(ex.columns)
    row = {"track_id": ["t" * 32], "path": ["x"], "file_size_bytes": [1], "pipeline": ["p"],
           "pipeline_version": ["v"], "mirflow_version": ["0"], "analyzed_at": [datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)],
           "analysis_sample_rate_hz": [44100], "downmix": ["mean"], "lineage": ["{}"], "analysis_seconds": [0.0]}
    row.update({k: [v] for k, v in out.columns.items()})
    conform("tracks", row, fill_missing=True)
    assert set(out.tables) == set(ex.tables)
    for table, rows in out.tables.items():
        n = len(next(iter(rows.values()))) if rows else 0
        data = {"track_id": ["t" * 32] * n, **rows}
        if not rows:
            continue
        sizes = table_schema(table).sizes_of(data)
        conform(table, data, sizes=sizes)
    for value in out.columns.values():
        if isinstance(value, float):
            assert np.isfinite(value), "use None, not NaN/inf, for 'no value'"


@pytest.fixture(scope="module")
def music() -> Frontend:
    return Frontend.from_array(tone_mix(12.0, sr=44100, seed=5), 44100)


@pytest.mark.parametrize("name", NAMES)
def test_declaration(name):
    cls = registry.get(name)
    assert cls.name == name and cls.version
    assert set(cls.requires) <= INPUTS
    assert dataclasses.is_dataclass(cls.Params)
    assert cls.Params.__dataclass_params__.frozen
    assert cls.licences, f"{name} must name the licences of what it runs"


@pytest.mark.parametrize("name", NAMES)
def test_schema_conformance_and_determinism(name, music):
    ex = _instance(name)
    a = ex.extract(music)
    _conforms(ex, a)
    b = ex.extract(Frontend.from_array(music.audio.samples, music.native_sample_rate_hz))
    assert repr(a.columns) == repr(b.columns)
    assert repr(a.tables) == repr(b.tables)


@pytest.mark.parametrize("name", NAMES)
def test_silence_and_empty(name):
    ex = _instance(name)
    for samples in (np.zeros(44100 * 5, dtype=np.float32), np.zeros(0, dtype=np.float32),
                    np.zeros(100, dtype=np.float32)):
        out = ex.extract(Frontend.from_array(samples, 44100))
        _conforms(ex, out)
        # Every empty value has a reason the catalog stores (tracks.empty_reasons).
        left_out = [c for c, v in out.columns.items() if v is None]
        if left_out:
            assert out.reasons and all(isinstance(r, str) and r for r in out.reasons), (name, left_out)


@pytest.mark.parametrize("name", NAMES)
def test_bad_parameters_name_the_key(name):
    cls = registry.get(name)
    with pytest.raises(ParameterError, match="no_such_param"):
        cls({"no_such_param": 1})
    for field in dataclasses.fields(cls.Params):
        if "choices" in field.metadata:
            with pytest.raises(ParameterError, match=field.name):
                cls({field.name: "__not_a_choice__"})
        if "range" in field.metadata:
            lo, hi = field.metadata["range"]
            bad = (hi + abs(hi) + 1) if hi is not None else (lo - abs(lo) - 1)
            if isinstance(field.default, int) and not isinstance(field.default, bool):
                bad = int(bad)
            with pytest.raises(ParameterError, match=field.name):
                cls({field.name: bad})


@pytest.mark.parametrize("name", NAMES)
def test_picklable_and_small(name, music):
    ex = _instance(name)
    ex.extract(music)  # models loaded by a run must not end up on the instance
    blob = pickle.dumps(ex)
    assert len(blob) < 10_000
    assert pickle.loads(blob) == ex
