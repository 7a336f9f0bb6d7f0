"""The extractor contract.

An extractor is a small class with a ``name``, a ``version``, a frozen,
keyword-only parameter dataclass whose fields declare their ranges or
choices, the ``tracks`` columns and long tables it emits, the shared inputs
it ``requires`` from the :class:`~mirflow.frontend.Frontend`, and one pure
:meth:`Extractor.extract` that always returns an :class:`Extraction`.
``tests/test_extractor_contract.py`` runs every registered extractor through
the same checks.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np

from mirflow.errors import ExtractionError, ParameterError
from mirflow.extractors.requirements import Requirement

P = TypeVar("P", bound="Params")


def param(default: Any, *, range: tuple[float | None, float | None] | None = None,  # noqa: A002
          choices: Sequence[Any] | None = None, doc: str = "") -> Any:
    """Declare a parameter field with its default, allowed range or choices and a description.

    ``range`` is inclusive; either bound may be ``None``.
    """
    meta: dict[str, Any] = {"doc": doc}
    if range is not None:
        meta["range"] = range
    if choices is not None:
        meta["choices"] = tuple(choices)
    return field(default=default, metadata=meta)


@dataclass(frozen=True, kw_only=True)
class Params:
    """Base of every extractor's parameters: frozen, keyword-only, validated on creation."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            default = f.default
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ParameterError(f"{self._where(f.name)} must be true or false, got {value!r}")
            elif isinstance(default, int) and not isinstance(default, bool):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ParameterError(f"{self._where(f.name)} must be an integer, got {value!r}")
            elif isinstance(default, float):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise ParameterError(f"{self._where(f.name)} must be a finite number, got {value!r}")
                object.__setattr__(self, f.name, float(value))
            elif isinstance(default, str) and not isinstance(value, str):
                raise ParameterError(f"{self._where(f.name)} must be a string, got {value!r}")
            elif isinstance(default, tuple) and isinstance(value, list):
                object.__setattr__(self, f.name, value := tuple(value))
            choices = f.metadata.get("choices")
            if choices is not None:
                values = value if isinstance(value, tuple) else (value,)
                bad = [v for v in values if v not in choices]
                if bad:
                    raise ParameterError(
                        f"{self._where(f.name)} = {bad[0]!r} is not one of {list(choices)}"
                    )
            bounds = f.metadata.get("range")
            if bounds is not None:
                lo, hi = bounds
                if (lo is not None and value < lo) or (hi is not None and value > hi):
                    raise ParameterError(
                        f"{self._where(f.name)} = {value!r} is out of range [{lo}, {hi}]"
                    )

    def _where(self, name: str) -> str:
        return f"parameter {name!r} of {type(self).__name__}"

    @classmethod
    def from_mapping(cls: type[P], mapping: Mapping[str, Any] | None) -> P:
        """Build from a mapping (a pipeline YAML's ``params``); unknown keys are errors that name the key."""
        mapping = dict(mapping or {})
        known = {f.name for f in dataclasses.fields(cls)}
        for key in mapping:
            if key not in known:
                raise ParameterError(
                    f"unknown parameter {key!r} for {cls.__name__}; known: {sorted(known)}"
                )
        return cls(**mapping)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        """Each parameter's name, default, range/choices and description (for docs and ``mirflow extractors``)."""
        return [
            {"name": f.name, "default": f.default, "range": f.metadata.get("range"),
             "choices": f.metadata.get("choices"), "doc": f.metadata.get("doc", "")}
            for f in dataclasses.fields(cls)
        ]


