"""Look into a catalog: everything about one track (``mirflow show``) and the catalog itself (``mirflow info``).

Both build a plain record first (:class:`TrackReport`, :class:`CatalogInfo`,
with ``to_dict`` for JSON) and render it as text in a second step
(:func:`format_track_report`, :func:`format_catalog_info`), so the command
line prints and the library never does.

One track's rows are read from its own part files (every per-track table
names its parts by track id, see :mod:`mirflow.catalog.layout`), or, once a
table is compacted, with :meth:`Catalog.rows_of` (a point look-up pruned by
the compacted files' row-group statistics), so showing a track costs a few
file reads however large the catalog is; only the rows of ``files`` and
``errors`` that point at it need a scan of those two tables.

Examples
--------
>>> from mirflow.query.inspect import track_report, format_track_report  # doctest: +SKIP
>>> print(format_track_report(track_report("cat/", track="0c2a2ed9")))  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mirflow.catalog.layout import (
    KEY_COLUMN,
    Catalog,
    TableSnapshot,
    open_parquet,
    path_from_columns,
    path_key,
    python_backed,
    read_parquet,
)
from mirflow.catalog.schema import load_schemas, table_schema
from mirflow.errors import CatalogError, ConfigError
from mirflow.resources import schemas_dir

__all__ = [
    "CatalogInfo",
    "PartitionInfo",
    "TableInfo",
    "TrackReport",
    "catalog_info",
    "format_catalog_info",
    "format_track_report",
    "resolve_track",
    "timeline_lines",
    "track_report",
]

log = logging.getLogger(__name__)

#: Shortest track-id prefix accepted: 6 hex digits are 16.7 million values, so a
#: prefix this long is unique in any catalog of a few thousand tracks.
MIN_PREFIX = 6
_HEX = re.compile(r"^[0-9a-f]+$")
#: Tables :func:`track_report` shows in their own section; others are counted.
_SHOWN = ("tracks", "files", "errors", "beats", "chords", "embeddings", "tags", "predictions")
#: Short labels of the tracks.yaml sections whose titles are long (others: the title's first word).
_GROUP_LABELS = {"identity and container facts": "container", "run lineage": "lineage"}
#: Units not worth printing after a value (ranges, and units the name already says).
_SILENT_UNITS = {"pitch class", "UTC", "1/sample", "beat"}


# --------------------------------------------------------------------------- reading


def open_catalog(catalog: str | os.PathLike[str] | Catalog) -> Catalog:
    """``catalog`` as a :class:`Catalog`, checking that it is one (it has a manifest)."""
    cat = catalog if isinstance(catalog, Catalog) else Catalog(catalog)
    if cat.read_manifest() is None:
        raise CatalogError(f"{cat.url} is not a mirflow catalog (no manifest.json)")
    return cat


def read_track_part(cat: Catalog, table: str, track_id: str, *, partition: str | None = None,
                    columns: Sequence[str] | None = None) -> pa.Table | None:
    """One track's rows of a per-track table (its part file), or ``None`` when it has none.

    Columns added to the schema after the part was written are added as nulls,
    as :meth:`Catalog.read_table` does, so catalogs of any age read alike.
    ``columns`` reads only those (a ``tracks`` part has about 70 columns).
    """
    canonical = _canonical_schema(table)
    wanted = list(columns) if columns is not None else canonical.names
    part: pa.Table | None = None
    if cat.compaction_record(table) is None:
        # No compaction: the loose part is the whole truth. ParquetFile.read,
        # not pq.read_table: the dataset machinery behind the latter costs
        # about 10 ms per file (measured here), more than the read.
        path = cat.part_path(table, track_id, partition)
        try:
            parquet = open_parquet(path, filesystem=cat.arrow_fs)
            present = set(parquet.schema_arrow.names)
            part = parquet.read(columns=[c for c in wanted if c in present],
                                use_threads=not python_backed(cat.arrow_fs))
        except FileNotFoundError:
            if cat.compaction_record(table) is None:  # not folded away meanwhile: no rows
                return None
    if part is None:
        # Compacted: the live loose part, a tombstone, or the compacted rows.
        rows = cat.rows_of(table, track_id, partition)
        part = rows.select([c for c in wanted if c in rows.column_names])
    if part.num_rows == 0:  # a tombstone (a removed key) or an empty part
        return None
    for name in wanted:
        if name not in part.column_names:
            part = part.append_column(name, pa.nulls(part.num_rows, canonical.field(name).type))
    return part


@functools.cache
def _canonical_schema(table: str) -> pa.Schema:
    # Built once per table: building it costs about 2 ms, as much as reading a part.
    spec = table_schema(table)
    return spec.arrow(sizes=spec.sizes_of({}))


def _scan(cat: Catalog, table: str, where: str, params: Sequence[Any], *,
          columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Rows of a whole table matching a SQL condition (DuckDB over :meth:`Catalog.read_table`'s Arrow table)."""
    import duckdb

    # read_table: compacted rows plus live loose parts, columns a part lacks as nulls.
    data = cat.read_table(table, columns=list(columns) if columns else None)
    if data.num_rows == 0:
        return []
    con = duckdb.connect()
    try:
        con.register("scanned", data)
        cur = con.execute(f"SELECT * FROM scanned WHERE {where}", list(params))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        con.close()


