"""WrittenPages and the ShardStore using it: the pages of shards written past the window leave
the page cache (seen with a RWF_NOWAIT read, which fails for bytes not in memory), recent and
asked-for shards keep theirs, and a shard whose pages were dropped still reads back verified."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shoal.common.checksum import shard_checksum
from shoal.common.errors import ConfigError
from shoal.common.units import MiB
from shoal.storage_node.config import NodeConfig
from shoal.storage_node.shard_store import ShardMeta, ShardStore
from shoal.storage_node.written_pages import WrittenPages


def cached(path: Path) -> bool:
    """Whether the first page of `path` is in the page cache (a RWF_NOWAIT read succeeds)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.preadv(fd, [bytearray(4096)], 0, os.RWF_NOWAIT)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def durable_file(path: Path, size: int = MiB) -> Path:
    with open(path, "wb") as out:
        out.write(os.urandom(size))
        out.flush()
        os.fsync(out.fileno())
    return path


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    """tmp_path, where dropping clean pages is seen to work (not on tmpfs: its pages are the
    files themselves, so the advice cannot drop them)."""
    probe = durable_file(tmp_path / "probe", 64 * 1024)
    fd = os.open(probe, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    if cached(probe):
        pytest.skip(f"{tmp_path} keeps clean pages after POSIX_FADV_DONTNEED (tmpfs?)")
    probe.unlink()
    return tmp_path


def test_pages_of_shards_past_the_window_are_dropped_oldest_first(disk: Path) -> None:
    pages = WrittenPages(window=2 * MiB)
    files = [durable_file(disk / f"s{i}") for i in range(4)]
    for path in files:
        assert cached(path)
        pages.written(path, MiB)
    assert [cached(path) for path in files] == [False, False, True, True]
    assert pages.dropped == 2
    assert pages.pending() == 2 * MiB


def test_a_window_of_zero_drops_each_shard_once_recorded(disk: Path) -> None:
    pages = WrittenPages(window=0)
    path = durable_file(disk / "only")
    pages.written(path, MiB)
    assert not cached(path)
    assert pages.pending() == 0


def test_a_shard_asked_for_keeps_its_pages(disk: Path) -> None:
    pages = WrittenPages(window=MiB)
    wanted, other, newer = (durable_file(disk / name) for name in ("wanted", "other", "newer"))
    pages.written(wanted, MiB)
    pages.asked_for(wanted)
    pages.written(other, MiB)
    pages.written(newer, MiB)  # pushes `other` out; `wanted` is no longer tracked
    assert cached(wanted)
    assert not cached(other)
    assert cached(newer)


def test_rewriting_a_path_counts_it_once_and_deleted_files_are_skipped(disk: Path) -> None:
    pages = WrittenPages(window=2 * MiB)
    first = durable_file(disk / "a")
    pages.written(first, MiB)
    pages.written(first, MiB)  # written again (same shard id): still one entry
    assert pages.pending() == MiB
    first.unlink()
    later = [durable_file(disk / f"b{i}") for i in range(2)]
    for path in later:
        pages.written(path, MiB)  # drops `a`, which is gone: no error, nothing counted
    assert pages.dropped == 0
    assert pages.pending() == 2 * MiB


def test_a_negative_window_is_refused() -> None:
    with pytest.raises(ValueError, match="window"):
        WrittenPages(window=-1)


def test_store_drops_written_shards_and_still_reads_them_back_verified(disk: Path) -> None:
    store = ShardStore(disk / "node", written_cache=MiB)
    data = {f"{'ab' * 16}.{i}.0": os.urandom(MiB // 2) for i in range(4)}
    for shard_id, payload in data.items():
        store.write(ShardMeta(shard_id, len(payload), shard_checksum(payload)), payload)
    paths = [store.path_of(shard_id) for shard_id in data]
    # Each file is 32 header bytes + 512 KiB: only the newest one fits in 1 MiB.
    assert [cached(path) for path in paths] == [False, False, False, True]
    for shard_id, payload in data.items():
        meta, read = store.read(shard_id)
        assert read == payload
        assert meta.checksum == shard_checksum(payload)


def test_store_without_a_window_leaves_pages_to_the_kernel(disk: Path) -> None:
    store = ShardStore(disk / "node")
    assert store.written_pages is None
    payload = os.urandom(MiB)
    shard_id = f"{'cd' * 16}.0.0"
    store.write(ShardMeta(shard_id, len(payload), shard_checksum(payload)), payload)
    assert cached(store.path_of(shard_id))


def test_node_config_validates_the_window() -> None:
    assert NodeConfig(data_dir="d").drop_written_pages is True
    assert NodeConfig(data_dir="d").written_cache == 64 * MiB
    with pytest.raises(ConfigError, match="written_cache"):
        NodeConfig(data_dir="d", written_cache=-1).validate()
