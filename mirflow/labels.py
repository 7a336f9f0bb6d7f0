"""Key and chord label conventions: one canonical form, every spelling rendered from it.

A key is stored as a :class:`Key` — tonic pitch class 0–11 (C = 0) and mode
``'major'`` or ``'minor'`` — and every label is rendered from that pair:

=============  ================  ==============================================
form           example           used by
=============  ================  ==============================================
mir_eval       ``"A minor"``     ``mir_eval.key``, the ``key`` column
JAMS           ``"A:minor"``     JAMS ``key_mode`` annotations
Camelot        ``"8A"``          DJ software (1–12, A = minor, B = major)
Open Key       ``"1m"``          Traktor (1–12, m = minor, d = major)
=============  ================  ==============================================

Enharmonic spelling is fixed by :data:`PITCH_NAMES` (C, C#, D, Eb, E, F, F#,
G, Ab, A, Bb, B) so that the same key always renders to the same string,
whichever library estimated it (madmom writes ``'Db major'`` but
``'C# minor'``; Essentia writes ``'Bb'`` plus a separate scale). The test
audio generator in :mod:`mirflow.synth` uses the same table.

Chord labels are Harte syntax (``C:maj``, ``A:min``, ``N``) with roots
respelled through the same table; :func:`to_harte` converts madmom and
Essentia chord names.

Examples
--------
>>> k = parse_key("bb minor")
>>> k.tonic, k.mode
(10, 'minor')
>>> k.mir_eval, k.jams, k.camelot, k.openkey
('Bb minor', 'Bb:minor', '3A', '8m')
>>> parse_key("8B").mir_eval
'C major'
>>> to_harte("C#m"), to_harte("A#:maj"), to_harte("N")
('C#:min', 'Bb:maj', 'N')
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger(__name__)

Mode = Literal["major", "minor"]

#: The one enharmonic spelling of each pitch class (C = 0). Sharps for C#, F#
#: and flats elsewhere: the spelling most key-annotated corpora use.
PITCH_NAMES: tuple[str, ...] = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")

MODES: tuple[Mode, Mode] = ("major", "minor")

_LETTER_PC = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
_ACCIDENTAL = {"#": 1, "♯": 1, "b": -1, "♭": -1}
_MODE_WORDS = {
    "": "major", "maj": "major", "major": "major", "dur": "major", "d": None,
    "m": "minor", "min": "minor", "minor": "minor", "moll": "minor", "-": "minor",
}
_TONIC_RE = re.compile(r"^\s*([A-Ga-g])([#b♯♭]*)\s*[:_ ]?\s*([A-Za-z\-]*)\s*$")
_CAMELOT_RE = re.compile(r"^\s*(1[0-2]|0?[1-9])\s*([ABab])\s*$")
_OPENKEY_RE = re.compile(r"^\s*(1[0-2]|0?[1-9])\s*([mdMD])\s*$")


def pitch_class(name: str) -> int:
    """Pitch class 0–11 of a note name such as ``'C#'``, ``'Db'``, ``'bb'`` or ``'E#'``.

    Examples
    --------
    >>> pitch_class("Db"), pitch_class("c#"), pitch_class("Cb")
    (1, 1, 11)
    """
    m = re.fullmatch(r"\s*([A-Ga-g])([#b♯♭]*)\s*", name)
    if not m:
        raise ValueError(f"not a note name: {name!r}")
    return (_LETTER_PC[m.group(1).lower()] + sum(_ACCIDENTAL[c] for c in m.group(2))) % 12


@dataclass(frozen=True, order=True)
class Key:
    """A musical key: tonic pitch class and mode. The canonical stored form.

    Parameters
    ----------
    tonic : int
        Pitch class 0–11, C = 0.
    mode : {'major', 'minor'}

    Examples
    --------
    >>> Key(9, "minor").camelot, Key(0, "major").openkey
    ('8A', '1d')
    """

    tonic: int
    mode: Mode

    def __post_init__(self) -> None:
        if not (isinstance(self.tonic, int) and 0 <= self.tonic < 12):
            raise ValueError(f"tonic must be a pitch class 0-11, got {self.tonic!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be 'major' or 'minor', got {self.mode!r}")

    # -- index into the 24-way vectors used by the key extractor ---------------
    @property
    def index(self) -> int:
        """Position in :func:`all_keys` order: C major … B major, C minor … B minor."""
        return self.tonic + (12 if self.mode == "minor" else 0)

    @classmethod
    def from_index(cls, index: int) -> Key:
        """Inverse of :attr:`index`."""
        if not 0 <= index < 24:
            raise ValueError(f"key index must be 0-23, got {index}")
        return cls(int(index % 12), "minor" if index >= 12 else "major")

    # -- renderings -------------------------------------------------------------
    @property
    def tonic_name(self) -> str:
        return PITCH_NAMES[self.tonic]

    @property
    def mir_eval(self) -> str:
        """``'A minor'`` — the form ``mir_eval.key`` validates."""
        return f"{self.tonic_name} {self.mode}"

    @property
    def jams(self) -> str:
        """``'A:minor'`` — the JAMS ``key_mode`` form."""
        return f"{self.tonic_name}:{self.mode}"

    @property
    def camelot_number(self) -> int:
        # Steps around the circle of fifths from C (major) / A (minor): 7
        # semitones per step; C major and A minor sit at 8.
        major_tonic = self.tonic if self.mode == "major" else (self.tonic + 3) % 12
        return (7 * major_tonic + 7) % 12 + 1

    @property
    def camelot(self) -> str:
        """Camelot code: 8A = A minor, 8B = C major."""
        return f"{self.camelot_number}{'B' if self.mode == 'major' else 'A'}"

    @property
    def openkey(self) -> str:
        """Open Key code: 1m = A minor, 1d = C major (Camelot 8 = Open Key 1)."""
        return f"{(self.camelot_number - 8) % 12 + 1}{'d' if self.mode == 'major' else 'm'}"

    @property
    def relative(self) -> Key:
        """The relative major/minor."""
        if self.mode == "major":
            return Key((self.tonic + 9) % 12, "minor")
        return Key((self.tonic + 3) % 12, "major")

    def __str__(self) -> str:
        return self.mir_eval


def all_keys() -> list[Key]:
    """The 24 keys in index order (C major … B major, C minor … B minor)."""
    return [Key.from_index(i) for i in range(24)]


def _from_camelot(number: int, letter: str) -> Key:
    # C major is 8B; every step adds a fifth (7 semitones).
    major_tonic = (7 * (number - 8)) % 12
    if letter.upper() == "B":
        return Key(major_tonic, "major")
    return Key((major_tonic + 9) % 12, "minor")


def parse_key(label: str) -> Key | None:
    """Parse a key label in any supported spelling; ``None`` for "no key" labels.

    Accepts mir_eval (``'A minor'``, ``'bb minor'``), JAMS (``'A:minor'``),
    short forms (``'Am'``, ``'F#'``, ``'C:maj'``), madmom (``'Db major'``),
    Essentia (``'Bb minor'`` after joining key and scale), Camelot (``'8A'``)
    and Open Key (``'1m'``). ``'X'``, ``'N'``, ``''`` and ``'none'`` mean no key.

    Raises
    ------
    ValueError
        When the label is none of these.

    Examples
    --------
    >>> parse_key("C#:minor") == parse_key("Db minor") == parse_key("12A")
    True
    >>> parse_key("X") is None
    True
    """
    text = str(label).strip()
    if text.lower() in {"", "x", "n", "none", "null", "nan"}:
        return None
    m = _CAMELOT_RE.match(text)
    if m:
        return _from_camelot(int(m.group(1)), m.group(2))
    m = _OPENKEY_RE.match(text)
    if m:
        # Open Key n = Camelot n + 7 (mod 12); d = major (B), m = minor (A).
        number = (int(m.group(1)) + 6) % 12 + 1
        return _from_camelot(number, "B" if m.group(2).lower() == "d" else "A")
    m = _TONIC_RE.match(text)
    if m:
        letter, accidentals, mode_word = m.groups()
        mode_key = mode_word.lower()
        if mode_key in _MODE_WORDS and _MODE_WORDS[mode_key] is not None:
            tonic = pitch_class(letter + accidentals)
            return Key(tonic, _MODE_WORDS[mode_key])  # type: ignore[arg-type]
    raise ValueError(f"unrecognised key label: {label!r}")


def mirex_score(reference: str | Key | None, estimate: str | Key | None) -> float:
    """MIREX weighted key score (exact 1, fifth 0.5, relative 0.3, parallel 0.2) via ``mir_eval.key``.

    A missing estimate scores 0; a missing reference raises.

    Examples
    --------
    >>> mirex_score("C major", "G major"), mirex_score("A minor", "C major"), mirex_score("A minor", None)
    (0.5, 0.3, 0.0)
    """
    import mir_eval.key

    ref = reference if isinstance(reference, Key) else parse_key(reference) if reference is not None else None
    if ref is None:
        raise ValueError("reference key is required")
    est = estimate if isinstance(estimate, Key) else parse_key(estimate) if estimate is not None else None
    if est is None:
        return 0.0
    return float(mir_eval.key.weighted_score(ref.mir_eval, est.mir_eval))


#: What :func:`key_relation` answers, a right key first.
KEY_RELATIONS = ("exact", "fifth above", "fifth below", "relative", "parallel", "other", "none")


def key_relation(reference: str | Key, estimate: str | Key | None) -> str:
    """How an estimated key relates to the reference: the kinds of error MIREX's weighted score tells apart.

    One of :data:`KEY_RELATIONS`: ``'exact'``, ``'fifth above'`` (the dominant, same mode: MIREX
    0.5), ``'fifth below'`` (the subdominant: MIREX scores it 0), ``'relative'`` (0.3),
    ``'parallel'`` (0.2), ``'other'`` or ``'none'`` (no estimate). Breaking errors down this way shows what a key extractor confuses (an
    opening that cadences on the dominant, a melody that outlines the relative minor) where the
    weighted score only says how much was lost.

    Examples
    --------
    >>> key_relation("C major", "G major"), key_relation("C major", "F major"), key_relation("C major", "A minor")
    ('fifth above', 'fifth below', 'relative')
    >>> key_relation("A minor", "a minor"), key_relation("A minor", "A major"), key_relation("A minor", None)
    ('exact', 'parallel', 'none')
    """
    ref = reference if isinstance(reference, Key) else parse_key(reference)
    if ref is None:
        raise ValueError("reference key is required")
    est = estimate if isinstance(estimate, Key) or estimate is None else parse_key(estimate)
    if est is None:
        return "none"
    if est == ref:
        return "exact"
    if est.mode == ref.mode and (est.tonic - ref.tonic) % 12 in (5, 7):
        return "fifth above" if (est.tonic - ref.tonic) % 12 == 7 else "fifth below"
    if est == ref.relative:
        return "relative"
    return "parallel" if est.tonic == ref.tonic else "other"


# ----------------------------------------------------------------------- chords
#: Harte qualities emitted for each quality spelling madmom and Essentia use.
_CHORD_QUALITY = {"": "maj", "maj": "maj", "major": "maj", "m": "min", "min": "min", "minor": "min"}
_CHORD_RE = re.compile(r"^\s*([A-Ga-g])([#b♯♭]*)\s*:?\s*([A-Za-z0-9()#b,*/]*)\s*$")


def to_harte(label: str) -> str:
    """Convert a madmom / Essentia / Harte chord label to Harte syntax with the canonical root spelling.

    Major and minor triads (``'C'``, ``'Cm'``, ``'C#m'``, ``'A#:maj'``,
    ``'Bb:min'``) become ``root:maj`` / ``root:min``; ``'N'`` (no chord) and
    ``'X'`` pass through; any other Harte label is respelled at the root and
    kept (validated by ``mir_eval.chord``).

    Examples
    --------
    >>> to_harte("Bbm"), to_harte("G#"), to_harte("D:min7")
    ('Bb:min', 'Ab:maj', 'D:min7')
    """
    text = str(label).strip()
    if text.upper() in {"N", "X"}:
        return text.upper()
    m = _CHORD_RE.match(text)
    if not m:
        raise ValueError(f"unrecognised chord label: {label!r}")
    root = PITCH_NAMES[pitch_class(m.group(1) + m.group(2))]
    quality = m.group(3)
    harte = f"{root}:{_CHORD_QUALITY.get(quality.lower(), quality)}"
    validate_chord(harte)
    return harte


def validate_chord(label: str) -> None:
    """Raise ``ValueError`` unless ``mir_eval.chord`` parses ``label``."""
    import mir_eval.chord

    try:
        mir_eval.chord.encode(label)
    except mir_eval.chord.InvalidChordException as exc:
        raise ValueError(f"not a valid Harte chord label: {label!r} ({exc})") from None


#: The 25 labels of a major/minor chord vocabulary in index order:
#: C:maj … B:maj, C:min … B:min, N.
MAJMIN_LABELS: tuple[str, ...] = tuple(
    [f"{n}:maj" for n in PITCH_NAMES] + [f"{n}:min" for n in PITCH_NAMES] + ["N"]
)
