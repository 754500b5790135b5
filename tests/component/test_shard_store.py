"""ShardStore on a real directory: durability layout, verification, quarantine, counters."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from shoal.common.checksum import shard_checksum
from shoal.common.errors import InvalidArgument, NotFound, Unavailable
from shoal.storage_node import shard_store
from shoal.storage_node.shard_store import (
    FORMAT_VERSION,
    HEADER,
    HEADER_BYTES,
    MAGIC,
    ShardCorrupt,
    ShardMeta,
    ShardStore,
)

VERSION = "ab" + "0" * 30
OTHER_VERSION = "cd" + "1" * 30


def sid(stripe: int = 0, index: int = 0, version: str = VERSION) -> str:
    return f"{version}.{stripe}.{index}"


def meta_for(shard_id: str, data: bytes) -> ShardMeta:
    return ShardMeta(shard_id, len(data), shard_checksum(data))


def payload(size: int, seed: int = 0) -> bytes:
    return bytes((i * 31 + seed) % 251 for i in range(size))


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


def assert_counters_match_disk(store: ShardStore) -> None:
    """The running counters equal what a fresh scan of the directory finds."""
    inventory = list(store.inventory())
    assert store.shard_count == len(inventory)
    assert store.used_bytes == sum(size for _, size in inventory)
    reopened = ShardStore(store.root, store.capacity_bytes)
    assert (reopened.shard_count, reopened.used_bytes) == (store.shard_count, store.used_bytes)


@pytest.fixture
def store(tmp_path: Path) -> ShardStore:
    return ShardStore(tmp_path / "node", capacity_bytes=10 * 1024 * 1024)


def test_layout_is_created(store: ShardStore) -> None:
    for sub in ("shards", "incoming", "quarantine"):
        assert (store.root / sub).is_dir()
    assert len(list((store.root / "shards").iterdir())) == 256
    assert store.shard_count == 0
    assert store.used_bytes == 0


@pytest.mark.parametrize("size", [0, 1, 4096, 1024 * 1024 + 3])
def test_write_read_round_trip(store: ShardStore, size: int) -> None:
    data = payload(size, size)
    shard = sid(1, 2)
    store.write(meta_for(shard, data), data)
    meta, read = store.read(shard)
    assert read == data
    assert meta == meta_for(shard, data)
    path = store.path_of(shard)
    assert path == store.root / "shards" / VERSION[:2] / shard
    raw = path.read_bytes()
    assert len(raw) == HEADER_BYTES + size
    assert HEADER.unpack_from(raw) == (MAGIC, FORMAT_VERSION, 0, size, shard_checksum(data))
    assert files_under(store.root / "incoming") == []


def test_streamed_write_in_pieces(store: ShardStore) -> None:
    data = payload(100_000)
    shard = sid(0, 5)
    writer = store.begin_write(meta_for(shard, data))
    for offset in range(0, len(data), 7_000):
        writer.write(data[offset : offset + 7_000])
    # Nothing is visible until commit.
    with pytest.raises(NotFound):
        store.read(shard)
    assert len(files_under(store.root / "incoming")) == 1
    writer.commit()
    assert store.read(shard)[1] == data
    assert files_under(store.root / "incoming") == []


def test_aborted_writer_leaves_nothing(store: ShardStore) -> None:
    data = payload(10)
    writer = store.begin_write(meta_for(sid(), data))
    writer.write(data)
    writer.abort()
    writer.abort()  # safe twice
    assert files_under(store.root / "incoming") == []
    assert files_under(store.root / "shards") == []
    assert store.shard_count == 0


@pytest.mark.parametrize(
    ("declared", "sent", "message"),
    [
        (lambda d: ShardMeta(sid(), len(d), shard_checksum(d + b"!")), lambda d: d, "checksum"),
        (lambda d: ShardMeta(sid(), len(d), b"\0" * 16), lambda d: d, "checksum"),
        (lambda d: ShardMeta(sid(), len(d) + 1, shard_checksum(d)), lambda d: d, "declared"),
        (lambda d: ShardMeta(sid(), len(d) - 1, shard_checksum(d)), lambda d: d, "more than"),
        (lambda d: meta_for(sid(), d), lambda d: d[:-1], "declared"),
    ],
    ids=["checksum-of-other-bytes", "zero-checksum", "short", "long", "truncated-send"],
)
def test_bad_writes_are_rejected_and_leave_nothing(
    store: ShardStore,
    declared: Callable[[bytes], ShardMeta],
    sent: Callable[[bytes], bytes],
    message: str,
) -> None:
    data = payload(5000)
    with pytest.raises(InvalidArgument, match=message):
        store.write(declared(data), sent(data))
    assert files_under(store.root / "incoming") == []
    assert files_under(store.root / "shards") == []
    assert (store.shard_count, store.used_bytes) == (0, 0)


def test_failed_overwrite_keeps_the_old_shard(store: ShardStore) -> None:
    old = payload(300, 1)
    store.write(meta_for(sid(), old), old)
    new = payload(300, 2)
    with pytest.raises(InvalidArgument):
        store.write(ShardMeta(sid(), len(new), shard_checksum(old)), new)
    assert store.read(sid())[1] == old
    assert (store.shard_count, store.used_bytes) == (1, 300)


def _corrupt_flip(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[HEADER_BYTES + 17] ^= 0x01
    path.write_bytes(bytes(raw))


def _corrupt_flip_checksum(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[HEADER_BYTES - 1] ^= 0x80
    path.write_bytes(bytes(raw))


def _corrupt_magic(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[0:4] = b"JUNK"
    path.write_bytes(bytes(raw))


def _corrupt_format(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[4:6] = (FORMAT_VERSION + 1).to_bytes(2, "big")
    path.write_bytes(bytes(raw))


def _corrupt_length_field(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    _m, _f, _r, length, _c = HEADER.unpack_from(raw)
    raw[8:16] = (length + 1).to_bytes(8, "big")
    path.write_bytes(bytes(raw))


def _truncate_header(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: HEADER_BYTES - 5])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


CORRUPTIONS_SAME_SIZE: dict[str, tuple[Callable[[Path], None], str]] = {
    "flipped-data-byte": (_corrupt_flip, "checksum mismatch"),
    "flipped-checksum-byte": (_corrupt_flip_checksum, "checksum mismatch"),
    "bad-magic": (_corrupt_magic, "bad header"),
    "bad-format": (_corrupt_format, "bad header"),
    "length-field": (_corrupt_length_field, "differs from recorded"),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS_SAME_SIZE))
def test_corrupt_shard_is_quarantined(store: ShardStore, kind: str) -> None:
    corrupt, reason = CORRUPTIONS_SAME_SIZE[kind]
    good = payload(2000, 9)
    store.write(meta_for(sid(0, 1), good), good)
    bad = payload(1000, 3)
    store.write(meta_for(sid(0, 2), bad), bad)
    path = store.path_of(sid(0, 2))
    corrupt(path)
    damaged = path.read_bytes()

    with pytest.raises(ShardCorrupt, match=reason):
        store.read(sid(0, 2))
    assert not path.exists()
    assert (store.root / "quarantine" / sid(0, 2)).read_bytes() == damaged
    # Never served again, and the neighbour is untouched.
    with pytest.raises(NotFound):
        store.read(sid(0, 2))
    assert store.read(sid(0, 1))[1] == good
    assert store.corrupt_found == 1
    assert [s for s, _ in store.inventory()] == [sid(0, 1)]
    assert (store.shard_count, store.used_bytes) == (1, 2000)
    assert_counters_match_disk(store)


@pytest.mark.parametrize(
    "corrupt", [_truncate_header, _empty], ids=["truncated-header", "empty-file"]
)
def test_file_cut_inside_the_header_is_quarantined(
    store: ShardStore, corrupt: Callable[[Path], None]
) -> None:
    data = payload(1000)
    store.write(meta_for(sid(), data), data)
    corrupt(store.path_of(sid()))
    with pytest.raises(ShardCorrupt, match="truncated header"):
        store.read(sid())
    assert (store.root / "quarantine" / sid()).exists()
    assert store.shard_count == 0
    assert store.corrupt_found == 1


def test_truncated_data_is_quarantined(store: ShardStore) -> None:
    data = payload(1000)
    store.write(meta_for(sid(), data), data)
    path = store.path_of(sid())
    path.write_bytes(path.read_bytes()[: HEADER_BYTES + 400])
    with pytest.raises(ShardCorrupt, match="length 400 differs from recorded 1000"):
        store.read(sid())
    assert not path.exists()
    assert (store.root / "quarantine" / sid()).exists()
    assert store.shard_count == 0


@pytest.mark.parametrize("change", [-600, +600], ids=["truncated", "grown"])
def test_quarantine_of_resized_file_keeps_counters_exact(store: ShardStore, change: int) -> None:
    data = payload(1000)
    store.write(meta_for(sid(), data), data)
    path = store.path_of(sid())
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) + change] if change < 0 else raw + bytes(change))
    with pytest.raises(ShardCorrupt):
        store.read(sid())
    assert store.shard_count == 0
    assert store.used_bytes == 0


def test_counters_track_writes_overwrites_deletes(store: ShardStore) -> None:
    a, b = payload(1000, 1), payload(3000, 2)
    store.write(meta_for(sid(0, 0), a), a)
    store.write(meta_for(sid(0, 1), b), b)
    assert (store.shard_count, store.used_bytes) == (2, 4000)

    bigger = payload(1500, 3)
    store.write(meta_for(sid(0, 0), bigger), bigger)  # overwrite: count unchanged
    assert (store.shard_count, store.used_bytes) == (2, 4500)
    assert store.read(sid(0, 0))[1] == bigger
    smaller = payload(10, 4)
    store.write(meta_for(sid(0, 0), smaller), smaller)
    assert (store.shard_count, store.used_bytes) == (2, 3010)
    assert_counters_match_disk(store)

    done = store.delete([sid(0, 1), sid(7, 7), "not-a-shard", "../../etc/passwd"])
    # Absent shards count as deleted; malformed ids are skipped.
    assert done == [sid(0, 1), sid(7, 7)]
    assert (store.shard_count, store.used_bytes) == (1, 10)
    with pytest.raises(NotFound):
        store.read(sid(0, 1))
    assert store.delete([sid(0, 1)]) == [sid(0, 1)]
    assert (store.shard_count, store.used_bytes) == (1, 10)
    assert_counters_match_disk(store)


def test_inventory_lists_every_shard(store: ShardStore) -> None:
    expected = {}
    for n, version in enumerate((VERSION, OTHER_VERSION)):
        for index in range(3):
            data = payload(100 * (index + 1) + n)
            store.write(meta_for(sid(n, index, version), data), data)
            expected[sid(n, index, version)] = len(data)
    assert dict(store.inventory()) == expected
    assert len(list(store.inventory())) == 6
    # Shards are spread by the first two hex digits of the version id.
    assert {p.parent.name for p in files_under(store.root / "shards")} == {"ab", "cd"}


def test_restart_recounts_and_removes_incoming_debris(tmp_path: Path) -> None:
    root = tmp_path / "node"
    first = ShardStore(root)
    data = payload(777)
    first.write(meta_for(sid(), data), data)
    # A crash mid-receive leaves temp files behind.
    writer = first.begin_write(meta_for(sid(0, 1), data))
    writer.write(data[:100])
    (root / "incoming" / "stale.tmp").write_bytes(b"half a shard")
    assert len(files_under(root / "incoming")) == 2
    writer.abort()  # release the handle; the stale file stays

    second = ShardStore(root)
    assert files_under(root / "incoming") == []
    assert (second.shard_count, second.used_bytes) == (1, 777)
    assert second.read(sid())[1] == data


@pytest.mark.parametrize(
    "bad_id",
    [
        "",
        "../../../etc/passwd",
        f"../{VERSION}.0.0",
        f"{VERSION}.0.0/../../x",
        f"{VERSION}/0/0",
        "/etc/passwd",
        f"{VERSION[:-1]}.0.0",
        f"{VERSION.upper()}.0.0",
        f"{VERSION}.0",
        "node_id",
        "..",
    ],
)
def test_malformed_shard_ids_are_rejected_everywhere(store: ShardStore, bad_id: str) -> None:
    data = payload(10)
    with pytest.raises(InvalidArgument):
        store.path_of(bad_id)
    with pytest.raises(InvalidArgument):
        store.write(ShardMeta(bad_id, len(data), shard_checksum(data)), data)
    with pytest.raises(InvalidArgument):
        store.read(bad_id)
    with pytest.raises(InvalidArgument):
        store.begin_write(ShardMeta(bad_id, len(data), shard_checksum(data)))
    assert store.delete([bad_id]) == []
    assert files_under(store.root / "incoming") == []
    assert files_under(store.root / "shards") == []
    assert not (store.root.parent / "x").exists()


def test_shard_id_with_newline_is_rejected(store: ShardStore) -> None:
    data = payload(10)
    with pytest.raises(InvalidArgument):
        store.write(meta_for(sid() + "\n", data), data)


def test_capacity_exceeded_is_unavailable(tmp_path: Path) -> None:
    store = ShardStore(tmp_path / "small", capacity_bytes=10_000)
    assert store.capacity_bytes == 10_000
    first = payload(6000)
    store.write(meta_for(sid(0, 0), first), first)
    second = payload(4001)
    with pytest.raises(Unavailable, match="node full"):
        store.write(meta_for(sid(0, 1), second), second)
    assert files_under(store.root / "incoming") == []
    assert (store.shard_count, store.used_bytes) == (1, 6000)
    exactly = payload(4000)
    store.write(meta_for(sid(0, 1), exactly), exactly)
    assert store.used_bytes == 10_000
    store.delete([sid(0, 0)])
    store.write(meta_for(sid(0, 2), second), second)
    assert (store.shard_count, store.used_bytes) == (2, 8001)


def test_default_capacity_is_the_filesystem_size(tmp_path: Path) -> None:
    store = ShardStore(tmp_path / "n")
    stats = os.statvfs(tmp_path)
    assert store.capacity_bytes == stats.f_blocks * stats.f_frsize


def test_write_pieces_stores_their_concatenation(store: ShardStore) -> None:
    pieces = [payload(n, n) for n in (0, 1, 4096, 70_001, 3)]
    data = b"".join(pieces)
    store.write_pieces(meta_for(sid(), data), [pieces[0], bytearray(pieces[1]), *pieces[2:]])
    assert store.read(sid())[1] == data
    assert store.path_of(sid()).stat().st_size == HEADER_BYTES + len(data)
    writer = store.begin_write(meta_for(sid(0, 1), data))
    writer.write_pieces([memoryview(data)[:10]])
    writer.write(memoryview(data)[10:])
    writer.commit()
    assert store.read(sid(0, 1))[1] == data


def test_reading_in_pieces_verifies_before_the_last_piece(store: ShardStore) -> None:
    data = payload(10_000, 5)
    store.write(meta_for(sid(), data), data)
    reader = store.open_reader(sid())
    pieces = [reader.read(4000), reader.read(4000), reader.read(4000)]
    assert reader.done
    assert b"".join(pieces) == data
    assert reader.read(4000) == b""
    reader.close()

    _corrupt_flip(store.path_of(sid()))  # a byte of the first piece
    reader = store.open_reader(sid())
    assert len(reader.read(4000)) == 4000  # not yet known to be bad
    assert len(reader.read(4000)) == 4000
    with pytest.raises(ShardCorrupt, match="checksum mismatch"):
        reader.read(4000)  # the piece that completes the shard is never handed out
    reader.close()
    assert (store.root / "quarantine" / sid()).exists()
    assert (store.shard_count, store.used_bytes) == (0, 0)


def test_renames_into_one_directory_share_its_fsync(
    store: ShardStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one fsync of a directory runs, later renames wait for the next one, which covers
    all of them: 1 + 1 fsyncs for 1 + 3 shards, and none returns before its fsync."""
    started, release = threading.Event(), threading.Event()
    fsyncs: list[int] = []
    real = shard_store._fsync_dir

    def slow_fsync(path: Path) -> None:
        fsyncs.append(len(list(path.iterdir())))  # shards in place when this fsync starts
        if len(fsyncs) == 1:
            started.set()
            assert release.wait(10)
        real(path)

    monkeypatch.setattr(shard_store, "_fsync_dir", slow_fsync)
    data = payload(100)
    done: list[int] = []

    def write(stripe: int) -> None:
        store.write(meta_for(sid(stripe, 0), data), data)
        done.append(stripe)

    first = threading.Thread(target=write, args=(0,))
    first.start()
    assert started.wait(10)
    others = [threading.Thread(target=write, args=(i,)) for i in (1, 2, 3)]
    for thread in others:
        thread.start()
    while len(list(store.path_of(sid()).parent.iterdir())) < 4:  # all renamed, none synced
        assert not release.wait(0.01)
    assert done == []
    release.set()
    for thread in [first, *others]:
        thread.join(10)
    assert sorted(done) == [0, 1, 2, 3]
    assert fsyncs == [1, 4]


