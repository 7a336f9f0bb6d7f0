"""Pipelines are validated before anything is scheduled."""

from __future__ import annotations

import pytest

from mirflow.errors import ConfigError
from mirflow.pipeline import available_pipelines, load_pipeline, parse_pipeline


def test_shipped_pipelines_validate():
    shipped = available_pipelines()
    assert "default" in shipped
    for name in shipped:
        p = load_pipeline(name)
        assert p.name == name and p.extractors
        assert p.fingerprint.startswith(f"{name}-v{p.version}-")


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ({"name": "x", "extractors": ["metadata"], "extra": 1}, "unknown pipeline key"),
        ({"name": "x", "extractors": []}, "non-empty list"),
        ({"name": "x", "extractors": ["nope"]}, "unknown extractor 'nope'"),
        ({"name": "x", "extractors": [{"name": "loudness", "params": {"bakend": "x"}}]}, "'bakend'"),
        ({"name": "x", "extractors": [{"name": "loudness", "params": {"backend": "x"}}]}, "backend"),
        ({"name": "x", "extractors": [{"name": "loudness", "parms": {}}]}, "unknown key"),
        ({"name": "x", "decode": {"analysis_sample_rate_hz": 5}, "extractors": ["metadata"]}, "out of range"),
        ({"name": "x", "runtime": {"retries": "two"}, "extractors": ["metadata"]}, "retries"),
        ({"name": "x", "runtime": {"timeout": 3}, "extractors": ["metadata"]}, "runtime.'timeout'"),
        ({"name": "x", "extractors": ["metadata", "metadata"]}, "emitted by both"),
        ({"name": "bad name!", "extractors": ["metadata"]}, "identifier"),
    ],
)
def test_config_errors_name_the_problem(raw, words):
    with pytest.raises(ConfigError, match=words):
        parse_pipeline(raw)


def test_fingerprint_tracks_what_changes_results():
    base = {"name": "x", "extractors": [{"name": "loudness", "params": {"backend": "essentia"}}]}
    a = parse_pipeline(base)
    b = parse_pipeline({**base, "runtime": {"timeout_s": 10}})
    c = parse_pipeline({"name": "x", "extractors": [{"name": "loudness", "params": {"backend": "pyloudnorm"}}]})
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_unknown_pipeline_file():
    with pytest.raises(ConfigError, match="no pipeline named"):
        load_pipeline("does-not-exist")
