"""Malloc tuning in a real cluster: the daemons tune glibc's malloc (the node with its larger
threshold) and say so in their ready files, while this test process, a user program of the
client that did not opt in, keeps its allocator as it was after a put and a get."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from shoal.client import Client
from shoal.client.cli.local_cluster import LocalCluster
from shoal.common import malloc_tuning
from tests.harness.system import glibc


def _threshold(data_dir: str) -> int:
    ready = json.loads((Path(data_dir) / "ready.json").read_text())
    threshold: int = ready["malloc_mmap_threshold"]
    return threshold


@pytest.mark.skipif(not glibc(), reason="malloc tuning applies to glibc only")
def test_daemons_tune_malloc_and_a_user_program_does_not(
    cluster: LocalCluster, client: Client, bucket: str
) -> None:
    data = random.Random(5).randbytes(3 * 1024 * 1024 + 17)
    client.put(bucket, "malloc", data)
    assert client.get(bucket, "malloc") == data
    assert malloc_tuning.is_tuned() is malloc_tuning.allowed()  # False unless opted in
    off = not_allowed_for_daemons()
    for node in cluster.nodes.values():
        assert _threshold(node.data_dir) == (0 if off else malloc_tuning.NODE_MMAP_THRESHOLD)
    assert cluster.coordinator is not None
    expected = 0 if off else malloc_tuning.CLIENT_MMAP_THRESHOLD
    assert _threshold(cluster.coordinator.data_dir) == expected


def not_allowed_for_daemons() -> bool:
    """The operator's malloc settings, inherited by the daemons (LocalCluster starts them
    without this process's SHOAL_* variables)."""
    return any(name in os.environ for name in malloc_tuning.OPERATOR_SETTINGS)
