"""Short-circuit reads against real daemons: a client given the nodes' data directories reads
their shard files itself, asks a node for what it cannot use, and leaves a down node alone;
a local cluster's workers read their tasks' inputs that way."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from pathlib import Path

import cloudpickle
import pytest

from shoal.client import Client, CorruptData, Unavailable
from shoal.client.cli.local_cluster import LocalCluster
from tests.harness.cluster import TEST_SETTINGS, flip_byte, shard_files, unique
from tests.harness.faults import wait_node_state
from tests.harness.jobs import (
    count_words,
    expected_counts,
    make_corpus,
    put_corpus,
    start_workers,
    sum_counts,
)
from tests.integration.test_metrics import Scrape

cloudpickle.register_pickle_by_value(sys.modules[__name__])

STRIPE = TEST_SETTINGS.stripe_bytes


def node_dirs(cluster: LocalCluster) -> list[str]:
    return [daemon.data_dir for daemon in cluster.nodes.values()]


def one_stripe_object(
    cluster: LocalCluster, client: Client
) -> tuple[str, bytes, dict[int, tuple[str, Path]]]:
    """(bucket, data, shard index -> (node, file)) of a new one-stripe object "obj" at (4, 6)."""
    bucket = unique("sc")
    data = os.urandom(STRIPE)
    client.create_bucket(bucket, 4, 6)
    client.put(bucket, "obj", data)
    return bucket, data, shard_files(cluster, client, bucket, "obj", 0)


def test_a_client_with_the_node_dirs_reads_the_shard_files(
    cluster: LocalCluster, bucket: str
) -> None:
    data = os.urandom(2 * STRIPE + 12_345)  # three stripes, the last one short
    with Client(cluster.address) as plain:
        plain.put(bucket, "obj", data)
    with Client(cluster.address, local_node_dirs=node_dirs(cluster)) as local:
        assert local.get(bucket, "obj") == data
        assert local.get(bucket, "obj", offset=STRIPE - 10, length=20) == data[STRIPE - 10 :][:20]
        shards = local.local_shards
        assert shards is not None
        # k = 4 data shards per stripe: 3 stripes, then the 2 the ranged read spans; nothing
        # asked of a node.
        assert (shards.hits, shards.fallbacks) == (4 * 3 + 4 * 2, 0)


def test_a_corrupt_file_is_asked_of_its_node_which_quarantines_it(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    cluster = make_cluster()
    with Client(cluster.address, local_node_dirs=node_dirs(cluster)) as client:
        bucket, data, files = one_stripe_object(cluster, client)
        node, path = files[0]
        flip_byte(path)
        assert client.get(bucket, "obj") == data
        shards = client.local_shards
        assert shards is not None
        # Three good data shards and a parity shard in place of the corrupt one, all read
        # from the files; the corrupt file was asked of its node instead.
        assert (shards.hits, shards.fallbacks) == (4, 1)
        # The node was asked, found the file bad and moved it out of service; the client
        # never touches a node's files.
        assert not path.exists()
        quarantine = path.parents[2] / "quarantine"
        assert any(quarantine.iterdir()), f"nothing quarantined on {node}"


def test_a_down_nodes_files_are_not_read_behind_its_back(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    cluster = make_cluster()
    with Client(cluster.address, local_node_dirs=node_dirs(cluster)) as client:
        bucket, _data, files = one_stripe_object(cluster, client)
        # Both parity shards go bad and the node holding data shard 0 stops: three of the
        # six are lost, one more than (4, 6) survives. Shard 0's file is intact on this
        # host, but its node is down, so the get must say the object is unavailable rather
        # than read it behind the node's back.
        flip_byte(files[4][1])
        flip_byte(files[5][1])
        down_node = files[0][0]
        cluster.stop_nodes([down_node])
        wait_node_state(client, down_node, "down")
        with pytest.raises((Unavailable, CorruptData), match="need 4"):
            client.get(bucket, "obj")
        shards = client.local_shards
        assert shards is not None
        # Data shards 1-3 from their files; the two parity files failed their checksum.
        assert (shards.hits, shards.fallbacks) == (3, 2)


def test_workers_of_a_local_cluster_read_task_inputs_from_the_files(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    settings = dataclasses.replace(TEST_SETTINGS, metrics=True)
    cluster = make_cluster(3, settings)
    start_workers(cluster, [1])
    bucket = unique("sc")
    corpus = make_corpus(objects=3, words_per_object=20_000, seed=7)  # ~100 KiB each
    rpc = "shoal_rpc_requests_total"

    def shard_reads() -> float:
        return sum(
            Scrape(daemon).value(rpc, service="shoal.rpc.v1.StorageNode", method="GetShard")
            for daemon in cluster.nodes.values()
        )

    with Client(cluster.address) as client:
        client.create_bucket(bucket, 2, 3)
        put_corpus(client, bucket, corpus, striped=True)
        before = shard_reads()
        job = client.map_reduce(
            count_words, sum_counts, combiner=sum_counts, inputs=(bucket, ""), partitions=2
        )
        assert dict(job.result(timeout=120)) == expected_counts(corpus)
        # The map tasks read 3 erasure-coded objects, the reducers the (inline) map outputs,
        # this client the (inline) results: no shard was asked of a node.
        assert shard_reads() == before
