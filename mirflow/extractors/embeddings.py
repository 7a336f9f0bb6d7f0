"""Track embeddings, patch embeddings and auto-tags.

Three backends, chosen with the ``model`` parameter:

``descriptor``
    A deterministic 65-dimensional vector of standardized descriptors
    (MFCC means and spreads, spectral contrast, a key-invariant chroma
    profile, centroid, roll-off, flatness, flux, zero-crossing rate, onset
    rate, pulse clarity, level). Each entry is ``(x - centre) / scale`` with
    the fixed constants of :data:`DESCRIPTOR_LAYOUT`, clipped to ±8, so
    vectors are comparable across tracks and catalogs without a fitted
    scaler. Always available (librosa only), cheap, and shares its
    frame-level features with the ``descriptors`` extractor through the
    frontend cache.
``musicnn``
    The pretrained MSD musicnn (Pons & Serra 2019) in numpy
    (:mod:`mirflow.models.musicnn`; weights from the ``musicnn`` wheel via
    :mod:`mirflow.models.store`). Per 3-s patch: the 200-d penultimate vector
    (``segment_embeddings``) and 50 MSD tag probabilities; the track's
    embedding is the mean over patches and its ``tags`` the mean
    probabilities. The mel input comes from the shared frontend.
``onnx``
    A user's ONNX audio model (``onnx_path``) run with onnxruntime on one
    thread over patches of the waveform or a log-mel spectrogram; patch
    outputs go to ``segment_embeddings`` and their mean to ``embeddings``.

Models and sessions are loaded once per process and kept in a module-level
cache, never on the extractor, so extractor instances pickle small. Every
vector written is float32, finite and of the model's fixed length.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mirflow.errors import ExtractionError, ModelUnavailableError, ParameterError
from mirflow.extractors.base import (
    Extraction,
    Extractor,
    Params,
    WindowPart,
    longest_reason,
    param,
    window_weights,
)
from mirflow.extractors.descriptors import FrameFeatures, frame_features, onset_rate, pulse
from mirflow.extractors.requirements import LIBROSA, MUSICNN_WEIGHTS, ONNXRUNTIME, Requirement
from mirflow.models.musicnn import patch_starts

log = logging.getLogger(__name__)

#: ``model`` column values of the built-in backends.
DESCRIPTOR_MODEL = "descriptor"
MUSICNN_MODEL = "musicnn-msd"
#: Bump when the descriptor vector's recipe or constants change (it is the model_version).
DESCRIPTOR_VERSION = "1"
#: Frame settings of the descriptor embedding: the ``descriptors`` extractor's
#: defaults, so a pipeline running both computes the frame features once.
DESCRIPTOR_SR = 22050
DESCRIPTOR_N_FFT = 2048
DESCRIPTOR_HOP = 512
#: Standardized values are clipped here, so one extreme descriptor cannot
#: dominate a distance (and every entry is finite).
DESCRIPTOR_CLIP = 8.0
#: Embedding size of musicnn's penultimate layer.
MUSICNN_DIM = 200
#: Patches per onnxruntime call when the model's batch axis is dynamic.
ONNX_BATCH = 8

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _block(name: str, size: int, centre: float | list[float], scale: float | list[float]) -> tuple:
    c = np.broadcast_to(np.asarray(centre, dtype=np.float64), (size,))
    s = np.broadcast_to(np.asarray(scale, dtype=np.float64), (size,))
    return name, size, c, s


#: The descriptor vector: (block name, length, centres, scales), in order.
#: Centres and scales are round numbers near the median and spread of each
#: descriptor over 24 varied generated tracks (mirflow.synth, drums on and
#: off), widened where real music is known to range further: they only need
#: to put every entry on a comparable, roughly unit scale. They are fixed,
#: not fitted, so that a vector never depends on which other tracks a
#: catalog holds. MFCCs are librosa's (orthonormal DCT of the 128-band
#: log-mel in dB), hence c0's large range.
DESCRIPTOR_LAYOUT: tuple[tuple[str, int, np.ndarray, np.ndarray], ...] = (
    _block("mfcc_mean", 13, [-200.0, 100.0] + [0.0] * 11, [100.0, 50.0] + [20.0] * 11),
    _block("mfcc_std", 13, [40.0, 25.0] + [12.0] * 11, [20.0, 15.0] + [6.0] * 11),
    _block("contrast_mean_db", 7, 25.0, 8.0),
    _block("contrast_std_db", 7, 7.0, 3.0),
    # Chroma means sorted high to low: how concentrated the pitch content is
    # (tonal vs. noisy), without the key, which says little about timbre or style.
    _block("chroma_sorted", 12, 0.3, 0.15),
    _block("log_centroid_mean", 1, math.log(1500.0), 0.7),
    _block("log1p_centroid_std", 1, 6.5, 1.0),
    _block("log_rolloff_mean", 1, math.log(3000.0), 0.8),
    _block("log1p_rolloff_std", 1, 7.0, 1.0),
    _block("log10_flatness_mean", 1, -3.0, 1.5),
    _block("flatness_std", 1, 0.02, 0.05),
    _block("flux_mean", 1, 0.15, 0.1),
    _block("flux_std", 1, 0.15, 0.1),
    _block("log10_zero_crossing_rate", 1, -1.5, 0.5),
    _block("onset_rate_per_s", 1, 3.0, 2.0),
    _block("pulse_clarity", 1, 0.5, 0.25),
    _block("level_dbfs", 1, -18.0, 6.0),
    _block("frame_rms_std_db", 1, 5.0, 3.0),
)
DESCRIPTOR_DIM = sum(b[1] for b in DESCRIPTOR_LAYOUT)


@dataclass(frozen=True, kw_only=True)
class EmbeddingParams(Params):
    model: str = param("descriptor", choices=("descriptor", "musicnn", "onnx"),
                       doc="descriptor (standardized descriptors, always available), musicnn (pretrained MSD "
                           "musicnn: embeddings + 50 tags) or onnx (your own model, see onnx_* parameters)")
    hop_seconds: float = param(3.0, range=(0.1, 60.0),
                               doc="musicnn/onnx: seconds between patch starts (equal to the patch length: "
                                   "back to back)")
    silence_threshold_dbfs: float = param(-70.0, range=(-140.0, -20.0),
                                          doc="Peak below which a track is silent and gets no embedding rows")
    onnx_path: str = param("", doc="onnx: path of the .onnx model file (must exist on every worker)")
    model_name: str = param("", doc="onnx: value of the model column and partition folder (default: the file's stem)")
    input_sample_rate_hz: int = param(16000, range=(8000, 192000), doc="onnx: sample rate the model expects")
    patch_seconds: float = param(3.0, range=(0.1, 60.0), doc="onnx: length of one model input patch")
    input_kind: str = param("waveform", choices=("waveform", "logmel"),
                            doc="onnx: the model takes waveform patches (batch, samples) or log-mel patches")
    output_name: str = param("", doc="onnx: output holding the embedding (default: the first output)")
    n_mels: int = param(96, range=(8, 512), doc="onnx logmel: mel bands")
    n_fft: int = param(512, range=(64, 16384), doc="onnx logmel: FFT size")
    hop_length: int = param(256, range=(16, 8192), doc="onnx logmel: hop in samples")
    logmel_scale: str = param("log10_1p_10000", choices=("log10_1p_10000", "db"),
                              doc="onnx logmel: log10(1 + 10000 mel) as musicnn, or librosa power_to_db")
    logmel_layout: str = param("frames_mels", choices=("frames_mels", "mels_frames"),
                               doc="onnx logmel: axis order after the batch axis")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.model == "onnx":
            if not self.onnx_path:
                raise ParameterError(f"{self._where('onnx_path')} is required with model: onnx")
            if not Path(self.onnx_path).expanduser().is_file():
                raise ParameterError(f"{self._where('onnx_path')}: no such file {self.onnx_path!r}")
            name = self.model_name or Path(self.onnx_path).stem
            if not _SAFE_NAME.match(name):
                raise ParameterError(f"{self._where('model_name')} must be letters, digits, '_', '.', '-' "
                                     f"(it names a folder; the default is the file's stem), got {name!r}")
        elif self.onnx_path:
            raise ParameterError(f"{self._where('onnx_path')} is only used with model: onnx")


# ----------------------------------------------------------------------------- descriptor vector
def descriptor_vector(features: FrameFeatures) -> np.ndarray:
    """The standardized descriptor embedding of one track.

    Parameters
    ----------
    features : FrameFeatures
        Frame-level features (:func:`mirflow.extractors.descriptors.frame_features`).

    Returns
    -------
    numpy.ndarray
        ``(DESCRIPTOR_DIM,)`` float32, finite, each entry
        ``clip((x - centre) / scale, -8, 8)`` per :data:`DESCRIPTOR_LAYOUT`.
    """
    f = features
    clarity, _ = pulse(f)
    raw = {
        "mfcc_mean": f.mfcc.mean(axis=1),
        "mfcc_std": f.mfcc.std(axis=1),
        "contrast_mean_db": f.contrast.mean(axis=1),
        "contrast_std_db": f.contrast.std(axis=1),
        "chroma_sorted": np.sort(f.chroma.mean(axis=1))[::-1],
        "log_centroid_mean": math.log(max(float(f.centroid_hz.mean()), 1.0)),
        "log1p_centroid_std": math.log1p(float(f.centroid_hz.std())),
        "log_rolloff_mean": math.log(max(float(f.rolloff_hz.mean()), 1.0)),
        "log1p_rolloff_std": math.log1p(float(f.rolloff_hz.std())),
        "log10_flatness_mean": math.log10(max(float(f.flatness.mean()), 1e-10)),
        "flatness_std": float(f.flatness.std()),
        "flux_mean": float(f.flux.mean()),
        "flux_std": float(f.flux.std()),
        "log10_zero_crossing_rate": math.log10(max(f.zero_crossing_rate, 1e-6)),
        "onset_rate_per_s": onset_rate(f),
        "pulse_clarity": clarity,
        "level_dbfs": f.level_dbfs,
        "frame_rms_std_db": float(f.rms_db.std()),
    }
    parts = []
    for name, size, centre, scale in DESCRIPTOR_LAYOUT:
        x = np.asarray(raw[name], dtype=np.float64).reshape(size)
        parts.append((x - centre) / scale)
    vec = np.concatenate(parts)
    # NaN can only come from a degenerate input; map it to the centre (0).
    vec = np.nan_to_num(vec, nan=0.0, posinf=DESCRIPTOR_CLIP, neginf=-DESCRIPTOR_CLIP)
    return np.clip(vec, -DESCRIPTOR_CLIP, DESCRIPTOR_CLIP).astype(np.float32)


# ----------------------------------------------------------------------------- model caches
_lock = threading.Lock()
_musicnn_models: dict[str, Any] = {}
_onnx_sessions: dict[tuple[str, int, int], _OnnxModel] = {}


def load_musicnn(weights_dir: str | os.PathLike[str] | None = None) -> Any:
    """The process-wide :class:`~mirflow.models.musicnn.MusicnnMSD` (loaded on first use).

    Parameters
    ----------
    weights_dir : path-like, optional
        Checkpoint directory; by default :func:`mirflow.models.store.ensure_musicnn_weights`
        finds it in the user cache or fetches it from the package index once.

    Raises
    ------
    ModelUnavailableError
        When the weights are missing and cannot be fetched (the message names
        the install command).
    """
    from mirflow.models.musicnn import MusicnnMSD

    if weights_dir is None:
        from mirflow.models.store import ensure_musicnn_weights

        weights_dir = ensure_musicnn_weights("MSD_musicnn")
    key = os.fspath(weights_dir)
    with _lock:
        model = _musicnn_models.get(key)
        if model is None:
            log.info("loading MSD musicnn weights from %s", key)
            model = _musicnn_models[key] = MusicnnMSD(key)
    return model


def musicnn_version() -> str:
    """model_version of musicnn rows: wheel version and the checkpoint data's SHA-256 prefix."""
    from mirflow.models.store import MUSICNN_MODELS, MUSICNN_VERSION

    digest = MUSICNN_MODELS["MSD_musicnn"][".data-00000-of-00001"][1]
    return f"{MUSICNN_VERSION}+{digest[:12]}"


