"""The node's side of membership: register with the coordinator, then heartbeat.

Each heartbeat carries capacity, used bytes and shard count, and the ids of shards deleted
since the last one; the reply lists shards to delete (objects deleted or replaced). When the
coordinator is unreachable the loop keeps retrying and the node keeps serving reads and writes.
"""

from __future__ import annotations

import asyncio
import logging

import grpc.aio

from shoal.common.lifecycle import sleep_or_shutdown
from shoal.common.names import parse_shard_id
from shoal.common.rpc import PROTOCOL_VERSION
from shoal.common.tls import tls_failure
from shoal.common.transport import Transport
from shoal.rpc.v1 import coordinator_pb2 as cpb
from shoal.rpc.v1 import coordinator_pb2_grpc as cpb_grpc
from shoal.storage_node.config import NodeConfig
from shoal.storage_node.scrubber import Scrubber
from shoal.storage_node.shard_store import ShardStore

log = logging.getLogger(__name__)


class Membership:
    """Registers the node and runs the heartbeat loop."""

    def __init__(
        self,
        config: NodeConfig,
        store: ShardStore,
        node_id: str,
        address: str,
        scrubber: Scrubber | None = None,
        transport: Transport | None = None,
    ) -> None:
        self.scrubber = scrubber
        self.config = config
        self.store = store
        self.node_id = node_id
        self.address = address
        self.transport = transport or Transport()
        self._channel = self.transport.channel(config.coordinator)
        self._stub = cpb_grpc.CoordinatorStub(self._channel)
        self._deleted: list[str] = []
        self.registered = asyncio.Event()

    async def register(self, shutdown: asyncio.Event) -> bool:
        """Register, retrying until it works or shutdown; True when registered."""
        delay = 0.1
        while not shutdown.is_set():
            try:
                await self._stub.RegisterNode(
                    cpb.RegisterNodeRequest(
                        node_id=self.node_id,
                        address=self.address,
                        zone=self.config.zone,
                        capacity_bytes=self.store.capacity_bytes,
                        protocol_version=PROTOCOL_VERSION,
                    ),
                    timeout=self.config.rpc_timeout,
                )
                log.info(
                    "registered with coordinator", extra={"coordinator": self.config.coordinator}
                )
                self.registered.set()
                return True
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
                    log.error("the coordinator refused this node: missing or wrong cluster token")
                elif exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    log.error("the coordinator refused this node: %s", exc.details())
                elif reason := tls_failure(exc.details() or "", tls=self.transport.tls is not None):
                    log.error(
                        "cannot register with the coordinator at %s: %s",
                        self.config.coordinator,
                        reason,
                    )
                else:
                    log.warning("registration failed, retrying", extra={"error": exc.code().name})
            if await sleep_or_shutdown(shutdown, delay):
                return False
            delay = min(delay * 2, 2.0)
        return False

    async def heartbeat_once(self) -> None:
        """Send one heartbeat and act on the reply."""
        deleted, self._deleted = self._deleted, []
        try:
            reply = await self._stub.Heartbeat(
                cpb.HeartbeatRequest(
                    node_id=self.node_id,
                    capacity_bytes=self.store.capacity_bytes,
                    used_bytes=self.store.used_bytes,
                    shard_count=self.store.shard_count,
                    deleted_shard_ids=deleted,
                    scrub_running=bool(self.scrubber and self.scrubber.running),
                    scrub_bytes_done=self.scrubber.bytes_done if self.scrubber else 0,
                    scrub_bytes_total=self.scrubber.bytes_total if self.scrubber else 0,
                    corrupt_found=self.store.corrupt_found,
                ),
                timeout=self.config.rpc_timeout,
            )
        except grpc.aio.AioRpcError as exc:
            self._deleted = deleted + self._deleted
            log.warning("heartbeat failed", extra={"error": exc.code().name})
            return
        if reply.reregister:
            self.registered.clear()
        if reply.scrub_now and self.scrubber is not None:
            self.scrubber.trigger()
        if reply.delete_shard_ids:
            done = await asyncio.to_thread(self.store.delete, list(reply.delete_shard_ids))
            self._deleted.extend(done)
            log.info("deleted shards on coordinator request", extra={"count": len(done)})

    async def run(self, shutdown: asyncio.Event) -> None:
        """Heartbeat until shutdown, re-registering when the coordinator asks."""
        while not shutdown.is_set():
            if not self.registered.is_set() and not await self.register(shutdown):
                return
            await self.heartbeat_once()
            if await sleep_or_shutdown(shutdown, self.config.heartbeat_interval):
                return

    async def report_bad(self, bad: list[tuple[str, str]]) -> None:
        """Tell the coordinator about shards that failed verification here."""
        shards = []
        for sid, reason in bad:
            version_id, stripe, index = parse_shard_id(sid)
            shards.append(
                cpb.CorruptShard(
                    version_id=version_id,
                    stripe_index=stripe,
                    shard_index=index,
                    node_id=self.node_id,
                    reason=f"checksum mismatch found by scrub: {reason}",
                )
            )
        try:
            await self._stub.ReportCorruptShards(
                cpb.ReportCorruptShardsRequest(shards=shards), timeout=self.config.rpc_timeout
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("could not report corrupt shards", extra={"error": exc.code().name})

    async def close(self) -> None:
        await self._channel.close()
