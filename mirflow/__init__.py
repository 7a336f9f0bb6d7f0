"""mirflow: music-information-retrieval catalogs to Parquet, in batch, on Dask.

The library is importable without starting anything heavy: extractors import
their backends (librosa, essentia, madmom) lazily, inside worker processes.
"""

from mirflow._version import __version__
from mirflow.errors import (
    CatalogError,
    ConfigError,
    MirflowError,
    ParameterError,
    SchemaError,
    TrackError,
)

__all__ = [
    "__version__",
    "CatalogError",
    "ConfigError",
    "MirflowError",
    "ParameterError",
    "SchemaError",
    "TrackError",
]
