"""The standard gRPC health service answers on every daemon: coordinator, nodes, workers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shoal.client.cli.local_cluster import LocalCluster
from tests.harness.jobs import start_workers
from tests.integration.test_cli import run_cli


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


def test_clusterctl_health(cluster: LocalCluster, tmp_path: Path) -> None:
    """`clusterctl health` is what container health checks run (deploy/docker/compose.yaml)."""
    ok = run_cli("health", cluster.address, cwd=tmp_path)
    assert ok.returncode == 0, ok
    assert ok.stdout.decode().strip() == "SERVING"
    node = cluster.node(next(iter(cluster.nodes))).address
    service = run_cli("health", node, "--service", "shoal.rpc.v1.StorageNode", cwd=tmp_path)
    assert service.returncode == 0, service
    assert service.stdout.decode().strip() == "SERVING"
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{probe.getsockname()[1]}"
    refused = run_cli("health", closed, "--timeout", "3", cwd=tmp_path)
    assert refused.returncode != 0
    assert len(refused.stderr.decode().strip().splitlines()) == 1, refused.stderr
