"""Train, save, load and check a classifier of catalog tracks.

Model selection
---------------
Two candidate scikit-learn pipelines, each ``SimpleImputer(median) →
StandardScaler → classifier``:

* ``logistic_regression`` — :class:`~sklearn.linear_model.LogisticRegression`
  (L2, C = 1): strong on embeddings, which are built to be linearly useful;
* ``hist_gradient_boosting`` —
  :class:`~sklearn.ensemble.HistGradientBoostingClassifier`: non-linear
  interactions of descriptor columns.

Both are scored by stratified k-fold cross-validation (shuffled, seeded),
k = min(5, smallest class size), so every fold holds every class; a class
with fewer than 2 examples is an error. The candidate with the higher mean
macro-F1 over the folds wins (a tie goes to the linear model, the simpler
one), and is refit on all labelled tracks. The reported accuracy, macro-F1
and confusion matrix are those of the winner's out-of-fold predictions.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mirflow._version import __version__
from mirflow.catalog import Catalog, table_schema
from mirflow.ml import bundle
from mirflow.ml.errors import ClassifierError, IncompatibleModelError, ModelFileError
from mirflow.ml.features import (
    Feature,
    embedding_versions,
    feature_names,
    load_features,
    resolve_features,
    split_names,
)
from mirflow.ml.labels import match_labels
from mirflow.query.inspect import open_catalog

__all__ = ["ClassifierReport", "TrainedClassifier", "load_classifier", "train"]

log = logging.getLogger(__name__)

#: Upper bound of k in k-fold cross-validation (lowered to the smallest class size).
MAX_FOLDS = 5
#: Below this many labelled tracks, training runs on one thread (see _threads_for).
SMALL_TRAINING_SET = 10_000
#: Candidate names, in tie-break order (simplest first).
CANDIDATES = ("logistic_regression", "hist_gradient_boosting")
#: Classifier names become folder names of the predictions table.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def make_candidates(n_samples: int, *, random_state: int = 0) -> dict[str, Any]:
    """The two candidate pipelines (unfitted)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    def pipeline(clf) -> Pipeline:
        # keep_empty_features: a column that is all-null in training still
        # occupies its slot, so the matrix width never depends on the data.
        return Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                         ("scale", StandardScaler()), ("classify", clf)])

    # sklearn's default min_samples_leaf=20 lets a tree on a few dozen
    # labelled tracks make no split at all; scale it with the training set
    # (n/20, between 2 and 20), i.e. the default from 400 tracks up.
    leaf = int(np.clip(n_samples // 20, 2, 20))
    return {
        "logistic_regression": pipeline(LogisticRegression(C=1.0, max_iter=5000)),
        "hist_gradient_boosting": pipeline(HistGradientBoostingClassifier(
            min_samples_leaf=leaf, random_state=random_state)),
    }


@dataclass
class ClassifierReport:
    """Cross-validated figures of a trained classifier.

    Attributes
    ----------
    estimator : str
        The winning candidate.
    accuracy, macro_f1 : float
        Out-of-fold accuracy and macro-averaged F1 of the winner.
    n_splits : int
        k of the stratified k-fold cross-validation.
    confusion_matrix : DataFrame
        Out-of-fold counts; rows are true labels, columns predicted labels.
    candidates : DataFrame
        Per candidate: accuracy, macro_f1 (pooled out-of-fold), macro_f1_mean
        and macro_f1_std over folds.
    class_counts : dict
        Labelled tracks per class.
    """

    estimator: str
    accuracy: float
    macro_f1: float
    n_splits: int
    confusion_matrix: pd.DataFrame
    candidates: pd.DataFrame
    class_counts: dict[str, int]

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> ClassifierReport:
        cv = meta["cv"]
        classes = meta["classes"]
        cm = pd.DataFrame(cv["confusion_matrix"], index=pd.Index(classes, name="true"),
                          columns=pd.Index(classes, name="predicted"))
        cands = pd.DataFrame([{"estimator": k, **v} for k, v in cv["candidates"].items()])
        return cls(estimator=meta["estimator"], accuracy=cv["accuracy"], macro_f1=cv["macro_f1"],
                   n_splits=cv["n_splits"], confusion_matrix=cm, candidates=cands,
                   class_counts=dict(meta["class_counts"]))

    def to_text(self) -> str:
        """The report as the CLI prints it."""
        lines = [f"candidates ({self.n_splits}-fold stratified cross-validation):"]
        for row in self.candidates.itertuples():
            mark = "*" if row.estimator == self.estimator else " "
            lines.append(f" {mark} {row.estimator:<24} accuracy {row.accuracy:.3f}   macro-F1 {row.macro_f1:.3f}"
                         f"   (per fold {row.macro_f1_mean:.3f} ± {row.macro_f1_std:.3f})")
        lines.append(f"chosen:    {self.estimator}")
        lines.append(f"accuracy:  {self.accuracy:.3f}   macro-F1: {self.macro_f1:.3f}   (cross-validated)")
        lines.append("confusion matrix (rows: true label, columns: predicted):")
        lines.append(self.confusion_matrix.to_string())
        return "\n".join(lines)


class TrainedClassifier:
    """A fitted pipeline with the metadata that says what it needs from a catalog.

    Use :func:`train` or :func:`load_classifier` to get one.
    """

    def __init__(self, pipeline: Any, metadata: dict[str, Any], *, model_bytes: bytes | None = None) -> None:
        self.pipeline = pipeline
        self.metadata = metadata
        self._model_bytes = model_bytes
        if model_bytes is not None:
            self.metadata["model_version"] = bundle.model_version_of(model_bytes)

    def __repr__(self) -> str:
        return (f"TrainedClassifier(name={self.name!r}, target={self.metadata['target']!r}, "
                f"classes={self.classes}, estimator={self.metadata['estimator']!r}, "
                f"accuracy={self.metadata['cv']['accuracy']:.3f})")

    # ---------------------------------------------------------------- facts
    @property
    def name(self) -> str:
        """The ``model`` value of its prediction rows (and their folder name)."""
        return self.metadata["name"]

    @property
    def classes(self) -> list[str]:
        return list(self.metadata["classes"])

    @property
    def features(self) -> list[Feature]:
        return [Feature.from_dict(d) for d in self.metadata["features"]]

    @property
    def model_bytes(self) -> bytes:
        """The skops bytes of the pipeline (made once, so the version is stable)."""
        if self._model_bytes is None:
            import skops.io

            self._model_bytes = skops.io.dumps(self.pipeline)
            self.metadata["model_version"] = bundle.model_version_of(self._model_bytes)
        return self._model_bytes

    @property
    def model_version(self) -> str:
        """BLAKE2b-64 of the saved model bytes (see :mod:`mirflow.ml.bundle`)."""
        self.model_bytes  # noqa: B018 - computes the version on first use
        return self.metadata["model_version"]

    @property
    def report(self) -> ClassifierReport:
        return ClassifierReport.from_metadata(self.metadata)

    # ---------------------------------------------------------------- files
    def to_bytes(self) -> bytes:
        """The bundle as bytes (what :meth:`save` writes)."""
        model_bytes = self.model_bytes
        return bundle.pack(model_bytes, self.metadata)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the bundle (zip of ``metadata.json`` and ``model.skops``) to ``path``."""
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        bundle.write_bundle(path, self.model_bytes, self.metadata)
        log.info("saved classifier %s version %s to %s", self.name, self.model_version, path)
        return path

    # ---------------------------------------------------------------- use
    def check_compatible(self, catalog: str | os.PathLike[str] | Catalog) -> None:
        """Check that ``catalog`` provides the features this classifier was trained on.

        Raises
        ------
        IncompatibleModelError
            Naming every difference: a missing embedding model or column, an
            embedding ``model_version`` or dimension, a schema version.
        """
        cat = open_catalog(catalog)
        diffs = compatibility_problems(self.metadata, cat)
        if diffs:
            raise IncompatibleModelError(
                f"classifier {self.name!r} (version {self.model_version}) does not fit catalog {cat.url}: "
                + "; ".join(diffs))

    def predict_frame(self, catalog: str | os.PathLike[str] | Catalog,
                      track_ids: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
        """Class probabilities of ``track_ids`` as long rows of the ``predictions`` table.

        Returns ``(rows, missing)``: rows with columns track_id, model,
        model_version, label, score (one per track × class), and the tracks
        that lack a feature (not committed, or an embedding absent).
        """
        cat = open_catalog(catalog)
        X, usable = load_features(cat, self.features, list(track_ids))
        ids = [t for t, ok in zip(track_ids, usable, strict=True) if ok]
        missing = [t for t, ok in zip(track_ids, usable, strict=True) if not ok]
        classes = [str(c) for c in self.pipeline.classes_]
        if ids:
            proba = self.pipeline.predict_proba(X[usable])
        else:
            proba = np.zeros((0, len(classes)))
        rows = pd.DataFrame({
            "track_id": np.repeat(ids, len(classes)),
            "model": self.name,
            "model_version": self.model_version,
            "label": np.tile(classes, len(ids)),
            "score": proba.reshape(-1).astype(np.float32),
        })
        return rows, missing


def catalog_schema_versions(cat: Catalog) -> dict[str, int]:
    """Versions of the ``tracks`` and ``embeddings`` schemas the catalog's data were written with.

    The manifest records them; a catalog without the record is taken to be
    of the installed schemas.
    """
    recorded = (cat.read_manifest() or {}).get("schemas", {})
    return {t: int(recorded.get(t, table_schema(t).version)) for t in ("tracks", "embeddings")}


def compatibility_problems(meta: dict[str, Any], cat: Catalog) -> list[str]:
    """Every way in which ``cat`` differs from what the classifier in ``meta`` was trained on."""
    diffs = []
    features = [Feature.from_dict(d) for d in meta["features"]]
    schemas = catalog_schema_versions(cat)
    tables = ["tracks"] + (["embeddings"] if any(f.kind == "embedding" for f in features) else [])
    for table in tables:
        trained = meta["schema_versions"].get(table)
        here = schemas[table]
        if trained is not None and int(here) != int(trained):
            diffs.append(f"{table} schema version is {here} in the catalog, {trained} in the classifier")
    models = cat.partitions("embeddings")
    tracks = table_schema("tracks")
    columns = []
    for f in features:
        if f.kind == "embedding":
            if f.name not in models:
                diffs.append(f"embedding model {f.name!r} is missing (catalog has: {', '.join(models) or 'none'})")
                continue
            versions = embedding_versions(cat, f.name)
            if set(versions) != {f.model_version}:
                diffs.append(f"embedding {f.name!r} model_version is {', '.join(versions) or 'none'} in the "
                             f"catalog, {f.model_version} in the classifier")
            dims = {d for _, d in versions.values()}
            if dims and dims != {f.width}:
                diffs.append(f"embedding {f.name!r} has {', '.join(map(str, sorted(dims)))} dimensions, "
                             f"the classifier expects {f.width}")
        elif f.name not in tracks.names:
            diffs.append(f"tracks column {f.name!r} is missing from the tracks schema")
        elif tracks.column(f.name).type != f.type:
            diffs.append(f"tracks column {f.name!r} is {tracks.column(f.name).type}, the classifier expects {f.type}")
        else:
            columns.append(f.name)
    if columns:
        diffs += _missing_column_data(cat, columns)
    return diffs


def _missing_column_data(cat: Catalog, columns: list[str]) -> list[str]:
    """Feature columns with no value at all in the catalog (its pipeline did not compute them).

    Read through :meth:`Catalog.read_table` (compacted rows and loose parts;
    a column that parts older than it lack reads as nulls, so it counts as
    having no values). An empty catalog has nothing to check.
    """
    data = cat.read_table("tracks", columns=columns)
    if data.num_rows == 0:
        return []
    return [f"tracks column {c!r} has no values in the catalog (was its extractor run?)"
            for c in columns if data.column(c).null_count == data.num_rows]


def _metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
            "confusion_matrix": confusion_matrix(y_true, y_pred, labels=classes).tolist()}


def cross_validate(X: np.ndarray, y: np.ndarray, *, random_state: int = 0,
                   max_folds: int = MAX_FOLDS) -> tuple[str, dict[str, Any]]:
    """Score both candidates by stratified k-fold CV; return the winner's name and the CV record."""
    from sklearn.base import clone
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold

    if max_folds < 2:
        raise ClassifierError(f"cross-validation needs at least 2 folds, not {max_folds}")
    classes, counts = np.unique(y, return_counts=True)
    classes = [str(c) for c in classes]
    if len(classes) < 2:
        raise ClassifierError(f"the labels hold one class only ({classes[0]!r}); a classifier needs two or more")
    small = [f"{c!r} ({n})" for c, n in zip(classes, counts, strict=True) if n < 2]
    if small:
        raise ClassifierError(f"every class needs at least 2 labelled tracks for cross-validation; "
                              f"too few: {', '.join(small)}")
    k = int(min(max_folds, counts.min()))
    folds = list(StratifiedKFold(n_splits=k, shuffle=True, random_state=random_state).split(X, y))
    record: dict[str, Any] = {"n_splits": k, "shuffle": True, "random_state": random_state,
                              "selection": "mean macro-F1 over folds; ties go to the simpler model",
                              "candidates": {}}
    oof: dict[str, np.ndarray] = {}
    for name, pipe in make_candidates(len(y), random_state=random_state).items():
        pred = np.empty(len(y), dtype=object)
        fold_f1 = []
        for train_idx, test_idx in folds:
            model = clone(pipe).fit(X[train_idx], y[train_idx])
            pred[test_idx] = model.predict(X[test_idx])
            fold_f1.append(f1_score(y[test_idx], pred[test_idx], labels=classes, average="macro", zero_division=0))
        m = _metrics(y, pred, classes)
        oof[name] = pred
        record["candidates"][name] = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                                      "macro_f1_mean": float(np.mean(fold_f1)),
                                      "macro_f1_std": float(np.std(fold_f1))}
        log.info("%s: accuracy %.3f macro-F1 %.3f", name, m["accuracy"], m["macro_f1"])
    best = max(CANDIDATES, key=lambda c: (round(record["candidates"][c]["macro_f1_mean"], 9),
                                         -CANDIDATES.index(c)))
    record.update(_metrics(y, oof[best], classes))
    return best, record


def train(catalog: str | os.PathLike[str] | Catalog, *, labels: str | os.PathLike[str] | pd.DataFrame,
          target: str, features: str | Iterable[str] | None = None, name: str | None = None,
          random_state: int = 0, max_folds: int = MAX_FOLDS) -> TrainedClassifier:
    """Train a classifier of ``target`` on catalog features, chosen by cross-validation.

    Parameters
    ----------
    catalog : path or Catalog
    labels : path or DataFrame
        CSV/Parquet file (or DataFrame) with a ``track_id`` or ``path``
        column and the ``target`` column.
    target : str
        Column holding the class labels.
    features : str or iterable of str, optional
        Embedding model names and/or numeric ``tracks`` columns (``"a,b"``
        works too). Default: ``musicnn-msd`` if the catalog has it, else
        ``descriptor``.
    name : str, optional
        The classifier's name, the ``model`` of its predictions (default: ``target``).
    random_state : int
        Seed of the fold shuffling and the boosting model.
    max_folds : int
        Upper bound of k in the stratified k-fold cross-validation.

    Returns
    -------
    TrainedClassifier
        Refit on every labelled track; ``.report`` holds the CV figures.

    Examples
    --------
    >>> clf = train("cat/", labels="labels.csv", target="drums")   # doctest: +SKIP
    >>> clf.report.confusion_matrix                                # doctest: +SKIP
    >>> clf.save("drums.clf.zip")                                  # doctest: +SKIP
    """
    import sklearn

    cat = open_catalog(catalog)
    name = check_name(name if name is not None else target)
    resolved = resolve_features(cat, split_names(features))
    match = match_labels(cat, labels, target)
    X, usable = load_features(cat, resolved, match.track_ids)
    no_features = int((~usable).sum())
    if no_features:
        log.warning("%d labelled tracks lack a feature (not analyzed, or no %s); left out", no_features,
                    "/".join(f.name for f in resolved if f.kind == "embedding") or "tracks row")
    X, y = X[usable], match.labels[usable].astype(str)
    if len(y) == 0:
        raise ClassifierError(f"no labelled track of {cat.url} has all features "
                              f"({', '.join(f.name for f in resolved)})")
    with _threads_for(len(y)):
        best, cv = cross_validate(X, y, random_state=random_state, max_folds=max_folds)
        pipe = make_candidates(len(y), random_state=random_state)[best].fit(X, y)
    classes, counts = np.unique(y, return_counts=True)
    metadata = {
        "format": bundle.FORMAT,
        "format_version": bundle.FORMAT_VERSION,
        "name": name,
        "model_version": None,
        "target": target,
        "classes": [str(c) for c in pipe.classes_],
        "class_counts": {str(c): int(n) for c, n in zip(classes, counts, strict=True)},
        "estimator": best,
        "features": [f.to_dict() for f in resolved],
        "feature_names": feature_names(resolved),
        "embedding_models": {f.name: f.model_version for f in resolved if f.kind == "embedding"},
        "schema_versions": catalog_schema_versions(cat),
        "cv": cv,
        "training": {
            "catalog": cat.url,
            "labels": "DataFrame" if isinstance(labels, pd.DataFrame) else str(Path(labels).expanduser().resolve()),
            "tracks": int(len(y)),
            "without_features": no_features,
            **match.to_dict(),
        },
        "trained_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "mirflow_version": __version__,
        "sklearn_version": sklearn.__version__,
        "numpy_version": np.__version__,
        "skops_version": _skops_version(),
    }
    clf = TrainedClassifier(pipe, metadata)
    clf.model_bytes  # noqa: B018 - fixes model_version now
    return clf


def _threads_for(n_samples: int):
    """One OpenMP/BLAS thread for small training sets.

    Gradient boosting on a few dozen tracks took 12.7 s per fit with 2 OpenMP
    threads on a busy 2-core machine and 1.1 s with one (measured while
    writing this); threads only pay off on large sets.
    """
    from contextlib import nullcontext

    if n_samples >= SMALL_TRAINING_SET:
        return nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1)


