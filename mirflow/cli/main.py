"""``mirflow`` command line. Only this layer configures logging and prints."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from mirflow._version import __version__
from mirflow.catalog.layout import path_text
from mirflow.errors import ConfigError, MirflowError

log = logging.getLogger("mirflow.cli")


class _JsonFormatter(logging.Formatter):
    """One JSON object per log line, for batch jobs whose logs are collected and searched."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"), "level": record.levelname,
                 "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _setup_logging(verbose: int, *, quiet: bool = False, log_format: str = "text") -> None:
    level = logging.ERROR if quiet else logging.WARNING - 10 * min(verbose, 2)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if log_format == "json"
                         else logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
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
        if not self.enabled or total == 0:  # nothing to do: no empty bar
            return
        from tqdm import tqdm

        bar = self.bars.get(stage)
        if bar is None:
            label = {"hash": "hashing  ", "warm-up": "loading models", "analyze": "analyzing"}.get(stage, stage)
            unit = "worker" if stage == "warm-up" else "track"
            bar = self.bars[stage] = tqdm(total=total, desc=label, unit=unit, file=sys.stderr,
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
    progress = _Progress(enabled=not (args.no_progress or args.quiet))
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
            print(f"unreadable {path_text(r.path)}: {r.error}")
        for problem in plan.problems:
            print(f"unreadable input {path_text(problem.path)}: {problem.message}")
        print(f"would analyze {len(plan.to_analyze)}, skip {len(plan.skipped)}, "
              f"unreadable {len(plan.unreadable) + len(plan.problems)}"
              + (f", defer {len(plan.deferred)}" if plan.deferred else ""))
        return 0
    _print_summary(summary)
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary.to_dict(), indent=2, default=str))
    return analyze_exit_code(summary, strict=args.strict)


#: Exit codes of `mirflow analyze` (also in its --help and the README).
EXIT_OK, EXIT_TRACKS_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def analyze_exit_code(summary, *, strict: bool) -> int:
    """1 when every track failed (or, with ``strict``, any did); 0 otherwise."""
    if summary.failed and (strict or summary.analyzed + summary.skipped == 0):
        return EXIT_TRACKS_FAILED
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from mirflow.doctor import run_checks

    ok = True
    for check in run_checks():
        mark = "ok " if check.ok else "-- "
        ok &= check.ok or not check.required
        print(f"{mark} {check.name:<22} {check.detail}")
    return 0 if ok else 1


def cmd_query(args: argparse.Namespace) -> int:
    import duckdb

    from mirflow.query import check_read_only, connect

    check_read_only(args.sql)
    con = connect(args.catalog)
    try:
        rel = con.sql(args.sql)
        df = rel.df() if rel is not None else None
    except duckdb.Error as exc:
        # One line: DuckDB's message says what and where; its traceback says nothing more.
        raise ConfigError(f"SQL error: {' '.join(str(exc).split())}") from None
    if rel is None:
        return 0
    if args.output:
        out = Path(args.output)
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
            print(df.to_string(max_rows=args.max_rows))
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
        # windowed pipelines (decode.window_s) may list only extractors that merge windows
        try:
            windows = "merges windows" if cls().merges_windows() else "whole tracks only"
        except MirflowError:  # a plugin without default parameters: ask an instance
            windows = "windows: depends on its parameters"
        print(f"{name:<12} v{cls.version}  columns: {', '.join(cls.columns) or '-'}"
              f"  tables: {', '.join(cls.tables) or '-'}  ({windows})")
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

    from mirflow.evaluate import error_kinds, evaluate, overall_table, write_results

    per_track, overall = evaluate(args.catalog, args.truth, skip_missing=args.skip_missing)
    table = overall_table(overall)
    print(f"truth: {overall['n_truth']} tracks   matched: {overall['n_matched']}   "
          f"failed: {overall['n_failed']}   not in catalog: {overall['n_missing']}")
    with pd.option_context("display.width", 200, "display.max_columns", 10):
        print(table.drop(columns="metric").to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    for family, kinds in error_kinds(per_track).items():
        if kinds:
            print(f"wrong {'tempi' if family == 'tempo' else 'keys'} by kind: "
                  + ", ".join(f"{kind} {n}" for kind, n in kinds.items()))
    out = Path(args.out) if args.out else Path(args.catalog) / "evaluation"
    per_path, overall_path = write_results(per_track, overall, out,
                                           metadata={"catalog": str(args.catalog), "truth": str(args.truth)})
    print(f"wrote {per_path} and {overall_path}")
    return 0


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Each option's default after its help (unless the help names it), descriptions and examples as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or default is None or default is False or default is argparse.SUPPRESS
                or not action.option_strings and action.nargs not in ("?", "*")):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        return f"{text} (default: {shown})"