def resolve_track(catalog: str | os.PathLike[str] | Catalog, *, ref: str) -> str:
    """The track id a user means by ``ref``: a track id, a prefix of one, or a file path.

    Parameters
    ----------
    catalog : path or Catalog
        The catalog.
    ref : str
        A full track id, a prefix of at least :data:`MIN_PREFIX` hex digits,
        or the path of an analyzed file (absolute, or relative to the current
        folder; any path that maps to the track, duplicates included).

    Returns
    -------
    str
        The 32-hex-digit track id.

    Raises
    ------
    ConfigError
        When nothing matches, a prefix is ambiguous or too short, or the path
        failed analysis (the message says at which stage and why).
    """
    cat = open_catalog(catalog)
    text = ref.strip()
    lowered = text.lower()
    looks_like_id = bool(_HEX.match(lowered)) and len(lowered) <= 32
    if looks_like_id and len(lowered) >= MIN_PREFIX:
        if cat.compaction_record("tracks") is None:
            # Loose parts only: the id's shard folder lists the candidates.
            shard = cat.table_dir("tracks") / lowered[:2]
            matches = sorted(p.stem for p in shard.glob(f"{lowered}*.parquet")) if shard.is_dir() else []
        else:
            ids = cat.read_table("tracks", columns=["track_id"]).column("track_id").to_pylist()
            matches = sorted({t for t in ids if t.startswith(lowered)})
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            shown = ", ".join(matches[:5]) + (" …" if len(matches) > 5 else "")
            raise ConfigError(f"track id prefix {text!r} matches {len(matches)} tracks ({shown}); give more digits")
    # A path: the files and errors tables name their parts by the path's key,
    # so an exact path is found without a scan. Inputs are recorded as
    # os.path.abspath (symlinks kept), so try that first, then the real path.
    expanded = os.path.expanduser(text)
    candidates = list(dict.fromkeys([os.path.abspath(expanded), os.path.realpath(expanded), expanded]))
    for candidate in candidates:
        part = read_track_part(cat, "files", path_key(candidate))
        if part is not None and part.num_rows:
            return str(part.column("track_id")[0].as_py())
    for candidate in candidates:
        part = read_track_part(cat, "errors", path_key(candidate))
        if part is not None and part.num_rows:
            row = part.slice(0, 1).to_pylist()[0]
            raise ConfigError(f"{row['path']} was not analyzed: it failed at stage {row['stage']} "
                              f"({row['error_type']}: {row['message']})")
    if looks_like_id and len(lowered) < MIN_PREFIX and not os.path.exists(expanded):
        raise ConfigError(f"{text!r} is too short for a track id prefix: give at least {MIN_PREFIX} hex digits")
    if os.path.exists(expanded):
        raise ConfigError(f"{os.path.abspath(expanded)} is not in catalog {cat.url} (not analyzed into it)")
    raise ConfigError(f"no track {text!r} in catalog {cat.url}: not a track id, id prefix or analyzed path")


