"""`mirflow export recsys` and `mirflow duplicates` (mirflow.recsys)."""

from __future__ import annotations

import argparse
import json
import sys

from mirflow.cli._args import positive_int
from mirflow.errors import ConfigError


def _ber(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"a bit-error rate is between 0 and 1, got {value}")
    return value


def cmd_duplicates(args: argparse.Namespace) -> int:
    from mirflow.recsys.duplicates import find_duplicates

    groups = find_duplicates(args.catalog, threshold=args.threshold)
    if args.format == "csv":
        groups.to_csv(sys.stdout, index=False)
    elif args.format == "json":
        print(json.dumps(groups.to_dict(orient="records"), indent=2, default=float))
    elif groups.empty:
        print(f"no duplicates (bit-error rate threshold {args.threshold:g})")
    else:
        n_groups = groups["group_id"].nunique()
        print(f"{n_groups} recording(s) with copies, {len(groups) - n_groups} non-canonical track(s) "
              f"(threshold {args.threshold:g}; * = canonical: lossless, then bit rate, then duration)")
        for i, (_, members) in enumerate(groups.groupby("group_id", sort=False), start=1):
            print(f"group {i}")
            for row in members.itertuples():
                mark = "*" if row.is_canonical else " "
                ber = "  -  " if row.ber_to_canonical != row.ber_to_canonical else f"{row.ber_to_canonical:.3f}"
                print(f"  {mark} {ber}  {row.path}")
    return 0


def cmd_export_recsys(args: argparse.Namespace) -> int:
    from mirflow.recsys.export import export_recsys

    if args.scheduler and args.workers != 2:
        raise ConfigError("--workers applies to the local cluster only; drop it with --scheduler")
    summary = export_recsys(args.catalog, args.out, k=args.k, embedding=args.embedding,
                            threshold=args.threshold, block_size=args.block_size,
                            scheduler=args.scheduler, workers=args.workers)
    print(f"export:     {summary.out}")
    print(f"items:      {summary.items} tracks (items.parquet; columns described in columns.json)")
    print(f"neighbors:  {summary.neighbor_rows} rows, k = {summary.k}, embedding {summary.embedding} "
          f"({summary.dim}-d, cosine)")
    print(f"duplicates: {summary.duplicate_groups} recording(s) with copies, "
          f"{summary.duplicate_tracks} non-canonical track(s)")
    print(f"wall time:  {summary.seconds:.1f} s")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``mirflow`` parser."""
    from mirflow.recsys.duplicates import DEFAULT_THRESHOLD

    d = sub.add_parser("duplicates",
                       help="group tracks of the same recording (other format, bit rate, small trim) by fingerprint",
                       description="Group tracks of the same recording by Chromaprint fingerprint: best-offset "
                                   "bit-error rate below --threshold (docs/recsys.md).")
    d.add_argument("catalog", help="analyzed catalog folder (its pipeline must run the fingerprint extractor)")
    d.add_argument("--threshold", type=_ber, default=DEFAULT_THRESHOLD,
                   help="bit-error rate below which two tracks are the same recording (default %(default)s)")
    d.add_argument("--format", choices=["table", "csv", "json"], default="table",
                   help="output: readable groups, or CSV/JSON rows "
                        "(group_id, track_id, path, is_canonical, ber_to_canonical); default %(default)s")
    d.set_defaults(func=cmd_duplicates)

    e = sub.add_parser("export", help="export catalog data for other systems")
    esub = e.add_subparsers(dest="export_kind", required=True)
    from mirflow.cli import inspect_cmd

    inspect_cmd.add_export_commands(esub)
    r = esub.add_parser("recsys",
                        help="item features, duplicate groups and an all-tracks kNN table for a recommender",
                        description="Write items.parquet (standardized features, encoded key, an embedding, "
                                    "duplicate groups), neighbors/ (k nearest tracks by cosine, computed in "
                                    "blocks on Dask) and columns.json into --out.")
    r.add_argument("catalog", help="analyzed catalog folder")
    r.add_argument("--out", required=True,
                   help="export folder: created, or replaced if empty or a previous export (anything else is refused)")
    r.add_argument("--k", type=positive_int, default=50, help="neighbours per track (default %(default)s)")
    r.add_argument("--embedding", default=None,
                   help="embedding model to use (default: musicnn-msd if the catalog has it, else descriptor)")
    r.add_argument("--threshold", type=_ber, default=DEFAULT_THRESHOLD,
                   help="bit-error rate of the duplicate grouping (default %(default)s)")
    r.add_argument("--block-size", type=positive_int, default=None,
                   help="tracks per kNN block (default: what fits about 256 MB per task)")
    r.add_argument("--workers", type=positive_int, default=2, help="worker processes of the local Dask cluster (default %(default)s)")
    r.add_argument("--scheduler", default=None,
                   help="address of an existing dask.distributed scheduler (--out must be visible to its workers); "
                        "default: a local cluster")
    r.set_defaults(func=cmd_export_recsys)
