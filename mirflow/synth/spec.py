"""Track recipes for the synthetic test-audio generator.

A :class:`TrackSpec` is a complete, deterministic recipe: rendering the same
spec twice gives the same samples, and the ground truth (beats, key, chords)
follows from the spec alone. :func:`random_spec` draws one varied spec and
:func:`plan_specs` draws a stratified set that covers all 24 keys, the tempo
range, both meters and drums on/off by construction rather than by chance.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from mirflow.errors import ConfigError

logger = logging.getLogger(__name__)

#: The one spelling of the twelve pitch classes (C = 0) used for keys and chord roots.
PITCH_NAMES: tuple[str, ...] = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")

MODES: tuple[str, ...] = ("major", "minor")
BACKENDS: tuple[str, ...] = ("fluidsynth", "numpy")
COMPING: tuple[str, ...] = ("sustain", "beats", "arpeggio")

MAJOR_SCALE: tuple[int, ...] = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE: tuple[int, ...] = (0, 2, 3, 5, 7, 8, 10)

#: Progressions (Roman numerals; upper case = major triad, lower case = minor triad).
#: Each starts on the tonic and contains the dominant so that the key is audible.
MAJOR_PROGRESSIONS: tuple[tuple[str, ...], ...] = (
    ("I", "V", "vi", "IV"),
    ("I", "IV", "V", "I"),
    ("I", "vi", "IV", "V"),
    ("I", "IV", "I", "V"),
    ("I", "ii", "V", "I"),
    ("I", "iii", "IV", "V"),
    ("I", "V", "IV", "V"),
)
MINOR_PROGRESSIONS: tuple[tuple[str, ...], ...] = (
    ("i", "iv", "V", "i"),
    ("i", "VI", "iv", "V"),
    ("i", "VII", "VI", "V"),
    ("i", "iv", "i", "V"),
    ("i", "III", "iv", "V"),
    ("i", "VI", "VII", "V"),
)

#: A few General MIDI programs that carry harmony well, with their GM names.
HARMONY_PROGRAMS: dict[int, str] = {
    0: "Acoustic Grand Piano",
    2: "Electric Grand Piano",
    4: "Electric Piano 1",
    5: "Electric Piano 2",
    6: "Harpsichord",
    11: "Vibraphone",
    16: "Drawbar Organ",
    19: "Church Organ",
    21: "Accordion",
    24: "Acoustic Guitar (nylon)",
    25: "Acoustic Guitar (steel)",
    27: "Electric Guitar (clean)",
    46: "Orchestral Harp",
    48: "String Ensemble 1",
    52: "Choir Aahs",
    61: "Brass Section",
    88: "Pad 1 (new age)",
    89: "Pad 2 (warm)",
}
BASS_PROGRAMS: dict[int, str] = {
    32: "Acoustic Bass",
    33: "Electric Bass (finger)",
    38: "Synth Bass 1",
}
MELODY_PROGRAMS: dict[int, str] = {
    40: "Violin",
    56: "Trumpet",
    65: "Alto Sax",
    68: "Oboe",
    71: "Clarinet",
    73: "Flute",
    80: "Lead 1 (square)",
}
GM_FAMILIES: tuple[str, ...] = (
    "Piano", "Chromatic Percussion", "Organ", "Guitar", "Bass", "Strings", "Ensemble", "Brass",
    "Reed", "Pipe", "Synth Lead", "Synth Pad", "Synth Effects", "Ethnic", "Percussive",
    "Sound Effects",
)  # fmt: skip

_NUMERALS: dict[str, int] = {"i": 0, "ii": 1, "iii": 2, "iv": 3, "v": 4, "vi": 5, "vii": 6}


class SpecError(ConfigError, ValueError):
    """A track spec or a generator argument is invalid."""


def gm_program_name(program: int) -> str:
    """Return a readable name for a General MIDI program (0-based).

    Parameters
    ----------
    program : int
        GM program number, 0-127.

    Returns
    -------
    str
        The GM name for the programs this module uses, else the GM family name.
    """
    for table in (HARMONY_PROGRAMS, BASS_PROGRAMS, MELODY_PROGRAMS):
        if program in table:
            return table[program]
    return f"{GM_FAMILIES[program // 8]} (program {program})"


def key_name(tonic: int, mode: str) -> str:
    """Return the mir_eval key string, e.g. ``'Eb major'``.

    Parameters
    ----------
    tonic : int
        Pitch class of the tonic, C = 0.
    mode : str
        ``'major'`` or ``'minor'``.

    Returns
    -------
    str
        ``'<tonic name> <mode>'`` spelled with :data:`PITCH_NAMES`.
    """
    return f"{PITCH_NAMES[tonic % 12]} {mode}"


def chord_label(root: int, quality: str) -> str:
    """Return the Harte label of a triad, e.g. ``'A:min'``.

    Parameters
    ----------
    root : int
        Pitch class of the root.
    quality : str
        ``'maj'`` or ``'min'``.

    Returns
    -------
    str
        Harte label spelled with :data:`PITCH_NAMES`.
    """
    return f"{PITCH_NAMES[root % 12]}:{quality}"


def parse_numeral(numeral: str, tonic: int, mode: str) -> tuple[int, str]:
    """Resolve a Roman-numeral chord to a root pitch class and a triad quality.

    Upper case is a major triad, lower case a minor triad; an optional ``b`` or
    ``#`` prefix lowers or raises the root. Roots come from the major scale in
    major and from the natural minor scale in minor, so ``V`` in minor is the
    major dominant (with the leading tone) and ``VII`` the subtonic.

    Parameters
    ----------
    numeral : str
        E.g. ``'I'``, ``'vi'``, ``'bVII'``.
    tonic : int
        Pitch class of the key's tonic.
    mode : str
        ``'major'`` or ``'minor'``.

    Returns
    -------
    tuple of (int, str)
        Root pitch class and ``'maj'`` or ``'min'``.

    Raises
    ------
    SpecError
        If the numeral cannot be parsed.
    """
    shift = 0
    body = numeral
    while body[:1] in ("b", "#") and body[1:2].lower() in ("i", "v"):
        shift += -1 if body[0] == "b" else 1
        body = body[1:]
    degree = _NUMERALS.get(body.lower())
    if degree is None or not (body.isupper() or body.islower()):
        raise SpecError(f"cannot parse chord numeral {numeral!r}")
    scale = MAJOR_SCALE if mode == "major" else MINOR_SCALE
    root = (tonic + scale[degree] + shift) % 12
    return root, ("maj" if body.isupper() else "min")


@dataclass(frozen=True, kw_only=True)
class TrackSpec:
    """Deterministic recipe for one synthetic track.

    Parameters
    ----------
    tempo_bpm : float
        Quarter-note tempo; the beat is the quarter note.
    meter : int
        Beats per bar, 3 or 4.
    tonic : int
        Pitch class of the key's tonic, C = 0.
    mode : str
        ``'major'`` or ``'minor'``.
    n_bars : int
        Number of bars of music.
    progression : tuple of str
        Roman-numeral chords, cycled over the chord slots; the last bar is
        always the tonic chord. Empty (the default) means I-V-vi-IV in major
        and i-iv-V-i in minor.
    chords_per_bar : int
        1, or 2 (4/4 only: chords change on beats 1 and 3).
    comping : str
        ``'sustain'`` (one attack per chord), ``'beats'`` (an attack on each
        beat) or ``'arpeggio'`` (chord tones in eighth notes).
    drums : bool
        Kick on beat 1 (and 3 in 4/4), snare on the other strong beats,
        hi-hat on every eighth.
    program : int
        General MIDI program of the harmony (0-based).
    bass : bool
        Bass line on the chord roots (and fifths).
    melody : bool
        Simple melody of chord tones.
    bass_program, melody_program : int
        General MIDI programs of bass and melody.
    noise_snr_db : float or None
        Add white noise at this signal-to-noise ratio.
    mp3_kbps : int or None
        Round-trip the rendered audio through MP3 at this bit rate (the truth is kept).
    seed : int
        Seed of every random choice in arrangement and rendering.
    backend : str
        ``'fluidsynth'`` (GM soundfont) or ``'numpy'`` (additive synthesis).
    sample_rate_hz : int
        Output sample rate.
    lead_in_s : float
        Silence before the first beat; the first beat is exactly here.
    tail_s : float
        Time after the last bar (release, reverb); labelled ``N``.
    swing : float
        Delay of the off-beat eighth as a fraction of the beat, 0 to 0.25
        (0 = straight, 1/6 = triplet feel). Beats are never moved.
    """

    tempo_bpm: float
    meter: int = 4
    tonic: int = 0
    mode: str = "major"
    n_bars: int = 8
    progression: tuple[str, ...] = ()
    chords_per_bar: int = 1
    comping: str = "beats"
    drums: bool = True
    program: int = 0
    bass: bool = True
    melody: bool = False
    bass_program: int = 33
    melody_program: int = 73
    noise_snr_db: float | None = None
    mp3_kbps: int | None = None
    seed: int = 0
    backend: str = "numpy"
    sample_rate_hz: int = 44100
    lead_in_s: float = 0.25
    tail_s: float = 1.0
    swing: float = 0.0

    def __post_init__(self) -> None:
        if not 20.0 <= self.tempo_bpm <= 400.0:
            raise SpecError(f"tempo_bpm must be in [20, 400], got {self.tempo_bpm}")
        if self.meter not in (3, 4):
            raise SpecError(f"meter must be 3 or 4, got {self.meter}")
        if not 0 <= self.tonic <= 11:
            raise SpecError(f"tonic must be a pitch class 0-11, got {self.tonic}")
        if self.mode not in MODES:
            raise SpecError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.n_bars < 1:
            raise SpecError(f"n_bars must be >= 1, got {self.n_bars}")
        if not self.progression:  # the mode's default
            default = MAJOR_PROGRESSIONS[0] if self.mode == "major" else MINOR_PROGRESSIONS[0]
            object.__setattr__(self, "progression", default)
        else:
            object.__setattr__(self, "progression", tuple(self.progression))
        for numeral in self.progression:
            parse_numeral(numeral, self.tonic, self.mode)
        if self.chords_per_bar not in (1, 2) or (self.chords_per_bar == 2 and self.meter != 4):
            raise SpecError("chords_per_bar must be 1, or 2 in 4/4")
        if self.comping not in COMPING:
            raise SpecError(f"comping must be one of {COMPING}, got {self.comping!r}")
        for name in ("program", "bass_program", "melody_program"):
            if not 0 <= getattr(self, name) <= 127:
                raise SpecError(f"{name} must be a GM program 0-127")
        if self.backend not in BACKENDS:
            raise SpecError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.sample_rate_hz < 8000:
            raise SpecError(f"sample_rate_hz too low: {self.sample_rate_hz}")
        if self.lead_in_s < 0 or self.tail_s < 0:
            raise SpecError("lead_in_s and tail_s must be >= 0")
        if not 0.0 <= self.swing <= 0.25:
            raise SpecError(f"swing must be in [0, 0.25], got {self.swing}")
        if self.mp3_kbps is not None and not 8 <= self.mp3_kbps <= 320:
            raise SpecError(f"mp3_kbps must be in [8, 320], got {self.mp3_kbps}")

    @property
    def beat_s(self) -> float:
        """Beat period in seconds."""
        return 60.0 / self.tempo_bpm

    @property
    def n_beats(self) -> int:
        """Number of beats of music (the tail is not counted)."""
        return self.n_bars * self.meter

    @property
    def music_end_s(self) -> float:
        """Time at which the last bar ends."""
        return self.lead_in_s + self.n_beats * self.beat_s

    @property
    def n_samples(self) -> int:
        """Length of the rendered audio in samples."""
        return int(round((self.music_end_s + self.tail_s) * self.sample_rate_hz))

    @property
    def duration_s(self) -> float:
        """Length of the rendered audio in seconds."""
        return self.n_samples / self.sample_rate_hz

    @property
    def key(self) -> str:
        """Key as a mir_eval string, e.g. ``'F# minor'``."""
        return key_name(self.tonic, self.mode)

    def to_dict(self) -> dict[str, object]:
        """Return the spec as a JSON-ready dict (``TrackSpec(**d)`` restores it)."""
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["progression"] = list(self.progression)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> TrackSpec:
        """Build a spec from :meth:`to_dict` output."""
        data = dict(data)
        if data.get("progression") is not None:
            data["progression"] = tuple(data["progression"])  # type: ignore[arg-type]
        return cls(**data)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ChordSlot:
    """One chord of a spec's harmony, in beats from the first beat."""

    start_beat: float
    end_beat: float
    root: int
    quality: str

    @property
    def label(self) -> str:
        """Harte label of the chord."""
        return chord_label(self.root, self.quality)


