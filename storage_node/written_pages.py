"""WrittenPages: drop the OS page cache of the shards a node wrote, past a window of recent ones.

Every shard a node stores is written through the page cache, and once it is fsynced those pages
are clean copies of bytes already on disk. The kernel keeps them until memory runs short, so a
write-heavy node grows its page cache by every byte it stores. Growing it is the expensive
part: each new page is taken from free memory, and where free memory is cold (on the VMs this
was measured on, the hypervisor takes free guest pages back, so the first touch of each one
faults in the host) writing a 1 MiB shard cost 1.3-1.5 ms of CPU against 0.20 ms when the
pages were ones freed a moment earlier. A 64 MiB put at (4, 6) writes 96 such shards; dropping
the pages of shards written a window ago took the nodes' CPU per put from 342-367 to 241-270
ms and the put from 230-244 to 287-304 MiB/s (alternating runs, docs/performance.md).

So, as MinIO writes erasure-coded parts with O_DIRECT and drops written pages with fadvise,
a node keeps the pages of its most recent `window` bytes of written shards (a read soon
after a write, such as a get right after a put, still finds them) and asks the kernel to drop
the pages of older ones (POSIX_FADV_DONTNEED, which frees clean pages only, never data). A
shard that is asked for before it leaves the window is forgotten here, so its pages stay for
the kernel to manage as usual; so is one deleted, quarantined or linked to a new name (the
entry then follows the new name). A dropped shard is read from disk the next time it is
asked for, which costs about 0.2 ms of CPU per MiB more than a cached read. The window is
counted in pages (a 33-byte shard holds a whole page), so it holds at most `window / 4096`
entries.

Off (`drop_written_pages = false`), the node leaves every page to the kernel.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import NamedTuple

__all__ = ["WrittenPages"]

_FADVISE = getattr(os, "posix_fadvise", None)  # absent on macOS and Windows
try:
    PAGE = os.sysconf("SC_PAGE_SIZE")
except (AttributeError, ValueError, OSError):
    PAGE = 4096


class _Entry(NamedTuple):
    charged: int  # page-cache bytes the file takes: its size rounded up to whole pages
    device: int
    inode: int


def charged_bytes(size: int) -> int:
    """The page cache a file of `size` bytes takes: whole pages, at least one."""
    return max(PAGE, -(-size // PAGE) * PAGE)


class WrittenPages:
    """The most recently written shard files and the page cache they take, oldest first;
    thread-safe (the store calls it from its I/O threads)."""

    def __init__(self, window: int) -> None:
        if window < 0:
            raise ValueError(f"window must be >= 0, not {window}")
        self.window = window
        self.enabled = _FADVISE is not None
        self._lock = threading.Lock()
        self._recent: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self.dropped = 0  # files whose pages were dropped (for tests and metrics)

    def written(self, path: Path, size: int) -> None:
        """Record a durable (fsynced) shard file of `size` bytes; drop the pages of those
        past the window (blocking: call from a thread)."""
        if not self.enabled:
            return
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            return  # deleted already: nothing of it to keep or drop
        entry = _Entry(charged_bytes(size), stat.st_dev, stat.st_ino)
        key = os.fspath(path)
        victims: list[tuple[str, _Entry]] = []
        with self._lock:
            self._remove(key)
            self._recent[key] = entry
            self._bytes += entry.charged
            while self._bytes > self.window and self._recent:
                old_path, old_entry = self._recent.popitem(last=False)
                self._bytes -= old_entry.charged
                victims.append((old_path, old_entry))
        for victim_path, victim in victims:
            self._drop(victim_path, victim)

    def forget(self, path: Path) -> None:
        """Stop tracking `path` (asked for by a client, deleted, quarantined): its pages, if
        any, are the kernel's to manage from now on."""
        if not self._recent:
            return
        with self._lock:
            self._remove(os.fspath(path))

    def renamed(self, old: Path, new: Path) -> None:
        """`old` got a second name `new` (a hard link) and will be deleted: track `new`."""
        if not self._recent:
            return
        with self._lock:
            entry = self._recent.pop(os.fspath(old), None)
            if entry is not None:
                self._remove(os.fspath(new))
                self._recent[os.fspath(new)] = entry  # newest: the link is a fresh write

    def pending(self) -> int:
        """Page-cache bytes of written shards still kept."""
        with self._lock:
            return self._bytes

    def tracked(self) -> int:
        """How many written shard files are in the window."""
        with self._lock:
            return len(self._recent)

    def _remove(self, key: str) -> None:
        entry = self._recent.pop(key, None)
        if entry is not None:
            self._bytes -= entry.charged

    def _drop(self, path: str, entry: _Entry) -> None:
        assert _FADVISE is not None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return  # deleted or moved to quarantine meanwhile: nothing to drop
        try:
            stat = os.fstat(fd)
            if (stat.st_dev, stat.st_ino) != (entry.device, entry.inode):
                return  # the shard was written again since: the new file's pages stay
            _FADVISE(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            with self._lock:
                self.dropped += 1
        except OSError:
            pass  # advice only; a filesystem that refuses it keeps its cache
        finally:
            os.close(fd)
