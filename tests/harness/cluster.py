"""Helpers for tests that run a real local cluster (LocalCluster underneath)."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from shoal.client import Client
from shoal.client.cli.local_cluster import ClusterSettings, LocalCluster
from shoal.common.names import shard_id

# Small stripes make multi-stripe objects cheap; fast heartbeats make failure detection quick.
# `down_after` leaves room for heartbeats delayed while a 2-core machine is saturated by a
# large transfer (2 s was too tight: the 256 MiB test made every node look down). Repair is
# kept out of the way here; tests of repair use REPAIR_SETTINGS.
TEST_SETTINGS = ClusterSettings(
    k=4,
    n=6,
    heartbeat_timeout_s=2.0,
    down_after_s=5.0,
    repair_after_s=3600.0,
    heartbeat_interval_s=0.2,
    stripe_bytes=1024 * 1024,
    delete_grace_s=0.5,
    lease_timeout_s=3.0,
)
# Self-healing tests: nodes count as down after 3 s and are repaired 2 s later; orphans are
# collected after 2 s; reconciliation runs every 2 s.
REPAIR_SETTINGS = dataclasses.replace(
    TEST_SETTINGS,
    down_after_s=3.0,
    repair_after_s=2.0,
    reconcile_interval_s=2.0,
    orphan_grace_s=2.0,
    upload_timeout_s=3.0,
)


def unique(prefix: str = "t") -> str:
    """A bucket or key name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def wait_for(
    predicate: Callable[[], bool], timeout_s: float = 15.0, what: str = "condition"
) -> None:
    """Poll `predicate` until it is true or fail after `timeout_s` (monotonic deadline)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def start_cluster(
    root: Path,
    nodes: int = 6,
    settings: ClusterSettings = TEST_SETTINGS,
    zones: list[str] | None = None,
) -> LocalCluster:
    cluster = LocalCluster(root)
    cluster.up(nodes, settings=settings, zones=zones)
    return cluster


def shard_files(
    cluster: LocalCluster, client: Client, bucket: str, key: str, stripe: int
) -> dict[int, tuple[str, Path]]:
    """For one stripe of an object: shard index -> (node name, shard file path)."""
    info = client.head(bucket, key)
    found: dict[int, tuple[str, Path]] = {}
    for name in cluster.nodes:
        for index in range(info.n):
            path = cluster.shard_path(name, shard_id(info.version_id, stripe, index))
            if path.exists():
                found[index] = (name, path)
    return found


def flip_byte(path: Path, offset_from_end: int = 1) -> None:
    """Corrupt a shard file on disk by flipping one byte of its data."""
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))
