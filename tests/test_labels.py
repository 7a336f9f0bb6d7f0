"""Key and chord label conventions (mirflow.labels)."""

from __future__ import annotations

import importlib

import mir_eval
import pytest

from mirflow.labels import (
    MAJMIN_LABELS,
    PITCH_NAMES,
    Key,
    all_keys,
    mirex_score,
    parse_key,
    pitch_class,
    to_harte,
    validate_chord,
)

# Reference Camelot / Open Key wheels, written out rather than computed so the
# test does not share the formula it checks.
CAMELOT = {
    "C major": "8B", "G major": "9B", "D major": "10B", "A major": "11B", "E major": "12B",
    "B major": "1B", "F# major": "2B", "C# major": "3B", "Ab major": "4B", "Eb major": "5B",
    "Bb major": "6B", "F major": "7B",
    "A minor": "8A", "E minor": "9A", "B minor": "10A", "F# minor": "11A", "C# minor": "12A",
    "Ab minor": "1A", "Eb minor": "2A", "Bb minor": "3A", "F minor": "4A", "C minor": "5A",
    "G minor": "6A", "D minor": "7A",
}
OPENKEY = {
    "C major": "1d", "G major": "2d", "D major": "3d", "A major": "4d", "E major": "5d",
    "B major": "6d", "F# major": "7d", "C# major": "8d", "Ab major": "9d", "Eb major": "10d",
    "Bb major": "11d", "F major": "12d",
    "A minor": "1m", "E minor": "2m", "B minor": "3m", "F# minor": "4m", "C# minor": "5m",
    "Ab minor": "6m", "Eb minor": "7m", "Bb minor": "8m", "F minor": "9m", "C minor": "10m",
    "G minor": "11m", "D minor": "12m",
}


def test_pitch_names_table() -> None:
    assert PITCH_NAMES == ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
    # The test-audio generator spells its truth with the same table.
    for module in ("mirflow.synth.truth", "mirflow.synth.spec"):
        try:
            other = importlib.import_module(module).PITCH_NAMES
        except (ImportError, AttributeError):
            continue
        assert tuple(other) == PITCH_NAMES, module


def test_all_24_keys_render_and_round_trip() -> None:
    keys = all_keys()
    assert len(set(keys)) == 24
    for k in keys:
        mir_eval.key.validate_key(k.mir_eval)
        assert k.jams == k.mir_eval.replace(" ", ":")
        assert CAMELOT[k.mir_eval] == k.camelot
        assert OPENKEY[k.mir_eval] == k.openkey
        for form in (k.mir_eval, k.jams, k.camelot, k.openkey, k.mir_eval.lower()):
            assert parse_key(form) == k, form
        assert Key.from_index(k.index) == k
        assert k.relative.relative == k


@pytest.mark.parametrize(("label", "tonic", "mode"), [
    ("Db major", 1, "major"), ("C# major", 1, "major"), ("bb minor", 10, "minor"),
    ("A#:minor", 10, "minor"), ("Am", 9, "minor"), ("F#", 6, "major"), ("G:min", 7, "minor"),
    ("D# minor", 3, "minor"), ("Gb major", 6, "major"), ("Cb major", 11, "major"),
    ("E# minor", 5, "minor"), ("8a", 9, "minor"), ("01d", 0, "major"), ("12m", 2, "minor"),
])
def test_parse_library_spellings(label: str, tonic: int, mode: str) -> None:
    assert parse_key(label) == Key(tonic, mode)


def test_madmom_and_essentia_vocabularies_parse() -> None:
    from madmom.features.key import KEY_LABELS

    assert {parse_key(lab) for lab in KEY_LABELS} == set(all_keys())
    for name in ("A", "Bb", "B", "C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab"):
        for scale in ("major", "minor"):
            assert parse_key(f"{name} {scale}") is not None  # Essentia's key + scale


@pytest.mark.parametrize("label", ["", "X", "N", "none"])
def test_no_key_labels(label: str) -> None:
    assert parse_key(label) is None


@pytest.mark.parametrize("label", ["H major", "C lydian", "13A", "0m", "C major minor"])
def test_bad_key_labels(label: str) -> None:
    with pytest.raises(ValueError):
        parse_key(label)


def test_key_validation() -> None:
    with pytest.raises(ValueError):
        Key(12, "major")
    with pytest.raises(ValueError):
        Key(0, "dorian")  # type: ignore[arg-type]


def test_mirex_score() -> None:
    assert mirex_score("C major", "C major") == 1.0
    assert mirex_score("C major", "G major") == 0.5      # fifth
    assert mirex_score("A minor", "C major") == 0.3      # relative
    assert mirex_score("C major", "C minor") == 0.2      # parallel
    assert mirex_score("C major", "F# major") == 0.0
    assert mirex_score("Db major", "C# major") == 1.0    # enharmonic spellings agree
    assert mirex_score("8A", Key(9, "minor")) == 1.0
    assert mirex_score("C major", None) == 0.0
    with pytest.raises(ValueError):
        mirex_score(None, "C major")


def test_pitch_class() -> None:
    assert [pitch_class(n) for n in PITCH_NAMES] == list(range(12))
    assert pitch_class("B#") == 0 and pitch_class("Fb") == 4 and pitch_class("Ebb") == 2


@pytest.mark.parametrize(("label", "harte"), [
    ("C", "C:maj"), ("Cm", "C:min"), ("C#m", "C#:min"), ("Bb", "Bb:maj"), ("G#m", "Ab:min"),
    ("A#:maj", "Bb:maj"), ("D#:min", "Eb:min"), ("Gb:maj", "F#:maj"), ("N", "N"), ("X", "X"),
    ("E:min7", "E:min7"), ("F:maj/3", "F:maj/3"),
])
def test_to_harte(label: str, harte: str) -> None:
    assert to_harte(label) == harte
    validate_chord(harte)


def test_to_harte_rejects_garbage() -> None:
    for bad in ("H", "C:foo", "?"):
        with pytest.raises(ValueError):
            to_harte(bad)


def test_majmin_vocabulary() -> None:
    assert len(MAJMIN_LABELS) == 25 and MAJMIN_LABELS[-1] == "N"
    for lab in MAJMIN_LABELS:
        validate_chord(lab)
    assert MAJMIN_LABELS[9] == "A:maj" and MAJMIN_LABELS[12 + 9] == "A:min"