def test_close_during_a_read_waits_for_it(
    store: ShardStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancelled GetShard closes its reader while a read may still run in a worker thread:
    the descriptor must stay open (its number not reused by another open) until it ends."""
    data = payload(5000, 4)
    store.write(meta_for(sid(), data), data)
    reader = store.open_reader(sid())
    inside, release = threading.Event(), threading.Event()
    real = shard_store.pread_exactly
    seen: list[int] = []

    def slow_pread(fd: int, size: int, offset: int) -> bytes:
        seen.append(fd)
        inside.set()
        assert release.wait(10)
        return real(fd, size, offset)

    monkeypatch.setattr(shard_store, "pread_exactly", slow_pread)
    got: list[bytes] = []
    thread = threading.Thread(target=lambda: got.append(reader.read(5000)))
    thread.start()
    assert inside.wait(10)
    reader.close()  # from the event loop, as the servicer's finally does
    os.fstat(seen[0])  # still open: would raise EBADF had it been closed
    release.set()
    thread.join(10)
    assert got == [data]
    with pytest.raises(OSError, match="Bad file descriptor"):  # closed once the read ended
        os.fstat(seen[0])


def test_abort_during_a_write_installs_nothing(
    store: ShardStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = payload(5000, 6)
    writer = store.begin_write(meta_for(sid(), data))
    inside, release = threading.Event(), threading.Event()
    real = shard_store._write_all

    def slow_write(fd: int, pieces: list[bytes]) -> None:
        inside.set()
        assert release.wait(10)
        real(fd, pieces)

    monkeypatch.setattr(shard_store, "_write_all", slow_write)
    errors: list[BaseException] = []

    def write_and_commit() -> None:
        try:
            writer.write(data)
            writer.commit()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=write_and_commit)
    thread.start()
    assert inside.wait(10)
    writer.abort()
    release.set()
    thread.join(10)
    assert len(errors) == 1
    assert isinstance(errors[0], InvalidArgument)
    assert files_under(store.root / "incoming") == []
    assert files_under(store.root / "shards") == []
    assert store.shard_count == 0


def test_reading_past_the_end_of_a_good_shard_returns_nothing(store: ShardStore) -> None:
    """A shard read in one piece is verified without the running hash: reading on after the
    end must give b"", not compare the empty running hash and quarantine a good shard."""
    data = payload(5000, 9)
    store.write(meta_for(sid(), data), data)
    reader = store.open_reader(sid())
    assert reader.read(5000) == data
    assert reader.done
    assert reader.read(100) == b""
    reader.close()
    assert store.read(sid())[1] == data
    assert store.corrupt_found == 0


def test_a_corrupt_read_leaves_the_shard_written_since_in_service(store: ShardStore) -> None:
    """A GetShard of several messages holds its file open while the shard id may be written
    again (a retried put, a repair): when the old file then proves corrupt, only that file
    may be quarantined, never the good one now under its name."""
    old, new = payload(10_000, 7), payload(10_000, 8)
    store.write(meta_for(sid(), old), old)
    _corrupt_flip(store.path_of(sid()))
    reader = store.open_reader(sid())
    assert len(reader.read(4000)) == 4000
    store.write(meta_for(sid(), new), new)
    with pytest.raises(ShardCorrupt, match="checksum mismatch"):
        reader.read(10_000)
    reader.close()
    assert store.read(sid())[1] == new
    assert files_under(store.root / "quarantine") == []
    assert_counters_match_disk(store)


def test_a_corrupt_read_quarantines_the_file_still_in_service(store: ShardStore) -> None:
    data = payload(10_000, 10)
    store.write(meta_for(sid(), data), data)
    _corrupt_flip(store.path_of(sid()))
    reader = store.open_reader(sid())
    with pytest.raises(ShardCorrupt, match="checksum mismatch"):
        reader.read(10_000)
    reader.close()
    assert (store.root / "quarantine" / sid()).exists()
    assert not store.path_of(sid()).exists()
    assert store.corrupt_found == 1
    assert_counters_match_disk(store)
