"""``mirflow classify``: classifiers trained on the downstream catalog's tables, and predictions on Dask.

The catalog (tests/downstream_catalog.py) holds 24 generated tracks whose
labels are exact: drums / no_drums and major / minor, 12 of each. Chance is
0.5 for both. Measured with this code (5-fold stratified CV, seeds 0–2):
drums on musicnn-msd 0.917–0.958, drums on the descriptor embedding 1.000,
mode on descriptor 0.917–0.958, mode on musicnn-msd 0.417 (musicnn's MSD
tags carry no mode), mode on chroma_mean 0.625–0.667. The thresholds below
(drums ≥ 0.80, mode ≥ 0.75) leave two to four misclassified tracks of margin.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from mirflow.catalog import Catalog, conform, table_schema
from mirflow.cli.main import main
from mirflow.ml import (
    IncompatibleModelError,
    ModelFileError,
    TrainedClassifier,
    UntrustedModelError,
    bundle,
    load_classifier,
    train,
)
from mirflow.ml.classifier import compatibility_problems
from mirflow.ml.labels import match_labels
from mirflow.query import connect, read_table

#: Cross-validated accuracy a classifier must reach (chance: 0.5; measured figures in the module docstring).
MIN_DRUMS_ACCURACY = 0.80
MIN_MODE_ACCURACY = 0.75


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def trained(downstream_catalog, tmp_path_factory):
    """Classifiers of drums (default features) and mode (descriptor), saved; a private catalog copy."""
    catalog, labels = downstream_catalog
    root = tmp_path_factory.mktemp("ml")
    cat = root / "catalog"
    shutil.copytree(catalog, cat)
    drums = train(cat, labels=labels, target="drums")
    mode = train(cat, labels=labels, target="mode", features="descriptor")
    return {"catalog": cat, "labels": labels, "root": root, "drums": drums, "mode": mode,
            "drums_path": drums.save(root / "drums.clf.zip"), "mode_path": mode.save(root / "mode.clf.zip")}


def copy_catalog(trained, tmp_path: Path) -> Path:
    dest = tmp_path / "catalog"
    shutil.copytree(trained["catalog"], dest)
    return dest


# --------------------------------------------------------------------------- training
@pytest.mark.slow
def test_classifiers_reach_accuracy_well_above_chance(trained):
    for key, minimum in (("drums", MIN_DRUMS_ACCURACY), ("mode", MIN_MODE_ACCURACY)):
        clf: TrainedClassifier = trained[key]
        report = clf.report
        assert report.accuracy >= minimum, f"{key}: {report.to_text()}"
        assert report.macro_f1 >= minimum - 0.05
        cm = report.confusion_matrix
        assert list(cm.index) == list(cm.columns) == clf.classes
        assert int(cm.to_numpy().sum()) == 24
        # Accuracy is the confusion matrix's diagonal share (both come from the out-of-fold predictions).
        assert np.trace(cm.to_numpy()) / 24 == pytest.approx(report.accuracy)
        assert set(report.candidates["estimator"]) == {"logistic_regression", "hist_gradient_boosting"}
        assert report.estimator in set(report.candidates["estimator"])
    assert trained["drums"].classes == ["drums", "no_drums"]
    assert trained["mode"].classes == ["major", "minor"]
    assert trained["drums"].metadata["features"][0]["name"] == "musicnn-msd"  # the default


@pytest.mark.slow
def test_metadata_records_versions(trained):
    cat = trained["catalog"]
    meta = load_classifier(trained["drums_path"]).metadata
    emb = read_table(cat, "embeddings", partition="musicnn-msd")
    assert meta["embedding_models"] == {"musicnn-msd": emb["model_version"].iloc[0]}
    assert meta["features"][0]["width"] == len(emb["embedding"].iloc[0])
    manifest = json.loads((cat / "manifest.json").read_text())
    assert meta["schema_versions"] == {t: manifest["schemas"][t] for t in ("tracks", "embeddings")}
    for key in ("sklearn_version", "mirflow_version", "trained_at", "model_version", "classes", "cv",
                "feature_names", "target", "name"):
        assert meta[key], key
    assert len(meta["feature_names"]) == meta["features"][0]["width"]
    assert meta["cv"]["confusion_matrix"] == trained["drums"].report.confusion_matrix.to_numpy().tolist()
    assert meta["training"]["matched_tracks"] == 24 and meta["training"]["unmatched"] == 0


@pytest.mark.slow
def test_saved_file_is_a_skops_bundle_not_a_pickle(trained, capsys):
    path = trained["drums_path"]
    assert zipfile.is_zipfile(path)
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["metadata.json", "model.skops"]
        model_bytes = zf.read("model.skops")
        meta = json.loads(zf.read("metadata.json"))
    assert not model_bytes.startswith(b"\x80")  # pickle protocol 2+ opcode
    with zipfile.ZipFile(__import__("io").BytesIO(model_bytes)) as inner:
        assert "schema.json" in inner.namelist()  # skops' own format
    assert meta["model_version"] == bundle.model_version_of(model_bytes)
    loaded = load_classifier(path, catalog=trained["catalog"])
    assert loaded.model_version == trained["drums"].model_version
    rc, out, _ = run_cli(capsys, "classify", "show", path, "--catalog", trained["catalog"])
    assert rc == 0 and loaded.model_version in out and "compatible" in out and "musicnn-msd" in out
    ids = sorted(Catalog(trained["catalog"]).existing_tracks())[:5]
    a, _ = trained["drums"].predict_frame(trained["catalog"], ids)
    b, _ = loaded.predict_frame(trained["catalog"], ids)
    pd.testing.assert_frame_equal(a, b)


class Sneaky(BaseEstimator, ClassifierMixin):
    """A class outside scikit-learn and numpy: what a hostile file would ask skops to build."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X):
        return np.full((len(X), len(self.classes_)), 1 / len(self.classes_))


