"""Import essentia quietly.

Essentia prints INFO lines to stdout on import (e.g. about its SVM models);
in a pipeline of thousands of tracks that is noise in every worker log.
"""

from __future__ import annotations

from types import ModuleType


def essentia_standard() -> ModuleType:
    """``essentia.standard`` with essentia's own info/warning logging off.

    Not cached here: the import system already caches modules, and going
    through it each time keeps "essentia is not installed" a plain
    ImportError that callers turn into a clear message.
    """
    import essentia

    essentia.log.infoActive = False
    essentia.log.warningActive = False
    import essentia.standard as es

    return es
