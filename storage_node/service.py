"""StorageNodeServicer: translates StorageNode RPCs to ShardStore calls, nothing more.

`add_storage_node_servicer` registers it with the shard messages parsed and written by
`common.shard_transfer` instead of protobuf objects: a PutShard message arrives as a view of
the received bytes and a GetShard message is written straight from the bytes read from disk
(protobuf would copy each shard twice more on either path).

Disk work runs in threads (`asyncio.to_thread`) so the event loop keeps serving. Shards up to
`SPILL_BYTES` are buffered and written in one thread hop (one writev of the received pieces,
never joined); larger ones stream to the temp file as they arrive, so memory per call stays
bounded whatever the shard size. GetShard reads the file in message-sized pieces straight into
the bytes of each message (verified before the last piece goes out), so a read holds one
message in memory, not the shard.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc.aio

from shoal.common.channels import NodeChannels
from shoal.common.errors import CorruptData, InvalidArgument
from shoal.common.rpc import streaming, unary
from shoal.common.shard_transfer import (
    MalformedMessage,
    ShardMessage,
    decode_shard_message,
    encode_shard_message,
)
from shoal.common.transport import Transport
from shoal.common.units import MiB
from shoal.rpc.v1 import storage_pb2 as pb
from shoal.storage_node import metrics
from shoal.storage_node.rebuild import rebuild_shard
from shoal.storage_node.shard_store import (
    ShardCorrupt,
    ShardMeta,
    ShardReader,
    ShardStore,
    ShardWriter,
)

log = logging.getLogger(__name__)

SPILL_BYTES = 4 * MiB
# Shard bytes per GetShard message: a shard up to this size goes out as one message, read from
# disk in one piece (a message costs a round of wake-ups and copies on both sides: at 16 MiB
# stripes, 4 MiB shards in one message instead of four took 12% less CPU per get).
GET_MESSAGE_BYTES = 4 * MiB
MAX_SHARD_BYTES = 1024 * MiB
LIST_BATCH = 1000

Context = grpc.aio.ServicerContext[Any, Any]


SERVICE_NAME = "shoal.rpc.v1.StorageNode"


class StorageNodeServicer:
    """The StorageNode gRPC service over one ShardStore (register it with
    `add_storage_node_servicer`)."""

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
        self, request_iterator: AsyncIterator[ShardMessage], context: Context
    ) -> pb.PutShardResponse:
        try:
            return await self._put_shard(request_iterator)
        except MalformedMessage as exc:
            raise InvalidArgument(f"PutShard: malformed message ({exc})") from None

    async def _put_shard(
        self, request_iterator: AsyncIterator[ShardMessage]
    ) -> pb.PutShardResponse:
        first = await anext(aiter(request_iterator), None)
        if first is None or first.header is None:
            raise InvalidArgument("PutShard: the first message must carry the shard header")
        header = first.header
        if header.length > MAX_SHARD_BYTES:
            raise InvalidArgument(f"shard of {header.length} bytes exceeds {MAX_SHARD_BYTES}")
        if len(header.checksum) != 16:
            raise InvalidArgument("shard checksum must be 16 bytes of xxh3-128")
        meta = ShardMeta(header.shard_id, header.length, bytes(header.checksum))
        self.store.path_of(meta.shard_id)  # validates the id before any I/O
        # Views of the received messages: nothing is copied before the write.
        data = first.data
        buffered: list[memoryview] = [data] if data else []
        size = len(data)
        writer: ShardWriter | None = None
        try:
            async for message in request_iterator:
                data = message.data
                if writer is None:
                    buffered.append(data)
                    size += len(data)
                    if size > SPILL_BYTES:
                        writer = await asyncio.to_thread(self.store.begin_write, meta, buffered)
                        buffered = []
                else:
                    await asyncio.to_thread(writer.write, data)
            if writer is None:
                await asyncio.to_thread(self.store.write_pieces, meta, buffered)
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
    async def GetShard(self, request: pb.GetShardRequest, context: Context) -> AsyncIterator[bytes]:
        """Yields encoded GetShardResponse messages (`encode_shard_message`)."""
        try:
            reader, data = await asyncio.to_thread(
                _open_and_read, self.store, request.shard_id, GET_MESSAGE_BYTES
            )
        except ShardCorrupt as exc:
            raise _corrupt(request.shard_id, exc) from None
        try:
            meta = reader.meta
            sent = metrics.SHARD_SENT_BYTES.labels("get")
            header = pb.ShardHeader(
                shard_id=meta.shard_id, length=meta.length, checksum=meta.checksum
            )
            yield encode_shard_message(header, data)
            sent.inc(len(data))
            while not reader.done:
                try:
                    data = await asyncio.to_thread(reader.read, GET_MESSAGE_BYTES)
                except ShardCorrupt as exc:
                    raise _corrupt(request.shard_id, exc) from None
                yield encode_shard_message(None, data)
                sent.inc(len(data))
        finally:
            reader.close()
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


def add_storage_node_servicer(servicer: StorageNodeServicer, server: grpc.aio.Server) -> None:
    """Register `servicer` on `server` (what the generated `add_StorageNodeServicer_to_server`
    does, with raw shard messages for PutShard and GetShard; the wire format is the same)."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "PutShard": grpc.stream_unary_rpc_method_handler(
            servicer.PutShard,
            request_deserializer=decode_shard_message,
            response_serializer=pb.PutShardResponse.SerializeToString,
        ),
        "GetShard": grpc.unary_stream_rpc_method_handler(
            servicer.GetShard,
            request_deserializer=pb.GetShardRequest.FromString,
            response_serializer=None,  # the servicer yields encoded messages
        ),
        "DeleteShards": grpc.unary_unary_rpc_method_handler(
            servicer.DeleteShards,
            request_deserializer=pb.DeleteShardsRequest.FromString,
            response_serializer=pb.DeleteShardsResponse.SerializeToString,
        ),
        "ListShards": grpc.unary_stream_rpc_method_handler(
            servicer.ListShards,
            request_deserializer=pb.ListShardsRequest.FromString,
            response_serializer=pb.ListShardsResponse.SerializeToString,
        ),
        "RebuildShard": grpc.unary_unary_rpc_method_handler(
            servicer.RebuildShard,
            request_deserializer=pb.RebuildShardRequest.FromString,
            response_serializer=pb.RebuildShardResponse.SerializeToString,
        ),
        "LinkShards": grpc.unary_unary_rpc_method_handler(
            servicer.LinkShards,
            request_deserializer=pb.LinkShardsRequest.FromString,
            response_serializer=pb.LinkShardsResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


def _corrupt(shard_id: str, exc: ShardCorrupt) -> CorruptData:
    """Count and log a shard found corrupt (already quarantined); the error to answer with."""
    metrics.CORRUPT_SHARDS.labels("read").inc()
    log.warning("corrupt shard quarantined", extra={"shard": shard_id, "why": str(exc)})
    return CorruptData(str(exc))


def _open_and_read(store: ShardStore, shard_id: str, size: int) -> tuple[ShardReader, bytes]:
    """Open a shard and read its first piece (one thread hop; the whole shard when it fits)."""
    reader = store.open_reader(shard_id, requested=True)
    try:
        return reader, reader.read(size)
    except BaseException:
        reader.close()
        raise
