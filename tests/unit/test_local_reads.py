"""LocalShardFiles: short-circuit reads of shard files a real ShardStore wrote."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shoal.client.local_reads import LocalShardFiles, parse_dirs
from shoal.common.checksum import shard_checksum
from shoal.common.errors import InvalidArgument
from shoal.common.names import shard_id
from shoal.storage_node.shard_store import HEADER_BYTES, ShardMeta, ShardStore

VERSION = "0a" + "1" * 30


def node_dir(root: Path, node_id: str) -> tuple[Path, ShardStore]:
    data_dir = root / node_id
    store = ShardStore(data_dir)
    (data_dir / "node_id").write_text(node_id + "\n")
    return data_dir, store


def store_shard(store: ShardStore, index: int, data: bytes) -> str:
    sid = shard_id(VERSION, 0, index)
    store.write(ShardMeta(sid, len(data), shard_checksum(data)), data)
    return sid


def test_reads_a_shard_file_and_counts_the_hit(tmp_path: Path) -> None:
    data_dir, store = node_dir(tmp_path, "node-a")
    data = os.urandom(70_000)
    sid = store_shard(store, 0, data)
    local = LocalShardFiles([data_dir])
    assert local.holds("node-a")
    assert local.read("node-a", sid, len(data), shard_checksum(data)) == data
    assert (local.hits, local.fallbacks) == (1, 0)


def test_anything_unusable_falls_back(tmp_path: Path) -> None:
    data_dir, store = node_dir(tmp_path, "node-a")
    data = os.urandom(4096)
    sid = store_shard(store, 1, data)
    good = shard_checksum(data)
    local = LocalShardFiles([data_dir])
    # The manifest disagrees with the file: another checksum, another length.
    assert local.read("node-a", sid, len(data), shard_checksum(b"other")) is None
    assert local.read("node-a", sid, len(data) - 1, good) is None
    # A shard this node does not hold, and a node that is not ours.
    assert local.read("node-a", shard_id(VERSION, 0, 5), len(data), good) is None
    assert local.read("node-b", sid, len(data), good) is None
    # A flipped data byte: the file's header is fine, the checksum is not.
    path = store.path_of(sid)
    raw = bytearray(path.read_bytes())
    raw[HEADER_BYTES + 7] ^= 0x01
    path.write_bytes(bytes(raw))
    assert local.read("node-a", sid, len(data), good) is None
    # A truncated file: the header records more than the file holds.
    path.write_bytes(bytes(raw[:-10]))
    assert local.read("node-a", sid, len(data), good) is None
    assert (local.hits, local.fallbacks) == (0, 6)
    assert path.exists(), "a client never quarantines or deletes a node's file"


def test_a_node_that_starts_later_is_found_after_the_rescan_delay(tmp_path: Path) -> None:
    now = [100.0]
    later = tmp_path / "node-late"
    local = LocalShardFiles([later], rescan_after_s=5.0, clock=lambda: now[0])
    assert not local.holds("node-late")  # no directory yet
    node_dir(tmp_path, "node-late")
    assert not local.holds("node-late"), "looked again before rescan_after_s"
    now[0] += 5.0
    assert local.holds("node-late")
    assert local.shards_dir("node-late") == later / "shards"


def test_parse_dirs_accepts_paths_and_comma_separated_text(tmp_path: Path) -> None:
    assert parse_dirs(None) == ()
    assert parse_dirs(f"{tmp_path}/a, {tmp_path}/b,") == (tmp_path / "a", tmp_path / "b")
    assert parse_dirs([tmp_path / "a", str(tmp_path / "b")]) == (tmp_path / "a", tmp_path / "b")
    assert parse_dirs(tmp_path) == (tmp_path,)
    with pytest.raises(InvalidArgument, match="local_node_dirs"):
        parse_dirs(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="not a directory path"):
        parse_dirs([tmp_path, 7])  # type: ignore[list-item]
