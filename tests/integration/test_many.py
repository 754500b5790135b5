"""put_many and get_many: several objects per call to the coordinator, small ones committed
together and carried whole, large ones stored and read as by put and get."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable

import grpc
import grpc.aio
import pytest

from shoal.client import Client
from shoal.client.cli.local_cluster import LocalCluster
from shoal.client.inline import INLINE_MAX_BYTES
from shoal.common.errors import InvalidArgument, NotFound
from shoal.common.rpc import MAX_OBJECTS_PER_CALL as MANY_PER_CALL
from shoal.common.rpc import insecure_channel
from shoal.rpc.v1 import coordinator_pb2 as pb
from shoal.rpc.v1 import coordinator_pb2_grpc as pb_grpc
from tests.harness.cluster import TEST_SETTINGS, unique
from tests.integration.test_metrics import Scrape


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


def test_batches_go_in_one_call_each(make_cluster: Callable[..., LocalCluster]) -> None:
    cluster = make_cluster(3, dataclasses.replace(TEST_SETTINGS, metrics=True))
    assert cluster.coordinator is not None
    coordinator = cluster.coordinator

    def calls(method: str) -> float:
        return Scrape(coordinator).value(
            "shoal_rpc_requests_total", service="shoal.rpc.v1.Coordinator", method=method
        )

    objects = {f"k{i}": os.urandom(100 + i) for i in range(10)}
    with Client(cluster.address) as client:
        client.create_bucket("many", 2, 3)
        before = {m: calls(m) for m in ("PutInline", "PutInlineMany", "Locate", "LocateMany")}
        client.put_many("many", objects)
        assert client.get_many("many", list(objects)) == list(objects.values())
        after = {m: calls(m) for m in before}
    assert {m: after[m] - before[m] for m in before} == {
        "PutInline": 0, "PutInlineMany": 1, "Locate": 0, "LocateMany": 1,
    }  # fmt: skip


def test_a_raw_batch_keeps_order_and_refuses_what_is_wrong_as_a_whole(
    cluster: LocalCluster, client: Client, bucket: str
) -> None:
    def item(key: str, data: bytes = b"x") -> pb.PutInlineRequest:
        return pb.PutInlineRequest(bucket=bucket, key=key, data=data)

    async def call(items: list[pb.PutInlineRequest]) -> pb.PutInlineManyResponse | grpc.StatusCode:
        channel = insecure_channel(cluster.address)
        try:
            stub = pb_grpc.CoordinatorStub(channel)
            try:
                reply: pb.PutInlineManyResponse = await stub.PutInlineMany(
                    pb.PutInlineManyRequest(objects=items), timeout=10
                )
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return reply
        finally:
            await channel.close()

    # Declined above the inline limit, in place; the others stored.
    reply = asyncio.run(call([item("a"), item("big", bytes(INLINE_MAX_BYTES + 1)), item("c")]))
    assert isinstance(reply, pb.PutInlineManyResponse)
    assert [r.accepted for r in reply.results] == [True, False, True]
    assert [r.info.key for r in reply.results] == ["a", "", "c"]
    # A key twice, a bad key, a missing bucket: refused whole, nothing stored.
    assert asyncio.run(call([item("d"), item("d")])) == grpc.StatusCode.INVALID_ARGUMENT
    assert asyncio.run(call([item("e"), item("")])) == grpc.StatusCode.INVALID_ARGUMENT
    missing = pb.PutInlineRequest(bucket=unique("nobucket"), key="f", data=b"x")
    assert asyncio.run(call([item("f"), missing])) == grpc.StatusCode.NOT_FOUND
    assert [o.key for o in client.list(bucket)] == ["a", "c"]


def test_the_coordinator_refuses_oversized_batches(cluster: LocalCluster, bucket: str) -> None:
    async def probe() -> tuple[grpc.StatusCode, ...]:
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
                            pb.LocateRequest(bucket=bucket, key=f"k{i}", max_stripes=1)
                            for i in range(MANY_PER_CALL + 1)
                        ]
                    ),
                ),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as failed:
                    await call(request, timeout=10)  # type: ignore[operator]
                codes.append(failed.value.code())
            # A whole object's stripe locations are paged with Locate, not carried here.
            for max_stripes in (0, 5):
                with pytest.raises(grpc.aio.AioRpcError) as failed:
                    await stub.LocateMany(
                        pb.LocateManyRequest(
                            objects=[
                                pb.LocateRequest(bucket=bucket, key="k", max_stripes=max_stripes)
                            ]
                        ),
                        timeout=10,
                    )
                codes.append(failed.value.code())
            return codes[0], codes[1], codes[2], codes[3]
        finally:
            await channel.close()

    assert asyncio.run(probe()) == (grpc.StatusCode.INVALID_ARGUMENT,) * 4
