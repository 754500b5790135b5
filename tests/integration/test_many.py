"""put_many and get_many: several objects per call to the coordinator, small ones committed
together and carried whole, large ones stored and read as by put and get."""

from __future__ import annotations

import asyncio
import os

import grpc
import grpc.aio
import pytest

from shoal.client import Client
from shoal.client.cli.local_cluster import LocalCluster
from shoal.client.inline import INLINE_MAX_BYTES, MANY_PER_CALL
from shoal.common.errors import InvalidArgument, NotFound
from shoal.common.rpc import insecure_channel
from shoal.rpc.v1 import coordinator_pb2 as pb
from shoal.rpc.v1 import coordinator_pb2_grpc as pb_grpc
from tests.harness.cluster import unique


def test_small_and_large_objects_round_trip_in_order(client: Client, bucket: str) -> None:
    objects = {
        "empty": b"",
        "small": os.urandom(1000),
        "at-limit": os.urandom(INLINE_MAX_BYTES),
        "large": os.urandom(INLINE_MAX_BYTES + 1),
        "striped": os.urandom(3 * 1024 * 1024),
    }
    infos = client.put_many(bucket, objects)
    assert list(infos) == list(objects)
    assert {key: info.inline for key, info in infos.items()} == {
        "empty": True, "small": True, "at-limit": True, "large": False, "striped": False,
    }  # fmt: skip
    assert all(infos[key].size == len(data) for key, data in objects.items())
    keys = ["striped", "small", "empty", "small", "large", "at-limit"]
    assert client.get_many(bucket, keys) == [objects[key] for key in keys]
    assert client.get_many(bucket, []) == []


def test_more_objects_than_one_call_carries(client: Client, bucket: str) -> None:
    objects = {f"k{i:04d}": i.to_bytes(4, "big") * 8 for i in range(MANY_PER_CALL + 44)}
    infos = client.put_many(bucket, objects)
    assert all(info.inline for info in infos.values())
    assert client.get_many(bucket, list(objects)) == list(objects.values())


def test_put_many_replaces_existing_objects(client: Client, bucket: str) -> None:
    client.put(bucket, "a", b"old")
    client.put_many(bucket, {"a": b"new", "b": bytearray(b"bee")})
    assert client.get_many(bucket, ["a", "b"]) == [b"new", b"bee"]
    assert [o.key for o in client.list(bucket)] == ["a", "b"]


def test_a_missing_key_fails_the_get_naming_it(client: Client, bucket: str) -> None:
    client.put(bucket, "here", b"x")
    with pytest.raises(NotFound, match="not-here"):
        client.get_many(bucket, ["here", "not-here"])


def test_bad_input_is_refused_before_anything_is_stored(client: Client, bucket: str) -> None:
    with pytest.raises(InvalidArgument, match="mapping"):
        client.put_many(bucket, [("a", b"x")])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="must be bytes"):
        client.put_many(bucket, {"a": b"x", "b": "text"})  # type: ignore[dict-item]
    with pytest.raises(InvalidArgument):
        client.put_many(bucket, {"a": b"x", "": b"y"})
    with pytest.raises(InvalidArgument, match="sequence of keys"):
        client.get_many(bucket, "a")
    with pytest.raises(InvalidArgument):
        client.put_many(bucket, {"a": b"x"}, k=5, n=3)
    assert list(client.list(bucket)) == []
    with pytest.raises(NotFound):
        client.put_many(unique("nobucket"), {"a": b"x"})


def test_the_coordinator_refuses_oversized_batches(cluster: LocalCluster, bucket: str) -> None:
    async def probe() -> tuple[grpc.StatusCode, grpc.StatusCode]:
        channel = insecure_channel(cluster.address)
        try:
            stub = pb_grpc.CoordinatorStub(channel)
            codes = []
            for call, request in (
                (
                    stub.PutInlineMany,
                    pb.PutInlineManyRequest(
                        objects=[
                            pb.PutInlineRequest(bucket=bucket, key=f"k{i}", data=b"x")
                            for i in range(MANY_PER_CALL + 1)
                        ]
                    ),
                ),
                (
                    stub.LocateMany,
                    pb.LocateManyRequest(
                        objects=[
                            pb.LocateRequest(bucket=bucket, key=f"k{i}")
                            for i in range(MANY_PER_CALL + 1)
                        ]
                    ),
                ),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as failed:
                    await call(request, timeout=10)  # type: ignore[operator]
                codes.append(failed.value.code())
            return codes[0], codes[1]
        finally:
            await channel.close()

    assert asyncio.run(probe()) == (grpc.StatusCode.INVALID_ARGUMENT,) * 2
