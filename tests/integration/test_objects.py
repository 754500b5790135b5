"""Objects on a real 6-node cluster: sizes, sources, ranges, streaming, overwrite, delete, list."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from shoal.client import AsyncClient, Client, InvalidArgument, NotFound
from shoal.client import async_client as async_client_module
from shoal.client.cli.local_cluster import LocalCluster
from shoal.client.inline import INLINE_MAX_BYTES
from shoal.common.names import shard_id
from tests.harness.cluster import TEST_SETTINGS, unique, wait_for

STRIPE = TEST_SETTINGS.stripe_bytes


@pytest.mark.parametrize(
    "size",
    [0, 1, 4096, STRIPE - 1, STRIPE, STRIPE + 1, 3 * STRIPE + 12345],
    ids=["0B", "1B", "4KiB", "stripe-1", "stripe", "stripe+1", "3.x-stripes"],
)
def test_round_trip_sizes(client: Client, bucket: str, size: int) -> None:
    data = os.urandom(size)
    info = client.put(bucket, "obj", data)
    assert (info.size, info.k, info.n) == (size, 4, 6)
    # Buffers up to INLINE_MAX_BYTES are stored inline in the metadata (no stripes).
    assert info.inline == (size <= INLINE_MAX_BYTES)
    assert info.stripe_count == (0 if info.inline else -(-size // STRIPE))
    assert client.get(bucket, "obj") == data
    head = client.head(bucket, "obj")
    assert (head.bucket, head.key, head.size, head.etag) == (bucket, "obj", size, info.etag)


def test_put_sources(client: Client, bucket: str, tmp_path: Path) -> None:
    data = os.urandom(2 * STRIPE + 777)
    path = tmp_path / "src.bin"
    path.write_bytes(data)
    client.put(bucket, "from-path", str(path))
    client.put(bucket, "from-pathlike", path)
    with path.open("rb") as handle:
        client.put(bucket, "from-file", handle)
    client.put(bucket, "from-bytesio", io.BytesIO(data))

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(data), 100_000):
            yield data[start : start + 100_000]

    client.put(bucket, "from-iterable", pieces())
    client.put(bucket, "from-bytearray", bytearray(data))
    for key in (
        "from-path",
        "from-pathlike",
        "from-file",
        "from-bytesio",
        "from-iterable",
        "from-bytearray",
    ):
        assert client.get(bucket, key) == data, key


def test_ranged_reads(client: Client, bucket: str) -> None:
    data = os.urandom(3 * STRIPE + 5000)
    client.put(bucket, "r", data)
    cases = [
        (0, 10),
        (STRIPE - 5, 10),
        (STRIPE, STRIPE),
        (2 * STRIPE + 1, 3000),
        (len(data) - 1, 1),
        (len(data) - 100, 1000),
        (0, None),
        (STRIPE + 3, None),
        (len(data), None),
        (7, 0),
    ]
    for offset, length in cases:
        end = len(data) if length is None else offset + length
        assert client.get(bucket, "r", offset=offset, length=length) == data[offset:end], (
            offset,
            length,
        )
    with pytest.raises(InvalidArgument, match="beyond"):
        client.get(bucket, "r", offset=len(data) + 1)
    with pytest.raises(InvalidArgument, match="offset"):
        client.get(bucket, "r", offset=-1)
    with pytest.raises(InvalidArgument, match="length"):
        client.get(bucket, "r", length=-5)


def test_open_download_stream(client: Client, bucket: str, tmp_path: Path) -> None:
    data = os.urandom(2 * STRIPE + 99)
    client.put(bucket, "s", data)
    with client.open(bucket, "s") as stream:
        head = stream.read(1000)
        rest = stream.read()
    assert head + rest == data
    target = tmp_path / "out.bin"
    info = client.download(bucket, "s", target)
    assert target.read_bytes() == data
    assert info.size == len(data)
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert b"".join(client.stream(bucket, "s", offset=10, length=STRIPE)) == data[10 : 10 + STRIPE]


def test_overwrite_is_atomic_for_readers(client: Client, bucket: str) -> None:
    versions = [bytes([i]) * (2 * STRIPE + 10) for i in range(1, 6)]
    client.put(bucket, "o", versions[0])
    seen: list[bytes] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        with Client(client.address) as own:
            while not stop.is_set():
                try:
                    seen.append(own.get(bucket, "o"))
                except NotFound as exc:  # an old version deleted mid-read is allowed, a mix is not
                    errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for data in versions[1:]:
            client.put(bucket, "o", data)
    finally:
        stop.set()
        thread.join()
    assert seen, "the reader never completed a read"
    assert all(s in versions for s in seen), "a reader saw a mix of two versions"
    assert client.get(bucket, "o") == versions[-1]
    assert not errors or all("replaced" in str(e) for e in errors)


def test_delete_hides_at_once_and_removes_shards(
    client: Client, cluster: LocalCluster, bucket: str
) -> None:
    info = client.put(bucket, "d", os.urandom(STRIPE + 1))
    client.delete(bucket, "d")
    with pytest.raises(NotFound):
        client.head(bucket, "d")
    with pytest.raises(NotFound):
        client.get(bucket, "d")
    assert [o.key for o in client.list(bucket)] == []
    files = [
        cluster.shard_path(node, shard_id(info.version_id, stripe, index))
        for node in cluster.nodes
        for stripe in range(2)
        for index in range(6)
    ]
    wait_for(
        lambda: not any(p.exists() for p in files),
        timeout_s=20,
        what="shards of a deleted object removed",
    )
    with pytest.raises(NotFound):
        client.delete(bucket, "d")


def test_overwrite_removes_old_shards(client: Client, cluster: LocalCluster, bucket: str) -> None:
    old = client.put(bucket, "w", os.urandom(100))
    client.put(bucket, "w", os.urandom(200))
    files = [
        cluster.shard_path(node, shard_id(old.version_id, 0, i))
        for node in cluster.nodes
        for i in range(6)
    ]
    wait_for(
        lambda: not any(p.exists() for p in files),
        timeout_s=20,
        what="old version's shards removed",
    )


def test_list_prefix_and_pages(
    client: Client, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = [f"logs/2026/{i:03d}" for i in range(7)] + ["logs/other", "data/x", "logt"]
    for key in keys:
        client.put(bucket, key, key.encode())
    monkeypatch.setattr(async_client_module, "LIST_PAGE", 3)  # force several pages
    assert [o.key for o in client.list(bucket)] == sorted(keys)
    assert [o.key for o in client.list(bucket, "logs/")] == sorted(
        k for k in keys if k.startswith("logs/")
    )
    assert [o.key for o in client.list(bucket, "logs/2026/00")] == [
        f"logs/2026/00{i}" for i in range(7)
    ]
    assert list(client.list(bucket, "nothing")) == []


def test_buckets(client: Client) -> None:
    name = unique("bk")
    created = client.create_bucket(name, 2, 5)
    assert (created.k, created.n, created.write_quorum) == (2, 5, 3)
    assert name in [b.name for b in client.list_buckets()]
    info = client.put(name, "k", b"abc")
    assert (info.k, info.n) == (2, 5)
    other = client.put(name, "k2", b"abc", k=3, n=6)
    assert (other.k, other.n) == (3, 6)
    client.delete(name, "k")
    client.delete(name, "k2")
    client.delete_bucket(name)
    assert name not in [b.name for b in client.list_buckets()]


async def test_async_client(cluster: LocalCluster) -> None:
    data = os.urandom(STRIPE + 17)

    async def pieces() -> AsyncIterator[bytes]:
        yield data[:1000]
        yield data[1000:]

    async with AsyncClient(cluster.address) as client:
        name = unique("ab")
        await client.create_bucket(name)
        info = await client.put(name, "a", pieces())
        assert info.size == len(data)
        assert await client.get(name, "a") == data
        assert await client.get(name, "a", offset=STRIPE, length=17) == data[STRIPE:]
        stream = await client.open(name, "a")
        assert await stream.read(10) == data[:10]
        assert b"".join([p async for p in stream]) == data[10:]
        assert [o.key async for o in client.list(name)] == ["a"]
        status = await client.status()
        assert status["schema_version"] == 1
        await client.delete(name, "a")
        await client.delete_bucket(name)
