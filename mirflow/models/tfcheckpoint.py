"""Read TensorFlow checkpoint bundles (``.index`` + ``.data-*``) without TensorFlow.

Why this is hand-written: the only maintained readers of this format live
inside TensorFlow itself (``tf.train.load_checkpoint``), and importing
TensorFlow for a few megabytes of weights is what we want to avoid. No small,
maintained, pure-Python reader exists on PyPI (searched the package listing
for checkpoint/bundle/tfrecord readers: the hits are TF add-ons or unrelated),
so we decode the format directly. It is small and has been stable since
TensorFlow 1.0 (``tensorflow/core/util/tensor_bundle``):

* ``PREFIX.index`` is a LevelDB-format SSTable ("table"): data blocks of
  prefix-compressed key/value entries, an index block pointing at them and a
  48-byte footer ending in a magic number. Keys are tensor names; the value of
  the empty key is a serialized ``BundleHeaderProto``, every other value a
  serialized ``BundleEntryProto`` (dtype, shape, shard, offset, size, crc32c).
* ``PREFIX.data-0000N-of-0000M`` hold the raw tensor bytes, little-endian,
  row-major, at the offsets named by the entries.

Protocol buffers are decoded by hand too (varints and length-delimited
fields only), so that ``protobuf`` is not a dependency either. Only numeric
tensors are supported; string tensors and partitioned (sliced) variables,
which the models we load do not use, raise :class:`CheckpointFormatError`.

Examples
--------
>>> tensors = read_checkpoint("MSD_musicnn/")  # doctest: +SKIP
>>> tensors["dense/kernel"].shape  # doctest: +SKIP
(1506, 200)
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "CheckpointFormatError",
    "TensorEntry",
    "read_checkpoint",
    "read_index",
    "crc32c",
]

#: Magic number closing every LevelDB / TensorFlow table (``kTableMagicNumber``).
TABLE_MAGIC = 0xDB4775248B80FB57
#: Footer = two block handles padded to 2 * 20 bytes, then the 8-byte magic.
FOOTER_LENGTH = 48
#: Each block is followed by a 1-byte compression type and a 4-byte masked CRC.
BLOCK_TRAILER_LENGTH = 5
_NO_COMPRESSION = 0
_SNAPPY_COMPRESSION = 1

# TensorFlow ``DataType`` enum values (types.proto) -> numpy little-endian dtypes.
# bfloat16 (14) has no numpy equivalent and is absent on purpose.
_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),  # DT_FLOAT
    2: np.dtype("<f8"),  # DT_DOUBLE
    3: np.dtype("<i4"),  # DT_INT32
    4: np.dtype("u1"),  # DT_UINT8
    5: np.dtype("<i2"),  # DT_INT16
    6: np.dtype("i1"),  # DT_INT8
    8: np.dtype("<c8"),  # DT_COMPLEX64
    9: np.dtype("<i8"),  # DT_INT64
    10: np.dtype("?"),  # DT_BOOL
    17: np.dtype("<u2"),  # DT_UINT16
    18: np.dtype("<c16"),  # DT_COMPLEX128
    19: np.dtype("<f2"),  # DT_HALF
    22: np.dtype("<u4"),  # DT_UINT32
    23: np.dtype("<u8"),  # DT_UINT64
}
_DT_STRING = 7


class CheckpointFormatError(ValueError):
    """The files are not a TensorFlow checkpoint bundle this reader supports."""


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives in the data shards (a decoded ``BundleEntryProto``).

    Attributes
    ----------
    name : str
        Tensor (variable) name, e.g. ``"conv2d/kernel"``.
    dtype : int
        TensorFlow ``DataType`` enum value (1 = float32).
    shape : tuple of int
        Tensor shape; ``()`` for scalars.
    shard_id : int
        Index ``N`` of the ``.data-0000N-of-0000M`` file.
    offset : int
        Byte offset of the tensor in that shard.
    size : int
        Number of bytes.
    crc32c : int
        Masked CRC32-C of the bytes, as TensorFlow stores it.
    """

    name: str
    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int


# --------------------------------------------------------------------------- varints / protobuf


