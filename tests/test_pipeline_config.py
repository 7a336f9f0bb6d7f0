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
        ({"name": "x", "extractors": [{"name": "loudness", "params": {"backend": "essentia"}},
                                      {"name": "loudness", "params": {"backend": "pyloudnorm"}}]}, "emitted by both"),
        ({"name": "x", "extractors": ["metadata", "metadata"]}, "listed twice"),
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


def test_sample_rate_setting_no_extractor_reads_does_not_change_the_fingerprint(caplog):
    base = {"name": "x", "extractors": ["metadata"]}
    with caplog.at_level("WARNING"):
        with_rate = parse_pipeline({**base, "decode": {"analysis_sample_rate_hz": 22050}})
    assert with_rate.fingerprint == parse_pipeline(base).fingerprint
    assert "analysis_sample_rate_hz is ignored" in caplog.text
    assert parse_pipeline({**base, "decode": {"max_duration_s": 60}}).fingerprint != parse_pipeline(base).fingerprint


def test_the_same_extractor_instance_twice_is_rejected():
    twice = {"name": "x", "extractors": [{"name": "embeddings", "params": {"model": "descriptor"}},
                                         {"name": "embeddings", "params": {"model": "descriptor"}}]}
    with pytest.raises(ConfigError, match=r"extractors\[1\] \(embeddings .*descriptor.*\) is listed twice"):
        parse_pipeline(twice)
    # Two instances with different parameters are two extractors.
    parse_pipeline({"name": "x", "extractors": [{"name": "embeddings", "params": {"model": "descriptor"}},
                                                {"name": "embeddings", "params": {"model": "musicnn"}}]})


def test_primary_key_enforced_on_every_write(tmp_path):
    from mirflow.catalog import Catalog, conform
    from mirflow.errors import SchemaError

    rows = {"track_id": ["a", "a"], "model": ["m", "m"], "model_version": ["1", "1"], "embedding": [[1.0], [2.0]]}
    with pytest.raises(SchemaError, match=r"primary key \['track_id', 'model'\] repeated"):
        conform("embeddings", rows, sizes={"embedding": 1})
    beats = {"track_id": ["a", "a"], "time_s": [0.5, 0.5], "beat_in_bar": [1, 2]}
    with pytest.raises(SchemaError, match="repeated"):
        Catalog(tmp_path).write_part("beats", "a", conform("beats", beats))
    assert conform("beats", {**beats, "time_s": [0.5, 1.0]}).num_rows == 2