# --------------------------------------------------------------------------- tracks.yaml sections


@functools.cache
def column_groups() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The ``tracks`` columns grouped by the comment sections of ``schemas/tracks.yaml``.

    Each ``# --- TITLE (extractor: NAME) ---`` comment opens a section; the
    title's text before the parenthesis names the group (``loudness``,
    ``rhythm``, …). Columns the file lists before any section, or that a
    reformatted file no longer sections, fall into ``other``, so a new column
    is never lost from ``mirflow show``.
    """
    names = table_schema("tracks").names
    groups: dict[str, list[str]] = {}
    current = "other"
    try:
        text = (schemas_dir() / "tracks.yaml").read_text(encoding="utf-8")
    except OSError:
        text = ""
    for line in text.splitlines():
        if m := re.match(r"^\s*#\s*---\s*(.*?)\s*-*\s*$", line):
            current = re.split(r"\s*\(", m.group(1), maxsplit=1)[0].strip() or "other"
            continue
        if m := re.match(r"^\s*-\s*\{\s*name:\s*([A-Za-z_]\w*)", line):
            if m.group(1) in names:
                groups.setdefault(current, []).append(m.group(1))
    seen = {c for cols in groups.values() for c in cols}
    rest = [c for c in names if c not in seen]
    if rest:
        groups.setdefault("other", []).extend(rest)
    return tuple((title, tuple(cols)) for title, cols in groups.items())


# --------------------------------------------------------------------------- show


@dataclass(frozen=True)
class TrackReport:
    """Everything the catalog knows about one track.

    Attributes
    ----------
    track_id : str
        The track (content hash).
    track : dict
        Its ``tracks`` row, column name to value.
    paths : list of str
        Every input path whose bytes are this track (rows of ``files``).
    errors : list of dict
        ``errors`` rows of those paths or of this track id.
    embeddings : list of dict
        Per embedding model: ``model``, ``model_version``, ``dimension``, ``norm`` (L2).
    tags : dict
        Tagging model to its tags, most probable first, as ``(tag, probability)``.
    predictions : dict
        Classifier to its classes, most probable first, as ``(label, score)``.
    beats : list of (float, int or None)
        ``(time_s, beat_in_bar)``.
    chords : list of (float, float, str, float or None)
        ``(start_s, end_s, label, confidence)``.
    other_tables : dict
        Rows of this track in the other per-track tables (fingerprints, segment embeddings, …).
    superseded_by : str or None
        When no path holds this track any more and the path it was analysed at
        now holds another track (the file was rewritten since): that track.
    """

    track_id: str
    track: dict[str, Any]
    paths: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    embeddings: list[dict[str, Any]] = field(default_factory=list)
    tags: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    predictions: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    beats: list[tuple[float, int | None]] = field(default_factory=list)
    chords: list[tuple[float, float, str, float | None]] = field(default_factory=list)
    other_tables: dict[str, int] = field(default_factory=dict)
    superseded_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (timestamps as ISO text, arrays as lists, bytes as hex)."""
        return _jsonable(asdict(self))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _partitioned_rows(cat: Catalog, table: str, track_id: str) -> dict[str, pa.Table]:
    """``partition -> rows`` of one track in a table partitioned by model."""
    if table not in load_schemas():
        return {}
    out = {}
    for part in cat.partitions(table):
        rows = read_track_part(cat, table, track_id, partition=part)
        if rows is not None and rows.num_rows:
            out[part] = rows
    return out


