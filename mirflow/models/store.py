"""Find or fetch pretrained weights: a per-user cache filled from the package index only.

Model hubs are not assumed reachable (and not needed): the musicnn weights
ship inside the ``musicnn`` wheel on PyPI (ISC licence). We never import or
install that package; we download the pinned wheel with pip, copy the few
checkpoint files we need (and the wheel's licence) into the cache, verify
them against SHA-256 digests pinned here, and move them into place
atomically. A file lock keeps several worker processes from fetching at once.

Layout::

    $MIRFLOW_MODELS_DIR (or ~/.cache/mirflow/models)/
        musicnn-0.1.0/
            LICENSE.md
            MSD_musicnn/.index
            MSD_musicnn/.data-00000-of-00001
        .musicnn-0.1.0.lock

Environment
-----------
MIRFLOW_MODELS_DIR
    Cache root (default: the user cache dir + ``mirflow/models``).
MIRFLOW_OFFLINE
    When set (to anything but ``""``, ``0``, ``false``, ``no``), never fetch:
    a missing model raises :class:`~mirflow.errors.ModelUnavailableError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from mirflow.errors import ConfigError, ModelUnavailableError

log = logging.getLogger(__name__)

__all__ = [
    "INSTALL_HINT",
    "MUSICNN_MODELS",
    "MUSICNN_VERSION",
    "MUSICNN_WHEEL",
    "MUSICNN_WHEEL_SHA256",
    "ensure_musicnn_weights",
    "install_musicnn_weights",
    "installed_musicnn_weights",
    "models_dir",
    "offline",
]

#: The wheel we take weights from; pinned, since the digests below are.
MUSICNN_VERSION = "0.1.0"
MUSICNN_WHEEL = f"musicnn-{MUSICNN_VERSION}-py3-none-any.whl"
MUSICNN_WHEEL_SHA256 = "f38a4890c648c1ddbb141c5d96d2b0a8cfcd36746002d896989f7b88beb65cfa"
_LICENSE_MEMBER = f"musicnn-{MUSICNN_VERSION}.dist-info/LICENSE.md"
_LICENSE_SHA256 = "60c4194f702ddd969f969577743546327b4e9db560c07ec286be5cec27f55fcd"

#: Per model: file name -> (size in bytes, SHA-256). Only what the numpy
#: forward pass reads: the ``.meta`` graph (1.2 MB) and training logs are left out.
MUSICNN_MODELS: dict[str, dict[str, tuple[int, str]]] = {
    "MSD_musicnn": {
        ".index": (4948, "87f3e0f3550c8d3bafc840374003e5c8af5eeb5ecf6add61af09a7822d3282c8"),
        ".data-00000-of-00001": (
            9465596,
            "8579734ee6388f799ed0def4bbd0d1fdcbeaf213ef2a9dc860917bd76a303de6",
        ),
    },
}

INSTALL_HINT = "mirflow models install musicnn"
_PIP_TIMEOUT_S = 900


def offline() -> bool:
    """Whether ``MIRFLOW_OFFLINE`` forbids fetching.

    Returns
    -------
    bool
        True when the variable is set to anything but ``""``, ``0``, ``false`` or ``no``.
    """
    return os.environ.get("MIRFLOW_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def models_dir() -> Path:
    """Root of the model cache (not created).

    Returns
    -------
    pathlib.Path
        ``$MIRFLOW_MODELS_DIR`` if set, else the platform's user cache dir
        (platformdirs when it is installed, else ``$XDG_CACHE_HOME`` or
        ``~/.cache``) joined with ``mirflow/models``.
    """
    env = os.environ.get("MIRFLOW_MODELS_DIR")
    if env:
        return Path(env).expanduser()
    try:  # optional: present as a librosa (pooch) dependency, but not ours
        import platformdirs
    except ImportError:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    else:
        base = Path(platformdirs.user_cache_dir())
    return base / "mirflow" / "models"


def _check_model(model: str) -> dict[str, tuple[int, str]]:
    try:
        return MUSICNN_MODELS[model]
    except KeyError:
        raise ConfigError(
            f"unknown musicnn model {model!r}; available: {sorted(MUSICNN_MODELS)}"
        ) from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files_ok(directory: Path, files: dict[str, tuple[int, str]], *, verify: bool) -> bool:
    """Sizes always (cheap, catches truncation); SHA-256 too when ``verify``."""
    for name, (size, digest) in files.items():
        path = directory / name
        try:
            if path.stat().st_size != size:
                return False
        except OSError:
            return False
        if verify and _sha256(path) != digest:
            return False
    return True


def _package_weights(model: str) -> Path | None:
    """The weights inside an installed ``musicnn`` package, if any (found without importing it)."""
    try:
        spec = importlib.util.find_spec("musicnn")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / model
        if candidate.is_dir():
            return candidate
    return None


def installed_musicnn_weights(model: str = "MSD_musicnn", *, verify: bool = False) -> Path | None:
    """Locate installed weights without fetching anything.

    Parameters
    ----------
    model : str, default "MSD_musicnn"
        Model name, a key of :data:`MUSICNN_MODELS`.
    verify : bool, default False
        Also check SHA-256 digests (sizes are always checked).

    Returns
    -------
    pathlib.Path or None
        Directory holding the checkpoint (``.index`` etc.): the cache, else
        an installed ``musicnn`` package (always digest-checked, since we did
        not install it); None when neither has intact files.
    """
    files = _check_model(model)
    cached = models_dir() / f"musicnn-{MUSICNN_VERSION}" / model
    if _files_ok(cached, files, verify=verify):
        return cached
    pkg = _package_weights(model)
    if pkg is not None and _files_ok(pkg, files, verify=True):
        log.debug("using musicnn weights of the installed musicnn package at %s", pkg)
        return pkg
    return None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``path`` across processes (a no-op without fcntl)."""
    try:
        import fcntl
    except ImportError:  # Windows: fall back to no locking; atomic rename still avoids torn files
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _pip_download(dest: Path) -> Path:
    """Download the pinned musicnn wheel (no dependencies, no build) into ``dest``."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", f"musicnn=={MUSICNN_VERSION}", "-d", os.fspath(dest),
    ]  # fmt: skip
    log.info("fetching musicnn %s (~29 MB) from the Python package index", MUSICNN_VERSION)
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ModelUnavailableError(
            f"could not run pip to fetch musicnn {MUSICNN_VERSION}: {exc}. "
            f"Install the weights with `{INSTALL_HINT}` where the package index is reachable."
        ) from exc
    wheel = dest / MUSICNN_WHEEL
    if proc.returncode != 0 or not wheel.is_file():
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:]
        raise ModelUnavailableError(
            f"pip could not download musicnn=={MUSICNN_VERSION} (exit {proc.returncode}): "
            + " | ".join(tail)
            + f". Install the weights with `{INSTALL_HINT}` where the package index is reachable."
        )
    return wheel


def _install_from_wheel(wheel: Path, root: Path) -> Path:
    """Extract, verify and atomically move the pinned files of ``wheel`` into ``root``.

    Every model of :data:`MUSICNN_MODELS` and the licence land in a
    temporary sibling directory first, which is renamed into place only when
    all digests match, so readers never see a partial install.
    """
    if _sha256(wheel) != MUSICNN_WHEEL_SHA256:
        raise ModelUnavailableError(
            f"{wheel.name}: SHA-256 differs from the pinned digest; refusing to use it"
        )
    final = root / f"musicnn-{MUSICNN_VERSION}"
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".musicnn-{MUSICNN_VERSION}-", dir=root))
    try:
        wanted = {_LICENSE_MEMBER: (staging / "LICENSE.md", _LICENSE_SHA256)}
        for model, files in MUSICNN_MODELS.items():
            (staging / model).mkdir()
            for name, (_size, digest) in files.items():
                wanted[f"musicnn/{model}/{name}"] = (staging / model / name, digest)
        with zipfile.ZipFile(wheel) as zf:
            for member, (target, digest) in wanted.items():
                with zf.open(member) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                if _sha256(target) != digest:
                    raise ModelUnavailableError(f"{member} in {wheel.name}: SHA-256 mismatch")
        staging.chmod(0o755)  # mkdtemp makes it 0700; the cache may be shared read-only
        if final.exists():  # stale or damaged earlier install: we hold the lock, so replace it
            shutil.rmtree(final)
        os.replace(staging, final)
    except KeyError as exc:
        raise ModelUnavailableError(f"{wheel.name} lacks an expected file: {exc}") from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    log.info("installed musicnn %s weights in %s", MUSICNN_VERSION, final)
    return final


def install_musicnn_weights(model: str = "MSD_musicnn", *, force: bool = False) -> Path:
    """Fetch the weights from the package index into the cache, ignoring ``MIRFLOW_OFFLINE``.

    This is what ``mirflow models install musicnn`` runs.

    Parameters
    ----------
    model : str, default "MSD_musicnn"
        Model whose directory to return (all pinned models are installed).
    force : bool, default False
        Fetch again even if intact files are cached.

    Returns
    -------
    pathlib.Path
        The model's checkpoint directory in the cache.

    Raises
    ------
    ModelUnavailableError
        If pip cannot download the wheel or a digest does not match.
    """
    _check_model(model)
    root = models_dir()
    target = root / f"musicnn-{MUSICNN_VERSION}" / model
    with _file_lock(root / f".musicnn-{MUSICNN_VERSION}.lock"):
        # Another process may have finished the fetch while we waited for the lock.
        if not force and _files_ok(target, MUSICNN_MODELS[model], verify=True):
            return target
        with tempfile.TemporaryDirectory(prefix="mirflow-musicnn-") as tmp:
            wheel = _pip_download(Path(tmp))
            _install_from_wheel(wheel, root)
    return target


def ensure_musicnn_weights(
    model: str = "MSD_musicnn", *, allow_download: bool | None = None
) -> Path:
    """Return the directory of a musicnn checkpoint, fetching it once if allowed.

    Parameters
    ----------
    model : str, default "MSD_musicnn"
        Model name, a key of :data:`MUSICNN_MODELS`.
    allow_download : bool, optional
        Whether a missing model may be fetched from the package index; by
        default, unless ``MIRFLOW_OFFLINE`` is set.

    Returns
    -------
    pathlib.Path
        Directory with ``.index`` and ``.data-00000-of-00001``; pass it to
        :class:`mirflow.models.musicnn.MusicnnMSD`.

    Raises
    ------
    ConfigError
        For an unknown model name.
    ModelUnavailableError
        When the weights are missing and cannot be fetched; the message
        names ``mirflow models install musicnn``.
    """
    found = installed_musicnn_weights(model)
    if found is not None:
        return found
    if allow_download is None:
        allow_download = not offline()
    if not allow_download:
        raise ModelUnavailableError(
            f"musicnn weights ({model}) are not installed in {models_dir()} and fetching is "
            f"disabled (MIRFLOW_OFFLINE). Install them with `{INSTALL_HINT}`."
        )
    # A warning, not info: a run that downloads on its own should say so by
    # default (`mirflow models install musicnn` itself does not get this).
    log.warning("musicnn weights not installed: fetching musicnn %s (~29 MB) from the Python package index "
                "(install ahead with `%s`)", MUSICNN_VERSION, INSTALL_HINT)
    return install_musicnn_weights(model)
