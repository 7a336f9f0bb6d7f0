"""The Chromaprint fingerprint extractor: contract, backends agree, silence and short audio give no rows."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import tone_mix

from mirflow.catalog.schema import conform, table_schema
from mirflow.errors import ExtractionError, ParameterError
from mirflow.extractors import registry
from mirflow.extractors.fingerprint import (
    ITEM_DURATION_S,
    SAMPLE_RATE_HZ,
    FingerprintExtractor,
    _library,
    chromaprint_version,
    raw_fingerprint,
)
from mirflow.frontend import Frontend

needs_lib = pytest.mark.skipif(_library() is None, reason="libchromaprint is not installed")
needs_fpcalc = pytest.mark.skipif(shutil.which("fpcalc") is None, reason="fpcalc is not installed")


@pytest.fixture(scope="module")
def music() -> Frontend:
    return Frontend.from_array(tone_mix(20.0, sr=44100, seed=3, freqs=(196.0, 246.94, 293.66, 392.0)), 44100)


def _rows(out):
    return out.tables["fingerprints"]


def test_registered_and_in_the_shipped_pipelines():
    assert registry.get("fingerprint") is FingerprintExtractor
    from mirflow.pipeline.config import load_pipeline

    for name in ("default", "permissive"):
        assert "fingerprint" in {e.name for e in load_pipeline(name).extractors}
        assert "fingerprints" in load_pipeline(name).tables


def test_one_row_conforming_to_the_schema(music):
    out = FingerprintExtractor().extract(music)
    assert out.columns == {}
    rows = _rows(out)
    assert len(rows["fingerprint"]) == 1
    table = conform("fingerprints", {"track_id": ["t" * 32], **rows})
    assert table.schema.field("fingerprint").type == table_schema("fingerprints").arrow().field("fingerprint").type
    fp = np.asarray(rows["fingerprint"][0])
    assert fp.min() >= 0 and fp.max() < 2**32  # unsigned 32-bit values, stored in int64
    # about one item per ITEM_DURATION_S, minus Chromaprint's start-up frames (≈2 s)
    expected = 20.0 / ITEM_DURATION_S
    assert expected - 25 < fp.size <= expected
    assert rows["duration_s"][0] == pytest.approx(20.0, abs=0.01)
    assert rows["algorithm"][0] == "chromaprint-2"


@needs_lib
@needs_fpcalc
def test_library_and_fpcalc_agree(music):
    y = music.signal(SAMPLE_RATE_HZ)
    a = raw_fingerprint(y, backend="libchromaprint")
    b = raw_fingerprint(y, backend="fpcalc")
    assert a.size > 100
    np.testing.assert_array_equal(a, b)


def test_max_duration_limits_the_fingerprint(music):
    full = _rows(FingerprintExtractor().extract(music))["fingerprint"][0]
    short = _rows(FingerprintExtractor(max_duration_s=10.0).extract(music))
    assert short["duration_s"][0] == pytest.approx(10.0)
    assert len(short["fingerprint"][0]) < len(full) - 60
    # the first items are the same audio and the same analysis
    n = len(short["fingerprint"][0]) - 5
    assert short["fingerprint"][0][:n] == full[:n]


def test_level_does_not_change_it_much(music):
    """Chromaprint is level-invariant up to 16-bit quantisation: a -12 dB copy flips few bits."""
    a = np.asarray(_rows(FingerprintExtractor().extract(music))["fingerprint"][0], dtype=np.uint32)
    quiet = Frontend.from_array(music.audio.samples * 0.25, music.native_sample_rate_hz)
    b = np.asarray(_rows(FingerprintExtractor().extract(quiet))["fingerprint"][0], dtype=np.uint32)
    n = min(a.size, b.size)
    ber = np.unpackbits(np.bitwise_xor(a[:n], b[:n]).view(np.uint8)).mean()
    assert ber < 0.05


@pytest.mark.parametrize("seconds", [0.0, 0.01, 1.0, 2.0])
def test_too_short_gives_no_rows(seconds):
    y = tone_mix(seconds, sr=44100) if seconds else np.zeros(0, dtype=np.float32)
    out = FingerprintExtractor().extract(Frontend.from_array(y, 44100))
    assert out.tables["fingerprints"] == {}


def test_silence_gives_no_rows_but_quiet_music_does(music):
    ex = FingerprintExtractor()
    silent = ex.extract(Frontend.from_array(np.zeros(44100 * 10, np.float32), 44100))
    assert silent.tables["fingerprints"] == {} and silent.notes[0] == "silent"  # the reason the catalog records
    quiet = Frontend.from_array(music.audio.samples * 10 ** (-30 / 20), 44100)  # -50 dBFS RMS
    assert len(_rows(ex.extract(quiet))["fingerprint"]) == 1


def test_parameters_are_validated():
    with pytest.raises(ParameterError, match="backend"):
        FingerprintExtractor(backend="nope")
    with pytest.raises(ParameterError, match="algorithm"):
        FingerprintExtractor(algorithm=9)


def test_lineage_names_chromaprint_and_its_licences():
    lineage = FingerprintExtractor().lineage()
    json.dumps(lineage)
    assert lineage["libraries"]["chromaprint"] not in ("missing", None)
    assert any("Chromaprint" in s for s in lineage["licences"])


@needs_fpcalc
def test_fpcalc_backend_on_short_audio_and_its_version():
    out = FingerprintExtractor(backend="fpcalc").extract(Frontend.from_array(tone_mix(1.0, sr=44100), 44100))
    assert out.tables["fingerprints"] == {}
    if _library() is not None:
        assert chromaprint_version("fpcalc") == chromaprint_version("libchromaprint")


def test_missing_backend_is_a_track_error(monkeypatch, music):
    import mirflow.extractors.fingerprint as fp

    monkeypatch.setattr(fp, "_library", lambda: None)
    monkeypatch.setattr(fp, "_fpcalc", lambda: None)
    with pytest.raises(ExtractionError, match="libchromaprint1"):
        FingerprintExtractor().extract(music)
    # and a run is refused before it starts, naming the install command
    (req,) = FingerprintExtractor(backend="fpcalc").requirements()
    assert "not available" in req.problem() and "libchromaprint-tools" in req.install


def test_requirements_met_here():
    assert all(r.problem() is None for r in FingerprintExtractor().requirements())