def track_report(catalog: str | os.PathLike[str] | Catalog, *, track: str, top_tags: int = 5) -> TrackReport:
    """Gather everything the catalog holds about one track.

    Parameters
    ----------
    catalog : path or Catalog
        The catalog.
    track : str
        Track id, id prefix (at least 6 hex digits) or path of an analyzed
        file; see :func:`resolve_track`.
    top_tags : int
        How many tags of each tagging model to keep, most probable first.

    Returns
    -------
    TrackReport

    Raises
    ------
    ConfigError
        When ``track`` names no track of the catalog.
    """
    cat = open_catalog(catalog)
    track_id = resolve_track(cat, ref=track)
    rows = read_track_part(cat, "tracks", track_id)
    if rows is None or rows.num_rows == 0:
        raise ConfigError(f"track {track_id} has files rows but no tracks row in {cat.url} "
                          "(its analysis has not finished; run mirflow analyze again)")
    row = rows.slice(0, 1).to_pylist()[0]

    file_rows = _scan(cat, "files", "track_id = ?", [track_id])
    paths = sorted(path_from_columns(r["path"], r.get("path_bytes")) for r in file_rows)
    superseded_by = None
    if not paths:
        analysed_at = path_from_columns(row["path"], row.get("path_bytes"))
        now = read_track_part(cat, "files", path_key(analysed_at))
        holder = str(now.column("track_id")[0].as_py()) if now is not None and now.num_rows else None
        if holder is not None and holder != track_id:  # the file was rewritten since (current_tracks)
            superseded_by = holder
        else:
            paths = [analysed_at]
    error_rows = _scan(cat, "errors", "track_id = ? OR path IN (SELECT unnest(?))",
                       [track_id, [r["path"] for r in file_rows]])

    embeddings = []
    for model, emb in _partitioned_rows(cat, "embeddings", track_id).items():
        for e in emb.to_pylist():
            vector = np.asarray(e["embedding"], dtype=np.float64)
            embeddings.append({"model": e.get("model") or model, "model_version": e.get("model_version"),
                               "dimension": int(vector.size), "norm": float(np.linalg.norm(vector))})

    def ranked(table: str, label: str, score: str, keep: int | None) -> dict[str, list[tuple[str, float]]]:
        out = {}
        for model, data in _partitioned_rows(cat, table, track_id).items():
            pairs = sorted(((r[label], float(r[score])) for r in data.to_pylist()), key=lambda p: (-p[1], p[0]))
            out[model] = pairs[:keep] if keep else pairs
        return out

    tags = ranked("tags", "tag", "probability", top_tags)
    predictions = ranked("predictions", "label", "score", None)

    beats_t = read_track_part(cat, "beats", track_id)
    beats = ([(float(t), None if b is None else int(b)) for t, b in
              zip(beats_t.column("time_s").to_pylist(), beats_t.column("beat_in_bar").to_pylist(), strict=True)]
             if beats_t is not None else [])
    beats.sort()
    chords_t = read_track_part(cat, "chords", track_id)
    chords = ([(float(r["start_s"]), float(r["end_s"]), str(r["label"]), r.get("confidence"))
               for r in chords_t.to_pylist()] if chords_t is not None else [])
    chords.sort()

    other: dict[str, int] = {}
    for name, spec in load_schemas().items():
        if name in _SHOWN or not spec.primary_key or spec.primary_key[0] != "track_id":
            continue
        partitions = [None] if spec.partition_by is None else cat.partitions(name)
        n = sum(cat.rows_of(name, track_id, p).num_rows for p in partitions)
        if n:
            other[name] = n
    return TrackReport(track_id=track_id, track=row, paths=paths, superseded_by=superseded_by,
                       errors=error_rows, embeddings=embeddings,
                       tags=tags, predictions=predictions, beats=beats, chords=chords, other_tables=other)


def _fmt_number(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
        return f"{value:.3g}"
    return f"{value:.5g}"


def _fmt_value(value: Any, unit: str | None = None) -> str:
    """One value as a person reads it, with its unit where that helps."""
    if isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, int):
        text = f"{value:,}" if abs(value) >= 1_000_000 else str(value)
    elif isinstance(value, float):
        text = _fmt_number(value)
    elif isinstance(value, dt.datetime):
        text = value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    elif isinstance(value, (list, tuple, np.ndarray)):
        items = list(value)
        if not items:  # e.g. empty_reasons of a track every extractor gave its values to
            return "none"
        if all(isinstance(v, str) for v in items):
            return " ".join(items)
        numbers = [float(v) for v in items if v is not None]
        if not numbers:
            return f"[{len(items)} values]"
        if len(numbers) <= 12:
            text = "[" + " ".join(f"{v:.3g}" for v in numbers) + "]"
        else:
            text = f"[{len(numbers)} values, {min(numbers):.4g} .. {max(numbers):.4g}]"
    elif isinstance(value, bytes):
        text = value.hex()
    else:
        text = str(value)
    if unit and unit not in _SILENT_UNITS and not unit[0].isdigit():
        text += f" {unit}"
    return text


