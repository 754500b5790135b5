"""Self-healing: losses spread over time never add up to data loss."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shoal.client import Client
from shoal.client.cli.local_cluster import LocalCluster
from shoal.common.names import parse_shard_id
from tests.harness.cluster import REPAIR_SETTINGS, wait_for

STRIPE = REPAIR_SETTINGS.stripe_bytes


def put_objects(client: Client, bucket: str, count: int) -> dict[str, bytes]:
    objects = {f"obj-{i}": os.urandom(STRIPE * (i % 3) + 1000 * i + 1) for i in range(count)}
    client.create_bucket(bucket, 4, 6)
    for key, data in objects.items():
        client.put(bucket, key, data)
    return objects


def fully_repaired(client: Client) -> bool:
    """Every stripe has n healthy shards again and nothing is queued for repair."""
    status: dict[str, Any] = client.status()
    margins = status["stripes_by_margin"]
    return (
        set(margins) == {"2"}
        and status["repair"]["shards_remaining"] == 0
        and status["objects"]["degraded"] == 0
    )


def node_states(client: Client) -> dict[str, str]:
    return {n["node_id"]: n["state"] for n in client.status()["nodes"]}


def lose(cluster: LocalCluster, client: Client, names: list[str]) -> None:
    """SIGKILL nodes and wait until the coordinator sees them down."""
    cluster.stop_nodes(names, signal.SIGKILL)
    wait_for(
        lambda: all(node_states(client)[n] == "down" for n in names),
        timeout_s=30,
        what=f"{names} reported down",
    )


def shard_files_per_stripe(cluster: LocalCluster) -> dict[tuple[str, int], int]:
    counts: dict[tuple[str, int], int] = {}
    for name in cluster.nodes:
        for path in (Path(cluster.node(name).data_dir) / "shards").glob("*/*"):
            version, stripe, _index = parse_shard_id(path.name)
            counts[(version, stripe)] = counts.get((version, stripe), 0) + 1
    return counts


def test_rolling_losses_never_lose_data(make_cluster: Callable[..., LocalCluster]) -> None:
    """8 nodes, (4, 6): lose 2, repair, lose 2 more: 4 nodes gone, every byte still there."""
    cluster = make_cluster(8, REPAIR_SETTINGS)
    with Client(cluster.address) as client:
        objects = put_objects(client, "rolling", 8)
        lose(cluster, client, ["node-2", "node-7"])
        wait_for(lambda: fully_repaired(client), timeout_s=90, what="repair after the first loss")
        lose(cluster, client, ["node-4", "node-5"])
        # Four live nodes cannot hold six distinct shards: repair tries, records why it
        # cannot place them, and every stripe rests at exactly k, readable.
        wait_for(lambda: client.repair_errors()[1] > 0, timeout_s=60, what="repair to try")
        errors, _total = client.repair_errors()
        assert all("no eligible node" in e.reason for e in errors), errors[0].reason
        status = client.status()
        assert set(status["stripes_by_margin"]) == {"0"}
        assert status["stripes_at_risk"] == sum(status["stripes_by_margin"].values())
        for key, data in objects.items():
            assert client.get("rolling", key) == data, key

        cluster.start_nodes(["node-2", "node-4", "node-5", "node-7"])
        expected = {
            (info.version_id, stripe)
            for info in client.list("rolling")
            for stripe in range(info.stripe_count)
        }

        def exactly_n_per_stripe() -> bool:
            counts = shard_files_per_stripe(cluster)
            return set(counts) == expected and set(counts.values()) == {6}

        wait_for(exactly_n_per_stripe, timeout_s=60, what="returning nodes reconciled to n shards")
        assert fully_repaired(client)
        for key, data in objects.items():
            assert client.get("rolling", key) == data, key
