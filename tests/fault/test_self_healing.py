"""Self-healing: losses spread over time never add up to data loss."""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shoal.client import Client, NotFound, Unavailable
from shoal.client.cli.local_cluster import LocalCluster
from shoal.common.checksum import shard_checksum
from shoal.common.names import parse_shard_id
from shoal.storage_node.shard_store import HEADER, HEADER_BYTES, MAGIC
from tests.harness.cluster import REPAIR_SETTINGS, flip_byte, shard_files, wait_for

STRIPE = REPAIR_SETTINGS.stripe_bytes


def put_objects(client: Client, bucket: str, count: int) -> dict[str, bytes]:
    objects = {f"obj-{i}": os.urandom(STRIPE * (i % 3) + 1000 * i + 1) for i in range(count)}
    client.create_bucket(bucket, 4, 6)
    for key, data in objects.items():
        # Streamed, so even the small ones are erasure-coded (bytes this small would be stored
        # inline in the metadata, which has no shards to lose, scrub or repair).
        client.put(bucket, key, iter([data]))
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
        # The repair counters catch up on the scheduler's next cycle.
        wait_for(lambda: fully_repaired(client), timeout_s=15, what="repair counters to settle")
        for key, data in objects.items():
            assert client.get("rolling", key) == data, key


def shard_file_valid(path: Path) -> bool:
    """A shard file exists with an intact header and a matching xxh3-128 of its data."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return False
    if len(blob) < HEADER_BYTES:
        return False
    magic, _fmt, _reserved, length, checksum = HEADER.unpack_from(blob)
    data = blob[HEADER_BYTES:]
    return magic == MAGIC and len(data) == length and shard_checksum(data) == checksum


def test_scrub_finds_bit_rot_and_repair_restores_it(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    cluster = make_cluster(6, REPAIR_SETTINGS)
    with Client(cluster.address) as client:
        objects = put_objects(client, "scrub", 4)
        damaged = []
        for key, stripe, index, how in [("obj-1", 0, 0, "flip"), ("obj-2", 1, 3, "truncate"),
                                        ("obj-3", 0, 5, "delete")]:  # fmt: skip
            _node, path = shard_files(cluster, client, "scrub", key, stripe)[index]
            if how == "flip":
                flip_byte(path)
            elif how == "truncate":
                path.write_bytes(path.read_bytes()[:-100])
            else:
                path.unlink()
            damaged.append(path)
        assert sorted(client.scrub()) == sorted(cluster.nodes)

        def found_and_rebuilt() -> bool:
            status = client.status()
            corrupt = sum(n["corrupt_found"] for n in status["nodes"])
            return corrupt >= 2 and all(shard_file_valid(p) for p in damaged)

        wait_for(found_and_rebuilt, timeout_s=60, what="scrub to find the damage and repair it")
        wait_for(lambda: fully_repaired(client), timeout_s=30, what="full redundancy")
        for key, data in objects.items():
            assert client.get("scrub", key) == data, key


def test_drain_then_remove_leaves_nothing_degraded(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    cluster = make_cluster(7, REPAIR_SETTINGS)
    with Client(cluster.address) as client:
        objects = put_objects(client, "drain", 6)
        to_move = client.drain_node("node-3")
        assert to_move > 0

        def drained() -> bool:
            node = next(n for n in client.status()["nodes"] if n["node_id"] == "node-3")
            return node["state"] == "draining" and node["drain"]["shards_remaining"] == 0

        wait_for(drained, timeout_s=60, what="node-3 drained")
        node = next(n for n in client.status()["nodes"] if n["node_id"] == "node-3")
        assert node["drain"] == {"shards_total": to_move, "shards_remaining": 0, "ratio": 1.0}
        # The repair counters catch up on the scheduler's next cycle.
        wait_for(lambda: fully_repaired(client), timeout_s=10, what="repair counters to settle")
        assert client.remove_node("node-3") == 0
        cluster.stop_nodes(["node-3"], signal.SIGTERM)
        status = client.status()
        assert node_states(client)["node-3"] == "decommissioned"
        assert status["objects"]["degraded"] == 0
        assert status["health"] == "HEALTHY"
        for key, data in objects.items():
            assert client.get("drain", key) == data, key


def test_remove_refuses_while_a_node_holds_needed_shards(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    settings = dataclasses.replace(REPAIR_SETTINGS, repair_after_s=3600.0)
    cluster = make_cluster(6, settings)
    with Client(cluster.address) as client:
        put_objects(client, "keep", 3)
        lose(cluster, client, ["node-1", "node-2"])
        with pytest.raises(Unavailable, match=r"refusing to remove node-3: .* drop below k"):
            client.remove_node("node-3")
        assert node_states(client)["node-3"] == "up"
        with pytest.raises(NotFound, match="no node 'node-99'"):
            client.remove_node("node-99")


def test_repair_hold_pauses_and_countdown_shows_when_repair_starts(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    settings = dataclasses.replace(REPAIR_SETTINGS, repair_after_s=6.0)
    cluster = make_cluster(7, settings)
    with Client(cluster.address) as client:
        objects = put_objects(client, "hold", 4)
        assert client.hold_repair() is True
        lose(cluster, client, ["node-2"])
        first = next(n for n in client.status()["nodes"] if n["node_id"] == "node-2")
        assert 0 < first["repair_in_s"] <= 6.0
        assert first["down_for_s"] > 0

        def countdown_over() -> bool:
            node = next(n for n in client.status()["nodes"] if n["node_id"] == "node-2")
            return node["repair_in_s"] == 0 and node["down_for_s"] > settings.repair_after_s + 1

        wait_for(countdown_over, timeout_s=30, what="the repair countdown to run out")
        status = client.status()
        assert status["repair"]["held"] is True
        assert status["repair"]["shards_remaining"] > 0
        assert status["repair"]["shards_done"] == 0, "repair ran while held"
        assert "1" in status["stripes_by_margin"]
        assert client.hold_repair(False) is False
        wait_for(lambda: fully_repaired(client), timeout_s=60, what="repair after resume")
        for key, data in objects.items():
            assert client.get("hold", key) == data, key


def test_coordinator_restart_resumes_repair(make_cluster: Callable[..., LocalCluster]) -> None:
    # Slow repair (shard reads throttled) so the restart lands in the middle of it.
    settings = dataclasses.replace(REPAIR_SETTINGS, repair_bandwidth=2 * 1024 * 1024)
    cluster = make_cluster(7, settings)
    with Client(cluster.address) as client:
        objects = put_objects(client, "resume", 9)
        lose(cluster, client, ["node-4"])

        def started() -> bool:
            repair = client.status()["repair"]
            return repair["shards_done"] >= 1 and repair["shards_remaining"] > 0

        wait_for(started, timeout_s=30, what="repair to be under way")
        cluster.stop_coordinator(signal.SIGKILL)
        cluster.start_coordinator()
        wait_for(lambda: fully_repaired(client), timeout_s=90, what="repair to resume and finish")
        assert node_states(client)["node-4"] == "down"
        for key, data in objects.items():
            assert client.get("resume", key) == data, key
