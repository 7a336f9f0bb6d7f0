"""Benchmark: seconds per track and audio-seconds per second on one core, per backend,
plus leave-one-out k-NN accuracy of each embedding on properties the generator controls.

Run: ``.venv/bin/python benchmarks/embeddings.py [--tracks 40] [--seconds 30]``

Audio is generated (mirflow.synth numpy backend, 44.1 kHz); decoding is not
timed (the frontend wraps in-memory audio), but each backend's own spectra
and resampling are, on a fresh frontend per track. The first track of each
backend is a warm-up (numba JIT, model loading) and is timed separately.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import hashlib  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_embeddings import loo_knn_accuracy, write_logmel_model, write_waveform_model  # noqa: E402

from mirflow.extractors.descriptors import DescriptorExtractor  # noqa: E402
from mirflow.extractors.embeddings import EmbeddingExtractor  # noqa: E402
from mirflow.frontend import Frontend  # noqa: E402
from mirflow.synth.midi import arrange  # noqa: E402
from mirflow.synth.render import finish, render_arrangement  # noqa: E402
from mirflow.synth.spec import random_spec  # noqa: E402

SR = 44100


def render(seed: int, seconds: float, **fixed) -> np.ndarray:
    spec = random_spec(np.random.default_rng(seed), duration_s=seconds, backend="numpy", sample_rate_hz=SR, **fixed)
    y = render_arrangement(arrange(spec), backend="numpy", sample_rate_hz=SR, lead_in_s=spec.lead_in_s,
                           n_samples=spec.n_samples, seed=spec.seed)
    return finish(y, sample_rate_hz=SR, seed=spec.seed)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tracks", type=int, default=40)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=2000)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    n = args.tracks
    drums = np.array([i % 2 for i in range(n)])
    family = np.array([(i // 2) % 2 for i in range(n)])  # harmony: piano (0) or drawbar organ (16)
    t0 = time.perf_counter()
    tracks = [render(args.seed + i, args.seconds, drums=bool(drums[i]), program=(0, 16)[family[i]])
              for i in range(n)]
    audio_s = sum(y.size for y in tracks) / SR
    audio_digest = hashlib.blake2b(b"".join(y.tobytes() for y in tracks), digest_size=8).hexdigest()
    print(f"generated {n} tracks, {audio_s:.0f} s of audio (digest {audio_digest}), in "
          f"{time.perf_counter() - t0:.1f} s; one core, 1 BLAS/ORT thread")
    tmp = Path(tempfile.mkdtemp())
    backends = {
        "descriptors[essentia]": DescriptorExtractor(backend="essentia"),
        "descriptors[librosa]": DescriptorExtractor(backend="librosa"),
        "embeddings[descriptor]": EmbeddingExtractor(model="descriptor"),
        "embeddings[musicnn]": EmbeddingExtractor(model="musicnn"),
        "embeddings[onnx toy waveform 1 s]": EmbeddingExtractor(
            model="onnx", onnx_path=str(write_waveform_model(tmp / "fb.onnx", 16000)),
            input_sample_rate_hz=16000, patch_seconds=1.0, hop_seconds=1.0),
        "embeddings[onnx toy logmel 3 s]": EmbeddingExtractor(
            model="onnx", onnx_path=str(write_logmel_model(tmp / "lm.onnx", 96)), input_kind="logmel",
            input_sample_rate_hz=16000, patch_seconds=3.0, hop_seconds=3.0),
    }
    # CPU time of this process as well as wall time: the machine may be shared,
    # and CPU time is what one core spends whatever the neighbours do.
    print(f"{'backend':36s} {'warm-up s':>9s} {'wall s/trk':>10s} {'audio-s/s':>9s} {'cpu s/trk':>9s} "
          f"{'audio-s/cpu-s':>13s} {'kNN drums':>9s} {'kNN piano/organ':>15s}  digest")
    for name, ex in backends.items():
        with threadpool_limits(1):
            w0 = time.perf_counter()
            ex.extract(Frontend.from_array(tracks[0], SR))
            warm = time.perf_counter() - w0
            outs, spent, cpu = [], 0.0, 0.0
            for y in tracks:
                fe = Frontend.from_array(y, SR)
                s0, c0 = time.perf_counter(), time.process_time()
                outs.append(ex.extract(fe))
                spent += time.perf_counter() - s0
                cpu += time.process_time() - c0
        knn = ("", "")
        digest = ""
        if name.startswith("embeddings"):
            vecs = np.stack([np.asarray(o.tables["embeddings"]["embedding"][0]) for o in outs])
            knn = (f"{loo_knn_accuracy(vecs, drums):.3f}", f"{loo_knn_accuracy(vecs, family):.3f}")
            digest = hashlib.blake2b(vecs.tobytes(), digest_size=8).hexdigest()
        else:
            digest = hashlib.blake2b(repr([o.columns for o in outs]).encode(), digest_size=8).hexdigest()
        print(f"{name:36s} {warm:9.2f} {spent / n:10.3f} {audio_s / spent:9.1f} {cpu / n:9.3f} "
              f"{audio_s / cpu:13.1f} {knn[0]:>9s} {knn[1]:>15s}  {digest}")


if __name__ == "__main__":
    main()