def _command(sub: argparse._SubParsersAction, name: str, *, help: str, description: str,  # noqa: A002
             examples: str) -> argparse.ArgumentParser:
    import textwrap

    paragraphs = [textwrap.fill(" ".join(par.split()), width=100) for par in description.split("\n\n")]
    return sub.add_parser(name, help=help, description="\n\n".join(paragraphs),
                          epilog="examples:\n" + "\n".join("  " + ln for ln in examples.strip().splitlines()))


#: Examples of the commands that other modules register, shown at the end of their --help.
EXAMPLES: dict[tuple[str, ...], str] = {
    ("compact",): "mirflow compact cat/\nmirflow compact cat/ --table tracks --wait",
    ("show",): "mirflow show cat/ 3f2a9c\nmirflow show cat/ ~/music/song.flac --json",
    ("info",): "mirflow info cat/\nmirflow info cat/ --json",
    ("report",): "mirflow report cat/\nmirflow report cat/ --out catalog-report.html --top 30",
    ("classify",): "mirflow classify train cat/ --labels labels.csv --target genre --model genre.clf.zip\n"
                   "mirflow classify predict cat/ --model genre.clf.zip\nmirflow classify show genre.clf.zip",
    ("classify", "train"): "mirflow classify train cat/ --labels labels.csv --target genre --model genre.clf.zip\n"
                           "mirflow classify train cat/ --labels moods.parquet --target mood "
                           "--features musicnn-msd,onset_rate_per_s --model mood.clf.zip",
    ("classify", "predict"): "mirflow classify predict cat/ --model genre.clf.zip\n"
                             "mirflow classify predict cat/ --model genre.clf.zip --scheduler tcp://10.0.0.5:8786",
    ("classify", "show"): "mirflow classify show genre.clf.zip",
    ("index",): "mirflow index build cat/\nmirflow index build cat/ --embedding descriptor --kind ivfpq\n"
                "mirflow index update cat/\nmirflow index status cat/",
    ("index", "build"): "mirflow index build cat/\nmirflow index build cat/ --embedding descriptor --kind exact",
    ("index", "update"): "mirflow index update cat/ --embedding musicnn-msd",
    ("index", "status"): "mirflow index status cat/",
    ("similar",): "mirflow similar cat/ --track 3f2a9c0d5e6f7a8b9c0d1e2f3a4b5c6d -k 20\n"
                  "mirflow similar cat/ --path ~/music/song.flac --mix\n"
                  "mirflow similar cat/ --audio new_demo.wav --where \"tempo_bpm between 120 and 128\" --format json",
    ("duplicates",): "mirflow duplicates cat/\nmirflow duplicates cat/ --format csv > duplicates.csv",
    ("export",): "mirflow export jams cat/ --out jams/\n"
                 "mirflow export csv cat/ --query \"select path, tempo_bpm, key from tracks\" --out tracks.csv\n"
                 "mirflow export recsys cat/ --out recsys/ --k 50",
    ("export", "jams"): "mirflow export jams cat/ --out jams/\n"
                        "mirflow export jams cat/ --out jams/ --query \"select track_id from tracks where meter = 3\"",
    ("export", "csv"): "mirflow export csv cat/ --query \"select path, tempo_bpm, key from tracks\" --out tracks.csv",
    ("export", "parquet"): "mirflow export parquet cat/ --query \"select * from beats\" --out beats.parquet",
    ("export", "recsys"): "mirflow export recsys cat/ --out recsys/\n"
                          "mirflow export recsys cat/ --out recsys/ --embedding descriptor --k 100",
    ("serve",): "mirflow serve cat/\nmirflow serve cat/ --port 8080 --max-upload-mb 20\n"
                "curl 'http://127.0.0.1:8000/tracks?camelot=8A&tempo_min=120&tempo_max=130'",
}


