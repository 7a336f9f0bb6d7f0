"""Container facts of the file (from the probe, no decoding work)."""

from __future__ import annotations

from mirflow.extractors.base import Extraction, Extractor, Params


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
