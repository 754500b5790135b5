"""The standard gRPC health service (grpc.health.v1) on every daemon, for load balancers and
Kubernetes probes. It answers without the cluster token, and reports NOT_SERVING once the
daemon starts shutting down."""

from __future__ import annotations

import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

HEALTH_METHODS = (
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.health.v1.Health/List",
)


class Health:
    """Registers the health service on a server and flips it as the daemon starts and stops."""

    def __init__(self, server: grpc.aio.Server, services: tuple[str, ...]) -> None:
        self._servicer = health.aio.HealthServicer()
        self._services = ("", *services)
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)

    async def serving(self) -> None:
        for service in self._services:
            await self._servicer.set(service, health_pb2.HealthCheckResponse.SERVING)

    async def stopping(self) -> None:
        await self._servicer.enter_graceful_shutdown()
