"""ObjectReader against real storage nodes (StorageNodeServicer over grpc.aio servers in this
process, shards written with `put_shard`): ranges come back as views into the received
messages, and a node found unreachable is asked last for the following stripes."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from shoal.client.get import GetTuning, ObjectReader, UnreachableNodes
from shoal.client.local_reads import LocalShardFiles
from shoal.common.channels import NodeChannels
from shoal.common.checksum import shard_checksum
from shoal.common.erasure import StripeCodec
from shoal.common.errors import Unavailable
from shoal.common.rpc import SERVER_OPTIONS
from shoal.common.shard_transfer import put_shard
from shoal.rpc.v1 import common_pb2 as common
from shoal.rpc.v1 import coordinator_pb2 as cpb
from shoal.rpc.v1 import storage_pb2 as spb
from shoal.storage_node.service import StorageNodeServicer, add_storage_node_servicer
from shoal.storage_node.shard_store import ShardMeta, ShardStore

VERSION = "7f" * 16
STRIPE = 4096
K, N = 4, 6


class Refusing(grpc.aio.ServerInterceptor):
    """While `refuse` is set, the node answers GetShard with UNAVAILABLE (as a node shutting
    down does) and records the stripe asked for."""

    def __init__(self) -> None:
        self.refuse = False
        self.asked: list[int] = []

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if not (self.refuse and details.method.endswith("/GetShard")):
            return handler

        async def refuse(request: spb.GetShardRequest, context: Any) -> AsyncIterator[Any]:
            self.asked.append(int(request.shard_id.split(".")[1]))
            await context.abort(grpc.StatusCode.UNAVAILABLE, "going down")
            yield  # pragma: no cover (an async generator, as GetShard is)

        return grpc.unary_stream_rpc_method_handler(
            refuse,
            request_deserializer=spb.GetShardRequest.FromString,
            response_serializer=spb.GetShardResponse.SerializeToString,
        )


@dataclass
class Cluster:
    addresses: list[str]
    interceptors: list[Refusing]
    channels: NodeChannels
    data_dirs: list[Path]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    servers, addresses, interceptors = [], [], []
    for i in range(N):
        interceptor = Refusing()
        server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=[interceptor])
        store = ShardStore(tmp_path / f"node-{i}", capacity_bytes=64 * 1024 * 1024)
        add_storage_node_servicer(StorageNodeServicer(store, f"n{i}"), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        addresses.append(f"127.0.0.1:{port}")
        interceptors.append(interceptor)
    channels = NodeChannels()
    try:
        yield Cluster(addresses, interceptors, channels, [tmp_path / f"node-{i}" for i in range(N)])
    finally:
        await channels.close()
        for server in servers:
            await server.stop(None)


async def store_object(cluster: Cluster, data: bytes) -> cpb.LocateResponse:
    """Write `data` as stripes of STRIPE bytes, shard i of stripe s on node (s + i) % N."""
    codec = StripeCodec(K, N)
    stripes = []
    for index, start in enumerate(range(0, len(data), STRIPE)):
        piece = data[start : start + STRIPE]
        shards = [bytes(s) for s in codec.encode(piece)]
        locations = []
        for i, shard in enumerate(shards):
            address = cluster.addresses[(index + i) % N]
            checksum = shard_checksum(shard)
            sid = f"{VERSION}.{index}.{i}"
            await put_shard(cluster.channels, address, sid, shard, checksum, 5.0)
            locations.append(
                common.ShardLocation(
                    shard_index=i, node_id=address, address=address, length=len(shard),
                    checksum=checksum, state="ok", node_state="up",
                )
            )  # fmt: skip
        stripes.append(
            common.StripeLocation(
                index=index, size=len(piece), shard_length=len(shards[0]), shards=locations
            )
        )
    info = common.ObjectInfo(
        bucket="b", key="k", size=len(data), k=K, n=N, version_id=VERSION,
        stripe_bytes=STRIPE, stripe_count=len(stripes),
    )  # fmt: skip
    return cpb.LocateResponse(info=info, stripes=stripes)


async def no_coordinator(method: str, request: object) -> object:
    raise AssertionError(f"unexpected coordinator call {method}")


def reader_for(
    cluster: Cluster,
    located: cpb.LocateResponse,
    unreachable: UnreachableNodes | None = None,
    local: LocalShardFiles | None = None,
) -> ObjectReader:
    tuning = GetTuning(readahead_stripes=1, shard_timeout_s=5.0)
    return ObjectReader(located, cluster.channels, no_coordinator, tuning, unreachable, local)


def local_files(cluster: Cluster) -> LocalShardFiles:
    """Short-circuit access to every node's files (node ids here are the addresses)."""
    for data_dir, address in zip(cluster.data_dirs, cluster.addresses, strict=True):
        (data_dir / "node_id").write_text(address + "\n")
    return LocalShardFiles(cluster.data_dirs)


@pytest.mark.parametrize(
    ("offset", "length"),
    [(0, None), (1, 10), (STRIPE - 3, 7), (STRIPE, STRIPE), (5000, None), (0, 0)],
)
@pytest.mark.parametrize("stopped", [0, 2], ids=["healthy", "degraded"])
async def test_views_are_the_range_without_copies(
    cluster: Cluster, offset: int, length: int | None, stopped: int
) -> None:
    data = random.Random(1).randbytes(3 * STRIPE - 100)
    reader = reader_for(cluster, await store_object(cluster, data))
    for interceptor in cluster.interceptors[:stopped]:
        interceptor.refuse = True
    views = [v async for stripe in reader.views(offset, length) for v in stripe]
    end = len(data) if length is None else offset + length
    assert b"".join(views) == data[offset:end]
    if not stopped:
        # Views into the received messages (each holds a header and a key besides the data).
        assert all(isinstance(v.obj, bytes) and len(v.obj) > len(v) for v in views)


