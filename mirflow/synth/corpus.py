"""Labelled corpora: synthetic tracks, Bach chorales, and the demo catalog.

:func:`generate_corpus` writes audio files under ``out_dir/audio/``, one JAMS
file per track under ``out_dir/jams/`` and the manifest ``out_dir/truth.jsonl``
(see :mod:`mirflow.synth.truth`). :func:`render_chorale` renders one chorale
from music21's bundled corpus with exact beats and per-beat triad labels.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from mirflow.synth.midi import Arrangement, Note, arrange
from mirflow.synth.render import (
    finish,
    fluidsynth_available,
    render_arrangement,
    soundfile_writes_mp3,
    timbre_for_program,
    write_audio,
)
from mirflow.synth.spec import (
    SpecError,
    TrackSpec,
    balanced,
    chord_label,
    gm_program_name,
    key_name,
    plan_specs,
    with_backend,
)
from mirflow.synth.truth import (
    Truth,
    chords_with_silence,
    key_truth,
    truth_from_spec,
    write_jams,
    write_truth_jsonl,
)

logger = logging.getLogger(__name__)

MANIFEST_NAME = "truth.jsonl"
CHORALE_PROGRAMS: dict[int, str] = {
    19: "Church Organ",
    48: "String Ensemble 1",
    52: "Choir Aahs",
    0: "Acoustic Grand Piano",
    71: "Clarinet",
}


def resolve_backend(backend: str) -> str:
    """Map ``'auto'`` to ``'fluidsynth'`` when it is installed, else ``'numpy'``.

    Parameters
    ----------
    backend : str
        ``'auto'``, ``'fluidsynth'`` or ``'numpy'``.

    Returns
    -------
    str
        A concrete backend name.
    """
    if backend == "auto":
        chosen = "fluidsynth" if fluidsynth_available() else "numpy"
        logger.info("synth backend 'auto' -> %s", chosen)
        return chosen
    if backend not in ("fluidsynth", "numpy"):
        raise SpecError(f"backend must be 'auto', 'fluidsynth' or 'numpy', got {backend!r}")
    return backend


def render_spec(spec: TrackSpec, *, soundfont: str | Path | None = None) -> np.ndarray:
    """Render a spec to samples, degradations included.

    Parameters
    ----------
    spec : TrackSpec
        The recipe.
    soundfont : str or Path, optional
        For the FluidSynth backend.

    Returns
    -------
    numpy.ndarray
        Float32, shape ``(spec.n_samples,)`` (numpy) or ``(spec.n_samples, 2)`` (FluidSynth).
    """
    sr = spec.sample_rate_hz
    y = render_arrangement(
        arrange(spec),
        backend=spec.backend,
        sample_rate_hz=sr,
        lead_in_s=spec.lead_in_s,
        n_samples=spec.n_samples,
        seed=spec.seed,
        soundfont=soundfont,
    )
    region = (int(round(spec.lead_in_s * sr)), int(round(spec.music_end_s * sr)))
    return finish(
        y,
        sample_rate_hz=sr,
        seed=spec.seed,
        noise_snr_db=spec.noise_snr_db,
        mp3_kbps=spec.mp3_kbps,
        music_region=region,
    )


def render_track(
    spec: TrackSpec,
    path: str | os.PathLike[str],
    *,
    soundfont: str | Path | None = None,
    jams_path: str | os.PathLike[str] | None = None,
) -> Truth:
    """Render a spec to an audio file and return its ground truth.

    Parameters
    ----------
    spec : TrackSpec
        The recipe.
    path : str or path-like
        Output audio; the suffix picks the format (wav, flac, ogg, mp3, m4a, aac).
    soundfont : str or Path, optional
        For the FluidSynth backend.
    jams_path : str or path-like, optional
        Also write the truth as JAMS here.

    Returns
    -------
    Truth
        With ``path`` as given.
    """
    y = render_spec(spec, soundfont=soundfont)
    write_audio(y, spec.sample_rate_hz, path)
    truth = truth_from_spec(spec, path=path, channels=1 if y.ndim == 1 else y.shape[1])
    if jams_path is not None:
        write_jams(truth, jams_path)
    return truth


# --------------------------------------------------------------------------- chorales


@dataclass(frozen=True)
class ChoraleScore:
    """A Bach chorale reduced to what rendering and ground truth need.

    Parameters
    ----------
    origin : str
        Path relative to music21's corpus directory, e.g. ``'bach/bwv269.mxl'``.
    meter : int
        Quarter-note beats per bar (3 or 4).
    tonic : int
        Tonic pitch class (untransposed).
    mode : str
        ``'major'`` or ``'minor'``.
    notes : tuple of (float, float, int, int)
        ``(onset, duration, midi_pitch, voice)`` in quarter notes from the first note.
    beats : tuple of (float, int)
        ``(onset, beat_in_bar)`` of every beat, in quarter notes.
    bar_starts : tuple of float
        Onsets of the bars (pickup excluded), in quarter notes.
    end_q : float
        End of the last note.
    """

    origin: str
    meter: int
    tonic: int
    mode: str
    notes: tuple[tuple[float, float, int, int], ...]
    beats: tuple[tuple[float, int], ...]
    bar_starts: tuple[float, ...]
    end_q: float


def _triad(pcs: set[int]) -> tuple[int, str] | None:
    """Return ``(root, 'maj'|'min')`` if the pitch classes are exactly a major or minor triad."""
    if len(pcs) != 3:
        return None
    for root in pcs:
        if pcs == {root, (root + 4) % 12, (root + 7) % 12}:
            return root, "maj"
        if pcs == {root, (root + 3) % 12, (root + 7) % 12}:
            return root, "min"
    return None


def _sounding(notes: np.ndarray, t: float) -> np.ndarray:
    """Rows of ``notes`` (onset, duration, pitch, voice) sounding at time ``t``."""
    return notes[(notes[:, 0] <= t + 1e-9) & (notes[:, 0] + notes[:, 1] > t + 1e-9)]


def beat_label(notes: np.ndarray, start: float, end: float, transpose: int = 0) -> str:
    """Label the span ``[start, end)`` of a chorale: a triad, or ``X``.

    The span is labelled ``root:maj``/``root:min`` (root position, whatever the
    inversion) when the sonority at its onset is exactly a major or minor
    triad, that triad sounds for at least half the span, and at most one other
    pitch class (a passing or neighbour tone) sounds anywhere in it. Otherwise
    the label is ``X``, which mir_eval leaves out of the evaluation.

    Parameters
    ----------
    notes : numpy.ndarray
        ``(n, 4)`` array of onset, duration, MIDI pitch, voice (quarter notes).
    start, end : float
        The span in quarter notes.
    transpose : int
        Semitones added to the root.

    Returns
    -------
    str
        Harte label or ``X``.
    """
    inside = notes[(notes[:, 0] < end - 1e-9) & (notes[:, 0] + notes[:, 1] > start + 1e-9)]
    cuts = {start, end}
    for onset, dur, _, _ in inside:
        for t in (onset, onset + dur):
            if start < t < end:
                cuts.add(float(t))
    cuts_sorted = sorted(cuts)
    first = {int(p) % 12 for p in _sounding(notes, start)[:, 2]}
    triad = _triad(first)
    if triad is None:
        return "X"
    covered = 0.0
    union: set[int] = set()
    for a, b in zip(cuts_sorted, cuts_sorted[1:], strict=False):
        pcs = {int(p) % 12 for p in _sounding(notes, a)[:, 2]}
        union |= pcs
        if pcs == first:
            covered += b - a
    if covered < 0.5 * (end - start) or len(union - first) > 1:
        return "X"
    return chord_label(triad[0] + transpose, triad[1])


_KEY_METHODS = ("krumhansl", "aarden", "temperleykostkapayne", "bellman")


def agreed_key(score: Any) -> tuple[int, str] | None:
    """The key music21's four profile methods (:data:`_KEY_METHODS`) agree on, or None.

    Each method's ``process`` gives the top solution (tonic, mode, correlation);
    ``score.analyze`` gives the same tonic and mode but first builds a music21
    ``Key`` (three interval networks each) for every one of the 23 alternatives.
    Skipping them took the five-corpus disjointness test from 156 s to 121 s with
    music21's parse cache warm (stop 23, 2-core AMD EPYC; same keys on 55 pieces).

    Returns
    -------
    (tonic pitch class, mode) or None
        None when a method fails or two methods disagree.
    """
    from music21.analysis import discrete

    flat = score.flatten()
    keys: set[tuple[int, str]] = set()
    for method in _KEY_METHODS:
        try:
            (tonic, mode, _), _ = discrete.analysisClassFromMethodName(method)().process(flat)
        except Exception:  # noqa: BLE001 - no key analysis, no trusted key
            return None
        keys.add((int(tonic.pitchClass), str(mode)))
        if len(keys) > 1:  # the methods disagree: no trusted key
            return None
    return keys.pop()


def span_key(notes: np.ndarray, key: tuple[int, str]) -> tuple[tuple[int, str] | None, str | None]:
    """The key truth of a render that holds only ``notes`` of a piece whose key is ``key``.

    A piece's key (:func:`signature_key`) is that of the whole movement or tune,
    but a render holds its first 30 s or less (of a folk tune, its first regular
    bars, repeated): an introduction, a passage in another key, a fragment. In
    stop 31, 8 of the 24 quartet and piano pieces of the tuning and first
    held-out corpora held another key in the span a render held, or none that
    music21's four methods agree on, and 9 of the tuning corpus's 10 surest
    wrong keys were renders of them. So a render keeps the piece's key only
    where the four methods (:func:`agreed_key`) agree on it over the notes that
    sound; otherwise its key is not scored. The span's own key is not taken
    instead: a truth key stays one that the key signature and the profiles both
    support.

    Parameters
    ----------
    notes : ndarray, shape (n, >=3)
        Rows of (onset, duration, MIDI pitch, ...) in quarter notes, untransposed.
    key : (int, str)
        The piece's (tonic pitch class, mode).

    Returns
    -------
    key : (int, str) or None
        ``key``, or None when the span does not hold it.
    note : str or None
        Why the key is not scored (None when it is).
    """
    from music21 import note, stream

    span = stream.Stream()
    for onset, duration, pitch in np.asarray(notes, dtype=float)[:, :3]:
        n = note.Note(int(pitch))
        n.quarterLength = float(duration)
        span.insert(float(onset), n)
    agreed = agreed_key(span)
    if agreed == key:
        return key, None
    movement = key_name(*key)
    if agreed is None:
        return None, f"the rendered span holds no key music21's four key profiles agree on (piece: {movement})"
    return None, f"the rendered span is in {key_name(*agreed)}, the piece in {movement}"


def signature_key(score: Any) -> tuple[int, str] | None:
    """The key of a score whose truth can be trusted: one key signature throughout, and music21's four
    profile methods agreeing (:func:`agreed_key`) on its major key or its relative minor; else None.

    The cheap refusal (more than one key signature) comes before the score-long key analyses.

    Returns
    -------
    (tonic pitch class, 'major' or 'minor') or None
    """
    signatures = list(score.recurse().getElementsByClass("KeySignature"))
    if not signatures or len({ks.sharps for ks in signatures}) != 1:
        return None
    agreed = agreed_key(score)
    if agreed is None or agreed[1] not in ("major", "minor"):
        return None
    tonic, mode = agreed
    major_tonic = (7 * signatures[0].sharps) % 12
    if tonic != (major_tonic if mode == "major" else (major_tonic + 9) % 12):
        return None
    return tonic, mode


MUSICXML_SUFFIXES = (".mxl", ".xml", ".musicxml")


def key_signatures_change(path: str | os.PathLike[str]) -> bool:
    """Whether a MusicXML file names two different key signatures: the refusal of :func:`signature_key`,
    read before music21 parses the file.

    music21 turns every ``<key>`` of a MusicXML file into a ``KeySignature``
    whose ``sharps`` is its ``<fifths>``, so two different ``<fifths>`` mean
    :func:`signature_key` refuses the piece once it is parsed. The standard
    library's XML reader stops at the second value; music21's parse of the
    multi-movement quartet files that fail this way took 9-17 s each from source
    (stop 27), the largest cost of drawing every default corpus plan. A file
    this cannot read, or one with a single or no signature, gives False: the
    parse decides, as before.

    Parameters
    ----------
    path : str or path-like
        A ``.mxl`` (compressed), ``.xml`` or ``.musicxml`` file.

    Returns
    -------
    bool
    """
    import zipfile

    path = Path(path)
    if path.suffix.lower() not in MUSICXML_SUFFIXES:
        return False
    try:
        if path.suffix.lower() == ".mxl":
            with zipfile.ZipFile(path) as z:
                # the member music21 reads (converter.ArchiveManager): the first score file outside META-INF
                member = next(n for n in z.namelist() if "META-INF" not in n
                              and (Path(n).suffix in MUSICXML_SUFFIXES or n == ".xml"))
                with z.open(member) as fh:
                    return _names_two_fifths(fh)
        with path.open("rb") as fh:
            return _names_two_fifths(fh)
    except Exception as exc:  # noqa: BLE001 - an unreadable file is left to music21's parse
        logger.debug("key-signature scan of %s failed: %s", path, exc)
        return False


def _names_two_fifths(fh: Any) -> bool:
    import xml.etree.ElementTree as ET

    seen: set[str] = set()
    for _, elem in ET.iterparse(fh, events=("end",)):
        if elem.tag == "key":
            fifths = elem.find("fifths")
            if fifths is not None and fifths.text is not None:
                seen.add(fifths.text.strip())
                if len(seen) > 1:
                    return True
        elif elem.tag == "measure":
            elem.clear()  # the notes read so far are not needed
    return False


@lru_cache(maxsize=1)  # music21's corpus does not move within a process; looking it up takes ~7 ms
def _corpus_root() -> Path:
    from music21 import corpus

    return Path(corpus.getComposer("bach")[0]).parent.parent


def _chorale_paths() -> list[Path]:
    from music21 import corpus

    return sorted(
        Path(p)
        for p in corpus.getComposer("bach")
        if Path(p).name.startswith("bwv") and Path(p).suffix == ".mxl" and "-" not in Path(p).stem
    )


@lru_cache(maxsize=512)
def load_chorale(origin: str) -> ChoraleScore | None:
    """Parse a chorale and check that its truth can be trusted.

    Accepted: four parts, one time signature (3/4 or 4/4), music21's four
    key-profile estimates (Krumhansl, Aarden, Temperley-Kostka-Payne, Bellman)
    agree with each other and with the key signature (so modal chorales
    notated with a "Dorian" signature are rejected), the first sonority is the
    tonic triad and the last sonority has the tonic in the bass and as its
    root (a Picardy third is fine).

    Parameters
    ----------
    origin : str
        Corpus path (``'bach/bwv269.mxl'``), corpus name (``'bach/bwv269'``)
        or file path.

    Returns
    -------
    ChoraleScore or None
        None if the chorale is rejected.
    """
    from music21 import corpus

    path = Path(origin)
    if not path.is_file():
        path = Path(corpus.getWork(origin))
    if key_signatures_change(path):
        return None
    score = corpus.parse(str(path))
    try:
        rel = path.relative_to(_corpus_root()).as_posix()
    except ValueError:
        rel = str(path)
    parts = list(score.parts)
    if len(parts) != 4:
        return None
    ratios = {ts.ratioString for ts in score.recurse().getElementsByClass("TimeSignature")}
    if ratios not in ({"4/4"}, {"3/4"}):
        return None
    meter = int(next(iter(ratios))[0])
    # The key first, on the score as parsed: the ties are then stripped in place, which saves
    # stripTies' copy of every part (39 of 269 s of drawing every default corpus plan with music21's
    # parse cache warm, stop 27). Every check refuses on its own, so the order changes the time only.
    key = signature_key(score)
    if key is None:
        return None
    rows = []
    for voice, part in enumerate(parts):
        for n in (part.stripTies(inPlace=True) or part).flatten().notes:
            if n.duration.isGrace or n.quarterLength <= 0:
                continue
            for p in n.pitches:
                rows.append((float(n.offset), float(n.quarterLength), int(p.midi), voice))
    if not rows:
        return None
    notes = np.array(sorted(rows), dtype=float)
    end_q = float(np.max(notes[:, 0] + notes[:, 1]))
    beats: list[tuple[float, int]] = []
    bar_starts: list[float] = []
    for m in parts[0].getElementsByClass("Measure"):
        start = float(m.offset) - float(m.paddingLeft)
        stop = float(m.offset) + float(m.duration.quarterLength)
        if float(m.paddingLeft) == 0.0:
            bar_starts.append(float(m.offset))
        for j in range(meter):
            q = start + j
            if float(m.offset) - 1e-9 <= q < min(stop, end_q) - 1e-9:
                beats.append((q, j + 1))
    if len(beats) < 2 * meter or any(
        b1[0] - b0[0] != 1.0 for b0, b1 in zip(beats, beats[1:], strict=False)
    ):
        return None
    tonic, mode = key
    first = _triad({int(p) % 12 for p in _sounding(notes, float(notes[0, 0]))[:, 2]})
    if first != (tonic, "maj" if mode == "major" else "min"):
        return None
    last_notes = _sounding(notes, end_q - 1e-3)
    last = _triad({int(p) % 12 for p in last_notes[:, 2]})
    lowest = int(last_notes[np.argmin(last_notes[:, 2]), 2]) % 12 if len(last_notes) else -1
    if lowest != tonic or (last is not None and last[0] != tonic):
        return None
    notes_t = tuple((float(a), float(b), int(c), int(d)) for a, b, c, d in notes)
    return ChoraleScore(rel, meter, tonic, mode, notes_t, tuple(beats), tuple(bar_starts), end_q)


def find_chorales(n: int, *, seed: int = 0) -> list[str]:
    """Pick ``n`` usable chorales (see :func:`load_chorale`) in a seeded random order.

    Parameters
    ----------
    n : int
        How many.
    seed : int
        Order of the search.

    Returns
    -------
    list of str
        Corpus paths such as ``'bach/bwv269.mxl'``; fewer than ``n`` if the
        corpus runs out.
    """
    paths = _chorale_paths()
    order = np.random.default_rng([seed, 404]).permutation(len(paths))
    root = _corpus_root()
    found: list[str] = []
    for i in order:
        if len(found) >= n:
            break
        origin = paths[i].relative_to(root).as_posix()
        try:
            chorale = load_chorale(origin)
        except Exception as exc:  # noqa: BLE001 - a score music21 cannot read is skipped
            logger.warning("skipping chorale %s: %s", origin, exc)
            continue
        if chorale is not None:
            found.append(origin)
    if len(found) < n:
        logger.warning("only %d usable chorales found (asked for %d)", len(found), n)
    return found


def render_chorale(
    path: str | os.PathLike[str],
    *,
    origin: str,
    tempo_bpm: float = 80.0,
    transpose: int = 0,
    program: int = 19,
    backend: str = "auto",
    lead_in_s: float = 0.25,
    tail_s: float = 1.5,
    max_duration_s: float | None = None,
    sample_rate_hz: int = 44100,
    seed: int = 0,
    noise_snr_db: float | None = None,
    mp3_kbps: int | None = None,
    soundfont: str | Path | None = None,
    jams_path: str | os.PathLike[str] | None = None,
) -> Truth:
    """Render a Bach chorale from music21's corpus at a strict tempo, with its truth.

    Fermatas and repeats are ignored: the score is played as written, at one
    tempo, so beats are exact. The key is the checked key of
    :func:`load_chorale` where the rendered span holds it (:func:`span_key`); chords are labelled per beat by :func:`beat_label`
    (``X`` where the sonority is not a clean triad).

    Parameters
    ----------
    path : str or path-like
        Output audio; the suffix picks the format.
    origin : str
        Chorale, e.g. from :func:`find_chorales`.
    tempo_bpm : float
        Quarter-note tempo.
    transpose : int
        Semitones (key and chords follow).
    program : int
        GM program of all four voices.
    backend : str
        ``'auto'``, ``'fluidsynth'`` or ``'numpy'``.
    lead_in_s, tail_s : float
        Silence before the first note; time after the last.
    max_duration_s : float, optional
        Cut at the last bar line that fits.
    sample_rate_hz : int
        Output sample rate.
    seed : int
        Seeds velocities and noise.
    noise_snr_db, mp3_kbps : optional
        Degradations, as for synthetic tracks.
    soundfont : str or Path, optional
        For FluidSynth.
    jams_path : str or path-like, optional
        Also write JAMS here.

    Returns
    -------
    Truth
        ``source='chorale'``.

    Raises
    ------
    SpecError
        If the chorale is rejected by :func:`load_chorale`.
    """
    chorale = load_chorale(origin)
    if chorale is None:
        raise SpecError(f"chorale {origin!r} is not usable (see load_chorale)")
    backend = resolve_backend(backend)
    rng = np.random.default_rng([seed, 505])
    beat_s = 60.0 / tempo_bpm
    end_q = chorale.end_q
    if max_duration_s is not None:
        limit = (max_duration_s - lead_in_s - tail_s) / beat_s
        fits = [b for b in chorale.bar_starts if 0 < b <= limit]
        if end_q > limit and fits:
            end_q = max(fits)
    all_notes = np.array(chorale.notes, dtype=float)
    notes = all_notes[all_notes[:, 0] < end_q - 1e-9].copy()
    notes[:, 1] = np.minimum(notes[:, 1], end_q - notes[:, 0])
    key, key_note = span_key(notes, (chorale.tonic, chorale.mode))
    arr_notes = tuple(
        Note(
            onset,
            max(dur - 0.04, 0.05),
            int(pitch) + transpose,
            int(np.clip(84 - 4 * voice + rng.integers(-4, 5), 1, 127)),
            int(voice),
        )
        for onset, dur, pitch, voice in notes
    )
    arrangement = Arrangement(
        tempo_bpm, end_q, arr_notes, dict.fromkeys(range(4), program), tail_s / beat_s
    )
    n_samples = int(round((lead_in_s + end_q * beat_s + tail_s) * sample_rate_hz))
    y = render_arrangement(
        arrangement,
        backend=backend,
        sample_rate_hz=sample_rate_hz,
        lead_in_s=lead_in_s,
        n_samples=n_samples,
        seed=seed,
        soundfont=soundfont,
    )
    region = (
        int(round(lead_in_s * sample_rate_hz)),
        int(round((lead_in_s + end_q * beat_s) * sample_rate_hz)),
    )
    y = finish(
        y,
        sample_rate_hz=sample_rate_hz,
        seed=seed,
        noise_snr_db=noise_snr_db,
        mp3_kbps=mp3_kbps,
        music_region=region,
    )
    write_audio(y, sample_rate_hz, path)
    duration_s = n_samples / sample_rate_hz
    beats = [(q, pos) for q, pos in chorale.beats if q < end_q - 1e-9]
    spans = [q for q, _ in beats]
    first_note = float(notes[0, 0])
    chords: list[tuple[float, float, str]] = []
    if first_note < spans[0]:
        chords.append((lead_in_s + first_note * beat_s, lead_in_s + spans[0] * beat_s, "X"))
    for i, q in enumerate(spans):
        nxt = spans[i + 1] if i + 1 < len(spans) else end_q
        label = beat_label(notes, q, nxt, transpose)
        chords.append((lead_in_s + q * beat_s, lead_in_s + nxt * beat_s, label))
    instrument = f"GM {program} {gm_program_name(program)}"
    if backend == "numpy":
        instrument += f" (numpy {timbre_for_program(program)})"
    path = Path(path)
    truth = Truth(
        path=str(path),
        track_id=path.stem,
        source="chorale",
        format=path.suffix.lower().lstrip("."),
        duration_s=duration_s,
        sample_rate_hz=sample_rate_hz,
        channels=1 if y.ndim == 1 else int(y.shape[1]),
        tempo_bpm=float(tempo_bpm),
        meter=chorale.meter,
        beats=tuple(lead_in_s + q * beat_s for q, _ in beats),
        beat_in_bar=tuple(pos for _, pos in beats),
        **key_truth(key, transpose, key_note),
        chords=chords_with_silence(chords, duration_s),
        instrument=instrument,
        program=program,
        drums=False,
        backend=backend,
        noise_snr_db=noise_snr_db,
        mp3_kbps=mp3_kbps,
        seed=seed,
        origin=chorale.origin,
        spec={
            "origin": chorale.origin,
            "tempo_bpm": tempo_bpm,
            "transpose": transpose,
            "program": program,
            "backend": backend,
            "lead_in_s": lead_in_s,
            "tail_s": tail_s,
            "max_duration_s": max_duration_s,
            "sample_rate_hz": sample_rate_hz,
            "seed": seed,
            "noise_snr_db": noise_snr_db,
            "mp3_kbps": mp3_kbps,
        },  # fmt: skip
    )
    if jams_path is not None:
        write_jams(truth, jams_path)
    return truth


# --------------------------------------------------------------------------- corpora


def generate_corpus(
    out_dir: str | os.PathLike[str],
    *,
    n: int,
    seed: int = 0,
    formats: Sequence[str] = ("wav",),
    backend: str = "auto",
    include_chorales: int = 0,
    degrade_fraction: float = 0.0,
    duration_s: float | tuple[float, float] = 30.0,
    tempo_range: tuple[float, float] = (60.0, 200.0),
    write_jams_files: bool = True,
    soundfont: str | Path | None = None,
) -> list[Truth]:
    """Generate a labelled corpus: ``n`` synthetic tracks plus optional chorales.

    Synthetic tracks are stratified (:func:`~mirflow.synth.spec.plan_specs`):
    all 24 keys, tempi spread over ``tempo_range``, a third in 3/4, half with
    drums, varied GM programs; a ``degrade_fraction`` of them gets white noise
    or a 64 kbps MP3 round trip. Formats are spread evenly over the tracks.
    Chorales are transposed to spread their keys and played at 60-100 BPM by
    organ, strings, choir, piano or clarinets.

    Parameters
    ----------
    out_dir : str or path-like
        Created if needed; receives ``audio/``, ``jams/`` and ``truth.jsonl``.
    n : int
        Number of synthetic tracks.
    seed : int
        Seed of the whole corpus.
    formats : sequence of str
        Audio formats to spread over the tracks (wav, flac, ogg, mp3, m4a, aac).
    backend : str
        ``'auto'`` (FluidSynth if installed), ``'fluidsynth'`` or ``'numpy'``.
    include_chorales : int
        Number of Bach chorales to add (needs music21).
    degrade_fraction : float
        Share of synthetic tracks with noise or an MP3 round trip.
    duration_s : float or tuple of float
        Track length, or a range to draw each length from.
    tempo_range : tuple of float
        Tempo range of the synthetic tracks.
    write_jams_files : bool
        Write ``jams/<track_id>.jams``.
    soundfont : str or Path, optional
        For FluidSynth.

    Returns
    -------
    list of Truth
        With absolute paths, in manifest order.
    """
    out = Path(out_dir).resolve()
    audio_dir = out / "audio"
    jams_dir = out / "jams"
    audio_dir.mkdir(parents=True, exist_ok=True)
    if write_jams_files:
        jams_dir.mkdir(parents=True, exist_ok=True)
    backend = resolve_backend(backend)
    if degrade_fraction > 0 and not (soundfile_writes_mp3() or _has_ffmpeg()):
        logger.warning("no MP3 encoder: MP3 round trips will fail")
    rng = np.random.default_rng([seed, 606])
    specs = _plan(
        n,
        seed=seed,
        duration_s=duration_s,
        backend=backend,
        tempo_range=tempo_range,
        degrade_fraction=degrade_fraction,
    )
    fmts = [str(f) for f in balanced(list(formats), n + include_chorales, rng)]
    truths: list[Truth] = []
    started = time.perf_counter()
    for i, spec in enumerate(specs):
        track_id = f"syn{i:04d}"
        path = audio_dir / f"{track_id}.{fmts[i]}"
        truth = render_track(
            spec,
            path,
            soundfont=soundfont,
            jams_path=(jams_dir / f"{track_id}.jams") if write_jams_files else None,
        )
        truths.append(truth)
        logger.info(
            "rendered %s (%d/%d, %s, %.1f BPM, %s)",
            path.name,
            i + 1,
            n,
            spec.key,
            spec.tempo_bpm,
            backend,
        )
    if include_chorales:
        lo, hi = (duration_s, duration_s) if isinstance(duration_s, (int, float)) else duration_s
        programs = balanced(list(CHORALE_PROGRAMS), include_chorales, rng)
        for j, origin in enumerate(find_chorales(include_chorales, seed=seed)):
            track_id = f"chorale{j:03d}"
            path = audio_dir / f"{track_id}.{fmts[n + j]}"
            truth = render_chorale(
                path,
                origin=origin,
                tempo_bpm=round(float(rng.uniform(60.0, 100.0)), 1),
                transpose=int(rng.integers(-5, 7)),
                program=int(programs[j]),  # type: ignore[call-overload]
                backend=backend,
                lead_in_s=round(float(rng.uniform(0.0, 0.5)), 3),
                max_duration_s=float(rng.uniform(lo, hi)) if lo > 0 else None,
                seed=int(rng.integers(2**31 - 1)),
                soundfont=soundfont,
                jams_path=(jams_dir / f"{track_id}.jams") if write_jams_files else None,
            )
            truths.append(truth)
            logger.info("rendered %s from %s (%s)", path.name, origin, truth.key or "key not scored")
    write_truth_jsonl(truths, out / MANIFEST_NAME)
    logger.info(
        "generated %d tracks in %s (%.1f s)", len(truths), out, time.perf_counter() - started
    )
    return truths


def _has_ffmpeg() -> bool:
    import shutil

    return shutil.which("ffmpeg") is not None


def _plan(
    n: int,
    *,
    seed: int,
    duration_s: float | tuple[float, float],
    backend: str,
    tempo_range: tuple[float, float],
    degrade_fraction: float,
) -> list[TrackSpec]:
    """:func:`plan_specs` with an optional per-track duration range."""
    if isinstance(duration_s, (int, float)):
        return plan_specs(
            n,
            seed=seed,
            duration_s=float(duration_s),
            backend=backend,
            tempo_range=tempo_range,
            degrade_fraction=degrade_fraction,
        )
    lo, hi = duration_s
    specs = plan_specs(
        n,
        seed=seed,
        duration_s=(lo + hi) / 2,
        backend=backend,
        tempo_range=tempo_range,
        degrade_fraction=degrade_fraction,
    )
    rng = np.random.default_rng([seed, 707])
    out = []
    for spec in specs:
        target = float(rng.uniform(lo, hi))
        bar_s = spec.meter * spec.beat_s
        extra = spec.lead_in_s + spec.tail_s
        bars = max(2, int(round((target - extra) / bar_s)))
        if bars * bar_s + extra < lo:  # keep whole bars inside [lo, hi] where they fit
            bars += 1
        elif bars > 2 and bars * bar_s + extra > hi:
            bars -= 1
        out.append(TrackSpec.from_dict({**spec.to_dict(), "n_bars": bars}))
    return out


def make_demo_catalog(
    out_dir: str | os.PathLike[str],
    n: int = 12,
    seed: int = 0,
    *,
    duration_s: tuple[float, float] = (20.0, 30.0),
) -> list[Truth]:
    """Write a small, quick demo catalog (numpy backend, no external program needed).

    Tracks of 20-30 s in a mix of wav, flac, ogg and mp3, covering both modes,
    both meters, drums on/off and slow to fast tempi; about one in six is
    degraded (noise, or an MP3 round trip when an MP3 encoder is present).

    Parameters
    ----------
    out_dir : str or path-like
        Receives ``audio/``, ``jams/`` and ``truth.jsonl``.
    n : int
        Number of tracks.
    seed : int
        Seed.
    duration_s : tuple of float
        Range of track lengths.

    Returns
    -------
    list of Truth
        With absolute paths.
    """
    formats = ["wav", "flac", "ogg"]
    if soundfile_writes_mp3() or _has_ffmpeg():
        formats.append("mp3")
    return generate_corpus(
        out_dir,
        n=n,
        seed=seed,
        formats=formats,
        backend="numpy",
        degrade_fraction=1 / 6 if n >= 6 else 0.0,
        duration_s=duration_s,
    )


def respec(truth: Truth, **changes: Any) -> TrackSpec:
    """Return the :class:`TrackSpec` of a synthetic truth, with optional changes.

    Parameters
    ----------
    truth : Truth
        A synthetic track's truth (``truth.spec`` is set).
    **changes
        Fields to replace, e.g. ``backend='numpy'``.

    Returns
    -------
    TrackSpec
        The recipe, ready to render again.
    """
    if truth.spec is None or truth.source != "synthetic":
        raise SpecError(f"{truth.track_id} has no synthetic spec")
    spec = TrackSpec.from_dict(truth.spec)
    if "backend" in changes:
        spec = with_backend(spec, changes.pop("backend"))
    return TrackSpec.from_dict({**spec.to_dict(), **changes}) if changes else spec
