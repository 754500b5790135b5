"""The recovery rule, exhaustively on a 6-node cluster with (4, 6):

every object survives any n - k = 2 stopped nodes byte for byte (all 15 pairs), and with 3
stopped (all 20 triples) every get fails fast with Unavailable explaining what is missing.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import time
from collections.abc import Callable

import pytest

from shoal.client import Client, Unavailable
from shoal.client.cli.local_cluster import LocalCluster
from tests.harness.cluster import TEST_SETTINGS

STRIPE = TEST_SETTINGS.stripe_bytes
BOUND_S = 10.0


def move_to(cluster: LocalCluster, stopped: set[str], target: set[str]) -> None:
    """Stop and start nodes so exactly `target` is stopped (SIGKILL: an abrupt loss)."""
    to_start = sorted(stopped - target)
    to_stop = sorted(target - stopped)
    if to_stop:
        cluster.stop_nodes(to_stop, signal.SIGKILL)
    if to_start:
        cluster.start_nodes(to_start)


def test_any_two_nodes_down_reads_every_byte_three_down_fails_cleanly(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    cluster = make_cluster(6)
    objects = {"multi": os.urandom(3 * STRIPE + 4321), "small": os.urandom(4096), "one": b"x"}
    with Client(cluster.address) as client:
        client.create_bucket("rule", 4, 6)
        for key, data in objects.items():
            # Streamed, so the small ones are erasure-coded too rather than stored inline.
            info = client.put("rule", key, iter([data]))
            assert (info.k, info.n) == (4, 6)
            assert not info.inline
        assert client.status()["objects"]["degraded"] == 0, (
            "every stripe must start with all 6 shards"
        )

        names = sorted(cluster.nodes)
        stopped: set[str] = set()
        pairs = list(itertools.combinations(names, 2))
        triples = list(itertools.combinations(names, 3))
        assert (len(pairs), len(triples)) == (15, 20)

        for pair in pairs:
            move_to(cluster, stopped, set(pair))
            stopped = set(pair)
            for key, data in objects.items():
                assert client.get("rule", key) == data, f"{key} with {pair} stopped"

        for triple in triples:
            move_to(cluster, stopped, set(triple))
            stopped = set(triple)
            for key in objects:
                started = time.monotonic()
                with pytest.raises(Unavailable) as caught:
                    client.get("rule", key)
                elapsed = time.monotonic() - started
                message = str(caught.value)
                assert elapsed < BOUND_S, f"{key} with {triple} stopped took {elapsed:.1f}s to fail"
                assert f"object rule/{key} stripe 0" in message
                assert "have 3/6 shards, need 4" in message
                named = set(re.findall(r"node-\d", message.split("missing on", 1)[1]))
                assert named == set(triple), f"message must name the stopped nodes: {message}"
        move_to(cluster, stopped, set())
        for key, data in objects.items():
            assert client.get("rule", key) == data