@dataclass
class _OnnxModel:
    """A loaded ONNX session and what we learned about its input and output."""

    session: Any
    version: str
    input_name: str
    input_shape: tuple[Any, ...]
    output_names: tuple[str, ...]


def load_onnx(path: str | os.PathLike[str]) -> _OnnxModel:
    """The process-wide onnxruntime session of ``path`` (one intra-op thread), loaded once.

    The cache key includes the file's size and modification time, so a
    replaced model file is reloaded.
    """
    import onnxruntime as ort

    p = Path(path).expanduser().resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    with _lock:
        model = _onnx_sessions.get(key)
        if model is None:
            opts = ort.SessionOptions()
            # One thread: parallelism comes from worker processes, and a
            # fixed thread count keeps reductions in a fixed order.
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            data = p.read_bytes()
            session = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
            inputs = session.get_inputs()
            if len(inputs) != 1:
                raise ExtractionError(f"ONNX model {p} has {len(inputs)} inputs; mirflow feeds exactly one "
                                      "(the audio patch)", stage="extract:embeddings")
            model = _OnnxModel(session=session,
                               version=hashlib.blake2b(data, digest_size=8).hexdigest(),
                               input_name=inputs[0].name, input_shape=tuple(inputs[0].shape),
                               output_names=tuple(o.name for o in session.get_outputs()))
            _onnx_sessions[key] = model
            log.info("loaded ONNX model %s (input %s %s)", p, model.input_name, model.input_shape)
    return model


