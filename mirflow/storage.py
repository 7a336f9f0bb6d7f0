"""Object storage (``s3://``, ``gs://``, ``memory://``, …) for catalogs and inputs, through fsspec.

A path with a URL scheme is opened with :func:`fsspec.core.url_to_fs`, so
every fsspec implementation works, with its own configuration: for S3 the
usual AWS variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL`` for MinIO, Ceph or a local
server) or fsspec's own (``FSSPEC_S3_ENDPOINT_URL``, ``~/.config/fsspec``).
Workers open the same URL in their own process, so the variables must be
set where the workers run too (a local cluster inherits them).

Local paths never go through here: ``file://`` and plain paths keep the
POSIX code paths (rename, inode identity), which object stores lack.

Examples
--------
>>> is_url("s3://bucket/catalog"), is_url("/data/catalog"), is_url("file:///data/x.flac")
(True, False, False)
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["etag_id", "filesystem", "is_url", "local_copy", "object_identity", "storage_errors", "url_of"]

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def is_url(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names an object in an fsspec file system (any scheme but ``file``)."""
    if not isinstance(path, str):
        return False
    m = _SCHEME.match(path)
    return m is not None and m.group(1).lower() != "file"


def filesystem(url: str) -> tuple[Any, str]:
    """``(fsspec filesystem, path inside it)`` of ``url``; the filesystem lists afresh every time.

    fsspec caches directory listings per filesystem instance, and an instance
    is shared by everything in the process; a catalog is written by other
    processes (workers, other runs), so a cached listing would be stale.
    """
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url)
    except ImportError as exc:  # fsspec names the package that implements the scheme
        from mirflow.errors import CatalogError

        raise CatalogError(f"{url}: {exc} (for s3:// install mirflow's `s3` extra: pip install 'mirflow[s3]')") \
            from None
    fs.invalidate_cache()
    return fs, path.rstrip("/")


def _is_storage_error(exc: BaseException) -> bool:
    # fsspec maps missing objects and buckets to OSError subclasses; the
    # clients' own errors (no credentials, endpoint down, access denied) are
    # their own classes, e.g. botocore.exceptions.NoCredentialsError.
    module = type(exc).__module__ or ""
    return isinstance(exc, OSError) or module.split(".")[0] in {"botocore", "aiobotocore", "google", "azure",
                                                                  "aiohttp", "gcsfs", "adlfs"}


class storage_errors:  # noqa: N801 -- a context manager used like a function, as contextlib's are
    """Turn an object store's failure into one clear :class:`~mirflow.errors.CatalogError` line.

    With ``missing_ok``, :class:`FileNotFoundError` (no such object: a
    normal answer for a read or a listing) passes through, without the
    traceback it came with: fsspec's ``sync()`` keeps the exception in a
    local of a frame that traceback holds, a cycle that pins every caller's
    frame (and any open file in one) until the garbage collector runs. A
    class, not ``contextlib.contextmanager``, which puts the traceback back.
    """

    def __init__(self, action: str, url: str, *, missing_ok: bool = False) -> None:
        self.action, self.url, self.missing_ok = action, url, missing_ok

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        from mirflow.errors import CatalogError

        if exc is None or not isinstance(exc, Exception) or isinstance(exc, CatalogError):
            return False
        if self.missing_ok and isinstance(exc, FileNotFoundError):
            exc.__traceback__ = None
            return False
        if not _is_storage_error(exc):
            return False
        hint = ""
        if self.url.startswith("s3://"):
            hint = (" (credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or ~/.aws, endpoint from "
                    "AWS_ENDPOINT_URL for MinIO or a local server; does the bucket exist?)")
        raise CatalogError(f"cannot {self.action} {self.url}: {type(exc).__name__}: {exc}{hint}") from None


def url_of(fs: Any, path: str | PurePosixPath) -> str:
    """The URL of ``path`` in ``fs`` (the inverse of :func:`filesystem`)."""
    return fs.unstrip_protocol(str(path))


def object_identity(url: str) -> tuple[int, int, int, int]:
    """``(size, mtime_ns, mtime_ns, etag_id)`` of an object: any rewrite changes it.

    The same shape as a local file's ``(size, mtime_ns, ctime_ns, inode)``
    so that the ``files`` table and the changed-file checks serve both:
    object stores have no ctime or inode, and an object's ETag (its content
    digest, or a per-upload id) changes with every write, so a 63-bit number
    taken from it stands in for the inode.
    """
    fs, path = filesystem(url)
    info = fs.info(path)
    if info.get("type") == "directory":
        raise IsADirectoryError(url)
    modified = info.get("LastModified") or info.get("mtime") or info.get("created")
    if hasattr(modified, "timestamp"):
        mtime_ns = int(modified.timestamp() * 1e9)
    else:
        mtime_ns = int(float(modified or 0) * 1e9)
    tag = info.get("ETag") or info.get("etag") or info.get("md5Hash") or info.get("generation") or mtime_ns
    return int(info["size"]), mtime_ns, mtime_ns, etag_id(str(tag))


def etag_id(tag: str) -> int:
    """A non-negative 63-bit number for an object's ETag (quotes ignored), to store where an inode goes."""
    return int.from_bytes(hashlib.blake2b(tag.strip('"').encode(), digest_size=8).digest(), "big") >> 1


@contextlib.contextmanager
def local_copy(url: str) -> Iterator[str]:
    """Download the object ``url`` into a temporary file (same suffix) for the decoders; delete it after.

    The decoders (libsndfile, ffmpeg) read files, and probing, hashing and
    decoding each read the bytes: one download serves all three.
    """
    fs, path = filesystem(url)
    suffix = PurePosixPath(path).suffix
    fd, tmp = tempfile.mkstemp(prefix="mirflow-object-", suffix=suffix)
    os.close(fd)
    try:
        fs.get_file(path, tmp)
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
