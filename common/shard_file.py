"""The on-disk format of a shard file, shared by the node that writes it and by a client
that reads it directly (short-circuit reads, `shoal.client.local_reads`).

A shard file is `shards/<xy>/<shard_id>` under a node's data directory, where `<xy>` is the
first two hex digits of the version id, and holds a 32-byte header (magic, format, reserved,
data length, xxh3-128 checksum of the data) followed by the data.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from shoal.common.names import parse_shard_id

MAGIC = b"SHRD"
FORMAT_VERSION = 1
HEADER = struct.Struct(">4sHHQ16s")  # magic, format, reserved, length, checksum
HEADER_BYTES = HEADER.size  # 32
SHARDS_DIR = "shards"
NODE_ID_FILE = "node_id"


def shard_path(shards_dir: Path, shard_id: str) -> Path:
    """Where shard `shard_id` lives under `shards_dir` (validates the id, so no path escapes)."""
    version_id, _stripe, _index = parse_shard_id(shard_id)
    return shards_dir / version_id[:2] / shard_id


def header_problem(header: bytes, file_size: int) -> str:
    """What is wrong with a shard file's header given the file's size; "" when nothing."""
    if len(header) < HEADER_BYTES:
        return "truncated header"
    magic, fmt, _reserved, length, _checksum = HEADER.unpack(header[:HEADER_BYTES])
    if magic != MAGIC or fmt != FORMAT_VERSION:
        return "bad header"
    if file_size - HEADER_BYTES != length:
        return f"length {file_size - HEADER_BYTES} differs from recorded {length}"
    return ""


def pread_exactly(fd: int, size: int, offset: int) -> bytes:
    """`size` bytes at `offset` (one pread may return fewer), fewer only at the end of the
    file."""
    data = os.pread(fd, size, offset)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)
