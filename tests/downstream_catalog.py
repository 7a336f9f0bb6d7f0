"""A small analyzed catalog with labels the generator controls, for the downstream layer's tests.

The catalog is analyzed by the real default pipeline on a real LocalCluster;
``labels.csv`` holds, per path, what the generator put in (``drums`` yes/no,
``mode`` major/minor, ``tempo_bpm``, ``key``), so a classifier trained on the
tables has an exact answer to reach.

Building it takes about a minute on two cores. Set ``MIRFLOW_DOWNSTREAM_CACHE``
to a folder to build it once there and reuse it across test sessions while
developing; tests always get their own copy, so they may write into it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

#: Tracks in the shared catalog: every combination of drums × mode, tempi and keys spread.
N_TRACKS = 24
DURATION_BARS = 6


def _specs(n: int):
    from mirflow.synth import TrackSpec

    rng = np.random.default_rng(1234)
    specs = []
    for i in range(n):
        drums = bool(i % 2)
        mode = "minor" if (i // 2) % 2 else "major"
        specs.append(TrackSpec(
            tempo_bpm=float(rng.uniform(80, 150)), meter=4, tonic=int(rng.integers(0, 12)), mode=mode,
            n_bars=DURATION_BARS, drums=drums, comping=["beats", "arpeggio", "sustain"][i % 3],
            program=int(rng.choice([0, 4, 24, 48])), backend="numpy", sample_rate_hz=22050, seed=100 + i,
        ))
    return specs


def build(root: Path, n: int = N_TRACKS) -> tuple[Path, Path]:
    """Render ``n`` labelled tracks under ``root/audio``, analyze them into ``root/catalog``.

    Returns ``(catalog, labels_csv)``.
    """
    from mirflow.pipeline.runner import ClusterOptions, analyze
    from mirflow.synth import render_track

    audio = root / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, spec in enumerate(_specs(n)):
        path = audio / f"t{i:03d}.wav"
        render_track(spec, path)
        rows.append({"path": str(path.resolve()), "drums": "drums" if spec.drums else "no_drums",
                     "mode": spec.mode, "tempo_bpm": spec.tempo_bpm, "key": spec.key})
    labels = root / "labels.csv"
    pd.DataFrame(rows).to_csv(labels, index=False)
    catalog = root / "catalog"
    summary, _ = analyze([audio], catalog, cluster=ClusterOptions(workers=2, dashboard=False))
    if summary.failed:
        raise RuntimeError(f"downstream test catalog: {summary.failed} tracks failed: {summary.failures}")
    from accounting import assert_accounted

    assert_accounted(catalog, [audio], summary)
    return catalog, labels


def get(tmp_root: Path) -> tuple[Path, Path]:
    """A private copy of the shared catalog under ``tmp_root`` (built, or copied from the cache).

    The copy's ``tracks.path`` still points at the audio where it was built
    (in the cache or under ``tmp_root``), so tests can read the files too.
    """
    import fcntl

    cache = os.environ.get("MIRFLOW_DOWNSTREAM_CACHE")
    if not cache:
        return build(tmp_root)
    cache_dir = Path(cache)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir.with_name(cache_dir.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder; other test sessions wait for it
        if not (cache_dir / "labels.csv").exists():
            shutil.rmtree(cache_dir / "catalog", ignore_errors=True)
            build(cache_dir)
    shutil.copytree(cache_dir / "catalog", tmp_root / "catalog")
    shutil.copy(cache_dir / "labels.csv", tmp_root / "labels.csv")
    return tmp_root / "catalog", tmp_root / "labels.csv"
