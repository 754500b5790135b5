"""Short-circuit reads: a client on the same host as storage nodes reads their shard files.

A task that runs beside the node holding its input (the scheduler places map tasks so) would
otherwise have every byte read by the node, framed into gRPC messages, copied through the
loopback and parsed again; HDFS's short-circuit local reads skip the same round trip. Given the
data directories of the nodes on its host (`Client(local_node_dirs=...)`, a worker's
`local_node_dirs` setting), the client reads a shard's file itself when:

- the directory's `node_id` file names the node the coordinator placed the shard on;
- the coordinator reports the shard ok and its node not down (a down node's shards are not
  read behind its back: what a user sees of a node loss does not depend on where a client
  runs);
- the file's header is sound and records the length the manifest gives, and the data matches
  the manifest's checksum.

Anything else (no such file, no permission, a bad header, a checksum mismatch, a read not
done within the shard timeout, after which the node is asked for a while) falls back to
asking the node, which then does what it always does: a corrupt file is quarantined there and
reported, never returned. Shard files are immutable once renamed into place, so a read races
at worst with a deletion, which the fallback covers. Reading the files bypasses the node's
token and TLS checks: give a client only directories its user may read anyway. Short-circuit
reads are off unless directories are given.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from shoal.common.errors import InvalidArgument, ShoalError
from shoal.common.shard_file import (
    HEADER,
    HEADER_BYTES,
    NODE_ID_FILE,
    SHARDS_DIR,
    header_problem,
    pread_exactly,
    shard_path,
)
from shoal.common.shard_transfer import verify

PathArg = str | os.PathLike[str]

RESCAN_AFTER_S = 5.0


def parse_dirs(value: Iterable[PathArg] | PathArg | None) -> tuple[Path, ...]:
    """Directories from a sequence of paths or one comma-separated string; InvalidArgument
    for anything else."""
    if value is None:
        return ()
    if isinstance(value, str):
        items: list[PathArg] = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, os.PathLike):
        items = [value]
    else:
        try:
            items = list(value)
        except TypeError:
            raise InvalidArgument(
                f"local_node_dirs must be paths or a comma-separated string, "
                f"got {type(value).__name__}"
            ) from None
    dirs = []
    for item in items:
        if not isinstance(item, str | os.PathLike):
            raise InvalidArgument(f"local_node_dirs: {item!r} is not a directory path")
        text = os.fspath(item)
        if not isinstance(text, str) or not text or "\0" in text:
            raise InvalidArgument(f"local_node_dirs: {item!r} is not a directory path")
        dirs.append(Path(text).expanduser())
    return tuple(dirs)


class LocalShardFiles:
    """The shard files of the storage nodes whose data directories are on this host.

    `read` blocks (call it in a thread). Thread-safe; `hits` and `fallbacks` count the shards
    read directly and the attempts that had to go to the node instead.
    """

    def __init__(
        self,
        data_dirs: Iterable[PathArg] | PathArg,
        *,
        rescan_after_s: float = RESCAN_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.data_dirs = parse_dirs(data_dirs)
        self.rescan_after_s = rescan_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._shards_dirs: dict[str, Path] = {}
        self._scanned_at: float | None = None
        self._suspended: dict[str, float] = {}  # node id -> until (clock)
        self.hits = 0
        self.fallbacks = 0

    def _scan(self) -> None:
        found: dict[str, Path] = {}
        for data_dir in self.data_dirs:
            try:
                node_id = (data_dir / NODE_ID_FILE).read_text().strip()
            except (OSError, UnicodeDecodeError):
                continue  # not a node's directory (yet): its node may not have started
            if node_id:
                found[node_id] = data_dir / SHARDS_DIR
        self._shards_dirs = found
        self._scanned_at = self._clock()

    def shards_dir(self, node_id: str) -> Path | None:
        """The shards directory of node `node_id` if it is one of ours; a node not seen is
        looked for again at most every `rescan_after_s` (it may have started since)."""
        with self._lock:
            found = self._shards_dirs.get(node_id)
            if found is None and (
                self._scanned_at is None or self._clock() - self._scanned_at >= self.rescan_after_s
            ):
                self._scan()
                found = self._shards_dirs.get(node_id)
            return found

    def holds(self, node_id: str) -> bool:
        """Whether node `node_id`'s data directory is one of ours (and not suspended)."""
        if not self.data_dirs:
            return False
        with self._lock:
            until = self._suspended.get(node_id)
            if until is not None:
                if self._clock() < until:
                    return False
                del self._suspended[node_id]
        return self.shards_dir(node_id) is not None

    def suspend(self, node_id: str, seconds: float) -> None:
        """Read node `node_id`'s shards through the node for `seconds` (say, after a read of
        its files hung past the shard timeout)."""
        with self._lock:
            self._suspended[node_id] = self._clock() + seconds

    def read(self, node_id: str, shard_id: str, length: int, checksum: bytes) -> bytes | None:
        """The shard's data read from its file, verified against the manifest's `length` and
        `checksum`; None when the file cannot be used (the caller asks the node instead)."""
        data = self._read_file(node_id, shard_id, length)
        ok = data is not None and verify(data, length, checksum)
        with self._lock:
            if ok:
                self.hits += 1
            else:
                self.fallbacks += 1
        return data if ok else None

    def _read_file(self, node_id: str, shard_id: str, length: int) -> bytes | None:
        shards_dir = self.shards_dir(node_id)
        if shards_dir is None:
            return None
        try:
            path = shard_path(shards_dir, shard_id)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except (OSError, ValueError, ShoalError):
            return None
        try:
            header = os.pread(fd, HEADER_BYTES, 0)
            if header_problem(header, os.fstat(fd).st_size):
                return None
            if HEADER.unpack(header)[3] != length:
                return None
            data = pread_exactly(fd, length, HEADER_BYTES)
        except OSError:
            return None
        finally:
            os.close(fd)
        return data if len(data) == length else None
