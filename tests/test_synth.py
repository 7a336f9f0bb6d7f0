"""Tests of mirflow.synth: exact, self-consistent ground truth and audio that matches it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mir_eval
import numpy as np
import pytest
import soundfile as sf

from mirflow.errors import ConfigError
from mirflow.synth import (
    PITCH_NAMES,
    SpecError,
    TrackSpec,
    Truth,
    arrange,
    chord_plan,
    find_chorales,
    fluidsynth_available,
    key_name,
    make_demo_catalog,
    mp3_roundtrip,
    plan_specs,
    read_truth_jsonl,
    render_chorale,
    render_spec,
    truth_from_spec,
    write_audio,
    write_jams,
    write_midi,
    write_truth_jsonl,
)
from mirflow.synth.spec import parse_numeral

# jams validates with a jsonschema call that jsonschema deprecates.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:jsonschema.*")

skip_without_fluidsynth = pytest.mark.skipif(
    shutil.which("fluidsynth") is None or not fluidsynth_available(),
    reason="fluidsynth or a GM soundfont is not installed",
)

# Krumhansl-Kessler key profiles (C major / C minor).
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def short_spec(**changes: object) -> TrackSpec:
    base: dict[str, object] = {
        "tempo_bpm": 120.0,
        "meter": 4,
        "tonic": 3,
        "mode": "minor",
        "n_bars": 4,
        "drums": True,
        "melody": True,
        "seed": 11,
        "lead_in_s": 0.3,
        "tail_s": 0.5,
        "backend": "numpy",
        "sample_rate_hz": 22050,
    }
    base.update(changes)
    return TrackSpec(**base)  # type: ignore[arg-type]


def key_correlations(chroma: np.ndarray) -> dict[str, float]:
    return {
        key_name(t, mode): float(np.corrcoef(chroma, np.roll(profile, t))[0, 1])
        for t in range(12)
        for mode, profile in (("major", MAJOR_PROFILE), ("minor", MINOR_PROFILE))
    }


def onset_peak_errors(y: np.ndarray, sr: int, beats: tuple[float, ...]) -> np.ndarray:
    """Distance from every beat to the nearest onset-strength peak, in seconds."""
    import librosa

    if y.ndim == 2:
        y = y.mean(axis=1)
    hop = 128
    env = librosa.onset.onset_strength(y=y, sr=sr, n_fft=1024, hop_length=hop)
    peaks = librosa.util.peak_pick(
        env, pre_max=3, post_max=3, pre_avg=5, post_avg=5, delta=0.3 * float(env.std()), wait=5
    )
    times = librosa.frames_to_time(peaks, sr=sr, hop_length=hop)
    return np.array([np.min(np.abs(times - b)) for b in beats])


def check_truth(truth: Truth) -> None:
    truth.validate()
    if truth.key is not None:  # None: the key is not scored, and key_note says why (validate checks it)
        mir_eval.key.validate_key(truth.key)
    intervals = truth.chord_intervals()
    mir_eval.util.validate_intervals(intervals)
    labels = truth.chord_labels()
    mir_eval.chord.validate(labels, labels)
    assert np.allclose(intervals[1:, 0], intervals[:-1, 1])
    assert intervals[0, 0] == 0.0
    assert intervals[-1, 1] == pytest.approx(truth.duration_s)


# --------------------------------------------------------------------------- spec and truth


def test_pitch_names_and_keys() -> None:
    assert PITCH_NAMES == ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
    for tonic in range(12):
        for mode in ("major", "minor"):
            mir_eval.key.validate_key(key_name(tonic, mode))
    assert key_name(3, "minor") == "Eb minor"


def test_numerals() -> None:
    assert parse_numeral("vi", 0, "major") == (9, "min")
    assert parse_numeral("V", 9, "minor") == (4, "maj")  # harmonic-minor dominant
    assert parse_numeral("VII", 9, "minor") == (7, "maj")
    assert parse_numeral("bVII", 0, "major") == (10, "maj")
    with pytest.raises(SpecError):
        parse_numeral("VIII", 0, "major")


def test_spec_validation() -> None:
    with pytest.raises(SpecError):
        short_spec(meter=5)
    with pytest.raises(ConfigError):
        short_spec(meter=3, chords_per_bar=2)
    with pytest.raises(ValueError):
        short_spec(swing=0.5)
    spec = short_spec()
    assert TrackSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_default_progressions_follow_mode() -> None:
    minor = [s.label for s in chord_plan(short_spec(tonic=9, mode="minor", n_bars=5))]
    assert minor == ["A:min", "D:min", "E:maj", "A:min", "A:min"]
    major = [
        s.label for s in chord_plan(short_spec(tonic=0, mode="major", n_bars=5, chords_per_bar=2))
    ]
    assert major[:4] == ["C:maj", "G:maj", "A:min", "F:maj"]
    assert major[-2:] == ["C:maj", "C:maj"]  # the last bar is the tonic


@pytest.mark.parametrize("spec", plan_specs(30, seed=3), ids=lambda s: f"{s.key}-{s.tempo_bpm}")
def test_truth_is_self_consistent(spec: TrackSpec) -> None:
    truth = truth_from_spec(spec, path="x.wav")
    check_truth(truth)
    beats = np.asarray(truth.beats)
    assert beats[0] == spec.lead_in_s
    assert np.allclose(np.diff(beats), 60.0 / spec.tempo_bpm)
    assert len(beats) == spec.n_bars * spec.meter
    assert list(truth.beat_in_bar) == [k % spec.meter + 1 for k in range(len(beats))]
    assert np.allclose(np.diff(truth.downbeats), spec.meter * 60.0 / spec.tempo_bpm)
    # Chord changes fall on beats; the first and last chords are the tonic.
    tonic = f"{PITCH_NAMES[spec.tonic]}:{'maj' if spec.mode == 'major' else 'min'}"
    music = [c for c in truth.chords if c[2] != "N"]
    assert music[0][2] == tonic and music[-1][2] == tonic
    for start, _, _ in music:
        assert np.min(np.abs(beats - start)) < 1e-9
    assert truth.chords[-1][2] == "N" and truth.chords[-1][0] == pytest.approx(spec.music_end_s)


def test_plan_is_stratified() -> None:
    specs = plan_specs(48, seed=0, degrade_fraction=0.25)
    keys = [s.key for s in specs]
    assert len(set(keys)) == 24 and all(keys.count(k) == 2 for k in set(keys))
    tempos = np.array([s.tempo_bpm for s in specs])
    assert tempos.min() >= 60 and tempos.max() <= 200
    assert np.all(np.histogram(tempos, bins=4, range=(60, 200))[0] == 12)
    assert {s.meter for s in specs} == {3, 4}
    assert sum(s.drums for s in specs) == 24
    assert sum(s.noise_snr_db is not None or s.mp3_kbps is not None for s in specs) == 12
    assert len({s.program for s in specs}) >= 10
    assert plan_specs(48, seed=0, degrade_fraction=0.25) == specs


def test_manifest_and_jams_round_trip(tmp_path: Path) -> None:
    import jams

    spec = short_spec()
    truth = truth_from_spec(spec, path=tmp_path / "audio" / "t1.flac")
    manifest = write_truth_jsonl([truth], tmp_path / "truth.jsonl")
    record = json.loads(manifest.read_text().splitlines()[0])
    assert record["path"] == "audio/t1.flac"
    assert record["key"] == "Eb minor" and record["tempo_bpm"] == 120.0
    assert record["chords"][0] == [0.0, 0.3, "N"]
    (back,) = read_truth_jsonl(manifest)
    assert back == truth
    assert back.spec == spec.to_dict()
    (relative,) = read_truth_jsonl(manifest, resolve_paths=False)
    assert relative.path == "audio/t1.flac"
    write_jams(truth, tmp_path / "t1.jams")
    jam = jams.load(str(tmp_path / "t1.jams"))
    assert jam.search(namespace="key_mode")[0].data[0].value == "Eb:minor"
    beats = jam.search(namespace="beat")[0].data
    assert [o.value for o in beats][:5] == [1, 2, 3, 4, 1]
    assert jam.search(namespace="chord")[0].data[1].value == "Eb:min"


def test_midi_file(tmp_path: Path) -> None:
    import mido

    spec = short_spec()
    arrangement = arrange(spec)
    path = write_midi(arrangement, tmp_path / "t.mid")
    midi = mido.MidiFile(path)
    tempo = next(m.tempo for m in midi.tracks[0] if m.type == "set_tempo")
    assert tempo == 500000
    ons = [m for m in midi.tracks[0] if m.type == "note_on" and m.velocity > 0]
    assert len(ons) == len(arrangement.notes)
    assert any(m.channel == 9 for m in ons)
    assert midi.length == pytest.approx(spec.n_beats * 0.5 + spec.tail_s, abs=1e-3)


# --------------------------------------------------------------------------- numpy backend


def test_numpy_render_is_exact_and_deterministic() -> None:
    spec = short_spec()
    y = render_spec(spec)
    assert y.shape == (spec.n_samples,) and y.dtype == np.float32
    assert np.array_equal(y, render_spec(spec))
    assert not np.array_equal(y, render_spec(short_spec(seed=12)))
    assert np.max(np.abs(y)) == pytest.approx(0.89, abs=1e-3)
    start = int(round(spec.lead_in_s * spec.sample_rate_hz))
    assert np.all(y[:start] == 0) and y[start] != 0


def test_numpy_onsets_at_beats() -> None:
    spec = short_spec(n_bars=6, tempo_bpm=132.0, seed=5)
    y = render_spec(spec)
    truth = truth_from_spec(spec, path="x.wav")
    errors = onset_peak_errors(y, spec.sample_rate_hz, truth.beats)
    assert np.mean(errors < 0.03) >= 0.95, errors


@pytest.mark.parametrize(("tonic", "mode"), [(4, "major"), (10, "minor")])
def test_numpy_chroma_matches_key(tonic: int, mode: str) -> None:
    import librosa

    spec = short_spec(tonic=tonic, mode=mode, drums=False, melody=False, program=0, n_bars=4)
    y = render_spec(spec)
    chroma = librosa.feature.chroma_stft(
        y=y, sr=spec.sample_rate_hz, n_fft=4096, hop_length=2048
    ).mean(axis=1)
    scores = key_correlations(chroma)
    true = scores[spec.key]
    assert max(scores, key=scores.get) == spec.key  # type: ignore[arg-type]
    for shift in (1, 6, 11):  # semitone and tritone neighbours are clearly worse
        for other in ("major", "minor"):
            assert true > scores[key_name(tonic + shift, other)] + 0.1


def test_noise_snr() -> None:
    clean = render_spec(short_spec(drums=False))
    noisy = render_spec(short_spec(drums=False, noise_snr_db=10.0))
    sr = 22050
    region = slice(int(0.3 * sr), int((0.3 + 8.0) * sr))
    c, n = clean[region].astype(float), noisy[region].astype(float)
    gain = float(np.dot(n, c) / np.dot(c, c))
    snr = 10 * np.log10(np.sum((gain * c) ** 2) / np.sum((n - gain * c) ** 2))
    assert snr == pytest.approx(10.0, abs=0.5)


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3", "m4a"])
def test_formats_decode_aligned(tmp_path: Path, fmt: str) -> None:
    if fmt == "m4a" and shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    spec = short_spec(n_bars=2, sample_rate_hz=44100)
    y = render_spec(spec)
    path = write_audio(y, spec.sample_rate_hz, tmp_path / f"t.{fmt}")
    if fmt == "m4a":
        assert path.stat().st_size > 1000
        return
    decoded, sr = sf.read(path, dtype="float32")
    assert sr == spec.sample_rate_hz
    assert abs(len(decoded) - len(y)) <= 2048
    m = min(len(decoded), len(y))
    lags = range(-64, 65)
    best = max(lags, key=lambda lag: float(np.dot(np.roll(decoded[:m], -lag), y[:m])))
    assert best == 0


def test_mp3_roundtrip_keeps_alignment() -> None:
    if shutil.which("ffmpeg") is None and "MP3" not in sf.available_formats():
        pytest.skip("no MP3 encoder")
    spec = short_spec(n_bars=2, sample_rate_hz=44100)
    y = render_spec(spec)
    z = mp3_roundtrip(y, spec.sample_rate_hz, kbps=64)
    assert z.shape == y.shape
    assert np.corrcoef(y, z)[0, 1] > 0.9
    degraded = render_spec(short_spec(n_bars=2, sample_rate_hz=44100, mp3_kbps=64))
    assert degraded.shape == y.shape and not np.array_equal(degraded, y)


def test_demo_catalog(tmp_path: Path) -> None:
    truths = make_demo_catalog(tmp_path / "demo", n=4, seed=1, duration_s=(5.0, 7.0))
    assert len(truths) == 4
    back = read_truth_jsonl(tmp_path / "demo" / "truth.jsonl")
    assert back == truths
    for truth in truths:
        check_truth(truth)
        assert Path(truth.path).is_file()
        assert (tmp_path / "demo" / "jams" / f"{truth.track_id}.jams").is_file()
        info = sf.info(truth.path)
        assert info.duration == pytest.approx(truth.duration_s, abs=0.06)
    assert len({t.format for t in truths}) >= 3


# --------------------------------------------------------------------------- FluidSynth


@pytest.mark.needs_fluidsynth
@skip_without_fluidsynth
@pytest.mark.parametrize("meter", [3, 4])
def test_fluidsynth_render(meter: int) -> None:
    spec = short_spec(backend="fluidsynth", meter=meter, n_bars=5, tempo_bpm=140.0, program=24)
    y = render_spec(spec)
    assert y.shape == (spec.n_samples, 2)
    assert np.array_equal(y, render_spec(spec))
    start = int(round(spec.lead_in_s * spec.sample_rate_hz))
    assert np.all(y[:start] == 0)
    audible = np.nonzero(np.abs(y[start:]).max(axis=1) > 1e-3)[0]
    assert audible[0] / spec.sample_rate_hz < 0.01  # FluidSynth attacks land within a few ms
    truth = truth_from_spec(spec, path="x.wav")
    assert truth.channels == 2
    errors = onset_peak_errors(y, spec.sample_rate_hz, truth.beats)
    assert np.mean(errors < 0.03) >= 0.9, errors


# --------------------------------------------------------------------------- chorales


def test_chorale(tmp_path: Path) -> None:
    pytest.importorskip("music21")
    (origin,) = find_chorales(1, seed=0)
    truth = render_chorale(
        tmp_path / "c.wav",
        origin=origin,
        tempo_bpm=90.0,
        transpose=-3,
        backend="numpy",
        max_duration_s=12.0,
    )
    check_truth(truth)
    assert truth.source == "chorale" and truth.origin == origin and not truth.drums
    assert np.allclose(np.diff(truth.beats), 60.0 / 90.0)
    labels = [label for label in truth.chord_labels() if label not in ("N", "X")]
    assert len(labels) >= 0.4 * (len(truth.chord_labels()) - 2)
    assert all(label.endswith((":maj", ":min")) for label in labels)
    y, sr = sf.read(truth.path)
    assert len(y) / sr == pytest.approx(truth.duration_s, abs=1e-3)
    assert truth.duration_s <= 12.0 + 1e-6
    # the first 12 s of this chorale hold no key the four profiles agree on; the whole chorale holds its own
    assert truth.key is None and "A major" in truth.key_note
    whole = render_chorale(tmp_path / "w.wav", origin=origin, tempo_bpm=90.0, transpose=-3, backend="numpy")
    assert whole.key == "F# major" and whole.key_note is None
