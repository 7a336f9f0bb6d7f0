"""Ground truth of synthetic tracks: the :class:`Truth` record and its files.

The manifest is JSON Lines (``truth.jsonl``): one :meth:`Truth.to_dict` object
per line, with ``path`` relative to the manifest's directory. Keys are
mir_eval strings (``'Eb major'``) spelled with
:data:`~mirflow.synth.spec.PITCH_NAMES`; chords are ``[start, end, label]``
triples in Harte syntax covering ``[0, duration_s]`` without gaps, with ``N``
for silence and ``X`` (mir_eval: not evaluated) where no clean triad sounds.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from mirflow.synth.spec import PITCH_NAMES, TrackSpec, chord_plan, key_name

logger = logging.getLogger(__name__)

SOURCES = ("synthetic", "chorale", "score")


@dataclass(frozen=True, kw_only=True)
class Truth:
    """Exact ground truth of one rendered track.

    Parameters
    ----------
    path : str
        Audio file (absolute once read back with :func:`read_truth_jsonl`).
    track_id : str
        Unique name within the corpus (the file stem).
    source : str
        ``'synthetic'`` (from a :class:`TrackSpec`) or ``'chorale'`` (a Bach
        chorale from music21's corpus).
    format : str
        File format (suffix without the dot).
    duration_s : float
        Length of the audio.
    sample_rate_hz, channels : int
        Of the written audio.
    tempo_bpm : float
        Quarter-note tempo; constant.
    meter : int
        Beats per bar.
    beats : tuple of float
        Beat times in seconds.
    beat_in_bar : tuple of int
        Position of each beat in its bar, 1 = downbeat.
    key : str or None
        mir_eval key, e.g. ``'F# minor'``; None where the audio's key is not scored
        (``key_note`` says why, see :func:`~mirflow.synth.corpus.span_key`).
    tonic : int or None
        Pitch class of the tonic, C = 0.
    mode : str or None
        ``'major'`` or ``'minor'``.
    chords : tuple of (float, float, str)
        Contiguous ``(start, end, label)`` intervals from 0 to ``duration_s``.
    instrument : str
        What plays the harmony, e.g. ``'GM 19 Church Organ'``.
    program : int or None
        GM program of the harmony.
    drums : bool
        Whether drums play.
    backend : str
        ``'fluidsynth'`` or ``'numpy'``.
    noise_snr_db : float or None
        White noise added at this SNR.
    mp3_kbps : int or None
        Bit rate of the MP3 round trip, if any.
    seed : int
        Seed of the spec.
    origin : str or None
        Source score of a chorale (corpus path relative to music21's corpus).
    key_note : str or None
        Why the key is not scored, where ``key`` is None.
    spec : dict or None
        The full :class:`TrackSpec` (synthetic tracks), to re-render.
    """

    path: str
    track_id: str
    source: str
    format: str
    duration_s: float
    sample_rate_hz: int
    channels: int
    tempo_bpm: float
    meter: int
    beats: tuple[float, ...]
    beat_in_bar: tuple[int, ...]
    key: str | None
    tonic: int | None
    mode: str | None
    chords: tuple[tuple[float, float, str], ...]
    instrument: str
    program: int | None
    drums: bool
    backend: str
    noise_snr_db: float | None = None
    mp3_kbps: int | None = None
    seed: int = 0
    origin: str | None = None
    key_note: str | None = None
    spec: dict[str, Any] | None = field(default=None, compare=False)

    # ---------------------------------------------------------------- derived views

    @property
    def degraded(self) -> bool:
        """True if noise was added or the audio went through an MP3 round trip."""
        return self.noise_snr_db is not None or self.mp3_kbps is not None

    @property
    def downbeats(self) -> np.ndarray:
        """Times of the beats with ``beat_in_bar == 1``."""
        beats = np.asarray(self.beats, dtype=float)
        return beats[np.asarray(self.beat_in_bar) == 1]

    @property
    def key_jams(self) -> str | None:
        """Key in the JAMS ``key_mode`` spelling, e.g. ``'F#:minor'``; None where the key is not scored."""
        return None if self.tonic is None else f"{PITCH_NAMES[self.tonic]}:{self.mode}"

    def chord_intervals(self) -> np.ndarray:
        """Chord intervals as an ``(n, 2)`` array, as mir_eval wants them."""
        return np.array([[s, e] for s, e, _ in self.chords], dtype=float).reshape(-1, 2)

    def chord_labels(self) -> list[str]:
        """Chord labels, parallel to :meth:`chord_intervals`."""
        return [label for _, _, label in self.chords]

    # ---------------------------------------------------------------- (de)serialization

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (tuples become lists)."""
        out = asdict(self)
        out["beats"] = list(self.beats)
        out["beat_in_bar"] = list(self.beat_in_bar)
        out["chords"] = [[s, e, lab] for s, e, lab in self.chords]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Truth:
        """Build a :class:`Truth` from :meth:`to_dict` output (unknown keys are ignored)."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["beats"] = tuple(float(b) for b in kwargs["beats"])
        kwargs["beat_in_bar"] = tuple(int(b) for b in kwargs["beat_in_bar"])
        kwargs["chords"] = tuple((float(s), float(e), str(lab)) for s, e, lab in kwargs["chords"])
        return cls(**kwargs)

    def with_path(self, path: str | os.PathLike[str]) -> Truth:
        """Return a copy with another ``path``."""
        return replace(self, path=str(path))

    def validate(self) -> None:
        """Check internal consistency.

        Raises
        ------
        ValueError
            If beats, bar positions, key or chord intervals are inconsistent.
        """
        if self.source not in SOURCES:
            raise ValueError(f"unknown source {self.source!r}")
        if self.key is None:
            if self.tonic is not None or self.mode is not None or not self.key_note:
                raise ValueError("a track without a scored key has no tonic or mode, and a key_note")
        elif self.tonic is None or self.mode is None or key_name(self.tonic, self.mode) != self.key:
            raise ValueError(f"key {self.key!r} does not match tonic/mode")
        if len(self.beats) != len(self.beat_in_bar):
            raise ValueError("beats and beat_in_bar differ in length")
        beats = np.asarray(self.beats)
        if beats.size and (
            np.any(np.diff(beats) <= 0) or beats[0] < 0 or beats[-1] > self.duration_s
        ):
            raise ValueError("beats must increase within [0, duration_s]")
        if any(not 1 <= b <= self.meter for b in self.beat_in_bar):
            raise ValueError("beat_in_bar out of range")
        for prev, cur in zip(self.beat_in_bar, self.beat_in_bar[1:], strict=False):
            if cur != prev % self.meter + 1:
                raise ValueError("beat_in_bar must count 1..meter cyclically")
        if not self.chords:
            raise ValueError("no chord intervals")
        if abs(self.chords[0][0]) > 1e-9 or abs(self.chords[-1][1] - self.duration_s) > 1e-6:
            raise ValueError("chord intervals must span [0, duration_s]")
        for (_, e0, _), (s1, e1, _) in zip(self.chords, self.chords[1:], strict=False):
            if abs(e0 - s1) > 1e-9 or e1 <= s1:
                raise ValueError("chord intervals must be contiguous and non-empty")


def _merge(chords: Iterable[tuple[float, float, str]]) -> tuple[tuple[float, float, str], ...]:
    """Merge adjacent intervals with the same label and drop empty ones."""
    out: list[tuple[float, float, str]] = []
    for start, end, label in chords:
        if end <= start:
            continue
        if out and out[-1][2] == label and abs(out[-1][1] - start) < 1e-9:
            out[-1] = (out[-1][0], end, label)
        else:
            out.append((start, end, label))
    return tuple(out)


def chords_with_silence(
    chords: Sequence[tuple[float, float, str]], duration_s: float
) -> tuple[tuple[float, float, str], ...]:
    """Pad chord intervals with ``N`` so they span ``[0, duration_s]``, merging repeats.

    Parameters
    ----------
    chords : sequence of (float, float, str)
        Contiguous chord intervals of the music.
    duration_s : float
        Length of the audio.

    Returns
    -------
    tuple of (float, float, str)
        Intervals from 0 to ``duration_s``.
    """
    first = chords[0][0] if chords else duration_s
    last = chords[-1][1] if chords else duration_s
    padded = [(0.0, first, "N"), *chords, (last, duration_s, "N")]
    return _merge(padded)


def key_truth(key: tuple[int, str] | None, transpose: int, note: str | None) -> dict[str, Any]:
    """The key fields of a :class:`Truth` (``key``, ``tonic``, ``mode``, ``key_note``) of a rendered score.

    Parameters
    ----------
    key : (int, str) or None
        The score's (tonic pitch class, mode), untransposed; None where the key is not scored.
    transpose : int
        Semitones the render is transposed by.
    note : str or None
        Why the key is not scored.

    Examples
    --------
    >>> key_truth((9, "minor"), 2, None)
    {'key': 'B minor', 'tonic': 11, 'mode': 'minor', 'key_note': None}
    """
    if key is None:
        return {"key": None, "tonic": None, "mode": None, "key_note": note}
    tonic = (key[0] + transpose) % 12
    return {"key": key_name(tonic, key[1]), "tonic": tonic, "mode": key[1], "key_note": None}


def truth_from_spec(
    spec: TrackSpec,
    *,
    path: str | os.PathLike[str],
    track_id: str | None = None,
    channels: int | None = None,
    instrument: str | None = None,
) -> Truth:
    """Compute the exact ground truth of a synthetic spec.

    Parameters
    ----------
    spec : TrackSpec
        The recipe that was (or will be) rendered.
    path : str or path-like
        Audio file; its suffix is the format.
    track_id : str, optional
        Defaults to the file stem.
    channels : int, optional
        Defaults to 2 for FluidSynth and 1 for numpy.
    instrument : str, optional
        Defaults to the GM program name (with the numpy timbre for the numpy backend).

    Returns
    -------
    Truth
        Beats at ``lead_in_s + k * 60 / tempo_bpm``; chords from
        :func:`~mirflow.synth.spec.chord_plan`.
    """
    from mirflow.synth.render import timbre_for_program
    from mirflow.synth.spec import gm_program_name

    path = Path(path)
    beat_s = spec.beat_s
    beats = tuple(spec.lead_in_s + k * beat_s for k in range(spec.n_beats))
    beat_in_bar = tuple(k % spec.meter + 1 for k in range(spec.n_beats))
    music = [
        (spec.lead_in_s + s.start_beat * beat_s, spec.lead_in_s + s.end_beat * beat_s, s.label)
        for s in chord_plan(spec)
    ]
    if instrument is None:
        instrument = f"GM {spec.program} {gm_program_name(spec.program)}"
        if spec.backend == "numpy":
            instrument += f" (numpy {timbre_for_program(spec.program)})"
    return Truth(
        path=str(path),
        track_id=track_id or path.stem,
        source="synthetic",
        format=path.suffix.lower().lstrip("."),
        duration_s=spec.duration_s,
        sample_rate_hz=spec.sample_rate_hz,
        channels=channels if channels is not None else (2 if spec.backend == "fluidsynth" else 1),
        tempo_bpm=spec.tempo_bpm,
        meter=spec.meter,
        beats=beats,
        beat_in_bar=beat_in_bar,
        key=spec.key,
        tonic=spec.tonic,
        mode=spec.mode,
        chords=chords_with_silence(music, spec.duration_s),
        instrument=instrument,
        program=spec.program,
        drums=spec.drums,
        backend=spec.backend,
        noise_snr_db=spec.noise_snr_db,
        mp3_kbps=spec.mp3_kbps,
        seed=spec.seed,
        spec=spec.to_dict(),
    )


# --------------------------------------------------------------------------- JSONL manifest


def write_truth_jsonl(truths: Iterable[Truth], path: str | os.PathLike[str]) -> Path:
    """Write a JSON Lines manifest, one truth per line, paths relative to its directory.

    Parameters
    ----------
    truths : iterable of Truth
        Records to write (absolute or relative paths).
    path : str or path-like
        Output file, conventionally ``truth.jsonl``.

    Returns
    -------
    Path
        The written manifest.
    """
    path = Path(path)
    base = path.parent.resolve()
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for truth in truths:
            record = truth.to_dict()
            audio = Path(truth.path)
            if audio.is_absolute():
                try:
                    record["path"] = audio.resolve().relative_to(base).as_posix()
                except ValueError:
                    record["path"] = str(audio)
            fh.write(json.dumps(record, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def read_truth_jsonl(path: str | os.PathLike[str], *, resolve_paths: bool = True) -> list[Truth]:
    """Read a manifest written by :func:`write_truth_jsonl`.

    Parameters
    ----------
    path : str or path-like
        The ``truth.jsonl`` file.
    resolve_paths : bool
        Make relative audio paths absolute (relative to the manifest's directory).

    Returns
    -------
    list of Truth
        In file order.
    """
    path = Path(path)
    base = path.parent.resolve()
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            truth = Truth.from_dict(json.loads(line))
            if resolve_paths and not Path(truth.path).is_absolute():
                truth = truth.with_path(base / truth.path)
            out.append(truth)
    return out


# --------------------------------------------------------------------------- JAMS


def to_jams(truth: Truth) -> Any:
    """Return the truth as a :class:`jams.JAMS` object.

    Annotations: ``key_mode`` (``'A:minor'``; none where the key is not scored, its
    reason in the sandbox's ``key_note``), ``tempo`` (confidence 1), ``beat`` (value =
    position in bar) and ``chord`` (Harte labels, ``N``, ``X``).
    """
    import jams

    jam = jams.JAMS()
    jam.file_metadata.duration = truth.duration_s
    jam.file_metadata.title = truth.track_id
    jam.file_metadata.identifiers = {"path": Path(truth.path).name}
    meta = jams.AnnotationMetadata(
        annotator={"name": "mirflow.synth"},
        data_source=f"mirflow.synth ({truth.source}, {truth.backend})",
        version="1",
        annotation_tools="mirflow.synth",
        annotation_rules="exact: rendered from the score",
    )

    def annotation(namespace: str) -> Any:
        return jams.Annotation(
            namespace=namespace, time=0, duration=truth.duration_s, annotation_metadata=meta
        )

    keys = []
    if truth.key_jams is not None:
        keys.append(annotation("key_mode"))
        keys[0].append(time=0.0, duration=truth.duration_s, value=truth.key_jams, confidence=1.0)
    tempo = annotation("tempo")
    tempo.append(time=0.0, duration=truth.duration_s, value=float(truth.tempo_bpm), confidence=1.0)
    beat = annotation("beat")
    for t, pos in zip(truth.beats, truth.beat_in_bar, strict=True):
        beat.append(time=float(t), duration=0.0, value=int(pos), confidence=1.0)
    chord = annotation("chord")
    for start, end, label in truth.chords:
        chord.append(time=float(start), duration=float(end - start), value=label, confidence=1.0)
    jam.annotations.extend([*keys, tempo, beat, chord])
    jam.sandbox.update(
        mirflow={
            k: v
            for k, v in truth.to_dict().items()
            if k
            in (
                "source",
                "backend",
                "instrument",
                "program",
                "drums",
                "noise_snr_db",
                "mp3_kbps",
                "seed",
                "origin",
                "meter",
                "key_note",
            )
        }
    )
    return jam


def write_jams(truth: Truth, path: str | os.PathLike[str]) -> Path:
    """Validate and write :func:`to_jams` of a truth to ``path``."""
    path = Path(path)
    to_jams(truth).save(str(path), strict=True)
    return path