def _write_bundle(path: Path, pipeline) -> Path:
    import skops.io

    model_bytes = skops.io.dumps(pipeline)
    bundle.write_bundle(path, model_bytes, {
        "format": bundle.FORMAT, "format_version": bundle.FORMAT_VERSION, "name": "x",
        "model_version": bundle.model_version_of(model_bytes), "classes": ["a", "b"]})
    return path


def test_loading_refuses_untrusted_types_and_altered_files(tmp_path):
    X = np.random.default_rng(0).normal(size=(20, 3))
    y = np.array(["a", "b"] * 10)
    good = _write_bundle(tmp_path / "good.zip", Pipeline([("classify", LogisticRegression())]).fit(X, y))
    clf = load_classifier(good)  # sklearn + numpy types only: loads
    assert clf.pipeline.predict_proba(X).shape == (20, 2)
    evil = _write_bundle(tmp_path / "evil.zip", Pipeline([("classify", Sneaky())]).fit(X, y))
    with pytest.raises(UntrustedModelError, match="Sneaky"):
        load_classifier(evil)
    # Trusting it by name is the caller's explicit choice.
    assert isinstance(load_classifier(evil, trusted=[f"{__name__}.Sneaky"]).pipeline[-1], Sneaky)
    # The allow-list holds classes, not any name under sklearn/numpy.
    assert bundle._is_trusted_class("sklearn.pipeline.Pipeline")
    assert not bundle._is_trusted_class("numpy.load")
    assert not bundle._is_trusted_class("os.system")
    assert not bundle._is_trusted_class("sklearn.nonexistent.Thing")
    # Model bytes swapped after saving: refused before skops sees them.
    with zipfile.ZipFile(good) as zf:
        meta = zf.read("metadata.json")
    with zipfile.ZipFile(evil) as zf:
        evil_model = zf.read("model.skops")
    with zipfile.ZipFile(tmp_path / "swapped.zip", "w") as zf:
        zf.writestr("metadata.json", meta)
        zf.writestr("model.skops", evil_model)
    with pytest.raises(ModelFileError, match="altered"):
        load_classifier(tmp_path / "swapped.zip")
    (tmp_path / "not.zip").write_bytes(b"\x80\x04K\x01.")  # a pickle of 1
    with pytest.raises(ModelFileError, match="not a mirflow classifier"):
        load_classifier(tmp_path / "not.zip")


# --------------------------------------------------------------------------- compatibility
def _set_embedding_version(cat: Path, model: str, version: str) -> None:
    part = sorted((cat / "embeddings" / model).rglob("*.parquet"))[0]
    table = pq.read_table(part)
    i = table.schema.get_field_index("model_version")
    table = table.set_column(i, table.schema.field(i), pa.array([version] * table.num_rows, pa.string()))
    pq.write_table(table, part)