def check_name(name: str) -> str:
    """A classifier name usable as a folder name of the predictions table."""
    if not _SAFE_NAME.match(name):
        raise ClassifierError(f"classifier name {name!r} must be 1–64 letters, digits, '.', '_' or '-' "
                              "(it names a folder of the predictions table)")
    return name


def _skops_version() -> str:
    from importlib.metadata import version

    return version("skops")


def load_classifier(path: str | os.PathLike[str], *, catalog: str | os.PathLike[str] | Catalog | None = None,
                    trusted: Iterable[str] = ()) -> TrainedClassifier:
    """Load a classifier bundle written by :meth:`TrainedClassifier.save`.

    Parameters
    ----------
    path : path
    catalog : path or Catalog, optional
        Check that this catalog provides the classifier's features (embedding
        model versions, schema versions, columns); raises
        :class:`~mirflow.ml.errors.IncompatibleModelError` otherwise.
    trusted : iterable of str
        Extra types (dotted names) to trust beyond scikit-learn and numpy
        classes; only for files whose origin you know.

    Raises
    ------
    ModelFileError
        Not a bundle, or its model bytes do not match the recorded version.
    UntrustedModelError
        The model holds a type outside the allow-list.
    """
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"cannot read classifier {path}: {exc.strerror or exc}") from None
    clf = from_bundle_bytes(data, where=str(path), trusted=trusted)
    if catalog is not None:
        clf.check_compatible(catalog)
    return clf


def from_bundle_bytes(data: bytes, *, where: str = "classifier", trusted: Iterable[str] = ()) -> TrainedClassifier:
    """A :class:`TrainedClassifier` from the bytes of a bundle (trust checks included)."""
    import sklearn

    model_bytes, metadata = bundle.unpack(data, where=where)
    pipe = bundle.load_model(model_bytes, extra_trusted=trusted, where=where)
    if not hasattr(pipe, "predict_proba") or [str(c) for c in getattr(pipe, "classes_", [])] != metadata["classes"]:
        raise ModelFileError(f"{where}: the model does not match its metadata (classes {metadata['classes']})")
    if metadata.get("sklearn_version") != sklearn.__version__:
        log.warning("%s was saved with scikit-learn %s, this is %s; predictions may differ slightly",
                    where, metadata.get("sklearn_version"), sklearn.__version__)
    return TrainedClassifier(pipe, metadata, model_bytes=model_bytes)


def as_classifier(model: TrainedClassifier | str | os.PathLike[str]) -> TrainedClassifier:
    if isinstance(model, TrainedClassifier):
        return model
    return load_classifier(model)