def clear_model_cache() -> None:
    """Drop every cached model and session (tests; a long-lived process changing models)."""
    with _lock:
        _musicnn_models.clear()
        _onnx_sessions.clear()


# ----------------------------------------------------------------------------- helpers
def _check(vectors: np.ndarray, dim: int | None, what: str) -> np.ndarray:
    """float32 ``(n, dim)`` with every value finite, or an ExtractionError."""
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    if v.ndim != 2 or (dim is not None and v.shape[1] != dim):
        raise ExtractionError(f"{what}: expected vectors of length {dim}, got shape {v.shape}",
                              stage="extract:embeddings")
    if not np.all(np.isfinite(v)):
        raise ExtractionError(f"{what}: non-finite values in the embedding", stage="extract:embeddings")
    return v


def _mean(vectors: np.ndarray) -> np.ndarray:
    # Accumulate in float64 so the mean does not depend on summation blocking.
    return vectors.mean(axis=0, dtype=np.float64).astype(np.float32)


def _musicnn_logmel(frontend: Any) -> np.ndarray:
    """musicnn's input ``(frames, 96)`` from the frontend's shared 16 kHz mel spectrogram.

    The frontend's mel is the same librosa computation
    (:func:`mirflow.models.musicnn.musicnn_mel`: n_fft 512, hop 256, 96
    Slaney mels, centred with zero padding, power 2); the float16 rounding and
    ``log10(10000 x + 1)`` are applied here exactly as there (the test
    holds the two to bit-for-bit equality).
    """
    from mirflow.models import musicnn as mn

    def compute() -> np.ndarray:
        mel = frontend.mel(sample_rate_hz=mn.SR, n_fft=mn.FFT_SIZE, hop_length=mn.FFT_HOP, n_mels=mn.N_MELS)
        mel16 = mel.T.astype(np.float16).astype(np.float32)
        return np.log10(np.float32(10000.0) * mel16 + np.float32(1.0)).astype(np.float32, copy=False)

    return frontend.cached(("musicnn.logmel",), compute)


