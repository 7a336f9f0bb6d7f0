"""The FastAPI application: read-only endpoints over one catalog.

Build it with :func:`create_app`; ``mirflow serve`` runs it under uvicorn.
"""

from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager
from pathlib import Path as FsPath
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, create_model

from mirflow._version import __version__
from mirflow.catalog.layout import Catalog
from mirflow.catalog.schema import table_schema
from mirflow.errors import MirflowError
from mirflow.serve.analysis import AnalysisFailed, AnalysisPool, analyze_upload
from mirflow.serve.limits import (
    DEFAULT_ANALYSIS_TIMEOUT_S,
    DEFAULT_EMBEDDING,
    DEFAULT_MAX_PENDING_UPLOADS,
    DEFAULT_MAX_UPLOAD_BYTES,
    MAX_K,
    MAX_LIMIT,
    MAX_OFFSET,
)
from mirflow.serve.store import (
    SUMMARY_COLUMNS,
    TRACK_ID_PATTERN,
    CatalogStore,
    TrackFilters,
    jsonable,
)
from mirflow.serve.upload import FILE_FIELD, UploadError, content_length_too_large, receive_upload

log = logging.getLogger(__name__)


_TRACK_ID_DOC = "Track id: BLAKE2b-128 of the file bytes, 32 lowercase hexadecimal characters."

_DESCRIPTION = """\
Read-only HTTP API over one mirflow catalog: look tracks up, filter them by
tempo and key, and find similar tracks by embedding — for a track of the
catalog or for an uploaded audio file.

No endpoint takes a file path, and the server never writes into the catalog.
Errors are JSON objects with a `detail` message.
"""


# --------------------------------------------------------------------- models
def _python_type(type_spec: str) -> Any:
    """The JSON-side Python type of a schema column type string (list elements may be null: NaN)."""
    if type_spec.startswith("list<") and type_spec.endswith(">"):
        return list[_python_type(type_spec[5:-1]) | None]
    if type_spec.endswith("]"):
        return list[_python_type(type_spec[: type_spec.index("[")]) | None]
    if type_spec == "bool":
        return bool
    if type_spec.startswith("int"):
        return int
    if type_spec.startswith("float"):
        return float
    return str  # string; timestamps as ISO 8601, binary as base64


def _row_model(name: str, columns: tuple[str, ...] | None = None) -> type[BaseModel]:
    """A response model of ``tracks`` rows (all columns, or ``columns``), with the schema's descriptions."""
    fields: dict[str, Any] = {}
    for column in table_schema("tracks").columns:
        if columns is not None and column.name not in columns:
            continue
        doc = column.description + (f" [{column.unit}]" if column.unit else "")
        if column.type == "timestamp":
            doc += " (ISO 8601)"
        elif column.type == "binary":
            doc += " (base64)"
        fields[column.name] = (_python_type(column.type) | None, Field(None, description=doc))
    # extra="allow": columns a newer schema adds still pass through.
    return create_model(name, __config__=ConfigDict(extra="allow"), **fields)


Track = _row_model("Track")
TrackSummary = _row_model("TrackSummary", SUMMARY_COLUMNS)


class TrackPage(BaseModel):
    """One page of tracks matching the filters, ordered by track id."""

    total: int = Field(description="Tracks matching the filters, over all pages")
    limit: int = Field(description="Page size asked for")
    offset: int = Field(description="Tracks skipped before this page")
    items: list[TrackSummary] = Field(description="The tracks of this page")  # type: ignore[valid-type]


class Neighbour(BaseModel):
    """A similar track, best first."""

    model_config = ConfigDict(extra="allow")
    rank: int = Field(description="1 = most similar")
    track_id: str
    path: str | None = None
    score: float | None = Field(None, description="Similarity (cosine for normalised embeddings; higher is closer)")
    distance: float | None = Field(None, description="Distance in embedding space (lower is closer)")
    tempo_bpm: float | None = None
    key: str | None = None
    key_camelot: str | None = None
    tempo_ratio: float | None = Field(None, description="Neighbour tempo / query tempo")
    key_relation: str | None = Field(None, description="Harmonic relation of the neighbour's key to the query's")


class SimilarResponse(BaseModel):
    """Neighbours of a query, best first."""

    query: dict[str, Any] = Field(description="What was searched for: the track id, or facts of the uploaded file")
    embedding: str = Field(description="Embedding model searched")
    items: list[Neighbour]


