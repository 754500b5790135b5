"""Reconciliation: compare each node's shard inventory with the manifests.

- A shard the node has but no manifest references is an orphan: left by an upload that never
  committed, by an object deleted or replaced while the node was away, or rebuilt elsewhere
  while it was down. Once older than `orphan_grace` (so uploads and repairs in flight are never
  touched) it is queued for deletion. Shards of uploads still pending are always left alone.
- A shard a manifest places on the node but the node lacks is marked `missing`, and repair
  rebuilds it.

Runs every `reconcile_interval` for every live node, and at once for a node that registers
or comes back from `down`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc.aio

from shoal.common.channels import NodeChannels
from shoal.common.errors import InvalidArgument
from shoal.common.lifecycle import sleep_or_shutdown
from shoal.common.names import parse_shard_id
from shoal.coordinator.config import CoordinatorConfig
from shoal.coordinator.membership import Membership
from shoal.coordinator.metadata import MetadataStore
from shoal.rpc.v1 import storage_pb2 as spb

log = logging.getLogger(__name__)

DbCall = Callable[..., Awaitable[Any]]
# Manifest rows changed this recently may describe shards written after the inventory listing.
RACE_MARGIN_S = 5.0
LIST_TIMEOUT_S = 60.0


class Reconciler:
    """Keeps node inventories and manifests in agreement."""

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
        self._requested: set[str] = set()
        self._wake = asyncio.Event()
        self.waiting_orphan_bytes: dict[str, int] = {}
        self.on_missing: Callable[[], None] | None = None

    def request(self, node_id: str) -> None:
        """Reconcile this node soon (it registered or came back)."""
        self._requested.add(node_id)
        self._wake.set()

    async def run(self, shutdown: asyncio.Event) -> None:
        next_full = time.monotonic() + self.config.reconcile_interval
        while not shutdown.is_set():
            timeout = max(next_full - time.monotonic(), 0.0)
            waker = asyncio.create_task(self._wake.wait())
            stopper = asyncio.create_task(shutdown.wait())
            await asyncio.wait(
                {waker, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            waker.cancel()
            stopper.cancel()
            if shutdown.is_set():
                return
            self._wake.clear()
            if time.monotonic() >= next_full:
                self._requested |= self.membership.readable_ids()
                next_full = time.monotonic() + self.config.reconcile_interval
            todo, self._requested = self._requested, set()
            readable = self.membership.readable_ids()
            # Concurrently, so one slow or unreachable node cannot hold up the others.
            await asyncio.gather(*(self._reconcile_safely(n) for n in sorted(todo & readable)))
            if await sleep_or_shutdown(shutdown, 0.1):
                return

    async def _reconcile_safely(self, node_id: str) -> None:
        try:
            await self.reconcile_node(node_id)
        except Exception:
            log.exception("reconciliation failed", extra={"node_id": node_id})

    async def _inventory(self, address: str) -> list[spb.ShardSummary]:
        stub = self.channels.stub(address)
        call = stub.ListShards(spb.ListShardsRequest(), timeout=LIST_TIMEOUT_S)
        return [shard async for reply in call for shard in reply.shards]

    async def reconcile_node(self, node_id: str) -> tuple[int, int]:
        """Compare one node; returns (orphans queued, shards marked missing)."""
        record = self.membership.nodes[node_id]
        started = time.time()
        try:
            inventory = await self._inventory(record.address)
        except grpc.aio.AioRpcError as exc:
            log.info("cannot list shards", extra={"node_id": node_id, "error": exc.code().name})
            return 0, 0
        refs: dict[str, float] = await self.db(self.store.node_references, node_id)
        queued: set[str] = await self.db(self.store.queued_for, node_id)
        unknown = [s for s in inventory if s.shard_id not in refs and s.shard_id not in queued]
        versions = set()
        for shard in unknown:
            try:
                versions.add(parse_shard_id(shard.shard_id)[0])
            except InvalidArgument:
                continue
        states: dict[str, str] = await self.db(self.store.version_states, versions)
        orphans, waiting = [], 0
        for shard in unknown:
            try:
                version_id = parse_shard_id(shard.shard_id)[0]
            except InvalidArgument:
                continue
            if states.get(version_id) == "pending":
                continue
            if started - shard.mtime < self.config.orphan_grace:
                waiting += shard.length
                continue
            orphans.append((shard.shard_id, shard.length))
        self.waiting_orphan_bytes[node_id] = waiting
        if orphans:
            await self.db(self.store.queue_deletions, node_id, orphans, started)
        present = {s.shard_id for s in inventory}
        missing = [
            sid
            for sid, updated in refs.items()
            if sid not in present and updated < started - RACE_MARGIN_S
        ]
        marked = await self.db(self.store.mark_missing, node_id, missing, started - RACE_MARGIN_S)
        if marked and self.on_missing is not None:
            self.on_missing()
        if orphans or marked:
            log.info(
                "reconciled node",
                extra={
                    "node_id": node_id,
                    "orphans": len(orphans),
                    "missing": marked,
                    "inventory": len(inventory),
                },
            )
        return len(orphans), marked
