"""Moving one shard to or from a storage node: the streaming PutShard/GetShard calls that the
client, repairing nodes and the coordinator all use."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio

from shoal.common.channels import NodeChannels
from shoal.common.checksum import shard_checksum
from shoal.common.rpc import STREAM_CHUNK_BYTES
from shoal.rpc.v1 import storage_pb2 as spb


async def _shard_messages(
    sid: str, data: bytes | memoryview, checksum: bytes
) -> AsyncIterator[spb.PutShardRequest]:
    view = memoryview(data)
    header = spb.ShardHeader(shard_id=sid, length=len(view), checksum=checksum)
    yield spb.PutShardRequest(header=header, data=bytes(view[:STREAM_CHUNK_BYTES]))
    for offset in range(STREAM_CHUNK_BYTES, len(view), STREAM_CHUNK_BYTES):
        yield spb.PutShardRequest(data=bytes(view[offset : offset + STREAM_CHUNK_BYTES]))


async def put_shard(
    channels: NodeChannels,
    address: str,
    sid: str,
    data: bytes | memoryview,
    checksum: bytes,
    timeout_s: float,
) -> None:
    """Store a shard on the node at `address`; raises grpc.aio.AioRpcError on failure.

    An UNAVAILABLE failure resets the channel so the next call reconnects at once.
    """
    stub = channels.stub(address)
    try:
        await stub.PutShard(_shard_messages(sid, data, checksum), timeout=timeout_s)
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            await channels.reset(address)
        raise


async def get_shard(channels: NodeChannels, address: str, sid: str, timeout_s: float) -> bytes:
    """Fetch a shard's bytes (the node verified them); raises grpc.aio.AioRpcError.

    A first UNAVAILABLE is retried once on a fresh channel: the cached one may still be in
    reconnect backoff from before the node restarted.
    """
    for attempt in (1, 2):
        stub = channels.stub(address)
        try:
            call = stub.GetShard(spb.GetShardRequest(shard_id=sid), timeout=timeout_s)
            return b"".join([message.data async for message in call])
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == 2:
                raise
            await channels.reset(address)
    raise AssertionError("unreachable")


def verify(data: bytes, length: int, checksum: bytes) -> bool:
    """True when `data` has the recorded length and checksum."""
    return len(data) == length and shard_checksum(data) == checksum


S = TypeVar("S")


async def gather_k(
    candidates: Sequence[S],
    k: int,
    fetch: Callable[[S], Coroutine[Any, Any, bytes]],
    hedge_after_s: float,
) -> tuple[list[tuple[S, bytes]], list[tuple[S, Exception]]]:
    """Fetch from `candidates` (best first) until `k` succeed or candidates run out.

    Starts `k` fetches; each failure starts the next candidate, and when no fetch has
    finished for `hedge_after_s` one more is raced against the slow ones. Outstanding fetches
    are cancelled once `k` have succeeded. Returns (successes, failures) with the candidate
    each came from; `fetch` exceptions are collected, never raised.
    """
    queue = list(candidates)
    got: list[tuple[S, bytes]] = []
    failed: list[tuple[S, Exception]] = []
    running: dict[asyncio.Task[bytes], S] = {}

    def launch() -> None:
        if queue:
            candidate = queue.pop(0)
            running[asyncio.create_task(fetch(candidate))] = candidate

    for _ in range(k):
        launch()
    try:
        while len(got) < k and running:
            done, _pending = await asyncio.wait(
                running, timeout=hedge_after_s, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                launch()  # hedge: a fetch is overdue
            for task in done:
                candidate = running.pop(task)
                try:
                    got.append((candidate, task.result()))
                except Exception as exc:
                    failed.append((candidate, exc))
                    if len(got) + len(running) < k:
                        launch()
    finally:
        for task in running:
            task.cancel()
        for task in list(running):
            with contextlib.suppress(BaseException):
                await task
    return got, failed
