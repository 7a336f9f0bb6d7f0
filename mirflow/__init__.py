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
    import pandas



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
    "analyze_file",
    "CatalogError",
    "ConfigError",
    "MirflowError",
    "ParameterError",
    "SchemaError",
    "TrackError",
]
