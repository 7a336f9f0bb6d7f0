"""Score a catalog against ground truth with mir_eval's metrics and conventions.

Ground truth comes as JAMS files (``key_mode``, ``tempo``, ``beat`` and
``chord`` annotations) or as one JSON Lines / CSV file with a row per track
(``path``, ``key``, ``tempo``, ``beats``, ``chords``). Truth is matched to the
catalog by path (absolute, then by file name or stem when that is unique), or
by ``track_id``, through the catalog's ``files`` table so that duplicate paths
of one track match too.

==================  ===========================================================
metric              definition
==================  ===========================================================
``key_weighted``    MIREX weighted key score (``mir_eval.key.weighted_score``):
                    exact 1.0, fifth 0.5, relative 0.3, parallel 0.2
``key_exact``       share of exactly right keys
``tempo_acc1``      estimate within 4 % of the reference tempo
``tempo_acc2``      ditto, also accepting ×2, ×½, ×3 and ×⅓ of the reference
``beat_f``          ``mir_eval.beat.f_measure`` (±70 ms), beats before 5 s trimmed
``beat_cmlt``       ``mir_eval.beat.continuity`` CMLt (correct metrical level)
``beat_amlt``       ``mir_eval.beat.continuity`` AMLt (any metrical level)
``chord_majmin``    weighted chord symbol recall, ``mir_eval.chord.majmin``
``chord_sevenths``  weighted chord symbol recall, ``mir_eval.chord.sevenths``
==================  ===========================================================

Conventions: a missing prediction (no key, no tempo, no beats, no chords, a
track that failed or is absent from the catalog) scores 0 and is counted, never
skipped. Reference chord segments labelled ``X`` (and, per vocabulary, chords
outside it) are not evaluated, as in ``mir_eval.chord.evaluate``; a reference
whose only labels are ``X`` and ``N`` (every sounding stretch unknown, silence
known: mirflow's generated monophonic tunes, which hold no clean triad on any
beat) has no chord to recognise and is not evaluated at all. Overall chord
recall is weighted by evaluated duration across tracks (the MIREX WCSR); the
other overall figures are means over tracks.

Examples
--------
>>> per_track, overall = evaluate("cat/", "bench/truth.jsonl")   # doctest: +SKIP
>>> overall["key_weighted"], overall["key_null"]                  # doctest: +SKIP
(0.93, 1)
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mirflow.errors import ConfigError
from mirflow.extractors.calibration import weighted_ece
from mirflow.labels import key_relation, parse_key

log = logging.getLogger(__name__)

#: Relative tolerance of tempo Accuracy1/Accuracy2.
TEMPO_TOLERANCE = 0.04
#: Metrical factors Accuracy2 accepts.
TEMPO_FACTORS = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)
#: mir_eval.beat.evaluate ignores beats before this time (tracker warm-up).
BEAT_TRIM_S = 5.0

#: Overall metrics: name -> (family, how to aggregate: "mean" over tracks, or the weight column).
METRICS: dict[str, tuple[str, str]] = {
    "key_weighted": ("key", "mean"),
    "key_exact": ("key", "mean"),
    "tempo_acc1": ("tempo", "mean"),
    "tempo_acc2": ("tempo", "mean"),
    "beat_f": ("beat", "mean"),
    "beat_cmlt": ("beat", "mean"),
    "beat_amlt": ("beat", "mean"),
    "chord_majmin": ("chord", "chord_majmin_s"),
    "chord_sevenths": ("chord", "chord_sevenths_s"),
}
FAMILIES = ("key", "tempo", "beat", "chord")


# ============================================================================ records
@dataclass
class TruthRecord:
    """Ground truth of one track; any field may be missing (that family is then not evaluated).

    Parameters
    ----------
    path : str or None
        Audio path as the truth names it (absolute, relative, or a bare file name).
    track_id : str or None
        A catalog track id (content hash), if the truth knows it.
    key : str or None
        mir_eval key, e.g. ``'A minor'``.
    tempo : float or None
        Reference tempo in BPM.
    beats : ndarray or None
        Reference beat times in seconds.
    chords : list of (float, float, str) or None
        Reference chord segments (Harte labels; ``X`` = not evaluated).
    source : str
        Where the record came from (file name), for messages.
    """

    path: str | None = None
    track_id: str | None = None
    key: str | None = None
    tempo: float | None = None
    beats: np.ndarray | None = None
    chords: list[tuple[float, float, str]] | None = None
    source: str = ""


@dataclass
class Prediction:
    """What a system estimated for one audio file (the catalog's columns, or a baseline's).

    Parameters
    ----------
    track_id : str
        Identifier of the prediction (catalog track id, or any unique name).
    paths : list of str
        Every path of this audio (duplicates in a catalog share one track).
    key, tempo : optional
        Estimates; ``None`` when the system gave none.
    beats : ndarray or None
        Estimated beat times; ``None`` (or empty) when none.
    chords : list of (float, float, str) or None
        Estimated chord segments; ``None`` (or empty) when none.
    status : str
        ``'ok'``, or ``'failed'`` when the system recorded an error for it.
    tempo_confidence, key_confidence : float, optional
        The system's confidence in its tempo and key (catalog columns), for
        :func:`calibration_error`.
    """

    track_id: str
    paths: list[str] = field(default_factory=list)
    key: str | None = None
    tempo: float | None = None
    beats: np.ndarray | None = None
    chords: list[tuple[float, float, str]] | None = None
    status: str = "ok"
    tempo_confidence: float | None = None
    key_confidence: float | None = None


# ============================================================================ label helpers
def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip() == ""


def normalize_key(label: Any) -> str | None:
    """Return a key as mir_eval validates it (``'Eb minor'``), or ``None``.

    Parsed by :func:`mirflow.labels.parse_key`, the one key parser, so it
    accepts every spelling mirflow reads (mir_eval ``'Eb minor'``, JAMS
    ``'Eb:minor'``, short forms ``'Ebm'``, ``'Eb'``, Camelot, Open Key) and
    renders the tonic with mirflow's canonical spelling, as the catalog's
    ``key`` column is. Missing values (``None``, NaN, blank) and "no key"
    labels (``'X'``, ``'N'``) give ``None``; a label that is not a key raises
    ``ValueError``, as in :func:`~mirflow.labels.parse_key`.

    Examples
    --------
    >>> normalize_key("A:minor"), normalize_key("c#m"), normalize_key("Bb"), normalize_key(None)
    ('A minor', 'C# minor', 'Bb major', None)
    """
    if _is_missing(label):
        return None
    key = parse_key(label)
    return None if key is None else key.mir_eval


def _chord_list(value: Any) -> list[tuple[float, float, str]] | None:
    """``[[start, end, label], …]`` (list or JSON text) as a list of triples; ``None`` when absent."""
    if _is_missing(value):
        return None
    if isinstance(value, str):
        value = json.loads(value)
    return [(float(s), float(e), str(lab)) for s, e, lab in value]


def _beat_array(value: Any) -> np.ndarray | None:
    """Beat times from a list (numbers, or ``[time, position]`` pairs) or text; ``None`` when absent."""
    if _is_missing(value):
        return None
    if isinstance(value, str):
        value = value.strip()
        value = json.loads(value) if value.startswith("[") else value.replace(",", " ").replace(";", " ").split()
    times = [float(v[0]) if isinstance(v, (list, tuple)) else float(v) for v in value]
    return np.sort(np.asarray(times, dtype=float))


def _float_or_none(value: Any) -> float | None:
    if _is_missing(value):
        return None
    out = float(value)
    return None if math.isnan(out) else out


# ============================================================================ loading truth
def _record_from_mapping(row: dict[str, Any], source: str) -> TruthRecord:
    """A truth row from JSONL/CSV; ``tempo_bpm`` and ``track_id`` are accepted aliases."""
    tempo = row.get("tempo", row.get("tempo_bpm"))
    key = row.get("key")
    return TruthRecord(
        path=None if _is_missing(row.get("path")) else str(row["path"]),
        track_id=None if _is_missing(row.get("track_id")) else str(row["track_id"]),
        key=None if _is_missing(key) else str(key),
        tempo=_float_or_none(tempo),
        beats=_beat_array(row.get("beats")),
        chords=_chord_list(row.get("chords")),
        source=source,
    )


def _load_table_file(path: Path) -> list[TruthRecord]:
    records = []
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
            rows = json.loads(text)
        else:
            try:
                rows = [json.loads(line) for line in text.splitlines() if line.strip()]
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}: not JSON Lines: {exc}") from exc
    elif path.suffix.lower() in (".csv", ".tsv"):
        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
    else:
        raise ConfigError(f"unknown truth file type {path.name!r} (use .jsonl, .csv or .jams)")
    for i, row in enumerate(rows):
        try:
            rec = _record_from_mapping(row, f"{path.name}:{i + 1}")
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{path}: row {i + 1}: {exc}") from exc
        # Relative audio paths are relative to the truth file's folder (as mirflow.synth writes them).
        if rec.path and not os.path.isabs(rec.path):
            candidate = path.parent / rec.path
            if candidate.exists():
                rec.path = str(candidate.resolve())
        records.append(rec)
    return records


def _load_jams(path: Path) -> TruthRecord:
    import jams

    jam = jams.load(str(path), validate=False)
    rec = TruthRecord(source=path.name)
    ident = dict(jam.file_metadata.identifiers or {})
    sandbox = dict(jam.sandbox or {})
    for candidate in (ident.get("path"), sandbox.get("path"), (sandbox.get("mirflow") or {}).get("path")):
        if candidate:
            rec.path = str(candidate)
            break
    if rec.path is None:
        # No path recorded: match the JAMS file's stem against the audio's stem.
        rec.path = path.stem
    elif not os.path.isabs(rec.path):
        for base in (path.parent, path.parent.parent / "audio"):
            if (base / rec.path).exists():
                rec.path = str((base / rec.path).resolve())
                break
    if sandbox.get("track_id"):
        rec.track_id = str(sandbox["track_id"])
    for ann in jam.search(namespace="key_mode"):
        values = [o.value for o in ann.data]
        if values:
            rec.key = str(values[0])
            break
    for ann in jam.search(namespace="tempo"):
        obs = [o for o in ann.data if o.value is not None]
        if obs:
            # A tempo annotation may hold two tempi (MIREX style): take the most confident.
            best = max(obs, key=lambda o: o.confidence if o.confidence is not None else 0.0)
            rec.tempo = float(best.value)
            break
    for ann in jam.search(namespace="beat"):
        rec.beats = np.sort(np.asarray([o.time for o in ann.data], dtype=float))
        break
    for ann in jam.search(namespace="chord"):
        intervals, labels = ann.to_interval_values()
        rec.chords = [(float(s), float(e), str(lab)) for (s, e), lab in zip(intervals, labels, strict=True)]
        break
    return rec


def load_truth(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[TruthRecord]:
    """Read ground truth.

    Parameters
    ----------
    path : path or sequence of paths
        A ``.jsonl`` / ``.csv`` file (columns ``path``, ``key``, ``tempo``
        — or ``tempo_bpm`` —, ``beats``, ``chords``; chords as
        ``[[start, end, label], …]``, in CSV as JSON text), a ``.jams`` file, a
        folder of ``.jams`` files (searched recursively; a folder with none
        but a ``truth.jsonl`` reads that), or a list of any of these.

    Returns
    -------
    list of TruthRecord

    Raises
    ------
    ConfigError
        If a path does not exist, a folder holds no truth, or a file type is unknown.
    """
    if isinstance(path, (str, os.PathLike)):
        paths = [Path(path)]
    else:
        paths = [Path(p) for p in path]
    records: list[TruthRecord] = []
    for p in paths:
        p = p.expanduser()
        if p.is_dir():
            found = sorted(p.rglob("*.jams"))
            if found:
                records.extend(_load_jams(f) for f in found)
            elif (p / "truth.jsonl").exists():
                records.extend(_load_table_file(p / "truth.jsonl"))
            else:
                raise ConfigError(f"no .jams files or truth.jsonl in {p}")
        elif not p.exists():
            raise ConfigError(f"truth file {p} does not exist")
        elif p.suffix.lower() == ".jams":
            records.append(_load_jams(p))
        else:
            records.extend(_load_table_file(p))
    log.info("read %d truth records from %d path(s)", len(records), len(paths))
    return records


# ============================================================================ catalog predictions
def _grouped(df: pd.DataFrame, key: str) -> dict[str, pd.DataFrame]:
    return {k: g for k, g in df.groupby(key, sort=False)} if len(df) else {}


def catalog_predictions(catalog: Any, track_ids: Iterable[str] | None = None) -> list[Prediction]:
    """Read a catalog's estimates (tracks, beats, chords, files, errors) as predictions.

    Parameters
    ----------
    catalog : path or Catalog
        The catalog folder.
    track_ids : iterable of str, optional
        Read only these tracks' beats and chords (all when ``None``).

    Returns
    -------
    list of Prediction
        One per track in ``tracks`` plus one ``status='failed'`` per track id
        (or path) that is only in ``errors``.

    Raises
    ------
    ConfigError
        If ``catalog`` is not a mirflow catalog.
    """
    from mirflow.catalog import Catalog
    from mirflow.query import connect

    cat = catalog if isinstance(catalog, Catalog) else Catalog(catalog)
    if cat.read_manifest() is None:
        raise ConfigError(f"{cat.url} is not a mirflow catalog (no {cat.manifest_path.name})")
    con = connect(cat)
    tracks = con.sql("SELECT track_id, path, key, tempo_bpm, key_confidence, tempo_confidence FROM tracks").df()
    files = con.sql("SELECT path, track_id FROM files").df()
    # A file rewritten since a track was analysed now holds another track, or it failed in a later
    # run: the old row keeps its values but answers for no path (mirflow.query's current_tracks).
    current = con.sql("SELECT track_id, path FROM current_tracks").df()
    errors = con.sql("SELECT path, track_id FROM errors").df()
    wanted = None if track_ids is None else pd.DataFrame({"track_id": sorted(set(track_ids))}, dtype=object)
    if wanted is not None and wanted.empty:
        beats = pd.DataFrame(columns=["track_id", "time_s"])
        chords = pd.DataFrame(columns=["track_id", "start_s", "end_s", "label"])
    elif wanted is not None:
        con.register("_wanted", wanted)
        beats = con.sql("SELECT b.track_id, b.time_s FROM beats b JOIN _wanted w USING (track_id) "
                        "ORDER BY b.track_id, b.time_s").df()
        chords = con.sql("SELECT c.track_id, c.start_s, c.end_s, c.label FROM chords c "
                         "JOIN _wanted w USING (track_id) ORDER BY c.track_id, c.start_s").df()
    else:
        beats = con.sql("SELECT track_id, time_s FROM beats ORDER BY track_id, time_s").df()
        chords = con.sql("SELECT track_id, start_s, end_s, label FROM chords ORDER BY track_id, start_s").df()
    con.close()
    paths: dict[str, list[str]] = {tid: [] for tid in tracks["track_id"]}
    for tid, p in zip(current["track_id"], current["path"], strict=True):
        paths[tid].append(p)
    for tid, p in zip(files["track_id"], files["path"], strict=True):
        if p not in paths.setdefault(tid, []):
            paths[tid].append(p)
    beats_by = _grouped(beats, "track_id")
    chords_by = _grouped(chords, "track_id")
    preds = []
    for row in tracks.itertuples(index=False):
        b = beats_by.get(row.track_id)
        c = chords_by.get(row.track_id)
        preds.append(Prediction(
            track_id=row.track_id,
            paths=paths[row.track_id],
            key=None if _is_missing(row.key) else str(row.key),
            tempo=_float_or_none(row.tempo_bpm),
            beats=None if b is None else b["time_s"].to_numpy(dtype=float),
            chords=None if c is None else list(zip(c["start_s"].astype(float), c["end_s"].astype(float),
                                                   c["label"].astype(str), strict=True)),
            tempo_confidence=_float_or_none(row.tempo_confidence),
            key_confidence=_float_or_none(row.key_confidence),
        ))
    # Failed inputs: the track (or only the path, when hashing failed) is known but has no row.
    analyzed = set(tracks["track_id"])
    for row in errors.itertuples(index=False):
        tid = row.track_id if not _is_missing(row.track_id) else f"error:{row.path}"
        if tid in analyzed:
            continue
        analyzed.add(tid)
        preds.append(Prediction(track_id=tid, paths=sorted(set(paths.get(tid, [])) | {row.path}),
                                status="failed"))
    return preds


# ============================================================================ matching
def match(truth: Sequence[TruthRecord], predictions: Sequence[Prediction]) -> list[Prediction | None]:
    """Pair each truth record with a prediction (``None`` when there is none).

    Order of precedence: the truth's ``track_id``, the absolute path, the file
    name, the file stem (each only when it names exactly one prediction).
    """
    by_id = {p.track_id: p for p in predictions}
    by_path: dict[str, Prediction] = {}
    by_name: dict[str, set[str]] = {}
    by_stem: dict[str, set[str]] = {}
    for p in predictions:
        for path in p.paths:
            by_path[os.path.normpath(path)] = p
            by_name.setdefault(os.path.basename(path), set()).add(p.track_id)
            by_stem.setdefault(os.path.splitext(os.path.basename(path))[0], set()).add(p.track_id)
    out: list[Prediction | None] = []
    for rec in truth:
        hit = by_id.get(rec.track_id) if rec.track_id else None
        if hit is None and rec.path:
            hit = by_path.get(os.path.normpath(os.path.abspath(os.path.expanduser(rec.path))))
            name = os.path.basename(rec.path)
            for index, token in ((by_name, name), (by_stem, os.path.splitext(name)[0]), (by_stem, name)):
                if hit is not None:
                    break
                ids = index.get(token, set())
                if len(ids) == 1:
                    hit = by_id[next(iter(ids))]
                elif len(ids) > 1:
                    log.warning("truth %s: file name %r names %d catalog tracks; not matched",
                                rec.source, token, len(ids))
                    break
        out.append(hit)
    return out


# ============================================================================ metrics
def tempo_accuracy(reference: float, estimate: float | None, *,
                   tolerance: float = TEMPO_TOLERANCE) -> tuple[bool, bool]:
    """Accuracy1 and Accuracy2 of one tempo estimate.

    Examples
    --------
    >>> tempo_accuracy(120.0, 123.6), tempo_accuracy(120.0, 240.0), tempo_accuracy(120.0, None)
    ((True, True), (False, True), (False, False))
    """
    if estimate is None or not np.isfinite(estimate) or estimate <= 0:
        return False, False
    acc1 = abs(estimate - reference) <= tolerance * reference
    acc2 = any(abs(estimate - f * reference) <= tolerance * f * reference for f in TEMPO_FACTORS)
    return bool(acc1), bool(acc2)


#: The ratios of an estimated to a notated tempo that :func:`tempo_error_kind` names: the metrical
#: levels a beat tracker confuses (twice or half the beat, three of them to two beats of a compound
#: meter and back, four eighths of a 6/8 tune for its dotted quarter, three beats for one), by name.
TEMPO_ERROR_RATIOS: dict[str, float] = {"x2": 2.0, "x1/2": 0.5, "x3/2": 1.5, "x2/3": 2.0 / 3.0, "x4/3": 4.0 / 3.0,
                                        "x3/4": 0.75, "x3": 3.0, "x1/3": 1.0 / 3.0}


def tempo_error_kind(reference: float, estimate: float | None, *, tolerance: float = TEMPO_TOLERANCE) -> str:
    """The metrical level an estimated tempo is at: ``'right'`` (Accuracy1), a name of
    :data:`TEMPO_ERROR_RATIOS` (the estimate over the reference, within ``tolerance``),
    ``'other'`` or ``'none'`` (no estimate).

    Examples
    --------
    >>> tempo_error_kind(120.0, 121.0), tempo_error_kind(60.0, 121.0), tempo_error_kind(120.0, 90.5)
    ('right', 'x2', 'x3/4')
    >>> tempo_error_kind(120.0, 100.0), tempo_error_kind(120.0, None)
    ('other', 'none')
    """
    if estimate is None or not np.isfinite(estimate) or estimate <= 0:
        return "none"
    if tempo_accuracy(reference, estimate, tolerance=tolerance)[0]:
        return "right"
    return next((name for name, f in TEMPO_ERROR_RATIOS.items()
                 if abs(estimate - f * reference) <= tolerance * f * reference), "other")


def key_scores(reference: str, estimate: str | None) -> tuple[float, float]:
    """MIREX weighted score and exactness of one key estimate (``None`` scores 0)."""
    import mir_eval

    if estimate is None:
        return 0.0, 0.0
    try:
        est = normalize_key(estimate)
    except ValueError:
        log.warning("estimated key %r is not a key; scored 0", estimate)
        return 0.0, 0.0
    if est is None:
        return 0.0, 0.0
    score = float(mir_eval.key.weighted_score(reference, est))
    return score, float(score == 1.0)


def beat_scores(reference: np.ndarray, estimate: np.ndarray | None, *,
                trim_s: float = BEAT_TRIM_S) -> tuple[float, float, float]:
    """F-measure, CMLt and AMLt of one beat sequence (``None`` or empty scores 0).

    Both sequences lose their beats before ``trim_s`` first, as
    ``mir_eval.beat.evaluate`` does.
    """
    import mir_eval

    if estimate is None or len(estimate) == 0:
        return 0.0, 0.0, 0.0
    ref = mir_eval.beat.trim_beats(np.asarray(reference, dtype=float), min_beat_time=trim_s)
    est = mir_eval.beat.trim_beats(np.asarray(estimate, dtype=float), min_beat_time=trim_s)
    with warnings.catch_warnings():
        # mir_eval warns (and returns 0) on empty or one-beat sequences: that is the intended score.
        warnings.simplefilter("ignore")
        f = float(mir_eval.beat.f_measure(ref, est))
        _, cmlt, _, amlt = mir_eval.beat.continuity(ref, est)
    return f, float(cmlt), float(amlt)


def _valid_chord(label: str) -> bool:
    import mir_eval

    try:
        mir_eval.chord.validate_chord_label(label)
        mir_eval.chord.encode(label)
    except (ValueError, mir_eval.chord.InvalidChordException):
        return False
    return True


def chord_scores(reference: Sequence[tuple[float, float, str]],
                 estimate: Sequence[tuple[float, float, str]] | None) -> dict[str, float]:
    """Weighted chord symbol recall (majmin, sevenths) of one track, with the evaluated durations.

    The estimate is clipped/padded with ``N`` to the reference's span
    (``mir_eval.util.adjust_intervals``), both are merged onto common segments
    (``merge_labeled_intervals``) and ``weighted_accuracy`` weighs each
    segment by its duration; reference segments outside a vocabulary (``X``)
    are not evaluated. A missing estimate scores 0 over the evaluated duration. A
    reference with ``X`` and ``N`` only is not evaluated (NaN, 0 s): it knows no chord,
    only the silence around the music, and scoring it would measure the no-chord
    decision in a lead-in and a reverb tail (on mirflow's generated folk songs, jigs
    and reels, 1.75 s of 20-30 s).

    Returns
    -------
    dict
        ``chord_majmin``, ``chord_sevenths`` (NaN when nothing is evaluable)
        and ``chord_majmin_s``, ``chord_sevenths_s`` (evaluated seconds).
    """
    import mir_eval

    ref_iv = np.array([[s, e] for s, e, _ in reference], dtype=float).reshape(-1, 2)
    ref_lab = [lab for _, _, lab in reference]
    keep = ref_iv[:, 1] > ref_iv[:, 0]
    ref_iv, ref_lab = ref_iv[keep], [lab for lab, k in zip(ref_lab, keep, strict=True) if k]
    if estimate:
        est_iv = np.array([[s, e] for s, e, _ in estimate], dtype=float).reshape(-1, 2)
        est_lab = []
        for _, _, lab in estimate:
            if _valid_chord(lab):
                est_lab.append(lab)
            else:
                log.warning("estimated chord %r does not parse; scored as X (wrong)", lab)
                est_lab.append("X")
        keep = est_iv[:, 1] > est_iv[:, 0]
        est_iv, est_lab = est_iv[keep], [lab for lab, k in zip(est_lab, keep, strict=True) if k]
    else:
        est_iv, est_lab = np.zeros((0, 2)), []
    out: dict[str, float] = {}
    if len(ref_iv) == 0 or ("X" in ref_lab and set(ref_lab) <= {"X", mir_eval.chord.NO_CHORD}):
        return {"chord_majmin": math.nan, "chord_sevenths": math.nan,
                "chord_majmin_s": 0.0, "chord_sevenths_s": 0.0}
    if len(est_iv):
        est_iv, est_lab = mir_eval.util.adjust_intervals(
            est_iv, est_lab, ref_iv.min(), ref_iv.max(), mir_eval.chord.NO_CHORD, mir_eval.chord.NO_CHORD)
        intervals, r_lab, e_lab = mir_eval.util.merge_labeled_intervals(ref_iv, ref_lab, est_iv, est_lab)
    else:
        intervals, r_lab, e_lab = ref_iv, ref_lab, None
    durations = mir_eval.util.intervals_to_durations(intervals)
    for name, fn in (("majmin", mir_eval.chord.majmin), ("sevenths", mir_eval.chord.sevenths)):
        # Which reference segments the vocabulary evaluates (comparisons >= 0): the same
        # whatever the estimate, so compare the reference with itself to find them.
        evaluable = fn(r_lab, r_lab) >= 0
        seconds = float(durations[evaluable].sum())
        if seconds <= 0:
            out[f"chord_{name}"] = math.nan
        elif e_lab is None:
            out[f"chord_{name}"] = 0.0
        else:
            out[f"chord_{name}"] = float(mir_eval.chord.weighted_accuracy(fn(r_lab, e_lab), durations))
        out[f"chord_{name}_s"] = seconds
    return out


# ============================================================================ evaluation
_NAN_ROW = {"key_weighted": math.nan, "key_exact": math.nan, "tempo_acc1": math.nan, "tempo_acc2": math.nan,
            "beat_f": math.nan, "beat_cmlt": math.nan, "beat_amlt": math.nan,
            "chord_majmin": math.nan, "chord_sevenths": math.nan, "chord_majmin_s": 0.0,
            "chord_sevenths_s": 0.0}


def score_track(truth: TruthRecord, pred: Prediction | None) -> dict[str, Any]:
    """Every metric of one track: NaN where the truth lacks that family, 0 where the prediction does."""
    p = pred or Prediction(track_id="", status="missing")
    row: dict[str, Any] = {
        "truth": truth.source,
        "path": truth.path,
        "track_id": pred.track_id if pred else None,
        "status": p.status,
        "ref_key": None, "est_key": p.key, "key_relation": None,
        "ref_tempo": truth.tempo, "est_tempo": p.tempo, "tempo_level": None,
        "est_key_confidence": p.key_confidence, "est_tempo_confidence": p.tempo_confidence,
        "ref_beats": 0 if truth.beats is None else len(truth.beats),
        "est_beats": 0 if p.beats is None else len(p.beats),
        "ref_chords": 0 if truth.chords is None else len(truth.chords),
        "est_chords": 0 if p.chords is None else len(p.chords),
        **_NAN_ROW,
    }
    ref_key = None
    if truth.key is not None:
        try:
            ref_key = normalize_key(truth.key)
        except ValueError:
            log.warning("truth %s: key %r is not a key; not evaluated", truth.source, truth.key)
    if ref_key is not None:
        row["ref_key"] = ref_key
        row["key_weighted"], row["key_exact"] = key_scores(ref_key, p.key)
        try:
            row["key_relation"] = key_relation(ref_key, p.key)
        except ValueError:  # an estimate that is no key, scored 0 by key_scores
            row["key_relation"] = "other"
    if truth.tempo is not None and truth.tempo > 0:
        row["tempo_acc1"], row["tempo_acc2"] = (float(v) for v in tempo_accuracy(truth.tempo, p.tempo))
        row["tempo_level"] = tempo_error_kind(truth.tempo, p.tempo)
    if truth.beats is not None and len(truth.beats) and truth.beats.max() > BEAT_TRIM_S:
        row["beat_f"], row["beat_cmlt"], row["beat_amlt"] = beat_scores(truth.beats, p.beats)
    if truth.chords:
        row.update(chord_scores(truth.chords, p.chords))
    return row


def _null_mask(per_track: pd.DataFrame, family: str) -> pd.Series:
    """Tracks whose prediction of ``family`` is missing (no value, or no rows)."""
    if family == "key":
        return per_track["est_key"].isna()
    if family == "tempo":
        return per_track["est_tempo"].isna()
    if family == "beat":
        return per_track["est_beats"] == 0
    return per_track["est_chords"] == 0


def error_kinds(per_track: pd.DataFrame) -> dict[str, dict[str, int]]:
    """The wrong keys and tempi of :func:`score_track` rows counted by kind (``key_relation``,
    ``tempo_level``), most frequent first (ties by name).

    Examples
    --------
    >>> rows = pd.DataFrame({"key_relation": ["exact", "fifth above", "fifth above", None],
    ...                      "tempo_level": ["right", "x2", "right", "none"]})
    >>> error_kinds(rows)
    {'key': {'fifth above': 2}, 'tempo': {'none': 1, 'x2': 1}}
    """
    out: dict[str, dict[str, int]] = {}
    for family, column, right in (("key", "key_relation", "exact"), ("tempo", "tempo_level", "right")):
        kinds = per_track[column].dropna() if column in per_track else pd.Series(dtype=object)
        counts = kinds[kinds != right].value_counts()
        out[family] = {str(k): int(n) for k, n in sorted(counts.items(), key=lambda kn: (-kn[1], str(kn[0])))}
    return out


def summarize(per_track: pd.DataFrame) -> dict[str, Any]:
    """Overall figures from :func:`score_track` rows.

    Returns
    -------
    dict
        Every metric of :data:`METRICS`, plus per family ``<family>_n``
        (tracks evaluated) and ``<family>_null`` (of those, tracks without a
        prediction, scored 0); and ``n_truth``, ``n_matched``, ``n_failed``,
        ``n_missing``.
    """
    out: dict[str, Any] = {
        "n_truth": int(len(per_track)),
        "n_matched": int((per_track["status"] == "ok").sum()) if len(per_track) else 0,
        "n_failed": int((per_track["status"] == "failed").sum()) if len(per_track) else 0,
        "n_missing": int((per_track["status"] == "missing").sum()) if len(per_track) else 0,
    }
    for name, (_family, how) in METRICS.items():
        values = per_track[name] if len(per_track) else pd.Series(dtype=float)
        evaluated = values.notna()
        if how == "mean":
            out[name] = float(values[evaluated].mean()) if evaluated.any() else math.nan
        else:
            weights = per_track.loc[evaluated, how]
            total = float(weights.sum()) if evaluated.any() else 0.0
            out[name] = float((values[evaluated] * weights).sum() / total) if total > 0 else math.nan
    for family in FAMILIES:
        col = {"key": "key_weighted", "tempo": "tempo_acc1", "beat": "beat_f", "chord": "chord_majmin"}[family]
        evaluated = per_track[col].notna() if len(per_track) else pd.Series(dtype=bool)
        out[f"{family}_n"] = int(evaluated.sum())
        out[f"{family}_null"] = int((evaluated & _null_mask(per_track, family)).sum()) if len(per_track) else 0
    return out


def evaluate_predictions(truth: Sequence[TruthRecord], predictions: Sequence[Prediction], *,
                         skip_missing: bool = False) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Score predictions against truth (the one implementation every caller uses).

    Parameters
    ----------
    truth : sequence of TruthRecord
    predictions : sequence of Prediction
    skip_missing : bool
        Leave out truth records with no matching prediction at all (default:
        they count, as wrong, with ``status='missing'``). Failed tracks always count.

    Returns
    -------
    per_track : DataFrame
        One row per truth record (see :func:`score_track`).
    overall : dict
        See :func:`summarize`.
    """
    matched = match(truth, predictions)
    rows = [score_track(t, p) for t, p in zip(truth, matched, strict=True) if p is not None or not skip_missing]
    per_track = pd.DataFrame(rows, columns=list(score_track(TruthRecord(), None)))
    missing = int((per_track["status"] == "missing").sum()) if len(per_track) else 0
    if missing:
        log.warning("%d of %d truth records match no catalog track; they count as wrong", missing, len(truth))
    return per_track, summarize(per_track)