class Health(BaseModel):
    status: str
    mirflow_version: str
    pipeline: str = Field(description="Pipeline that analyzed the catalog (uploads are analyzed with it)")
    tracks: int = Field(description="Tracks served by GET /tracks (snapshot at start-up)")
    embedding: str = Field(description="Embedding model used for similarity")
    embedding_available: bool = Field(description="Whether the catalog holds embeddings of that model")
    index: str = Field(description="The similarity index in use: stored (kind, size) or exact in memory")
    max_upload_bytes: int
    duckdb_locked_down: bool = Field(description="DuckDB confined to the catalog folder, configuration locked")


class ErrorResponse(BaseModel):
    detail: str = Field(description="What went wrong")


# ------------------------------------------------------------------- service
class _Service:
    """What the endpoints share: the store, the analysis pool, the limits."""

    def __init__(self, catalog: Catalog, *, embedding: str, max_upload_bytes: int, analysis_timeout_s: float,
                 upload_dir: str | os.PathLike[str] | None, max_pending_uploads: int) -> None:
        self.catalog = catalog
        self.store = CatalogStore(catalog)
        self.embedding = embedding
        self.embedding_available = embedding in self.store.embedding_models()
        self.index: Any = None
        self.index_description = "none"
        if self.embedding_available:
            self.index, self.index_description = _open_index(catalog, embedding)
        else:
            log.warning("catalog %s holds no %r embeddings (it has: %s); similarity endpoints will answer 503",
                        catalog.url, embedding, ", ".join(self.store.embedding_models()) or "none")
        self.max_upload_bytes = int(max_upload_bytes)
        self.upload_dir = upload_dir
        self.max_pending_uploads = int(max_pending_uploads)
        self.pending_uploads = 0
        self.pool = AnalysisPool(timeout_s=analysis_timeout_s, max_workers=1)

    def similar(self, **kwargs: Any) -> list[dict[str, Any]]:
        """:func:`mirflow.index.similar` on the served embedding, rows as JSON-ready dicts."""
        if not self.embedding_available:
            raise HTTPException(503, f"the catalog has no {self.embedding!r} embeddings to search")
        from mirflow.index import UnknownEmbeddingError, UnknownTrackError, similar

        try:
            frame = similar(self.catalog, embedding=self.embedding, index=self.index, **kwargs)
        except UnknownTrackError as exc:
            raise HTTPException(404, str(exc)) from None
        except UnknownEmbeddingError as exc:
            raise HTTPException(503, str(exc)) from None
        except (MirflowError, ValueError) as exc:
            # e.g. a mix query for a track without tempo or key.
            raise HTTPException(422, str(exc)) from None
        return [{str(k): jsonable(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def _open_index(catalog: Catalog, embedding: str) -> tuple[Any, str]:
    """The similarity index the server keeps for its lifetime, and a line saying which it is.

    The stored index when one was built (``mirflow index build``; a stale one
    is used with a warning), else an exact in-memory index over the catalog's
    vectors. Neither writes into the catalog.
    """
    from mirflow.index import IndexNotFoundError, load_index
    from mirflow.index.search import exact_in_memory

    try:
        index = load_index(catalog, embedding=embedding, on_stale="warn")
    except IndexNotFoundError:
        index = exact_in_memory(catalog, embedding=embedding)
        log.info("%s; `mirflow index build %s --embedding %s` stores a faster one",
                 index.info.message, catalog.url, embedding)
    info = index.info
    stale = " (stale: restart after `mirflow index update`)" if getattr(info, "stale", False) else ""
    return index, f"{info.kind} ({info.index_type}, {info.count} vectors){stale}"


def _service(request: Request) -> _Service:
    return request.app.state.service


def _filters(
    tempo_min: Annotated[float | None, Query(ge=0, le=1000, allow_inf_nan=False,
                                             description="Lowest tempo in BPM (inclusive)")] = None,
    tempo_max: Annotated[float | None, Query(ge=0, le=1000, allow_inf_nan=False,
                                             description="Highest tempo in BPM (inclusive)")] = None,
    key: Annotated[str | None, Query(min_length=1, max_length=32,
                                     description="Key in any spelling mirflow.labels.parse_key reads: "
                                                 "'A minor', 'A:minor', 'Am', 'F#', '8A', '1m'")] = None,
    camelot: Annotated[str | None, Query(pattern=r"^(0?[1-9]|1[0-2])[ABab]$",
                                         description="Camelot code, 1–12 and A (minor) or B (major), e.g. 8A")] = None,
) -> TrackFilters:
    """Validate the filter parameters into canonical spellings."""
    from mirflow.labels import parse_key

    if tempo_min is not None and tempo_max is not None and tempo_min > tempo_max:
        raise HTTPException(422, f"tempo_min ({tempo_min:g}) is above tempo_max ({tempo_max:g})")
    key_label = None
    if key is not None:
        try:
            parsed = parse_key(key)
        except ValueError as exc:
            raise HTTPException(422, f"key: {exc}") from None
        if parsed is None:
            raise HTTPException(422, f"key: {key!r} names no key")
        key_label = parsed.mir_eval
    camelot_code = parse_key(camelot).camelot if camelot is not None else None
    return TrackFilters(tempo_min=tempo_min, tempo_max=tempo_max, key=key_label, camelot=camelot_code)


TrackId = Annotated[str, Path(pattern=TRACK_ID_PATTERN, description=_TRACK_ID_DOC)]
Filters = Annotated[TrackFilters, Depends(_filters)]
K = Annotated[int, Query(ge=1, le=MAX_K, description="Number of neighbours")]
Mix = Annotated[bool, Query(description="Only neighbours to mix with: tempo within ±6 % of the query's (or of "
                                        "its half or double) and a Camelot-compatible key")]
#: Sent with answers given before the request body was read to its end: uvicorn
#: then closes the connection instead of draining (reading and discarding)
#: whatever the client still sends.
_CLOSE = {"Connection": "close"}
_ERRORS = {404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}


# ------------------------------------------------------------------- the app
def create_app(
    catalog: str | os.PathLike[str] | Catalog,
    *,
    embedding: str = DEFAULT_EMBEDDING,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    analysis_timeout_s: float = DEFAULT_ANALYSIS_TIMEOUT_S,
    upload_dir: str | os.PathLike[str] | None = None,
    max_pending_uploads: int = DEFAULT_MAX_PENDING_UPLOADS,
) -> FastAPI:
    """The read-only API over ``catalog`` as a FastAPI application.

    Parameters
    ----------
    catalog : path or Catalog
        A mirflow catalog folder. It is opened read-only: nothing is written into it.
    embedding : str
        Embedding model (partition of the ``embeddings`` table) the similarity endpoints search.
    max_upload_bytes : int
        Largest audio file ``POST /similar`` accepts; larger uploads get 413
        as soon as the limit is passed.
    analysis_timeout_s : float
        Wall-time limit of one upload's analysis (its worker process is killed after it).
    upload_dir : path, optional
        Folder for the temporary upload files (default: the system's); each
        is removed when its request ends.
    max_pending_uploads : int
        Uploads received or analyzed at once; more get 503.

    Returns
    -------
    fastapi.FastAPI

    Examples
    --------
    >>> import uvicorn                                         # doctest: +SKIP
    >>> uvicorn.run(create_app("demo/catalog"), port=8000)     # doctest: +SKIP
    """
    cat = catalog if isinstance(catalog, Catalog) else Catalog(catalog)
    service = _Service(cat, embedding=embedding, max_upload_bytes=max_upload_bytes,
                       analysis_timeout_s=analysis_timeout_s, upload_dir=upload_dir,
                       max_pending_uploads=max_pending_uploads)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            yield
        finally:
            service.pool.close()
            service.store.close()

    app = FastAPI(title="mirflow catalog API", version=__version__, description=_DESCRIPTION, lifespan=lifespan)
    app.state.service = service

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # One readable sentence in `detail`, FastAPI's structured list beside it.
        messages = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body"))
            messages.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return JSONResponse(status_code=422, content={"detail": "; ".join(messages) or "invalid request",
                                                      "errors": jsonable(exc.errors())})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"detail": f"internal error: {type(exc).__name__}"})

    @app.get("/health", response_model=Health, summary="Liveness and what is served")
    def health(svc: Annotated[_Service, Depends(_service)]) -> dict[str, Any]:
        return {"status": "ok", "mirflow_version": __version__, "pipeline": svc.store.pipeline,
                "tracks": svc.store.track_count, "embedding": svc.embedding,
                "embedding_available": svc.embedding_available, "index": svc.index_description, "max_upload_bytes": svc.max_upload_bytes,
                "duckdb_locked_down": svc.store.locked_down}

    @app.get("/tracks", response_model=TrackPage, responses=_ERRORS, summary="List and filter tracks")
    def list_tracks(
        svc: Annotated[_Service, Depends(_service)],
        filters: Filters,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size")] = 50,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Tracks to skip")] = 0,
    ) -> dict[str, Any]:
        """Tracks whose tempo and key match every given filter, ordered by track id (a stable order
        for paging with `limit` and `offset`). Tracks without a tempo or key never match a
        tempo or key filter. Items hold the main per-track values; `GET /tracks/{track_id}` has all."""
        total, items = svc.store.list_tracks(filters, limit=limit, offset=offset)
        return {"total": total, "limit": limit, "offset": offset, "items": items}

    @app.get("/tracks/{track_id}", response_model=Track, responses=_ERRORS, summary="One track's full row")
    def get_track(track_id: TrackId, svc: Annotated[_Service, Depends(_service)]) -> dict[str, Any]:
        """Every column of the `tracks` table for one track (docs/tables.md): missing values
        (NaN, null) are `null`, timestamps ISO 8601, vectors lists."""
        row = svc.store.get_track(track_id)
        if row is None:
            raise HTTPException(404, f"no track {track_id} in this catalog")
        return row

    @app.get("/tracks/{track_id}/similar", response_model=SimilarResponse, responses=_ERRORS,
             summary="Tracks similar to a catalog track")
    def similar_to_track(track_id: TrackId, svc: Annotated[_Service, Depends(_service)], filters: Filters,
                         k: K = 10, mix: Mix = False) -> dict[str, Any]:
        """The `k` nearest tracks by the served embedding (the track itself excluded), optionally
        restricted by the tempo/key filters and to mixable tracks (`mix`)."""
        if not svc.store.has_track(track_id):
            raise HTTPException(404, f"no track {track_id} in this catalog")
        items = svc.similar(track_id=track_id, k=k, mix=mix, filters=filters.as_mapping() or None)
        return {"query": {"track_id": track_id}, "embedding": svc.embedding, "items": items}

    upload_body = {
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": {
                "type": "object", "required": [FILE_FIELD],
                "properties": {FILE_FIELD: {"type": "string", "format": "binary",
                                            "description": "An audio file (wav, flac, ogg, mp3, m4a, …)"}},
            }}},
        }
    }

    @app.post("/similar", response_model=SimilarResponse, openapi_extra=upload_body,
              responses={413: {"model": ErrorResponse}, 415: {"model": ErrorResponse},
                         422: {"model": ErrorResponse}, 503: {"model": ErrorResponse},
                         504: {"model": ErrorResponse}},
              summary="Tracks similar to an uploaded audio file")
    async def similar_to_upload(request: Request, svc: Annotated[_Service, Depends(_service)],
                                filters: Filters, k: K = 10, mix: Mix = False) -> dict[str, Any]:
        """Analyze the uploaded file with the catalog's own pipeline (in a separate worker process,
        with a time limit) and return the `k` catalog tracks nearest to its embedding. The upload is
        refused with 413 as soon as it passes the size limit, and its temporary copy is deleted when
        the request ends. The first upload loads the models (tens of seconds)."""
        if not svc.embedding_available:
            raise HTTPException(503, f"the catalog has no {svc.embedding!r} embeddings to search")
        if content_length_too_large(request.headers, max_bytes=svc.max_upload_bytes):
            raise HTTPException(413, f"upload larger than the limit of {svc.max_upload_bytes} bytes",
                                headers=_CLOSE)
        if svc.pending_uploads >= svc.max_pending_uploads:
            raise HTTPException(503, "too many uploads in progress; retry later",
                                headers={"Retry-After": "30", **_CLOSE})
        svc.pending_uploads += 1
        try:
            try:
                path = await receive_upload(request.stream(), content_type=request.headers.get("content-type"),
                                            max_bytes=svc.max_upload_bytes, directory=svc.upload_dir)
            except UploadError as exc:
                raise HTTPException(exc.status, str(exc), headers=_CLOSE) from None
            try:
                result = await svc.pool.run(analyze_upload, str(path), svc.store.pipeline, svc.embedding)
            except AnalysisFailed as exc:
                raise HTTPException(exc.status, str(exc)) from None
            finally:
                FsPath(path).unlink(missing_ok=True)
        finally:
            svc.pending_uploads -= 1
        error = result.get("error")
        if error:
            if error.get("traceback"):
                log.warning("analysis of an upload failed:\n%s", error["traceback"])
            stage = f" (stage {error['stage']})" if error.get("stage") else ""
            raise HTTPException(int(error["status"]),
                                f"could not analyze the upload{stage}: {error['type']}: {error['message']}")
        import numpy as np

        vector = np.asarray(result["embedding"], dtype=np.float32)
        track = result["track"]
        items = await run_in_threadpool(svc.similar, vector=vector, k=k, mix=mix,
                                        filters=filters.as_mapping() or None,
                                        query_tempo_bpm=jsonable(track.get("tempo_bpm")),
                                        query_key=jsonable(track.get("key")))
        query = {**result["track"], "model_version": result["model_version"]}
        indexed_versions = getattr(getattr(svc.index, "info", None), "model_versions", ())
        if indexed_versions and result["model_version"] not in indexed_versions:
            # Other weights than the catalog's: the vectors may not be comparable.
            query["warning"] = (f"the upload's {svc.embedding} model version {result['model_version']} is not "
                                f"the catalog's ({', '.join(indexed_versions)})")
        return {"query": jsonable(query), "embedding": svc.embedding, "items": items}

    return app