def _pack(label: str, items: Sequence[str], *, width: int, indent: int = 12) -> list[str]:
    """``items`` on as few lines as fit ``width``, the first line starting with ``label``."""
    lines: list[str] = []
    line = f"{label:<{indent - 1}} "
    filled = False
    for item in items:
        candidate = f"{line}{'   ' if filled else ''}{item}"
        if filled and len(candidate) > width:
            lines.append(line)
            line = " " * indent + item
        else:
            line = candidate
        filled = True
    lines.append(line)
    return lines


def _beat_chords(beats: Sequence[tuple[float, int | None]],
                 chords: Sequence[tuple[float, float, str, float | None]]) -> list[str]:
    """The chord of each beat: the label covering most of the time from that beat to the next."""
    if not beats:
        return []
    times = np.array([t for t, _ in beats], dtype=float)
    if not chords:
        return [""] * len(times)
    gap = float(np.median(np.diff(times))) if times.size > 1 else 0.5
    ends = np.append(times[1:], times[-1] + gap)
    starts_c = np.array([c[0] for c in chords], dtype=float)
    ends_c = np.array([c[1] for c in chords], dtype=float)
    overlap = np.minimum(ends_c[None, :], ends[:, None]) - np.maximum(starts_c[None, :], times[:, None])
    overlap = np.clip(overlap, 0.0, None)
    best = overlap.argmax(axis=1)
    return [chords[j][2] if overlap[i, j] > 0 else "" for i, j in enumerate(best)]


def timeline_lines(beats: Sequence[tuple[float, int | None]],
                   chords: Sequence[tuple[float, float, str, float | None]], *,
                   meter: int | None = None, max_lines: int = 20, width: int = 100) -> list[str]:
    """A text timeline of bars, beats and chords.

    One line per bar, one cell per beat: the chord label where the chord
    changes and ``.`` where it holds (each beat gets the chord that covers
    most of the time until the next beat). Beats before the first downbeat
    are bar 0 (a pickup). A track with more than ``max_lines`` bars puts
    several bars on a line, separated by ``|``. Without beats, the chord
    segments are listed with their start times.

    Parameters
    ----------
    beats : sequence of (time_s, beat_in_bar)
        From the ``beats`` table; ``beat_in_bar`` may be ``None``.
    chords : sequence of (start_s, end_s, label, confidence)
        From the ``chords`` table.
    meter : int, optional
        Beats per bar, used only when the beats carry no bar positions.
    max_lines : int
        Most lines of bars to print.
    width : int
        Lines longer than this are cut with ``...``.

    Returns
    -------
    list of str
    """
    def cut(text: str) -> str:
        return text if len(text) <= width else text[: width - 3] + "..."

    if not beats:
        if not chords:
            return []
        items = [f"{s:.2f}s {label}" for s, _, label, _ in chords]
        lines = _pack("chords", items, width=width)
        return [cut(x) for x in lines[:max_lines]] + (["            ..."] if len(lines) > max_lines else [])

    labels = _beat_chords(beats, chords)
    cells = []
    previous = None
    for label in labels:
        cells.append(label if label != previous else ".")
        previous = label
    # Split the beats into bars.
    has_positions = any(b is not None for _, b in beats)
    per_bar = meter if meter and meter > 0 else 4
    bars: list[tuple[int, float, list[str]]] = []
    number = 0 if has_positions and beats[0][1] not in (None, 1) else 1
    for i, (time, position) in enumerate(beats):
        starts_bar = (position == 1) if has_positions else (i % per_bar == 0)
        if not bars or (starts_bar and bars[-1][2]):
            if bars:
                number += 1
            bars.append((number, time, []))
        bars[-1][2].append(cells[i])
    per_line = max(1, math.ceil(len(bars) / max_lines))
    column = max(5, *(len(c) for c in cells))
    lines = []
    for at in range(0, len(bars), per_line):
        group = bars[at: at + per_line]
        first, time, _ = group[0]
        last = group[-1][0]
        if per_line == 1:
            head = f"bar {first:>3}"
            body = "  ".join(c.ljust(column) for c in group[0][2]).rstrip()
        else:
            head = f"bars {first:>3}-{last:<3}"
            body = " | ".join(" ".join(cells_) for _, _, cells_ in group)
        lines.append(cut(f"{head} {time:7.2f}s | {body}"))
    return lines


