"""What musicnn's patch hop does to the track-level embedding and tags: hop 3 s (every patch) vs longer hops.

musicnn cuts a track into 3-s patches; the track's embedding and tag
probabilities are the mean over its patches, and the network's cost is
proportional to their number. A hop of 6 s runs every other patch of the
3-s grid (the same patches, one in two), so both are computed from one pass
here: the per-patch outputs at hop 3 s, and their means over every patch
or over every k-th one.

Reported per hop, over every file given (folders of audio, searched
recursively) and over generated tracks with known properties
(``benchmarks/embeddings.py``'s generator: drums on/off, piano or organ):

* cosine similarity between each track's hop-3 s and hop-k embedding
  (minimum, 5th percentile, median);
* nearest-neighbour agreement: the fraction of tracks whose nearest other
  track (cosine) is the same with both embeddings, and the mean overlap of
  the 10 nearest;
* tags: the fraction of tracks with the same top tag, the mean overlap of
  the top 5, the largest change of a tag probability;
* leave-one-out 3-NN accuracy on the generated tracks' drums and piano/organ
  labels.

    python benchmarks/musicnn_hop.py /usr/share/games/etr/music /usr/share/games/lincity-ng/music \\
        bench-accuracy/corpus-n48-seed0/audio --generated 40
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

AUDIO = {".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus"}


def per_patch(frontend) -> tuple[np.ndarray, np.ndarray]:
    """Per-patch (embedding, tag probabilities) of one track at hop 3 s, as the extractor computes them."""
    from mirflow.extractors.embeddings import _musicnn_logmel, load_musicnn

    out = load_musicnn().taggram_and_embeddings(mel=_musicnn_logmel(frontend), input_length=3.0, pad_short=True)
    return out.penultimate.astype(np.float64), out.taggram.astype(np.float64)


def neighbours(vectors: np.ndarray, k: int) -> np.ndarray:
    """Each track's ``k`` nearest other tracks by cosine distance, nearest first."""
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(vectors).kneighbors(
        return_distance=False)


def compare(name: str, patches: list[tuple[np.ndarray, np.ndarray]], every: int,
            labels: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    from sklearn.preprocessing import normalize
    from test_embeddings import loo_knn_accuracy

    full = np.stack([e.mean(axis=0) for e, _ in patches])
    sub = np.stack([e[::every].mean(axis=0) for e, _ in patches])
    tags_full = np.stack([t.mean(axis=0) for _, t in patches])
    tags_sub = np.stack([t[::every].mean(axis=0) for _, t in patches])
    cos = np.sum(normalize(full) * normalize(sub), axis=1)
    k = min(10, len(patches) - 1)
    nn_full, nn_sub = neighbours(full, k), neighbours(sub, k)
    top5 = [len(set(np.argsort(-a)[:5]) & set(np.argsort(-b)[:5])) / 5 for a, b in zip(tags_full, tags_sub, strict=True)]
    row = {
        "tracks": len(patches), "patches per track (hop 3 s)": float(np.mean([len(e) for e, _ in patches])),
        "cosine min": float(cos.min()), "cosine p5": float(np.percentile(cos, 5)),
        "cosine median": float(np.median(cos)),
        "same nearest neighbour": float(np.mean(nn_full[:, 0] == nn_sub[:, 0])),
        f"top-{k} overlap": float(np.mean([len(set(a) & set(b)) / k for a, b in zip(nn_full, nn_sub, strict=True)])),
        "same top tag": float(np.mean(tags_full.argmax(1) == tags_sub.argmax(1))),
        "top-5 tag overlap": float(np.mean(top5)),
        "largest tag change": float(np.abs(tags_full - tags_sub).max()),
    }
    for label, y in (labels or {}).items():
        row[f"3-NN {label} (hop 3 s -> hop {3 * every} s)"] = (loo_knn_accuracy(full, y), loo_knn_accuracy(sub, y))
    print(f"\n{name}, hop {3 * every} s against hop 3 s:")
    for key, value in row.items():
        shown = "{:.3f} -> {:.3f}".format(*value) if isinstance(value, tuple) else f"{value:.3f}"
        print(f"  {key:40s} {shown}")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="*", type=Path, help="audio folders (searched recursively)")
    ap.add_argument("--generated", type=int, default=40, help="generated tracks with drums/instrument labels")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each generated track")
    ap.add_argument("--every", type=int, nargs="+", default=[2, 3], help="keep every k-th patch (hop 3k s)")
    args = ap.parse_args()

    from threadpoolctl import threadpool_limits

    from mirflow.frontend import Frontend

    with threadpool_limits(1):
        files = sorted(p for folder in args.folders for p in folder.rglob("*") if p.suffix.lower() in AUDIO)
        real = [per_patch(Frontend.from_file(p)) for p in files]
        generated, labels = [], {}
        if args.generated:
            from embeddings import SR, render

            n = args.generated
            drums = np.array([i % 2 for i in range(n)])
            family = np.array([(i // 2) % 2 for i in range(n)])
            generated = [per_patch(Frontend.from_array(render(2000 + i, args.seconds, drums=bool(drums[i]),
                                                              program=(0, 16)[family[i]]), SR))
                         for i in range(n)]
            labels = {"drums": drums, "piano/organ": family}
    for every in args.every:
        if real:
            compare(f"{len(files)} files from {', '.join(map(str, args.folders))}", real, every)
        if generated:
            compare(f"{len(generated)} generated tracks", generated, every, labels)


if __name__ == "__main__":
    main()
