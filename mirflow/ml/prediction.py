"""Predict every track of a catalog on Dask into the ``predictions`` table.

The client lists the catalog's tracks, drops those that already have rows of
this classifier's ``model_version`` (unless forced), splits the rest into
batches and submits one task per batch. Each task loads the classifier from
the bundle bytes (scattered once to every worker; the same trust checks as
:func:`~mirflow.ml.load_classifier`), reads its batch's features from the
tracks' own parts, predicts, and writes one part per track,
``predictions/<model>/ab/<track_id>.parquet``, atomically and through
:func:`mirflow.catalog.conform`. It returns a small record; the client never
gathers predictions. A part named by its track is overwritten, never
duplicated, so a re-run after a crash or a ``--force`` is exactly-once.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow.compute as pc

from mirflow._env import THREAD_ENV
from mirflow.catalog import Catalog, conform
from mirflow.errors import ConfigError
from mirflow.ml.classifier import TrainedClassifier, as_classifier, from_bundle_bytes
from mirflow.query.inspect import open_catalog

log = logging.getLogger(__name__)

TABLE = "predictions"
#: Most tracks per task: big enough that loading the model (≈10 ms) is noise,
#: small enough that a lost worker costs little.
MAX_BATCH = 512
#: Tasks per worker to aim for, so that work spreads evenly.
TASKS_PER_WORKER = 4

#: ``progress(done_tracks, total_tracks)``.
ProgressCallback = Callable[[int, int], None]


@dataclass
class PredictSummary:
    """What a predict run did."""

    catalog: str
    model: str
    model_version: str
    tracks: int = 0
    predicted: int = 0
    skipped: int = 0
    missing_features: int = 0
    batches: int = 0
    wall_seconds: float = 0.0
    dashboard: str | None = None
    missing_examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def existing_predictions(cat: Catalog, model: str, model_version: str) -> set[str]:
    """Tracks that already have prediction rows of ``model`` at ``model_version``."""
    if model not in cat.partitions(TABLE):
        return set()
    # read_table: the partition's compacted rows plus its live loose parts.
    data = cat.read_table(TABLE, columns=["track_id", "model_version"], partition=model)
    same = data.filter(pc.fill_null(pc.equal(data.column("model_version"), model_version), False))
    return set(same.column("track_id").to_pylist())


def predict(catalog: str | os.PathLike[str] | Catalog, *, model: TrainedClassifier | str | os.PathLike[str],
            force: bool = False, scheduler: str | None = None, workers: int = 2, client: Any = None,
            batch_size: int | None = None, dashboard: bool = False,
            progress: ProgressCallback | None = None,
            on_dashboard: Callable[[str], None] | None = None) -> PredictSummary:
    """Write class probabilities of every track to ``predictions/<model>/``.

    Parameters
    ----------
    catalog : path or Catalog
    model : TrainedClassifier or path of a saved one
    force : bool
        Predict tracks that already have predictions of this model version too.
    scheduler : str, optional
        Address of a running ``dask.distributed`` scheduler.
    workers : int
        Worker processes of the LocalCluster started when neither
        ``scheduler`` nor ``client`` is given.
    client : distributed.Client, optional
        Use this client (and leave it running).
    batch_size : int, optional
        Tracks per task (default: spread over 4 tasks per worker, at most 512).
    dashboard : bool
        Serve the Dask dashboard of a local cluster.
    progress : callable, optional
        ``progress(done, total)`` after each finished batch.

    Returns
    -------
    PredictSummary
        Counts: predicted, skipped (already predicted), missing_features.

    Raises
    ------
    IncompatibleModelError
        The catalog does not provide the classifier's features.
    """
    t0 = time.perf_counter()
    if workers < 1 or (batch_size is not None and batch_size < 1):
        raise ConfigError("workers and batch size must be at least 1")
    cat = open_catalog(catalog)
    clf = as_classifier(model)
    clf.check_compatible(cat)
    all_tracks = sorted(cat.existing_tracks())
    done = set() if force else existing_predictions(cat, clf.name, clf.model_version) & set(all_tracks)
    todo = [t for t in all_tracks if t not in done]
    summary = PredictSummary(catalog=cat.url, model=clf.name, model_version=clf.model_version,
                             tracks=len(all_tracks), skipped=len(done))
    if not todo:
        summary.wall_seconds = time.perf_counter() - t0
        return summary
    owns = client is None
    cluster = None
    if owns:
        client, cluster = _start_client(scheduler, workers, dashboard)
    try:
        if on_dashboard and cluster is not None and dashboard:
            summary.dashboard = client.dashboard_link
            on_dashboard(summary.dashboard)
        n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        size = batch_size or min(MAX_BATCH, max(1, math.ceil(len(todo) / (n_workers * TASKS_PER_WORKER))))
        batches = [todo[i:i + size] for i in range(0, len(todo), size)]
        summary.batches = len(batches)
        if progress:
            progress(0, len(todo))
        # The bundle goes to each worker once, not once per task.
        [bundle_future] = client.scatter([clf.to_bytes()], broadcast=True, hash=False)
        futures = [client.submit(predict_batch, cat.url, bundle_future, batch, pure=False,
                                 key=f"mirflow-predict-{clf.name}-{i}-{os.urandom(4).hex()}")
                   for i, batch in enumerate(batches)]
        from distributed import as_completed

        done_tracks = 0
        for fut in as_completed(futures):
            record = fut.result()
            summary.predicted += record["predicted"]
            summary.missing_features += len(record["missing"])
            room = 10 - len(summary.missing_examples)
            summary.missing_examples += record["missing"][:max(room, 0)]
            done_tracks += record["tracks"]
            if progress:
                progress(done_tracks, len(todo))
    finally:
        if owns:
            client.close()
            if cluster is not None:
                cluster.close()
    summary.wall_seconds = time.perf_counter() - t0
    log.info("predicted %d tracks with %s (%s), skipped %d, %d lack features", summary.predicted, clf.name,
             clf.model_version, summary.skipped, summary.missing_features)
    return summary


def _start_client(scheduler: str | None, workers: int, dashboard: bool):
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler), None
    # One BLAS/OpenMP thread per worker process, set before it starts
    # (the nanny reads pre-spawn-environ when it spawns the process).
    with dask.config.set({"distributed.nanny.pre-spawn-environ": dict(THREAD_ENV)}):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0" if dashboard else None,
                               silence_logs=logging.ERROR)
    return Client(cluster), cluster


#: Classifiers loaded in this worker process, by model_version (few: one per run).
_LOADED: OrderedDict[str, TrainedClassifier] = OrderedDict()
_CACHE_SIZE = 4


def _classifier_from(bundle_bytes: bytes) -> TrainedClassifier:
    from mirflow.ml import bundle

    _, meta = bundle.unpack(bundle_bytes)
    version = meta["model_version"]
    clf = _LOADED.get(version)
    if clf is None:
        clf = from_bundle_bytes(bundle_bytes)
        _LOADED[version] = clf
        while len(_LOADED) > _CACHE_SIZE:
            _LOADED.popitem(last=False)
    return clf


def predict_batch(catalog_root: str, bundle_bytes: bytes, track_ids: list[str]) -> dict[str, Any]:
    """Task: predict ``track_ids`` and write their parts; return counts only."""
    cat = Catalog(catalog_root)
    clf = _classifier_from(bundle_bytes)
    rows, missing = clf.predict_frame(cat, track_ids)
    written = 0
    for track_id, part in rows.groupby("track_id", sort=False):
        data = conform(TABLE, {c: part[c].tolist() for c in part.columns})
        cat.write_part(TABLE, track_id, data, partition=clf.name)
        written += 1
    return {"tracks": len(track_ids), "predicted": written, "missing": missing}
