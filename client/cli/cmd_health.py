"""`clusterctl health ADDRESS`: ask one daemon's standard gRPC health service whether it is
serving (for container health checks and exec probes, including with TLS, which Kubernetes'
built-in gRPC probes cannot speak). Exit status 0 when SERVING, 1 otherwise."""

from __future__ import annotations

import argparse
import asyncio
import os

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shoal.client.cli.address import cluster_tls
from shoal.common.errors import InvalidArgument
from shoal.common.rpc import to_shoal_error
from shoal.common.tls import load_tls
from shoal.common.transport import Transport

DEFAULT_TIMEOUT_S = 5.0


async def check(transport: Transport, address: str, service: str, timeout_s: float) -> str:
    """The status name the daemon at `address` reports for `service` ("" = the whole daemon)."""
    async with transport.channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise InvalidArgument(f"{address} has no health status for {service!r}") from None
            raise to_shoal_error(exc, address) from None
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def cmd_health(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        raise InvalidArgument("--timeout must be positive")
    ca, cert, key = cluster_tls(args)
    tls = load_tls(
        cert or os.environ.get("SHOAL_TLS_CERT", ""),
        key or os.environ.get("SHOAL_TLS_KEY", ""),
        ca or os.environ.get("SHOAL_TLS_CA", ""),
        names=("--tls-cert", "--tls-key", "--tls-ca"),
    )
    status = asyncio.run(check(Transport(tls=tls), args.address, args.service, args.timeout))
    print(status)
    return 0 if status == "SERVING" else 1


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add the health subcommand to `sub`."""
    parser = sub.add_parser(
        "health",
        parents=[common],
        help="check one daemon's gRPC health service (exit 0 when SERVING)",
    )
    parser.add_argument("address", metavar="HOST:PORT", help="the daemon's gRPC address")
    parser.add_argument(
        "--service", default="", help="a service name (default: the daemon as a whole)"
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for an answer"
    )
    parser.set_defaults(handler=cmd_health)
