"""Errors of :mod:`mirflow.ml`; all are :class:`~mirflow.errors.MirflowError` (one ``mirflow: error:`` line)."""

from __future__ import annotations

from mirflow.errors import MirflowError


class ClassifierError(MirflowError):
    """A label file, feature list or training set cannot be used."""


class LabelError(ClassifierError):
    """The label file is unreadable, lacks its key or target column, or matches no track."""


class FeatureError(ClassifierError):
    """A feature name is neither an embedding model of the catalog nor a numeric ``tracks`` column."""


class ModelFileError(ClassifierError):
    """A saved classifier is not a mirflow classifier bundle, or its bytes were altered."""


class UntrustedModelError(ModelFileError):
    """A saved classifier holds types outside the allow-list; it is not loaded."""


class IncompatibleModelError(ClassifierError):
    """A classifier does not fit a catalog: a feature is missing or a model/schema version differs."""
