"""Extractors used only by the tests, loaded through ``MIRFLOW_PLUGINS``.

They misbehave on purpose, keyed on the file name, to show that one bad
track never stops a run: ``raise`` in the name raises inside the worker,
``crash`` ends the worker process (as a segfault in a native decoder
would), ``slow`` sleeps so that a run can be killed mid-way.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from mirflow.extractors import Extraction, Extractor, Params, param, register


@dataclass(frozen=True, kw_only=True)
class MisbehaveParams(Params):
    sleep_s: float = param(0.0, range=(0.0, 10.0), doc="sleep per track")


@register
class MisbehaveExtractor(Extractor):
    name = "test_misbehave"
    version = "1"
    Params = MisbehaveParams
    columns = ()
    requires = ("probe",)

    def extract(self, frontend) -> Extraction:
        name = os.path.basename(frontend.path) if getattr(frontend, "path", None) else ""
        if "crash" in name:
            os._exit(3)  # what a segfault in native code looks like to Dask: the process is gone
        if "raise" in name:
            raise RuntimeError("simulated decoder failure inside the worker")
        if self.params.sleep_s:
            time.sleep(self.params.sleep_s)
        return self.result({})