def _varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Decode one base-128 varint at ``pos``; return ``(value, next_pos)``."""
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise CheckpointFormatError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CheckpointFormatError("varint longer than 10 bytes")


def _signed64(value: int) -> int:
    # protobuf int32/int64 negatives are sign-extended 64-bit two's complement.
    return value - (1 << 64) if value >= 1 << 63 else value


def _proto_fields(buf: bytes | memoryview) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield ``(field_number, wire_type, value)`` of a serialized message.

    Varints come back as ints, fixed32/fixed64 as unsigned ints and
    length-delimited fields as bytes (sub-messages are decoded by the caller).
    """
    pos = 0
    end = len(buf)
    while pos < end:
        tag, pos = _varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value = bytes(buf[pos : pos + length])
            if len(value) != length:
                raise CheckpointFormatError("truncated length-delimited field")
            pos += length
        elif wire == 5:
            value = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        else:  # groups (3, 4) are not used by these protos
            raise CheckpointFormatError(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


def _decode_shape(buf: bytes) -> tuple[int, ...]:
    """Decode a ``TensorShapeProto``: repeated ``Dim dim = 2`` with ``int64 size = 1``."""
    dims: list[int] = []
    for field, _, value in _proto_fields(buf):
        if field == 2:
            size = 0
            for dfield, _, dvalue in _proto_fields(value):  # type: ignore[arg-type]
                if dfield == 1:
                    size = _signed64(dvalue)  # type: ignore[arg-type]
            dims.append(size)
        elif field == 3 and value:
            raise CheckpointFormatError("tensor of unknown rank in checkpoint")
    return tuple(dims)


def _decode_entry(name: str, buf: bytes) -> TensorEntry:
    """Decode a ``BundleEntryProto``."""
    dtype, shape, shard_id, offset, size, crc = 0, (), 0, 0, 0, 0
    for field, _, value in _proto_fields(buf):
        if field == 1:
            dtype = int(value)  # type: ignore[arg-type]
        elif field == 2:
            shape = _decode_shape(value)  # type: ignore[arg-type]
        elif field == 3:
            shard_id = int(value)  # type: ignore[arg-type]
        elif field == 4:
            offset = _signed64(value)  # type: ignore[arg-type]
        elif field == 5:
            size = _signed64(value)  # type: ignore[arg-type]
        elif field == 6:
            crc = int(value)  # type: ignore[arg-type]
        elif field == 7:
            raise CheckpointFormatError(f"{name!r} is a partitioned (sliced) variable: unsupported")
    return TensorEntry(name, dtype, tuple(shape), shard_id, offset, size, crc)


def _decode_header(buf: bytes) -> tuple[int, int]:
    """Decode a ``BundleHeaderProto``; return ``(num_shards, endianness)``."""
    num_shards, endianness = 1, 0
    for field, _, value in _proto_fields(buf):
        if field == 1:
            num_shards = int(value)  # type: ignore[arg-type]
        elif field == 2:
            endianness = int(value)  # type: ignore[arg-type]
    return num_shards, endianness


# --------------------------------------------------------------------------- SSTable


def _read_block(data: bytes, offset: int, size: int) -> bytes:
    """Return the payload of the block at ``offset`` (without its 5-byte trailer)."""
    if offset < 0 or offset + size + BLOCK_TRAILER_LENGTH > len(data):
        raise CheckpointFormatError("block handle points outside the index file")
    ctype = data[offset + size]
    if ctype == _SNAPPY_COMPRESSION:
        # TensorFlow writes bundle indexes uncompressed; a snappy-compressed one
        # comes from a custom writer, and we would rather not carry a snappy decoder.
        raise CheckpointFormatError(
            "checkpoint index block is snappy-compressed; only uncompressed "
            "indexes (what TensorFlow writes) are supported"
        )
    if ctype != _NO_COMPRESSION:
        raise CheckpointFormatError(f"unknown block compression type {ctype}")
    return data[offset : offset + size]


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Yield the ``(key, value)`` pairs of one table block, in order.

    Keys are prefix-compressed against the previous key (``shared`` bytes
    reused); the restart array at the end only speeds up seeking, so a full
    scan can ignore it beyond finding where the entries end.
    """
    if len(block) < 4:
        raise CheckpointFormatError("table block too short")
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 - 4 * num_restarts
    if limit < 0:
        raise CheckpointFormatError("corrupt restart array in table block")
    pos = 0
    key = b""
    while pos < limit:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        if shared > len(key) or pos + non_shared + value_len > limit:
            raise CheckpointFormatError("corrupt table block entry")
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        yield key, block[pos : pos + value_len]
        pos += value_len


def _table_items(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Yield every ``(key, value)`` of a LevelDB-format table held in ``data``."""
    if len(data) < FOOTER_LENGTH:
        raise CheckpointFormatError("index file shorter than a table footer")
    footer = data[-FOOTER_LENGTH:]
    (magic,) = struct.unpack_from("<Q", footer, FOOTER_LENGTH - 8)
    if magic != TABLE_MAGIC:
        raise CheckpointFormatError(
            f"bad table magic {magic:#x}: not a TensorFlow checkpoint index"
        )
    pos = 0
    _meta_offset, pos = _varint(footer, pos)  # metaindex: empty in bundles, unused
    _meta_size, pos = _varint(footer, pos)
    index_offset, pos = _varint(footer, pos)
    index_size, pos = _varint(footer, pos)
    index_block = _read_block(data, index_offset, index_size)
    for _separator, handle in _block_entries(index_block):
        offset, hpos = _varint(handle, 0)
        size, _ = _varint(handle, hpos)
        yield from _block_entries(_read_block(data, offset, size))


# --------------------------------------------------------------------------- CRC32-C


def _crc32c_table() -> list[int]:
    poly = 0x82F63B78  # Castagnoli, reflected
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE: list[int] | None = None


def crc32c(data: bytes | memoryview) -> int:
    """Return the CRC32-C (Castagnoli) of ``data``.

    Pure Python (about 0.1 s per MB): verification is optional because the
    model store already pins SHA-256 digests of the whole files.
    """
    global _CRC_TABLE
    if _CRC_TABLE is None:
        _CRC_TABLE = _crc32c_table()
    table = _CRC_TABLE
    crc = 0xFFFFFFFF
    for b in bytes(data):
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _mask_crc(crc: int) -> int:
    # TensorFlow/LevelDB store "masked" CRCs so that CRCs of data containing CRCs stay robust.
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# --------------------------------------------------------------------------- public API


def _index_path(prefix: str | os.PathLike[str]) -> Path:
    # A prefix may name a directory ("MSD_musicnn/", files ".index" inside) or a
    # file stem ("model.ckpt", files "model.ckpt.index"): plain concatenation covers both.
    return Path(os.fspath(prefix) + ".index")


def read_index(prefix: str | os.PathLike[str]) -> tuple[int, dict[str, TensorEntry]]:
    """Read the ``.index`` table of a checkpoint bundle.

    Parameters
    ----------
    prefix : str or path-like
        Checkpoint prefix, i.e. the path without ``.index`` (for musicnn's
        ``MSD_musicnn/.index`` the prefix is ``"MSD_musicnn/"``).

    Returns
    -------
    num_shards : int
        Number of ``.data`` shards.
    entries : dict of str to TensorEntry
        Tensor name -> location, in the table's (sorted) order.

    Raises
    ------
    FileNotFoundError
        If the index file does not exist.
    CheckpointFormatError
        If it is not a supported checkpoint index.
    """
    data = _index_path(prefix).read_bytes()
    num_shards, endianness = 1, 0
    entries: dict[str, TensorEntry] = {}
    for key, value in _table_items(data):
        if key == b"":
            num_shards, endianness = _decode_header(value)
            continue
        name = key.decode("utf-8")
        entries[name] = _decode_entry(name, value)
    if endianness != 0:
        raise CheckpointFormatError("big-endian checkpoint bundles are not supported")
    return num_shards, entries


def read_checkpoint(
    prefix: str | os.PathLike[str],
    names: Iterable[str] | None = None,
    *,
    verify_crc: bool = False,
) -> dict[str, np.ndarray]:
    """Load tensors of a TensorFlow checkpoint bundle as numpy arrays.

    Parameters
    ----------
    prefix : str or path-like
        Checkpoint prefix (path without ``.index``).
    names : iterable of str, optional
        Tensors to load; all of them when omitted (optimizer slots included,
        which for training checkpoints is about three times the model).
    verify_crc : bool, default False
        Check each tensor's CRC32-C against the index (pure Python, slow for
        large checkpoints).

    Returns
    -------
    dict of str to numpy.ndarray
        Native-endian arrays of the stored dtype and shape, owning their memory.

    Raises
    ------
    KeyError
        If a requested name is not in the checkpoint.
    CheckpointFormatError
        On unsupported dtypes, truncated shards or CRC mismatches.
    """
    num_shards, entries = read_index(prefix)
    wanted = list(entries) if names is None else list(names)
    missing = [n for n in wanted if n not in entries]
    if missing:
        raise KeyError(f"not in checkpoint {os.fspath(prefix)!r}: {missing}")
    out: dict[str, np.ndarray] = {}
    shards: dict[int, bytes] = {}
    for name in wanted:
        entry = entries[name]
        if entry.dtype == _DT_STRING:
            raise CheckpointFormatError(f"{name!r}: string tensors are not supported")
        dtype = _DTYPES.get(entry.dtype)
        if dtype is None:
            raise CheckpointFormatError(
                f"{name!r}: unsupported TensorFlow dtype enum {entry.dtype}"
            )
        if entry.shard_id not in shards:
            # Shards of small models fit in memory comfortably; reading each
            # file once is simpler and faster than seeking per tensor.
            path = Path(f"{os.fspath(prefix)}.data-{entry.shard_id:05d}-of-{num_shards:05d}")
            shards[entry.shard_id] = path.read_bytes()
        shard = shards[entry.shard_id]
        count = int(np.prod(entry.shape, dtype=np.int64))
        if entry.size != count * dtype.itemsize or entry.offset + entry.size > len(shard):
            raise CheckpointFormatError(f"{name!r}: size/offset inconsistent with shape or shard")
        raw = shard[entry.offset : entry.offset + entry.size]
        if verify_crc and _mask_crc(crc32c(raw)) != entry.crc32c:
            raise CheckpointFormatError(f"{name!r}: CRC32-C mismatch (corrupt data shard)")
        array = np.frombuffer(raw, dtype=dtype, count=count).reshape(entry.shape)
        out[name] = array.astype(dtype.newbyteorder("="), copy=True)
    log.debug("read %d tensors from checkpoint %s", len(out), os.fspath(prefix))
    return out
