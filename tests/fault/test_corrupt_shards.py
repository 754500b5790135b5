"""Corrupted shard files: reads still return correct bytes, and the corruption is reported."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from shoal.client import Client, CorruptData
from shoal.client.cli.local_cluster import LocalCluster
from tests.harness.cluster import TEST_SETTINGS, flip_byte, shard_files, wait_for

STRIPE = TEST_SETTINGS.stripe_bytes


def test_flipped_byte_is_detected_repaired_around_and_reported(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    cluster = make_cluster(6)
    data = os.urandom(2 * STRIPE + 100)
    with Client(cluster.address) as client:
        client.create_bucket("corrupt", 4, 6)
        client.put("corrupt", "obj", data)
        files = shard_files(cluster, client, "corrupt", "obj", stripe=1)
        node, path = files[0]  # a data shard: a healthy read would use it without decoding
        flip_byte(path)
        assert client.get("corrupt", "obj") == data
        quarantined = Path(cluster.node(node).data_dir) / "quarantine" / path.name
        assert quarantined.exists(), "the node must move a corrupt shard out of service"
        assert not path.exists()

        def reported() -> bool:
            status = client.status()
            return (
                status["objects"]["degraded"] == 1
                and status["stripes_by_healthy_shards"].get("5") == 1
            )

        wait_for(reported, what="the corrupt shard to show as a degraded object")
        assert (
            client.get("corrupt", "obj", offset=STRIPE, length=STRIPE) == data[STRIPE : 2 * STRIPE]
        )


def test_too_many_corrupt_shards_raise_corrupt_data(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    cluster = make_cluster(6)
    data = os.urandom(STRIPE)
    with Client(cluster.address) as client:
        client.create_bucket("corrupt", 4, 6)
        client.put("corrupt", "obj", data)
        files = shard_files(cluster, client, "corrupt", "obj", stripe=0)
        for index in (0, 2, 5):
            flip_byte(files[index][1], offset_from_end=10)
        with pytest.raises(
            CorruptData, match=r"stripe 0: have 3/6 shards, need 4.*checksum mismatch"
        ):
            client.get("corrupt", "obj")


def test_truncated_and_deleted_shards_are_survived(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    cluster = make_cluster(6)
    data = os.urandom(STRIPE + 1)
    with Client(cluster.address) as client:
        client.create_bucket("corrupt", 4, 6)
        client.put("corrupt", "obj", data)
        files = shard_files(cluster, client, "corrupt", "obj", stripe=0)
        truncated = files[1][1]
        truncated.write_bytes(truncated.read_bytes()[:100])
        files[3][1].unlink()
        assert client.get("corrupt", "obj") == data
