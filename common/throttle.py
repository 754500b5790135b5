"""Rate limiting for background work (repair reads, scrubbing)."""

from __future__ import annotations

import asyncio
import time


class Throttle:
    """Spaces out work so that `rate_bytes_s` is not exceeded on average."""

    def __init__(self, rate_bytes_s: float) -> None:
        self.rate = rate_bytes_s
        self._next_free = time.monotonic()

    async def take(self, nbytes: int) -> None:
        """Wait until `nbytes` more may be processed."""
        now = time.monotonic()
        start = max(now, self._next_free)
        self._next_free = start + nbytes / self.rate
        if start > now:
            await asyncio.sleep(start - now)
