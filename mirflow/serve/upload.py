"""Receive one uploaded audio file, size-limited while it streams in.

Starlette's own form parsing spools a whole upload before the endpoint runs;
here the request body is fed chunk by chunk to python-multipart's streaming
parser, the file part goes straight to a temporary file, and reading stops
the moment the limit is passed, so an oversized upload costs at most the
limit in disk and one chunk in memory.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header

log = logging.getLogger(__name__)

#: The multipart field that carries the audio file.
FILE_FIELD = "file"
#: Bytes of the body allowed on top of the file itself (part headers,
#: boundaries, small extra fields); anything beyond is refused as too large.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
#: A suffix kept from the client's file name (it helps ffprobe guess); the
#: name itself is never used.
_SUFFIX_RE = re.compile(r"\.[A-Za-z0-9]{1,8}")


class UploadError(Exception):
    """An upload the server refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


def content_length_too_large(headers: dict[str, str] | object, *, max_bytes: int) -> bool:
    """True when a declared ``Content-Length`` already exceeds what could be accepted."""
    value = headers.get("content-length") if hasattr(headers, "get") else None
    if value is None:
        return False
    try:
        return int(value) > max_bytes + MULTIPART_OVERHEAD_BYTES
    except ValueError:
        return False


async def receive_upload(chunks: AsyncIterator[bytes], *, content_type: str | None, max_bytes: int,
                         directory: str | os.PathLike[str] | None = None) -> Path:
    """Stream a ``multipart/form-data`` body into a temporary file; return its path.

    Parameters
    ----------
    chunks : async iterator of bytes
        The request body as it arrives (``Request.stream()``).
    content_type : str or None
        The request's ``Content-Type`` header (carries the multipart boundary).
    max_bytes : int
        Largest accepted file; the body may exceed it by
        :data:`MULTIPART_OVERHEAD_BYTES` for the multipart framing.
    directory : path, optional
        Where the temporary file goes (default: the system temporary folder).

    Returns
    -------
    Path
        The temporary file. The caller owns it and must delete it.

    Raises
    ------
    UploadError
        413 once the file or the body passes the limit (the rest of the body is
        not read), 415 for a body that is not multipart, 422 for a malformed
        body or one without a ``file`` part. No file is left behind.
    """
    ctype, options = parse_options_header(content_type or "")
    boundary = options.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise UploadError("send the audio as multipart/form-data with a 'file' field", status=415)

    state = _PartState()
    fd, name = tempfile.mkstemp(prefix="mirflow-upload-", dir=directory)
    path = Path(name)
    out = os.fdopen(fd, "wb")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state.writing:
            state.file_bytes += end - start
            if state.file_bytes > max_bytes:
                raise UploadError(f"upload larger than the limit of {max_bytes} bytes", status=413)
            out.write(data[start:end])

    callbacks = {
        "on_part_begin": state.on_part_begin,
        "on_header_field": state.on_header_field,
        "on_header_value": state.on_header_value,
        "on_header_end": state.on_header_end,
        "on_headers_finished": state.on_headers_finished,
        "on_part_data": on_part_data,
        "on_part_end": state.on_part_end,
        "on_end": state.on_end,
    }
    parser = MultipartParser(boundary, callbacks)
    body_bytes = 0
    try:
        async for chunk in chunks:
            body_bytes += len(chunk)
            if body_bytes > max_bytes + MULTIPART_OVERHEAD_BYTES:
                raise UploadError(f"upload larger than the limit of {max_bytes} bytes", status=413)
            try:
                parser.write(chunk)
            except UploadError:
                raise
            except Exception as exc:  # python-multipart's parse errors
                raise UploadError(f"malformed multipart body: {exc}", status=422) from None
        if not state.ended:
            raise UploadError("incomplete multipart body", status=422)
        if not state.found:
            raise UploadError(f"no '{FILE_FIELD}' field with a file in the upload", status=422)
        if state.file_bytes == 0:
            raise UploadError("the uploaded file is empty", status=422)
        out.close()
        if state.suffix:
            # mkstemp made the name unique; the suffix only helps decoders guess.
            path = path.rename(path.with_name(path.name + state.suffix))
        return path
    except BaseException:
        out.close()
        path.unlink(missing_ok=True)
        raise


class _PartState:
    """Tracks which multipart part is being read: only the first ``file`` part is kept."""

    def __init__(self) -> None:
        self.header_name = b""
        self.header_text = b""
        self.disposition = b""
        self.writing = False
        self.found = False
        self.ended = False
        self.file_bytes = 0
        self.suffix = ""

    def on_part_begin(self) -> None:
        self.disposition = b""
        self.header_name = self.header_text = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_text += data[start:end]

    def on_header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            self.disposition = self.header_text
        self.header_name = self.header_text = b""

    def on_headers_finished(self) -> None:
        _, params = parse_options_header(self.disposition)
        is_file = params.get(b"name") == FILE_FIELD.encode() and b"filename" in params
        self.writing = is_file and not self.found
        if self.writing:
            self.found = True
            filename = params[b"filename"].decode("utf-8", "replace")
            suffix = os.path.splitext(filename.replace("\\", "/").rsplit("/", 1)[-1])[1]
            self.suffix = suffix.lower() if _SUFFIX_RE.fullmatch(suffix) else ""

    def on_part_end(self) -> None:
        self.writing = False

    def on_end(self) -> None:
        self.ended = True
