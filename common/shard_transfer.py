"""Moving one shard to or from a storage node: the streaming PutShard/GetShard calls that the
client, repairing nodes and the coordinator all use.

The shard bytes skip protobuf message objects on both sides of the wire. `PutShardRequest` and
`GetShardResponse` have the same layout (1 = header, 2 = data), so one encoder and one decoder
serve both: a message is written as its protobuf encoding straight from the sender's buffer
(`b"".join` of a few header bytes and the shard: one copy, where building the message from a
memoryview and serializing it takes four), and parsed without copying its payload, which comes
back as a memoryview into the received message (protobuf would copy it twice). The client
uses them for its calls, the node registers them as the (de)serializers of its two shard
methods (`storage_node.service.add_storage_node_servicer`); both speak storage.proto's wire
format, which this module reads and writes for those two messages only.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import DecodeError

from shoal.common.channels import NodeChannels
from shoal.common.checksum import Buffer, shard_checksum
from shoal.common.rpc import MAX_MESSAGE_BYTES
from shoal.common.units import MiB
from shoal.rpc.v1 import storage_pb2 as spb

PUT_SHARD_METHOD = "/shoal.rpc.v1.StorageNode/PutShard"
GET_SHARD_METHOD = "/shoal.rpc.v1.StorageNode/GetShard"
# Shard bytes per PutShard message. Larger messages cost less per byte (each message is a
# round of wake-ups on both sides); a 1 MiB shard, (4, 6) with 4 MiB stripes, is one message.
PUT_MESSAGE_BYTES = 4 * MiB
assert PUT_MESSAGE_BYTES + 4096 <= MAX_MESSAGE_BYTES

# Protobuf wire-format keys (field number << 3 | wire type 2, length-delimited) of the fields
# of PutShardRequest / GetShardResponse: 1 = header (ShardHeader), 2 = data (bytes).
_HEADER_KEY = b"\x0a"
_DATA_KEY = b"\x12"


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(view: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(view) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = view[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def encode_shard_message(header: spb.ShardHeader | None, data: Buffer) -> bytes:
    """The wire encoding of `PutShardRequest(header=header, data=data)`, which is also that of
    `GetShardResponse(header=header, data=data)`, copying `data` once."""
    parts: list[Buffer] = []
    if header is not None:
        encoded = header.SerializeToString()
        parts += [_HEADER_KEY, _varint(len(encoded)), encoded]
    if len(data):
        parts += [_DATA_KEY, _varint(len(data)), data]
    return b"".join(parts)


@dataclass(frozen=True)
class ShardMessage:
    """One PutShard or GetShard message: the header (first message only) and a view of its
    data."""

    header: spb.ShardHeader | None
    data: memoryview


class MalformedMessage(ValueError):
    """A shard message that is not a valid PutShardRequest/GetShardResponse encoding."""


def decode_shard_message(raw: bytes) -> ShardMessage:
    """Parse a `PutShardRequest` or `GetShardResponse` encoding without copying its data
    (unknown fields skipped); MalformedMessage when it is malformed."""
    try:
        return _decode(raw)
    except MalformedMessage:
        raise
    except ValueError as exc:
        raise MalformedMessage(str(exc)) from None


def _decode(raw: bytes) -> ShardMessage:
    view = memoryview(raw)
    header: spb.ShardHeader | None = None
    data = view[0:0]
    pos = 0
    while pos < len(view):
        key, pos = _read_varint(view, pos)
        wire_type = key & 7
        if wire_type == 0:
            _value, pos = _read_varint(view, pos)
            continue
        if wire_type in (1, 5):
            pos += 8 if wire_type == 1 else 4
            continue
        if wire_type != 2:
            raise ValueError(f"unsupported wire type {wire_type}")
        size, pos = _read_varint(view, pos)
        if pos + size > len(view):
            raise ValueError("field runs past the end of the message")
        field = key >> 3
        if field == 1:
            try:
                header = spb.ShardHeader.FromString(bytes(view[pos : pos + size]))
            except DecodeError as exc:
                raise ValueError(f"malformed shard header ({exc})") from None
        elif field == 2:
            data = view[pos : pos + size]
        pos += size
    if pos != len(view):
        raise ValueError("message ends inside a field")
    return ShardMessage(header, data)


@dataclass(frozen=True)
class _RawCalls:
    put: grpc.aio.StreamUnaryMultiCallable[bytes, spb.PutShardResponse]
    get: grpc.aio.UnaryStreamMultiCallable[spb.GetShardRequest, ShardMessage]


# Per channel of NodeChannels (a reset channel gets fresh calls): the two shard methods with the
# (de)serializers above, on the same channel, hence the same interceptors, token and TLS.
_raw_calls: weakref.WeakKeyDictionary[object, _RawCalls] = weakref.WeakKeyDictionary()


def _calls(channels: NodeChannels, address: str) -> _RawCalls:
    channel = channels.channel(address)
    calls = _raw_calls.get(channel)
    if calls is None:
        calls = _RawCalls(
            put=channel.stream_unary(
                PUT_SHARD_METHOD,
                request_serializer=None,
                response_deserializer=spb.PutShardResponse.FromString,
            ),
            get=channel.unary_stream(
                GET_SHARD_METHOD,
                request_serializer=spb.GetShardRequest.SerializeToString,
                response_deserializer=decode_shard_message,
            ),
        )
        _raw_calls[channel] = calls
    return calls


async def put_shard(
    channels: NodeChannels,
    address: str,
    sid: str,
    data: Buffer,
    checksum: bytes,
    timeout_s: float,
) -> None:
    """Store a shard on the node at `address`; raises grpc.aio.AioRpcError on failure.

    An UNAVAILABLE failure resets the channel so the next call reconnects at once.
    """
    view = memoryview(data).cast("B")
    header = spb.ShardHeader(shard_id=sid, length=len(view), checksum=checksum)
    try:
        call = _calls(channels, address).put(timeout=timeout_s)
        try:
            await call.write(encode_shard_message(header, view[:PUT_MESSAGE_BYTES]))
            for offset in range(PUT_MESSAGE_BYTES, len(view), PUT_MESSAGE_BYTES):
                chunk = view[offset : offset + PUT_MESSAGE_BYTES]
                await call.write(encode_shard_message(None, chunk))
            await call.done_writing()
        except asyncio.InvalidStateError:
            # The node ended the call before the last write (e.g. it refused the header):
            # awaiting the call raises its status.
            await call
            raise
        await call
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            await channels.reset(address)
        raise


async def get_shard_view(
    channels: NodeChannels, address: str, sid: str, timeout_s: float
) -> memoryview:
    """Fetch a shard's bytes (the node verified them) without copying a one-message shard;
    raises grpc.aio.AioRpcError.

    A first UNAVAILABLE is retried once on a fresh channel: the cached one may still be in
    reconnect backoff from before the node restarted.
    """
    for attempt in (1, 2):
        try:
            call = _calls(channels, address).get(
                spb.GetShardRequest(shard_id=sid), timeout=timeout_s
            )
            pieces = []
            async for message in call:
                if message is None:  # grpc logged the parse error and handed on None
                    raise ValueError(f"shard {sid}: malformed GetShard message")
                pieces.append(message.data)
            if len(pieces) == 1:
                return pieces[0]
            return memoryview(b"".join(pieces))
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == 2:
                raise
            await channels.reset(address)
    raise AssertionError("unreachable")


async def get_shard(channels: NodeChannels, address: str, sid: str, timeout_s: float) -> bytes:
    """Fetch a shard's bytes as `bytes` (see `get_shard_view`)."""
    return bytes(await get_shard_view(channels, address, sid, timeout_s))


def verify(data: Buffer, length: int, checksum: bytes) -> bool:
    """True when `data` has the recorded length and checksum."""
    return len(data) == length and shard_checksum(data) == checksum


S = TypeVar("S")
T = TypeVar("T")


async def gather_k(
    candidates: Sequence[S],
    k: int,
    fetch: Callable[[S], Coroutine[Any, Any, T]],
    hedge_after_s: float,
) -> tuple[list[tuple[S, T]], list[tuple[S, Exception]]]:
    """Fetch from `candidates` (best first) until `k` succeed or candidates run out.

    Starts `k` fetches; each failure starts the next candidate, and when no fetch has
    finished for `hedge_after_s` one more is raced against the slow ones. Outstanding fetches
    are cancelled once `k` have succeeded. Returns (successes, failures) with the candidate
    each came from; `fetch` exceptions are collected, never raised.
    """
    queue = list(candidates)
    got: list[tuple[S, T]] = []
    failed: list[tuple[S, Exception]] = []
    running: dict[asyncio.Task[T], S] = {}

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
