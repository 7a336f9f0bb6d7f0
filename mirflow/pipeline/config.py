"""Pipeline configuration: YAML files in ``pipelines/``, validated before anything runs.

A pipeline names its extractors and their parameters, the decode settings
and the runtime budget. :func:`load_pipeline` checks every key, builds every
extractor (so bad parameters fail here, naming the key) and checks that the
columns and tables they emit are declared in ``schemas/``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mirflow.audio.decode import DecodeLimits
from mirflow.catalog.schema import load_schemas, table_schema
from mirflow.errors import ConfigError, MirflowError, MissingBackendError
from mirflow.extractors import registry
from mirflow.extractors.base import Extractor
from mirflow.extractors.requirements import Requirement
from mirflow.resources import pipelines_dir

log = logging.getLogger(__name__)

_TOP_KEYS = {"name", "version", "description", "decode", "runtime", "extractors"}
_DECODE_KEYS = {"analysis_sample_rate_hz": (int, 8000, 192000), "max_duration_s": (float, 1.0, 86400.0),
                "max_decoded_mib": (float, 1.0, 1048576.0), "window_s": (float, 30.0, 3600.0),
                "window_context_s": (float, 0.0, 120.0)}
_RUNTIME_KEYS = {"timeout_s": (float, 1.0, 86400.0), "retries": (int, 0, 10)}


@dataclass(frozen=True)
class PipelineConfig:
    """A validated pipeline: extractors instantiated, settings checked.

    The ``fingerprint`` identifies what the pipeline computes (its name,
    version, decode settings, and each extractor's name, version and
    parameters); a track already analyzed under the same fingerprint is
    skipped. Runtime settings (timeout, retries) do not change results and
    are not part of it.
    """

    name: str
    version: int
    description: str
    extractors: tuple[Extractor, ...]
    max_duration_s: float = 3600.0
    #: Cap on the decoded samples (float32, native rate, all channels); ``None``
    #: derives it from ``max_duration_s`` (see :class:`~mirflow.audio.decode.DecodeLimits`).
    #: A safety limit, not part of the fingerprint: it changes no result of a track it admits.
    max_decoded_mib: float | None = None
    #: Tracks longer than twice this are decoded and analyzed in windows of this length (plus
    #: ``window_context_s`` of context each side), one at a time, and each extractor merges the
    #: windows' results (:meth:`~mirflow.extractors.base.Extractor.merge`): memory bounded by a
    #: window's, whatever the track's length. ``None``: every track is analyzed whole.
    window_s: float | None = None
    window_context_s: float = 12.0
    timeout_s: float = 900.0
    retries: int = 2
    source: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @functools.cached_property
    def fingerprint(self) -> str:
        payload = {
            "name": self.name,
            "version": self.version,
            "decode": {"max_duration_s": self.max_duration_s,
                       **({"window_s": self.window_s, "window_context_s": self.window_context_s}
                          if self.window_s is not None else {})},
            "extractors": [{"name": e.name, "version": e.version, "params": e.params.to_dict()}
                           for e in self.extractors],
        }
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return f"{self.name}-v{self.version}-{hashlib.blake2b(blob, digest_size=6).hexdigest()}"

    @property
    def decode_limits(self) -> DecodeLimits:
        """The limits every track is checked against, from the header and again while decoding."""
        if self.max_decoded_mib is None:
            return DecodeLimits.for_duration(self.max_duration_s)
        return DecodeLimits(max_duration_s=self.max_duration_s,
                            max_decoded_bytes=int(self.max_decoded_mib * 2**20))

    def windowed(self, duration_s: float) -> bool:
        """Whether a track of ``duration_s`` (0: unknown, a stream) is analyzed in windows."""
        return self.window_s is not None and (duration_s <= 0 or duration_s > 2.0 * self.window_s)

    @property
    def tables(self) -> tuple[str, ...]:
        """Long tables this pipeline writes besides tracks/files/errors."""
        out: list[str] = []
        for e in self.extractors:
            out.extend(t for t in e.tables if t not in out)
        return tuple(out)


def _check_section(section: str, raw: Any, spec: dict[str, tuple[type, float, float]]) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"pipeline section {section!r} must be a mapping")
    out = {}
    for key, value in raw.items():
        if key not in spec:
            raise ConfigError(f"unknown key {section}.{key!r}; known: {sorted(spec)}")
        typ, lo, hi = spec[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (typ is int and not isinstance(value, int)):
            raise ConfigError(f"{section}.{key} must be a {typ.__name__}, got {value!r}")
        if not lo <= value <= hi:
            raise ConfigError(f"{section}.{key} = {value!r} is out of range [{lo}, {hi}]")
        out[key] = typ(value)
    return out


def validate_extractor_outputs(ex: Extractor) -> None:
    """Fail if ``ex`` emits a column or table that ``schemas/`` does not declare."""
    tracks = set(table_schema("tracks").names)
    missing = [c for c in ex.columns if c not in tracks]
    if missing:
        raise ConfigError(f"extractor {ex.name!r} emits columns not declared in schemas/tracks.yaml: {missing}")
    unknown = [t for t in ex.tables if t not in load_schemas()]
    if unknown:
        raise ConfigError(f"extractor {ex.name!r} emits tables without a schema: {unknown}")


def check_requirements(pipeline: PipelineConfig, *, fetch: bool = True) -> None:
    """Fail before any work when a backend of ``pipeline`` is not usable here.

    Fetchable requirements (musicnn's weights, from PyPI) are fetched once,
    here, when ``fetch``.

    Raises
    ------
    MissingBackendError
        One message naming every missing package with the command that
        installs it, and a shipped pipeline that would run instead.
    """
    problems = requirement_problems(pipeline, fetch=fetch)
    if not problems:
        return
    lines = [f"pipeline {pipeline.name!r} cannot run here:"]
    for req, (users, why) in problems.items():
        lines.append(f"  {req.name} (needed by {', '.join(users)}): {why}")
        lines.append(f"    install it with: {req.install}")
    runnable = [name for name in available_pipelines() if name != pipeline.name
                and not requirement_problems(load_pipeline(name), fetch=False)]
    if runnable:
        lines.append(f"or run a pipeline whose backends are all here: --pipeline {runnable[0]}")
    raise MissingBackendError("\n".join(lines))


def requirement_problems(pipeline: PipelineConfig, *, fetch: bool = False,
                         ) -> dict[Requirement, tuple[list[str], str]]:
    """``{requirement: (extractors that need it, why it is not usable)}`` for what is missing here."""
    users: dict[Requirement, list[str]] = {}
    for ex in pipeline.extractors:
        for req in ex.requirements():
            names = users.setdefault(req, [])
            if ex.name not in names:
                names.append(ex.name)
    out = {}
    for req, names in users.items():
        why = req.problem(fetch=fetch)
        if why is not None:
            out[req] = (names, why)
    return out


def parse_pipeline(raw: Mapping[str, Any], *, source: str | None = None) -> PipelineConfig:
    """Validate a pipeline mapping (the parsed YAML) and build its extractors."""
    if not isinstance(raw, Mapping):
        raise ConfigError("a pipeline file must hold a mapping")
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"unknown pipeline key(s) {sorted(unknown)}; known: {sorted(_TOP_KEYS)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.replace("-", "_").isidentifier():
        raise ConfigError(f"pipeline 'name' must be a plain identifier, got {name!r}")
    version = raw.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigError(f"pipeline 'version' must be a positive integer, got {version!r}")
    decode = _check_section("decode", raw.get("decode"), _DECODE_KEYS)
    if "analysis_sample_rate_hz" in decode:
        # Accepted so that older pipeline files still load, but no extractor
        # ever read it: each declares its own rate. Not part of the fingerprint.
        log.warning("pipeline %r: decode.analysis_sample_rate_hz is ignored (each extractor analyzes at its own "
                    "rate, recorded in lineage); remove it from the file", name)
    runtime = _check_section("runtime", raw.get("runtime"), _RUNTIME_KEYS)
    specs = raw.get("extractors")
    if not isinstance(specs, list) or not specs:
        raise ConfigError("pipeline 'extractors' must be a non-empty list")
    extractors: list[Extractor] = []
    columns_seen: dict[str, str] = {}
    for i, spec in enumerate(specs):
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise ConfigError(f"extractors[{i}] must be a name or a mapping with 'name'")
        extra = set(spec) - {"name", "params"}
        if extra:
            raise ConfigError(f"extractors[{i}] ({spec['name']}): unknown key(s) {sorted(extra)}; use 'params'")
        params = spec.get("params") or {}
        if not isinstance(params, Mapping):
            raise ConfigError(f"extractors[{i}] ({spec['name']}): 'params' must be a mapping")
        try:
            ex = registry.get(spec["name"])(dict(params))
        except ConfigError:
            raise
        except MirflowError as exc:
            raise ConfigError(str(exc)) from None
        validate_extractor_outputs(ex)
        if ex in extractors:
            # The same instance twice would write every row of its tables twice.
            raise ConfigError(f"extractors[{i}] ({ex.name} with {ex.params.to_dict()}) is listed twice")
        for col in ex.columns:
            if col in columns_seen:
                raise ConfigError(f"column {col!r} is emitted by both {columns_seen[col]!r} and {ex.name!r}")
            columns_seen[col] = ex.name
        extractors.append(ex)
    if "window_s" in decode:
        for ex in extractors:
            if not ex.merges_windows():
                raise ConfigError(f"decode.window_s: extractor {ex.name!r} ({ex.params.to_dict()}) cannot merge "
                                  "the windows of a long track; remove window_s or the extractor")
            longest = getattr(ex.params, "max_duration_s", None)
            if ex.name == "fingerprint" and longest is not None and longest > decode["window_s"]:
                raise ConfigError(f"decode.window_s ({decode['window_s']:g} s) must be at least the fingerprint's "
                                  f"max_duration_s ({longest:g} s): the first window holds the fingerprinted audio")
    return PipelineConfig(
        name=name,
        version=version,
        description=str(raw.get("description", "")),
        extractors=tuple(extractors),
        max_duration_s=decode.get("max_duration_s", 3600.0),
        max_decoded_mib=decode.get("max_decoded_mib"),
        window_s=decode.get("window_s"),
        window_context_s=decode.get("window_context_s", 12.0),
        timeout_s=runtime.get("timeout_s", 900.0),
        retries=runtime.get("retries", 2),
        source=source,
        raw=dict(raw),
    )


def available_pipelines() -> dict[str, Path]:
    """Pipelines that ship with mirflow, by name."""
    return {p.stem: p for p in sorted(pipelines_dir().glob("*.yaml"))}


def load_pipeline(name_or_path: str | os.PathLike[str] = "default") -> PipelineConfig:
    """Load and validate a shipped pipeline by name, or a YAML file by path.

    Examples
    --------
    >>> p = load_pipeline("default")
    >>> p.name, [e.name for e in p.extractors][:2]
    ('default', ['metadata', 'fingerprint'])
    """
    text = str(name_or_path)
    shipped = available_pipelines()
    if text in shipped:
        path = shipped[text]
    else:
        path = Path(text)
        if not path.is_file():
            raise ConfigError(f"no pipeline named {text!r} and no such file; shipped: {sorted(shipped)}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        return parse_pipeline(raw, source=str(path))
    except ConfigError as exc:
        raise ConfigError(f"{path.name}: {exc}") from None
