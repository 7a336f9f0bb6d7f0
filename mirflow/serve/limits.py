"""Defaults and limits of the HTTP API, importable without FastAPI (the CLI's parser reads them)."""

from __future__ import annotations

#: Embedding model the similarity endpoints search by default.
DEFAULT_EMBEDDING = "musicnn-msd"
#: Default upload limit (50 MiB: about five minutes of 16-bit 44.1-kHz stereo WAV).
DEFAULT_MAX_UPLOAD_BYTES = 50 * 1024 * 1024
#: Default wall-time limit of one upload's analysis. The first upload also
#: starts the worker and loads the models (13 s measured on a busy 2-core
#: machine); later 15-s files took 3–5 s (docs/api.md).
DEFAULT_ANALYSIS_TIMEOUT_S = 300.0
#: Uploads being received or analyzed at once; more are refused with 503 so
#: that waiting uploads cannot fill the disk (each may hold max_upload_bytes).
DEFAULT_MAX_PENDING_UPLOADS = 4
#: Largest page of ``GET /tracks`` and largest ``k`` of the similarity endpoints.
MAX_LIMIT = 1000
MAX_K = 1000
#: Largest offset accepted (DuckDB's BIGINT is the hard ceiling; this keeps far from it).
MAX_OFFSET = 10**12
