"""`mirflow report` (mirflow.query.report)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mirflow.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``mirflow`` parser."""
    r = sub.add_parser(
        "report", help="one self-contained HTML report of a catalog (plots, errors, empty values)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Write one HTML file about CATALOG that opens offline in any browser: size, audio hours, "
                    "errors by stage, tempo (with half/double hints), keys on a Camelot wheel, mode, loudness, "
                    "duration, chord vocabulary, tags, embedding maps (hover a point for its file), analysis "
                    "time and how many values are empty and why. See docs/report.md.",
    )
    r.add_argument("catalog", help="catalog folder (read only, except for the default --out inside it)")
    r.add_argument("--out", help="HTML file to write (default: CATALOG/report.html)")
    r.add_argument("--max-points", type=int, default=5000,
                   help="most tracks drawn per embedding map; larger catalogs show a seeded random sample")
    r.add_argument("--top", type=int, default=20, help="chord labels and tags shown in their bar charts")
    r.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from mirflow.query.report import build_report

    if args.max_points < 3:
        raise ConfigError(f"--max-points must be at least 3, got {args.max_points}")
    if args.top < 1:
        raise ConfigError(f"--top must be positive, got {args.top}")
    out = Path(args.out) if args.out else None
    if out is not None and out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file name such as {out / 'report.html'}")
    report = build_report(args.catalog, out=out, max_points=args.max_points, top_n=args.top)
    size_kib = report.path.stat().st_size / 1024
    print(f"wrote {report.path} ({size_kib:.0f} KiB, {len(report.figures)} plots)")
    if report.empty_sections:
        print(f"sections without data (each says so in the report): {', '.join(report.empty_sections)}")
    return 0