@pytest.mark.slow
def test_incompatible_catalog_fails_with_a_clear_message(trained, tmp_path, capsys):
    cat = copy_catalog(trained, tmp_path)
    _set_embedding_version(cat, "musicnn-msd", "9.9.9+retrained")
    with pytest.raises(IncompatibleModelError) as err:
        load_classifier(trained["drums_path"], catalog=cat)
    msg = str(err.value)
    assert "musicnn-msd" in msg and "9.9.9+retrained" in msg
    assert trained["drums"].metadata["embedding_models"]["musicnn-msd"] in msg
    # The mode classifier uses the descriptor embedding only: still fine.
    load_classifier(trained["mode_path"], catalog=cat)
    rc, _, stderr = run_cli(capsys, "classify", "predict", cat, "--model", trained["drums_path"], "--no-progress")
    assert rc == 2
    assert stderr.strip().startswith("mirflow: error:") and len(stderr.strip().splitlines()) == 1
    assert not (cat / "predictions").exists()

    # A schema version that differs from the one trained on.
    manifest = json.loads((cat / "manifest.json").read_text())
    manifest["schemas"]["tracks"] = manifest["schemas"]["tracks"] + 1
    (cat / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IncompatibleModelError, match="tracks schema version"):
        load_classifier(trained["mode_path"], catalog=cat)

    # A feature column the catalog's schema lacks, or one of another type.
    meta = dict(trained["mode"].metadata)
    meta["features"] = [{"name": "no_such_column", "kind": "column", "width": 1, "type": "float64"},
                        {"name": "mfcc_mean", "kind": "column", "width": 12, "type": "float32[12]"}]
    problems = compatibility_problems(meta, Catalog(trained["catalog"]))
    assert any("no_such_column" in p and "missing" in p for p in problems)
    assert any("mfcc_mean" in p and "float32[13]" in p for p in problems)


# --------------------------------------------------------------------------- labels
def test_labels_keyed_by_track_id_or_relative_path(downstream_catalog, tmp_path, monkeypatch):
    catalog, labels = downstream_catalog
    cat = Catalog(catalog)
    by_path = match_labels(cat, labels, "mode")
    assert len(by_path.track_ids) == 24 and by_path.unmatched == 0
    files = read_table(catalog, "files")[["path", "track_id"]]
    df = pd.read_csv(labels).merge(files, on="path").drop(columns="path")
    df = pd.concat([df, pd.DataFrame({"track_id": ["0" * 32], "mode": ["major"]})])
    df.to_parquet(tmp_path / "by_id.parquet")
    by_id = match_labels(cat, tmp_path / "by_id.parquet", "mode")
    assert by_id.key == "track_id" and by_id.unmatched == 1
    assert by_id.track_ids == by_path.track_ids
    assert list(by_id.labels) == list(by_path.labels)
    # Relative paths are made absolute (as the catalog stores them).
    audio_dir = Path(pd.read_csv(labels)["path"].iloc[0]).parent
    rel = pd.read_csv(labels)
    rel["path"] = [Path(p).name for p in rel["path"]]
    rel.to_csv(tmp_path / "rel.csv", index=False)
    monkeypatch.chdir(audio_dir)
    assert match_labels(cat, tmp_path / "rel.csv", "mode").track_ids == by_path.track_ids


@pytest.mark.slow
def test_cli_train_on_track_id_labels(trained, tmp_path, capsys):
    files = read_table(trained["catalog"], "files")[["path", "track_id"]]
    df = pd.read_csv(trained["labels"]).merge(files, on="path")[["track_id", "drums"]]
    df = pd.concat([df, pd.DataFrame({"track_id": ["f" * 32, "e" * 32], "drums": ["drums", "no_drums"]})])
    df.to_csv(tmp_path / "labels.csv", index=False)
    out = tmp_path / "drums-desc.clf.zip"
    rc, stdout, _ = run_cli(capsys, "classify", "train", trained["catalog"], "--labels", tmp_path / "labels.csv",
                            "--target", "drums", "--features", "descriptor,onset_rate_per_s", "--model", out)
    assert rc == 0
    assert "24 tracks matched, 2 unmatched" in stdout
    assert "confusion matrix" in stdout and "no_drums" in stdout
    clf = load_classifier(out)
    assert clf.name == "drums-desc"
    assert [f.name for f in clf.features] == ["descriptor", "onset_rate_per_s"]
    assert clf.report.accuracy >= MIN_DRUMS_ACCURACY
    assert f"accuracy:  {clf.report.accuracy:.3f}" in stdout


