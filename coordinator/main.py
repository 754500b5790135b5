"""`shoal-coordinator`: the coordinator daemon."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from shoal.common.errors import ConfigError
from shoal.common.health import Health
from shoal.common.lifecycle import daemon_main, sleep_or_shutdown, write_ready_file
from shoal.common.metrics import ready_fields, rpc_interceptors, serve_metrics
from shoal.common.transport import Transport
from shoal.coordinator import metrics as coordinator_metrics
from shoal.coordinator.config import CoordinatorConfig
from shoal.coordinator.job_store import JobStore
from shoal.coordinator.jobs_service import JobsServicer
from shoal.coordinator.membership import DOWN, DRAINING, Membership
from shoal.coordinator.metadata import LoopReader, MetadataStore
from shoal.coordinator.service import CoordinatorServicer
from shoal.coordinator.status import data_health
from shoal.rpc.v1 import coordinator_pb2_grpc as pb_grpc
from shoal.rpc.v1 import jobs_pb2_grpc

log = logging.getLogger("shoal.coordinator")

MAINTENANCE_INTERVAL_S = 1.0
UPLOAD_EXPIRY_INTERVAL_S = 30.0
LAST_SEEN_INTERVAL_S = 5.0
HEALTH_METRICS_INTERVAL_S = 5.0


async def publish_data_health(servicer: CoordinatorServicer) -> None:
    """Refresh the data-health gauges from the maintained counters (cheap: no scan)."""
    summary = await servicer.db(
        servicer.store.health_summary, servicer.membership.counted_out_ids()
    )
    health = data_health(summary)
    coordinator_metrics.set_data_health(
        health.objects, health.object_bytes, health.stripes_by_margin
    )


async def maintenance(servicer: CoordinatorServicer, shutdown: asyncio.Event) -> None:
    """Background loop: refresh liveness (logs transitions, reconciles returning nodes),
    persist when nodes were last seen, and expire stale uploads."""
    expiry_interval = min(UPLOAD_EXPIRY_INTERVAL_S, max(servicer.config.upload_timeout / 2, 1.0))
    since_expiry = expiry_interval
    since_touch = 0.0
    since_health = HEALTH_METRICS_INTERVAL_S
    while not await sleep_or_shutdown(shutdown, MAINTENANCE_INTERVAL_S):
        servicer.membership.refresh()
        for record, previous in servicer.membership.take_changes():
            if previous == DOWN and record.liveness != DOWN:
                servicer.reconciler.request(record.node_id)
        # After a liveness change, pay for the health counters' bulk update here rather than
        # in a status call (a no-op comparison otherwise).
        await servicer.db(servicer.store.set_counted_out, servicer.membership.counted_out_ids())
        since_health += MAINTENANCE_INTERVAL_S
        if servicer.config.metrics_listen and since_health >= HEALTH_METRICS_INTERVAL_S:
            since_health = 0.0
            await publish_data_health(servicer)
        since_touch += MAINTENANCE_INTERVAL_S
        # Often enough that, after a restart, a live node is not taken for down.
        if since_touch >= min(LAST_SEEN_INTERVAL_S, servicer.config.down_after / 3):
            since_touch = 0.0
            now = time.time()
            seen = {
                r.node_id: now - servicer.membership.heartbeat_age(r)
                for r in servicer.membership.nodes.values()
            }
            await servicer.db(servicer.store.touch_nodes, seen)
        since_expiry += MAINTENANCE_INTERVAL_S
        if since_expiry >= expiry_interval:
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
    membership = Membership(config.heartbeat_timeout, config.down_after, config.repair_after)
    for node in store.nodes():
        membership.load(
            node.node_id, node.address, node.zone, node.capacity, node.admin_state, node.last_seen
        )
    transport = Transport.from_config(config)
    reader = LoopReader(data_dir / "metadata.sqlite3")
    servicer = CoordinatorServicer(config, store, membership, transport, reader)
    job_store = JobStore(data_dir / "metadata.sqlite3")
    jobs = JobsServicer(config, store, job_store, membership, servicer.db)
    await jobs.load()
    for node in store.nodes():
        if node.admin_state == DRAINING:
            servicer.drain_totals[node.node_id] = node.drain_total
    await servicer.repair.load()
    metrics_address = serve_metrics(config.metrics_listen, "coordinator")
    coordinator_metrics.install(membership, jobs.scheduler)
    server = transport.server(rpc_interceptors(metrics_address))
    pb_grpc.add_CoordinatorServicer_to_server(servicer, server)
    jobs_pb2_grpc.add_JobsServicer_to_server(jobs, server)
    health = Health(server, ("shoal.rpc.v1.Coordinator", "shoal.rpc.v1.Jobs"))
    port = transport.add_port(server, config.listen)
    if port == 0:
        raise ConfigError(f"cannot listen on {config.listen}")
    await server.start()
    await health.serving()
    address = f"{config.listen.rsplit(':', 1)[0]}:{port}"
    log.info("serving", extra={"address": address, "known_nodes": len(membership.nodes)})
    if config.ready_file:
        write_ready_file(config.ready_file, {"address": address, **ready_fields(metrics_address)})
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(maintenance(servicer, shutdown))
            tasks.create_task(servicer.repair.run(shutdown, startup_grace_s=config.down_after))
            tasks.create_task(servicer.reconciler.run(shutdown))
            tasks.create_task(jobs.run(shutdown))
            await shutdown.wait()
            await health.stopping()
            await server.stop(config.shutdown_grace)
    finally:
        await servicer.close()
        job_store.close()
        with contextlib.suppress(Exception):
            reader.close()
        with contextlib.suppress(Exception):
            store.close()
    log.info("stopped")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `shoal-coordinator`."""
    return daemon_main(
        CoordinatorConfig,
        argv,
        prog="shoal-coordinator",
        description="Shoal coordinator: metadata, membership and placement.",
        serve=serve,
    )


if __name__ == "__main__":
    raise SystemExit(main())
