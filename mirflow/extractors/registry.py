"""Explicit registry of extractors.

Built-in extractors are listed here by name with the module that defines
them, so that importing the registry does not import librosa, essentia or
madmom (the client never needs them; workers import on first use). Plugins
call :func:`register` with their class.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from mirflow.errors import ConfigError
from mirflow.extractors.base import Extractor

#: name -> "module:ClassName". Edit this table to add a built-in extractor.
BUILTIN: dict[str, str] = {
    "metadata": "mirflow.extractors.metadata:MetadataExtractor",
    "loudness": "mirflow.extractors.loudness:LoudnessExtractor",
    "rhythm": "mirflow.extractors.rhythm:RhythmExtractor",
    "key": "mirflow.extractors.key:KeyExtractor",
    "chords": "mirflow.extractors.chords:ChordExtractor",
    "descriptors": "mirflow.extractors.descriptors:DescriptorExtractor",
    "embeddings": "mirflow.extractors.embeddings:EmbeddingExtractor",
    "fingerprint": "mirflow.extractors.fingerprint:FingerprintExtractor",
}

_registered: dict[str, type[Extractor]] = {}
_plugins_loaded = False

#: Comma-separated modules imported before the registry is used; each
#: registers its extractors with :func:`register` at import. Worker
#: processes inherit the variable, so a plugin module on PYTHONPATH is
#: importable wherever its extractor instances are unpickled.
PLUGINS_ENV = "MIRFLOW_PLUGINS"


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            _plugins_loaded = False
            raise ConfigError(f"{PLUGINS_ENV}: cannot import plugin module {module!r}: {exc}") from None


def register(cls: type[Extractor]) -> type[Extractor]:
    """Register an extractor class under ``cls.name`` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Extractor)):
        raise ConfigError(f"{cls!r} is not an Extractor subclass")
    existing = _registered.get(cls.name)
    if existing is not None and existing is not cls:
        raise ConfigError(f"an extractor named {cls.name!r} is already registered ({existing.__module__})")
    _registered[cls.name] = cls
    return cls


def names() -> list[str]:
    """Every extractor name a pipeline may use."""
    _load_plugins()
    return sorted(set(BUILTIN) | set(_registered))


def get(name: str) -> type[Extractor]:
    """The extractor class registered as ``name``."""
    _load_plugins()
    if name in _registered:
        return _registered[name]
    if name not in BUILTIN:
        raise ConfigError(f"unknown extractor {name!r}; available: {names()}")
    module, _, attr = BUILTIN[name].partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if cls.name != name:
        raise ConfigError(f"registry entry {name!r} points at a class named {cls.name!r}")
    _registered[name] = cls
    return cls


def create(name: str, params: dict[str, Any] | None = None) -> Extractor:
    """Instantiate extractor ``name`` with ``params`` (validated)."""
    return get(name)(params or {})
