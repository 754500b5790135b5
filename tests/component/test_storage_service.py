"""StorageNodeServicer over a real grpc.aio server and ShardStore: streaming, errors, trailers."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest

from shoal.common.checksum import shard_checksum
from shoal.common.rpc import CHANNEL_OPTIONS, ERROR_TRAILER, SERVER_OPTIONS, STREAM_CHUNK_BYTES
from shoal.rpc.v1 import storage_pb2 as pb
from shoal.rpc.v1 import storage_pb2_grpc as pb_grpc
from shoal.storage_node.service import (
    GET_MESSAGE_BYTES,
    LIST_BATCH,
    SPILL_BYTES,
    StorageNodeServicer,
    add_storage_node_servicer,
)
from shoal.storage_node.shard_store import HEADER_BYTES, ShardMeta, ShardStore

VERSION = "5a" + "e" * 30
MiB = 1024 * 1024


def sid(stripe: int = 0, index: int = 0) -> str:
    return f"{VERSION}.{stripe}.{index}"


@dataclass
class Node:
    store: ShardStore
    servicer: StorageNodeServicer
    stub: pb_grpc.StorageNodeAsyncStub
    channel: grpc.aio.Channel


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    store = ShardStore(tmp_path / "data", capacity_bytes=64 * MiB)
    servicer = StorageNodeServicer(store, "node-test")
    server = grpc.aio.server(options=SERVER_OPTIONS)
    add_storage_node_servicer(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    assert port > 0
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)
    try:
        yield Node(store, servicer, pb_grpc.StorageNodeStub(channel), channel)
    finally:
        await channel.close()
        await server.stop(None)


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def put_messages(
    shard_id: str,
    data: bytes,
    chunk: int,
    *,
    checksum: bytes | None = None,
    length: int | None = None,
) -> Iterator[pb.PutShardRequest]:
    header = pb.ShardHeader(
        shard_id=shard_id,
        length=len(data) if length is None else length,
        checksum=shard_checksum(data) if checksum is None else checksum,
    )
    yield pb.PutShardRequest(header=header, data=data[:chunk])
    for offset in range(chunk, len(data), chunk):
        yield pb.PutShardRequest(data=data[offset : offset + chunk])


async def get_shard(
    stub: pb_grpc.StorageNodeAsyncStub, shard_id: str
) -> tuple[pb.ShardHeader, bytes]:
    header = None
    pieces = []
    async for message in stub.GetShard(pb.GetShardRequest(shard_id=shard_id)):
        if message.HasField("header"):
            assert header is None, "header sent twice"
            header = message.header
        pieces.append(message.data)
    assert header is not None, "no header"
    return header, b"".join(pieces)


def trailer(error: grpc.aio.AioRpcError) -> str | None:
    for key, value in error.trailing_metadata() or ():
        if key == ERROR_TRAILER:
            return value if isinstance(value, str) else value.decode()
    return None


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    ("size", "chunk"),
    [
        (0, 1024),
        (1, 1024),
        (100_000, 997),  # many small messages, buffered path
        (SPILL_BYTES, 64 * 1024),  # exactly at the threshold: still buffered
        (6 * MiB + 123, 256 * 1024),  # beyond SPILL_BYTES: streamed to disk as it arrives
    ],
    ids=["empty", "one-byte", "many-small", "at-spill", "spilled"],
)
async def test_put_then_get_round_trip(node: Node, size: int, chunk: int) -> None:
    data = payload(size, size)
    shard = sid(0, size % 7)
    response = await node.stub.PutShard(put_messages(shard, data, chunk))
    assert response.length == size
    assert node.servicer.bytes_in == size

    header, got = await get_shard(node.stub, shard)
    assert got == data
    assert header.shard_id == shard
    assert header.length == size
    assert header.checksum == shard_checksum(data)
    assert node.servicer.bytes_out == size

    path = node.store.path_of(shard)
    assert path.stat().st_size == HEADER_BYTES + size
    assert files_under(node.store.root / "incoming") == []
    assert (node.store.shard_count, node.store.used_bytes) == (1, size)


async def test_large_shard_spills_to_incoming_while_streaming(node: Node) -> None:
    """Past SPILL_BYTES the servicer writes to incoming/ before the stream has ended."""
    data = payload(SPILL_BYTES + 2 * MiB, 5)
    chunk = 256 * 1024
    first_part = SPILL_BYTES + MiB
    incoming = node.store.root / "incoming"
    seen_on_disk: list[int] = []

    async def requests() -> AsyncIterator[pb.PutShardRequest]:
        messages = list(put_messages(sid(), data, chunk))
        split = first_part // chunk
        for message in messages[:split]:
            yield message
        # Hold the rest back until the partial shard is on disk (polling, bounded wait).
        deadline = asyncio.get_running_loop().time() + 20
        while asyncio.get_running_loop().time() < deadline:
            sizes = [p.stat().st_size for p in incoming.iterdir()]
            if sizes and max(sizes) > HEADER_BYTES + SPILL_BYTES:
                seen_on_disk.append(max(sizes))
                break
            await asyncio.sleep(0.01)
        for message in messages[split:]:
            yield message

    response = await node.stub.PutShard(requests())
    assert response.length == len(data)
    assert seen_on_disk, "no partial shard appeared in incoming/ while the stream was open"
    assert seen_on_disk[0] < HEADER_BYTES + len(data)
    assert (await get_shard(node.stub, sid()))[1] == data
    assert list(incoming.iterdir()) == []


async def test_get_streams_in_bounded_messages(node: Node) -> None:
    data = payload(3 * GET_MESSAGE_BYTES + 5, 7)
    await node.stub.PutShard(put_messages(sid(), data, STREAM_CHUNK_BYTES))
    sizes = [len(m.data) async for m in node.stub.GetShard(pb.GetShardRequest(shard_id=sid()))]
    assert sizes == [GET_MESSAGE_BYTES] * 3 + [5]


async def test_corrupt_shard_of_many_messages_never_sends_its_last(node: Node) -> None:
    """A shard streamed in several messages is verified as it is read: a corrupt one ends in
    DATA_LOSS before the message that would complete it, and is quarantined."""
    data = payload(2 * GET_MESSAGE_BYTES + 100, 8)
    await node.stub.PutShard(put_messages(sid(), data, STREAM_CHUNK_BYTES))
    path = node.store.path_of(sid())
    with path.open("r+b") as handle:
        handle.seek(HEADER_BYTES + 10)
        handle.write(bytes([data[10] ^ 0x01]))
    received: list[int] = []

    async def read_all() -> None:
        async for message in node.stub.GetShard(pb.GetShardRequest(shard_id=sid())):
            received.append(len(message.data))

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await read_all()
    assert info.value.code() == grpc.StatusCode.DATA_LOSS
    assert "checksum mismatch" in (info.value.details() or "")
    assert received == [GET_MESSAGE_BYTES] * 2
    assert (node.store.root / "quarantine" / sid()).exists()
    assert node.servicer.bytes_out == 0


async def test_put_overwrites_existing_shard(node: Node) -> None:
    await node.stub.PutShard(put_messages(sid(), payload(5000, 1), 1000))
    newer = payload(3000, 2)
    await node.stub.PutShard(put_messages(sid(), newer, 1000))
    assert (await get_shard(node.stub, sid()))[1] == newer
    assert (node.store.shard_count, node.store.used_bytes) == (1, 3000)


async def test_corrupt_shard_gives_data_loss_and_is_quarantined(node: Node) -> None:
    data = payload(50_000, 3)
    await node.stub.PutShard(put_messages(sid(1, 1), data, 8192))
    path = node.store.path_of(sid(1, 1))
    raw = bytearray(path.read_bytes())
    raw[HEADER_BYTES + 1234] ^= 0xFF
    path.write_bytes(bytes(raw))

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await get_shard(node.stub, sid(1, 1))
    assert info.value.code() == grpc.StatusCode.DATA_LOSS
    assert trailer(info.value) == "CorruptData"
    assert "checksum mismatch" in (info.value.details() or "")
    assert (node.store.root / "quarantine" / sid(1, 1)).exists()
    assert not path.exists()

    # Once quarantined, the shard is simply not on this node.
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await get_shard(node.stub, sid(1, 1))
    assert again.value.code() == grpc.StatusCode.NOT_FOUND


async def test_missing_shard_is_not_found(node: Node) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await get_shard(node.stub, sid(9, 9))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert trailer(info.value) == "NotFound"


async def test_get_with_malformed_id_is_invalid_argument(node: Node) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await get_shard(node.stub, "../../etc/passwd")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert trailer(info.value) == "InvalidArgument"


async def test_put_without_header_is_invalid_argument(node: Node) -> None:
    messages = [pb.PutShardRequest(data=b"abc"), pb.PutShardRequest(data=b"def")]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await node.stub.PutShard(iter(messages))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert trailer(info.value) == "InvalidArgument"
    assert "header" in (info.value.details() or "")
    assert files_under(node.store.root / "shards") == []


@pytest.mark.parametrize("later", [False, True], ids=["first-message", "later-message"])
async def test_put_with_malformed_message_is_invalid_argument(node: Node, later: bool) -> None:
    # The node parses PutShard messages itself (common.shard_transfer), not with protobuf.
    put = node.channel.stream_unary(
        "/shoal.rpc.v1.StorageNode/PutShard",
        request_serializer=None,
        response_deserializer=pb.PutShardResponse.FromString,
    )
    header = pb.ShardHeader(shard_id=sid(), length=6, checksum=shard_checksum(b"abcdef"))
    good = pb.PutShardRequest(header=header, data=b"abc").SerializeToString()
    garbage = b"\x12\x05abc"  # a data field longer than the message
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await put(iter([good, garbage] if later else [garbage]))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed message" in (info.value.details() or "")
    assert files_under(node.store.root / "shards") == []
    assert files_under(node.store.root / "incoming") == []


async def test_put_with_no_messages_is_invalid_argument(node: Node) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await node.stub.PutShard(iter([]))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("size", "chunk"),
    [(20_000, 1000), (SPILL_BYTES + MiB, 512 * 1024)],
    ids=["buffered", "spilled"],
)
async def test_put_with_wrong_checksum_stores_nothing(node: Node, size: int, chunk: int) -> None:
    data = payload(size, 11)
    wrong = shard_checksum(data + b"x")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await node.stub.PutShard(put_messages(sid(), data, chunk, checksum=wrong))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert trailer(info.value) == "InvalidArgument"
    assert "checksum" in (info.value.details() or "")
    assert files_under(node.store.root / "shards") == []
    assert files_under(node.store.root / "incoming") == []
    assert (node.store.shard_count, node.store.used_bytes, node.servicer.bytes_in) == (0, 0, 0)


@pytest.mark.parametrize(
    ("declared", "message"),
    [(19_999, "more than the declared"), (20_001, "declared 20001")],
    ids=["too-much-data", "too-little-data"],
)
async def test_put_with_wrong_length_stores_nothing(
    node: Node, declared: int, message: str
) -> None:
    data = payload(20_000, 12)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await node.stub.PutShard(put_messages(sid(), data, 3000, length=declared))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (info.value.details() or "")
    assert files_under(node.store.root / "shards") == []
    assert files_under(node.store.root / "incoming") == []


@pytest.mark.parametrize(
    ("shard_id", "checksum"),
    [("not-a-shard-id", None), (sid(), b"short")],
    ids=["bad-id", "bad-checksum-size"],
)
async def test_put_with_bad_header_is_invalid_argument(
    node: Node, shard_id: str, checksum: bytes | None
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await node.stub.PutShard(put_messages(shard_id, b"data", 2, checksum=checksum))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert files_under(node.store.root / "shards") == []


async def test_put_beyond_capacity_is_unavailable(tmp_path: Path) -> None:
    store = ShardStore(tmp_path / "small", capacity_bytes=1000)
    server = grpc.aio.server(options=SERVER_OPTIONS)
    add_storage_node_servicer(StorageNodeServicer(store, "small"), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.StorageNodeStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.PutShard(put_messages(sid(), payload(1001, 1), 100))
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert trailer(info.value) == "Unavailable"
    finally:
        await server.stop(None)
    assert files_under(store.root / "shards") == []


async def test_delete_and_list_shards(node: Node) -> None:
    stored = {}
    for stripe in range(3):
        for index in range(4):
            data = payload(100 * stripe + index + 1, stripe * 10 + index)
            await node.stub.PutShard(put_messages(sid(stripe, index), data, 64))
            stored[sid(stripe, index)] = len(data)

    listed = {}
    async for batch in node.stub.ListShards(pb.ListShardsRequest()):
        for summary in batch.shards:
            assert summary.shard_id not in listed
            listed[summary.shard_id] = summary.length
    assert listed == stored

    to_delete = [sid(0, 0), sid(1, 2), sid(8, 8), "garbage"]
    response = await node.stub.DeleteShards(pb.DeleteShardsRequest(shard_ids=to_delete))
    assert response.deleted == 3  # the absent shard counts as deleted, garbage does not
    for gone in (sid(0, 0), sid(1, 2)):
        del stored[gone]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await get_shard(node.stub, gone)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND

    listed = {
        s.shard_id: s.length
        async for batch in node.stub.ListShards(pb.ListShardsRequest())
        for s in batch.shards
    }
    assert listed == stored
    assert node.store.shard_count == len(stored)


async def test_list_of_empty_node_is_empty(node: Node) -> None:
    batches = [b async for b in node.stub.ListShards(pb.ListShardsRequest())]
    assert sum(len(b.shards) for b in batches) == 0


async def test_list_shards_batches_large_inventories(node: Node) -> None:
    count = LIST_BATCH + 5
    ids = [sid(index // 256, index % 256) for index in range(count)]
    data = b"z"

    def write(shard_id: str) -> None:
        node.store.write(ShardMeta(shard_id, 1, shard_checksum(data)), data)

    # Filled through the store directly (in parallel, fsyncs dominate); listed over gRPC.
    await asyncio.gather(*(asyncio.to_thread(write, shard_id) for shard_id in ids))
    batches = [b async for b in node.stub.ListShards(pb.ListShardsRequest())]
    assert [len(b.shards) for b in batches] == [LIST_BATCH, 5]
    assert sorted(s.shard_id for b in batches for s in b.shards) == sorted(ids)
