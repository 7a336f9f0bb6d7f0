"""The ``fast`` pipeline: it loads, validates, and analyzes a generated track into the tables."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from mirflow.catalog.schema import table_schema
from mirflow.pipeline import available_pipelines, load_pipeline
from mirflow.synth import TrackSpec, render_spec


def test_fast_pipeline_is_shipped_and_validates():
    assert "fast" in available_pipelines()
    cfg = load_pipeline("fast")
    assert cfg.name == "fast"
    names = [ex.name for ex in cfg.extractors]
    assert {"loudness", "rhythm", "key", "embeddings"} <= set(names)
    # no model with non-commercial terms (madmom), and none of the slow backends
    backends = {ex.name: getattr(ex.params, "backend", None) for ex in cfg.extractors}
    assert backends["rhythm"] not in ("madmom", "ensemble", "essentia")
    assert backends["key"] not in ("madmom", "ensemble")
    assert backends["loudness"] != "essentia"
    # a different pipeline from the default: its own fingerprint
    assert cfg.fingerprint != load_pipeline("default").fingerprint


@pytest.fixture(scope="module")
def fast_rows(tmp_path_factory):
    spec = TrackSpec(tempo_bpm=128.0, meter=4, n_bars=6, drums=True, backend="numpy", seed=5, tonic=7,
                     mode="major")
    path = tmp_path_factory.mktemp("fast") / "track.flac"
    sf.write(path, render_spec(spec), spec.sample_rate_hz)
    import mirflow

    return spec, mirflow.analyze_file(path, pipeline="fast")


def test_fast_pipeline_analyzes_a_track_into_the_tables(fast_rows):
    spec, rows = fast_rows
    tracks = rows["tracks"]
    assert len(tracks) == 1
    row = tracks.iloc[0]
    assert row["pipeline"] == "fast"
    # tempo within 4 % of the generated tempo or an octave of it (Accuracy2's tolerance)
    tempo = float(row["tempo_bpm"])
    assert min(abs(tempo / (spec.tempo_bpm * f) - 1.0) for f in (0.5, 1.0, 2.0)) < 0.04, tempo
    assert row["key"] is not None and row["key_mode"] in ("major", "minor")
    assert np.isfinite(row["loudness_integrated_lufs"]) and -40.0 < row["loudness_integrated_lufs"] < 0.0
    assert row["loudness_range_lu"] is not None and row["loudness_range_lu"] >= 0.0
    beats = rows["beats"]
    assert len(beats) == int(row["beat_count"]) > 8
    assert np.all(np.diff(beats["time_s"].to_numpy()) > 0)
    emb = rows["embeddings"]
    assert list(emb["model"]) == ["descriptor"]
    vec = np.asarray(emb["embedding"].iloc[0], dtype=np.float32)
    assert vec.shape == (65,) and np.all(np.isfinite(vec))


def test_fast_pipeline_rows_conform_to_the_schemas(fast_rows):
    _, rows = fast_rows
    for table, frame in rows.items():
        spec = table_schema(table)
        missing = [c for c in frame.columns if c not in spec.names]
        assert not missing, f"{table}: columns not in the schema: {missing}"
