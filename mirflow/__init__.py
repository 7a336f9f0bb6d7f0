"""mirflow: music-information-retrieval catalogs to Parquet, in batch, on Dask.

The library is importable without starting anything heavy: extractors import
their backends (librosa, essentia, madmom) lazily, inside worker processes.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from mirflow._version import __version__
from mirflow.errors import (
    CatalogError,
    ConfigError,
    MirflowError,
    ParameterError,
    SchemaError,
    TrackError,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    import pandas

    from mirflow.pipeline.runner import RunSummary



def analyze(
    inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    catalog: str | os.PathLike[str],
    *,
    pipeline: str | os.PathLike[str] = "default",
    workers: int = 2,
    scheduler: str | None = None,
    force: bool = False,
    limit: int | None = None,
    dry_run: bool = False,
) -> RunSummary:
    """Analyze audio files, folders, globs or manifests into a catalog; the run's summary.

    A process-based Dask cluster starts its workers by re-importing the
    calling script, so call this under ``if __name__ == "__main__":``.

    Parameters
    ----------
    inputs : path or list of paths
        Files, folders (walked), globs or manifests; ``~`` is expanded.
    catalog : path
        The catalog folder (created if missing).
    pipeline : str or path
        A shipped pipeline name or a pipeline YAML file.
    workers : int
        Local worker processes (ignored with ``scheduler``).
    scheduler : str, optional
        Address of an existing Dask scheduler.
    force, limit, dry_run
        As ``mirflow analyze --force/--limit/--dry-run``.

    Returns
    -------
    RunSummary
        Counts and figures; ``summary.plan`` lists what was analyzed and skipped.

    Examples
    --------
    >>> import mirflow                                             # doctest: +SKIP
    >>> if __name__ == "__main__":                                 # doctest: +SKIP
    ...     summary = mirflow.analyze("~/music", "cat/", workers=4)
    ...     print(summary.analyzed, summary.failed)
    """
    from mirflow.pipeline.runner import ClusterOptions
    from mirflow.pipeline.runner import analyze as _analyze

    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    summary, _ = _analyze(list(inputs), os.path.expanduser(os.fspath(catalog)), pipeline=pipeline,
                          cluster=ClusterOptions(workers=workers, scheduler=scheduler),
                          force=force, limit=limit, dry_run=dry_run)
    return summary


def analyze_file(path: str | os.PathLike[str], pipeline: str | os.PathLike[str] = "default",
                 ) -> dict[str, pandas.DataFrame]:
    """Analyze one audio file without a catalog; ``{table: pandas.DataFrame}`` of the rows a catalog would get.

    The one entry into the analysis layer for the downstream packages and for
    users who want one track (see :func:`mirflow.pipeline.task.analyze_file`).

    Examples
    --------
    >>> import mirflow                                   # doctest: +SKIP
    >>> rows = mirflow.analyze_file("song.flac")         # doctest: +SKIP
    >>> rows["tracks"][["tempo_bpm", "key"]]             # doctest: +SKIP
    """
    from mirflow.pipeline.task import analyze_file as _analyze_file

    return _analyze_file(path, pipeline)


__all__ = [
    "__version__",
    "analyze",
    "analyze_file",
    "CatalogError",
    "ConfigError",
    "MirflowError",
    "ParameterError",
    "SchemaError",
    "TrackError",
]
