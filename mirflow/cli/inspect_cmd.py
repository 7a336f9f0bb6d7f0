"""`mirflow show`, `mirflow info` and `mirflow export jams|csv|parquet` (mirflow.query.inspect, mirflow.query.export).

``register(sub)`` adds ``show`` and ``info``. The ``export`` command belongs to
:mod:`mirflow.cli.recsys_cmd` (``export recsys``); ``add_export_commands``
adds ``jams``, ``csv`` and ``parquet`` to its sub-command parsers, so that one
``export`` command holds every kind of export.
"""

from __future__ import annotations

import argparse
import json
import shutil

from mirflow.cli._args import CountBar, positive_int


def _width(requested: int | None) -> int:
    if requested:
        return requested
    # The terminal's width, kept readable: at least 80 columns, at most 120.
    return max(80, min(120, shutil.get_terminal_size((100, 24)).columns))


def cmd_show(args: argparse.Namespace) -> int:
    from mirflow.query.inspect import format_track_report, track_report

    report = track_report(args.catalog, track=args.track, top_tags=args.tags)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_track_report(report, width=_width(args.width), max_timeline_lines=args.timeline_lines))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from mirflow.query.inspect import catalog_info, format_catalog_info

    info = catalog_info(args.catalog)
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
    else:
        print(format_catalog_info(info, last_runs=args.runs))
    return 0


def cmd_export_jams(args: argparse.Namespace) -> int:
    from mirflow.query.export import export_jams

    with CountBar("jams", enabled=not (args.no_progress or getattr(args, "quiet", False))) as progress:
        summary = export_jams(args.catalog, out=args.out, query=args.query, force=args.force,
                              workers=args.workers, progress=progress)
    print(f"export:    {summary.out}")
    print(f"written:   {summary.written} JAMS files (each validated against the JAMS schema)")
    print(f"failed:    {len(summary.failed)} tracks whose JAMS did not validate (not written)")
    for track_id, message in list(summary.failed.items())[:10]:
        print(f"  {track_id}: {message}")
    if len(summary.failed) > 10:
        print(f"  … {len(summary.failed) - 10} more: see the 'failed' list in {summary.out}/.mirflow-jams-export.json")
    print(f"wall time: {summary.seconds:.1f} s")
    return 1 if summary.failed else 0


def cmd_export_table(args: argparse.Namespace) -> int:
    from mirflow.query.export import export_query

    summary = export_query(args.catalog, out=args.out, query=args.query, format=args.export_kind, force=args.force)
    print(f"wrote {summary.rows} rows × {len(summary.columns)} columns to {summary.out} "
          f"({summary.format}, {summary.seconds:.1f} s)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``show`` and ``info`` to the ``mirflow`` parser."""
    s = sub.add_parser("show", help="everything the catalog knows about one track, with a beat/chord timeline",
                       description="Print one track: its tracks row grouped by extractor, the paths that are "
                                   "this track, its errors, embeddings, top tags, predictions and a text "
                                   "timeline of bars, beats and chords. See docs/export.md.")
    s.add_argument("catalog", help="catalog folder")
    s.add_argument("track", help="track id, a prefix of one (at least 6 hex digits), or the path of an analyzed "
                                 "file (absolute or relative)")
    s.add_argument("--json", action="store_true", help="print the whole record as JSON instead")
    s.add_argument("--width", type=positive_int, default=None,
                   help="line width (default: the terminal's, between 80 and 120)")
    s.add_argument("--timeline-lines", type=positive_int, default=20,
                   help="most lines of the timeline; longer tracks put several bars on a line (default %(default)s)")
    s.add_argument("--tags", type=positive_int, default=5, help="tags shown per tagging model (default %(default)s)")
    s.set_defaults(func=cmd_show)

    i = sub.add_parser("info", help="tables with row counts and schema versions, partitions, runs, size on disk",
                       description="Describe a catalog: every table with its rows, part files, size and schema "
                                   "version (the catalog's manifest against this mirflow's schemas/), embedding "
                                   "and tag partitions, the pipeline, the last runs and the size on disk.")
    i.add_argument("catalog", help="catalog folder")
    i.add_argument("--runs", type=int, default=5, help="how many of the latest runs to list (default %(default)s)")
    i.add_argument("--json", action="store_true", help="print the whole record as JSON instead")
    i.set_defaults(func=cmd_info)


def add_export_commands(export_sub: argparse._SubParsersAction) -> None:
    """Add ``jams``, ``csv`` and ``parquet`` to the sub-commands of ``mirflow export``.

    Parameters
    ----------
    export_sub : argparse._SubParsersAction
        What ``add_subparsers`` returned on the ``export`` parser.
    """
    from mirflow.query.export import DEFAULT_QUERY

    j = export_sub.add_parser("jams",        help="one JAMS file per track: tempo, beats, chords, key (validated with jams)",
                              description="Write <track_id>.jams per track into --out with the tempo, beat "
                                          "(position in bar), chord (Harte) and key_mode annotations, each "
                                          "file validated against the JAMS schema. See docs/export.md.")
    j.add_argument("catalog", help="catalog folder")
    j.add_argument("--out", required=True,
                   help="export folder: created, or filled if empty; a previous JAMS export is replaced only "
                        "with --force; any other folder is refused")
    j.add_argument("--query", default=None,
                   help="DuckDB SQL returning a track_id column: export only those tracks (default: every track)")
    j.add_argument("--force", action="store_true", help="replace a previous JAMS export in --out")
    j.add_argument("--workers", type=positive_int, default=1,
                   help="processes writing JAMS files in parallel; 1 writes in this process (default %(default)s)")
    j.add_argument("--no-progress", action="store_true", help="no progress bar")
    j.set_defaults(func=cmd_export_jams)

    for kind, what in (("csv", "a CSV file (with a header row)"), ("parquet", "a Parquet file (zstd)")):
        t = export_sub.add_parser(kind,            help=f"the result of an SQL query over the catalog as {what}",
                                  description=f"Run DuckDB SQL over the catalog's views (tracks, beats, chords, "
                                              f"embeddings, embeddings_<model>, …, as in mirflow query) and "
                                              f"stream the result into {what}.")
        t.add_argument("catalog", help="catalog folder")
        t.add_argument("--query", default=DEFAULT_QUERY, help="one SQL SELECT (default: %(default)r)")
        t.add_argument("--out", required=True, help=f"the .{kind} file to write (its folder is created)")
        t.add_argument("--force", action="store_true", help="replace --out if it exists")
        t.set_defaults(func=cmd_export_table, export_kind=kind)