def format_track_report(report: TrackReport, *, width: int = 100, max_timeline_lines: int = 20) -> str:
    """Render a :class:`TrackReport` as text for a terminal (about 50 lines for a normal track).

    Parameters
    ----------
    report : TrackReport
        From :func:`track_report`.
    width : int
        Line width to pack values into.
    max_timeline_lines : int
        Most lines of the beat/chord timeline; longer tracks show several bars per line.

    Returns
    -------
    str
    """
    spec = table_schema("tracks")
    row = report.track
    out = [f"track       {report.track_id}"]
    paths = report.paths or [str(row.get("path"))]
    if report.superseded_by:
        out.append(f"path        {paths[0]}   (rewritten since: it now holds track {report.superseded_by})")
    else:
        out.append(f"path        {paths[0]}")
    for extra in paths[1:]:
        out.append(f"            {extra}   (same bytes)")
    hidden = {"track_id", "path", "path_bytes", "lineage"}
    for title, columns in column_groups():
        cols = [c for c in columns if c not in hidden]
        if not cols:
            continue
        items = [f"{c} {_fmt_value(row[c], spec.column(c).unit)}" for c in cols if row.get(c) is not None]
        if title == "run lineage":
            items.extend(_extractors_items(row.get("lineage")))
        label = _GROUP_LABELS.get(title) or (title if len(title) <= 11 else title.split()[0][:11])
        if not items:
            out.append(f"{label:<11} (not computed by this pipeline)")
            continue
        out.extend(_pack(label, items, width=width))
    for e in report.errors:
        out.append(f"error       [{e.get('stage')}] {e.get('path')}: {e.get('error_type')}: {e.get('message')}")
    if report.embeddings:
        items = [f"{e['model']} {e['dimension']}-d norm {e['norm']:.4g} (version {e['model_version']})"
                 for e in report.embeddings]
        out.extend(_pack("embeddings", items, width=width))
    for model, pairs in report.tags.items():
        out.extend(_pack("tags", [f"{model}:"] + [f"{t} {p:.2f}" for t, p in pairs], width=width))
    for model, pairs in report.predictions.items():
        out.extend(_pack("predicted", [f"{model}:"] + [f"{label} {p:.2f}" for label, p in pairs], width=width))
    if report.other_tables:
        out.extend(_pack("also", [f"{name} {n} row{'s' * (n != 1)}" for name, n in report.other_tables.items()],
                         width=width))
    timeline = timeline_lines(report.beats, report.chords, meter=row.get("meter"),
                              max_lines=max_timeline_lines, width=width)
    if timeline:
        out.append(f"timeline    {len(report.beats)} beats, {len(report.chords)} chord segments "
                   "(chord at each beat where it changes, . where it holds)")
        out.extend(timeline)
    else:
        out.append("timeline    no beats or chords")
    return "\n".join(out)


def _extractors_items(lineage: str | None) -> list[str]:
    """``extractors: NAME vN, …`` from the lineage JSON, as items for :func:`_pack`."""
    try:
        extractors = json.loads(lineage or "{}").get("extractors", [])
    except (ValueError, AttributeError):
        return ["extractors: (lineage unreadable)"]
    items = []
    for e in extractors:
        model = (e.get("params") or {}).get("model")
        items.append(f"{e.get('name')} v{e.get('version')}" + (f" ({model})" if model else ""))
    return ["extractors:", *items] if items else []


