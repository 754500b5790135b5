"""StorageNodeServicer: translates StorageNode RPCs to ShardStore calls, nothing more.

Disk work runs in threads (`asyncio.to_thread`) so the event loop keeps serving. Shards up to
`SPILL_BYTES` are buffered and written in one thread hop; larger ones stream to the temp file
as they arrive, so memory per call stays bounded whatever the shard size.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc.aio

from shoal.common.channels import NodeChannels
from shoal.common.errors import CorruptData, InvalidArgument
from shoal.common.rpc import STREAM_CHUNK_BYTES, streaming, unary
from shoal.common.transport import Transport
from shoal.common.units import MiB
from shoal.rpc.v1 import storage_pb2 as pb
from shoal.rpc.v1 import storage_pb2_grpc as pb_grpc
from shoal.storage_node import metrics
from shoal.storage_node.rebuild import rebuild_shard
from shoal.storage_node.shard_store import ShardCorrupt, ShardMeta, ShardStore, ShardWriter

log = logging.getLogger(__name__)

SPILL_BYTES = 4 * MiB
MAX_SHARD_BYTES = 1024 * MiB
LIST_BATCH = 1000

Context = grpc.aio.ServicerContext[Any, Any]


class StorageNodeServicer(pb_grpc.StorageNodeServicer):
    """The StorageNode gRPC service over one ShardStore."""

    def __init__(
        self,
        store: ShardStore,
        node_id: str,
        repair_timeout_s: float = 10.0,
        transport: Transport | None = None,
    ) -> None:
        self.store = store
        self.node_id = node_id
        self.channels = NodeChannels(transport)
        self.repair_timeout_s = repair_timeout_s
        self.rebuilt = 0
        self.bytes_in = 0
        self.bytes_out = 0

    @unary
    async def PutShard(
        self, request_iterator: AsyncIterator[pb.PutShardRequest], context: Context
    ) -> pb.PutShardResponse:
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.HasField("header"):
            raise InvalidArgument("PutShard: the first message must carry the shard header")
        header = first.header
        if header.length > MAX_SHARD_BYTES:
            raise InvalidArgument(f"shard of {header.length} bytes exceeds {MAX_SHARD_BYTES}")
        if len(header.checksum) != 16:
            raise InvalidArgument("shard checksum must be 16 bytes of xxh3-128")
        meta = ShardMeta(header.shard_id, header.length, bytes(header.checksum))
        self.store.path_of(meta.shard_id)  # validates the id before any I/O
        buffered: list[bytes] = [first.data] if first.data else []
        size = len(first.data)
        writer: ShardWriter | None = None
        try:
            async for message in request_iterator:
                if writer is None:
                    buffered.append(message.data)
                    size += len(message.data)
                    if size > SPILL_BYTES:
                        writer = await asyncio.to_thread(self.store.begin_write, meta)
                        await asyncio.to_thread(_write_all, writer, buffered)
                        buffered = []
                else:
                    await asyncio.to_thread(writer.write, message.data)
            if writer is None:
                await asyncio.to_thread(self.store.write, meta, b"".join(buffered))
            else:
                await asyncio.to_thread(writer.commit)
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        self.bytes_in += meta.length
        metrics.SHARD_RECEIVED_BYTES.labels("put").inc(meta.length)
        metrics.SHARDS_WRITTEN.labels("put").inc()
        return pb.PutShardResponse(length=meta.length)

    @streaming
    async def GetShard(
        self, request: pb.GetShardRequest, context: Context
    ) -> AsyncIterator[pb.GetShardResponse]:
        try:
            meta, data = await asyncio.to_thread(self.store.read, request.shard_id)
        except ShardCorrupt as exc:
            metrics.CORRUPT_SHARDS.labels("read").inc()
            log.warning(
                "corrupt shard quarantined", extra={"shard": request.shard_id, "why": str(exc)}
            )
            raise CorruptData(str(exc)) from None
        sent = metrics.SHARD_SENT_BYTES.labels("get")
        view = memoryview(data)
        header = pb.ShardHeader(shard_id=meta.shard_id, length=meta.length, checksum=meta.checksum)
        first = view[:STREAM_CHUNK_BYTES]
        yield pb.GetShardResponse(header=header, data=bytes(first))
        sent.inc(len(first))
        for offset in range(STREAM_CHUNK_BYTES, len(view), STREAM_CHUNK_BYTES):
            chunk = view[offset : offset + STREAM_CHUNK_BYTES]
            yield pb.GetShardResponse(data=bytes(chunk))
            sent.inc(len(chunk))
        self.bytes_out += meta.length
        metrics.SHARDS_READ.inc()

    @unary
    async def DeleteShards(
        self, request: pb.DeleteShardsRequest, context: Context
    ) -> pb.DeleteShardsResponse:
        done = await asyncio.to_thread(self.store.delete, list(request.shard_ids))
        metrics.SHARDS_DELETED.inc(len(done))
        return pb.DeleteShardsResponse(deleted=len(done))

    @streaming
    async def ListShards(
        self, request: pb.ListShardsRequest, context: Context
    ) -> AsyncIterator[pb.ListShardsResponse]:
        inventory = await asyncio.to_thread(lambda: list(self.store.listing()))
        for start in range(0, len(inventory), LIST_BATCH):
            batch = inventory[start : start + LIST_BATCH]
            yield pb.ListShardsResponse(
                shards=[pb.ShardSummary(shard_id=s, length=n, mtime=m) for s, n, m in batch]
            )

    @unary
    async def RebuildShard(
        self, request: pb.RebuildShardRequest, context: Context
    ) -> pb.RebuildShardResponse:
        if not 1 <= request.k < request.n or request.shard_index >= request.n:
            raise InvalidArgument("RebuildShard: inconsistent k, n or shard index")
        timeout = min(request.timeout_s or self.repair_timeout_s, self.repair_timeout_s)
        length, read, checksum = await rebuild_shard(self.store, self.channels, request, timeout)
        self.rebuilt += 1
        self.bytes_in += read
        metrics.SHARD_RECEIVED_BYTES.labels("rebuild").inc(read)
        metrics.SHARDS_WRITTEN.labels("rebuild").inc()
        log.info(
            "shard rebuilt",
            extra={
                "version_id": request.version_id,
                "stripe": request.stripe_index,
                "shard": request.shard_index,
                "bytes_read": read,
            },
        )
        return pb.RebuildShardResponse(length=length, bytes_read=read, checksum=checksum)

    @unary
    async def LinkShards(
        self, request: pb.LinkShardsRequest, context: Context
    ) -> pb.LinkShardsResponse:
        pairs = [(link.source_id, link.target_id) for link in request.links]
        linked = await asyncio.to_thread(self.store.link, pairs)
        return pb.LinkShardsResponse(linked=linked)


def _write_all(writer: ShardWriter, pieces: list[bytes]) -> None:
    for piece in pieces:
        writer.write(piece)
