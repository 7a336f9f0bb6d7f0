"""Plots people would rather look at than read: tempo, key and loudness distributions.

Matplotlib with the Agg backend (no display needed); each function writes a
PNG and returns its path.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mirflow.query import connect

log = logging.getLogger(__name__)


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_catalog(catalog: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Draw every plot the catalog has data for into ``out_dir``; return the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    con = connect(catalog)
    tracks = con.sql("select * from current_tracks").df()
    written: list[Path] = []
    plt = _figure()
    if "tempo_bpm" in tracks and tracks["tempo_bpm"].notna().any():
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.hist(tracks["tempo_bpm"].dropna(), bins=range(40, 221, 5), color="#3b6ea8")
        ax.set_xlabel("tempo (BPM)")
        ax.set_ylabel("tracks")
        ax.set_title("Tempo distribution")
        written.append(_save(fig, out / "tempo.png"))
    if "key" in tracks and tracks["key"].notna().any():
        from mirflow.labels import parse_key

        counts = tracks["key"].value_counts()
        # Camelot order (1A, 1B, 2A, …): neighbours on the wheel mix harmonically.
        order = sorted(counts.index, key=lambda k: (parse_key(k).camelot_number, parse_key(k).mode == "major"))
        fig, ax = plt.subplots(figsize=(9, 3.5))
        ax.bar(range(len(order)), [counts[k] for k in order], color="#a8563b")
        ax.set_xticks(range(len(order)), [f"{k} ({parse_key(k).camelot})" for k in order],
                      rotation=60, ha="right", fontsize=8)
        ax.set_ylabel("tracks")
        ax.set_title("Key distribution (Camelot wheel order)")
        written.append(_save(fig, out / "keys.png"))
    if "loudness_integrated_lufs" in tracks and tracks["loudness_integrated_lufs"].notna().any():
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.hist(tracks["loudness_integrated_lufs"].dropna(), bins=30, color="#4a8a4a")
        ax.set_xlabel("integrated loudness (LUFS)")
        ax.set_ylabel("tracks")
        ax.set_title("Loudness distribution")
        written.append(_save(fig, out / "loudness.png"))
    emb = con.sql("select * from embeddings").df() if "embeddings" in {r[0] for r in con.sql("show tables").fetchall()} else None
    if emb is not None and len(emb) >= 3:
        import numpy as np
        from sklearn.decomposition import PCA

        for model, group in emb.groupby("model"):
            x = np.stack(group["embedding"].to_numpy())
            xy = PCA(n_components=2, random_state=0).fit_transform(x)
            labels = group.merge(tracks[["track_id", "key"]] if "key" in tracks else tracks[["track_id"]],
                                 on="track_id", how="left")
            fig, ax = plt.subplots(figsize=(6, 5))
            ax.scatter(xy[:, 0], xy[:, 1], s=18, c="#6a4a8a")
            if "key" in labels:
                for (px, py), k in zip(xy, labels["key"], strict=False):
                    if isinstance(k, str):
                        ax.annotate(k, (px, py), fontsize=6, alpha=0.7)
            ax.set_title(f"Embedding map ({model}, PCA)")
            written.append(_save(fig, out / f"embeddings_{model}.png"))
    return written


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _figure().close(fig)
    log.info("wrote %s", path)
    return path
