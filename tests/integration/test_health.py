"""The standard gRPC health service answers on every daemon: coordinator, nodes, workers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shoal.client.cli.local_cluster import LocalCluster
from tests.harness.jobs import start_workers


async def check(address: str, service: str = "") -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return int(reply.status)


def test_every_daemon_reports_serving(cluster: LocalCluster) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    assert asyncio.run(check(cluster.address)) == serving
    assert asyncio.run(check(cluster.address, "shoal.rpc.v1.Coordinator")) == serving
    assert asyncio.run(check(cluster.address, "shoal.rpc.v1.Jobs")) == serving
    for name in cluster.nodes:
        address = cluster.node(name).address
        assert asyncio.run(check(address)) == serving
        assert asyncio.run(check(address, "shoal.rpc.v1.StorageNode")) == serving


def test_worker_serves_health(make_cluster: Callable[..., LocalCluster]) -> None:
    """A worker serves no RPC of its own, only the health service (on --health-listen)."""
    cluster = make_cluster(2)
    (name,) = start_workers(cluster, [1])
    address = cluster.worker(name).address
    assert address, "the worker reported no health address"
    assert asyncio.run(check(address)) == health_pb2.HealthCheckResponse.SERVING
