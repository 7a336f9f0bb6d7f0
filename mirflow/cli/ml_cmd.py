"""`mirflow classify train|predict|show` (mirflow.ml)."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

from mirflow.cli._args import CountBar

_FMT = argparse.RawDescriptionHelpFormatter  # main.py's formatter replaces it and adds the defaults

_TRAIN_EXAMPLES = """examples:
  mirflow classify train cat/ --labels labels.csv --target drums --model drums.clf.zip
  mirflow classify train cat/ --labels moods.parquet --target mood --features musicnn-msd,tempo_bpm --model mood.clf.zip
"""
_PREDICT_EXAMPLES = """examples:
  mirflow classify predict cat/ --model drums.clf.zip
  mirflow classify predict cat/ --model drums.clf.zip --scheduler tcp://10.0.0.5:8786
  mirflow query cat/ "select track_id, score from predictions where model = 'drums' and label = 'drums'"
"""


def _wrap(text: str) -> str:
    return textwrap.fill(" ".join(text.split()), width=100)


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``mirflow`` parser."""
    c = sub.add_parser("classify", help="train scikit-learn classifiers on catalog features; predict every track",
                       description=_wrap("Train a classifier on catalog features (embeddings and/or tracks columns) "
                                   "from a label file, and write its class probabilities for every track to the "
                                   "predictions table. See docs/classify.md."))
    csub = c.add_subparsers(dest="classify_command", required=True)

    t = csub.add_parser("train", formatter_class=_FMT,
                        help="train a classifier (model chosen by stratified cross-validation) and save it",
                        description=_wrap("Train a classifier of the TARGET column of a label file on catalog "
                                    "features; a linear and a gradient-boosting pipeline are compared by "
                                    "stratified k-fold cross-validation and the winner is refit on all tracks."),
                        epilog=_TRAIN_EXAMPLES)
    t.add_argument("catalog", help="catalog folder")
    t.add_argument("--labels", required=True,
                   help="CSV or Parquet file with a 'path' or 'track_id' column and the target column")
    t.add_argument("--target", required=True, help="column of the label file holding the classes")
    t.add_argument("--features", default=None,
                   help="comma-separated embedding models (musicnn-msd, descriptor, …) and/or numeric tracks "
                        "columns (mfcc_mean, onset_rate_per_s, …); default: musicnn-msd if the catalog has "
                        "it, else descriptor")
    t.add_argument("--model", required=True, help="file to save the classifier to (a zip bundle, e.g. drums.clf.zip)")
    t.add_argument("--name", default=None,
                   help="classifier name: the 'model' column and folder of its predictions "
                        "(default: the --model file name up to its first dot)")
    t.add_argument("--folds", type=int, default=5, help="most folds of the cross-validation (fewer when a class is small)")
    t.add_argument("--seed", type=int, default=0, help="seed of the fold shuffling and the boosting model (default 0)")
    t.add_argument("--report-json", default=None, help="also write the metadata and CV figures as JSON")
    t.set_defaults(func=cmd_train)

    p = csub.add_parser("predict", formatter_class=_FMT,
                        help="write class probabilities of every track to the predictions table (on Dask)",
                        description=_wrap("Predict every track of the catalog with a saved classifier, in parallel "
                                    "on Dask, into predictions/<name>/ (one row per track and class). Tracks "
                                    "already predicted by this model version are skipped."),
                        epilog=_PREDICT_EXAMPLES)
    p.add_argument("catalog", help="catalog folder")
    p.add_argument("--model", required=True, help="classifier file written by `mirflow classify train`")
    p.add_argument("--force", action="store_true", help="predict tracks that already have predictions of this version")
    p.add_argument("--workers", type=int, default=2, help="local worker processes (without --scheduler)")
    p.add_argument("--scheduler", default=None, help="address of an existing dask.distributed scheduler")
    p.add_argument("--batch-size", type=int, default=None,
                   help="tracks per task (default: about 4 tasks per worker, at most 512)")
    p.add_argument("--dashboard", action="store_true", help="serve the Dask dashboard of the local cluster")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)

    s = csub.add_parser("show", formatter_class=_FMT, help="print a saved classifier's metadata and CV figures")
    s.add_argument("model", help="classifier file")
    s.add_argument("--catalog", default=None, help="also check that this catalog provides its features")
    s.add_argument("--json", action="store_true", help="print the metadata record as JSON")
    s.set_defaults(func=cmd_show)


