"""Container facts of the file (from the probe, no decoding work)."""

from __future__ import annotations

from collections.abc import Sequence

from mirflow.extractors.base import Extraction, Extractor, Params, WindowPart


class MetadataExtractor(Extractor):
    """Container, codec, native rate, channels, duration, bit rate and decoder.

    Duration comes from the decoded samples (exact), the rest from the probe.
    In-memory audio (no file) yields nulls for the container facts.
    """

    name = "metadata"
    version = "1"
    Params = Params
    columns = ("container", "codec", "sample_rate_hz", "channels", "duration_s", "bit_rate_bps", "decoder")
    requires = ("probe",)
    libraries = ("soundfile",)
    licences = ("BSD-3-Clause (soundfile)", "LGPL-2.1 (libsndfile)")

    def extract(self, frontend) -> Extraction:
        info = frontend.info
        duration = float(frontend.duration_s)
        if info is None:
            return self.result({
                "container": None, "codec": None, "sample_rate_hz": frontend.native_sample_rate_hz,
                "channels": frontend.audio.channels, "duration_s": duration, "bit_rate_bps": None,
                "decoder": None,
            }, reason="in-memory audio: no container")
        return self.result({
            "container": info.container,
            "codec": info.codec,
            "sample_rate_hz": info.sample_rate_hz,
            "channels": info.channels,
            "duration_s": duration,
            "bit_rate_bps": int(info.file_size_bytes * 8 / duration) if duration > 0 else None,
            "decoder": info.decoder,
        }, reason=None if duration > 0 else "no audio: no bit rate")

    def merges_windows(self) -> bool:
        return True

    def merge(self, parts: Sequence[WindowPart]) -> Extraction:
        """The container facts of any window, with the duration of the whole track."""
        cols = dict(parts[0].extraction.columns)
        duration = float(parts[-1].core_end_s)
        cols["duration_s"] = duration
        if cols.get("bit_rate_bps") is not None:
            cols["bit_rate_bps"] = int(cols["bit_rate_bps"] * parts[0].extraction.columns["duration_s"] / duration)
        return self.result(cols, None, reason=parts[0].extraction.reasons[0] if parts[0].extraction.reasons else None)
