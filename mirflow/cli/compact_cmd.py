"""`mirflow compact` (mirflow.catalog.compact)."""

from __future__ import annotations

import argparse

from mirflow.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``mirflow`` parser."""
    c = sub.add_parser(
        "compact", help="fold a catalog's small per-track parts into a few large sorted Parquet files",
        description="Fold the committed per-track (and per-path) parts of CATALOG into a new generation of large "
                    "Parquet files per table (sorted, zstd) and delete the folded parts, so that planning a run "
                    "and querying open a few files instead of millions. Readers see every row exactly once at "
                    "every moment, also while `mirflow analyze` writes into the catalog. See docs/scale.md.",
    )
    c.add_argument("catalog", help="catalog folder")
    c.add_argument("--table", action="append", dest="tables", metavar="TABLE",
                   help="compact only this table (repeatable; default: every table)")
    c.add_argument("--wait", action="store_true",
                   help="wait for a running compaction of the same catalog instead of exiting with an error")
    c.add_argument("--min-parts", type=int, default=0,
                   help="leave a table alone when it has at most this many loose parts")
    c.set_defaults(func=cmd_compact)


def cmd_compact(args: argparse.Namespace) -> int:
    from mirflow.catalog.compact import compact
    from mirflow.catalog.schema import load_schemas

    if args.min_parts < 0:
        raise ConfigError(f"--min-parts must be non-negative, got {args.min_parts}")
    unknown = sorted(set(args.tables or []) - set(load_schemas()))
    if unknown:
        raise ConfigError(f"unknown table(s): {', '.join(unknown)}")
    summary = compact(args.catalog, tables=args.tables, wait=args.wait, min_loose_parts=args.min_parts)
    for t in summary.tables:
        if t.generation is None:
            print(f"{t.table}: nothing to compact")
            continue
        print(f"{t.table}: {t.folded_parts} parts folded into {t.files} file(s), {t.rows} rows, "
              f"{t.bytes / 2**20:.1f} MiB; {t.deleted_parts} parts deleted"
              + (f", {t.kept_parts} kept (rewritten meanwhile)" if t.kept_parts else ""))
    print(f"compacted in {summary.seconds:.1f} s")
    return 0
