"""Repair: restore `n` healthy shards to every stripe, and move shards off draining nodes.

The work list is derived each cycle from persisted metadata (shard states, node liveness and
admin states), so a coordinator restart resumes exactly where it was; only the progress
counters of the current episode restart. A stripe needs work when fewer than `n` of its
shards are good (state ok, on a node that is neither decommissioned nor down past
`repair_after`), or when a good shard sits on a draining node. Stripes with the fewest good
shards go first.

Rebuilding happens on storage nodes, never here: for each shard the coordinator picks a
target (placement excluding every node that holds a shard of the stripe, spreading zones),
sends it `RebuildShard` with healthy sources, and records the new placement once the node has
stored it. Reads are throttled to `repair_bandwidth` bytes/s and at most `repair_concurrency`
shards are rebuilt at once. A failure is recorded with its reason (`clusterctl repair errors`)
and retried with backoff on another target; it never stops the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc.aio

from shoal.common.channels import NodeChannels
from shoal.common.lifecycle import sleep_or_shutdown
from shoal.common.placement import place
from shoal.common.rpc import to_shoal_error
from shoal.common.throttle import Throttle
from shoal.coordinator import metrics as coordinator_metrics
from shoal.coordinator.config import CoordinatorConfig
from shoal.coordinator.membership import Membership
from shoal.coordinator.metadata import MetadataStore, RepairStripe, ShardRow
from shoal.rpc.v1 import storage_pb2 as spb

log = logging.getLogger(__name__)

T = TypeVar("T")
DbCall = Callable[..., Awaitable[Any]]
CYCLE_S = 0.5
IDLE_RESCAN_S = 10.0
# Stripes fetched per backlog scan; later repairs start from this queue the moment one
# finishes, and the backlog is scanned again once it is empty.
QUEUE_BATCH = 64
REPAIR_HELD = "repair_held"


@dataclass
class RepairProgress:
    """Counters of the current repair episode (from the backlog becoming non-empty)."""

    started: float = 0.0
    done: int = 0
    bytes_done: int = 0
    remaining: int = 0
    to_move: int = 0
    errors: int = 0
    durations: list[float] = field(default_factory=list)

    def backlog(self, rebuild: int, move: int, busy: bool) -> None:
        total = rebuild + move
        if total and not self.started:
            self.started, self.done, self.bytes_done, self.errors = time.time(), 0, 0, 0
            log.info("repair episode started", extra={"shards": total})
        elif not total and not busy and self.started:
            log.info(
                "repair episode finished",
                extra={
                    "shards": self.done,
                    "bytes": self.bytes_done,
                    "seconds": round(time.time() - self.started, 1),
                },
            )
            self.started = 0.0
        self.remaining, self.to_move = total, move

    def finished_one(self, nbytes: int, seconds: float) -> None:
        self.done += 1
        self.bytes_done += nbytes
        self.durations = [*self.durations[-49:], seconds]

    @property
    def rate(self) -> float:
        elapsed = time.time() - self.started if self.started else 0.0
        return self.bytes_done / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float:
        if not self.remaining or not self.done or not self.rate:
            return 0.0
        return self.remaining * (self.bytes_done / self.done) / self.rate

    @property
    def mean_rebuild_s(self) -> float:
        return sum(self.durations) / len(self.durations) if self.durations else 0.0


class RepairScheduler:
    """Finds stripes that need shards and has storage nodes rebuild them."""

    def __init__(
        self,
        config: CoordinatorConfig,
        store: MetadataStore,
        membership: Membership,
        db: DbCall,
        channels: NodeChannels,
    ) -> None:
        self.config = config
        self.store = store
        self.membership = membership
        self.db = db
        self.channels = channels
        self.progress = RepairProgress()
        self.held = False
        self._throttle = Throttle(config.repair_bandwidth)
        self._inflight: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._failed_targets: dict[tuple[str, int, int], set[str]] = {}
        self._scanned: tuple[frozenset[str], frozenset[str]] | None = None
        self._scanned_at = 0.0
        self._dirty = True
        self._queue: list[RepairStripe] = []
        self._wake = asyncio.Event()

    def poke(self) -> None:
        """Something may need repair (a corrupt or missing shard, a degraded commit)."""
        self._dirty = True
        self._wake.set()

    async def load(self) -> None:
        self.held = await self.db(self.store.setting, REPAIR_HELD, "0") == "1"
        coordinator_metrics.set_repair_held(self.held)

    async def set_held(self, held: bool) -> None:
        await self.db(self.store.set_setting, REPAIR_HELD, "1" if held else "0")
        self.held = held
        coordinator_metrics.set_repair_held(held)
        log.warning("automatic repair %s", "HELD by operator" if held else "resumed")

    async def run(self, shutdown: asyncio.Event, startup_grace_s: float) -> None:
        """Repair until shutdown. Waits `startup_grace_s` first so nodes can heartbeat a
        freshly started coordinator before anything counts as lost."""
        if await sleep_or_shutdown(shutdown, startup_grace_s):
            return
        try:
            while not shutdown.is_set():
                try:
                    await self.run_once()
                except Exception:
                    log.exception("repair cycle failed; retrying")
                if await self._pause(shutdown):
                    break
        finally:
            for task in self._inflight.values():
                task.cancel()
            for task in list(self._inflight.values()):
                with contextlib.suppress(BaseException):
                    await task

    async def _pause(self, shutdown: asyncio.Event) -> bool:
        """Wait up to CYCLE_S, less when a repair finishes or something pokes; True on
        shutdown. (Waiting the full cycle between repairs capped repair at 8 shards/s.)"""
        waits = {asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(shutdown.wait())}
        _done, pending = await asyncio.wait(
            waits, timeout=CYCLE_S, return_when=asyncio.FIRST_COMPLETED
        )
        for waiter in pending:
            waiter.cancel()
        return shutdown.is_set()

    async def run_once(self) -> None:
        """One cycle: refresh the backlog and start repairs up to the concurrency limit.

        The backlog query scans every committed stripe, so an idle healthy cluster skips it
        unless something changed (lost or draining nodes, a poke) or IDLE_RESCAN_S passed,
        and a busy one starts the next repairs from the stripes its last scan queued.
        """
        self._wake.clear()
        lost, draining = self.membership.lost_ids(), self.membership.draining_ids()
        scope = (frozenset(lost), frozenset(draining))
        if self._queue and scope == self._scanned and not self._dirty:
            if not self.held:
                self._start_queued(lost, draining)
            return
        idle = not self.progress.remaining and not self._inflight
        fresh = time.monotonic() - self._scanned_at < IDLE_RESCAN_S
        if idle and fresh and not self._dirty and scope == self._scanned:
            return
        self._dirty, self._scanned, self._scanned_at = False, scope, time.monotonic()
        if not lost and not draining and await self.db(self.store.all_stripes_full):
            # Nothing lost, nothing to move, and the maintained counters show no stripe short
            # of a shard (corrupt, missing or never written): skip the full backlog scan.
            rebuild, move = 0, 0
        else:
            rebuild, move = await self.db(self.store.repair_backlog, lost, draining)
        self.progress.backlog(rebuild, move, busy=bool(self._inflight))
        coordinator_metrics.set_repair_backlog(rebuild, move)
        if self.held or not (rebuild or move):
            return
        free = self.config.repair_concurrency - len(self._inflight)
        if free <= 0:
            return
        self._queue = await self.db(
            self.store.repair_candidates,
            lost,
            draining,
            time.time(),
            max(free * 4, QUEUE_BATCH),
        )
        self._start_queued(lost, draining)

    def _start_queued(self, lost: set[str], draining: set[str]) -> None:
        """Start repairs from the queue up to the concurrency limit."""
        while self._queue and len(self._inflight) < self.config.repair_concurrency:
            stripe = self._queue.pop(0)
            key = (stripe.version_id, stripe.stripe_index)
            if key in self._inflight:
                continue  # queued again while in flight; the next scan sees what is left
            task = asyncio.create_task(self._repair_stripe(stripe, lost, draining))
            self._inflight[key] = task
            task.add_done_callback(functools.partial(self._done, key))

    def _done(self, key: tuple[str, int], _task: asyncio.Task[None]) -> None:
        self._inflight.pop(key, None)
        self._wake.set()

    async def _fail(self, stripe: RepairStripe, index: int, reason: str, kind: str) -> None:
        """Record a failed shard repair; `kind` labels it in metrics (unreadable, no_target,
        rebuild_failed)."""
        self.progress.errors += 1
        coordinator_metrics.record_repair_failure(kind)
        log.warning(
            "repair failed",
            extra={
                "version_id": stripe.version_id,
                "stripe": stripe.stripe_index,
                "shard": index,
                "reason": reason,
            },
        )
        await self.db(
            self.store.record_repair_error,
            stripe.version_id,
            stripe.stripe_index,
            index,
            reason,
            time.time(),
        )

    async def _repair_stripe(
        self, queued: RepairStripe, lost: set[str], draining: set[str]
    ) -> None:
        # The queued copy may predate a repair of this stripe that finished since: plan from
        # the stripe as it is now.
        stripe = await self.db(self.store.repair_stripe, queued.version_id, queued.stripe_index)
        if stripe is None:
            return  # deleted or replaced meanwhile
        readable = self.membership.readable_ids()
        good = [s for s in stripe.shards if s.state == "ok" and s.node_id not in lost]
        sources = sorted((s for s in good if s.node_id in readable), key=lambda s: s.shard_index)
        held = {s.shard_index for s in good}
        work: list[tuple[int, ShardRow | None]] = [
            (i, None) for i in range(stripe.n) if i not in held
        ]
        work += [(s.shard_index, s) for s in good if s.node_id in draining]
        if len(sources) < stripe.k:
            unreadable = sorted({s.node_id for s in stripe.shards} - readable)
            reason = f"only {len(sources)} of k={stripe.k} shards readable" + (
                f" (unreachable: {', '.join(unreadable)})" if unreadable else ""
            )
            for index, _moving in work:
                await self._fail(stripe, index, reason, "unreadable")
            return
        # A node holds at most one shard of a stripe. Nodes the manifest places another shard
        # on (in any state: a corrupt copy keeps its row until it is rebuilt) and nodes this
        # task already chose may not get this one; the node holding a corrupt or missing
        # copy of this very shard may (it is rebuilt in place).
        chosen: set[str] = set()
        for index, moving in work:
            others = {s.node_id for s in stripe.shards if s.shard_index != index}
            target = self._target(stripe, index, others | chosen, good, moving)
            if target is None:
                await self._fail(
                    stripe,
                    index,
                    "no eligible node: every live active node already holds a shard of this stripe",
                    "no_target",
                )
                continue
            chosen.add(target)
            await self._rebuild(stripe, index, target, sources, moving)

    def _target(
        self,
        stripe: RepairStripe,
        index: int,
        holders: set[str],
        good: list[ShardRow],
        moving: ShardRow | None,
    ) -> str | None:
        zones = [
            self.membership.nodes[s.node_id].zone
            for s in good
            if s.node_id in self.membership.nodes and s is not moving
        ]
        failed = self._failed_targets.get((stripe.version_id, stripe.stripe_index, index), set())
        key = f"{stripe.version_id}.{stripe.stripe_index}"
        candidates = self.membership.candidates()
        for exclude in (holders | failed, holders):
            chosen = place(key, candidates, 1, exclude=exclude, occupied_zones=zones)
            if chosen:
                return chosen[0].node_id
        return None

    async def _rebuild(
        self,
        stripe: RepairStripe,
        index: int,
        target: str,
        sources: list[ShardRow],
        moving: ShardRow | None,
    ) -> None:
        existing = next((s for s in stripe.shards if s.shard_index == index), None)
        ordered = ([moving] if moving else []) + [s for s in sources if s is not moving]
        request = spb.RebuildShardRequest(
            version_id=stripe.version_id,
            stripe_index=stripe.stripe_index,
            shard_index=index,
            k=stripe.k,
            n=stripe.n,
            stripe_size=stripe.size,
            shard_length=stripe.shard_length,
            checksum=existing.checksum if existing else b"",
            sources=[
                spb.ShardSource(
                    shard_index=s.shard_index,
                    node_id=s.node_id,
                    address=self.membership.nodes[s.node_id].address,
                    checksum=s.checksum,
                )
                for s in ordered
                if s.node_id in self.membership.nodes
            ],
            timeout_s=60.0,
        )
        read_bytes = stripe.shard_length * (1 if moving else stripe.k)
        await self._throttle.take(read_bytes)
        started = time.monotonic()
        address = self.membership.nodes[target].address
        try:
            reply = await self.channels.stub(address).RebuildShard(request, timeout=70.0)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                await self.channels.reset(address)
            self._failed_targets.setdefault(
                (stripe.version_id, stripe.stripe_index, index), set()
            ).add(target)
            await self._fail(
                stripe,
                index,
                f"rebuild on {target} failed: {to_shoal_error(exc)}",
                "rebuild_failed",
            )
            return
        shard = ShardRow(index, target, reply.length, bytes(reply.checksum), "ok")
        recorded = await self.db(
            self.store.record_rebuilt,
            stripe.version_id,
            stripe.stripe_index,
            shard,
            existing.node_id if existing else None,
            existing.length if existing else 0,
            self.config.delete_grace,
        )
        if not recorded:
            # The object was deleted or replaced, or the stripe changed under us: drop the
            # copy unless the manifest places this very shard on the target, and rescan.
            sid = f"{stripe.version_id}.{stripe.stripe_index}.{index}"
            await self.db(self.store.queue_deletions, target, [(sid, reply.length)], time.time())
            log.info(
                "rebuilt shard not recorded: the stripe changed meanwhile",
                extra={
                    "version_id": stripe.version_id,
                    "stripe": stripe.stripe_index,
                    "shard": index,
                    "target": target,
                },
            )
            self.poke()
            return
        self._failed_targets.pop((stripe.version_id, stripe.stripe_index, index), None)
        self.progress.finished_one(read_bytes, time.monotonic() - started)
        coordinator_metrics.record_rebuild(
            read_bytes, time.monotonic() - started, moved=moving is not None
        )
        log.info(
            "shard rebuilt",
            extra={
                "version_id": stripe.version_id,
                "stripe": stripe.stripe_index,
                "shard": index,
                "target": target,
                "moved": moving is not None,
            },
        )