@dataclass(frozen=True)
class Extraction:
    """What an extractor returns for one track.

    Attributes
    ----------
    columns : mapping
        Values of the extractor's ``tracks`` columns (exactly the declared
        ones; ``None`` where there is no value, e.g. no key in silence).
    tables : mapping
        Long tables: table name to a mapping of column name to a list of
        values, without ``track_id`` (the writer adds it).
    notes : tuple of str
        Human-readable remarks (e.g. "silent: no tempo") logged at debug level.
    reasons : tuple of str
        Why values are empty, as short fixed phrases that count well in SQL
        (``silent``, ``too short``, ``flat pitch-class profile``, …); stored
        in ``tracks.empty_reasons`` as ``"EXTRACTOR: reason"``. Empty when the
        extractor gave every value it could.
    summary : mapping
        What :meth:`Extractor.merge` needs of this result beyond the columns
        and tables when it is one window of a long track (key probabilities,
        loudness blocks, …). Never written.
    """

    columns: Mapping[str, Any] = field(default_factory=dict)
    tables: Mapping[str, Mapping[str, Sequence[Any]]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    summary: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WindowPart:
    """One window's :class:`Extraction` of a long track, with where the window lies.

    Times in ``extraction`` are relative to the window's first sample
    (``start_s`` in the track; its audio ends at ``end_s``); the window's own
    share of the track is ``[core_start_s, core_end_s)``, and the shares of a
    track's windows tile it. See :func:`mirflow.audio.decode.iter_windows`.
    """

    start_s: float
    core_start_s: float
    core_end_s: float
    end_s: float
    extraction: Extraction

    @property
    def core_s(self) -> float:
        """Length of the window's own share."""
        return self.core_end_s - self.core_start_s

    def owns(self, window_times_s: Sequence[float] | np.ndarray) -> np.ndarray:
        """Which of these window-relative times fall in the window's share (a boolean mask).

        Compared in tenths of a millisecond, so that an event two windows
        both find at the edge of their shares (a patch grid point) belongs to
        exactly one of them: the windows' starts are whole samples, so the
        two windows' times of one grid point differ by up to a sample (23 µs
        at 44.1 kHz), and the sums by their rounding.
        """
        t = np.round(self.start_s + np.asarray(window_times_s, dtype=np.float64), 4)
        return (t >= round(self.core_start_s, 4)) & (t < round(self.core_end_s, 4))


def longest_reason(parts: Sequence[WindowPart]) -> str:
    """The reason of the windows that cover most of the track among those that gave one (``no value`` if none)."""
    totals: dict[str, float] = {}
    for part in parts:
        for r in part.extraction.reasons:
            totals[r] = totals.get(r, 0.0) + part.core_s
    return max(totals, key=lambda r: (totals[r], r)) if totals else "no value"


def window_weights(parts: Sequence[WindowPart], counts: Sequence[float] | None = None) -> np.ndarray:
    """Weights of windows in a merged mean: each window's share of the track (times ``counts`` if given).

    ``counts`` are how many frames a window's value averages over (its
    active frames, say); a window's value stands for its share, which is
    ``core_s / window length`` of those frames.
    """
    w = np.array([part.core_s for part in parts], dtype=np.float64)
    if counts is not None:
        lengths = np.array([part.end_s - part.start_s for part in parts])
        w = np.asarray(counts, dtype=np.float64) * w / np.maximum(lengths, 1e-9)
    return w


class Extractor(ABC):
    """Base class of extractors. Subclasses set the class attributes and implement :meth:`extract`."""

    name: ClassVar[str]
    version: ClassVar[str]
    Params: ClassVar[type[Params]] = Params
    #: ``tracks`` columns this extractor fills (declared in ``schemas/tracks.yaml``).
    columns: ClassVar[tuple[str, ...]] = ()
    #: Long tables this extractor emits rows for (each in ``schemas/``).
    tables: ClassVar[tuple[str, ...]] = ()
    #: Frontend inputs it uses (see :data:`mirflow.frontend.INPUTS`).
    requires: ClassVar[tuple[str, ...]] = ("signal",)
    #: Python modules whose versions are recorded as lineage.
    libraries: ClassVar[tuple[str, ...]] = ()
    #: Licences of the code and models it runs (see docs/licences.md).
    licences: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Params | Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        if isinstance(params, Params):
            if kwargs:
                params = dataclasses.replace(params, **kwargs)
            if not isinstance(params, self.Params):
                raise ParameterError(f"{self.name}: expected {self.Params.__name__}, got {type(params).__name__}")
            self.params = params
        else:
            merged = dict(params or {})
            merged.update(kwargs)
            try:
                self.params = self.Params.from_mapping(merged)
            except ParameterError as exc:
                raise ParameterError(f"extractor {self.name!r}: {exc}") from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.params == other.params  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self.params))

    @abstractmethod
    def extract(self, frontend: Any) -> Extraction:
        """Compute this extractor's outputs for one track. Pure: same input, same output."""

    def merges_windows(self) -> bool:
        """Whether :meth:`merge` can combine window results of a long track (pipelines with ``window_s``)."""
        return False

    def merge(self, parts: Sequence[WindowPart]) -> Extraction:
        """Combine the results of a long track's windows, in track order, into the track's result.

        Times in the merged tables are track times; values that are sums or
        means count each window's own share once. Extractors that can say
        :meth:`merges_windows` implement it.
        """
        raise NotImplementedError(f"extractor {self.name!r} cannot merge windows")

    def requirements(self) -> tuple[Requirement, ...]:
        """What this instance's backend needs on a worker (checked before a run starts)."""
        return ()

    # ----------------------------------------------------------------- helpers
    def empty(self, *notes: str, reason: str | None = None) -> Extraction:
        """The outcome when there is nothing to measure: every column null, no table rows, and why.

        ``reason`` is a short fixed phrase (``silent``, ``too short``); without
        one, the first note (or "no value") stands in.
        """
        why = reason or (notes[0] if notes else "no value")
        return Extraction(columns={c: None for c in self.columns},
                          tables={t: {} for t in self.tables}, notes=notes, reasons=(why,))

    def result(self, columns: Mapping[str, Any], tables: Mapping[str, Mapping[str, Sequence[Any]]] | None = None,
               *notes: str, reason: str | None = None, summary: Mapping[str, Any] | None = None) -> Extraction:
        """Build an :class:`Extraction`, checking it names exactly the declared columns and tables.

        ``reason`` says why some values are empty (see :attr:`Extraction.reasons`);
        ``summary`` is what :meth:`merge` needs (see :attr:`Extraction.summary`).
        """
        if set(columns) != set(self.columns):
            missing = sorted(set(self.columns) - set(columns))
            extra = sorted(set(columns) - set(self.columns))
            raise ExtractionError(f"{self.name}: columns differ from declaration (missing {missing}, extra {extra})",
                                  stage=f"extract:{self.name}")
        tables = dict(tables or {})
        if set(tables) - set(self.tables):
            raise ExtractionError(f"{self.name}: undeclared tables {sorted(set(tables) - set(self.tables))}",
                                  stage=f"extract:{self.name}")
        for t in self.tables:
            tables.setdefault(t, {})
        return Extraction(columns=dict(columns), tables=tables, notes=notes,
                          reasons=(reason,) if reason else (), summary=dict(summary or {}))

    def lineage(self) -> dict[str, Any]:
        """Name, version, parameters and library versions, recorded with every row."""
        libs = {}
        for mod in self.libraries:
            try:
                libs[mod] = str(getattr(importlib.import_module(mod), "__version__", "unknown"))
            except ImportError:
                libs[mod] = "missing"
        return {"name": self.name, "version": self.version, "params": self.params.to_dict(), "libraries": libs}