@pytest.mark.parametrize("case", ["no_key", "no_target", "no_match", "one_example", "bad_feature",
                                  "text_feature"])
def test_bad_label_files_give_one_error_line(downstream_catalog, tmp_path, capsys, case):
    catalog, labels = downstream_catalog
    df = pd.read_csv(labels)
    target, features = "drums", "descriptor"
    if case == "no_key":
        df = df.rename(columns={"path": "file"})
    elif case == "no_target":
        target = "genre"
    elif case == "no_match":
        df["path"] = [f"/nowhere/{i}.wav" for i in range(len(df))]
    elif case == "one_example":
        df.loc[0, "drums"] = "cowbell"
    elif case == "bad_feature":
        features = "descriptor,no_such_thing"
    elif case == "text_feature":
        features = "key"
    df.to_csv(tmp_path / "labels.csv", index=False)
    rc, _, stderr = run_cli(capsys, "classify", "train", catalog, "--labels", tmp_path / "labels.csv",
                            "--target", target, "--features", features, "--model", tmp_path / "m.zip")
    assert rc == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mirflow: error:"), stderr
    expected = {"no_key": "'track_id' or 'path'", "no_target": "'genre'", "no_match": "none of the 24 labels",
                "one_example": "'cowbell' (1)", "bad_feature": "'no_such_thing'", "text_feature": "not numeric"}
    assert expected[case] in lines[0]
    assert not (tmp_path / "m.zip").exists()


# --------------------------------------------------------------------------- predict
@pytest.mark.slow
def test_cli_predict_writes_incremental_predictions(trained, tmp_path, capsys):
    from distributed import LocalCluster

    cat = copy_catalog(trained, tmp_path)
    model = trained["drums_path"]
    track_ids = sorted(Catalog(cat).existing_tracks())
    # The first run starts its own LocalCluster; the later ones use --scheduler.
    rc, out, _ = run_cli(capsys, "classify", "predict", cat, "--model", model, "--workers", "2", "--no-progress")
    assert rc == 0, out
    assert "predicted: 24" in out and "skipped (already predicted): 0" in out

    preds = read_table(cat, "predictions", partition="drums")
    assert len(preds) == 24 * 2
    assert sorted(preds["track_id"].unique()) == track_ids
    assert set(preds["label"]) == {"drums", "no_drums"}
    assert (preds["model_version"] == trained["drums"].model_version).all()
    sums = preds.groupby("track_id")["score"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-5)
    for tid in track_ids:  # one part per track, named by it, in the model's folder
        part = cat / "predictions" / "drums" / tid[:2] / f"{tid}.parquet"
        table = pq.read_table(part)
        assert table.schema.metadata[b"mirflow.table"] == b"predictions"
        assert conform("predictions", table).equals(table)
    assert set(table_schema("predictions").primary_key) == {"track_id", "model", "label"}
    # The scores say the training labels back (these tracks were in the training set).
    files = read_table(cat, "files")[["path", "track_id"]]
    truth = pd.read_csv(trained["labels"]).merge(files, on="path").set_index("track_id")["drums"]
    best = preds.loc[preds.groupby("track_id")["score"].idxmax()].set_index("track_id")["label"]
    assert (best == truth.loc[best.index]).mean() >= MIN_DRUMS_ACCURACY

    rc, out, _ = run_cli(capsys, "query", cat, "select model, count(*) as n from predictions group by model")
    assert rc == 0 and "drums" in out and "48" in out
    assert connect(cat).execute("select count(*) from predictions_drums").fetchone()[0] == 48

    mtimes = {p: p.stat().st_mtime_ns for p in (cat / "predictions").rglob("*.parquet")}
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        rc, out, _ = run_cli(capsys, "classify", "predict", cat, "--model", model, "--no-progress")
        assert rc == 0 and "predicted: 0" in out and "skipped (already predicted): 24" in out
        assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes

        # A track without predictions (a new one) is the only one predicted.
        gone = cat / "predictions" / "drums" / track_ids[3][:2] / f"{track_ids[3]}.parquet"
        gone.unlink()
        rc, out, _ = run_cli(capsys, "classify", "predict", cat, "--model", model, "--scheduler", address,
                             "--no-progress")
        assert rc == 0 and "predicted: 1" in out and "skipped (already predicted): 23" in out
        assert gone.exists()

        # Another classifier: its own folder; --force redoes everything.
        rc, out, _ = run_cli(capsys, "classify", "predict", cat, "--model", trained["mode_path"],
                             "--scheduler", address, "--batch-size", "5", "--no-progress")
        assert rc == 0 and "predicted: 24" in out and "in 5 tasks" in out
        rc, out, _ = run_cli(capsys, "classify", "predict", cat, "--model", model, "--scheduler", address,
                             "--force", "--no-progress")
        assert rc == 0 and "predicted: 24" in out and "skipped (already predicted): 0" in out

        # A track whose embedding is gone is reported, not predicted from imputed values.
        lost = track_ids[5]
        (cat / "embeddings" / "musicnn-msd" / lost[:2] / f"{lost}.parquet").unlink()
        (cat / "predictions" / "drums" / lost[:2] / f"{lost}.parquet").unlink()
        rc, out, _ = run_cli(capsys, "classify", "predict", cat, "--model", model, "--scheduler", address,
                             "--no-progress")
        assert rc == 0 and "predicted: 0" in out and "lacking features: 1" in out and lost in out
    con = connect(cat)
    assert con.execute("select count(*) from predictions").fetchone()[0] == 94
    assert sorted(r[0] for r in con.execute("select distinct model from predictions").fetchall()) == ["drums", "mode"]


