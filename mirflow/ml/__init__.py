"""scikit-learn classifiers trained on catalog tables; predictions as a long table.

Reads catalogs only through :mod:`mirflow.query` and :mod:`mirflow.catalog`;
never imports :mod:`mirflow.pipeline`. See docs/classify.md.

Examples
--------
>>> from mirflow.ml import train, load_classifier, predict                   # doctest: +SKIP
>>> clf = train("cat/", labels="labels.csv", target="drums")                 # doctest: +SKIP
>>> clf.report.accuracy, clf.report.confusion_matrix                         # doctest: +SKIP
>>> clf.save("drums.clf.zip")                                                # doctest: +SKIP
>>> predict("cat/", model="drums.clf.zip")                                   # doctest: +SKIP
"""

from mirflow.ml.classifier import ClassifierReport, TrainedClassifier, load_classifier, train
from mirflow.ml.errors import (
    ClassifierError,
    FeatureError,
    IncompatibleModelError,
    LabelError,
    ModelFileError,
    UntrustedModelError,
)
from mirflow.ml.prediction import PredictSummary, predict

__all__ = [
    "ClassifierError",
    "ClassifierReport",
    "FeatureError",
    "IncompatibleModelError",
    "LabelError",
    "ModelFileError",
    "PredictSummary",
    "TrainedClassifier",
    "UntrustedModelError",
    "load_classifier",
    "predict",
    "train",
]
