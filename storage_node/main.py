"""`shoal-node`: the storage node daemon."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

from shoal.common import malloc_tuning
from shoal.common.errors import ConfigError
from shoal.common.health import Health
from shoal.common.ids import new_node_id
from shoal.common.lifecycle import daemon_main, write_ready_file
from shoal.common.metrics import ready_fields, rpc_interceptors, serve_metrics
from shoal.common.shard_file import NODE_ID_FILE
from shoal.common.transport import Transport
from shoal.storage_node import metrics as node_metrics
from shoal.storage_node.config import NodeConfig
from shoal.storage_node.membership import Membership
from shoal.storage_node.scrubber import Scrubber
from shoal.storage_node.service import StorageNodeServicer, add_storage_node_servicer
from shoal.storage_node.shard_store import ShardStore

log = logging.getLogger("shoal.node")


def resolve_node_id(data_dir: Path, requested: str) -> str:
    """The node id persisted in data_dir; created from `requested` (or generated) on first start."""
    id_file = data_dir / NODE_ID_FILE
    if id_file.exists():
        existing = id_file.read_text().strip()
        if requested and requested != existing:
            raise ConfigError(
                f"invalid value for 'node_id': {data_dir} belongs to node {existing!r}, "
                f"not {requested!r}"
            )
        return existing
    node_id = requested or new_node_id()
    tmp = id_file.with_suffix(".tmp")
    tmp.write_text(node_id + "\n")
    tmp.replace(id_file)
    return node_id


async def serve(config: NodeConfig, shutdown: asyncio.Event) -> None:
    """Run the node until `shutdown` is set, then stop gracefully."""
    data_dir = Path(config.data_dir)
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    node_id = resolve_node_id(data_dir, config.node_id)
    written_cache = config.written_cache_window()
    store = await asyncio.to_thread(ShardStore, data_dir, config.capacity, written_cache)
    if store.written_pages is not None and not store.written_pages.enabled:
        log.warning("drop_written_pages is on, but this platform has no posix_fadvise: off")
    transport = Transport.from_config(config)
    metrics_address = serve_metrics(config.metrics_listen, "node")
    server = transport.server(rpc_interceptors(metrics_address))
    servicer = StorageNodeServicer(store, node_id, config.repair_timeout, transport)
    add_storage_node_servicer(servicer, server)
    health = Health(server, ("shoal.rpc.v1.StorageNode",))
    port = transport.add_port(server, config.listen)
    if port == 0:
        raise ConfigError(f"cannot listen on {config.listen}")
    await server.start()
    await health.serving()
    host = config.listen.rsplit(":", 1)[0]
    address = config.advertise or f"{host}:{port}"
    log.info("serving", extra={"node_id": node_id, "address": address, "shards": store.shard_count})
    membership = Membership(config, store, node_id, address, transport=transport)
    scrubber = Scrubber(store, config.scrub_rate, config.scrub_interval, membership.report_bad)
    membership.scrubber = scrubber
    node_metrics.install(store, scrubber)
    try:
        async with asyncio.TaskGroup() as tasks:
            if await membership.register(shutdown):
                if config.ready_file:
                    ready = {"address": address, "node_id": node_id}
                    write_ready_file(config.ready_file, {**ready, **ready_fields(metrics_address)})
                tasks.create_task(membership.run(shutdown))
                tasks.create_task(scrubber.run(shutdown))
            await shutdown.wait()
            await health.stopping()
            await server.stop(config.shutdown_grace)
    finally:
        await membership.close()
        await servicer.channels.close()
    log.info(
        "stopped",
        extra={
            "node_id": node_id,
            "bytes_in": servicer.bytes_in,
            "bytes_out": servicer.bytes_out,
            "rebuilt": servicer.rebuilt,
            "scrub_passes": scrubber.passes,
        },
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `shoal-node`."""
    return daemon_main(
        NodeConfig,
        argv,
        prog="shoal-node",
        description="Shoal storage node: stores shards durably.",
        serve=serve,
        mmap_threshold=malloc_tuning.NODE_MMAP_THRESHOLD,  # keeps buffers of any shard size
    )


if __name__ == "__main__":
    raise SystemExit(main())
