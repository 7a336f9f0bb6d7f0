"""The classifier file: a zip bundle of a skops model and a JSON metadata record.

::

    drums.clf.zip
      metadata.json   format, name, model_version, features and their versions,
                      schema versions, classes, CV metrics, library versions, date
      model.skops     the scikit-learn Pipeline, saved by skops.io (no pickle)

``model_version`` is the first 16 hex digits of the BLAKE2b hash of
``model.skops``: it names exactly these fitted parameters, is written into
every prediction row, and is checked when the bundle is read (a bundle whose
model bytes were swapped is refused).

Loading never trusts blindly: :func:`skops.io.get_untrusted_types` lists the
types the file would instantiate beyond skops' defaults, and each must be a
class of scikit-learn or numpy (resolved by import, so a function or an
arbitrary object path is refused); anything else raises
:class:`~mirflow.ml.errors.UntrustedModelError` unless the caller names it.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import zipfile
from collections.abc import Iterable
from typing import Any

from mirflow.ml.errors import ModelFileError, UntrustedModelError

FORMAT = "mirflow-classifier"
FORMAT_VERSION = 1
METADATA_NAME = "metadata.json"
MODEL_NAME = "model.skops"
#: Top-level packages whose classes a model may instantiate on load.
TRUSTED_PACKAGES = ("sklearn", "numpy")


def model_version_of(model_bytes: bytes) -> str:
    """The version string of a saved model: BLAKE2b-64 of its skops bytes, hex."""
    return hashlib.blake2b(model_bytes, digest_size=8).hexdigest()


def pack(model_bytes: bytes, metadata: dict[str, Any]) -> bytes:
    """The bundle's bytes (a zip of ``metadata.json`` and ``model.skops``)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(METADATA_NAME, json.dumps(metadata, indent=2, sort_keys=True))
        zf.writestr(MODEL_NAME, model_bytes)
    return buf.getvalue()


def write_bundle(path: str | os.PathLike[str], model_bytes: bytes, metadata: dict[str, Any]) -> None:
    """Write a bundle atomically (a temporary file renamed into place)."""
    path = os.fspath(path)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(pack(model_bytes, metadata))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def unpack(data: bytes, *, where: str = "classifier") -> tuple[bytes, dict[str, Any]]:
    """``(model_bytes, metadata)`` of a bundle, with its format and model hash checked."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            metadata = json.loads(zf.read(METADATA_NAME).decode("utf-8"))
            model_bytes = zf.read(MODEL_NAME)
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{where} is not a mirflow classifier bundle ({exc})") from None
    if metadata.get("format") != FORMAT:
        raise ModelFileError(f"{where} is not a mirflow classifier bundle (format {metadata.get('format')!r})")
    if int(metadata.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelFileError(f"{where} has bundle format {metadata['format_version']}; this mirflow reads "
                             f"up to {FORMAT_VERSION}: upgrade mirflow")
    if model_version_of(model_bytes) != metadata.get("model_version"):
        raise ModelFileError(f"{where}: model.skops does not match its recorded model_version "
                             f"{metadata.get('model_version')}; the file was altered")
    return model_bytes, metadata


def _is_trusted_class(type_name: str) -> bool:
    """A dotted name that imports to a class inside :data:`TRUSTED_PACKAGES`."""
    if type_name.split(".", 1)[0] not in TRUSTED_PACKAGES:
        return False
    module_name, _, attr = type_name.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError):
        return False
    return isinstance(obj, type) and obj.__module__.split(".", 1)[0] in TRUSTED_PACKAGES


def trusted_types(model_bytes: bytes, *, extra: Iterable[str] = (), where: str = "classifier") -> list[str]:
    """The explicit ``trusted`` list for :func:`skops.io.loads`.

    Raises
    ------
    UntrustedModelError
        The file holds a type that is neither a scikit-learn/numpy class nor in ``extra``.
    """
    import skops.io

    extra = set(extra)
    untrusted = skops.io.get_untrusted_types(data=model_bytes)
    refused = [t for t in untrusted if t not in extra and not _is_trusted_class(t)]
    if refused:
        raise UntrustedModelError(
            f"refusing to load {where}: it would instantiate types outside the allow-list of "
            f"scikit-learn and numpy classes: {', '.join(refused)} (pass them as trusted= only if "
            "you know where the file comes from)")
    return list(untrusted)


def load_model(model_bytes: bytes, *, extra_trusted: Iterable[str] = (), where: str = "classifier") -> Any:
    """The scikit-learn object in ``model_bytes``, loaded with an explicit, checked trusted list."""
    import skops.io

    trusted = trusted_types(model_bytes, extra=extra_trusted, where=where)
    try:
        return skops.io.loads(model_bytes, trusted=trusted)
    except Exception as exc:  # skops raises many kinds for a damaged or foreign file
        raise ModelFileError(f"cannot load the model in {where}: {type(exc).__name__}: {exc}") from exc
