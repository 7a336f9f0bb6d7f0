"""Chromaprint audio fingerprints of the decoded signal (for duplicate detection).

The fingerprint is Chromaprint's raw (uncompressed) one: one 32-bit
sub-fingerprint per ``ITEM_DURATION_S`` (≈0.124 s) of audio: 16 filters on
a 12-band chroma image, each response quantised to 2 Gray-coded bits. Re-encodes of the
same recording (mp3, ogg, another bit rate) give fingerprints that differ
in a few bits, so they are compared with a bit-error rate over aligned
offsets (:mod:`mirflow.recsys.duplicates`), never for equality.

Backends, in the order ``auto`` tries them:

``libchromaprint``
    The shared library through :mod:`ctypes` (Debian ``libchromaprint1``,
    installed as a dependency of ffmpeg). In-process, no copy of the audio.
``fpcalc``
    Chromaprint's command-line tool (Debian ``libchromaprint-tools``) fed
    raw 16-bit PCM on stdin. Same library, same fingerprint (checked in
    ``tests/test_fingerprint.py``).

Both get the frontend's mono signal at 11025 Hz, Chromaprint's own
analysis rate, so the file is never read again and Chromaprint does no
resampling of its own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import json
import logging
import shutil
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mirflow.errors import ExtractionError
from mirflow.extractors.base import Extraction, Extractor, Params, WindowPart, param
from mirflow.extractors.requirements import Requirement

log = logging.getLogger(__name__)

#: Chromaprint's internal analysis rate; the frontend resamples to it (soxr HQ).
SAMPLE_RATE_HZ = 11025
#: Hop between Chromaprint frames: FRAME_SIZE 4096 with an overlap of 4096 - 4096 / 3
#: (chromaprint/src/fingerprinter_configuration.h), i.e. 1365 samples at 11025 Hz.
ITEM_DURATION_S = 1365 / SAMPLE_RATE_HZ
#: Fewer sub-fingerprints than this (≈2 s) carry too little to match anything;
#: Chromaprint itself returns none for under ≈3 s of audio.
MIN_ITEMS = 16


@functools.cache
def _library() -> Any | None:
    """libchromaprint through ctypes, or None when it is not installed."""
    name = ctypes.util.find_library("chromaprint")
    candidates = [name] if name else []
    candidates += ["libchromaprint.so.1", "libchromaprint.1.dylib", "chromaprint.dll"]
    for candidate in candidates:
        try:
            lib = ctypes.CDLL(candidate)
        except OSError:
            continue
        vp, cint = ctypes.c_void_p, ctypes.c_int
        lib.chromaprint_get_version.restype = ctypes.c_char_p
        lib.chromaprint_get_version.argtypes = []
        lib.chromaprint_new.restype = vp
        lib.chromaprint_new.argtypes = [cint]
        lib.chromaprint_free.restype = None
        lib.chromaprint_free.argtypes = [vp]
        lib.chromaprint_start.restype = cint
        lib.chromaprint_start.argtypes = [vp, cint, cint]
        lib.chromaprint_feed.restype = cint
        lib.chromaprint_feed.argtypes = [vp, vp, cint]
        lib.chromaprint_finish.restype = cint
        lib.chromaprint_finish.argtypes = [vp]
        lib.chromaprint_get_raw_fingerprint.restype = cint
        lib.chromaprint_get_raw_fingerprint.argtypes = [
            vp, ctypes.POINTER(ctypes.POINTER(ctypes.c_uint32)), ctypes.POINTER(cint)]
        lib.chromaprint_dealloc.restype = None
        lib.chromaprint_dealloc.argtypes = [vp]
        return lib
    return None


def _fpcalc() -> str | None:
    return shutil.which("fpcalc")


@functools.cache
def chromaprint_version(backend: str = "auto") -> str | None:
    """Version of the Chromaprint a backend runs (``"1.5.1"``), or None when it is unavailable."""
    if backend in ("auto", "libchromaprint") and (lib := _library()) is not None:
        return lib.chromaprint_get_version().decode("ascii", "replace")
    if backend in ("auto", "fpcalc") and (exe := _fpcalc()) is not None:
        try:
            out = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        # "fpcalc version 1.5.1 (FFmpeg Lavc59.37.100 ...)"
        words = out.stdout.split()
        return words[2] if len(words) > 2 and words[:2] == ["fpcalc", "version"] else out.stdout.strip() or None
    return None


def resolve_backend(backend: str) -> str:
    """The backend ``auto`` stands for here; raises when the requested one is missing."""
    if backend in ("auto", "libchromaprint") and _library() is not None:
        return "libchromaprint"
    if backend in ("auto", "fpcalc") and _fpcalc() is not None:
        return "fpcalc"
    raise ExtractionError(
        f"Chromaprint backend {backend!r} is not available: install Debian's libchromaprint1 "
        "(the library) or libchromaprint-tools (fpcalc)", stage="extract:fingerprint")


@dataclass(frozen=True)
class ChromaprintRequirement(Requirement):
    """Chromaprint for a backend: the shared library, fpcalc, or either (``auto``)."""

    name: str = "Chromaprint"
    install: str = ("apt-get install libchromaprint1   (the library; ffmpeg pulls it in)   "
                    "or: apt-get install libchromaprint-tools   (fpcalc)")
    backend: str = "auto"

    def problem(self, *, fetch: bool = False) -> str | None:
        """Why the backend cannot run here, or ``None`` (``fetch`` is unused: nothing to download)."""
        try:
            resolve_backend(self.backend)
        except ExtractionError as exc:
            return str(exc)
        return None


# FFT set-up inside libchromaprint (FFmpeg's avfft in Debian's build) is not
# documented as thread-safe; one fingerprint takes milliseconds, so workers
# with several threads simply take turns.
_LIB_LOCK = threading.Lock()


def _raw_libchromaprint(pcm: np.ndarray, algorithm: int) -> np.ndarray:
    lib = _library()
    ctx = lib.chromaprint_new(algorithm - 1)  # the C enum counts from 0, fpcalc's -algorithm from 1
    if not ctx:
        raise ExtractionError("chromaprint_new failed", stage="extract:fingerprint")
    try:
        with _LIB_LOCK:
            ok = (lib.chromaprint_start(ctx, SAMPLE_RATE_HZ, 1)
                  and lib.chromaprint_feed(ctx, pcm.ctypes.data, int(pcm.size))
                  and lib.chromaprint_finish(ctx))
        if not ok:
            raise ExtractionError("libchromaprint refused the audio", stage="extract:fingerprint")
        items = ctypes.POINTER(ctypes.c_uint32)()
        size = ctypes.c_int()
        if not lib.chromaprint_get_raw_fingerprint(ctx, ctypes.byref(items), ctypes.byref(size)):
            # Chromaprint reports failure when it produced nothing (too little audio).
            return np.zeros(0, dtype=np.uint32)
        try:
            return np.ctypeslib.as_array(items, shape=(size.value,)).copy() if size.value else \
                np.zeros(0, dtype=np.uint32)
        finally:
            lib.chromaprint_dealloc(items)
    finally:
        lib.chromaprint_free(ctx)


def _raw_fpcalc(pcm: np.ndarray, algorithm: int, max_duration_s: float) -> np.ndarray:
    cmd = [_fpcalc() or "fpcalc", "-raw", "-json", "-format", "s16le", "-rate", str(SAMPLE_RATE_HZ),
           "-channels", "1", "-algorithm", str(algorithm), "-length", str(int(np.ceil(max_duration_s))), "-"]
    try:
        out = subprocess.run(cmd, input=pcm.astype("<i2", copy=False).tobytes(), capture_output=True,
                             timeout=300, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ExtractionError(f"fpcalc failed: {exc}", stage="extract:fingerprint") from exc
    message = out.stderr.decode("utf-8", "replace").strip()
    try:
        values = json.loads(out.stdout)["fingerprint"]
    except (ValueError, KeyError, TypeError):
        values = None
    if values is None:
        if "Not enough audio" in message or "Empty fingerprint" in message:
            return np.zeros(0, dtype=np.uint32)
        raise ExtractionError(f"fpcalc exited with {out.returncode}: {message[-300:]}",
                              stage="extract:fingerprint")
    # fpcalc 1.5 reading raw PCM from stdin prints the whole fingerprint, then
    # reports the end of the stream as "Error decoding audio frame (End of
    # file)" with exit status 3; the fingerprint is complete (it equals the
    # library's, tests/test_fingerprint.py), so only a missing one is an error.
    if out.returncode != 0:
        log.debug("fpcalc exited with %d after a fingerprint: %s", out.returncode, message[-200:])
    return np.asarray(values, dtype=np.uint32)


def raw_fingerprint(signal: np.ndarray, *, algorithm: int = 2, max_duration_s: float = 120.0,
                    backend: str = "auto") -> np.ndarray:
    """Chromaprint's raw fingerprint of a mono signal at :data:`SAMPLE_RATE_HZ`.

    Parameters
    ----------
    signal : numpy.ndarray
        Mono float samples in [-1, 1] at 11025 Hz.
    algorithm : int
        Chromaprint algorithm as ``fpcalc -algorithm`` numbers it (2, the default, is AcoustID's).
    max_duration_s : float
        Only the first this many seconds are fingerprinted (AcoustID uses 120).
    backend : {"auto", "libchromaprint", "fpcalc"}
        Where Chromaprint runs.

    Returns
    -------
    numpy.ndarray
        ``uint32`` sub-fingerprints, one per :data:`ITEM_DURATION_S`; empty when the audio is too short.
    """
    n = min(signal.shape[0], int(round(max_duration_s * SAMPLE_RATE_HZ)))
    # Chromaprint takes 16-bit PCM; round, not truncate, so the quantisation is unbiased.
    pcm = np.ascontiguousarray(np.round(np.clip(signal[:n], -1.0, 1.0) * 32767.0).astype("<i2"))
    if resolve_backend(backend) == "libchromaprint":
        return _raw_libchromaprint(pcm, algorithm)
    return _raw_fpcalc(pcm, algorithm, max_duration_s)


@dataclass(frozen=True, kw_only=True)
class FingerprintParams(Params):
    backend: str = param("auto", choices=("auto", "libchromaprint", "fpcalc"),
                         doc="Where Chromaprint runs: the shared library via ctypes, the fpcalc tool, or "
                             "the first of them that is installed (same fingerprint either way)")
    algorithm: int = param(2, range=(1, 5), doc="Chromaprint algorithm as fpcalc numbers it (2 is "
                                               "Chromaprint's default and AcoustID's)")
    max_duration_s: float = param(120.0, range=(10.0, 3600.0),
                                  doc="Fingerprint only the first this many seconds (AcoustID uses 120 s)")
    silence_dbfs: float = param(-60.0, range=(-120.0, 0.0),
                                doc="Tracks whose mono RMS level is below this get no fingerprint "
                                    "(Chromaprint returns a constant, meaningless one for silence)")


class FingerprintExtractor(Extractor):
    """Chromaprint raw fingerprint of the first ``max_duration_s`` of the mono signal.

    Writes one row of ``fingerprints`` per track; silence and audio too short
    for Chromaprint (under about 3 s) give no row, not a failure.
    """

    name = "fingerprint"
    version = "1"
    Params = FingerprintParams
    columns = ()
    tables = ("fingerprints",)
    requires = ("signal",)
    libraries = ()
    licences = ("MIT (Chromaprint)", "LGPL-2.1+ (FFmpeg's FFT and resampler inside Debian's libchromaprint, "
                "used unmodified as a shared library or the fpcalc process)")

    def requirements(self) -> tuple[Requirement, ...]:
        return (ChromaprintRequirement(backend=self.params.backend),)

    def extract(self, frontend) -> Extraction:
        p = self.params
        # Short fixed phrases: the first note is the reason tracks.empty_reasons
        # records ("fingerprint: silent"), counted in SQL.
        if frontend.is_empty:
            return self.empty("no audio")
        if frontend.rms_dbfs(SAMPLE_RATE_HZ) < p.silence_dbfs:
            return self.empty("silent")
        signal = frontend.signal(SAMPLE_RATE_HZ)
        items = raw_fingerprint(signal, algorithm=p.algorithm, max_duration_s=p.max_duration_s,
                                backend=p.backend)
        if items.size < MIN_ITEMS:
            return self.empty("too short", f"{items.size} sub-fingerprints, fewer than {MIN_ITEMS}")
        return self.result({}, {"fingerprints": {
            "algorithm": [f"chromaprint-{p.algorithm}"],
            "chromaprint_version": [chromaprint_version(p.backend) or "unknown"],
            "duration_s": [min(signal.shape[0] / SAMPLE_RATE_HZ, p.max_duration_s)],
            "item_duration_s": [ITEM_DURATION_S],
            "fingerprint": [items.astype(np.int64).tolist()],
        }})

    def merges_windows(self) -> bool:
        return True

    def merge(self, parts: Sequence[WindowPart]) -> Extraction:
        """The first window's fingerprint: it holds the track's first ``max_duration_s`` when its audio is that long.

        Pipelines check that their ``window_s`` is at least ``max_duration_s``
        (:mod:`mirflow.pipeline.config`), so this is the whole track's fingerprint.
        """
        return parts[0].extraction

    def lineage(self) -> dict[str, Any]:
        """Adds the Chromaprint version and licences (it is a C library, not a Python module)."""
        out = super().lineage()
        out["libraries"] = {**out["libraries"], "chromaprint": chromaprint_version(self.params.backend) or "missing"}
        out["licences"] = list(self.licences)
        return out
