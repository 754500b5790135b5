"""ShardStore: durable, checksummed shard files on one node's disk.

Layout under the data directory:

    node_id                 this node's id, written once
    shards/<xy>/<shard_id>  one file per shard; <xy> = first two hex digits of the version id
    incoming/               shards being received; emptied at start (a crash leaves debris here)
    quarantine/             shards that failed verification, kept for inspection, never served

Each shard file starts with a 32-byte header (magic, format, length, xxh3-128 checksum of the
data) followed by the data. Durability recipe for a write, and what a crash leaves behind:

1. write header + data to `incoming/<random>`     crash: debris in incoming/, removed at start
2. verify the received bytes against the checksum the sender declared
3. fsync the file                                  crash: same as 1
4. rename into `shards/<xy>/<shard_id>`            atomic: old shard or new shard, never a mix
5. fsync `shards/<xy>/`                            makes the rename itself durable
6. acknowledge                                     only now does the client count the shard

`link` gives a shard a second name (a hard link) for the coordinator's ComposeObject; the old
name is deleted later like any retired shard, which frees nothing while the new one lives.

Every read re-verifies length and checksum; a mismatch moves the file to quarantine/ and raises
`ShardCorrupt`, so corrupt bytes are never returned. A shard read in pieces (`ShardReader`) is
hashed as it goes and verified before its last piece is handed out.

Step 5 is a group commit: renames into one directory that happen while an fsync of it is
running share the next fsync, which starts after all of them (an fsync started after a rename
makes it durable), instead of each waiting for one of its own.

Once a shard is durable its pages are clean copies of what is on disk; the pages of shards
written more than a window of bytes ago are dropped from the page cache (`WrittenPages`), so a
write-heavy node reuses memory instead of growing its page cache by every byte it stores.

Shard bytes are written with `os.writev` (header and data in one call, received pieces without
joining them) and read with `os.pread` straight into the bytes handed on, so nothing is copied
in Python on the way to or from the disk.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from shoal.common.checksum import Buffer, StreamingChecksum, shard_checksum
from shoal.common.errors import InvalidArgument, NotFound, ShoalError, Unavailable
from shoal.common.shard_file import (
    FORMAT_VERSION,
    HEADER,
    HEADER_BYTES,
    MAGIC,
    SHARDS_DIR,
    header_problem,
    pread_exactly,
    shard_path,
)
from shoal.storage_node.written_pages import WrittenPages

__all__ = [
    "FORMAT_VERSION",
    "HEADER",
    "HEADER_BYTES",
    "MAGIC",
    "ShardCorrupt",
    "ShardMeta",
    "ShardReader",
    "ShardStore",
    "ShardWriter",
]


class ShardCorrupt(ShoalError):
    """A stored shard failed verification; it has been quarantined."""


@dataclass(frozen=True)
class ShardMeta:
    """What the header of a shard says."""

    shard_id: str
    length: int
    checksum: bytes


def _recorded_length(path: Path) -> int:
    """The data length a shard file's header records (what the counters added for it); the
    file's own size when the header is unreadable. FileNotFoundError if it is gone."""
    with path.open("rb") as handle:
        header = handle.read(HEADER_BYTES)
        if len(header) == HEADER_BYTES:
            magic, fmt, _reserved, length, _checksum = HEADER.unpack(header)
            if magic == MAGIC and fmt == FORMAT_VERSION:
                return int(length)
        return max(os.fstat(handle.fileno()).st_size - HEADER_BYTES, 0)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _iov_max() -> int:
    try:
        limit = os.sysconf("SC_IOV_MAX")
    except (AttributeError, ValueError, OSError):
        limit = -1
    return min(limit, 1024) if limit > 0 else 16


_IOV_MAX = _iov_max()


def _write_all(fd: int, pieces: Sequence[Buffer]) -> None:
    """Write `pieces` in order with as few `writev` calls as the kernel allows."""
    views = [memoryview(p).cast("B") for p in pieces if len(p)]
    while views:
        written = os.writev(fd, views[:_IOV_MAX])
        if written <= 0:
            raise OSError("writev wrote nothing")
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if written:
            views[0] = views[0][written:]


