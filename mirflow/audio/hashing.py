"""Content hash of a file: the ``track_id``."""

from __future__ import annotations

import hashlib
import os

from mirflow.storage import is_url

_CHUNK = 1 << 20


def content_hash(path: str | os.PathLike[str]) -> str:
    """BLAKE2b-128 of the file's bytes, as 32 hex characters.

    The hash of the bytes, not of the decoded audio, so that hashing needs no
    decoder and two copies of one file collapse to one track.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.bin"
    >>> _ = p.write_bytes(b"abc")
    >>> content_hash(p)
    'cf4ab791c62b8d2b2109c90275287816'
    """
    h = hashlib.blake2b(digest_size=16)
    if is_url(path):  # an object in object storage: streamed, never whole in memory
        import fsspec

        opened = fsspec.open(path, "rb")
    else:
        opened = open(path, "rb")
    with opened as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()
