"""Long tracks analyzed window by window: the decode, the pipeline setting, the merges and the memory.

* :func:`mirflow.audio.decode.iter_windows` cuts the decoded samples
  exactly: the windows' shares put back together are :func:`decode`'s
  samples, for libsndfile and ffmpeg formats, with :func:`decode`'s checks.
* ``decode.window_s`` is validated: every extractor must merge windows, the
  fingerprint must fit in the first window, and the setting is part of the
  pipeline's fingerprint.
* The default pipeline on a 100-s track cut in 36-s windows gives what the
  whole-track analysis gives (same beats, tempo, key, chords, loudness,
  musicnn patches), and the beats of a track whose tempo changes between
  windows are tracked across the change.
* An hour is analyzed in a fresh worker-like process under a memory bound
  that decoding it whole would break.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil
import subprocess
from pathlib import Path

import mir_eval
import numpy as np
import pytest
import soundfile as sf

from mirflow.audio import decode, probe
from mirflow.audio.decode import DecodeLimits, iter_windows
from mirflow.errors import ConfigError, DecodeError, ProbeError
from mirflow.pipeline import parse_pipeline

REPO = Path(__file__).resolve().parent.parent


def _noise(seconds: float, sr: int = 22050, channels: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((int(seconds * sr), channels))).astype(np.float32)


def _shares(path: Path, **kwargs) -> tuple[list, np.ndarray]:
    windows = list(iter_windows(path, **kwargs))
    sr = windows[0].audio.sample_rate_hz
    pieces = []
    for w in windows:
        a = int(round((w.core_start_s - w.start_s) * sr))
        b = int(round((w.core_end_s - w.start_s) * sr))
        pieces.append(w.audio.samples[a:b])
    return windows, np.concatenate(pieces)


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".m4a"])
def test_window_shares_put_together_are_the_decoded_track(tmp_path, suffix):
    if suffix == ".m4a" and not shutil.which("ffmpeg"):
        pytest.skip("ffmpeg not installed")
    y = _noise(10.3)
    wav = tmp_path / "x.wav"
    sf.write(wav, y, 22050, subtype="PCM_16")
    path = wav
    if suffix != ".wav":
        path = tmp_path / f"x{suffix}"
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(wav), str(path)], check=True)
    whole = decode(path).samples
    windows, joined = _shares(path, window_s=3.0, context_s=1.0)
    assert probe(path).decoder == ("ffmpeg" if suffix == ".m4a" else "libsndfile")
    np.testing.assert_array_equal(joined, whole)
    sr = windows[0].audio.sample_rate_hz
    # the last share takes the 1.3 s left after 9 s: no window under half a share
    assert [round(w.core_start_s, 3) for w in windows] == [0.0, 3.0, 6.0]
    assert windows[-1].core_end_s == pytest.approx(whole.shape[0] / sr)
    for w in windows:
        # each window holds its share with up to 1 s of context either side, at its stated place
        first = int(round(w.start_s * sr))
        np.testing.assert_array_equal(w.audio.samples, whole[first:first + w.audio.samples.shape[0]])
        assert w.start_s == pytest.approx(max(w.core_start_s - 1.0, 0.0), abs=1e-4)
        end_s = w.start_s + w.audio.samples.shape[0] / sr
        assert end_s == pytest.approx(min(w.core_end_s + 1.0, whole.shape[0] / sr), abs=1e-4)


def test_a_track_shorter_than_a_window_is_one_window(tmp_path):
    path = tmp_path / "short.flac"
    sf.write(path, _noise(2.0), 22050)
    windows, joined = _shares(path, window_s=60.0, context_s=10.0)
    assert len(windows) == 1 and windows[0].start_s == 0.0
    np.testing.assert_array_equal(joined, decode(path).samples)


def test_windows_keep_the_decode_checks(tmp_path):
    path = tmp_path / "x.flac"
    sf.write(path, _noise(10.0), 22050)
    with pytest.raises(ProbeError, match="too long"):
        next(iter_windows(path, window_s=3.0, context_s=1.0, limits=DecodeLimits(max_duration_s=5.0)))
    # a file cut short: the windows decoded so far come, then the damage is an error
    sf.write(path, _noise(40.0), 22050)  # longer than one decoder block (2**18 frames)
    data = path.read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[: len(data) // 2])
    got = []
    with pytest.raises(DecodeError, match="truncated|libsndfile"):
        for w in iter_windows(cut, window_s=2.0, context_s=0.5):
            got.append(w)
    assert got and got[-1].core_end_s < 20.0


def _default_raw() -> dict:
    import yaml

    return yaml.safe_load((REPO / "pipelines" / "default.yaml").read_text())


def test_window_setting_is_validated_and_fingerprinted(monkeypatch):
    raw = _default_raw()
    cfg = parse_pipeline(raw)
    assert cfg.window_s is not None and cfg.windowed(2.0 * cfg.window_s + 1.0) and not cfg.windowed(200.0)
    assert cfg.windowed(0.0)  # a stream of unknown length: windows, whatever it turns out to be
    whole = parse_pipeline({**raw, "decode": {"max_duration_s": 3600}})
    assert whole.window_s is None and not whole.windowed(3600.0)
    assert whole.fingerprint != cfg.fingerprint  # long tracks' results depend on the windows
    with pytest.raises(ConfigError, match="window_s"):
        parse_pipeline({**raw, "decode": {"window_s": 10}})
    with pytest.raises(ConfigError, match="fingerprint's max_duration_s"):
        parse_pipeline({**raw, "decode": {"window_s": 100}})
    toy = {"name": "toy", "decode": {"window_s": 200}, "extractors": ["metadata", "toy_level"]}
    from mirflow.extractors import Extraction, Extractor, registry

    class ToyLevel(Extractor):  # an extractor without merge
        name = "toy_level"
        version = "1"
        columns = ()

        def extract(self, frontend) -> Extraction:
            return self.result({})

    monkeypatch.setitem(registry._registered, "toy_level", ToyLevel)
    with pytest.raises(ConfigError, match="'toy_level'.*cannot merge"):
        parse_pipeline(toy)


def _track(path: Path, seconds: float, tempo_bpm: tuple[float, float]) -> np.ndarray:
    """A generated stereo FLAC in one key whose tempo changes half-way; its beat times."""
    from mirflow.synth import TrackSpec, render_spec

    beats, pieces, t = [], [], 0.0
    for i, tempo in enumerate(tempo_bpm):
        n_bars = int(round(seconds / len(tempo_bpm) / (4 * 60.0 / tempo)))
        spec = TrackSpec(tempo_bpm=tempo, meter=4, n_bars=n_bars, drums=True, backend="numpy", seed=5 + i,
                         tonic=2, mode="minor", lead_in_s=0.0, tail_s=0.0)
        y = render_spec(spec)
        n = int(round(n_bars * 4 * 60.0 / tempo * spec.sample_rate_hz))
        pieces.append(np.resize(y, n) if y.size < n else y[:n])
        beats.append(t + np.arange(n_bars * 4) * 60.0 / tempo)
        t += n / spec.sample_rate_hz
    y = np.concatenate(pieces)
    sf.write(path, np.stack([0.9 * y, 0.8 * y], axis=1), spec.sample_rate_hz, subtype="PCM_16")
    return np.concatenate(beats)


@pytest.mark.slow
def test_default_pipeline_in_windows_matches_the_whole_track(tmp_path):
    """100 s (112 BPM, D minor) in 36-s windows with 11.968 s of context, against one whole-track analysis."""
    from mirflow.audio.hashing import content_hash
    from mirflow.pipeline.task import extract_track

    path = tmp_path / "long.flac"
    truth = _track(path, 100.0, (112.0, 112.0))
    raw = _default_raw()
    raw["decode"] = {**raw["decode"], "window_s": 35.904}  # 12 musicnn patches: shares 0-36, 36-72, 72-100 s
    raw["extractors"] = [e for e in raw["extractors"] if e["name"] != "fingerprint"]  # needs 120 s in window one
    windowed = parse_pipeline(raw)
    whole = dataclasses.replace(windowed, window_s=None)
    assert windowed.windowed(100.0) and not whole.windowed(100.0)
    track_id = content_hash(path)
    (a,), ta, dur_a = (lambda r: (r[0].to_pylist(), r[1], r[2]))(extract_track(str(path), track_id, whole))
    (b,), tb, dur_b = (lambda r: (r[0].to_pylist(), r[1], r[2]))(extract_track(str(path), track_id, windowed))
    assert dur_a == dur_b == pytest.approx(truth[-1] + 60.0 / 112.0, abs=0.01) and b["duration_s"] == pytest.approx(dur_a)
    assert "merged" not in " ".join(a["empty_reasons"]) and b["empty_reasons"] == a["empty_reasons"]
    # rhythm: the same beats, tempo and meter
    beats_a, beats_b = np.array(ta["beats"]["time_s"]), np.array(tb["beats"]["time_s"])
    assert mir_eval.beat.f_measure(beats_a, beats_b) >= 0.99
    assert mir_eval.beat.f_measure(truth, beats_b) >= 0.95
    assert b["tempo_bpm"] == pytest.approx(a["tempo_bpm"], rel=0.01) and b["meter"] == a["meter"] == 4
    assert b["beat_count"] == beats_b.size and b["downbeat_count"] > 0
    # key and chords
    assert b["key"] == a["key"] == "D minor"
    inter, ref, est = mir_eval.util.merge_labeled_intervals(
        np.c_[ta["chords"]["start_s"], ta["chords"]["end_s"]], ta["chords"]["label"],
        np.c_[tb["chords"]["start_s"], tb["chords"]["end_s"]], tb["chords"]["label"])
    agreement = mir_eval.chord.weighted_accuracy(mir_eval.chord.majmin(ref, est),
                                                 mir_eval.util.intervals_to_durations(inter))
    assert agreement >= 0.95
    assert tb["chords"]["end_s"][-1] == ta["chords"]["end_s"][-1] == round(dur_b, 6)
    # loudness: sums over every sample once, the gating over every block once
    assert b["loudness_integrated_lufs"] == pytest.approx(a["loudness_integrated_lufs"], abs=0.05)
    assert b["loudness_range_lu"] == pytest.approx(a["loudness_range_lu"], abs=0.3)
    for col in ("sample_peak_dbfs", "rms_dbfs", "true_peak_dbtp"):
        assert b[col] == pytest.approx(a[col], abs=0.01), col
    # descriptors: statistics of the same frames
    for col in ("spectral_centroid_mean_hz", "spectral_centroid_std_hz", "spectral_flux_mean", "zero_crossing_rate",
                "onset_rate_per_s", "tuning_frequency_hz"):
        assert b[col] == pytest.approx(a[col], rel=0.03), col
    # musicnn: the same patches (the windows fall on the patch grid), so nearly the same vector and tags
    seg_a, seg_b = ta["segment_embeddings"], tb["segment_embeddings"]
    musicnn = [i for i, m in enumerate(seg_a["model"]) if m.startswith("musicnn")]
    assert len(seg_b["start_s"]) == len(seg_a["start_s"]) == len(musicnn) > 30
    np.testing.assert_allclose(seg_b["start_s"], seg_a["start_s"], atol=1e-3)
    for model in set(ta["embeddings"]["model"]):
        x = np.asarray(ta["embeddings"]["embedding"][ta["embeddings"]["model"].index(model)])
        y = np.asarray(tb["embeddings"]["embedding"][tb["embeddings"]["model"].index(model)])
        assert float(x @ y / np.linalg.norm(x) / np.linalg.norm(y)) >= 0.999, model
    np.testing.assert_allclose(tb["tags"]["probability"], ta["tags"]["probability"], atol=0.01)


@pytest.mark.slow
def test_beats_are_tracked_across_a_tempo_change_between_windows(tmp_path):
    """120 -> 96 BPM at 60 s, windows of 30 s: every beat once, one of the two tempi with at most half the confidence."""
    from mirflow.audio.hashing import content_hash
    from mirflow.pipeline.task import extract_track

    path = tmp_path / "change.flac"
    truth = _track(path, 120.0, (120.0, 96.0))
    raw = {"name": "rhythm_only", "decode": {"window_s": 30.0, "window_context_s": 8.0},
           "extractors": [{"name": "rhythm", "params": {"backend": "ensemble"}}]}
    cfg = parse_pipeline(raw)
    assert cfg.windowed(120.0) and not cfg.windowed(60.0)  # longer than twice the window
    (row,), tables, _ = (lambda r: (r[0].to_pylist(), r[1], r[2]))(extract_track(str(path), content_hash(path), cfg))
    beats = np.array(tables["beats"]["time_s"])
    assert mir_eval.beat.f_measure(truth, beats) >= 0.95
    assert np.all(np.diff(beats) > 0.3)  # no beat twice at a window's edge
    assert row["tempo_bpm"] == pytest.approx(120.0, rel=0.02) or row["tempo_bpm"] == pytest.approx(96.0, rel=0.02)
    assert row["tempo_confidence"] is None or row["tempo_confidence"] <= 0.6  # half the track disagrees


def _memory_benchmark():
    spec = importlib.util.spec_from_file_location("mirflow_memory_benchmark", REPO / "benchmarks" / "memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_an_hour_is_analyzed_in_windows_under_a_memory_bound(tmp_path):
    """60 minutes of 22.05-kHz mono in a fresh worker-like process, peak RSS under 0.75 GiB.

    Analyzed whole, the hour is 0.32 GB of decoded float32 samples and
    0.64 GB more at the meter's 44.1 kHz, before any analysis, so the bound
    holds only if the track is decoded and analyzed window by window. The
    loudness meter (BS.1770 gating over the hour's blocks, true peak, RMS)
    keeps the test short; ``benchmarks/memory.py`` measures the default
    pipeline on 44.1-kHz stereo (docs/performance.md).
    """
    from mirflow.testing import render_music

    loop = render_music(60.0, sample_rate_hz=22050, seed=3, stereo=False)
    path = tmp_path / "hour.flac"
    with sf.SoundFile(path, "w", samplerate=22050, channels=1, format="FLAC", subtype="PCM_16") as fh:
        for _ in range(60):
            fh.write(loop)
    pipeline = tmp_path / "light.yaml"
    pipeline.write_text("name: light\ndecode: {window_s: 120}\nextractors:\n  - metadata\n"
                        "  - {name: loudness, params: {backend: pyloudnorm}}\n")
    rec = _memory_benchmark().measure(path, str(pipeline))
    assert rec["windowed"] and rec["audio_s"] == pytest.approx(3600.0, abs=0.1)
    peak_gib = rec["peak_kib"] / 2**20
    assert peak_gib < 0.75, f"peak RSS {peak_gib:.2f} GiB for an hour"
    assert (rec["peak_kib"] - rec["base_kib"]) / 2**20 < 0.4, rec