# --------------------------------------------------------------------------- info


@dataclass(frozen=True)
class PartitionInfo:
    """One partition (e.g. embedding model) of a partitioned table."""

    name: str
    rows: int
    tracks: int
    dimension: int | None = None


@dataclass(frozen=True)
class TableInfo:
    """One table of a catalog: rows, part files, bytes, schema versions, partitions."""

    name: str
    rows: int
    parts: int
    size_bytes: int
    schema_version: int | None
    current_schema_version: int
    partitions: list[PartitionInfo] = field(default_factory=list)
    #: The committed compaction generation (``None``: never compacted) and its files.
    generation: str | None = None
    compacted_files: int = 0

    @property
    def schema_current(self) -> bool:
        """Whether the catalog's manifest records the schema version this mirflow writes."""
        return self.schema_version == self.current_schema_version


@dataclass(frozen=True)
class CatalogInfo:
    """What a catalog is: its manifest facts, tables, runs and size on disk."""

    root: str
    format: str | None
    format_version: int | None
    pipeline: str | None
    created_at: str | None
    mirflow_version: str | None
    tables: list[TableInfo]
    runs: list[dict[str, Any]]
    size_bytes: int
    files: int
    tracks: int
    audio_hours: float | None
    errors_by_stage: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return _jsonable(asdict(self))


def _snapshot_counts(snap: TableSnapshot, fs=None) -> tuple[int, int]:
    """``(rows, keys)`` a reader of ``snap`` sees, from Parquet footers where no key is hidden.

    A compacted file's rows of a key that a live loose part overrides (or a
    tombstone hides) are not counted; only then is its key column read.
    """
    hidden = snap.hidden_keys()
    rows = keys = 0
    for partition, f in snap.compacted:
        gone = hidden.get(partition)
        key_column = read_parquet(f, columns=[KEY_COLUMN], filesystem=fs).column(KEY_COLUMN)
        if gone:
            key_column = key_column.filter(pc.invert(pc.is_in(key_column, value_set=pa.array(sorted(gone)))))
        rows += len(key_column)
        keys += pc.count_distinct(key_column).as_py()
    for p in snap.loose:
        n = pq.ParquetFile(str(p.path), filesystem=fs).metadata.num_rows
        rows += n
        keys += n > 0  # a tombstone hides its key and adds none
    return rows, keys


def catalog_info(catalog: str | os.PathLike[str] | Catalog) -> CatalogInfo:
    """Describe a catalog: tables with row counts and schema versions, partitions, runs, size.

    Row counts come from :meth:`Catalog.snapshot`: the Parquet footers of the
    live loose parts and the compacted files (whose key column is read to
    count keys and leave out rows a loose part overrides); the size is that of
    every file under the catalog folder.

    Parameters
    ----------
    catalog : path or Catalog
        The catalog.

    Returns
    -------
    CatalogInfo
    """
    cat = open_catalog(catalog)
    manifest = cat.read_manifest() or {}
    recorded = manifest.get("schemas") or {}
    tables = []
    for name, spec in load_schemas().items():
        snap = cat.snapshot(name)
        files = [p.path for p in snap.loose] + [f for _, f in snap.compacted]
        partitions = []
        if spec.partition_by is not None:
            sized = [c.name for c in spec.columns if c.sized_per_file]
            for part in cat.partitions(name):
                part_snap = cat.snapshot(name, part)
                rows, keys = _snapshot_counts(part_snap, cat.arrow_fs)
                dim = None
                sample = [p.path for p in part_snap.loose] + [f for _, f in part_snap.compacted]
                if sized and sample:
                    raw = (pq.read_schema(str(sample[0]), filesystem=cat.arrow_fs).metadata or {}).get(f"mirflow.size.{sized[0]}".encode())
                    dim = int(raw) if raw else None
                partitions.append(PartitionInfo(name=part, rows=rows, tracks=keys, dimension=dim))
        tables.append(TableInfo(
            name=name, rows=_snapshot_counts(snap, cat.arrow_fs)[0], parts=len(snap.loose),
            size_bytes=sum(cat.file_size(f) for f in files),
            schema_version=recorded.get(name), current_schema_version=spec.version, partitions=partitions,
            generation=snap.generation, compacted_files=len(snap.compacted)))
    size, n_files = cat.usage()
    audio_s = None
    n_tracks = next(t.rows for t in tables if t.name == "tracks")
    if n_tracks:
        durations = cat.read_table("tracks", columns=["duration_s"]).column("duration_s")
        audio_s = sum(v for v in durations.to_pylist() if v is not None)
    stages: dict[str, int] = {}
    for stage in cat.read_table("errors", columns=["stage"]).column("stage").to_pylist():
        stages[stage] = stages.get(stage, 0) + 1
    return CatalogInfo(
        root=cat.url, format=manifest.get("format"), format_version=manifest.get("format_version"),
        pipeline=manifest.get("pipeline"), created_at=manifest.get("created_at"),
        mirflow_version=manifest.get("mirflow_version"), tables=tables, runs=list(manifest.get("runs") or []),
        size_bytes=size, files=n_files, tracks=n_tracks,
        audio_hours=None if audio_s is None else audio_s / 3600.0,
        errors_by_stage=dict(sorted(stages.items(), key=lambda kv: -kv[1])))