def chord_plan(spec: TrackSpec) -> list[ChordSlot]:
    """Return the chord of every slot, cycling the progression, ending on the tonic.

    Parameters
    ----------
    spec : TrackSpec
        The recipe.

    Returns
    -------
    list of ChordSlot
        One slot per bar (or per half bar), in order; the last bar holds the
        tonic chord.
    """
    slot_beats = spec.meter // spec.chords_per_bar
    n_slots = spec.n_bars * spec.chords_per_bar
    tonic_quality = "maj" if spec.mode == "major" else "min"
    slots = []
    for i in range(n_slots):
        if i >= n_slots - spec.chords_per_bar and spec.n_bars > 1:
            root, quality = spec.tonic, tonic_quality
        else:
            numeral = spec.progression[i % len(spec.progression)]
            root, quality = parse_numeral(numeral, spec.tonic, spec.mode)
        slots.append(ChordSlot(i * slot_beats, (i + 1) * slot_beats, root, quality))
    return slots


def _bars_for(
    duration_s: float, tempo_bpm: float, meter: int, lead_in_s: float, tail_s: float
) -> int:
    music_s = max(duration_s - lead_in_s - tail_s, 0.0)
    return max(2, int(round(music_s * tempo_bpm / 60.0 / meter)))


def random_spec(
    rng: np.random.Generator,
    *,
    duration_s: float = 30.0,
    backend: str = "numpy",
    tempo_bpm: float | None = None,
    meter: int | None = None,
    tonic: int | None = None,
    mode: str | None = None,
    drums: bool | None = None,
    program: int | None = None,
    noise_snr_db: float | None = None,
    mp3_kbps: int | None = None,
    sample_rate_hz: int = 44100,
) -> TrackSpec:
    """Draw a varied, musically sensible spec; fixed arguments are kept as given.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every random choice.
    duration_s : float
        Approximate length of the track (whole bars are rendered).
    backend : str
        ``'fluidsynth'`` or ``'numpy'``.
    tempo_bpm, meter, tonic, mode, drums, program : optional
        Fix these attributes instead of drawing them (tempo 60-200 BPM,
        3/4 in about a third of the draws, drums in half).
    noise_snr_db, mp3_kbps : optional
        Degradations, kept as given (never drawn).
    sample_rate_hz : int
        Output sample rate.

    Returns
    -------
    TrackSpec
        A valid spec.
    """
    if tempo_bpm is None:
        tempo_bpm = round(float(rng.uniform(60.0, 200.0)), 2)
    if meter is None:
        meter = 3 if rng.random() < 1 / 3 else 4
    if tonic is None:
        tonic = int(rng.integers(12))
    if mode is None:
        mode = MODES[int(rng.integers(2))]
    if drums is None:
        drums = bool(rng.random() < 0.5)
    if program is None:
        program = int(rng.choice(list(HARMONY_PROGRAMS)))
    progressions = MAJOR_PROGRESSIONS if mode == "major" else MINOR_PROGRESSIONS
    progression = progressions[int(rng.integers(len(progressions)))]
    chords_per_bar = 2 if meter == 4 and tempo_bpm >= 110 and rng.random() < 0.3 else 1
    # Without drums a track needs attacks on the beats to have a tempo at all.
    comping_choices = COMPING if drums else ("beats", "arpeggio")
    comping = comping_choices[int(rng.integers(len(comping_choices)))]
    lead_in_s = round(float(rng.uniform(0.0, 0.5)), 3)
    tail_s = 1.0
    swing = 0.0
    if drums and rng.random() < 0.15:
        swing = round(float(rng.uniform(0.05, 1 / 6)), 3)
    return TrackSpec(
        tempo_bpm=float(tempo_bpm),
        meter=meter,
        tonic=tonic,
        mode=mode,
        n_bars=_bars_for(duration_s, tempo_bpm, meter, lead_in_s, tail_s),
        progression=progression,
        chords_per_bar=chords_per_bar,
        comping=comping,
        drums=drums,
        program=program,
        bass=bool(not drums or rng.random() < 0.8),  # without drums the bass marks the beat
        melody=bool(rng.random() < 0.7),
        bass_program=int(rng.choice(list(BASS_PROGRAMS))),
        melody_program=int(rng.choice(list(MELODY_PROGRAMS))),
        noise_snr_db=noise_snr_db,
        mp3_kbps=mp3_kbps,
        seed=int(rng.integers(2**31 - 1)),
        backend=backend,
        sample_rate_hz=sample_rate_hz,
        lead_in_s=lead_in_s,
        tail_s=tail_s,
        swing=swing,
    )


