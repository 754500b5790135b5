"""SDK additions the S3 gateway builds on, against the shared cluster: object metadata stored
atomically with the object, a per-object stripe size, bucket owners, and ComposeObject."""

from __future__ import annotations

import os

import pytest

from shoal.client import Client, InvalidArgument, NotFound
from tests.harness.cluster import unique

MiB = 1024 * 1024


def test_metadata_round_trips_and_is_limited(client: Client, bucket: str) -> None:
    info = client.put(bucket, "m", b"data", metadata={"content-type": "text/plain", "x": "1"})
    assert info.metadata == {"content-type": "text/plain", "x": "1"}
    assert client.head(bucket, "m").metadata == info.metadata
    assert [o.metadata for o in client.list(bucket)] == [info.metadata]
    late = client.put(bucket, "late", b"abc", metadata=lambda: {"size-seen": "3"})
    assert client.head(bucket, "late").metadata == late.metadata == {"size-seen": "3"}
    with pytest.raises(InvalidArgument):
        client.put(bucket, "too-big", b"x", metadata={"k": "v" * 9000})
    with pytest.raises(NotFound):
        client.head(bucket, "too-big")


def test_buckets_record_their_owner(client: Client) -> None:
    name = unique("owned")
    assert client.create_bucket(name, 4, 6, owner="alice-id").owner == "alice-id"
    assert {b.name: b.owner for b in client.list_buckets()}[name] == "alice-id"


def test_compose_concatenates_without_copying(client: Client, bucket: str) -> None:
    parts = [os.urandom(2 * MiB), os.urandom(MiB), os.urandom(12345)]
    for i, data in enumerate(parts):
        written = client.put(bucket, f"part-{i}", data, stripe_bytes=MiB // 2)
        assert written.stripe_bytes == MiB // 2
    info = client.compose(
        bucket, "whole", [(bucket, f"part-{i}") for i in range(3)], metadata={"kind": "composed"}
    )
    assert info.size == sum(len(p) for p in parts)
    assert info.stripe_count == 4 + 2 + 1
    assert info.etag.endswith("-3")
    assert info.metadata == {"kind": "composed"}
    assert client.get(bucket, "whole") == b"".join(parts)
    assert (
        client.get(bucket, "whole", offset=3 * MiB - 10, length=20)
        == (b"".join(parts))[3 * MiB - 10 : 3 * MiB + 10]
    )
    assert [o.key for o in client.list(bucket)] == ["whole"]  # the sources were consumed


def test_compose_refuses_parts_that_do_not_line_up(client: Client, bucket: str) -> None:
    client.put(bucket, "a", os.urandom(MiB + 1), stripe_bytes=MiB)
    client.put(bucket, "b", b"tail", stripe_bytes=MiB)
    with pytest.raises(InvalidArgument, match="whole number"):
        client.compose(bucket, "ab", [(bucket, "a"), (bucket, "b")])
    assert sorted(o.key for o in client.list(bucket)) == ["a", "b"]  # nothing changed
    with pytest.raises(NotFound):
        client.compose(bucket, "x", [(bucket, "missing")])
