"""`shoal-s3`: the S3 gateway daemon.

aiohttp serves HTTP on the event loop the other daemons use (uvloop, via
common/lifecycle.py); SIGTERM stops accepting connections, gives requests in flight
`shutdown_grace` seconds, closes the SDK's channels and exits 0.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiohttp import web

from shoal.client import AsyncClient
from shoal.common.auth import read_token_file
from shoal.common.errors import ConfigError
from shoal.common.lifecycle import daemon_main, write_ready_file
from shoal.common.metrics import ready_fields, serve_metrics
from shoal.s3 import credentials
from shoal.s3.app import build_app
from shoal.s3.config import GatewayConfig
from shoal.s3.gateway import Gateway

log = logging.getLogger("shoal.s3")


def make_client(config: GatewayConfig) -> AsyncClient:
    """The SDK client the gateway reaches the cluster with (token and TLS from its config)."""
    token = read_token_file(config.cluster_token_file) if config.cluster_token_file else ""
    return AsyncClient(
        config.coordinator,
        rpc_timeout_s=config.rpc_timeout,
        token=token,
        tls_ca=config.tls_ca,
        tls_cert=config.tls_cert,
        tls_key=config.tls_key,
    )


async def serve(config: GatewayConfig, shutdown: asyncio.Event) -> None:
    """Serve S3 until `shutdown` is set, then stop gracefully."""
    users = await asyncio.to_thread(credentials.load, config.credentials)
    client = make_client(config)
    gateway = Gateway(config, client, users)
    metrics_address = serve_metrics(config.metrics_listen, "s3")
    runner = web.AppRunner(
        build_app(gateway), access_log=None, shutdown_timeout=config.shutdown_grace
    )
    await runner.setup()
    host, _, port = config.listen.rpartition(":")
    site = web.TCPSite(runner, host.strip("[]") or None, int(port))
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        await client.close()
        raise ConfigError(f"cannot listen on {config.listen}: {exc.strerror}") from None
    bound = runner.addresses[0]
    address = f"{host}:{bound[1]}"
    log.info(
        "serving",
        extra={"address": address, "coordinator": config.coordinator, "users": len(users.by_key)},
    )
    if config.ready_file:
        write_ready_file(config.ready_file, {"address": address, **ready_fields(metrics_address)})
    try:
        await shutdown.wait()
    finally:
        await runner.cleanup()
        await client.close()
    log.info("stopped")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `shoal-s3`."""
    return daemon_main(
        GatewayConfig,
        argv,
        prog="shoal-s3",
        description="Shoal S3 gateway: S3-compatible HTTP in front of a Shoal cluster.",
        serve=serve,
    )


if __name__ == "__main__":
    raise SystemExit(main())
