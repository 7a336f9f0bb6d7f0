"""`mirflow index build|update|status` and `mirflow similar` (mirflow.index)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from mirflow.cli._args import positive_int
from mirflow.errors import CatalogError, ConfigError, MirflowError

DEFAULT_EMBEDDING = "musicnn-msd"  # mirflow.index.DEFAULT_EMBEDDING (not imported: keeps `mirflow --help` light)
KINDS = ("hnsw", "ivfpq", "exact")


def _set_threads(threads: int | None) -> None:
    if threads:
        import faiss

        faiss.omp_set_num_threads(threads)


def cmd_index_build(args: argparse.Namespace) -> int:
    from mirflow.index import build_index

    _set_threads(args.threads)
    info = build_index(args.catalog, embedding=args.embedding, kind=args.kind)
    _print_info(info)
    return 0


def cmd_index_update(args: argparse.Namespace) -> int:
    from mirflow.index import update_index

    _set_threads(args.threads)
    info = update_index(args.catalog, embedding=args.embedding)
    _print_info(info)
    return 0


def _print_info(info) -> None:
    print(info.message)
    p = info.params
    if "efSearch" in p:
        print(f"search: efSearch={p['efSearch']}  recall@10 {p['recall_at_10']:.3f} "
              f"(calibrated on {p['calibration_queries']} queries)")
    elif "nprobe" in p:
        print(f"search: nlist={p['nlist']} nprobe={p['nprobe']} k_factor={p['k_factor']}  "
              f"recall@10 {p['recall_at_10']:.3f} (calibrated on {p['calibration_queries']} queries)")
    if p.get("target_reached") is False:
        print(f"warning: recall@10 stays below {p['calibration_target']} at the largest search setting "
              "tried: these vectors have little neighbourhood structure; consider --kind exact")
    print(f"index: {info.path}")


def cmd_index_status(args: argparse.Namespace) -> int:
    from mirflow.index import index_status

    rows = index_status(args.catalog)
    if args.embedding:
        rows = [r for r in rows if r["embedding"] == args.embedding]
        if not rows:
            raise ConfigError(f"catalog {args.catalog} has no embeddings of model {args.embedding!r}")
    if not rows:
        print("the catalog has no embeddings")
        return 0
    stale = False
    for r in rows:
        if not r["indexed"]:
            print(f"{r['embedding']:<16} not indexed (mirflow index build {args.catalog} --embedding {r['embedding']})")
            continue
        stale |= bool(r["stale"])
        state = "STALE" if r["stale"] else "fresh"
        print(f"{r['embedding']:<16} {state}  {r['kind']} ({r['index_type']}), {r['count']} × {r['dimension']}-d, "
              f"built {r['built_at']}, updated {r['updated_at']}")
        if r["stale"] or r.get("fallback"):
            print(f"{'':<16} {r['message'] if r['stale'] else r['fallback']}")
    return 1 if stale else 0


def _track_of_path(catalog: str, path: str) -> str:
    from mirflow.query import connect

    con = connect(catalog)
    candidates = list(dict.fromkeys([path, os.path.abspath(path), os.path.realpath(path)]))
    for p in candidates:
        # files first: it names the track a path holds now (a rewritten file's old track keeps
        # the path in tracks); current_tracks for catalogs whose files table lacks the path.
        row = (con.execute("SELECT track_id FROM files WHERE path = ?", [p]).fetchone()
               or con.execute("SELECT track_id FROM current_tracks WHERE path = ? LIMIT 1", [p]).fetchone())
        if row is not None:
            return row[0]
    raise CatalogError(f"{path} is not in catalog {catalog} (neither files.path nor tracks.path); "
                       "analyze it first, or use --audio to query with a file outside the catalog")


def _analyze_audio(catalog: str, path: str, embedding: str) -> dict:
    """Analyze a new file with the catalog's pipeline: its vector, tempo, key and track id."""
    import mirflow
    from mirflow.catalog.layout import Catalog

    analyze_file = getattr(mirflow, "analyze_file", None)
    if analyze_file is None:
        raise MirflowError("--audio needs mirflow.analyze_file, which this mirflow version lacks")
    if not os.path.isfile(path):
        raise ConfigError(f"--audio: no such file: {path}")
    manifest = Catalog(catalog).read_manifest()
    if manifest is None:
        raise CatalogError(f"{catalog} is not a mirflow catalog (no manifest.json)")
    frames = analyze_file(path, pipeline=manifest.get("pipeline", "default"))
    tracks, embeddings = frames.get("tracks"), frames.get("embeddings")
    if tracks is None or tracks.empty:
        errors = frames.get("errors")
        detail = f": {errors.iloc[0]['message']}" if errors is not None and not errors.empty else ""
        raise MirflowError(f"--audio: analyzing {path} failed{detail}")
    rows = embeddings[embeddings["model"] == embedding] if embeddings is not None else []
    if len(rows) == 0:
        raise ConfigError(f"--audio: pipeline {manifest.get('pipeline')!r} gave no {embedding} embedding for {path}")
    track = tracks.iloc[0]
    tempo = track.get("tempo_bpm")
    key = track.get("key")
    return {"track_id": track["track_id"], "vector": rows.iloc[0]["embedding"],
            "tempo_bpm": None if tempo is None or tempo != tempo else float(tempo),
            "key": None if key is None or key != key else str(key)}


