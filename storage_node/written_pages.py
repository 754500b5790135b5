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
the kernel to manage as usual. A dropped shard is read from disk the next time it is asked
for, which costs about 0.2 ms of CPU per MiB more than a cached read.

Off (`drop_written_pages = false`), the node leaves every page to the kernel.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

__all__ = ["WrittenPages"]

_FADVISE = getattr(os, "posix_fadvise", None)  # absent on macOS and Windows


class WrittenPages:
    """The most recently written shard files and their sizes, oldest first; thread-safe."""

    def __init__(self, window: int) -> None:
        if window < 0:
            raise ValueError(f"window must be >= 0, not {window}")
        self.window = window
        self.enabled = _FADVISE is not None
        self._lock = threading.Lock()
        self._recent: OrderedDict[str, int] = OrderedDict()
        self._bytes = 0
        self.dropped = 0  # files whose pages were dropped (for tests and metrics)

    def written(self, path: Path, size: int) -> None:
        """Record a durable (fsynced) shard file; drop the pages of those past the window
        (blocking: call from a thread)."""
        if not self.enabled:
            return
        key = os.fspath(path)
        victims: list[str] = []
        with self._lock:
            self._bytes += size - self._recent.pop(key, 0)
            self._recent[key] = size
            while self._bytes > self.window and self._recent:
                old, old_size = self._recent.popitem(last=False)
                self._bytes -= old_size
                victims.append(old)
        for victim in victims:
            self._drop(victim)

    def asked_for(self, path: Path) -> None:
        """A shard was read: leave its pages to the kernel from now on."""
        if not self._recent:
            return
        with self._lock:
            size = self._recent.pop(os.fspath(path), None)
            if size is not None:
                self._bytes -= size

    def pending(self) -> int:
        """Bytes of written shards whose pages are still kept."""
        with self._lock:
            return self._bytes

    def _drop(self, path: str) -> None:
        assert _FADVISE is not None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return  # deleted or moved to quarantine meanwhile: nothing to drop
        try:
            _FADVISE(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            with self._lock:
                self.dropped += 1
        except OSError:
            pass  # advice only; a filesystem that refuses it keeps its cache
        finally:
            os.close(fd)
