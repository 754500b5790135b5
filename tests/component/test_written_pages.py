"""WrittenPages and the ShardStore using it: the pages of shards written past the window leave
the page cache (seen with a RWF_NOWAIT read, which fails for bytes not in memory), recent and
asked-for shards keep theirs, and a shard whose pages were dropped still reads back verified."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shoal.client.cli.local_cluster import ClusterSettings, DaemonState, LocalCluster
from shoal.common.checksum import shard_checksum
from shoal.common.errors import ConfigError
from shoal.common.units import MiB
from shoal.storage_node.config import NodeConfig
from shoal.storage_node.shard_store import ShardMeta, ShardStore
from shoal.storage_node.written_pages import PAGE, WrittenPages, charged_bytes


def cached(path: Path) -> bool:
    """Whether the first page of `path` is in the page cache (a RWF_NOWAIT read succeeds).

    Probe each file once per check: a miss starts the kernel's readahead, so a second probe
    moments later may find the page that the first one brought in."""
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
    """tmp_path, where dropping clean pages is seen to work. Skipped where it cannot be: no
    posix_fadvise or RWF_NOWAIT (not Linux), or a filesystem that keeps the pages (tmpfs,
    whose pages are the files themselves)."""
    probe = durable_file(tmp_path / "probe", 64 * 1024)
    try:
        fd = os.open(probe, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        still_cached = cached(probe)
    except (AttributeError, OSError) as exc:
        pytest.skip(f"cannot drop or observe page cache here: {exc!r}")
    if still_cached:
        pytest.skip(f"{tmp_path} keeps clean pages after POSIX_FADV_DONTNEED (tmpfs?)")
    probe.unlink()
    return tmp_path


def test_pages_of_shards_past_the_window_are_dropped_oldest_first(disk: Path) -> None:
    pages = WrittenPages(window=2 * MiB)
    files = [durable_file(disk / f"s{i}") for i in range(4)]
    for path in files:
        pages.written(path, MiB)
    assert [cached(path) for path in files] == [False, False, True, True]
    assert pages.dropped == 2
    assert pages.pending() == 2 * MiB


def test_the_window_counts_whole_pages_so_tiny_shards_cannot_pile_up(disk: Path) -> None:
    assert charged_bytes(0) == PAGE
    assert charged_bytes(33) == PAGE
    assert charged_bytes(PAGE + 1) == 2 * PAGE
    pages = WrittenPages(window=4 * PAGE)
    tiny = [durable_file(disk / f"t{i}", 33) for i in range(10)]
    for path in tiny:
        pages.written(path, 33)
    assert pages.tracked() == 4
    assert pages.pending() == 4 * PAGE
    assert pages.dropped == 6


def test_a_window_of_zero_drops_each_shard_once_recorded(disk: Path) -> None:
    pages = WrittenPages(window=0)
    path = durable_file(disk / "only")
    pages.written(path, MiB)
    assert not cached(path)
    assert pages.pending() == 0


def test_a_shard_forgotten_keeps_its_pages(disk: Path) -> None:
    pages = WrittenPages(window=MiB)
    wanted, other, newer = (durable_file(disk / name) for name in ("wanted", "other", "newer"))
    pages.written(wanted, MiB)
    pages.forget(wanted)
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


def test_a_file_replaced_after_it_left_the_window_keeps_its_pages(disk: Path) -> None:
    """The drop opens the path it recorded; a newer file under that path is not dropped."""
    pages = WrittenPages(window=MiB)
    path = durable_file(disk / "shard")
    pages.written(path, MiB)
    replacement = durable_file(disk / "replacement")
    os.replace(replacement, path)  # another write of the same shard, not recorded yet
    pages.written(durable_file(disk / "newer"), MiB)  # pushes the old entry out
    assert pages.dropped == 0
    assert cached(path)


def test_a_linked_shard_is_tracked_under_its_new_name(disk: Path) -> None:
    pages = WrittenPages(window=MiB)
    source = durable_file(disk / "source")
    pages.written(source, MiB)
    target = disk / "target"
    os.link(source, target)
    pages.renamed(source, target)
    source.unlink()  # as the coordinator retires the old name later
    pages.written(durable_file(disk / "newer"), MiB)
    assert pages.dropped == 1
    assert not cached(target)


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


def test_store_keeps_requested_shards_and_forgets_deleted_ones(disk: Path) -> None:
    store = ShardStore(disk / "node", written_cache=2 * MiB)
    assert store.written_pages is not None
    payload = os.urandom(MiB - 4096)  # with its header, within one MiB of pages
    ids = [f"{'ef' * 16}.{i}.0" for i in range(4)]
    meta = ShardMeta(ids[0], len(payload), shard_checksum(payload))
    store.write(meta, payload)
    store.open_reader(ids[0], requested=True).close()  # a GetShard: kept from now on
    store.write(ShardMeta(ids[1], len(payload), meta.checksum), payload)
    store.read(ids[1])  # the scrubber's kind of read: not a request, still tracked
    assert store.written_pages.tracked() == 1
    store.delete([ids[1]])
    assert store.written_pages.tracked() == 0
    assert store.written_pages.pending() == 0
    for shard_id in ids[2:]:
        store.write(ShardMeta(shard_id, len(payload), meta.checksum), payload)
    store.write(ShardMeta(ids[1], len(payload), meta.checksum), payload)  # pushes ids[2] out
    assert cached(store.path_of(ids[0]))
    assert not cached(store.path_of(ids[2]))
    assert store.written_pages.dropped == 1


def test_store_without_a_window_leaves_pages_to_the_kernel(disk: Path) -> None:
    store = ShardStore(disk / "node")
    assert store.written_pages is None
    payload = os.urandom(MiB)
    shard_id = f"{'cd' * 16}.0.0"
    store.write(ShardMeta(shard_id, len(payload), shard_checksum(payload)), payload)
    assert cached(store.path_of(shard_id))


def test_node_config_validates_the_window() -> None:
    assert NodeConfig(data_dir="d").drop_written_pages is True
    assert NodeConfig(data_dir="d").written_cache_window() == 64 * MiB
    assert NodeConfig(data_dir="d", drop_written_pages=False).written_cache_window() is None
    with pytest.raises(ConfigError, match="written_cache"):
        NodeConfig(data_dir="d", written_cache=-1).validate()


def test_the_node_daemon_takes_both_settings(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    command = [sys.executable, "-m", "shoal.storage_node", "--data-dir", str(tmp_path)]
    flags = ["--no-drop-written-pages", "--written-cache", "8MiB", "--print-config"]
    result = subprocess.run(
        [*command, *flags], capture_output=True, text=True, env=env, timeout=60, check=True
    )
    assert "drop_written_pages = false" in result.stdout
    assert f"written_cache = {8 * MiB}" in result.stdout
    refused = subprocess.run(
        [*command, "--written-cache", "-1", "--print-config"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert "written_cache" in refused.stderr


def test_a_local_cluster_can_turn_dropping_off(tmp_path: Path) -> None:
    node = DaemonState(name="node-1", role="node", data_dir=str(tmp_path / "n1"))
    coordinator = DaemonState(
        name="coordinator", role="coordinator", data_dir=str(tmp_path / "c"), address="x:1"
    )
    flags = []
    for drop in (True, False):
        cluster = LocalCluster(tmp_path / str(drop))
        cluster.coordinator = coordinator
        cluster.settings = ClusterSettings(drop_written_pages=drop)
        flags.append(cluster._node_flags(node))
    assert "--no-drop-written-pages" not in flags[0]
    assert "--no-drop-written-pages" in flags[1]
