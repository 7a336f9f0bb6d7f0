"""Import essentia quietly.

Essentia prints INFO lines to stdout on import (e.g. about its SVM models);
in a pipeline of thousands of tracks that is noise in every worker log.
"""

from __future__ import annotations

import functools
from types import ModuleType


@functools.cache
def essentia_standard() -> ModuleType:
    """``essentia.standard`` with essentia's own info/warning logging off."""
    import essentia

    essentia.log.infoActive = False
    essentia.log.warningActive = False
    import essentia.standard as es

    return es
