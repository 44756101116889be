"""Read a TensorFlow (V2 "bundle") checkpoint's variables into numpy, without TensorFlow.

    variables = read_checkpoint("checkpoint/run1/model-1000")   # {"model/wte": array, ...}

A checkpoint is `PREFIX.index`, a LevelDB-format table mapping each variable name to a
BundleEntryProto (dtype, shape, shard, offset, size), and `PREFIX.data-0000k-of-0000n`, the
raw little-endian tensor bytes. Reading both takes ~100 lines, which spares people who only
want to import a gpt-2-simple checkpoint a 2 GB TensorFlow install. Formats this reader does
not handle (compressed index blocks, partitioned variables) fall back to TensorFlow.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

_MAGIC = 0xDB4775248B80FB57  # LevelDB table footer magic
# tensorflow/core/framework/types.proto -> numpy; strings and resources are not weights.
_DTYPES = {
    1: np.float32,
    2: np.float64,
    3: np.int32,
    4: np.uint8,
    5: np.int16,
    6: np.int8,
    9: np.int64,
    10: np.bool_,
    19: np.float16,
}


class UnsupportedCheckpoint(ValueError):
    """Valid, but in a form this reader does not decode (TensorFlow can)."""


def read_checkpoint(prefix: str | Path) -> dict[str, np.ndarray]:
    prefix = Path(prefix)
    index = Path(f"{prefix}.index").read_bytes()
    entries = dict(_table_entries(index))
    header = _fields(entries.pop(b"", b""))
    num_shards = header.get(1, [1])[0]
    if header.get(2, [0])[0] != 0:
        raise UnsupportedCheckpoint(f"{prefix}: big-endian checkpoint")
    shards: dict[int, bytes] = {}
    variables = {}
    for key, value in entries.items():
        entry = _fields(value)
        dtype = _DTYPES.get(entry.get(1, [0])[0])
        if dtype is None:
            continue
        if 7 in entry:
            raise UnsupportedCheckpoint(f"{prefix}: {key.decode()} is a partitioned variable")
        shard = entry.get(3, [0])[0]
        if shard not in shards:
            shards[shard] = Path(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}").read_bytes()
        offset, size = entry.get(4, [0])[0], entry.get(5, [0])[0]
        shape = [_fields(d).get(1, [0])[0] for d in _fields(entry[2][0]).get(2, [])] if 2 in entry else []
        raw = shards[shard][offset : offset + size]
        variables[key.decode()] = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    return variables


def _table_entries(table: bytes) -> list[tuple[bytes, bytes]]:
    footer = table[-48:]
    if struct.unpack("<Q", footer[-8:])[0] != _MAGIC:
        raise ValueError("not a TensorFlow checkpoint index (bad table magic)")
    _, pos = _varint(footer, 0)  # metaindex offset
    _, pos = _varint(footer, pos)  # metaindex size
    index_offset, pos = _varint(footer, pos)
    index_size, _ = _varint(footer, pos)
    entries = []
    for _, handle in _block_entries(_block(table, index_offset, index_size)):
        offset, pos = _varint(handle, 0)
        size, _ = _varint(handle, pos)
        entries.extend(_block_entries(_block(table, offset, size)))
    return entries


def _block(table: bytes, offset: int, size: int) -> bytes:
    if table[offset + size] != 0:  # the trailer's type byte: 0 = stored, 1 = snappy
        raise UnsupportedCheckpoint("compressed checkpoint index")
    return table[offset : offset + size]


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    num_restarts = struct.unpack("<I", block[-4:])[0]
    end = len(block) - 4 - 4 * num_restarts
    entries, key, pos = [], b"", 0
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]  # keys are prefix-compressed
        pos += unshared
        entries.append((key, block[pos : pos + length]))
        pos += length
    return entries


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(message: bytes) -> dict[int, list]:
    """A protobuf message's fields by number: ints for varint/fixed, bytes for nested/strings."""
    fields: dict[int, list] = {}
    pos = 0
    value: int | bytes
    while pos < len(message):
        tag, pos = _varint(message, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(message, pos)
        elif wire == 1:
            value, pos = struct.unpack("<Q", message[pos : pos + 8])[0], pos + 8
        elif wire == 2:
            length, pos = _varint(message, pos)
            value, pos = message[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = struct.unpack("<I", message[pos : pos + 4])[0], pos + 4
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields
