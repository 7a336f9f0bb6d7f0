"""Arrangements (note lists in beats) and their Standard MIDI Files.

:func:`arrange` turns a :class:`~mirflow.synth.spec.TrackSpec` into an
:class:`Arrangement`: chords, bass, melody and General MIDI drums, every
note on an exact beat or eighth position. Both render backends play the same
arrangement; :func:`write_midi` writes it for FluidSynth with ``mido``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mirflow.synth.spec import MAJOR_SCALE, MINOR_SCALE, TrackSpec, chord_plan

logger = logging.getLogger(__name__)

DRUM_CHANNEL = 9
KICK, SNARE, CLOSED_HAT, CRASH = 36, 38, 42, 49
TICKS_PER_BEAT = 960

CHORD_CHANNEL, BASS_CHANNEL, MELODY_CHANNEL = 0, 1, 2


@dataclass(frozen=True)
class Note:
    """One note of an arrangement.

    Parameters
    ----------
    start_beat : float
        Onset in beats from the first beat (beat 0 sounds at ``lead_in_s``).
    dur_beats : float
        Duration in beats.
    pitch : int
        MIDI note number (a GM percussion key on the drum channel).
    velocity : int
        MIDI velocity 1-127.
    channel : int
        MIDI channel 0-15; 9 is General MIDI percussion.
    """

    start_beat: float
    dur_beats: float
    pitch: int
    velocity: int
    channel: int


@dataclass(frozen=True)
class Arrangement:
    """A complete arrangement at one constant tempo.

    Parameters
    ----------
    tempo_bpm : float
        Quarter-note tempo.
    n_beats : float
        Length of the music in beats (the end of the last bar).
    notes : tuple of Note
        All notes, sorted by onset.
    programs : dict
        General MIDI program of each melodic channel.
    tail_beats : float
        Extra time after ``n_beats`` for releases and reverb.
    """

    tempo_bpm: float
    n_beats: float
    notes: tuple[Note, ...]
    programs: dict[int, int] = field(default_factory=dict)
    tail_beats: float = 2.0

    @property
    def beat_s(self) -> float:
        """Beat period in seconds."""
        return 60.0 / self.tempo_bpm


def _pitch_in(pc: int, low: int) -> int:
    """Return the MIDI pitch of class ``pc`` in ``[low, low + 12)``."""
    return low + (pc - low) % 12


def _triad(root: int, quality: str) -> tuple[int, int, int]:
    third = 4 if quality == "maj" else 3
    return root % 12, (root + third) % 12, (root + 7) % 12


def _velocity(rng: np.random.Generator, base: int, spread: int = 6) -> int:
    return int(np.clip(base + rng.integers(-spread, spread + 1), 1, 127))


def arrange(spec: TrackSpec) -> Arrangement:
    """Build the arrangement of a spec (deterministic given ``spec.seed``).

    Parameters
    ----------
    spec : TrackSpec
        The recipe.

    Returns
    -------
    Arrangement
        Chords on channel 0 (close voicing between G3 and F#4, plus the root
        of a major or the third of a minor triad between G4 and F#5), bass on
        channel 1 (roots and fifths in octave 2), melody on channel 2 (chord
        tones between C4 and B5, passing scale tones on off-beats) and General
        MIDI drums on channel 9.
    """
    rng = np.random.default_rng([spec.seed, 101])
    notes: list[Note] = []
    off = 0.5 + spec.swing  # position of the off-beat eighth within a beat
    slots = chord_plan(spec)
    scale = MAJOR_SCALE if spec.mode == "major" else MINOR_SCALE
    bass_pattern = int(rng.integers(2))
    melody_prev = 72
    for slot in slots:
        triad = _triad(slot.root, slot.quality)
        voicing = sorted(_pitch_in(pc, 55) for pc in triad)
        # The fourth voice, an octave up, doubles the root of a major triad and
        # the third of a minor one, which keeps minor keys from sounding major.
        voicing.append(_pitch_in(triad[0] if slot.quality == "maj" else triad[1], 67))
        length = slot.end_beat - slot.start_beat
        beats = [slot.start_beat + b for b in range(int(length))]
        # Chords.
        if spec.comping == "sustain":
            for p in voicing:
                notes.append(Note(slot.start_beat, length - 0.05, p, _velocity(rng, 80), 0))
        elif spec.comping == "beats":
            for b in beats:
                accent = 14 if (b % spec.meter) == 0 else 0
                for p in voicing:
                    notes.append(Note(b, 0.8, p, _velocity(rng, 72 + accent), 0))
        else:  # arpeggio in eighths: up the voicing and back
            order = voicing + voicing[-2:0:-1]
            k = 0
            for b in beats:
                for pos in (0.0, off):
                    dur = (off if pos == 0.0 else 1.0 - off) * 0.95
                    accent = (10 if pos == 0.0 else 0) + (
                        10 if pos == 0.0 and b % spec.meter == 0 else 0
                    )
                    notes.append(
                        Note(b + pos, dur, order[k % len(order)], _velocity(rng, 64 + accent), 0)
                    )
                    k += 1
        # Bass: root on the first beat, then a pattern of roots and fifths.
        if spec.bass:
            root = _pitch_in(slot.root, 36)
            fifth = root + 7 if root + 7 < 48 else root - 5
            for b in beats:
                in_bar = int(b % spec.meter)
                if bass_pattern == 0:  # every beat
                    pitch = fifth if (spec.meter == 4 and in_bar == 2) else root
                    notes.append(Note(b, 0.9, pitch, _velocity(rng, 96 if in_bar == 0 else 84), 1))
                elif spec.meter == 4 and in_bar in (0, 2):  # half notes
                    pitch = root if in_bar == 0 else fifth
                    notes.append(Note(b, 1.9, pitch, _velocity(rng, 96 if in_bar == 0 else 86), 1))
                elif spec.meter == 3:  # oom-pah-pah
                    pitch = root if in_bar == 0 else fifth
                    notes.append(Note(b, 0.9, pitch, _velocity(rng, 96 if in_bar == 0 else 78), 1))
        # Melody: chord tones on beats, an occasional scale tone on the off-beat.
        if spec.melody:
            key_pcs = {(spec.tonic + s) % 12 for s in scale}
            leading = (spec.tonic + 11) % 12
            if spec.mode == "minor" and leading in triad:  # harmonic minor over V
                key_pcs = (key_pcs - {(spec.tonic + 10) % 12}) | {leading}
            tones = sorted(p for pc in triad for p in (_pitch_in(pc, 60), _pitch_in(pc, 72)))
            for b in beats:
                if rng.random() < 0.15 and b != slot.start_beat:
                    continue
                near = sorted(tones, key=lambda p: (abs(p - melody_prev), p))[:3]
                pitch = near[int(rng.integers(len(near)))]
                if rng.random() < 0.35:
                    notes.append(Note(b, off * 0.95, pitch, _velocity(rng, 88), 2))
                    step = 1 if rng.random() < 0.5 else -1
                    passing = pitch + step
                    while passing % 12 not in key_pcs:
                        passing += step
                    notes.append(Note(b + off, (1.0 - off) * 0.95, passing, _velocity(rng, 80), 2))
                else:
                    notes.append(Note(b, 0.95, pitch, _velocity(rng, 88), 2))
                melody_prev = pitch
    # Drums.
    if spec.drums:
        for b in range(spec.n_beats):
            in_bar = b % spec.meter
            if in_bar == 0 or (spec.meter == 4 and in_bar == 2):
                notes.append(Note(b, 0.25, KICK, _velocity(rng, 112 if in_bar == 0 else 100), 9))
            if (spec.meter == 4 and in_bar in (1, 3)) or (spec.meter == 3 and in_bar in (1, 2)):
                notes.append(
                    Note(b, 0.25, SNARE, _velocity(rng, 100 if spec.meter == 4 else 80), 9)
                )
            notes.append(Note(b, 0.25, CLOSED_HAT, _velocity(rng, 84 if in_bar == 0 else 74), 9))
            notes.append(Note(b + off, 0.25, CLOSED_HAT, _velocity(rng, 58), 9))
        notes.append(Note(0, 1.0, CRASH, _velocity(rng, 96), 9))
    notes.sort(key=lambda n: (n.start_beat, n.channel, n.pitch))
    programs = {
        CHORD_CHANNEL: spec.program,
        BASS_CHANNEL: spec.bass_program,
        MELODY_CHANNEL: spec.melody_program,
    }
    tail_beats = spec.tail_s / spec.beat_s
    return Arrangement(spec.tempo_bpm, float(spec.n_beats), tuple(notes), programs, tail_beats)


def write_midi(arrangement: Arrangement, path: str | Path) -> Path:
    """Write an arrangement as a type-0 Standard MIDI File.

    The first beat is at tick 0; the file ends ``tail_beats`` after the last
    bar so that a renderer plays releases and reverb. Tempo is stored as whole
    microseconds per quarter note (error below 1 microsecond per beat).

    Parameters
    ----------
    arrangement : Arrangement
        What to write.
    path : str or Path
        Output ``.mid`` path.

    Returns
    -------
    Path
        The written path.
    """
    import mido

    events: list[tuple[int, int, mido.Message]] = []
    for note in arrangement.notes:
        on = int(round(note.start_beat * TICKS_PER_BEAT))
        off = max(on + 1, int(round((note.start_beat + note.dur_beats) * TICKS_PER_BEAT)))
        # Note-offs sort before note-ons at the same tick so repeated notes re-attack.
        events.append(
            (
                on,
                1,
                mido.Message(
                    "note_on", channel=note.channel, note=note.pitch, velocity=note.velocity
                ),
            )
        )
        events.append(
            (off, 0, mido.Message("note_off", channel=note.channel, note=note.pitch, velocity=0))
        )
    events.sort(key=lambda e: (e[0], e[1]))
    track = mido.MidiTrack()
    track.append(
        mido.MetaMessage("set_tempo", tempo=int(round(60e6 / arrangement.tempo_bpm)), time=0)
    )
    for channel, program in sorted(arrangement.programs.items()):
        track.append(mido.Message("program_change", channel=channel, program=program, time=0))
    now = 0
    for tick, _, msg in events:
        track.append(msg.copy(time=tick - now))
        now = tick
    end = int(round((arrangement.n_beats + arrangement.tail_beats) * TICKS_PER_BEAT))
    track.append(mido.MetaMessage("end_of_track", time=max(0, end - now)))
    midi = mido.MidiFile(type=0, ticks_per_beat=TICKS_PER_BEAT)
    midi.tracks.append(track)
    path = Path(path)
    midi.save(path)
    logger.debug("wrote %s (%d notes)", path, len(arrangement.notes))
    return path