class _DirSync:
    """Group commit of the fsyncs of one directory (step 5 of the recipe).

    A caller takes a ticket after its rename, then waits for the directory's fsync lock: if an
    fsync that started after its ticket was issued has completed meanwhile, its rename is
    already durable and it returns; otherwise it runs one fsync covering every ticket issued
    so far."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tickets = threading.Lock()
        self._fsync = threading.Lock()
        self._issued = 0
        self._synced = 0

    def sync(self) -> None:
        with self._tickets:
            self._issued += 1
            ticket = self._issued
        with self._fsync:
            if self._synced >= ticket:
                return
            with self._tickets:
                covers = self._issued
            _fsync_dir(self.path)
            self._synced = covers


class _SharedFd:
    """A file descriptor used by a worker thread while another thread may close it (a call
    cancelled while its read or write runs in a thread): a close during a use is put off to the
    end of that use, so the descriptor number is never closed, and reused by another open,
    under a running read or write. One use at a time."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd
        self._lock = threading.Lock()
        self._in_use = False
        self._close_pending = False

    @contextlib.contextmanager
    def use(self) -> Iterator[int | None]:
        """The descriptor for the duration of the block; None once closed."""
        with self._lock:
            fd = None if self._close_pending else self._fd
            self._in_use = fd is not None
        try:
            yield fd
        finally:
            if fd is not None:
                with self._lock:
                    self._in_use = False
                    pending = self._close_pending
                if pending:
                    self._close_now()

    def close(self) -> None:
        """Close now, or as soon as the use in progress ends."""
        with self._lock:
            self._close_pending = True
            if self._in_use:
                return
        self._close_now()

    def _close_now(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _open_exclusive(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)


class ShardWriter:
    """One shard being received: data goes to a temp file in incoming/, then commit() or abort()."""

    def __init__(self, store: ShardStore, meta: ShardMeta) -> None:
        self._store = store
        self.meta = meta
        self._tmp = store.root / "incoming" / f"{uuid.uuid4().hex}.tmp"
        self._fd = _SharedFd(_open_exclusive(self._tmp))
        # Written together with the first data, in one writev.
        self._header: bytes | None = HEADER.pack(
            MAGIC, FORMAT_VERSION, 0, meta.length, meta.checksum
        )
        self._hasher = StreamingChecksum()
        self._received = 0

    def write(self, data: Buffer) -> None:
        """Append received bytes (blocking; call from a thread)."""
        self.write_pieces((data,))

    def write_pieces(self, pieces: Sequence[Buffer]) -> None:
        """Append received pieces in order, in one writev where possible (blocking)."""
        self._received += sum(len(p) for p in pieces)
        if self._received > self.meta.length:
            raise InvalidArgument(
                f"shard {self.meta.shard_id}: received more than the declared "
                f"{self.meta.length} bytes"
            )
        for piece in pieces:
            self._hasher.update(piece)
        self._write([*self._take_header(), *pieces])

    def _take_header(self) -> list[bytes]:
        header, self._header = self._header, None
        return [header] if header is not None else []

    def _write(self, pieces: Sequence[Buffer], *, fsync: bool = False) -> None:
        with self._fd.use() as fd:
            if fd is None:
                raise InvalidArgument(f"shard {self.meta.shard_id}: write after commit or abort")
            _write_all(fd, pieces)
            if fsync:
                os.fsync(fd)

    def commit(self) -> None:
        """Verify, fsync, rename into place and fsync the directory (blocking)."""
        try:
            if self._received != self.meta.length:
                raise InvalidArgument(
                    f"shard {self.meta.shard_id}: received {self._received} bytes, "
                    f"declared {self.meta.length}"
                )
            if self._hasher.digest() != self.meta.checksum:
                raise InvalidArgument(
                    f"shard {self.meta.shard_id}: checksum of received bytes differs"
                )
            self._write(self._take_header(), fsync=True)  # (the header: an empty shard)
            self._fd.close()
            self._store.install(self._tmp, self.meta)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop the temp file (safe to call twice, and while a write runs in another thread:
        its descriptor is closed when that write ends, and nothing is installed)."""
        with contextlib.suppress(OSError):
            self._fd.close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()


class ShardReader:
    """An open shard file whose header has been checked, read in pieces (blocking methods).

    Its data is hashed as it is read, and the checksum is verified before the piece that
    reaches the end is returned: a corrupt shard is quarantined and `read` raises
    `ShardCorrupt` instead, so the last piece of bad data is never handed out."""

    def __init__(
        self, store: ShardStore, meta: ShardMeta, fd: int, file_id: tuple[int, int]
    ) -> None:
        self._store = store
        self.meta = meta
        self._fd = _SharedFd(fd)
        self._file_id = file_id  # (st_dev, st_ino): what to quarantine if it proves bad
        self._hasher = StreamingChecksum()
        self.position = 0
        self._verified = False

    @property
    def done(self) -> bool:
        return self.position >= self.meta.length

    def read(self, size: int) -> bytes:
        """The next `size` bytes of data (fewer at the end; b"" once done)."""
        if self._verified:
            return b""  # checked when the end was reached: no hash to compare again
        size = min(size, self.meta.length - self.position)
        with self._fd.use() as fd:
            if fd is None:
                raise NotFound(f"shard {self.meta.shard_id}: reader closed")
            data = pread_exactly(fd, size, HEADER_BYTES + self.position)
        self.position += len(data)
        if len(data) < size:
            self._fail(f"length {self.position} differs from recorded {self.meta.length}")
        if self.done and self.position == len(data):
            digest = shard_checksum(data)  # the whole shard in one piece: no hasher needed
        else:
            self._hasher.update(data)
            digest = self._hasher.digest() if self.done else b""
        if self.done:
            if digest != self.meta.checksum:
                self._fail("checksum mismatch")
            self._verified = True
        return data

    def _fail(self, problem: str) -> NoReturn:
        self.close()
        self._store.quarantine(self.meta.shard_id, problem, file_id=self._file_id)
        raise ShardCorrupt(f"shard {self.meta.shard_id}: {problem}")

    def close(self) -> None:
        """Close the file (safe twice, and while a read runs in another thread)."""
        self._fd.close()


class ShardStore:
    """Shard files in one directory tree. Methods block; the servicer calls them in threads."""

    def __init__(
        self, root: Path, capacity_bytes: int = 0, written_cache: int | None = None
    ) -> None:
        """`written_cache`: bytes of the most recently written shards whose pages stay in the
        OS page cache, older ones' are dropped (`WrittenPages`); None leaves all to the kernel."""
        self.root = root
        self.written_pages = None if written_cache is None else WrittenPages(written_cache)
        self._shards = root / SHARDS_DIR
        self._lock = threading.Lock()
        self._dir_syncs: dict[Path, _DirSync] = {}
        for sub in (SHARDS_DIR, "incoming", "quarantine"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        for debris in (root / "incoming").iterdir():
            debris.unlink()
        for i in range(256):
            (self._shards / f"{i:02x}").mkdir(exist_ok=True)
        _fsync_dir(self._shards)
        self.capacity_bytes = capacity_bytes or shutil.disk_usage(root).total
        self.corrupt_found = 0
        self.shard_count, self.used_bytes = self._count()

    def _count(self) -> tuple[int, int]:
        """(shard count, data bytes) of the shards in service, from disk."""
        count = used = 0
        for _shard_id, size in self.inventory():
            count += 1
            used += size
        return count, used

    def path_of(self, shard_id: str) -> Path:
        """Where shard `shard_id` lives (validates the id, so no path escapes the store)."""
        return shard_path(self._shards, shard_id)

    def begin_write(self, meta: ShardMeta, pieces: Sequence[Buffer] = ()) -> ShardWriter:
        """Start receiving a shard with the `pieces` received so far (aborted if writing them
        fails); refuses when the node is full (blocking)."""
        existing = self.path_of(meta.shard_id)
        try:
            replaced = _recorded_length(existing)
        except FileNotFoundError:
            replaced = 0
        if self.used_bytes - replaced + meta.length > self.capacity_bytes:
            raise Unavailable(
                f"node full: {self.used_bytes} of {self.capacity_bytes} bytes used, "
                f"shard needs {meta.length}"
            )
        writer = ShardWriter(self, meta)
        if pieces:
            try:
                writer.write_pieces(pieces)
            except BaseException:
                writer.abort()
                raise
        return writer

    def install(self, tmp: Path, meta: ShardMeta) -> None:
        """Rename a verified, fsynced temp file into place and fsync the directory."""
        final = self.path_of(meta.shard_id)
        with self._lock:
            try:
                previous: int | None = _recorded_length(final)
            except FileNotFoundError:
                previous = None
            os.replace(tmp, final)
            if previous is None:
                self.shard_count += 1
                self.used_bytes += meta.length
            else:
                self.used_bytes += meta.length - previous
            syncer = self._dir_syncs.get(final.parent)
            if syncer is None:
                syncer = self._dir_syncs[final.parent] = _DirSync(final.parent)
        syncer.sync()
        if self.written_pages is not None:
            self.written_pages.written(final, HEADER_BYTES + meta.length)

    def write(self, meta: ShardMeta, data: Buffer) -> None:
        """Store a whole shard in one call (blocking)."""
        self.write_pieces(meta, (data,))

    def write_pieces(self, meta: ShardMeta, pieces: Sequence[Buffer]) -> None:
        """Store a whole shard received in pieces, without joining them (blocking)."""
        self.begin_write(meta, pieces).commit()

    def open_reader(self, shard_id: str, *, requested: bool = False) -> ShardReader:
        """Open a shard for reading in pieces after checking its header and length; NotFound
        or ShardCorrupt otherwise (blocking). Close the reader when done. `requested`: a
        client asked for it (GetShard), so its pages are left to the kernel from now on
        (`WrittenPages`); the scrubber's reads are not requests."""
        path = self.path_of(shard_id)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"shard {shard_id} not on this node") from None
        if requested and self.written_pages is not None:
            self.written_pages.forget(path)
        try:
            header = os.pread(fd, HEADER_BYTES, 0)
            stat = os.fstat(fd)
            problem = self._check_header(header, stat.st_size)
        except BaseException:
            os.close(fd)
            raise
        file_id = (stat.st_dev, stat.st_ino)
        if problem:
            os.close(fd)
            self.quarantine(shard_id, problem, file_id=file_id)
            raise ShardCorrupt(f"shard {shard_id}: {problem}")
        _magic, _fmt, _reserved, length, checksum = HEADER.unpack(header)
        return ShardReader(self, ShardMeta(shard_id, length, checksum), fd, file_id)

    def read(self, shard_id: str) -> tuple[ShardMeta, bytes]:
        """Return a shard's header and verified data; NotFound or ShardCorrupt otherwise."""
        reader = self.open_reader(shard_id)
        try:
            return reader.meta, reader.read(reader.meta.length)
        finally:
            reader.close()

    @staticmethod
    def _check_header(header: bytes, file_size: int) -> str:
        return header_problem(header, file_size)

    def quarantine(
        self, shard_id: str, reason: str, *, file_id: tuple[int, int] | None = None
    ) -> None:
        """Move a bad shard out of service into quarantine/.

        With `file_id` (the `(st_dev, st_ino)` of the file found bad), only when that file is
        still the one in service: a reader that held the file open while the shard was
        written again (or deleted) must not take the new file out of service."""
        path = self.path_of(shard_id)
        with self._lock:  # installs, deletes and links take it too: no rename in between
            try:
                if file_id is not None:
                    stat = os.stat(path)
                    if (stat.st_dev, stat.st_ino) != file_id:
                        return  # replaced since it was opened: the bad file is out already
                os.replace(path, self.root / "quarantine" / shard_id)
            except FileNotFoundError:
                return
            if self.written_pages is not None:
                self.written_pages.forget(path)
            self.corrupt_found += 1
            # A damaged header no longer says what the counters added for this shard, so
            # count again from the shards still in service (quarantines are rare).
            self.shard_count, self.used_bytes = self._count()

    def delete(self, shard_ids: list[str]) -> list[str]:
        """Remove shards; returns the ids that were handled (absent ones count as deleted)."""
        done = []
        touched: set[Path] = set()
        for shard_id in shard_ids:
            try:
                path = self.path_of(shard_id)
            except InvalidArgument:
                continue
            with self._lock:
                try:
                    size = _recorded_length(path)
                    path.unlink()
                    if self.written_pages is not None:
                        self.written_pages.forget(path)
                    self.shard_count -= 1
                    self.used_bytes -= size
                    touched.add(path.parent)
                except FileNotFoundError:
                    pass
            done.append(shard_id)
        for directory in touched:
            _fsync_dir(directory)
        return done

    def link(self, links: list[tuple[str, str]]) -> list[str]:
        """Give shards a second name (hard link, no bytes copied): (source id, target id)
        pairs; returns the targets that exist afterwards. A missing source is skipped."""
        done = []
        touched: set[Path] = set()
        for source_id, target_id in links:
            source, target = self.path_of(source_id), self.path_of(target_id)
            with self._lock:
                if not target.exists():
                    try:
                        os.link(source, target)
                    except FileNotFoundError:
                        continue
                    if self.written_pages is not None:
                        self.written_pages.renamed(source, target)
                    self.shard_count += 1
                    self.used_bytes += _recorded_length(target)
                    touched.add(target.parent)
            done.append(target_id)
        for directory in touched:
            _fsync_dir(directory)
        return done

    def inventory(self) -> Iterator[tuple[str, int]]:
        """Every stored shard id with its data length."""
        for shard_id, length, _mtime in self.listing():
            yield shard_id, length

    def listing(self) -> Iterator[tuple[str, int, float]]:
        """Every stored shard id with its data length and file modification time."""
        for sub in sorted(self._shards.iterdir()):
            with os.scandir(sub) as entries:
                for entry in entries:
                    try:
                        size = _recorded_length(Path(entry.path))
                        mtime = entry.stat().st_mtime
                    except FileNotFoundError:
                        continue
                    yield entry.name, size, mtime