def cmd_similar(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    from mirflow.index import load_index, similar
    from mirflow.index.store import IndexNotFoundError, check_embedding, open_catalog

    given = [name for name in ("track", "path", "audio") if getattr(args, name)]
    if len(given) != 1:
        raise ConfigError("give exactly one of --track, --path or --audio"
                          + (f" (got --{' and --'.join(given)})" if given else ""))
    cat = open_catalog(args.catalog)
    check_embedding(cat, args.embedding)
    try:
        # A stale index is logged as a warning by load_index (with the command that fixes it).
        index = load_index(args.catalog, embedding=args.embedding)
    except IndexNotFoundError:
        index = None  # similar() searches exactly over the catalog's vectors and logs so
    query: dict = {}
    if args.track:
        query["track_id"] = args.track
    elif args.path:
        query["track_id"] = _track_of_path(args.catalog, args.path)
    else:
        analyzed = _analyze_audio(args.catalog, args.audio, args.embedding)
        in_catalog = cat.rows_of("embeddings", analyzed["track_id"], partition=args.embedding).num_rows > 0
        if in_catalog or (index is not None and analyzed["track_id"] in index):
            # The same bytes are already in the catalog: query by that track, so it is left out.
            query["track_id"] = analyzed["track_id"]
        else:
            query.update(vector=np.asarray(analyzed["vector"], dtype=np.float32),
                         query_tempo_bpm=analyzed["tempo_bpm"], query_key=analyzed["key"])
    try:
        table = similar(args.catalog, k=args.k, where=args.where, mix=args.mix, embedding=args.embedding,
                        index=index, **query)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if args.format == "json":
        # Through pandas' JSON writer (NaN -> null), re-dumped without its escaped slashes.
        print(json.dumps(json.loads(table.to_json(orient="records")), indent=2, ensure_ascii=False))
    elif args.format == "csv":
        table.to_csv(sys.stdout, index=False)
    else:
        if table.empty:
            print("no neighbours (nothing passes the filters)")
            return 0
        shown = table.copy()
        shown["path"] = shown["path"].map(lambda p: p if p is None or len(p) <= 48 else "…" + p[-47:])
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-"))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``mirflow`` parser."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    ix = sub.add_parser("index", help="build, update or inspect the similarity index of an embedding",
                        formatter_class=fmt)
    ix_sub = ix.add_subparsers(dest="index_command", required=True)

    b = ix_sub.add_parser("build", help="build (or replace) the FAISS index of one embedding model",
                          formatter_class=fmt)
    b.add_argument("catalog", help="catalog folder")
    b.add_argument("--embedding", default=DEFAULT_EMBEDDING, help="embedding model (partition of embeddings/)")
    b.add_argument("--kind", default="hnsw", choices=KINDS,
                   help="hnsw: graph, fast and ≥ 0.95 recall@10; ivfpq: inverted lists + product "
                        "quantization, re-ranked exactly; exact: brute force")
    b.add_argument("--threads", type=positive_int, help="FAISS (OpenMP) threads (default: all cores)")
    b.set_defaults(func=cmd_index_build)

    u = ix_sub.add_parser("update", help="add the catalog's new tracks to the index (rebuilds only when "
                                         "indexed vectors changed)", formatter_class=fmt)
    u.add_argument("catalog", help="catalog folder")
    u.add_argument("--embedding", default=DEFAULT_EMBEDDING, help="embedding model")
    u.add_argument("--threads", type=positive_int, help="FAISS (OpenMP) threads (default: all cores)")
    u.set_defaults(func=cmd_index_update)

    st = ix_sub.add_parser("status", help="which embeddings are indexed, and whether each index is stale "
                                          "(exit status 1 when one is)", formatter_class=fmt)
    st.add_argument("catalog", help="catalog folder")
    st.add_argument("--embedding", help="only this embedding model (default: all)")
    st.set_defaults(func=cmd_index_status)

    s = sub.add_parser("similar", help="tracks most similar to a track (by id or path) or a new audio file",
                       formatter_class=fmt)
    s.add_argument("catalog", help="catalog folder")
    s.add_argument("--track", metavar="ID", help="query by track id")
    s.add_argument("--path", metavar="FILE", help="query by a file already in the catalog")
    s.add_argument("--audio", metavar="NEW_FILE",
                   help="query by a new audio file, analyzed now with the catalog's pipeline (≈30-60 s)")
    s.add_argument("-k", type=positive_int, default=10, help="number of neighbours")
    s.add_argument("--where", metavar="SQL", help="SQL predicate over the tracks view, e.g. \"tempo_bpm > 120\"")
    s.add_argument("--mix", action="store_true",
                   help="harmonic mixing: tempo within ±6%% of the query's (or of its half/double) and a "
                        "Camelot-compatible key (same, ±1, or relative)")
    s.add_argument("--embedding", default=DEFAULT_EMBEDDING, help="embedding model")
    s.add_argument("--format", default="table", choices=("table", "csv", "json"), help="output format")
    s.set_defaults(func=cmd_similar)