async def test_a_node_found_unreachable_is_asked_last_for_later_stripes(
    cluster: Cluster,
) -> None:
    data = random.Random(2).randbytes(3 * STRIPE)
    reader = reader_for(cluster, await store_object(cluster, data))
    down = cluster.interceptors[1]  # data shard 1 of stripe 0, 0 of stripe 1, parity of 2
    down.refuse = True
    assert b"".join([s async for s in reader.stripes(0, 2)]) == data
    # Asked for stripe 0 (and once more on a fresh channel), never again once unreachable.
    assert set(down.asked) == {0}


async def test_readers_of_one_client_share_the_nodes_found_unreachable(cluster: Cluster) -> None:
    data = random.Random(3).randbytes(2 * STRIPE)
    located = await store_object(cluster, data)
    shared = UnreachableNodes()
    down = cluster.interceptors[1]  # data shard 1 of stripe 0, 0 of stripe 1
    down.refuse = True
    first = reader_for(cluster, located, shared)
    assert b"".join([s async for s in first.stripes(0, 0)]) == data[:STRIPE]
    assert set(down.asked) == {0}
    down.asked.clear()
    # A new reader of the same client (a new get) asks the refusing node last: never here.
    second = reader_for(cluster, located, shared)
    assert b"".join([s async for s in second.stripes(0, 1)]) == data
    assert down.asked == []
    # A reader with its own memory finds out again, for its first stripe.
    third = reader_for(cluster, located)
    assert b"".join([s async for s in third.stripes(0, 1)]) == data
    assert set(down.asked) == {0}


def test_unreachable_nodes_are_forgotten_after_a_while_or_a_success() -> None:
    now = [100.0]
    nodes = UnreachableNodes(forget_after_s=10.0, clock=lambda: now[0])
    nodes.add("10.0.0.1:7100")
    nodes.add("10.0.0.2:7100")
    assert "10.0.0.1:7100" in nodes
    assert "10.0.0.3:7100" not in nodes
    nodes.discard("10.0.0.2:7100")  # a read from it succeeded
    assert "10.0.0.2:7100" not in nodes
    now[0] = 109.9
    assert "10.0.0.1:7100" in nodes
    now[0] = 110.0
    assert "10.0.0.1:7100" not in nodes


async def test_short_circuit_reads_need_no_node(cluster: Cluster) -> None:
    data = random.Random(4).randbytes(2 * STRIPE)
    local = local_files(cluster)
    reader = reader_for(cluster, await store_object(cluster, data), local=local)
    for interceptor in cluster.interceptors:
        interceptor.refuse = True  # every node refuses GetShard
    assert b"".join([s async for s in reader.stripes(0, 1)]) == data
    assert (local.hits, local.fallbacks) == (2 * K, 0)
    assert all(interceptor.asked == [] for interceptor in cluster.interceptors)


@pytest.mark.parametrize("doubt", ["node down", "shard corrupt"])
async def test_a_doubtful_shard_is_never_read_from_its_file(cluster: Cluster, doubt: str) -> None:
    data = random.Random(5).randbytes(STRIPE)
    located = await store_object(cluster, data)
    # Shards 1-3 are healthy; data shard 0 and both parity shards are in doubt. Their files
    # are intact, but the coordinator says their node is down (or the shard corrupt), and
    # every node refuses: only 3 of the k = 4 shards may be had.
    for shard in located.stripes[0].shards:
        if shard.shard_index in (0, 4, 5):
            if doubt == "node down":
                shard.node_state = "down"
            else:
                shard.state = "corrupt"
    local = local_files(cluster)
    reader = reader_for(cluster, located, local=local)
    for interceptor in cluster.interceptors:
        interceptor.refuse = True
    with pytest.raises(Unavailable, match="have 3/6 shards, need 4"):
        await reader.read_stripe(located.stripes[0])
    assert (local.hits, local.fallbacks) == (3, 0)


async def test_with_k_1_a_replica_on_this_host_is_read_first(cluster: Cluster) -> None:
    data = random.Random(6).randbytes(STRIPE)
    located = await store_object(cluster, data)
    located.info.k = 1  # every shard a whole replica, as for map outputs
    for shard in located.stripes[0].shards:
        shard.length = len(data)
        shard.checksum = shard_checksum(data)
    # Only the node holding shard 3 has its directory on "this host".
    holder = cluster.data_dirs[3]
    (holder / "node_id").write_text(cluster.addresses[3] + "\n")
    sid = f"{VERSION}.0.3"
    ShardStore(holder).write(ShardMeta(sid, len(data), shard_checksum(data)), data)
    local = LocalShardFiles([holder])
    reader = ObjectReader(located, cluster.channels, no_coordinator, GetTuning(), None, local)
    assert [s.shard_index for s in reader._candidates(located.stripes[0])][:2] == [3, 0]
    assert b"".join(await reader.read_stripe_views(located.stripes[0])) == data
    assert local.hits == 1
