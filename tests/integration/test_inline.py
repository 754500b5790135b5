"""Small objects are stored inline in the coordinator's metadata: one RPC, no shards on nodes,
readable whatever happens to the storage nodes, and durable across a coordinator kill -9."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from shoal.client import Client
from shoal.client.cli.local_cluster import LocalCluster
from shoal.client.inline import INLINE_MAX_BYTES
from shoal.common.errors import NotFound, Unavailable
from shoal.common.names import shard_id
from tests.harness.cluster import TEST_SETTINGS, unique


def shard_files_of(cluster: LocalCluster, version_id: str, n: int) -> list[Path]:
    return [
        cluster.shard_path(name, shard_id(version_id, 0, index))
        for name in cluster.nodes
        for index in range(n)
        if cluster.shard_path(name, shard_id(version_id, 0, index)).exists()
    ]


def test_small_object_is_inline_and_reads_every_way(
    cluster: LocalCluster, client: Client, bucket: str, tmp_path: Path
) -> None:
    data = os.urandom(4096)
    info = client.put(bucket, "small", data, metadata={"content-type": "text/plain"})
    assert info.inline
    assert info.size == len(data)
    assert shard_files_of(cluster, info.version_id, info.n) == []
    assert client.get(bucket, "small") == data
    assert client.get(bucket, "small", offset=100, length=50) == data[100:150]
    assert b"".join(client.stream(bucket, "small", offset=4000)) == data[4000:]
    client.download(bucket, "small", tmp_path / "small")
    assert (tmp_path / "small").read_bytes() == data
    head = client.head(bucket, "small")
    assert head.inline
    assert head.metadata == {"content-type": "text/plain"}
    assert head.etag == info.etag
    assert [o.key for o in client.list(bucket) if o.key == "small"] == ["small"]


def test_limit_is_inclusive_and_larger_objects_are_striped(client: Client, bucket: str) -> None:
    at_limit = client.put(bucket, "at", os.urandom(INLINE_MAX_BYTES))
    above = client.put(bucket, "above", os.urandom(INLINE_MAX_BYTES + 1))
    assert at_limit.inline
    assert not above.inline
    assert above.stripe_count == 1
    empty = client.put(bucket, "empty", b"")
    assert empty.inline
    assert client.get(bucket, "empty") == b""


def test_replace_and_delete_across_kinds(client: Client, bucket: str) -> None:
    small, large = b"s" * 100, os.urandom(INLINE_MAX_BYTES * 4)
    client.put(bucket, "k", small)
    client.put(bucket, "k", large)
    assert client.get(bucket, "k") == large
    client.put(bucket, "k", small)
    assert client.get(bucket, "k") == small
    client.delete(bucket, "k")
    with pytest.raises(NotFound):
        client.get(bucket, "k")


def test_streamed_small_data_is_striped(client: Client, bucket: str) -> None:
    """Only in-memory buffers go inline (a stream's size is unknown until it ends)."""
    info = client.put(bucket, "streamed", iter([b"a" * 10, b"b" * 10]))
    assert not info.inline
    assert client.get(bucket, "streamed") == b"a" * 10 + b"b" * 10


def test_inline_objects_outlive_nodes_and_a_coordinator_kill(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    cluster = make_cluster(6, TEST_SETTINGS)
    small, large = os.urandom(1000), os.urandom(300_000)
    name = unique("inline")
    with Client(cluster.address) as client:
        client.create_bucket(name)
        assert client.put(name, "small", small).inline
        assert not client.put(name, "large", large).inline
    # Acknowledged means durable: kill -9 right after the put.
    cluster.stop_coordinator(signal.SIGKILL)
    cluster.start_coordinator()
    # More than n - k nodes gone: the striped object is unreadable, the inline one is not.
    cluster.stop_nodes(list(cluster.nodes)[:3])
    with Client(cluster.address) as client:
        assert client.get(name, "small") == small
        with pytest.raises(Unavailable):
            client.get(name, "large")
