"""Every SDK error type, raised by a real cluster (or before any call, for bad input)."""

from __future__ import annotations

import os

import pytest

from shoal.client import (
    AlreadyExists,
    BucketNotEmpty,
    Client,
    ConnectionFailed,
    InsufficientNodes,
    InvalidArgument,
    NotFound,
    ShoalError,
)
from tests.harness.cluster import unique


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("A", "bucket name"),
        ("ab", "bucket name"),
        ("Bad_Name", "bucket name"),
        ("-abc", "bucket name"),
        ("a" * 64, "bucket name"),
        ("a..b", "bucket name"),
    ],
)
def test_invalid_bucket_names(client: Client, name: str, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        client.create_bucket(name)


@pytest.mark.parametrize(
    ("key", "match"),
    [("", "non-empty"), ("a\x00b", "NUL"), ("x" * 1025, "1024"), ("é" * 513, "1024")],
)
def test_invalid_keys(client: Client, bucket: str, key: str, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        client.put(bucket, key, b"data")
    with pytest.raises(InvalidArgument, match=match):
        client.get(bucket, key)


def test_longest_key_accepted(client: Client, bucket: str) -> None:
    key = "k" * 1024
    client.put(bucket, key, b"v")
    assert client.get(bucket, key) == b"v"


@pytest.mark.parametrize(("k", "n"), [(0, 6), (4, 4), (5, 4), (1, 257), (-1, 3)])
def test_redundancy_out_of_range(client: Client, bucket: str, k: int, n: int) -> None:
    with pytest.raises(InvalidArgument, match="1 <= k < n <= 256"):
        client.create_bucket(unique("r"), k, n)
    with pytest.raises(InvalidArgument, match="1 <= k < n <= 256"):
        client.put(bucket, "x", b"x", k=k, n=n)


def test_n_above_node_count(client: Client, bucket: str) -> None:
    with pytest.raises(InsufficientNodes, match=r"n=7 .* the cluster knows 6"):
        client.create_bucket(unique("big"), 4, 7)
    with pytest.raises(InsufficientNodes, match="the cluster knows 6"):
        client.put(bucket, "x", b"x", k=4, n=7)


def test_bad_put_data(client: Client, bucket: str, tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(InvalidArgument, match="data must be bytes"):
        client.put(bucket, "x", 12345)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="no such file"):
        client.put(bucket, "x", os.path.join(tmp_path, "missing"))
    with pytest.raises(InvalidArgument, match="expected bytes"):
        client.put(bucket, "x", iter(["text, not bytes"]))  # type: ignore[list-item]
    with pytest.raises(NotFound):
        client.head(bucket, "x")  # nothing partial became visible


def test_not_found(client: Client, bucket: str) -> None:
    missing = unique("nob")
    with pytest.raises(NotFound, match=f"bucket '{missing}' does not exist"):
        client.put(missing, "k", b"x")
    with pytest.raises(NotFound, match="does not exist"):
        client.get(bucket, "nope")
    with pytest.raises(NotFound):
        client.head(missing, "k")
    with pytest.raises(NotFound):
        list(client.list(missing))
    with pytest.raises(NotFound):
        client.delete_bucket(missing)


def test_already_exists_and_not_empty(client: Client, bucket: str) -> None:
    with pytest.raises(AlreadyExists, match="already exists"):
        client.create_bucket(bucket)
    client.put(bucket, "k", b"x")
    with pytest.raises(BucketNotEmpty, match="not empty"):
        client.delete_bucket(bucket)


def test_connection_failed() -> None:
    with (
        Client("127.0.0.1:1", rpc_timeout_s=5) as unreachable,
        pytest.raises(ConnectionFailed, match=r"cannot reach the coordinator at 127\.0\.0\.1:1"),
    ):
        unreachable.list_buckets()
    with pytest.raises(InvalidArgument, match="HOST:PORT"):
        Client("no-port")


def test_errors_share_a_base(client: Client) -> None:
    with pytest.raises(ShoalError):
        client.head(unique("nob"), "k")
