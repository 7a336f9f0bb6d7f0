"""Read-only access to one catalog for the HTTP API: a locked-down DuckDB connection.

Every value a client sends reaches SQL as a bound parameter only; table and
column names in the SQL text come from this module and the catalog schema,
never from a request.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import duckdb

from mirflow.catalog.layout import Catalog
from mirflow.catalog.schema import table_schema
from mirflow.errors import CatalogError
from mirflow.query import connect

log = logging.getLogger(__name__)

#: A track id: BLAKE2b-128 of the file bytes, 32 lowercase hex characters.
TRACK_ID_PATTERN = r"^[0-9a-f]{32}$"
_TRACK_ID_RE = re.compile(TRACK_ID_PATTERN)

#: Columns of the ``tracks`` table that ``GET /tracks`` returns per item (the
#: full row, vectors included, is ``GET /tracks/{track_id}``).
SUMMARY_COLUMNS: tuple[str, ...] = (
    "track_id", "path", "duration_s", "tempo_bpm", "tempo_confidence", "meter", "key",
    "key_camelot", "key_confidence", "loudness_integrated_lufs", "energy", "danceability",
)

#: The in-memory table the list endpoint filters (a snapshot taken at start-up).
_SUMMARY_TABLE = "serve_track_summary"


@dataclass(frozen=True)
class TrackFilters:
    """Validated, canonical filters of the list and similarity endpoints.

    ``key`` is spelled as the ``key`` column spells it (``'A minor'``) and
    ``camelot`` as ``key_camelot`` does (``'8A'``); :mod:`mirflow.labels`
    produced both.
    """

    tempo_min: float | None = None
    tempo_max: float | None = None
    key: str | None = None
    camelot: str | None = None

    def as_mapping(self) -> dict[str, object]:
        """The filters that are set, in the form :func:`mirflow.index.similar` takes."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


def is_track_id(text: str) -> bool:
    """True when ``text`` is a well-formed track id (32 lowercase hex characters)."""
    return bool(_TRACK_ID_RE.fullmatch(text))


