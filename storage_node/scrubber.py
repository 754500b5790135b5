"""The scrubber: re-verify every shard's checksum in the background, at a bounded rate.

A pass lists the store and reads each shard through `ShardStore.read`, which verifies length
and xxh3-128 and quarantines a bad file; bad shards are reported to the coordinator, which
has them rebuilt like lost ones. Passes start every `scrub_interval` or at once when the
coordinator asks (`clusterctl scrub`). Reads are throttled to `scrub_rate` bytes/s so
scrubbing never starves client traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from shoal.common.errors import NotFound
from shoal.common.throttle import Throttle
from shoal.storage_node import metrics
from shoal.storage_node.shard_store import ShardCorrupt, ShardStore

log = logging.getLogger(__name__)

Report = Callable[[list[tuple[str, str]]], Awaitable[None]]
REPORT_EVERY_S = 1.0


class Scrubber:
    """Background checksum verification of one node's shards."""

    def __init__(
        self, store: ShardStore, rate_bytes_s: int, interval_s: float, report: Report
    ) -> None:
        self.store = store
        self.interval_s = interval_s
        self.report = report
        self._throttle = Throttle(rate_bytes_s)
        self._trigger = asyncio.Event()
        self.running = False
        self.bytes_done = 0
        self.bytes_total = 0
        self.passes = 0

    def trigger(self) -> None:
        """Start a pass now (or right after the current one)."""
        self._trigger.set()

    async def run(self, shutdown: asyncio.Event) -> None:
        while not shutdown.is_set():
            waiter = asyncio.create_task(self._trigger.wait())
            stopper = asyncio.create_task(shutdown.wait())
            await asyncio.wait(
                {waiter, stopper}, timeout=self.interval_s, return_when=asyncio.FIRST_COMPLETED
            )
            waiter.cancel()
            stopper.cancel()
            if shutdown.is_set():
                return
            self._trigger.clear()
            await self.run_pass(shutdown)

    async def run_pass(self, shutdown: asyncio.Event | None = None) -> int:
        """Verify every shard once; returns how many were bad."""
        listing = await asyncio.to_thread(lambda: list(self.store.inventory()))
        self.running, self.bytes_done = True, 0
        self.bytes_total = sum(length for _sid, length in listing)
        started = time.monotonic()
        log.info("scrub pass started", extra={"shards": len(listing), "bytes": self.bytes_total})
        bad: list[tuple[str, str]] = []
        found = 0
        last_report = time.monotonic()
        try:
            for shard_id, length in listing:
                if shutdown is not None and shutdown.is_set():
                    break
                await self._throttle.take(length)
                try:
                    await asyncio.to_thread(self.store.read, shard_id)
                except ShardCorrupt as exc:
                    bad.append((shard_id, str(exc)))
                    found += 1
                    metrics.CORRUPT_SHARDS.labels("scrub").inc()
                except NotFound:
                    pass  # deleted since the listing
                else:
                    metrics.SCRUB_VERIFIED_BYTES.inc(length)
                self.bytes_done += length
                if bad and time.monotonic() - last_report > REPORT_EVERY_S:
                    await self._report(bad)
                    bad, last_report = [], time.monotonic()
            if bad:
                await self._report(bad)
        finally:
            self.running = False
        self.passes += 1
        metrics.SCRUB_PASSES.inc()
        log.info(
            "scrub pass finished",
            extra={
                "bad": found,
                "bytes": self.bytes_done,
                "seconds": round(time.monotonic() - started, 1),
            },
        )
        return found

    async def _report(self, bad: list[tuple[str, str]]) -> None:
        with contextlib.suppress(Exception):
            await self.report(bad)
