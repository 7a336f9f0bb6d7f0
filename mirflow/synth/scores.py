"""Held-out material: any score of music21's corpus rendered with exact truth.

The tuning corpus of mirflow's thresholds is :func:`~mirflow.synth.generate_corpus`
(generated progressions and Bach chorales). The pieces here are *other*
music: string quartets, piano works, fiddle tunes (reels, hornpipes, jigs in
6/8 and slip jigs in 9/8 from Ryan's Mammoth Collection) and folk songs
(the Essen collection), rendered with FluidSynth (or the numpy synthesizer)
at a chosen tempo, optionally with rubato, swing, noise or a low bit rate.

Tempo convention: **the notated beat**, as music21 reads the time signature
(``TimeSignature.beatDuration``): the quarter note in 2/4, 3/4 and 4/4, the
half note in 2/2, the dotted quarter in 6/8, 9/8 and 12/8. ``tempo_bpm`` of
the truth counts those beats per minute, ``meter`` is beats per bar, and
``beats`` lists every notated beat. With rubato the beats follow the drift
and ``tempo_bpm`` is the mean tempo.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from mirflow.synth.midi import Arrangement, Note
from mirflow.synth.render import finish, render_arrangement, timbre_for_program, write_audio
from mirflow.synth.spec import SpecError, gm_program_name, key_name
from mirflow.synth.truth import Truth, chords_with_silence, write_jams

logger = logging.getLogger(__name__)

#: Families of held-out pieces and how to find them in music21's corpus.
FAMILIES: tuple[str, ...] = ("quartet", "piano", "reel", "jig", "folksong")
#: GM programs of the parts (top to bottom) per family; folk tunes take one.
FAMILY_PROGRAMS: dict[str, tuple[int, ...]] = {
    "quartet": (40, 40, 41, 42),  # violin, violin, viola, cello
    "piano": (0,),
    "reel": (40, 73, 21, 22),  # fiddle, flute, accordion, harmonica (one of them)
    "jig": (40, 73, 21, 22),
    "folksong": (73, 71, 40, 0),
}
#: Notated-beat tempo ranges (BPM) that suit each family (the notated beat, see the module docstring).
FAMILY_TEMPI: dict[str, tuple[float, float]] = {
    "quartet": (60.0, 140.0),
    "piano": (60.0, 140.0),
    "reel": (90.0, 200.0),  # 2/2 reels: half notes 90-115; 4/4 hornpipes: quarters up to 200
    "jig": (95.0, 135.0),  # dotted quarters
    "folksong": (70.0, 150.0),
}
_KEY_METHODS = ("krumhansl", "aarden", "temperleykostkapayne", "bellman")


@dataclass(frozen=True)
class ScorePiece:
    """A score reduced to what rendering and ground truth need.

    Parameters
    ----------
    origin : str
        Corpus path relative to music21's corpus directory.
    family : str
        One of :data:`FAMILIES`.
    time_signature : str
        E.g. ``'6/8'``.
    beat_q : float
        Notated beat in quarter notes (1.5 for 6/8).
    meter : int
        Notated beats per bar.
    tonic, mode
        The key, checked as for chorales (four profile methods and the key signature agree).
    notes : tuple of (float, float, int, int)
        ``(onset, duration, midi_pitch, part)`` in quarter notes.
    beats : tuple of (float, int)
        ``(onset, beat_in_bar)`` of every notated beat, in quarter notes.
    end_q : float
        End of the music (the last regular bar), in quarter notes.
    bar_starts : tuple of float
        Bar onsets (pickup excluded), in quarter notes.
    """

    origin: str
    family: str
    time_signature: str
    beat_q: float
    meter: int
    tonic: int
    mode: str
    notes: tuple[tuple[float, float, int, int], ...]
    beats: tuple[tuple[float, int], ...]
    end_q: float
    bar_starts: tuple[float, ...]


def _corpus_root() -> Path:
    from music21 import corpus

    return Path(corpus.getComposer("bach")[0]).parent.parent


def candidate_origins(family: str) -> list[str]:
    """Corpus paths of the pieces of one family, sorted (relative to music21's corpus).

    Parameters
    ----------
    family : str
        One of :data:`FAMILIES`.

    Returns
    -------
    list of str
    """
    root = _corpus_root()
    if family == "quartet":
        found = [p for d in ("haydn", "mozart", "beethoven") for p in (root / d).rglob("*.mxl")
                 if "k545" not in p.as_posix() and "opus133" not in p.name]
    elif family == "piano":
        found = [root / "mozart/k545/movement1_exposition.mxl", root / "joplin/maple_leaf_rag.mxl",
                 *sorted((root / "schumann_clara").rglob("*.mxl")),
                 *sorted((root / "schumann_robert/opus41no1").glob("*.mxl"))]
        # Robert Schumann's op. 41 is a quartet; keep the piano works only
        found = [p for p in found if "opus41" not in p.as_posix()]
    elif family == "reel":
        found = [p for p in (root / "ryansMammoth").glob("*.abc") if p.stem.endswith(("Reel", "Hornpipe"))]
    elif family == "jig":
        found = [p for p in (root / "ryansMammoth").glob("*.abc") if p.stem.endswith("Jig")]
    elif family == "folksong":
        found = [root / "essenFolksong" / f for f in ("altdeu10.abc", "altdeu20.abc", "ballad10.abc",
                                                      "ballad20.abc", "erk10.abc", "erk20.abc",
                                                      "kinder0.abc", "boehme10.abc")]
    else:
        raise SpecError(f"unknown family {family!r}; choose from {FAMILIES}")
    return sorted(p.relative_to(root).as_posix() for p in found if p.is_file())


def _parse(origin: str, number: int | None) -> object:
    from music21 import corpus, stream

    score = corpus.parse(origin, number=number) if number is not None else corpus.parse(origin)
    if isinstance(score, stream.Opus):
        score = score.scores[0] if score.scores else None
    return score


@lru_cache(maxsize=256)
def load_score(origin: str, *, family: str, number: int | None = None,
               max_q: float = 160.0) -> ScorePiece | None:
    """Parse a piece and keep it only where its truth can be trusted.

    Kept: the span from the start to the first change of time signature or
    irregular bar (at most ``max_q`` quarter notes, at least four bars); the
    key of music21's four profile methods when they agree with each other and
    with the key signature; otherwise None.

    Parameters
    ----------
    origin : str
        Corpus path, e.g. ``'ryansMammoth/AcaciaReel.abc'``.
    family : str
        One of :data:`FAMILIES`.
    number : int, optional
        Piece number inside a collection file (the Essen files hold many songs).
    max_q : float
        Longest span to keep, in quarter notes.

    Returns
    -------
    ScorePiece or None
    """
    try:
        score = _parse(origin, number)
    except Exception as exc:  # noqa: BLE001 - a score music21 cannot read is skipped
        logger.info("skipping %s: %s", origin, exc)
        return None
    if score is None or not len(score.parts):
        return None
    parts = list(score.parts)
    first = parts[0]
    measures = list(first.getElementsByClass("Measure"))
    if len(measures) < 4:
        return None
    ts = measures[0].timeSignature or next(iter(first.recurse().getElementsByClass("TimeSignature")), None)
    if ts is None:
        return None
    beat_q = float(ts.beatDuration.quarterLength)
    meter = int(ts.beatCount)
    bar_q = float(ts.barDuration.quarterLength)
    if meter < 2 or not 0.9 <= beat_q <= 2.0:  # 3/8, 5/8 and the like: no one notated beat level
        return None
    # the regular span: bars of the first time signature, stopping at a change or an odd bar
    beats: list[tuple[float, int]] = []
    bar_starts: list[float] = []
    end_q = 0.0
    for k, m in enumerate(measures):
        if k and m.timeSignature is not None and m.timeSignature.ratioString != ts.ratioString:
            break
        length = float(m.duration.quarterLength)
        pad = float(m.paddingLeft)
        start = float(m.offset) - pad
        if k == 0 and pad > 0:  # a pickup: its beats that sound
            for j in range(meter):
                q = start + j * beat_q
                if q >= float(m.offset) - 1e-9:
                    beats.append((q, j + 1))
            end_q = float(m.offset) + length
            continue
        if abs(length - bar_q) > 1e-6 or float(m.offset) + bar_q > max_q:
            break
        bar_starts.append(float(m.offset))
        beats.extend((float(m.offset) + j * beat_q, j + 1) for j in range(meter))
        end_q = float(m.offset) + bar_q
    if len(bar_starts) < 4:
        return None
    rows = []
    for part_index, part in enumerate(parts):
        for n in part.stripTies().flatten().notes:
            if n.duration.isGrace or n.quarterLength <= 0 or float(n.offset) >= end_q - 1e-9:
                continue
            for p in n.pitches:
                rows.append((float(n.offset), min(float(n.quarterLength), end_q - float(n.offset)),
                             int(p.midi), part_index))
    if len(rows) < 8:
        return None
    try:
        keys = {(int(k.tonic.pitchClass), str(k.mode)) for k in (score.analyze(f"key.{m}") for m in _KEY_METHODS)}
    except Exception:  # noqa: BLE001 - no key analysis, no trusted key
        return None
    if len(keys) != 1:
        return None
    tonic, mode = keys.pop()
    signatures = list(score.recurse().getElementsByClass("KeySignature"))
    if mode not in ("major", "minor") or not signatures or len({ks.sharps for ks in signatures}) != 1:
        return None
    major_tonic = (7 * signatures[0].sharps) % 12
    if tonic != (major_tonic if mode == "major" else (major_tonic + 9) % 12):
        return None
    notes = tuple(sorted(rows))
    return ScorePiece(origin, family, ts.ratioString, beat_q, meter, tonic, mode, notes,
                      tuple(beats), end_q, tuple(bar_starts))


def find_pieces(family: str, n: int, *, seed: int = 0) -> list[tuple[str, int | None]]:
    """Pick ``n`` usable pieces of a family (see :func:`load_score`) in a seeded order.

    Returns
    -------
    list of (origin, number)
        ``number`` is the song inside an Essen collection file, else None.
    """
    origins = candidate_origins(family)
    rng = np.random.default_rng([seed, 808, FAMILIES.index(family)])
    pool: list[tuple[str, int | None]] = []
    if family == "folksong":
        for o in origins:
            pool.extend((o, k) for k in range(1, 16))
    else:
        pool = [(o, None) for o in origins]
    found: list[tuple[str, int | None]] = []
    for i in rng.permutation(len(pool)):
        if len(found) >= n:
            break
        origin, number = pool[i]
        if load_score(origin, family=family, number=number) is not None:
            found.append((origin, number))
    if len(found) < n:
        logger.warning("only %d usable %s pieces found (asked for %d)", len(found), family, n)
    return found


def rubato_map(q: np.ndarray, *, beat_s: float, depth: float, period_q: float, phase: float) -> np.ndarray:
    """Seconds of quarter-note positions ``q`` under a sinusoidal tempo drift of ±``depth``.

    The local tempo is the nominal one times ``1 + depth * cos(2 pi q / period_q + phase)``
    (approximately: the time warp's slope is the inverse), so ``depth=0.05`` is a drift of ±5 %.

    Examples
    --------
    >>> import numpy as np
    >>> t = rubato_map(np.arange(0, 64.0), beat_s=0.5, depth=0.05, period_q=16, phase=0.0)
    >>> ibi = np.diff(t)
    >>> bool(0.94 < ibi.min() / 0.5 < 0.96 and 1.04 < ibi.max() / 0.5 < 1.06)
    True
    """
    q = np.asarray(q, dtype=np.float64)
    amp = depth * period_q * beat_s / (2 * np.pi)
    return q * beat_s + amp * (np.sin(2 * np.pi * q / period_q + phase) - np.sin(phase))


def render_score(
    path: str | os.PathLike[str],
    *,
    origin: str,
    family: str,
    number: int | None = None,
    tempo_bpm: float,
    transpose: int = 0,
    programs: tuple[int, ...] | None = None,
    rubato: float = 0.0,
    swing: float = 0.0,
    backend: str = "fluidsynth",
    lead_in_s: float = 0.25,
    tail_s: float = 1.5,
    max_duration_s: float | None = 30.0,
    sample_rate_hz: int = 44100,
    seed: int = 0,
    noise_snr_db: float | None = None,
    mp3_kbps: int | None = None,
    soundfont: str | Path | None = None,
    jams_path: str | os.PathLike[str] | None = None,
    track_id: str | None = None,
) -> Truth:
    """Render a piece of music21's corpus with its exact truth (``source='score'``).

    Parameters
    ----------
    path : str or path-like
        Output audio; the suffix picks the format.
    origin, family, number
        The piece (see :func:`find_pieces`).
    tempo_bpm : float
        Tempo of the notated beat (see the module docstring), the mean tempo under rubato.
    transpose : int
        Semitones (key and chords follow).
    programs : tuple of int, optional
        GM program per part (the last one repeats); default the family's first.
    rubato : float
        Tempo drift depth, e.g. 0.05 for ±5 % (a sinusoid of 4-8 bars' period).
    swing : float
        Delay of off-beat eighths, in quarter notes (0 to 0.25; quarter-note beats only).
    backend : str
        ``'fluidsynth'`` or ``'numpy'``.
    lead_in_s, tail_s : float
        Silence before the first note; time after the last.
    max_duration_s : float, optional
        Cut at the last bar line that fits.
    sample_rate_hz, seed, noise_snr_db, mp3_kbps, soundfont, jams_path
        As for :func:`~mirflow.synth.render_chorale`.
    track_id : str, optional
        Default: the file stem.

    Returns
    -------
    Truth

    Raises
    ------
    SpecError
        If the piece is not usable, or swing is asked of a compound meter.
    """
    from mirflow.synth.corpus import beat_label, resolve_backend

    piece = load_score(origin, family=family, number=number)
    if piece is None:
        raise SpecError(f"{origin!r} ({family}) is not usable (see load_score)")
    if not 0.0 <= swing <= 0.25 or (swing and piece.beat_q != 1.0):
        raise SpecError("swing must be in [0, 0.25] and needs a quarter-note beat")
    if not 0.0 <= rubato <= 0.2:
        raise SpecError("rubato must be in [0, 0.2]")
    backend = resolve_backend(backend)
    rng = np.random.default_rng([seed, 909])
    quarter_s = 60.0 / (tempo_bpm * piece.beat_q)
    all_notes = np.array(piece.notes, dtype=float)
    piece_beats = list(piece.beats)
    bar_starts = list(piece.bar_starts)
    end_q = piece.end_q
    if max_duration_s is not None:
        limit = (max_duration_s - lead_in_s - tail_s) / quarter_s
        # a short tune is played again from its first full bar, as players repeat it
        first, span = piece.bar_starts[0], piece.end_q - piece.bar_starts[0]
        body = all_notes[all_notes[:, 0] >= first - 1e-9]
        k = 1
        while end_q + span <= limit + 1e-9 and span > 0:
            shifted = body.copy()
            shifted[:, 0] += k * span
            all_notes = np.vstack([all_notes, shifted])
            piece_beats += [(q + k * span, pos) for q, pos in piece.beats if q >= first - 1e-9]
            bar_starts += [b + k * span for b in piece.bar_starts]
            end_q += span
            k += 1
        fits = [b for b in bar_starts if 0 < b <= limit]
        if end_q > limit and fits:
            end_q = max(fits)
    notes = all_notes[all_notes[:, 0] < end_q - 1e-9].copy()
    notes[:, 1] = np.minimum(notes[:, 1], end_q - notes[:, 0])
    q0 = float(min(notes[:, 0].min(), piece_beats[0][0]))
    period_q = float(rng.uniform(4, 8)) * piece.meter * piece.beat_q
    phase = float(rng.uniform(0, 2 * np.pi))

    def warp(q: np.ndarray) -> np.ndarray:  # quarter position -> nominal quarter beats after q0
        t = rubato_map(np.asarray(q, dtype=float) - q0, beat_s=quarter_s, depth=rubato, period_q=period_q,
                       phase=phase) if rubato else (np.asarray(q, dtype=float) - q0) * quarter_s
        return t / quarter_s

    onsets = notes[:, 0].copy()
    if swing:
        off = np.isclose(np.mod(onsets, 1.0), 0.5)
        onsets[off] += swing
    starts = warp(onsets)
    ends = warp(notes[:, 0] + notes[:, 1])
    n_parts = int(notes[:, 3].max()) + 1
    chosen = tuple(programs) if programs else FAMILY_PROGRAMS[family][:1]
    part_programs = {p: chosen[min(p, len(chosen) - 1)] for p in range(min(n_parts, 9))}
    arr_notes = tuple(
        Note(float(s), float(max(e - s - 0.04, 0.05)), int(pitch) + transpose,
             int(np.clip(80 - 3 * min(part, 4) + rng.integers(-6, 7), 1, 127)), int(min(part, 8)))
        for s, e, (_, _, pitch, part) in zip(starts, ends, notes, strict=True)
    )
    arr_notes = tuple(sorted(arr_notes, key=lambda n: (n.start_beat, n.channel, n.pitch)))
    music_beats = float(warp(np.array([end_q]))[0])
    arrangement = Arrangement(60.0 / quarter_s, music_beats, arr_notes, part_programs, tail_s / quarter_s)
    n_samples = int(round((lead_in_s + music_beats * quarter_s + tail_s) * sample_rate_hz))
    y = render_arrangement(arrangement, backend=backend, sample_rate_hz=sample_rate_hz, lead_in_s=lead_in_s,
                           n_samples=n_samples, seed=seed, soundfont=soundfont)
    region = (int(round(lead_in_s * sample_rate_hz)),
              int(round((lead_in_s + music_beats * quarter_s) * sample_rate_hz)))
    y = finish(y, sample_rate_hz=sample_rate_hz, seed=seed, noise_snr_db=noise_snr_db, mp3_kbps=mp3_kbps,
               music_region=region)
    write_audio(y, sample_rate_hz, path)
    duration_s = n_samples / sample_rate_hz
    beat_q = [q for q, _ in piece_beats if q < end_q - 1e-9]
    positions = [pos for q, pos in piece_beats if q < end_q - 1e-9]
    beat_times = lead_in_s + warp(np.array(beat_q)) * quarter_s
    # chords per notated beat: a clean triad or X (not evaluated), as for chorales
    chords: list[tuple[float, float, str]] = []
    bounds = [*beat_q, end_q]
    seconds = lead_in_s + warp(np.array(bounds)) * quarter_s
    if notes[:, 0].min() < beat_q[0]:
        chords.append((lead_in_s, float(seconds[0]), "X"))
    for i in range(len(beat_q)):
        chords.append((float(seconds[i]), float(seconds[i + 1]), beat_label(notes, bounds[i], bounds[i + 1], transpose)))
    tonic = (piece.tonic + transpose) % 12
    program = part_programs[0]
    instrument = f"GM {program} {gm_program_name(program)}"
    if backend == "numpy":
        instrument += f" (numpy {timbre_for_program(program)})"
    path = Path(path)
    truth = Truth(
        path=str(path), track_id=track_id or path.stem, source="score",
        format=path.suffix.lower().lstrip("."), duration_s=duration_s, sample_rate_hz=sample_rate_hz,
        channels=1 if y.ndim == 1 else int(y.shape[1]), tempo_bpm=float(tempo_bpm), meter=piece.meter,
        beats=tuple(float(b) for b in beat_times), beat_in_bar=tuple(positions),
        key=key_name(tonic, piece.mode), tonic=tonic, mode=piece.mode,
        chords=chords_with_silence(chords, duration_s), instrument=instrument, program=program, drums=False,
        backend=backend, noise_snr_db=noise_snr_db, mp3_kbps=mp3_kbps, seed=seed,
        origin=piece.origin if number is None else f"{piece.origin}#{number}",
        spec={"origin": origin, "family": family, "number": number, "time_signature": piece.time_signature,
              "tempo_bpm": tempo_bpm, "transpose": transpose, "programs": list(chosen), "rubato": rubato,
              "swing": swing, "backend": backend, "lead_in_s": lead_in_s, "tail_s": tail_s,
              "max_duration_s": max_duration_s, "sample_rate_hz": sample_rate_hz, "seed": seed,
              "noise_snr_db": noise_snr_db, "mp3_kbps": mp3_kbps},
    )
    if jams_path is not None:
        write_jams(truth, jams_path)
    return truth


#: Strata of :func:`generate_heldout_corpus`: name, piece family (or ``'chorale'`` /
#: ``'swing'`` for generated material) and the notated-beat tempo range.
HELDOUT_STRATA: tuple[tuple[str, str, tuple[float, float]], ...] = (
    ("chorales, slow, degraded", "chorale", (60.0, 110.0)),
    ("string quartets", "quartet", FAMILY_TEMPI["quartet"]),
    ("piano works", "piano", FAMILY_TEMPI["piano"]),
    ("reels and hornpipes (fast)", "reel", FAMILY_TEMPI["reel"]),
    ("jigs and slip jigs (6/8, 9/8)", "jig", FAMILY_TEMPI["jig"]),
    ("folk songs", "folksong", FAMILY_TEMPI["folksong"]),
    ("swing", "swing", (80.0, 180.0)),
)


def generate_heldout_corpus(
    out_dir: str | os.PathLike[str],
    *,
    n_per_stratum: int = 6,
    seed: int = 1,
    strata: tuple[str, ...] | None = None,
    exclude_chorales: tuple[str, ...] = (),
    duration_s: float = 30.0,
    degrade_fraction: float = 0.34,
    rubato_fraction: float = 0.34,
    formats: tuple[str, ...] = ("flac", "mp3", "ogg", "wav"),
    backend: str = "fluidsynth",
) -> list[Truth]:
    """Render corpora that no mirflow threshold was fitted on, one per stratum.

    Strata are :data:`HELDOUT_STRATA`. Every stratum except the chorales and
    swing gets rubato (±5 % tempo drift) on a ``rubato_fraction`` of its tracks;
    a ``degrade_fraction`` gets white noise (10-25 dB SNR) or a 64 kb/s MP3
    round trip. The chorales stratum is all degraded and slow (the case of
    issue 9), with chorales not in ``exclude_chorales`` (the tuning corpus's).
    Swing tracks are generated progressions with drums and a swung eighth
    (triplet feel to a dotted eighth), seeds apart from the tuning corpus.
    The track id starts with the stratum's family (``reel003``), which is how
    ``benchmarks/accuracy.py`` tells the strata apart.

    Returns
    -------
    list of Truth
        Also written to ``out_dir/truth.jsonl``.
    """
    from mirflow.synth.corpus import MANIFEST_NAME, find_chorales, render_chorale, render_track
    from mirflow.synth.spec import plan_specs
    from mirflow.synth.truth import write_truth_jsonl

    out = Path(out_dir).resolve()
    (out / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 1009])
    truths: list[Truth] = []
    wanted = [s for s in HELDOUT_STRATA if strata is None or s[1] in strata or s[0] in strata]
    for name, family, (lo, hi) in wanted:
        n = n_per_stratum
        degrade = set(rng.permutation(n)[: int(round(n * degrade_fraction))].tolist())
        rubato = set(rng.permutation(n)[: int(round(n * rubato_fraction))].tolist())
        tempi = [float(rng.uniform(a, b)) for a, b in zip(np.linspace(lo, hi, n + 1)[:-1],
                                                        np.linspace(lo, hi, n + 1)[1:], strict=True)]
        if family == "chorale":
            pool = [o for o in find_chorales(n + len(exclude_chorales), seed=seed + 100)
                    if o not in set(exclude_chorales)][:n]
            for j, origin in enumerate(pool):
                path = out / "audio" / f"chorale{j:03d}.{'mp3' if j % 2 else formats[j % len(formats)]}"
                truths.append(render_chorale(
                    path, origin=origin, tempo_bpm=round(tempi[j], 1), transpose=int(rng.integers(-5, 7)),
                    program=int(rng.choice([19, 48, 52, 0, 71])), backend=backend, max_duration_s=duration_s,
                    seed=int(rng.integers(2**31 - 1)),
                    noise_snr_db=None if j % 2 else round(float(rng.uniform(10.0, 25.0)), 1),
                    mp3_kbps=64 if j % 2 else None))
            continue
        if family == "swing":
            specs = plan_specs(n, seed=seed + 5000, duration_s=duration_s, backend=backend,
                               tempo_range=(lo, hi), degrade_fraction=0.0)
            for j, spec in enumerate(specs):
                deg = j in degrade
                spec = spec.from_dict({**spec.to_dict(), "drums": True, "swing": round(float(rng.uniform(1 / 6, 0.25)), 3),
                                       "noise_snr_db": round(float(rng.uniform(10, 25)), 1) if deg and j % 2 == 0 else None,
                                       "mp3_kbps": 64 if deg and j % 2 else None})
                path = out / "audio" / f"swing{j:03d}.{formats[j % len(formats)]}"
                truths.append(render_track(spec, path))
            continue
        pieces = find_pieces(family, n, seed=seed)
        for j in range(n):
            if not pieces:
                break
            origin, number = pieces[j % len(pieces)]
            deg = j in degrade
            path = out / "audio" / f"{family}{j:03d}.{formats[j % len(formats)]}"
            programs = FAMILY_PROGRAMS[family]
            chosen = programs if family == "quartet" else (programs[int(rng.integers(len(programs)))],)
            truths.append(render_score(
                path, origin=origin, family=family, number=number, tempo_bpm=round(tempi[j], 1),
                transpose=int(rng.integers(-5, 7)), programs=chosen, rubato=0.05 if j in rubato else 0.0,
                backend=backend, max_duration_s=duration_s, seed=int(rng.integers(2**31 - 1)),
                noise_snr_db=round(float(rng.uniform(10, 25)), 1) if deg and j % 2 == 0 else None,
                mp3_kbps=64 if deg and j % 2 else None))
        logger.info("held-out stratum %s: %d tracks", name, n)
    write_truth_jsonl(truths, out / MANIFEST_NAME)
    return truths


def heldout_stratum(track_id: str) -> str:
    """The stratum name of a held-out track id (``reel003`` -> ``'reels and hornpipes (fast)'``)."""
    for name, family, _ in HELDOUT_STRATA:
        if track_id.startswith(family):
            return name
    return "other"
