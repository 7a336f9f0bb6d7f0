"""Expand the INPUT arguments of ``mirflow analyze`` into a list of paths.

An input may be a file, a directory (walked recursively for audio
extensions), a glob, or a manifest: a ``.txt``/``.lst``/``.m3u``/``.m3u8``
file with one path per line, or a CSV/Parquet file with a ``path`` column.
Relative paths in a manifest are relative to the manifest's folder.

Nothing is lost silently: a folder that cannot be listed, a manifest entry
that is empty or not a local path, become :class:`InputProblem` records
(the runner writes them to ``errors`` with stage ``input``); an input that
matches nothing at all (a typo, an empty folder, an empty manifest) is a
:class:`~mirflow.errors.ConfigError` before anything starts.

An input may also be an object-storage URL (``s3://bucket/prefix/``, a
glob such as ``s3://bucket/music/**/*.flac``, or one object), listed through
fsspec (:mod:`mirflow.storage`); manifests may list such URLs too.

Symbolic links to folders are followed (music libraries are often
assembled from links), with loop protection: a folder already visited in
the same walk (same device and inode) is not entered again, so a link to
``.`` or to a parent ends the walk instead of recursing forever.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mirflow.audio.probe import AUDIO_EXTENSIONS
from mirflow.errors import ConfigError
from mirflow.storage import filesystem, is_url, storage_errors, url_of

log = logging.getLogger(__name__)

MANIFEST_SUFFIXES = {".txt", ".lst", ".m3u", ".m3u8", ".csv", ".parquet"}


@dataclass(frozen=True)
class InputProblem:
    """An input that could not be listed or read: becomes an ``errors`` row (stage ``input``)."""

    path: str
    message: str


@dataclass
class Expansion:
    """The result of expanding the inputs: paths to analyze and what could not be read."""

    paths: list[str] = field(default_factory=list)
    problems: list[InputProblem] = field(default_factory=list)


def _is_audio_name(name: str) -> bool:
    return Path(name).suffix.lower() in AUDIO_EXTENSIONS and not name.startswith("._")


def _walk(root: Path, problems: list[InputProblem]) -> Iterator[str]:
    """Audio files under ``root``, following folder links once each, recording unlistable folders."""
    visited: set[tuple[int, int]] = set()

    def onerror(exc: OSError) -> None:
        where = exc.filename if exc.filename is not None else str(root)
        problems.append(InputProblem(os.fsdecode(where), f"cannot list folder: {exc.strerror or exc}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError as exc:
            onerror(exc)
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in visited:  # a link back into the tree: walked already
            log.info("not entering %s again (a folder link loop)", dirpath)
            dirnames[:] = []
            continue
        visited.add((st.st_dev, st.st_ino))
        dirnames.sort()
        # A *directory* named like an audio file is listed as an input so
        # that it surfaces as an error row instead of vanishing silently.
        for d in dirnames:
            if _is_audio_name(d):
                yield os.path.join(dirpath, d)
        for f in sorted(filenames):
            if _is_audio_name(f):
                yield os.path.join(dirpath, f)


# --------------------------------------------------------------------- globs
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex for a glob with ``**`` (any number of folders), ``*``, ``?`` and ``[...]``.

    Written here because the standard library's recursive glob follows
    links to folders without loop protection (a link to ``.`` never ends)
    and ``glob.translate`` only arrived in Python 3.13.
    """
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = pattern.find("]", i + 2)
            if j < 0:
                out.append(re.escape(c))
                i += 1
            else:
                body = pattern[i + 1:j]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]")
                i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _expand_glob(pattern: str, problems: list[InputProblem]) -> list[str]:
    if "**" not in pattern:
        # Without ** the standard glob does not recurse, so it always ends.
        return sorted(glob.glob(pattern))
    pattern = os.path.abspath(pattern)
    parts = pattern.split(os.sep)
    fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    base = os.sep.join(parts[:fixed]) or os.sep
    regex = _glob_regex(pattern)
    matches = []
    visited: set[tuple[int, int]] = set()

    def onerror(exc: OSError) -> None:
        problems.append(InputProblem(os.fsdecode(exc.filename or base), f"cannot list folder: {exc.strerror or exc}"))

    for dirpath, dirnames, filenames in os.walk(base, onerror=onerror, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in visited:
            dirnames[:] = []
            continue
        visited.add((st.st_dev, st.st_ino))
        dirnames.sort()
        for name in (*dirnames, *sorted(filenames)):
            full = os.path.join(dirpath, name)
            if regex.match(full):
                matches.append(full)
    return sorted(set(matches))


# --------------------------------------------------------------------- manifests
def _decode_line(raw: bytes, base: Path) -> str:
    """One manifest line as a path str: UTF-8, else the playlist's legacy encoding.

    Old playlists (``.m3u``) are latin-1/cp1252 while the files they name may
    carry UTF-8 *or* latin-1 bytes on disk: try the text decoding first, then
    the raw bytes as the file name, and keep whichever exists.
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    text = raw.decode("cp1252", errors="replace")  # a superset of latin-1's printable characters
    as_bytes = os.fsdecode(raw)
    for candidate in (text, as_bytes):
        p = candidate if os.path.isabs(candidate) else str(base / candidate)
        if os.path.lexists(p):
            return candidate
    return as_bytes


def _manifest_entry(entry: str, base: Path) -> str | None:
    """An absolute local path or an object URL for a manifest entry, or ``None`` for a URL mirflow cannot read."""
    if entry.startswith("file://"):
        from urllib.parse import unquote_to_bytes, urlsplit

        return os.fsdecode(unquote_to_bytes(urlsplit(entry).path))
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]+://", entry):
        return entry if _object_url(entry) else None
    entry = os.path.expanduser(entry)
    return entry if os.path.isabs(entry) else str(base / entry)


def _read_manifest(path: Path, problems: list[InputProblem]) -> list[str]:
    suffix = path.suffix.lower()
    base = path.parent
    where = os.fsdecode(path)
    entries: list[tuple[int, str | None]] = []  # (line, entry or None for an empty cell)
    try:
        if suffix in {".csv", ".parquet"}:
            import pandas as pd

            try:
                if suffix == ".csv":
                    try:
                        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
                    except UnicodeDecodeError:
                        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="cp1252",
                                         encoding_errors="replace")
                else:
                    df = pd.read_parquet(path)
            except pd.errors.EmptyDataError:
                raise ConfigError(f"manifest {where} is empty") from None
            except (pd.errors.ParserError, ValueError, OSError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ConfigError(f"manifest {where} is not a readable {suffix[1:]} file: {first}") from None
            if "path" not in df.columns:
                raise ConfigError(f"manifest {where} has no 'path' column (columns: {list(df.columns)})")
            header_lines = 1 if suffix == ".csv" else 0
            for i, value in enumerate(df["path"].tolist()):
                text = "" if value is None or (isinstance(value, float) and value != value) else str(value).strip()
                entries.append((i + 1 + header_lines, text or None))
        else:
            for i, raw in enumerate(path.read_bytes().splitlines()):
                raw = raw.strip().removeprefix(b"\xef\xbb\xbf")
                if not raw or raw.startswith(b"#"):
                    continue
                entries.append((i + 1, _decode_line(raw, base)))
    except OSError as exc:
        raise ConfigError(f"cannot read manifest {where}: {exc.strerror or exc}") from None
    if not entries:
        raise ConfigError(f"manifest {where} lists no paths")
    out = []
    for line, entry in entries:
        if entry is None:
            problems.append(InputProblem(f"{where}:{line}", "empty path in the manifest"))
            continue
        local = _manifest_entry(entry, base)
        if local is None:
            problems.append(InputProblem(f"{where}:{line}", f"not a local file path or an object-storage URL: {entry}"))
            continue
        out.append(local)
    return out


# --------------------------------------------------------------------- object storage
def _object_url(url: str) -> bool:
    """Whether ``url`` is in an object store fsspec can open (``s3://``; not ``http://`` pages)."""
    if not is_url(url):
        return False
    import fsspec

    protocol = url.split("://", 1)[0].lower()
    return protocol in fsspec.available_protocols() and protocol not in {"http", "https", "ftp"}


def _expand_url(url: str, problems: list[InputProblem]) -> list[str]:
    """The audio objects an object-storage input names: one object, every one under a prefix, or a glob."""
    try:
        fs, path = filesystem(url)
        with storage_errors("list", url, missing_ok=True):
            found = _list_objects(fs, path, url)
    except ConfigError:
        raise
    except (OSError, ValueError) as exc:  # a listing that failed part-way
        problems.append(InputProblem(url, f"cannot list objects: {exc}"))
        return []
    return [url_of(fs, p) for p in sorted(found) if _is_audio_name(p.rsplit("/", 1)[-1])]


def _list_objects(fs, path: str, url: str) -> list[str]:
    if glob.has_magic(path):
        return [p for p, info in fs.glob(path, detail=True).items() if info.get("type") != "directory"]
    if fs.isdir(path):
        return fs.find(path)
    if fs.exists(path):
        return [path]
    raise ConfigError(f"input {url!r} does not exist")


# --------------------------------------------------------------------- expansion
def expand(inputs: Iterable[str | os.PathLike[str]], *, limit: int | None = None) -> Expansion:
    """Absolute, de-duplicated input paths in a stable order, and the inputs that could not be read.

    Raises
    ------
    ConfigError
        When an input matches nothing at all (a typo, an empty folder or an
        empty manifest should not silently analyze zero files).
    """
    result = Expansion()
    seen: set[str] = set()

    def add(p: str) -> None:
        ap = p if is_url(p) else os.path.abspath(p)
        if ap not in seen:
            seen.add(ap)
            result.paths.append(ap)

    for item in inputs:
        text = os.path.expanduser(os.fspath(item))
        path = Path(text)
        n_before, problems_before = len(result.paths), len(result.problems)
        if is_url(text):
            if not _object_url(text):
                raise ConfigError(f"input {text!r}: only local paths and object-storage URLs (s3://, gs://, …) "
                                  "can be analyzed")
            for p in _expand_url(text, result.problems):
                add(p)
            if len(result.paths) == n_before and len(result.problems) == problems_before:
                raise ConfigError(f"input {text!r} holds no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))})")
        elif path.is_dir() and path.suffix.lower() not in AUDIO_EXTENSIONS:
            for p in _walk(path, result.problems):
                add(p)
            if len(result.paths) == n_before and len(result.problems) == problems_before:
                raise ConfigError(f"input folder {text!r} holds no audio files "
                                  f"({', '.join(sorted(AUDIO_EXTENSIONS))})")
        elif path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
            for p in _read_manifest(path, result.problems):
                add(p)
        elif path.exists() or path.is_symlink():
            add(text)
        elif glob.has_magic(text):
            matches = _expand_glob(text, result.problems)
            if not matches and len(result.problems) == problems_before:
                raise ConfigError(f"input glob {text!r} matches nothing")
            for m in matches:
                if os.path.isdir(m) and Path(m).suffix.lower() not in AUDIO_EXTENSIONS:
                    for p in _walk(Path(m), result.problems):
                        add(p)
                else:
                    add(m)
        else:
            raise ConfigError(f"input {text!r} does not exist")
        if limit is not None and len(result.paths) >= limit:
            result.paths = result.paths[:limit]
            return result
    return result


def expand_inputs(inputs: Iterable[str | os.PathLike[str]], *, limit: int | None = None) -> list[str]:
    """The paths of :func:`expand`; problems are logged (the runner records them as errors)."""
    result = expand(inputs, limit=limit)
    for problem in result.problems:
        log.warning("input %s: %s", problem.path, problem.message)
    return result.paths