def evaluate(catalog: Any, truth: str | os.PathLike[str] | Sequence[TruthRecord] | Sequence[str],
             *, skip_missing: bool = False) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Score a catalog against ground truth.

    Parameters
    ----------
    catalog : path or Catalog
        A mirflow catalog.
    truth : path, sequence of paths, or sequence of TruthRecord
        Anything :func:`load_truth` reads, or records already read.
    skip_missing : bool
        See :func:`evaluate_predictions`.

    Returns
    -------
    per_track : DataFrame
    overall : dict
    """
    if isinstance(truth, (str, os.PathLike)) or (truth and not isinstance(truth[0], TruthRecord)):
        records = load_truth(truth)  # type: ignore[arg-type]
    else:
        records = list(truth)  # type: ignore[arg-type]
    # Match on the light columns first, then read beats and chords of the matched tracks only:
    # a large catalog scored against a small truth file must not load every beat it holds.
    light = catalog_predictions(catalog, track_ids=())
    wanted = {p.track_id for p in match(records, light) if p is not None}
    predictions = catalog_predictions(catalog, track_ids=wanted)
    return evaluate_predictions(records, predictions, skip_missing=skip_missing)


# ============================================================================ output
METRIC_LABELS: dict[str, str] = {
    "key_weighted": "key weighted (MIREX)",
    "key_exact": "key exact",
    "tempo_acc1": "tempo Accuracy1 (4 %)",
    "tempo_acc2": "tempo Accuracy2",
    "beat_f": "beat F-measure",
    "beat_cmlt": "beat CMLt",
    "beat_amlt": "beat AMLt",
    "chord_majmin": "chord WCSR majmin",
    "chord_sevenths": "chord WCSR sevenths",
}


def overall_table(overall: dict[str, Any]) -> pd.DataFrame:
    """The overall dict as one row per metric: value, tracks evaluated, null predictions among them."""
    rows = []
    for name, (family, _) in METRICS.items():
        rows.append({"metric": name, "description": METRIC_LABELS[name], "value": overall[name],
                     "tracks": overall[f"{family}_n"], "null_predictions": overall[f"{family}_null"]})
    return pd.DataFrame(rows)


def write_results(per_track: pd.DataFrame, overall: dict[str, Any], out_dir: str | os.PathLike[str],
                  *, metadata: dict[str, str] | None = None) -> tuple[Path, Path]:
    """Write ``per_track.parquet`` and ``overall.parquet`` (one row per metric) to ``out_dir``.

    The overall counts (``n_truth``, ``n_matched``, …) and ``metadata`` go into
    the Parquet schema metadata of ``overall.parquet`` as JSON.

    Returns
    -------
    tuple of Path
        The two files.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    per_path, overall_path = out / "per_track.parquet", out / "overall.parquet"
    pq.write_table(pa.Table.from_pandas(per_track, preserve_index=False), per_path)
    table = pa.Table.from_pandas(overall_table(overall), preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"mirflow.evaluate"] = json.dumps({**{k: v for k, v in overall.items() if k.startswith("n_")},
                                            **(metadata or {})}).encode()
    pq.write_table(table.replace_schema_metadata(meta), overall_path)
    log.info("wrote %s and %s", per_path, overall_path)
    return per_path, overall_path