# --------------------------------------------------------------------------- compacted catalogs
@pytest.fixture(scope="module")
def compacted(trained, tmp_path_factory) -> Path:
    """A compacted copy of the training catalog: no loose tracks or embeddings parts are left."""
    from mirflow.catalog.compact import compact

    dest = tmp_path_factory.mktemp("ml-compacted") / "catalog"
    shutil.copytree(trained["catalog"], dest)
    compact(Catalog(dest))
    assert not Catalog(dest).parts("tracks") and not Catalog(dest).parts("embeddings")
    return dest


def test_features_and_training_read_a_compacted_catalog_alike(trained, compacted):
    from mirflow.ml.features import embedding_versions, load_features

    loose, folded = Catalog(trained["catalog"]), Catalog(compacted)
    track_ids = sorted(loose.existing_tracks())
    for key in ("drums", "mode"):
        clf: TrainedClassifier = trained[key]
        X, usable = load_features(loose, clf.features, track_ids)
        Xc, usable_c = load_features(folded, clf.features, track_ids)
        assert usable.all() and usable_c.all()
        np.testing.assert_array_equal(Xc, X)
        assert compatibility_problems(clf.metadata, folded) == []
    for model in loose.partitions("embeddings"):
        assert embedding_versions(folded, model) == embedding_versions(loose, model)
    mode = train(compacted, labels=trained["labels"], target="mode", features="descriptor")
    assert mode.report.accuracy == trained["mode"].report.accuracy


@pytest.mark.slow
def test_predict_skips_predicted_tracks_of_a_compacted_catalog(trained, compacted, tmp_path):
    from distributed import Client

    from mirflow.catalog.compact import compact
    from mirflow.ml import predict

    cat = tmp_path / "catalog"
    shutil.copytree(compacted, cat)
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        first = predict(cat, model=trained["mode_path"], client=client)
        assert (first.predicted, first.skipped) == (24, 0)
        compact(Catalog(cat))  # the predictions too: none is a loose part now
        assert not Catalog(cat).parts("predictions")
        again = predict(cat, model=trained["mode_path"], client=client)
        assert (again.predicted, again.skipped) == (0, 24)
        # A removed track's predictions (a tombstone over compacted rows) are made again.
        gone = sorted(Catalog(cat).existing_tracks())[3]
        assert Catalog(cat).remove_part("predictions", gone, partition="mode")
        third = predict(cat, model=trained["mode_path"], client=client)
        assert (third.predicted, third.skipped) == (1, 23)
    preds = read_table(cat, "predictions", partition="mode")
    assert len(preds) == 24 * 2 and preds["track_id"].nunique() == 24