def balanced(values: Sequence[object], n: int, rng: np.random.Generator) -> list[object]:
    """Return ``n`` items in which every value occurs ``n // len(values)`` or one more times.

    Parameters
    ----------
    values : sequence
        The values to balance.
    n : int
        Length of the result.
    rng : numpy.random.Generator
        Shuffles the result (and picks which values get the extra count).

    Returns
    -------
    list
        Shuffled, balanced list.
    """
    reps = math.ceil(n / len(values)) if values else 0
    pool: list[object] = []
    for _ in range(reps):
        pool.extend(values[i] for i in rng.permutation(len(values)))
    pool = pool[:n]
    return [pool[i] for i in rng.permutation(len(pool))]


def plan_specs(
    n: int,
    *,
    seed: int = 0,
    duration_s: float = 30.0,
    backend: str = "numpy",
    tempo_range: tuple[float, float] = (60.0, 200.0),
    three_four_fraction: float = 1 / 3,
    degrade_fraction: float = 0.0,
    sample_rate_hz: int = 44100,
) -> list[TrackSpec]:
    """Draw ``n`` specs stratified over key, tempo, meter, drums and instrument.

    Keys cycle through all 24 (each occurs ``n // 24`` or one more times);
    tempi take one uniform draw from each of ``n`` equal sub-ranges of
    ``tempo_range``; meter, drums and harmony programs are balanced lists,
    each independently shuffled. A ``degrade_fraction`` of the tracks is
    degraded, alternately with white noise (SNR 6-30 dB) and a 64 kbps MP3
    round trip.

    Parameters
    ----------
    n : int
        Number of specs.
    seed : int
        Seed of the plan; the same arguments give the same specs.
    duration_s : float
        Approximate length of every track.
    backend : str
        ``'fluidsynth'`` or ``'numpy'``.
    tempo_range : tuple of float
        Lowest and highest tempo.
    three_four_fraction : float
        Share of tracks in 3/4.
    degrade_fraction : float
        Share of degraded tracks, 0 to 1.
    sample_rate_hz : int
        Output sample rate.

    Returns
    -------
    list of TrackSpec
        ``n`` specs.
    """
    if n < 0 or not 0.0 <= degrade_fraction <= 1.0 or not 0.0 <= three_four_fraction <= 1.0:
        raise SpecError("n must be >= 0 and the fractions in [0, 1]")
    rng = np.random.default_rng([seed, 7001])
    keys = balanced([(t, m) for m in MODES for t in range(12)], n, rng)
    lo, hi = tempo_range
    edges = np.linspace(lo, hi, n + 1)
    tempos = [round(float(rng.uniform(edges[i], edges[i + 1])), 2) for i in range(n)]
    tempos = [tempos[i] for i in rng.permutation(n)]
    n34 = int(round(n * three_four_fraction))
    meters = [3] * n34 + [4] * (n - n34)
    meters = [meters[i] for i in rng.permutation(n)]
    drums = balanced([True, False], n, rng)
    programs = balanced(list(HARMONY_PROGRAMS), n, rng)
    n_degraded = int(round(n * degrade_fraction))
    degraded = set(rng.permutation(n)[:n_degraded].tolist())
    specs = []
    k = 0
    for i in range(n):
        noise = None
        mp3 = None
        if i in degraded:
            if k % 2 == 0:
                noise = round(float(rng.uniform(6.0, 30.0)), 1)
            else:
                mp3 = 64
            k += 1
        tonic, mode = keys[i]  # type: ignore[misc]
        spec = random_spec(
            rng,
            duration_s=duration_s,
            backend=backend,
            tempo_bpm=tempos[i],
            meter=meters[i],
            tonic=tonic,
            mode=mode,
            drums=drums[i],  # type: ignore[arg-type]
            program=programs[i],  # type: ignore[arg-type]
            noise_snr_db=noise,
            mp3_kbps=mp3,
            sample_rate_hz=sample_rate_hz,
        )
        specs.append(spec)
    logger.debug("planned %d specs (seed %d)", n, seed)
    return specs


def with_backend(spec: TrackSpec, backend: str) -> TrackSpec:
    """Return ``spec`` with another backend (everything else unchanged)."""
    return replace(spec, backend=backend)
