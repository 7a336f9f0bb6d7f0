"""Catalog scale: planning and query times before and after compaction, on a synthetic catalog.

Generates a catalog of ``--n`` tracks directly as parts (no audio): ``tracks``
(all 70 columns), ``files``, ``beats`` (``--beats`` per track) and one
``embeddings`` model (``--dim`` floats), laid out exactly as ``analyze``
writes them. Then, in one run, before and after ``mirflow.catalog.compact``:

* file count and bytes of the catalog;
* planning: ``Catalog.known_files()`` + ``Catalog.existing_tracks()`` and the
  skip decision for every path (what ``analyze --dry-run`` does besides
  listing and stat-ing the inputs, which costs the same before and after);
* with ``--inputs DIR``: ``mirflow.analyze(..., dry_run=True)`` itself, end to
  end, over N real one-byte input files whose ``files`` rows carry their real
  identity (so every one is recognized as analyzed and skipped);
* ``mirflow.query.connect`` and four typical queries (tempo range + key
  filter, group by key, tracks joined with embeddings by cosine similarity,
  top-N by loudness).

Usage::

    python benchmarks/catalog_scale.py --n 100000 --out /tmp/scale
    python benchmarks/catalog_scale.py --n 1000000 --out /big/disk/scale --skip-before-queries

Results go to ``docs/scale.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

#: The pipeline the synthetic catalog claims to have been analyzed with; its
#: fingerprint is the tracks' ``pipeline_version``, so a dry run skips them all.
PIPELINE_YAML = "name: synthetic\nversion: 1\nextractors: [metadata]\n"


def _fingerprint() -> str:
    import tempfile

    from mirflow.pipeline.config import load_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synthetic.yaml"
        path.write_text(PIPELINE_YAML)
        return load_pipeline(path).fingerprint


FINGERPRINT = _fingerprint()
KEYS = [f"{t} {m}" for t in ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
        for m in ("major", "minor")]

QUERIES = {
    "tempo range + key": "SELECT count(*) FROM tracks WHERE tempo_bpm BETWEEN 118 AND 122 AND key = 'A minor'",
    "group by key": "SELECT key, count(*) AS n, avg(tempo_bpm) FROM tracks GROUP BY key ORDER BY n DESC",
    "tracks x embeddings (cosine top 10)":
        "SELECT t.track_id, t.path, array_cosine_similarity(e.embedding, (SELECT embedding FROM "
        "embeddings_descriptor LIMIT 1)) AS sim FROM tracks t JOIN embeddings_descriptor e USING (track_id) "
        "WHERE t.key_mode = 'minor' ORDER BY sim DESC LIMIT 10",
    "top 20 by loudness": "SELECT track_id, path, loudness_integrated_lufs FROM tracks "
                          "ORDER BY loudness_integrated_lufs DESC LIMIT 20",
}


def _track_ids(start: int, stop: int) -> list[str]:
    import hashlib

    return [hashlib.blake2b(str(i).encode(), digest_size=16).hexdigest() for i in range(start, stop)]


def _input_files(inputs: Path, start: int, stop: int) -> tuple[list[str], np.ndarray]:
    """Create one-byte input files (1,000 per folder); their paths and ``(size, mtime, ctime, inode)``."""
    paths, facts = [], np.zeros((stop - start, 4), np.int64)
    for j, i in enumerate(range(start, stop)):
        folder = inputs / f"d{i // 1000:05d}"
        if i % 1000 == 0 or j == 0:
            folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"track{i}.flac"
        path.write_bytes(b"x")
        st = path.stat()
        paths.append(str(path))
        facts[j] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    return paths, facts


def _chunk_tables(start: int, stop: int, beats: int, dim: int, inputs: Path | None = None) -> dict[str, pa.Table]:
    from mirflow.catalog.schema import table_schema

    n = stop - start
    rng = np.random.default_rng(start)
    ids = _track_ids(start, stop)
    if inputs is not None:
        paths, facts = _input_files(inputs, start, stop)
    else:
        paths = [f"/music/artist{i % 997}/track{i}.flac" for i in range(start, stop)]
        facts = np.stack([rng.integers(1e6, 1e8, n), rng.integers(1.6e18, 1.7e18, n),
                          rng.integers(1.6e18, 1.7e18, n), np.arange(start, stop)], axis=1)
    now = pa.scalar(int(time.time() * 1e6), pa.timestamp("us", tz="UTC"))
    spec = table_schema("tracks")
    schema = spec.arrow(sizes=spec.sizes_of({}))
    key = rng.integers(0, len(KEYS), n)
    values = {
        "track_id": ids, "path": paths, "file_size_bytes": rng.integers(1e6, 1e8, n),
        "container": ["flac"] * n, "codec": ["flac"] * n, "sample_rate_hz": [44100] * n, "channels": [2] * n,
        "duration_s": rng.uniform(60, 400, n), "pipeline": ["synthetic"] * n, "pipeline_version": [FINGERPRINT] * n,
        "mirflow_version": ["bench"] * n, "analyzed_at": pa.array([now.value] * n, pa.timestamp("us", tz="UTC")),
        "downmix": ["mean"] * n, "lineage": ['{"pipeline": "synthetic"}'] * n,
        "analysis_seconds": rng.uniform(1, 5, n), "loudness_integrated_lufs": rng.normal(-12, 4, n),
        "tempo_bpm": rng.uniform(60, 180, n), "tempo_confidence": rng.uniform(0, 1, n),
        "key": [KEYS[k] for k in key], "key_mode": [KEYS[k].split()[1] for k in key],
        "mfcc_mean": pa.array(list(rng.normal(size=(n, 13)).astype(np.float32)), pa.list_(pa.float32(), 13)),
        "chroma_mean": pa.array(list(rng.uniform(size=(n, 12)).astype(np.float32)), pa.list_(pa.float32(), 12)),
    }
    cols = [pa.array(values[f.name], f.type) if f.name in values and not isinstance(values[f.name], pa.Array)
            else (values[f.name].cast(f.type) if f.name in values else pa.nulls(n, f.type)) for f in schema]
    tracks = pa.Table.from_arrays(cols, schema=schema)

    fspec = table_schema("files")
    files = pa.Table.from_arrays([
        pa.array(paths), pa.nulls(n, pa.binary()), pa.array(ids), pa.array(facts[:, 0]),
        pa.array(facts[:, 1]), pa.array(facts[:, 2]),
        pa.array(facts[:, 3]), pa.array([now.value] * n, pa.timestamp("us", tz="UTC"))],
        schema=fspec.arrow())

    bspec = table_schema("beats")
    times = (np.arange(beats) * 0.5)[None, :] + rng.uniform(0, 0.5, (n, 1))
    beat_rows = pa.Table.from_arrays([
        pa.array(np.repeat(ids, beats)), pa.array(times.ravel()),
        pa.array(np.tile(np.arange(beats) % 4 + 1, n).astype(np.int16))], schema=bspec.arrow())

    espec = table_schema("embeddings")
    vecs = rng.normal(size=(n, dim)).astype(np.float32)
    emb = pa.Table.from_arrays([
        pa.array(ids), pa.array(["descriptor"] * n), pa.array(["1"] * n),
        pa.FixedSizeListArray.from_arrays(pa.array(vecs.ravel()), dim)],
        schema=espec.arrow(sizes={"embedding": dim}))
    return {"tracks": tracks, "files": files, "beats": beat_rows, "embeddings": emb}


def _write_chunk(args: tuple[str, int, int, int, int, str | None]) -> int:
    from mirflow.catalog.layout import VERSION_META, Catalog, path_key

    root, start, stop, beats, dim, inputs = args
    cat = Catalog(root)
    tables = _chunk_tables(start, stop, beats, dim, Path(inputs) if inputs else None)
    stamp = {VERSION_META: FINGERPRINT.encode()}
    for i in range(stop - start):
        tid = tables["tracks"]["track_id"][i].as_py()
        path = tables["files"]["path"][i].as_py()
        b = tables["beats"].slice(i * beats, beats)
        e = tables["embeddings"].slice(i, 1)
        for table, key, data, part in (
                ("files", path_key(path), tables["files"].slice(i, 1), None),
                ("beats", tid, b.replace_schema_metadata({**b.schema.metadata, **stamp}), None),
                ("embeddings", tid, e.replace_schema_metadata({**e.schema.metadata, **stamp}), "descriptor"),
                ("tracks", tid, tables["tracks"].slice(i, 1), None)):  # tracks last: the commit marker
            target = cat.part_path(table, key, part)
            target.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(data, target, compression="zstd")
    return stop - start


def _fresh(root: Path, inputs: Path | None) -> None:
    shutil.rmtree(root, ignore_errors=True)
    if inputs is not None:
        shutil.rmtree(inputs, ignore_errors=True)


def generate(root: Path, n: int, *, beats: int, dim: int, processes: int, inputs: Path | None = None) -> float:
    from mirflow.catalog.layout import Catalog

    started = time.perf_counter()
    _fresh(root, inputs)
    Catalog(root).open_for("synthetic")
    step = 2000
    chunks = [(str(root), s, min(n, s + step), beats, dim, str(inputs) if inputs else None)
              for s in range(0, n, step)]
    with Pool(processes) as pool:
        done = 0
        for k in pool.imap_unordered(_write_chunk, chunks):
            done += k
            if done % 20000 < step:
                print(f"  generated {done}/{n} tracks ({time.perf_counter() - started:.0f} s)", flush=True)
    return time.perf_counter() - started


def generate_compacted(root: Path, n: int, *, beats: int, dim: int, inputs: Path | None = None) -> float:
    """Write the N tracks straight into one compacted generation per table (no parts): the state a
    compaction leaves, at sizes whose millions of parts would take hours to write on a small machine."""
    from mirflow.catalog.compact import ROW_GROUP_ROWS, _write_record
    from mirflow.catalog.layout import COMPACTED, KEY_COLUMN, VERSION_COLUMN, Catalog, path_key

    started = time.perf_counter()
    _fresh(root, inputs)
    cat = Catalog(root)
    cat.open_for("synthetic")
    gen = "direct"
    writers: dict[str, pq.ParquetWriter] = {}
    rows: dict[str, int] = {}
    step = 50_000
    for start in range(0, n, step):
        tables = _chunk_tables(start, min(n, start + step), beats, dim, inputs)
        for table, data in tables.items():
            if table == "files":
                keys = pa.array([path_key(p) for p in data.column("path").to_pylist()])
                version = pa.nulls(data.num_rows, pa.string())
            else:
                keys = data.column("track_id")
                version = pa.nulls(data.num_rows, pa.string()) if table == "tracks" else \
                    pa.array([FINGERPRINT] * data.num_rows)
            data = data.append_column(KEY_COLUMN, keys).append_column(VERSION_COLUMN, version)
            if table not in writers:
                sub = root / table / COMPACTED / gen / ("descriptor" if table == "embeddings" else "")
                sub.mkdir(parents=True, exist_ok=True)
                writers[table] = pq.ParquetWriter(sub / "part-000.parquet", data.schema, compression="zstd")
            writers[table].write_table(data, row_group_size=ROW_GROUP_ROWS)
            rows[table] = rows.get(table, 0) + data.num_rows
        print(f"  generated {min(n, start + step)}/{n} tracks ({time.perf_counter() - started:.0f} s)", flush=True)
    for table, w in writers.items():
        w.close()
        comp = root / table / COMPACTED
        rel = f"{gen}/descriptor/part-000.parquet" if table == "embeddings" else f"{gen}/part-000.parquet"
        pq.write_table(pa.table({"rel": pa.array([], pa.string()), "size": pa.array([], pa.int64()),
                                 "mtime_ns": pa.array([], pa.int64()), "inode": pa.array([], pa.int64())}),
                       comp / gen / "folded.parquet")
        _write_record(cat, comp, {"format": 1, "table": table, "generation": gen, "files": [
            {"path": rel, "partition": "descriptor" if table == "embeddings" else None, "rows": rows[table],
             "bytes": (comp / rel).stat().st_size, "lo": None, "hi": None}],
            "folded": f"{gen}/folded.parquet", "previous": None, "cleaned": True})
    # As a compaction does: record which long tables' rows are all current for this tracks generation.
    from mirflow.catalog.compact import rows_current_with

    for table in writers:
        comp = root / table / COMPACTED
        record = cat.compaction_record(table)
        current_with = rows_current_with(cat, table, [comp / f["path"] for f in record["files"]])
        if current_with:
            _write_record(cat, comp, {**record, "current_with": current_with})
    return time.perf_counter() - started


def disk_usage(root: Path) -> tuple[int, int]:
    files = size = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            files += 1
            size += os.stat(os.path.join(dirpath, name)).st_size
    return files, size


def plan_time(root: Path) -> tuple[float, int]:
    """Planning as ``analyze`` does it from the catalog: known files, existing tracks, skip decisions."""
    from mirflow.catalog.layout import Catalog

    started = time.perf_counter()
    cat = Catalog(root)
    known = cat.known_files()
    existing = cat.existing_tracks()
    skipped = sum(1 for facts in known.values() if existing.get(facts.track_id) == FINGERPRINT)
    return time.perf_counter() - started, skipped


def query_times(root: Path) -> dict[str, float]:
    from mirflow.query import connect

    out = {}
    started = time.perf_counter()
    con = connect(root)
    out["connect"] = time.perf_counter() - started
    for name, sql in QUERIES.items():
        started = time.perf_counter()
        con.execute(sql).fetchall()
        out[name] = time.perf_counter() - started
    con.close()
    return out


def dry_run_time(root: Path, inputs: Path) -> tuple[float, int]:
    """``mirflow.analyze(inputs, root, dry_run=True)`` end to end: list, stat, plan; seconds and tracks skipped."""
    import mirflow

    pipeline = root.parent / f"{root.name}-synthetic.yaml"
    pipeline.write_text(PIPELINE_YAML)
    started = time.perf_counter()
    summary = mirflow.analyze([inputs], root, pipeline=str(pipeline), dry_run=True)
    return time.perf_counter() - started, summary.skipped


def measure(root: Path, n: int, *, queries: bool, inputs: Path | None = None) -> dict:
    files, size = disk_usage(root)
    t_plan, skipped = plan_time(root)
    assert skipped == n, f"planning found {skipped} current tracks of {n}"
    row = {"files": files, "bytes": size, "plan_s": t_plan}
    print(f"  {files} files, {size / 2**20:.0f} MiB; planning {t_plan:.1f} s", flush=True)
    if inputs is not None:
        row["dry_run_s"], skipped = dry_run_time(root, inputs)
        assert skipped == n, f"the dry run skipped {skipped} of {n}"
        print(f"  analyze --dry-run over {n} input files: {row['dry_run_s']:.1f} s", flush=True)
    if queries:
        row["queries"] = query_times(root)
        print("  " + ", ".join(f"{k}: {v:.2f} s" for k, v in row["queries"].items()), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="tracks")
    ap.add_argument("--beats", type=int, default=32, help="beats rows per track")
    ap.add_argument("--dim", type=int, default=64, help="embedding dimension")
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="processes generating parts")
    ap.add_argument("--out", default="/tmp/mirflow-scale", help="catalog folder (replaced)")
    ap.add_argument("--skip-before-queries", action="store_true",
                    help="skip the queries on the uncompacted catalog (slow at a million tracks)")
    ap.add_argument("--json", help="write the results here as JSON")
    ap.add_argument("--inputs", help="also create N one-byte input files here (replaced) and time "
                                     "`analyze --dry-run` over them")
    ap.add_argument("--direct", action="store_true",
                    help="write the tracks straight into a compacted generation and measure only the state "
                         "after compaction (for --n 1000000: its parts would take hours to generate here)")
    args = ap.parse_args()
    from mirflow.catalog.compact import compact

    root = Path(args.out)
    inputs = Path(args.inputs) if args.inputs else None
    if args.direct:
        result = {"n": args.n, "beats_per_track": args.beats, "dim": args.dim, "cpus": os.cpu_count(),
                  "direct": True}
        result["generate_s"] = generate_compacted(root, args.n, beats=args.beats, dim=args.dim, inputs=inputs)
        print("compacted catalog:", flush=True)
        result["after"] = measure(root, args.n, queries=True, inputs=inputs)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
        return
    print(f"generating {args.n} tracks into {root}", flush=True)
    result = {"n": args.n, "beats_per_track": args.beats, "dim": args.dim, "cpus": os.cpu_count()}
    result["generate_s"] = generate(root, args.n, beats=args.beats, dim=args.dim, processes=args.processes,
                                    inputs=inputs)
    print("before compaction:", flush=True)
    result["before"] = measure(root, args.n, queries=not args.skip_before_queries, inputs=inputs)
    started = time.perf_counter()
    summary = compact(root)
    result["compact_s"] = time.perf_counter() - started
    result["compaction"] = summary.to_dict()
    print(f"compaction: {result['compact_s']:.1f} s", flush=True)
    print("after compaction:", flush=True)
    result["after"] = measure(root, args.n, queries=True, inputs=inputs)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