def _print_features(meta: dict) -> None:
    parts = []
    for f in meta["features"]:
        if f["kind"] == "embedding":
            parts.append(f"{f['name']} ({f['width']}-d, model_version {f['model_version']})")
        else:
            parts.append(f"{f['name']}" + (f" ({f['width']} values)" if f["width"] > 1 else ""))
    print(f"features:  {', '.join(parts)}")


def cmd_train(args: argparse.Namespace) -> int:
    from mirflow.ml import train
    from mirflow.ml.classifier import check_name

    out = Path(args.model)
    name = check_name(args.name or out.name.split(".", 1)[0])
    clf = train(args.catalog, labels=args.labels, target=args.target, features=args.features, name=name,
                random_state=args.seed, max_folds=args.folds)
    meta = clf.metadata
    tr = meta["training"]
    print(f"labels:    {tr['rows']} rows keyed by {tr['key']}: {tr['matched_tracks']} tracks matched, "
          f"{tr['unmatched']} unmatched, {tr['without_label']} without a label, "
          f"{tr['conflicting']} with conflicting labels")
    for example in tr["unmatched_examples"]:
        print(f"  unmatched: {example}")
    if tr["without_features"]:
        print(f"  {tr['without_features']} matched tracks lack a feature and were left out")
    _print_features(meta)
    print("classes:   " + ", ".join(f"{c} ({n})" for c, n in meta["class_counts"].items()))
    print(clf.report.to_text())
    path = clf.save(out)
    print(f"saved:     {path}  (classifier {clf.name!r}, version {clf.model_version}, "
          f"refit on {tr['tracks']} tracks)")
    if args.report_json:
        Path(args.report_json).write_text(json.dumps(meta, indent=2))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from mirflow.ml import load_classifier, predict

    clf = load_classifier(args.model)
    with CountBar("predicting", enabled=not (args.no_progress or getattr(args, "quiet", False))) as progress:
        summary = predict(args.catalog, model=clf, force=args.force, scheduler=args.scheduler,
                          workers=args.workers, batch_size=args.batch_size, dashboard=args.dashboard,
                          progress=progress,
                          on_dashboard=lambda link: print(f"Dask dashboard: {link}", file=sys.stderr, flush=True))
    print(f"classifier: {summary.model} (version {summary.model_version})")
    print(f"tracks:     {summary.tracks}   predicted: {summary.predicted}   "
          f"skipped (already predicted): {summary.skipped}   lacking features: {summary.missing_features}")
    for t in summary.missing_examples:
        print(f"  lacks a feature: {t}")
    print(f"wall time:  {summary.wall_seconds:.1f} s in {summary.batches} tasks")
    print(f"query:      mirflow query {args.catalog} \"select * from predictions where model = '{summary.model}'\"")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from mirflow.ml import load_classifier

    clf = load_classifier(args.model, catalog=args.catalog)
    meta = clf.metadata
    if args.json:
        print(json.dumps(meta, indent=2))
        return 0
    print(f"classifier: {clf.name} (version {clf.model_version}), target {meta['target']!r}")
    print(f"trained:    {meta['trained_at']} on {meta['training']['tracks']} tracks of {meta['training']['catalog']}")
    print(f"versions:   mirflow {meta['mirflow_version']}, scikit-learn {meta['sklearn_version']}, "
          f"schemas {', '.join(f'{k} v{v}' for k, v in meta['schema_versions'].items())}")
    _print_features(meta)
    print(clf.report.to_text())
    if args.catalog:
        print(f"compatible with {args.catalog}: yes")
    return 0