# ----------------------------------------------------------------------------- extractor
class EmbeddingExtractor(Extractor):
    """Track embeddings (``embeddings``), patch embeddings (``segment_embeddings``) and tags (``tags``).

    Examples
    --------
    >>> import numpy as np
    >>> from mirflow.frontend import Frontend
    >>> sr = 22050
    >>> y = 0.3 * np.sin(2 * np.pi * 330 * np.arange(4 * sr) / sr)
    >>> out = EmbeddingExtractor(model="descriptor").extract(Frontend.from_array(y, sr))
    >>> out.tables["embeddings"]["model"], len(out.tables["embeddings"]["embedding"][0])
    (['descriptor'], 65)
    """

    name = "embeddings"
    version = "1"
    Params = EmbeddingParams
    columns = ()
    tables = ("embeddings", "segment_embeddings", "tags")
    requires = ("signal", "stft", "mel", "cached")
    libraries = ("librosa", "numpy", "onnxruntime")
    licences = ("ISC (librosa; musicnn code and weights)", "MIT (onnxruntime)",
                "user's own licence (onnx model)")

    @property
    def model_name(self) -> str:
        """The ``model`` column value (and partition folder) of this extractor's rows."""
        p: EmbeddingParams = self.params
        if p.model == "descriptor":
            return DESCRIPTOR_MODEL
        if p.model == "musicnn":
            return MUSICNN_MODEL
        return p.model_name or Path(p.onnx_path).stem

    def embedding_dim(self) -> int | None:
        """The embedding length, when it is known without running the model (None for onnx)."""
        return {"descriptor": DESCRIPTOR_DIM, "musicnn": MUSICNN_DIM}.get(self.params.model)

    def requirements(self) -> tuple[Requirement, ...]:
        return {"musicnn": (MUSICNN_WEIGHTS, LIBROSA), "onnx": (ONNXRUNTIME,),
                "descriptor": (LIBROSA,)}[self.params.model]

    def extract(self, frontend: Any) -> Extraction:
        from threadpoolctl import threadpool_limits

        if frontend.is_empty:
            return self.empty("empty audio", reason="empty audio")
        # One BLAS thread: the same vectors whatever the host's core count
        # (a thread count can change summation order), and one core per worker.
        with threadpool_limits(1):
            model = self.params.model
            if model == "descriptor":
                return self._descriptor(frontend)
            if model == "musicnn":
                return self._musicnn(frontend)
            return self._onnx(frontend)

    def _silent(self, frontend: Any) -> bool:
        return frontend.is_empty or frontend.peak_dbfs() <= self.params.silence_threshold_dbfs

    def _rows(self, track: np.ndarray, version: str, segments: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
              tags: dict[str, list[Any]] | None = None, summary: dict[str, Any] | None = None) -> Extraction:
        name = self.model_name
        tables: dict[str, dict[str, list[Any]]] = {
            "embeddings": {"model": [name], "model_version": [version], "embedding": [track]},
        }
        if segments is not None:
            starts, ends, vectors = segments
            tables["segment_embeddings"] = {
                "model": [name] * len(starts), "start_s": [float(s) for s in starts],
                "end_s": [float(e) for e in ends], "embedding": list(vectors),
            }
        if tags is not None:
            tables["tags"] = tags
        return self.result({}, tables, summary=summary)

    # ---------------------------------------------------------------- backends
    def _descriptor(self, frontend: Any) -> Extraction:
        feats = frame_features(frontend, sample_rate_hz=DESCRIPTOR_SR, n_fft=DESCRIPTOR_N_FFT,
                               hop_length=DESCRIPTOR_HOP, silence_threshold_dbfs=self.params.silence_threshold_dbfs)
        if feats is None:
            return self.empty("silent: no embedding", reason="silent")
        vec = _check(descriptor_vector(feats)[None, :], DESCRIPTOR_DIM, "descriptor")[0]
        return self._rows(vec, DESCRIPTOR_VERSION, None, summary={"active_frames": feats.n_active})

    def _musicnn(self, frontend: Any) -> Extraction:

        if self._silent(frontend):
            return self.empty("silent: no embedding", reason="silent")
        try:
            net = load_musicnn()
        except ModelUnavailableError as exc:
            raise ExtractionError(str(exc), stage=f"extract:{self.name}") from exc
        hop = self.params.hop_seconds
        out = net.taggram_and_embeddings(mel=_musicnn_logmel(frontend), input_length=3.0,
                                         input_overlap=None if hop == 3.0 else hop, pad_short=True)
        vectors = _check(out.penultimate, MUSICNN_DIM, "musicnn")
        if vectors.shape[0] == 0:
            return self.empty("too short for one musicnn patch", reason="too short")
        probs = _check(out.taggram, len(out.tags), "musicnn taggram")
        mean_probs = _mean(probs)
        tags = {"tag": list(out.tags), "probability": [float(p) for p in mean_probs],
                "model": [MUSICNN_MODEL] * len(out.tags)}
        return self._rows(_mean(vectors), musicnn_version(), (out.start_s, out.end_s, vectors), tags,
                          summary={"taggram": probs})

    def _onnx(self, frontend: Any) -> Extraction:
        p: EmbeddingParams = self.params
        sr = p.input_sample_rate_hz
        y = frontend.signal(sr)
        if self._silent(frontend):
            return self.empty("silent: no embedding", reason="silent")
        model = load_onnx(p.onnx_path)
        if p.input_kind == "waveform":
            patch, hop = max(1, round(p.patch_seconds * sr)), max(1, round(p.hop_seconds * sr))
            starts = patch_starts(y.size, patch, hop, pad_short=True)
            padded = np.zeros(max(y.size, patch), dtype=np.float32)
            padded[: y.size] = y
            patches = np.stack([padded[s: s + patch] for s in starts])  # (n, samples)
            step_s = 1.0 / sr
        else:
            import librosa

            mel = frontend.mel(sample_rate_hz=sr, n_fft=p.n_fft, hop_length=p.hop_length, n_mels=p.n_mels)
            if p.logmel_scale == "db":
                logmel = librosa.power_to_db(mel)
            else:
                logmel = np.log10(np.float32(10000.0) * mel + np.float32(1.0))
            logmel = np.ascontiguousarray(logmel.T, dtype=np.float32)  # (frames, mels)
            patch = max(1, round(p.patch_seconds * sr / p.hop_length))
            hop = max(1, round(p.hop_seconds * sr / p.hop_length))
            starts = patch_starts(logmel.shape[0], patch, hop, pad_short=True)
            padded = np.zeros((max(logmel.shape[0], patch), p.n_mels), dtype=np.float32)
            padded[: logmel.shape[0]] = logmel
            patches = np.stack([padded[s: s + patch] for s in starts])  # (n, frames, mels)
            if p.logmel_layout == "mels_frames":
                patches = np.ascontiguousarray(patches.transpose(0, 2, 1))
            step_s = p.hop_length / sr
        vectors = self._run_onnx(model, patches)
        start_s = starts * step_s
        return self._rows(_mean(vectors), model.version, (start_s, start_s + p.patch_seconds, vectors))

    def _run_onnx(self, model: _OnnxModel, patches: np.ndarray) -> np.ndarray:
        """Run the session over ``patches`` in batches; pool any axes between batch and features."""
        p: EmbeddingParams = self.params
        shape = model.input_shape
        extra = len(shape) - patches.ndim
        if extra not in (0, 1):
            raise ExtractionError(f"ONNX input {model.input_name!r} has shape {list(shape)}; for input_kind "
                                  f"{p.input_kind!r} mirflow feeds rank {patches.ndim} (or with a channel axis "
                                  f"of 1, rank {patches.ndim + 1})", stage=f"extract:{self.name}")
        output = p.output_name or model.output_names[0]
        if output not in model.output_names:
            raise ExtractionError(f"ONNX model has no output {output!r}; outputs: {list(model.output_names)}",
                                  stage=f"extract:{self.name}")
        batch = ONNX_BATCH if not isinstance(shape[0], int) else max(1, shape[0])
        results = []
        for i in range(0, patches.shape[0], batch):
            x = patches[i: i + batch]
            if extra:
                x = x[:, None]  # (batch, 1, ...): a channel axis
            n = x.shape[0]
            if isinstance(shape[0], int) and n < batch:
                # A fixed batch size: pad the last batch with zero patches, drop their outputs.
                x = np.concatenate([x, np.zeros((batch - n, *x.shape[1:]), dtype=x.dtype)])
            try:
                (out,) = model.session.run([output], {model.input_name: np.ascontiguousarray(x, dtype=np.float32)})
            except Exception as exc:  # onnxruntime raises its own untyped errors
                raise ExtractionError(f"ONNX model failed on a patch of shape {list(x.shape)}: {exc}",
                                      stage=f"extract:{self.name}") from exc
            out = np.asarray(out, dtype=np.float32)[:n]
            if out.ndim == 1:
                out = out[:, None]
            elif out.ndim > 2:
                # e.g. (batch, time, features): pool the axes between batch and features.
                out = out.mean(axis=tuple(range(1, out.ndim - 1)), dtype=np.float64).astype(np.float32)
            results.append(out)
        return _check(np.concatenate(results), None, f"ONNX model {self.model_name}")

    # ------------------------------------------------------ long tracks
    def merges_windows(self) -> bool:
        return True

    def merge(self, parts: Sequence[WindowPart]) -> Extraction:
        """Patch rows of every window's share in track time; the track vector and tags are their means.

        A patch belongs to the window whose share holds its start, so the
        track's patches are those a whole-track run gives when the windows'
        starts fall on the patch grid (pipelines choose ``window_s`` and
        ``context_s`` as multiples of the hop), and the means are over the
        same patches. The descriptor model has no patches: its vector is the
        windows' vectors weighted by their active frames in their shares.
        """
        done = [part for part in parts if part.extraction.tables["embeddings"].get("embedding")]
        if not done:
            return self.empty("no embedding in any window", reason=longest_reason(parts))
        version = done[0].extraction.tables["embeddings"]["model_version"][0]
        if self.params.model == "descriptor":
            weights = window_weights(done, [part.extraction.summary["active_frames"] for part in done])
            vectors = np.stack([np.asarray(part.extraction.tables["embeddings"]["embedding"][0], np.float64)
                                for part in done])
            return self._rows(np.average(vectors, axis=0, weights=weights).astype(np.float32), version, None)
        starts: list[float] = []
        ends: list[float] = []
        vectors_kept: list[np.ndarray] = []
        taggrams: list[np.ndarray] = []
        for part in done:
            rows = part.extraction.tables["segment_embeddings"]
            start = np.asarray(rows["start_s"], dtype=np.float64)
            mask = part.owns(start)
            starts.extend((part.start_s + start[mask]).tolist())
            ends.extend((part.start_s + np.asarray(rows["end_s"], dtype=np.float64)[mask]).tolist())
            vectors_kept.extend(v for v, keep in zip(rows["embedding"], mask, strict=True) if keep)
            if "taggram" in part.extraction.summary:
                taggrams.append(np.asarray(part.extraction.summary["taggram"])[mask])
        if not vectors_kept:
            return self.empty("no patch in any window's share", reason="too short")
        vectors = np.stack(vectors_kept)
        tags = None
        if taggrams:
            first = done[0].extraction.tables["tags"]
            mean_probs = _mean(np.concatenate(taggrams))
            tags = {"tag": list(first["tag"]), "probability": [float(p) for p in mean_probs],
                    "model": list(first["model"])}
        return self._rows(_mean(vectors), version, (np.asarray(starts), np.asarray(ends), vectors), tags)