def jsonable(value: Any) -> Any:
    """A catalog value as JSON: NaN/inf → None, timestamps ISO 8601, arrays and tuples → lists, bytes base64."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        # Binary columns (path_bytes: a path that is not UTF-8) as base64, JSON's usual spelling.
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (dt.datetime, dt.date)):
        return None if value != value else value.isoformat()  # pandas NaT is a datetime, and NaT != NaT
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return jsonable(value.tolist())
    if type(value).__name__ == "NAType":  # pandas.NA
        return None
    return str(value)


class CatalogStore:
    """A catalog opened read-only for serving.

    Parameters
    ----------
    catalog : path or Catalog
        The catalog folder (must hold ``manifest.json``).

    Notes
    -----
    The connection is :func:`mirflow.query.connect`'s, locked down after the
    views exist: DuckDB may then read files under the catalog folder only
    (``allowed_directories``), nothing else (``enable_external_access =
    false``: no other files, no URLs, no extension installs), and
    ``lock_configuration`` stops any later statement from undoing that.

    The list endpoint filters a snapshot of :data:`SUMMARY_COLUMNS` taken at
    start-up (one small row per track, in memory), so a request costs a scan
    of that table instead of opening every part file of the catalog; a single
    track is read with :meth:`Catalog.rows_of` (its loose part, or a point
    look-up in the compacted files). Tracks analyzed after start-up show
    up in ``GET /tracks/{id}`` but not in the list until a restart.
    """

    def __init__(self, catalog: str | os.PathLike[str] | Catalog) -> None:
        self.catalog = catalog if isinstance(catalog, Catalog) else Catalog(catalog)
        manifest = self.catalog.read_manifest()
        if manifest is None:
            raise CatalogError(f"{self.catalog.url} is not a mirflow catalog (no manifest.json)")
        self.manifest: dict[str, Any] = manifest
        self.pipeline: str = str(manifest.get("pipeline") or "default")
        # Unlocked for the set-up below; _lock_down confines it to the catalog folder.
        self._con = connect(self.catalog, read_only=False)
        columns = {d[0] for d in self._con.execute("SELECT * FROM tracks LIMIT 0").description}
        self.summary_columns: tuple[str, ...] = tuple(c for c in SUMMARY_COLUMNS if c in columns)
        self._track_columns: tuple[str, ...] = tuple(table_schema("tracks").names)
        self._con.execute(
            f"CREATE TABLE {_SUMMARY_TABLE} AS SELECT {', '.join(self.summary_columns)} FROM current_tracks"
        )
        self.locked_down = _lock_down(self._con, self.catalog.root)
        self.track_count: int = self._con.execute(f"SELECT count(*) FROM {_SUMMARY_TABLE}").fetchone()[0]

    def close(self) -> None:
        self._con.close()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        # One cursor (a connection to the same in-memory database, with its
        # settings and tables) per call: requests run on several threads.
        return self._con.cursor()

    def embedding_models(self) -> list[str]:
        """Embedding models the catalog holds (partition folders of ``embeddings``)."""
        return self.catalog.partitions("embeddings")

    # ------------------------------------------------------------------ reads
    def get_track(self, track_id: str) -> dict[str, Any] | None:
        """The full ``tracks`` row of ``track_id`` as JSON-ready values; None when it is not there."""
        if not is_track_id(track_id):
            raise ValueError(f"not a track id: {track_id!r}")
        # Catalog.rows_of: the track's loose part when it has one (a tombstone
        # when deleted), else its rows in the compacted generation; the file
        # names come from the validated id, never from raw request text.
        rows = self.catalog.rows_of("tracks", track_id)
        if rows.num_rows == 0:
            return None
        row = {name: jsonable(value) for name, value in rows.slice(0, 1).to_pylist()[0].items()}
        # A part written before a column joined the schema lacks it; compacted
        # files have every column: null-fill, as read_table does, so a track
        # reads the same whether or not it was compacted.
        return {name: row.get(name) for name in self._track_columns} | row

    def has_track(self, track_id: str) -> bool:
        return is_track_id(track_id) and self.catalog.rows_of("tracks", track_id).num_rows > 0

    def list_tracks(self, filters: TrackFilters, *, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
        """``(total, rows)``: tracks matching ``filters``, ordered by track id, one page of them."""
        where, params = _where(filters)
        cur = self._cursor()
        try:
            total = cur.execute(f"SELECT count(*) FROM {_SUMMARY_TABLE}{where}", params).fetchone()[0]
            rows = cur.execute(
                f"SELECT {', '.join(self.summary_columns)} FROM {_SUMMARY_TABLE}{where} "
                "ORDER BY track_id LIMIT ? OFFSET ?", [*params, limit, offset],
            ).fetchall()
        finally:
            cur.close()
        return int(total), [{c: jsonable(v) for c, v in zip(self.summary_columns, row, strict=True)} for row in rows]


def _where(filters: TrackFilters) -> tuple[str, list[object]]:
    """A WHERE clause of fixed text with one ``?`` per filter value (the similarity search's own builder)."""
    from mirflow.index.search import filters_sql

    clauses, params = filters_sql(dataclasses.asdict(filters))
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _lock_down(con: duckdb.DuckDBPyConnection, root: os.PathLike[str] | str) -> bool:
    """Confine DuckDB to the catalog folder and lock its configuration; False if this DuckDB cannot.

    ``allowed_directories`` arrived in DuckDB 1.3; without it, turning
    external access off would also block the views' own reads of the
    catalog, so an older DuckDB is left unlocked (with a warning). No request
    text reaches SQL either way: this is a second line of defence.
    """
    try:
        con.execute("SET allowed_directories = ?", [[os.path.join(os.fspath(root), "")]])
    except duckdb.Error as exc:
        log.warning("DuckDB %s cannot confine reads to the catalog (%s); external access stays on",
                    duckdb.__version__, exc)
        return False
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return True

