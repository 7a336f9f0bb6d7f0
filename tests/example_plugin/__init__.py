"""An example plugin: an extractor that ships its schemas next to its code.

It adds one ``tracks`` column (``schemas/tracks.example_plugin.yaml``, a
fragment) and one long table (``schemas/example_frame_levels.yaml``). Name
the module in ``MIRFLOW_PLUGINS=example_plugin`` (with its folder's parent on
``PYTHONPATH``): every process that imports it, the client and each Dask
worker, registers the extractor and the schema folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mirflow.catalog import register_schema_dir
from mirflow.extractors import Extraction, Extractor, Params, param, register

SCHEMA_DIR = register_schema_dir(Path(__file__).resolve().parent / "schemas")


@dataclass(frozen=True, kw_only=True)
class FrameLevelParams(Params):
    frame_s: float = param(0.5, range=(0.05, 10.0), doc="length of a frame in seconds")
    silence_dbfs: float = param(-90.0, range=(-200.0, 0.0), doc="frames quieter than this have no level")


@register
class FrameLevelExtractor(Extractor):
    """RMS level per frame (long table) and where the loudest frame starts (``tracks``)."""

    name = "example_frame_levels"
    version = "1"
    Params = FrameLevelParams
    columns = ("example_loudest_frame_s",)
    tables = ("example_frame_levels",)
    requires = ("signal",)
    libraries = ("numpy",)
    licences = ("BSD-3-Clause (numpy)",)

    def extract(self, frontend) -> Extraction:
        p = self.params
        y = frontend.signal()
        sr = frontend.native_sample_rate_hz
        n = int(round(p.frame_s * sr))
        if y.size < n:
            return self.empty("shorter than one frame", reason="too short")
        frames = y[: y.size // n * n].reshape(-1, n).astype(np.float64)
        rms = np.sqrt(np.mean(frames**2, axis=1))
        with np.errstate(divide="ignore"):
            level = 20 * np.log10(rms)
        audible = level > p.silence_dbfs
        rows = {"frame": list(range(len(rms))), "start_s": [i * p.frame_s for i in range(len(rms))],
                "rms_dbfs": [float(v) if ok else None for v, ok in zip(level, audible, strict=True)]}
        if not audible.any():
            return self.result({"example_loudest_frame_s": None}, {"example_frame_levels": rows}, reason="silent")
        return self.result({"example_loudest_frame_s": float(np.argmax(rms) * p.frame_s)},
                           {"example_frame_levels": rows})
