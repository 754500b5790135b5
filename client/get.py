"""The get pipeline: locate -> fetch k shards per stripe (hedged) -> verify -> decode -> yield.

Per stripe, the `k` data shards are asked for first, from nodes the coordinator believes are
up; zfec is systematic, so when they all arrive the stripe is their concatenation and nothing
is decoded. A shard that fails (node down, timeout, checksum mismatch, missing) is replaced by
the next candidate, parity shards included; a request still outstanding after `hedge_after_s`
gets one extra parity request raced against it. Every shard is checked against the checksum in
the manifest; mismatches are reported to the coordinator and never returned.

When fewer than `k` shards of a stripe can be had, `Unavailable` names the object, the stripe,
the count found versus needed, and why each missing shard is missing. All fetches run in
parallel with a per-shard timeout, so this answer comes within a bounded time.

Shard bytes are not copied on the way: each arrives as a view into its gRPC message, is
verified in place, and a stripe is a list of such views (cut to the stripe's size, decoded
blocks in a degraded read). `views` hands them on as they are, so `get` copies every byte once,
into the result, and `download` none; `stripes` joins each stripe into bytes (one copy).

A client given the data directories of storage nodes on its host reads those nodes' shards
from their files instead of asking the nodes (short-circuit reads, client/local_reads.py); the
bytes are verified against the manifest the same way, and any file it cannot use is asked of
its node as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass

import grpc.aio

from shoal.client.local_reads import LocalShardFiles
from shoal.common.channels import NodeChannels
from shoal.common.erasure import StripeCodec, cut_views
from shoal.common.errors import CorruptData, InvalidArgument, NotFound, ShoalError, Unavailable
from shoal.common.malloc_tuning import keep_shard_buffers
from shoal.common.names import shard_id
from shoal.common.rpc import to_shoal_error
from shoal.common.shard_transfer import gather_k, get_shard_view, verify
from shoal.common.units import format_duration
from shoal.rpc.v1 import common_pb2 as common
from shoal.rpc.v1 import coordinator_pb2 as cpb

log = logging.getLogger(__name__)

LOCATE_PAGE = 256
# How long a node whose shard file could not be read in time is read through the node.
LOCAL_SUSPEND_S = 30.0


@dataclass(frozen=True)
class GetTuning:
    """Client-side knobs of the get pipeline."""

    shard_timeout_s: float = 4.0
    hedge_after_s: float = 1.0
    readahead_stripes: int = 4


class UnreachableNodes:
    """Node addresses a client recently failed to reach (refused, reset or timed out), shared
    by all its readers: a get that starts right after a node died asks that node last, without
    first paying a failed attempt per stripe of its read-ahead window, until the coordinator
    has noticed (its Locate replies then say the node is down). An entry expires after
    `forget_after_s` or when a read from that node succeeds."""

    def __init__(
        self, forget_after_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.forget_after_s = forget_after_s
        self._clock = clock
        self._until: dict[str, float] = {}

    def add(self, address: str) -> None:
        self._until[address] = self._clock() + self.forget_after_s

    def discard(self, address: str) -> None:
        self._until.pop(address, None)

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str) or address not in self._until:
            return False
        if self._clock() >= self._until[address]:
            del self._until[address]
            return False
        return True


class ShardFailure(Exception):
    """Why one shard could not be used (internal; becomes part of an Unavailable message)."""

    def __init__(self, reason: str, *, corrupt: bool = False, missing: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.corrupt = corrupt
        self.missing = missing


CoordinatorCall = Callable[[str, object], Awaitable[object]]


class ObjectReader:
    """Reads the stripes of one object version."""

    def __init__(
        self,
        located: cpb.LocateResponse,
        channels: NodeChannels,
        call: CoordinatorCall,
        tuning: GetTuning,
        unreachable: UnreachableNodes | None = None,
        local: LocalShardFiles | None = None,
    ) -> None:
        self.info = located.info
        self.channels = channels
        self.call = call
        self.tuning = tuning
        self.codec = StripeCodec(self.info.k, self.info.n) if self.info.stripe_count else None
        self._pages: dict[int, common.StripeLocation] = {s.index: s for s in located.stripes}
        # Nodes found unreachable or timed out (by this reader, or by others of the same
        # client when shared): tried last for the next stripes.
        self._unreachable = unreachable if unreachable is not None else UnreachableNodes()
        # Shard files of nodes on this host, read directly when usable (client/local_reads.py).
        self._local = local
        keep_shard_buffers()  # a no-op in a user program unless it opted in (malloc_tuning)

    async def _location(self, index: int) -> common.StripeLocation:
        if index not in self._pages:
            reply = await self.call(
                "Locate",
                cpb.LocateRequest(
                    bucket=self.info.bucket,
                    key=self.info.key,
                    version_id=self.info.version_id,
                    first_stripe=index,
                    max_stripes=LOCATE_PAGE,
                ),
            )
            assert isinstance(reply, cpb.LocateResponse)
            self._pages = {s.index: s for s in reply.stripes}
            if index not in self._pages:
                raise NotFound(f"object {self.info.bucket}/{self.info.key}: stripe {index} missing")
        return self._pages[index]

    async def stripes(self, first: int, last: int) -> AsyncGenerator[bytes, None]:
        """Yield stripes first..last (inclusive) in order, fetching a few ahead."""
        async with contextlib.aclosing(self.stripe_views(first, last)) as stripes:
            async for views in stripes:
                yield b"".join(views)

    async def stripe_views(self, first: int, last: int) -> AsyncGenerator[list[memoryview], None]:
        """Like `stripes`, each stripe as views of the received shards (nothing copied)."""
        if type(self).stripes is not ObjectReader.stripes:
            # A subclass with stripes of its own (e.g. an inline object) reads through them.
            async with contextlib.aclosing(self.stripes(first, last)) as own:
                async for stripe in own:
                    yield [memoryview(stripe)]
            return
        window: list[asyncio.Task[list[memoryview]]] = []
        next_index = first
        try:
            while next_index <= last or window:
                while next_index <= last and len(window) < max(self.tuning.readahead_stripes, 1):
                    location = await self._location(next_index)
                    window.append(asyncio.create_task(self.read_stripe_views(location)))
                    next_index += 1
                yield await window.pop(0)
        finally:
            for task in window:
                task.cancel()
            for task in window:
                with contextlib.suppress(BaseException):
                    await task

    def range_end(self, offset: int, length: int | None) -> int:
        """Where a read of `length` bytes (to the end when None) from `offset` stops, cut to
        the object's size; InvalidArgument when `offset` is beyond it."""
        size = self.info.size
        if offset > size:
            raise InvalidArgument(f"offset {offset} is beyond the object's size of {size} bytes")
        return size if length is None else min(size, offset + length)

    async def views(
        self, offset: int = 0, length: int | None = None
    ) -> AsyncGenerator[list[memoryview], None]:
        """Yield `length` bytes from `offset` (to the end when None), stripe by stripe, as
        views of the received shards: join them once, or write them out, without a copy."""
        info = self.info
        end = self.range_end(offset, length)
        if end <= offset:
            return
        first = offset // info.stripe_bytes
        last = (end - 1) // info.stripe_bytes
        position = first * info.stripe_bytes
        # aclosing: stopping early must cancel the read-ahead at once, not when collected.
        async with contextlib.aclosing(self.stripe_views(first, last)) as stripes:
            async for views in stripes:
                size = sum(len(v) for v in views)
                yield cut_views(views, max(offset - position, 0), min(end - position, size))
                position += size

    async def _fetch(
        self, stripe: common.StripeLocation, shard: common.ShardLocation
    ) -> memoryview:
        if not shard.address:
            raise ShardFailure("node unknown to the coordinator")
        sid = shard_id(self.info.version_id, stripe.index, shard.shard_index)
        local = self._local
        if (
            local is not None
            and shard.state == "ok"
            and shard.node_state != "down"
            and local.holds(shard.node_id)
        ):
            try:
                own = await asyncio.wait_for(
                    asyncio.to_thread(local.read, shard.node_id, sid, shard.length, shard.checksum),
                    self.tuning.shard_timeout_s,
                )
            except TimeoutError:
                # A hung disk: ask the node this time, and for a while after.
                local.suspend(shard.node_id, LOCAL_SUSPEND_S)
                own = None
            if own is not None:
                return memoryview(own)
        try:
            data = await get_shard_view(
                self.channels, shard.address, sid, self.tuning.shard_timeout_s
            )
        except ValueError as exc:
            raise ShardFailure(f"malformed reply ({exc})") from None
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                self._unreachable.add(shard.address)
                raise ShardFailure(f"timeout after {self.tuning.shard_timeout_s:g}s") from None
            if code == grpc.StatusCode.UNAVAILABLE:
                self._unreachable.add(shard.address)
                raise ShardFailure(_down_reason(shard)) from None
            error = to_shoal_error(exc)
            if isinstance(error, CorruptData):
                raise ShardFailure("checksum mismatch on disk", corrupt=True) from None
            if isinstance(error, NotFound):
                raise ShardFailure("missing on node", missing=True) from None
            raise ShardFailure(str(error)) from None
        if not verify(data, shard.length, shard.checksum):
            raise ShardFailure("checksum mismatch", corrupt=True)
        self._unreachable.discard(shard.address)
        return data

    def _candidates(self, stripe: common.StripeLocation) -> list[common.ShardLocation]:
        """Shards in the order to try: healthy data shards, healthy parity, then the doubtful
        (including nodes this client could not reach for an earlier stripe: the coordinator
        may not have noticed yet, and asking them first would cost every stripe a failed
        attempt before its parity is fetched)."""

        # With k = 1 every shard is a whole replica: one whose file is on this host is read
        # without a transfer. (For k > 1 the data shards come first: they need no decode.)
        local = self._local if self.info.k == 1 else None

        def rank(shard: common.ShardLocation) -> tuple[int, int, int]:
            doubtful = (
                shard.state != "ok"
                or shard.node_state == "down"
                or shard.address in self._unreachable
            )
            remote = local is None or not local.holds(shard.node_id)
            return (1 if doubtful else 0, 1 if remote else 0, shard.shard_index)

        return sorted(stripe.shards, key=rank)

    async def read_stripe(self, stripe: common.StripeLocation) -> bytes:
        """Return one stripe's bytes, or raise Unavailable/CorruptData saying what is missing."""
        return b"".join(await self.read_stripe_views(stripe))

    async def read_stripe_views(self, stripe: common.StripeLocation) -> list[memoryview]:
        """One stripe as views of its verified data shards (or decoded blocks), cut to the
        stripe's size; raises Unavailable/CorruptData saying what is missing."""
        assert self.codec is not None
        k = self.info.k
        got, failures, corrupt = await self._gather(stripe)
        if corrupt:
            await self._report_corrupt(stripe, corrupt)
        if len(got) < k:
            message = self._explain(stripe, got, failures)
            if len(got) + sum(1 for _s, why in corrupt if "checksum" in why) >= k:
                # Enough nodes answered; bad bytes, not missing nodes, are why it fails.
                raise CorruptData(message)
            raise Unavailable(message)
        if all(i in got for i in range(k)):
            return cut_views([got[i] for i in range(k)], 0, stripe.size)
        chosen: dict[int, bytes | memoryview] = {i: got[i] for i in sorted(got)[:k]}
        return await asyncio.to_thread(self.codec.decode_blocks, chosen, stripe.size)

    async def _gather(
        self, stripe: common.StripeLocation
    ) -> tuple[dict[int, memoryview], dict[int, str], list[tuple[common.ShardLocation, str]]]:
        """Fetch until k good shards arrive or candidates run out.

        Returns (shards by index, failure reason by index, corrupt shards with reasons).
        """

        async def fetch(shard: common.ShardLocation) -> memoryview:
            return await self._fetch(stripe, shard)

        successes, failures = await gather_k(
            self._candidates(stripe), self.info.k, fetch, self.tuning.hedge_after_s
        )
        got = {shard.shard_index: data for shard, data in successes}
        reasons: dict[int, str] = {}
        corrupt: list[tuple[common.ShardLocation, str]] = []
        for shard, error in failures:
            if not isinstance(error, ShardFailure):
                raise error
            reasons[shard.shard_index] = f"{shard.node_id} ({error.reason})"
            if error.corrupt or error.missing:
                corrupt.append((shard, error.reason))
        return got, reasons, corrupt

    def _explain(
        self, stripe: common.StripeLocation, got: dict[int, memoryview], failures: dict[int, str]
    ) -> str:
        held = {s.shard_index for s in stripe.shards}
        missing = [failures[i] for i in sorted(failures)]
        missing += [f"shard {i} (never written)" for i in range(self.info.n) if i not in held]
        return (
            f"object {self.info.bucket}/{self.info.key} stripe {stripe.index}: have "
            f"{len(got)}/{self.info.n} shards, need {self.info.k}; missing on {', '.join(missing)}"
        )

    async def _report_corrupt(
        self, stripe: common.StripeLocation, shards: list[tuple[common.ShardLocation, str]]
    ) -> None:
        request = cpb.ReportCorruptShardsRequest(
            shards=[
                cpb.CorruptShard(
                    version_id=self.info.version_id,
                    stripe_index=stripe.index,
                    shard_index=s.shard_index,
                    node_id=s.node_id,
                    reason=reason,
                )
                for s, reason in shards
            ]
        )
        try:
            await self.call("ReportCorruptShards", request)
        except ShoalError as exc:
            log.warning("could not report corrupt shards: %s", exc)


def _down_reason(shard: common.ShardLocation) -> str:
    if shard.node_state == "down":
        return f"down {format_duration(shard.node_down_for_s)}"
    return "unreachable"
