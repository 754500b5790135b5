"""The put pipeline: read -> stripe -> encode -> write n shards in parallel -> commit.

1. `BeginPut` gives an upload id, the redundancy, the write quorum, the stripe size and the
   placement of stripe 0; later placements come in batches from `PlaceStripes`.
2. The source is cut into stripes; each stripe is encoded (in a thread: the codec releases the
   GIL) into `n` shards with an xxh3-128 checksum each.
3. Shard `i` goes to placed node `i` with a streaming `PutShard`. A failed write is retried on
   the next handoff node that holds no shard of the stripe yet. A stripe counts once at least
   `write_quorum` shards are durable on distinct nodes; below that the put fails.
4. At most `max_inflight_stripes` stripes are in flight, which bounds memory to about
   `max_inflight_stripes * stripe_bytes * n / k` whatever the object's size.
5. Written stripes are reported in batches; `CommitPut` makes the object visible atomically.
   Any failure or cancellation aborts the upload so its shards are collected.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import grpc.aio

from shoal.common.channels import NodeChannels
from shoal.common.checksum import StreamingChecksum, shard_checksum
from shoal.common.erasure import StripeCodec
from shoal.common.errors import InsufficientNodes, ShoalError
from shoal.common.malloc_tuning import keep_shard_buffers
from shoal.common.names import shard_id
from shoal.common.rpc import to_shoal_error
from shoal.common.shard_transfer import put_shard
from shoal.rpc.v1 import common_pb2 as common
from shoal.rpc.v1 import coordinator_pb2 as cpb

log = logging.getLogger(__name__)

REPORT_BATCH = 64
PLACE_BATCH = 32


@dataclass(frozen=True)
class PutTuning:
    """Client-side knobs of the put pipeline."""

    # 8 measured 1-9% faster than 4 for 64 MiB puts (same cluster, clients alternating, fresh
    # keys; 12 no better) for more peak memory (a 1 GiB put and get: 115 -> 153 MiB).
    max_inflight_stripes: int = 8
    shard_timeout_s: float = 30.0


@dataclass
class UploadState:
    """Bookkeeping of one upload in progress."""

    begin: cpb.BeginPutResponse
    placements: dict[int, list[common.NodeInfo]] = field(default_factory=dict)
    written: dict[int, cpb.WrittenStripe] = field(default_factory=dict)
    reported_up_to: int = 0
    degraded: int = 0


CoordinatorCall = Callable[[str, object], Awaitable[object]]


class StripeWriter:
    """Writes the shards of stripes to nodes, with handoffs and the write-quorum rule."""

    def __init__(
        self, state: UploadState, channels: NodeChannels, call: CoordinatorCall, tuning: PutTuning
    ) -> None:
        self.state = state
        self.channels = channels
        self.call = call
        self.tuning = tuning
        begin = state.begin
        self.codec = StripeCodec(begin.k, begin.n)
        self.state.placements[0] = list(begin.first_stripe.nodes)
        self._placing: dict[int, asyncio.Future[None]] = {}
        keep_shard_buffers()  # a no-op in a user program unless it opted in (malloc_tuning)

    async def placement(self, index: int) -> list[common.NodeInfo]:
        """Candidate nodes of stripe `index` (placed first, then handoffs), fetched in batches."""
        while index not in self.state.placements:
            batch_start = index - index % PLACE_BATCH
            pending = self._placing.get(batch_start)
            if pending is None:
                pending = asyncio.get_running_loop().create_future()
                self._placing[batch_start] = pending
                try:
                    reply = await self.call(
                        "PlaceStripes",
                        cpb.PlaceStripesRequest(
                            upload_id=self.state.begin.upload_id,
                            first_stripe=batch_start,
                            count=PLACE_BATCH,
                        ),
                    )
                    assert isinstance(reply, cpb.PlaceStripesResponse)
                    for placed in reply.stripes:
                        self.state.placements[placed.index] = list(placed.nodes)
                    pending.set_result(None)
                except BaseException as exc:
                    pending.set_exception(exc)
                    del self._placing[batch_start]
                    raise
            else:
                await asyncio.shield(pending)
        return self.state.placements.pop(index)

    async def write_stripe(self, index: int, stripe: memoryview) -> None:
        """Encode and store one stripe; raises when fewer than write_quorum shards land."""
        begin = self.state.begin
        shards, checksums = await asyncio.to_thread(_encode_and_hash, self.codec, stripe)
        candidates = await self.placement(index)
        placed = candidates[: begin.n]
        handoffs = collections.deque(candidates[begin.n :])
        failures: list[str] = []
        version = begin.upload_id

        async def write_one(shard_index: int) -> cpb.WrittenShard | None:
            node = placed[shard_index] if shard_index < len(placed) else None
            while True:
                if node is None:
                    if not handoffs:
                        return None
                    node = handoffs.popleft()
                try:
                    await put_shard(
                        self.channels,
                        node.address,
                        shard_id(version, index, shard_index),
                        shards[shard_index],
                        checksums[shard_index],
                        self.tuning.shard_timeout_s,
                    )
                    return cpb.WrittenShard(
                        shard_index=shard_index,
                        node_id=node.node_id,
                        length=len(shards[shard_index]),
                        checksum=checksums[shard_index],
                    )
                except grpc.aio.AioRpcError as exc:
                    why = to_shoal_error(exc)
                    failures.append(f"{node.node_id} ({why})")
                    log.info(
                        "shard write failed, trying a handoff",
                        extra={"node_id": node.node_id, "stripe": index, "shard": shard_index},
                    )
                    node = None

        results = await asyncio.gather(*(write_one(i) for i in range(begin.n)))
        written = [r for r in results if r is not None]
        if len(written) < begin.write_quorum:
            raise InsufficientNodes(
                f"stripe {index}: {len(written)} of {begin.n} shards written, write quorum is "
                f"{begin.write_quorum}; failed: {', '.join(failures) or 'no live nodes left'}",
                needed=begin.write_quorum,
                available=len(written),
            )
        if len(written) < begin.n:
            self.state.degraded += 1
        self.state.written[index] = cpb.WrittenStripe(
            index=index, size=len(stripe), shard_length=len(shards[0]), shards=written
        )


def _encode_and_hash(
    codec: StripeCodec, stripe: memoryview
) -> tuple[list[bytes | memoryview], list[bytes]]:
    shards = codec.encode(stripe)
    return shards, [shard_checksum(s) for s in shards]


async def run_put(
    *,
    begin: cpb.BeginPutResponse,
    stripes: AsyncIterator[memoryview],
    channels: NodeChannels,
    call: CoordinatorCall,
    tuning: PutTuning,
    metadata: Callable[[], Mapping[str, str]] | None = None,
) -> cpb.CommitPutResponse:
    """Drive an upload that `BeginPut` started; commits it or aborts it. `metadata` is
    called once every stripe is written, so it may depend on the data read."""
    state = UploadState(begin)
    writer = StripeWriter(state, channels, call, tuning)
    etag = StreamingChecksum()
    size = 0
    count = 0
    slots = asyncio.Semaphore(tuning.max_inflight_stripes)

    async def write(index: int, stripe: memoryview) -> None:
        try:
            await writer.write_stripe(index, stripe)
        finally:
            slots.release()

    async def report_ready() -> None:
        ready = []
        while state.reported_up_to in state.written:
            ready.append(state.written.pop(state.reported_up_to))
            state.reported_up_to += 1
        if ready:
            await call(
                "ReportStripes", cpb.ReportStripesRequest(upload_id=begin.upload_id, stripes=ready)
            )

    try:
        async with asyncio.TaskGroup() as tasks:
            async for stripe in stripes:
                await slots.acquire()
                etag.update(stripe)
                size += len(stripe)
                tasks.create_task(write(count, stripe))
                count += 1
                if len(state.written) >= REPORT_BATCH:
                    await report_ready()
        remaining = sorted(state.written.values(), key=lambda s: s.index)
        reply = await call(
            "CommitPut",
            cpb.CommitPutRequest(
                upload_id=begin.upload_id,
                size=size,
                etag=etag.hexdigest(),
                stripe_count=count,
                stripes=remaining,
                metadata=metadata() if metadata is not None else {},
            ),
        )
        assert isinstance(reply, cpb.CommitPutResponse)
        return reply
    except BaseException as exc:
        await _abort(call, begin.upload_id, exc)
        leaf = first_shoal_error(exc)
        if leaf is not None and leaf is not exc:
            raise leaf from None
        raise


def first_shoal_error(exc: BaseException) -> ShoalError | None:
    """The first ShoalError inside `exc` (which may be a nested exception group)."""
    if isinstance(exc, ShoalError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = first_shoal_error(inner)
            if found is not None:
                return found
    return None


async def _abort(call: CoordinatorCall, upload_id: str, cause: BaseException) -> None:
    """Best-effort AbortPut, shielded so a cancelled put still cleans up."""
    try:
        await asyncio.shield(
            call("AbortPut", cpb.AbortPutRequest(upload_id=upload_id, reason=type(cause).__name__))
        )
    except (ShoalError, asyncio.CancelledError):
        log.warning("could not abort upload %s; the coordinator expires it later", upload_id)
