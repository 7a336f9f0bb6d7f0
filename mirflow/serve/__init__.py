"""A read-only HTTP API (FastAPI) over a catalog.

Reads catalogs only through :mod:`mirflow.query`; never imports :mod:`mirflow.pipeline`.
Uploaded audio is analyzed with :func:`mirflow.analyze_file` in a separate worker
process. Endpoints, limits and security notes: ``docs/api.md``.

Examples
--------
>>> from mirflow.serve import create_app          # doctest: +SKIP
>>> import uvicorn                                # doctest: +SKIP
>>> uvicorn.run(create_app("demo/catalog"), host="127.0.0.1", port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mirflow.serve.limits import (
    DEFAULT_ANALYSIS_TIMEOUT_S,
    DEFAULT_EMBEDDING,
    DEFAULT_MAX_UPLOAD_BYTES,
)

if TYPE_CHECKING:
    from mirflow.serve.app import create_app

__all__ = ["DEFAULT_ANALYSIS_TIMEOUT_S", "DEFAULT_EMBEDDING", "DEFAULT_MAX_UPLOAD_BYTES", "create_app"]


def __getattr__(name: str) -> Any:
    # FastAPI, pydantic and DuckDB load only when an app is built, not when
    # the `mirflow` command line reads this package's defaults.
    if name == "create_app":
        from mirflow.serve.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
