"""Extractors: one module per feature family, registered explicitly in :mod:`.registry`."""

from mirflow.extractors.base import Extraction, Extractor, Params, param
from mirflow.extractors.registry import create, get, names, register

__all__ = ["Extraction", "Extractor", "Params", "create", "get", "names", "param", "register"]
