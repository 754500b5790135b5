"""Coordinator restarts: committed objects stay listed and readable; nodes re-attach."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest

from shoal.client import Client
from shoal.client.cli.local_cluster import LocalCluster
from tests.harness.cluster import TEST_SETTINGS, wait_for


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["graceful", "kill-9"])
def test_objects_survive_coordinator_restart(
    make_cluster: Callable[..., LocalCluster], sig: int
) -> None:
    cluster = make_cluster(6)
    objects = {f"k{i}": os.urandom(i * TEST_SETTINGS.stripe_bytes // 3 + i) for i in range(6)}
    with Client(cluster.address) as client:
        client.create_bucket("persist", 4, 6)
        for key, data in objects.items():
            client.put("persist", key, data)
        cluster.stop_coordinator(sig)
        cluster.start_coordinator()
        assert [o.key for o in client.list("persist")] == sorted(objects)
        for key, data in objects.items():
            assert client.get("persist", key) == data

        def all_up() -> bool:
            status = client.status()
            return [n["state"] for n in status["nodes"]] == ["up"] * 6 and status[
                "health"
            ] == "HEALTHY"

        wait_for(all_up, what="nodes to heartbeat the restarted coordinator")
        client.put("persist", "after", b"new")
        assert client.get("persist", "after") == b"new"
