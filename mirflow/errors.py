"""The one exception hierarchy of mirflow.

Configuration errors (:class:`ConfigError` and its subclasses) are raised
before anything is scheduled. Per-track errors (:class:`TrackError` and its
subclasses) are caught at the runtime boundary only, in
:mod:`mirflow.pipeline.task`, and become rows of the ``errors`` table.
"""

from __future__ import annotations


class MirflowError(Exception):
    """Base class of every error mirflow raises on purpose."""


class ConfigError(MirflowError):
    """A pipeline, parameter or command-line setting is invalid."""


class MissingBackendError(ConfigError):
    """A pipeline needs a package, program or model that is not installed here."""


class ParameterError(ConfigError):
    """An extractor parameter is unknown, of the wrong type or out of range."""


class SchemaError(MirflowError):
    """A table batch does not match its declared schema, or schema files drift."""


class CatalogError(MirflowError):
    """The catalog directory is unusable (wrong pipeline, unreadable manifest)."""


class CatalogFullError(CatalogError):
    """The catalog's file system is full; the run stops and resumes once there is space."""


class ModelUnavailableError(MirflowError):
    """A model's weights are not installed and cannot be fetched."""


class TrackError(MirflowError):
    """Analysis of one track failed; becomes a row in the ``errors`` table.

    Parameters
    ----------
    message : str
        Human-readable reason.
    stage : str
        Where it failed: ``hash``, ``probe``, ``decode``, ``extract:NAME``,
        ``write`` or ``timeout``.
    """

    stage = "extract"

    def __init__(self, message: str, *, stage: str | None = None) -> None:
        super().__init__(message)
        if stage is not None:
            self.stage = stage


class ProbeError(TrackError):
    """The file is not readable audio (empty, not audio, unsupported, too long)."""

    stage = "probe"


class DecodeError(TrackError):
    """The decoder failed on a file that probed as audio (truncated, corrupt)."""

    stage = "decode"


class ExtractionError(TrackError):
    """An extractor failed on a decoded track."""

    stage = "extract"


class TrackTimeout(TrackError):
    """A track exceeded the pipeline's per-track time budget."""

    stage = "timeout"
