"""The synchronous Clients of a process share one event loop thread: closing one leaves the
others working, threads may share a client, and a call made on that loop's own thread
fails with a clear error instead of deadlocking."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from shoal.client import Client
from shoal.client.cli.local_cluster import LocalCluster
from shoal.common.errors import ShoalError


def test_clients_share_one_loop_and_close_independently(
    cluster: LocalCluster, client: Client, bucket: str
) -> None:
    first, second = Client(cluster.address), Client(cluster.address)
    try:
        assert first._loop is second._loop is client._loop
        first.put(bucket, "shared-a", b"a" * 100)
        first.close()
        with pytest.raises(ShoalError, match="closed"):
            first.get(bucket, "shared-a")
        assert second.get(bucket, "shared-a") == b"a" * 100
    finally:
        second.close()
    assert client.get(bucket, "shared-a") == b"a" * 100


def test_threads_share_a_client(client: Client, bucket: str) -> None:
    payloads = {f"threaded-{i}": os.urandom(3000 + i) for i in range(8)}
    errors: list[BaseException] = []

    def work(key: str, data: bytes) -> None:
        try:
            for _ in range(5):
                client.put(bucket, key, data)
                assert client.get(bucket, key) == data
        except BaseException as exc:  # collected and re-raised in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=item) for item in payloads.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors[:3]
    assert all(not t.is_alive() for t in threads)


def test_call_on_the_loop_thread_is_refused(client: Client, bucket: str) -> None:
    async def call_from_loop() -> str:
        try:
            client.list_buckets()
        except ShoalError as exc:
            return str(exc)
        return "no error"

    message = asyncio.run_coroutine_threadsafe(call_from_loop(), client._loop).result(10)
    assert "own event loop thread" in message
