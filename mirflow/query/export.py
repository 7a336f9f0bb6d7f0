"""Export a catalog for other tools: one JAMS file per track, or any SQL query as CSV or Parquet.

:func:`export_jams` writes ``<track_id>.jams`` per track with the ``tempo``,
``beat``, ``chord`` and ``key_mode`` annotations JAMS tools (mir_eval through
``jams.eval``, mirdata, sonic visualisers' importers) read, each file checked
against the JAMS schema before it is written. :func:`export_query` runs DuckDB
SQL over the catalog's views (:func:`mirflow.query.connect`) and streams the
result into a CSV or Parquet file.

Nothing a user made is ever overwritten. A JAMS export folder is written
under a temporary name beside ``out`` and renamed into place at the end, so a
reader sees the old export or the new one, never half of one; it carries a
marker file, and only an empty folder or a folder with that marker is replaced
(the latter only with ``force``). A query's file is written beside ``out`` and
moved into place only when complete; an existing file is replaced only with
``force``.

Examples
--------
>>> from mirflow.query.export import export_jams, export_query   # doctest: +SKIP
>>> export_jams("cat/", out="jams/")                              # doctest: +SKIP
>>> export_query("cat/", out="keys.csv", query="select path, key from tracks")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mirflow._version import __version__
from mirflow.catalog.layout import Catalog, path_from_columns, replace_folder
from mirflow.errors import ConfigError
from mirflow.query.inspect import _scan, open_catalog, read_track_part

__all__ = ["DEFAULT_QUERY", "JAMS_MARKER", "JamsExportSummary", "QueryExportSummary", "export_jams",
           "export_query", "track_jams"]

log = logging.getLogger(__name__)

#: What ``mirflow export csv|parquet`` writes without ``--query``.
DEFAULT_QUERY = "select * from current_tracks"
#: File in a JAMS export folder that marks it as one (so a later export may replace it).
JAMS_MARKER = ".mirflow-jams-export.json"
JAMS_EXPORT_FORMAT = "mirflow-jams-export"
#: Tracks per unit of work of a parallel JAMS export (and per progress update).
JAMS_CHUNK = 64
FORMATS = ("csv", "parquet")
#: The tracks columns a JAMS file uses (reading only these is 5x faster than the ~70 columns of a part).
JAMS_TRACK_COLUMNS = ("track_id", "path", "path_bytes", "duration_s", "pipeline", "pipeline_version",
                      "mirflow_version", "analyzed_at", "lineage", "tempo_bpm", "tempo_confidence", "tempo_alt_bpm",
                      "tempo_alt_confidence", "meter", "beat_count", "key", "key_tonic", "key_jams",
                      "key_confidence", "key_alt", "key_alt_confidence", "chord_count_distinct")


# --------------------------------------------------------------------------- errors


def _one_line(exc: BaseException) -> str:
    """A DuckDB error as one line: its lines joined, without the echo of the query and its caret."""
    lines = []
    for raw in str(exc).splitlines():
        line = raw.strip()
        if not line or line.startswith("LINE ") or set(line) <= {"^", " "}:
            continue
        lines.append(line)
    return " ".join(lines) or type(exc).__name__


def _sql_text(query: str) -> str:
    text = query.strip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    if not text:
        raise ConfigError("the SQL query is empty")
    return text


# --------------------------------------------------------------------------- CSV / Parquet


@dataclass(frozen=True)
class QueryExportSummary:
    """What :func:`export_query` wrote."""

    out: Path
    format: str
    rows: int
    columns: list[str]
    seconds: float


def export_query(catalog: str | os.PathLike[str] | Catalog, *, out: str | os.PathLike[str],
                 query: str = DEFAULT_QUERY, format: str | None = None, force: bool = False) -> QueryExportSummary:
    """Write the result of a DuckDB SQL query over a catalog to a CSV or Parquet file.

    The query sees one view per table (``tracks``, ``beats``, ``chords``,
    ``embeddings``, ``embeddings_<model>``, …) as :func:`mirflow.query.connect`
    makes them. DuckDB streams the result into the file, so results larger than
    memory export too.

    Parameters
    ----------
    catalog : path or Catalog
        The catalog.
    out : path
        The file to write. Its folder is created if missing.
    query : str
        One SQL ``SELECT`` (a trailing ``;`` is fine).
    format : {'csv', 'parquet'}, optional
        Default: from ``out``'s suffix.
    force : bool
        Replace an existing file.

    Returns
    -------
    QueryExportSummary

    Raises
    ------
    ConfigError
        On an SQL error (DuckDB's message, as one line), an unknown format,
        or an existing ``out`` without ``force``.
    """
    import duckdb

    from mirflow.query import check_read_only, connect

    started = time.perf_counter()
    out = Path(out).expanduser()
    if format is None:
        format = out.suffix.lower().lstrip(".")
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}: use one of {', '.join(FORMATS)}")
    if out.is_dir():
        raise ConfigError(f"{out} is a folder; give a file name for the {format} export")
    if out.exists() and not force:
        raise ConfigError(f"{out} exists; use --force to replace it")
    sql = _sql_text(query)
    check_read_only(sql)  # the user's part is a query; only the COPY around it writes
    con = connect(open_catalog(catalog), read_only=False)
    try:
        try:
            # Bind the query on its own first: its errors then quote the user's
            # SQL, not the COPY statement wrapped around it.
            columns = list(con.sql(sql).columns)
        except duckdb.Error as exc:
            raise ConfigError(f"SQL error: {_one_line(exc)}") from None
        except AttributeError:
            raise ConfigError("the query returns no rows to export (is it a SELECT?)") from None
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.{uuid.uuid4().hex[:12]}.tmp"
        options = "FORMAT csv, HEADER true" if format == "csv" else "FORMAT parquet, COMPRESSION zstd"
        try:
            try:
                copied = con.execute(f"COPY ({sql}) TO '{str(tmp).replace(chr(39), chr(39) * 2)}' ({options})")
                rows = int(copied.fetchall()[0][0])
            except duckdb.Error as exc:
                raise ConfigError(f"SQL error: {_one_line(exc)}") from None
            _place(tmp, out, force=force)
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        con.close()
    log.info("exported %d rows to %s", rows, out)
    return QueryExportSummary(out=out, format=format, rows=rows, columns=columns,
                              seconds=time.perf_counter() - started)


def _place(tmp: Path, out: Path, *, force: bool) -> None:
    """Move a finished file into place; without ``force`` never over a file that appeared meanwhile."""
    if force:
        os.replace(tmp, out)
        return
    try:
        os.link(tmp, out)  # fails if out exists: no window in which a user's file could be replaced
    except FileExistsError:
        raise ConfigError(f"{out} exists; use --force to replace it") from None
    except OSError:  # a file system without hard links
        if out.exists():
            raise ConfigError(f"{out} exists; use --force to replace it") from None
        os.replace(tmp, out)


# --------------------------------------------------------------------------- JAMS


@dataclass(frozen=True)
class JamsExportSummary:
    """What :func:`export_jams` wrote.

    Attributes
    ----------
    out : Path
        The export folder.
    written : int
        JAMS files written (each passed ``jams`` schema validation).
    failed : dict
        Track id to the validation error of tracks whose JAMS did not validate
        (not written).
    seconds : float
        Wall time.
    """

    out: Path
    written: int
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _extractor(lineage: str | None, name: str) -> dict[str, Any] | None:
    try:
        extractors = json.loads(lineage or "{}").get("extractors", [])
    except (ValueError, AttributeError):
        return None
    return next((e for e in extractors if e.get("name") == name), None)


def track_jams(track: dict[str, Any], *, beats: Iterable[tuple[float, int | None]] = (),
               chords: Iterable[tuple[float, float, str, float | None]] = (),
               paths: Iterable[str] = ()) -> Any:
    """One track's catalog values as a :class:`jams.JAMS` object.

    Annotations follow :func:`mirflow.synth.truth.to_jams` (the ground truth
    the benchmarks score against), so a catalog export and a truth file compare
    directly with ``jams.eval``:

    * ``tempo``: ``tempo_bpm`` with ``tempo_confidence``, then the other
      metrical level ``tempo_alt_bpm`` with its confidence (the MIREX
      two-tempo convention; the first observation is the estimate);
    * ``beat``: one observation per ``beats`` row, value = ``beat_in_bar``;
    * ``chord``: one per ``chords`` row, Harte labels, segment confidence;
    * ``key_mode``: ``key_jams`` (``'A:minor'``) with ``key_confidence``, or
      ``N`` when the key extractor found no key;
    * ``file_metadata``: ``duration_s``, identifiers ``track_id`` and ``path``;
      the sandbox ``mirflow`` holds every path of the track and the lineage.

    An annotation is left out when its extractor did not run in the track's
    pipeline (its columns are null); an extractor that ran and found nothing
    (silence) gives an empty annotation.

    Parameters
    ----------
    track : dict
        The ``tracks`` row.
    beats : iterable of (time_s, beat_in_bar)
        The track's ``beats`` rows.
    chords : iterable of (start_s, end_s, label, confidence)
        The track's ``chords`` rows.
    paths : iterable of str
        Every path of the track (``files`` rows); default the row's ``path``.

    Returns
    -------
    jams.JAMS
    """
    import jams

    beats = sorted(beats)
    chords = sorted(chords)
    paths = list(paths) or [path_from_columns(track["path"], track.get("path_bytes"))]
    ends = [t for t, _ in beats] + [e for _, e, _, _ in chords]
    duration = _finite(track.get("duration_s")) or (max(ends) if ends else 0.0)
    lineage = track.get("lineage")

    jam = jams.JAMS()
    jam.file_metadata.duration = duration
    jam.file_metadata.identifiers = {"track_id": track["track_id"], "path": track["path"]}

    def annotation(namespace: str, extractor: str) -> Any:
        info = _extractor(lineage, extractor) or {}
        params = info.get("params") or {}
        meta = jams.AnnotationMetadata(
            annotator={"name": "mirflow", "pipeline": track.get("pipeline"),
                       "pipeline_version": track.get("pipeline_version")},
            version=str(info.get("version", "")),
            annotation_tools=f"mirflow {track.get('mirflow_version')}, extractor {extractor} "
                             f"v{info.get('version', '?')}" + (f" ({params['backend']} backend)"
                                                               if params.get("backend") else ""),
            data_source=f"mirflow catalog, pipeline {track.get('pipeline')} ({track.get('pipeline_version')})",
            annotation_rules="automatic estimate",
        )
        return jams.Annotation(namespace=namespace, time=0.0, duration=duration, annotation_metadata=meta)

    rhythm_ran = track.get("beat_count") is not None or track.get("tempo_bpm") is not None or bool(beats)
    if rhythm_ran:
        tempo = annotation("tempo", "rhythm")
        for bpm, conf in ((track.get("tempo_bpm"), track.get("tempo_confidence")),
                          (track.get("tempo_alt_bpm"), track.get("tempo_alt_confidence"))):
            bpm, conf = _finite(bpm), _finite(conf)
            # The tempo namespace needs a confidence in [0, 1]; a tempo without one is left out.
            if bpm is not None and bpm > 0 and conf is not None:
                tempo.append(time=0.0, duration=duration, value=bpm, confidence=min(max(conf, 0.0), 1.0))
        beat = annotation("beat", "rhythm")
        for t, position in beats:
            beat.append(time=float(t), duration=0.0, value=None if position is None else int(position),
                        confidence=None)
        jam.annotations.extend([tempo, beat])
    if chords or track.get("chord_count_distinct") is not None:
        chord = annotation("chord", "chords")
        for start, end, label, conf in chords:
            chord.append(time=float(start), duration=max(float(end) - float(start), 0.0), value=label,
                         confidence=_finite(conf))
        jam.annotations.append(chord)
    if track.get("key_jams") or track.get("key_tonic") is not None or _extractor(lineage, "key"):
        key = annotation("key_mode", "key")
        key.append(time=0.0, duration=duration, value=track.get("key_jams") or "N",
                   confidence=_finite(track.get("key_confidence")))
        jam.annotations.append(key)

    analyzed = track.get("analyzed_at")
    jam.sandbox.update(mirflow={
        "track_id": track["track_id"],
        "path": track["path"],
        "paths": paths,
        "pipeline": track.get("pipeline"),
        "pipeline_version": track.get("pipeline_version"),
        "mirflow_version": track.get("mirflow_version"),
        "analyzed_at": analyzed.isoformat() if isinstance(analyzed, dt.datetime) else analyzed,
        "meter": track.get("meter"),
        "key": track.get("key"),
        "key_alt": track.get("key_alt"),
        "key_alt_confidence": _finite(track.get("key_alt_confidence")),
    })
    return jam


def _check_jams_out(out: Path, *, force: bool) -> None:
    """Refuse an ``out`` that holds anything but a previous JAMS export (and that one without ``force``)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder; the JAMS export needs a folder")
    if not any(out.iterdir()):
        return
    if not (out / JAMS_MARKER).is_file():
        raise ConfigError(f"{out} is not empty and holds no previous JAMS export ({JAMS_MARKER}); "
                          "choose another --out folder (mirflow never overwrites files it did not write)")
    if not force:
        raise ConfigError(f"{out} holds a previous JAMS export; use --force to replace it")


def _replace_dir(tmp: Path, out: Path, *, force: bool) -> None:
    _check_jams_out(out, force=force)  # again: something may have appeared while we worked
    replace_folder(tmp, out)


def _selected_tracks(cat: Catalog, query: str | None) -> list[str]:
    """Track ids to export: the tracks the catalog's paths hold now (``current_tracks``: not the old
    analysis of a file rewritten since, whose JAMS would claim the path), or the ``track_id`` column
    of ``query``."""
    # read_table, not a listing of part files: compacted tracks have none.
    ids = sorted(cat.read_table("tracks", columns=["track_id"]).column("track_id").to_pylist())
    import duckdb

    from mirflow.query import check_read_only, connect

    sql = "SELECT track_id FROM current_tracks" if query is None else _sql_text(query)
    check_read_only(sql)
    con = connect(cat)
    try:
        try:
            rel = con.sql(sql)
            if rel is None or "track_id" not in rel.columns:
                raise ConfigError("the --query for the JAMS export must return a track_id column")
            wanted = {r[0] for r in rel.select("track_id").fetchall()}
        except duckdb.Error as exc:
            raise ConfigError(f"SQL error: {_one_line(exc)}") from None
    finally:
        con.close()
    return [t for t in ids if t in wanted]


def export_jams(catalog: str | os.PathLike[str] | Catalog, *, out: str | os.PathLike[str],
                query: str | None = None, force: bool = False, workers: int = 1,
                progress: Callable[[int, int], None] | None = None) -> JamsExportSummary:
    """Write one JAMS file per track, ``<track_id>.jams``, validated with ``jams``.

    See :func:`track_jams` for what each file holds. Tracks are read one at a
    time (:meth:`Catalog.rows_of`: a loose part or a point look-up in the
    compacted files), so memory stays flat on catalogs of any
    size. A track whose JAMS fails schema validation is not written and is
    listed in the summary (and in the folder's marker file) instead.

    Parameters
    ----------
    catalog : path or Catalog
        The catalog.
    out : path
        Export folder: created; an empty folder is filled; a previous JAMS
        export is replaced only with ``force``; anything else is refused.
    query : str, optional
        DuckDB SQL over the catalog views returning a ``track_id`` column:
        export only those tracks (default: every track a path holds now, ``current_tracks``).
    force : bool
        Replace a previous JAMS export in ``out``.
    workers : int
        Processes writing files in parallel (chunks of :data:`JAMS_CHUNK`
        tracks each); 1 writes in this process.
    progress : callable, optional
        Called as ``progress(done, total)`` after each chunk of tracks.

    Returns
    -------
    JamsExportSummary

    Raises
    ------
    ConfigError
        When ``out`` holds anything but a previous export, or a previous
        export without ``force``; on an SQL error in ``query``.
    """
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    started = time.perf_counter()
    cat = open_catalog(catalog)
    out = Path(out).expanduser().absolute()
    _check_jams_out(out, force=force)
    track_ids = _selected_tracks(cat, query)
    paths_of: dict[str, list[str]] = {}
    for r in _scan(cat, "files", "true", [], columns=("path", "path_bytes", "track_id")):
        paths_of.setdefault(r["track_id"], []).append(path_from_columns(r["path"], r.get("path_bytes")))

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    failed: dict[str, str] = {}
    written = 0
    try:
        chunks = [track_ids[i: i + JAMS_CHUNK] for i in range(0, len(track_ids), JAMS_CHUNK)]
        jobs = [(cat.url, str(tmp), chunk, {t: sorted(paths_of.get(t, [])) for t in chunk})
                for chunk in chunks]
        with contextlib.ExitStack() as stack:
            if workers > 1 and len(chunks) > 1:
                import concurrent.futures as cf
                import multiprocessing

                # spawn, not fork: this process holds DuckDB's and Arrow's thread pools, which fork does not copy.
                pool = stack.enter_context(cf.ProcessPoolExecutor(
                    max_workers=min(workers, len(chunks)), mp_context=multiprocessing.get_context("spawn")))
                stack.callback(pool.shutdown, cancel_futures=True)  # runs first on an error or Ctrl-C
                results = (f.result() for f in cf.as_completed([pool.submit(_export_chunk, *job) for job in jobs]))
            else:
                results = (_export_chunk(*job) for job in jobs)
            done = 0
            for n, chunk_written, chunk_failed in results:
                written += chunk_written
                failed.update(chunk_failed)
                done += n
                if progress is not None:
                    progress(done, len(track_ids))
        failed = dict(sorted(failed.items()))
        for track_id, message in failed.items():
            log.warning("JAMS of track %s does not validate: %s", track_id, message)
        marker = {
            "format": JAMS_EXPORT_FORMAT, "format_version": 1, "mirflow_version": __version__,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(), "catalog": cat.url,
            "query": query, "written": written, "failed": failed,
        }
        (tmp / JAMS_MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")
        _replace_dir(tmp, out, force=force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return JamsExportSummary(out=out, written=written, failed=failed, seconds=time.perf_counter() - started)


def _export_chunk(root: str, tmp: str, track_ids: list[str],
                  paths_of: dict[str, list[str]]) -> tuple[int, int, dict[str, str]]:
    """Write the JAMS files of some tracks into ``tmp``: ``(tracks done, files written, failures)``.

    A top-level function of plain arguments, so a process pool can run it.
    """
    import jams

    cat = Catalog(root)
    written = 0
    failed: dict[str, str] = {}
    for track_id in track_ids:
        rows = read_track_part(cat, "tracks", track_id, columns=JAMS_TRACK_COLUMNS)
        if rows is None or rows.num_rows == 0:  # removed while we worked
            continue
        track = rows.slice(0, 1).to_pylist()[0]
        beats_t = read_track_part(cat, "beats", track_id)
        beats = (list(zip(beats_t.column("time_s").to_pylist(), beats_t.column("beat_in_bar").to_pylist(),
                          strict=True)) if beats_t is not None else [])
        chords_t = read_track_part(cat, "chords", track_id)
        chords = ([(r["start_s"], r["end_s"], r["label"], r.get("confidence")) for r in chords_t.to_pylist()]
                  if chords_t is not None else [])
        jam = track_jams(track, beats=beats, chords=chords, paths=paths_of.get(track_id, []))
        try:
            jam.save(os.path.join(tmp, f"{track_id}.jams"), strict=True)  # validates, then writes
            written += 1
        except (jams.SchemaError, jams.ParameterError) as exc:
            failed[track_id] = _short(str(exc))
    return len(track_ids), written, failed


def _short(message: str, limit: int = 300) -> str:
    text = re.sub(r"\s+", " ", message).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"