def _size_text(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"  # not reached


def format_catalog_info(info: CatalogInfo, *, last_runs: int = 5) -> str:
    """Render a :class:`CatalogInfo` as text for a terminal.

    Parameters
    ----------
    info : CatalogInfo
        From :func:`catalog_info`.
    last_runs : int
        How many of the most recent runs to list.

    Returns
    -------
    str
    """
    out = [f"catalog     {info.root}",
           f"size        {_size_text(info.size_bytes)} on disk in {info.files:,} files",
           f"format      {info.format} v{info.format_version}, written by mirflow {info.mirflow_version or '?'}, "
           f"created {info.created_at or '?'}",
           f"pipeline    {info.pipeline}",
           f"tracks      {info.tracks:,}" + (f" ({info.audio_hours:.2f} hours of audio)" if info.audio_hours else "")]
    if info.errors_by_stage:
        out.append("errors      " + ", ".join(f"{stage} {n}" for stage, n in info.errors_by_stage.items()))
    out.append("")
    out.append(f"{'table':<20} {'rows':>10} {'parts':>8} {'size':>10}  schema (catalog / this mirflow)")
    for t in info.tables:
        recorded = "-" if t.schema_version is None else f"v{t.schema_version}"
        note = "" if t.schema_current or t.schema_version is None else "  <- catalog older" \
            if t.schema_version < t.current_schema_version else "  <- catalog newer"
        out.append(f"{t.name:<20} {t.rows:>10,} {t.parts:>8,} {_size_text(t.size_bytes):>10}  "
                   f"{recorded} / v{t.current_schema_version}{note}")
        if t.generation is not None:
            out.append(f"  compacted: generation {t.generation}, {t.compacted_files:,} files "
                       f"(+ {t.parts:,} loose parts)")
        for p in t.partitions:
            dim = f", {p.dimension}-d" if p.dimension is not None else ""
            out.append(f"  {p.name:<18} {p.rows:>10,} {p.tracks:>8,}  partition{dim}")
    runs = info.runs[-last_runs:] if last_runs > 0 else []
    out.append("")
    out.append(f"runs        {len(info.runs)} in all" + (f", the last {len(runs)}:" if runs else ""))
    if runs:
        out.append(f"  {'run_id':<26} {'status':<10} {'analyzed':>8} {'skipped':>8} {'failed':>7} {'wall':>9}  finished")
        for r in runs:
            wall = r.get("wall_seconds")
            out.append(f"  {str(r.get('run_id')):<26} {str(r.get('status')):<10} {r.get('analyzed', '-')!s:>8} "
                       f"{r.get('skipped', '-')!s:>8} {r.get('failed', '-')!s:>7} "
                       f"{(f'{wall:.1f} s' if isinstance(wall, (int, float)) else '-'):>9}  "
                       f"{r.get('finished_at') or '-'}")
    return "\n".join(out)
