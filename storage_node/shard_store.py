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
`ShardCorrupt`, so corrupt bytes are never returned.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from shoal.common.checksum import StreamingChecksum, shard_checksum
from shoal.common.errors import InvalidArgument, NotFound, ShoalError, Unavailable
from shoal.common.names import parse_shard_id

MAGIC = b"SHRD"
FORMAT_VERSION = 1
HEADER = struct.Struct(">4sHHQ16s")  # magic, format, reserved, length, checksum
HEADER_BYTES = HEADER.size  # 32


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


class ShardWriter:
    """One shard being received: data goes to a temp file in incoming/, then commit() or abort()."""

    def __init__(self, store: ShardStore, meta: ShardMeta) -> None:
        self._store = store
        self.meta = meta
        self._tmp = store.root / "incoming" / f"{uuid.uuid4().hex}.tmp"
        self._file = self._tmp.open("wb")
        self._file.write(HEADER.pack(MAGIC, FORMAT_VERSION, 0, meta.length, meta.checksum))
        self._hasher = StreamingChecksum()
        self._received = 0

    def write(self, data: bytes) -> None:
        """Append received bytes (blocking; call from a thread)."""
        self._received += len(data)
        if self._received > self.meta.length:
            raise InvalidArgument(
                f"shard {self.meta.shard_id}: received more than the declared "
                f"{self.meta.length} bytes"
            )
        self._hasher.update(data)
        self._file.write(data)

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
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._store.install(self._tmp, self.meta)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop the temp file (safe to call twice)."""
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()


class ShardStore:
    """Shard files in one directory tree. Methods block; the servicer calls them in threads."""

    def __init__(self, root: Path, capacity_bytes: int = 0) -> None:
        self.root = root
        self._shards = root / "shards"
        self._lock = threading.Lock()
        for sub in ("shards", "incoming", "quarantine"):
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
        version_id, _stripe, _index = parse_shard_id(shard_id)
        return self._shards / version_id[:2] / shard_id

    def begin_write(self, meta: ShardMeta) -> ShardWriter:
        """Start receiving a shard; refuses when the node is full."""
        existing = self.path_of(meta.shard_id)
        replaced = _recorded_length(existing) if existing.exists() else 0
        if self.used_bytes - replaced + meta.length > self.capacity_bytes:
            raise Unavailable(
                f"node full: {self.used_bytes} of {self.capacity_bytes} bytes used, "
                f"shard needs {meta.length}"
            )
        return ShardWriter(self, meta)

    def install(self, tmp: Path, meta: ShardMeta) -> None:
        """Rename a verified, fsynced temp file into place and fsync the directory."""
        final = self.path_of(meta.shard_id)
        with self._lock:
            previous = _recorded_length(final) if final.exists() else None
            os.replace(tmp, final)
            if previous is None:
                self.shard_count += 1
                self.used_bytes += meta.length
            else:
                self.used_bytes += meta.length - previous
        _fsync_dir(final.parent)

    def write(self, meta: ShardMeta, data: bytes) -> None:
        """Store a whole shard in one call (blocking)."""
        writer = self.begin_write(meta)
        try:
            writer.write(data)
        except BaseException:
            writer.abort()
            raise
        writer.commit()

    def read(self, shard_id: str) -> tuple[ShardMeta, bytes]:
        """Return a shard's header and verified data; NotFound or ShardCorrupt otherwise."""
        path = self.path_of(shard_id)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"shard {shard_id} not on this node") from None
        problem = self._verify(blob)
        if problem:
            self.quarantine(shard_id, problem)
            raise ShardCorrupt(f"shard {shard_id}: {problem}")
        _magic, _fmt, _reserved, length, checksum = HEADER.unpack_from(blob)
        return ShardMeta(shard_id, length, checksum), blob[HEADER_BYTES:]

    @staticmethod
    def _verify(blob: bytes) -> str:
        if len(blob) < HEADER_BYTES:
            return "truncated header"
        magic, fmt, _reserved, length, checksum = HEADER.unpack_from(blob)
        if magic != MAGIC or fmt != FORMAT_VERSION:
            return "bad header"
        if len(blob) - HEADER_BYTES != length:
            return f"length {len(blob) - HEADER_BYTES} differs from recorded {length}"
        if shard_checksum(memoryview(blob)[HEADER_BYTES:]) != checksum:
            return "checksum mismatch"
        return ""

    def quarantine(self, shard_id: str, reason: str) -> None:
        """Move a bad shard out of service into quarantine/."""
        path = self.path_of(shard_id)
        with self._lock:
            try:
                os.replace(path, self.root / "quarantine" / shard_id)
            except FileNotFoundError:
                return
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