# ============================================================================ calibration
def calibration_error(confidence: Sequence[float | None], correct: Sequence[float], *,
                      bins: int = 10) -> tuple[float, pd.DataFrame]:
    """Expected calibration error and the reliability table of confidences against outcomes.

    A missing confidence counts as 0 (the system said nothing, so it claimed
    nothing). Bins are equal-width on 0-1; the ECE is the bin-size-weighted
    mean absolute gap between the mean confidence and the share correct.

    Parameters
    ----------
    confidence : sequence of float or None
        The system's confidences (0-1).
    correct : sequence of float
        1 where the estimate was right (e.g. tempo Accuracy1, exact key), else 0.
    bins : int
        Number of equal-width bins.

    Returns
    -------
    ece : float
        NaN without any track.
    table : DataFrame
        Per non-empty bin: ``lo``, ``hi``, ``n``, ``mean_confidence``, ``accuracy``.

    Examples
    --------
    >>> ece, table = calibration_error([0.9, 0.9, 0.1, 0.1], [1, 1, 0, 0])
    >>> round(ece, 2), int(table["n"].sum())
    (0.1, 4)
    """
    conf = np.array([0.0 if _is_missing(c) else float(c) for c in confidence], dtype=float)
    hit = np.asarray(correct, dtype=float)
    if conf.size != hit.size:
        raise ValueError("confidence and correct differ in length")
    if conf.size == 0:
        return math.nan, pd.DataFrame(columns=["lo", "hi", "n", "mean_confidence", "accuracy"])
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(np.clip(conf, 0.0, 1.0), edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        sel = idx == b
        if not sel.any():
            continue
        rows.append({"lo": edges[b], "hi": edges[b + 1], "n": int(sel.sum()),
                     "mean_confidence": float(conf[sel].mean()), "accuracy": float(hit[sel].mean())})
    # one definition of the ECE: the calibration fits score their maps with the same function
    return weighted_ece(conf, hit, bins=bins), pd.DataFrame(rows)
