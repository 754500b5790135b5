"""`shoal-coordinator`: the coordinator daemon."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc.aio

from shoal.common import logging as shoal_logging
from shoal.common.config import load_config
from shoal.common.errors import ConfigError
from shoal.common.lifecycle import run_daemon, sleep_or_shutdown, write_ready_file
from shoal.common.rpc import SERVER_OPTIONS
from shoal.coordinator.config import CoordinatorConfig
from shoal.coordinator.membership import Membership
from shoal.coordinator.metadata import MetadataStore
from shoal.coordinator.service import CoordinatorServicer
from shoal.rpc.v1 import coordinator_pb2_grpc as pb_grpc

log = logging.getLogger("shoal.coordinator")

MAINTENANCE_INTERVAL_S = 1.0
UPLOAD_EXPIRY_INTERVAL_S = 30.0


async def maintenance(servicer: CoordinatorServicer, shutdown: asyncio.Event) -> None:
    """Background loop: refresh liveness (logs transitions) and expire stale uploads."""
    since_expiry = UPLOAD_EXPIRY_INTERVAL_S
    while not await sleep_or_shutdown(shutdown, MAINTENANCE_INTERVAL_S):
        servicer.membership.refresh()
        since_expiry += MAINTENANCE_INTERVAL_S
        if since_expiry >= UPLOAD_EXPIRY_INTERVAL_S:
            since_expiry = 0.0
            try:
                await servicer.expire_uploads_once()
            except Exception:
                log.exception("upload expiry failed; will retry")


async def serve(config: CoordinatorConfig, shutdown: asyncio.Event) -> None:
    """Run the coordinator until `shutdown` is set, then stop gracefully."""
    data_dir = Path(config.data_dir)
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    store = MetadataStore(data_dir / "metadata.sqlite3")
    membership = Membership(config.heartbeat_timeout)
    for node in store.nodes():
        membership.upsert(node.node_id, node.address, node.zone, node.capacity)
    servicer = CoordinatorServicer(config, store, membership)
    server = grpc.aio.server(options=SERVER_OPTIONS)
    pb_grpc.add_CoordinatorServicer_to_server(servicer, server)
    port = server.add_insecure_port(config.listen)
    if port == 0:
        raise ConfigError(f"cannot listen on {config.listen}")
    await server.start()
    address = f"{config.listen.rsplit(':', 1)[0]}:{port}"
    log.info("serving", extra={"address": address, "known_nodes": len(membership.nodes)})
    if config.ready_file:
        write_ready_file(config.ready_file, {"address": address})
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(maintenance(servicer, shutdown))
            await shutdown.wait()
            await server.stop(config.shutdown_grace)
    finally:
        servicer.close()
        with contextlib.suppress(Exception):
            store.close()
    log.info("stopped")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `shoal-coordinator`."""
    config, _args = load_config(
        CoordinatorConfig,
        argv,
        prog="shoal-coordinator",
        description="Shoal coordinator: metadata, membership and placement.",
    )
    shoal_logging.configure(config.log_level, config.log_format)
    try:
        return run_daemon(lambda shutdown: serve(config, shutdown))
    except ConfigError as exc:
        print(f"shoal-coordinator: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