def _finish(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> None:
    """Give every (sub)command the help formatter, a description, examples and the logging options.

    The logging options are accepted after the command too (``mirflow analyze
    … -v``), where people type them; they default to SUPPRESS there so that
    a value given before the command is not overwritten.
    """
    parser.formatter_class = _HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, child in action.choices.items():
                path = (*prefix, name)
                if not child.description and helps.get(name):
                    child.description = helps[name][0].upper() + helps[name][1:] + "."
                if not child.epilog and path in EXAMPLES:
                    child.epilog = "examples:\n" + "\n".join("  " + ln for ln in EXAMPLES[path].splitlines())
                if "-q" not in child._option_string_actions:
                    _logging_options(child, default=argparse.SUPPRESS)
                _finish(child, path)


def _logging_options(parser: argparse.ArgumentParser, *, default) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("-v", "--verbose", action="count", default=default if default is argparse.SUPPRESS else 0,
                       help="more log output; -vv also shows Dask's")
    group.add_argument("-q", "--quiet", action="store_true", default=default if default is argparse.SUPPRESS
                       else False, help="errors only: no warnings, no progress bars")
    group.add_argument("--log-format", choices=("text", "json"), default=default if default is argparse.SUPPRESS
                       else "text", help="log lines on stderr as text or as one JSON object per line (batch jobs)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mirflow", formatter_class=_HelpFormatter,
        description="Analyze audio catalogs into validated Parquet tables on Dask, query them, and use them "
                    "(classifiers, similarity search, recommender exports, an HTTP API).",
        epilog="examples:\n  mirflow analyze ~/music --catalog cat/\n"
               "  mirflow query cat/ \"select key, count(*) from tracks group by key\"\n"
               "  mirflow doctor\n\nRun `mirflow COMMAND --help` for each command's options and examples.")
    parser.add_argument("--version", action="version", version=f"mirflow {__version__}")
    _logging_options(parser, default=None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    a = _command(sub, "analyze", help="analyze audio files into a Parquet catalog",
                 description="Decode every track once, run the pipeline's extractors on Dask workers and write "
                             "the catalog's Parquet tables. Incremental: tracks already analyzed by the same "
                             "pipeline are skipped; a killed run resumes where it stopped.\n\n"
                             "exit codes: 0 done (some paths may have failed: see the errors table), "
                             "1 every input path failed (or any did, with --strict), 2 usage or configuration "
                             "error (nothing started), 130 interrupted (run the same command to resume)",
                 examples="""mirflow analyze ~/music --catalog cat/
mirflow analyze ~/music /data/*.flac tracks.csv --catalog cat/ --workers 8
mirflow analyze ~/music --catalog cat/ --dry-run
mirflow analyze ~/music --catalog cat/ --scheduler tcp://10.0.0.5:8786
mirflow analyze s3://my-bucket/music/ --catalog s3://my-bucket/catalog
mirflow analyze ~/music --catalog cat/ --pipeline permissive --log-format json -q""")
    a.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="files, folders (walked), globs, manifests (.txt/.m3u/.csv/.parquet with a path column), "
                        "or object-storage URLs (s3://bucket/prefix/, s3://bucket/**/*.flac)")
    a.add_argument("--catalog", required=True,
                   help="catalog folder, or object-storage URL such as s3://bucket/prefix (created if missing; "
                        "credentials and endpoint from the usual AWS_* variables, see docs/scale-out.md)")
    a.add_argument("--pipeline", default="default", help="shipped pipeline name (see `mirflow pipelines`) or YAML file")
    a.add_argument("--workers", type=int, default=2, help="local worker processes")
    a.add_argument("--threads-per-worker", type=int, default=1, help="threads per local worker process")
    a.add_argument("--memory-limit", default="auto",
                   help="per local worker, e.g. 4GiB; auto shares 90%% of this machine's memory among the workers")
    a.add_argument("--scheduler", help="address of an existing dask.distributed scheduler (default: start a local cluster)")
    a.add_argument("--worker-lifetime", default="1 hour", help="recycle workers after this long ('' = never)")
    a.add_argument("--force", action="store_true", help="re-analyze tracks already in the catalog")
    a.add_argument("--limit", type=int, help="analyze at most N tracks now; the rest are deferred to a later run")
    a.add_argument("--dry-run", action="store_true", help="list what would be analyzed and skipped; write nothing")
    a.add_argument("--no-progress", action="store_true", help="no progress bars")
    a.add_argument("--no-dashboard", action="store_true", help="do not start the Dask dashboard")
    a.add_argument("--dashboard-address", default="127.0.0.1:0",
                   help="where the local cluster's Dask dashboard listens (this machine only unless you say "
                        "otherwise, e.g. ':8787' for every interface)")
    a.add_argument("--summary-json", metavar="FILE", help="also write the run summary as JSON")
    a.add_argument("--strict", action="store_true",
                   help="exit 1 when any input path failed (default: only when every one did)")
    a.set_defaults(func=cmd_analyze)

    d = _command(sub, "doctor", help="which decoders, backends, models and pipelines work here",
                 description="Check this machine: decoders (libsndfile, ffmpeg), backend packages, musicnn's "
                             "weights, the General MIDI soundfont, and whether each shipped pipeline can run.",
                 examples="mirflow doctor")
    d.set_defaults(func=cmd_doctor)

    q = _command(sub, "query", help="SQL (DuckDB) over a catalog's tables",
                 description="Run one SQL statement over the catalog: every table is a view (tracks, files, "
                             "errors, beats, chords, embeddings, embeddings_<model>, tags, …; see docs/tables.md). "
                             "current_tracks is tracks less the old analyses of files rewritten since, each track "
                             "at the path it is at now: count and list from it.",
                 examples="""mirflow query cat/ "select key, count(*) n from current_tracks group by key order by n desc"
mirflow query cat/ "select stage, count(*) from errors group by stage"
mirflow query cat/ "select r, count(*) from (select unnest(empty_reasons) r from tracks) group by r"
mirflow query cat/ "select * from tracks where tempo_bpm between 120 and 130" --output fast.csv""")
    q.add_argument("catalog", help="catalog folder or s3:// URL")
    q.add_argument("sql", help="one SQL statement (DuckDB dialect)")
    q.add_argument("--output", metavar="FILE", help="write the result to a .csv or .parquet file instead of printing")
    q.add_argument("--max-rows", type=int, default=50, help="rows printed at most")
    q.set_defaults(func=cmd_query)

    s = _command(sub, "synth", help="generate labelled test audio with exact ground truth",
                 description="Render a corpus of generated music (numpy synthesis or FluidSynth with a General "
                             "MIDI soundfont) with its exact ground truth (truth.jsonl and JAMS files).",
                 examples="""mirflow synth corpus/ -n 50 --formats wav mp3
mirflow synth corpus/ -n 20 --backend numpy --seed 3""")
    s.add_argument("out", help="output folder")
    s.add_argument("-n", type=int, default=24, help="number of tracks")
    s.add_argument("--seed", type=int, default=0, help="random seed (same seed, same corpus)")
    s.add_argument("--formats", nargs="+", default=["wav"], help="audio formats, spread over the tracks")
    s.add_argument("--backend", default="auto", choices=["auto", "numpy", "fluidsynth"],
                   help="renderer; auto uses FluidSynth when it and a soundfont are installed")
    s.set_defaults(func=cmd_synth)

    m = _command(sub, "demo", help="generate a demo catalog and analyze it",
                 description="Generate a small labelled corpus, analyze it, print rows and the accuracy against "
                             "the generated ground truth.",
                 examples="mirflow demo --plots\nmirflow demo --dir /tmp/demo -n 24 --pipeline permissive")
    m.add_argument("--dir", default="demo", help="folder for the corpus and the catalog")
    m.add_argument("-n", type=int, default=12, help="number of tracks")
    m.add_argument("--workers", type=int, default=2, help="local worker processes")
    m.add_argument("--pipeline", default="default", help="pipeline name or YAML file")
    m.add_argument("--plots", action="store_true", help="also draw tempo/key/embedding plots")
    m.set_defaults(func=cmd_demo)

    pl = _command(sub, "plot", help="tempo, key and loudness distributions and an embedding map (PNG)",
                  description="Draw the catalog's distributions as PNG files.",
                  examples="mirflow plot cat/\nmirflow plot cat/ --out plots/")
    pl.add_argument("catalog", help="catalog folder")
    pl.add_argument("--out", help="folder for the PNG files (default: CATALOG/plots)")
    pl.set_defaults(func=cmd_plot)

    mo = _command(sub, "models", help="install or list model weights (fetched from PyPI packages only)",
                  description="musicnn's weights come from the pinned musicnn wheel on PyPI, checksum-verified.",
                  examples="mirflow models install musicnn\nmirflow models list")
    mo.add_argument("action", choices=["install", "list"], help="install the weights, or show what is installed")
    mo.add_argument("model", nargs="?", default="musicnn", choices=["musicnn"], help="which model")
    mo.add_argument("--force", action="store_true", help="fetch again even when intact weights are installed")
    mo.set_defaults(func=cmd_models)

    ev = _command(sub, "evaluate", help="score a catalog against ground truth (JAMS or JSONL/CSV) with mir_eval",
                  description="mir_eval's metrics per track and overall: key (MIREX weighted), tempo "
                              "Accuracy1/2, beat F-measure, chord WCSR; written as Parquet.",
                  examples="mirflow evaluate cat/ --truth corpus/truth.jsonl\nmirflow evaluate cat/ --truth jams/ --skip-missing")
    ev.add_argument("catalog", help="catalog folder")
    ev.add_argument("--truth", required=True, help="JSONL/CSV file, JAMS file, or folder of JAMS files")
    ev.add_argument("--out", help="folder for per_track.parquet and overall.parquet (default: CATALOG/evaluation)")
    ev.add_argument("--skip-missing", action="store_true",
                    help="leave out truth tracks absent from the catalog (default: they count as wrong)")
    ev.set_defaults(func=cmd_evaluate)

    _command(sub, "pipelines", help="list shipped pipelines",
             description="Shipped pipelines with their fingerprints and extractors (files in pipelines/).",
             examples="mirflow pipelines").set_defaults(func=cmd_pipelines)
    _command(sub, "extractors", help="list extractors and their parameters",
             description="Every extractor with its version, columns, tables and parameters "
                         "(default, allowed range or choices, meaning).",
             examples="mirflow extractors").set_defaults(func=cmd_extractors)

    # The downstream layer's commands live beside their subpackages, one
    # module each, so that each registers its own subcommands.
    from mirflow.cli import (
        compact_cmd,
        index_cmd,
        inspect_cmd,
        ml_cmd,
        recsys_cmd,
        report_cmd,
        serve_cmd,
    )

    for module in (inspect_cmd, report_cmd, compact_cmd, ml_cmd, index_cmd, recsys_cmd, serve_cmd):
        module.register(sub)
    _finish(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose or 0, quiet=args.quiet, log_format=args.log_format)
    try:
        return int(args.func(args) or 0)
    except MirflowError as exc:
        print(f"mirflow: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("mirflow: interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
