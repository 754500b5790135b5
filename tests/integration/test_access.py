"""The cluster token: without it nobody reads, writes, submits, joins or moves shards."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from shoal.client import Client, JobOptions, PermissionDenied
from shoal.client.cli.local_cluster import LocalCluster
from shoal.common.rpc import insecure_channel
from shoal.rpc.v1 import storage_pb2 as spb
from shoal.rpc.v1 import storage_pb2_grpc as spb_grpc
from tests.harness.cluster import TEST_SETTINGS, wait_for

TOKEN = "s3cret-token-0123456789abcdef"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, Path]]:
    root = tmp_path_factory.mktemp("secured")
    token_file = root / "token"
    token_file.write_text(TOKEN + "\n")
    settings = dataclasses.replace(TEST_SETTINGS, k=2, n=3, token_file=str(token_file))
    cluster = LocalCluster(root / "cluster")
    cluster.up(3, settings=settings, workers=1, worker_slots=1)
    yield cluster, token_file
    cluster.down()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shoal.client.cli", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_the_token_opens_everything(secured: tuple[LocalCluster, Path]) -> None:
    cluster, _token_file = secured
    with Client(cluster.address, token=TOKEN) as client:
        client.create_bucket("open", 2, 3)
        client.put("open", "k", b"payload" * 1000)
        assert client.get("open", "k") == b"payload" * 1000
        # Workers carry the token too, and so do the SDK clients inside their tasks.
        assert (
            client.submit(pow, 3, 4, job_options=JobOptions(max_attempts=1)).result(timeout=60)
            == 81
        )
        status = client.status()
        assert [n["state"] for n in status["nodes"]] == ["up", "up", "up"]


@pytest.mark.parametrize(
    "token", [None, "", "wrong-token-0123456789"], ids=["none", "empty", "wrong"]
)
def test_clients_without_the_token_are_refused(
    secured: tuple[LocalCluster, Path], token: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster, _token_file = secured
    monkeypatch.delenv("SHOAL_TOKEN", raising=False)
    monkeypatch.delenv("SHOAL_TOKEN_FILE", raising=False)
    with Client(cluster.address, token=token) as client:
        for call in (
            client.list_buckets,
            lambda: client.put("open", "x", b"data"),
            lambda: client.get("open", "k"),
            lambda: client.submit(pow, 2, 2),
            client.status,
        ):
            with pytest.raises(PermissionDenied, match="cluster token"):
                call()


def test_token_from_environment(
    secured: tuple[LocalCluster, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster, token_file = secured
    monkeypatch.setenv("SHOAL_TOKEN_FILE", str(token_file))
    with Client(cluster.address) as client:
        assert isinstance(client.list_buckets(), list)
    monkeypatch.delenv("SHOAL_TOKEN_FILE")
    monkeypatch.setenv("SHOAL_TOKEN", TOKEN)
    with Client(cluster.address) as client:
        assert isinstance(client.list_buckets(), list)


def test_nodes_refuse_shard_traffic_without_the_token(secured: tuple[LocalCluster, Path]) -> None:
    cluster, _token_file = secured

    async def probe(address: str, token: str) -> grpc.StatusCode:
        channel = insecure_channel(address, token)
        try:
            stub = spb_grpc.StorageNodeStub(channel)
            call = stub.GetShard(spb.GetShardRequest(shard_id=f"{'0' * 32}.0.0"), timeout=5)
            try:
                async for _message in call:
                    pass
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK
        finally:
            await channel.close()

    address = cluster.node("node-1").address
    assert asyncio.run(probe(address, "")) == grpc.StatusCode.PERMISSION_DENIED
    assert (
        asyncio.run(probe(address, "not-the-token-0123456789")) == grpc.StatusCode.PERMISSION_DENIED
    )
    assert asyncio.run(probe(address, TOKEN)) == grpc.StatusCode.NOT_FOUND  # let in; no such shard


def test_a_node_with_a_wrong_token_cannot_join(
    secured: tuple[LocalCluster, Path], tmp_path: Path
) -> None:
    cluster, _token_file = secured
    wrong = tmp_path / "wrong-token"
    wrong.write_text("definitely-not-the-token-42\n")
    log = tmp_path / "intruder.log"
    with log.open("w") as out:
        intruder = subprocess.Popen(
            [sys.executable, "-m", "shoal.storage_node", "--listen", "127.0.0.1:0",
             "--data-dir", str(tmp_path / "intruder"), "--coordinator", cluster.address,
             "--node-id", "intruder", "--cluster-token-file", str(wrong)],
            stdout=out, stderr=out,
        )  # fmt: skip
    try:
        wait_for(lambda: "wrong cluster token" in log.read_text(), what="the refusal in the log")
        with Client(cluster.address, token=TOKEN) as client:
            assert "intruder" not in [n["node_id"] for n in client.status()["nodes"]]
    finally:
        intruder.terminate()
        intruder.wait(timeout=10)


def test_cli_token_file(
    secured: tuple[LocalCluster, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster, token_file = secured
    monkeypatch.delenv("SHOAL_TOKEN", raising=False)
    monkeypatch.delenv("SHOAL_TOKEN_FILE", raising=False)
    refused = cli("ls", "--coordinator", cluster.address)
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1
    assert "cluster token" in refused.stderr
    assert "Traceback" not in refused.stderr
    allowed = cli("ls", "--coordinator", cluster.address, "--token-file", str(token_file))
    assert allowed.returncode == 0, allowed.stderr
    assert "open" in allowed.stdout
    # The local cluster's own token file is used when talking to it by --data-dir.
    local = cli("ls", "--data-dir", str(cluster.root))
    assert local.returncode == 0, local.stderr


def test_health_checks_need_no_token(secured: tuple[LocalCluster, Path]) -> None:
    """Load balancers and Kubernetes probes have no cluster token."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    cluster, _token_file = secured

    async def probe(address: str) -> int:
        async with grpc.aio.insecure_channel(address) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            return int(reply.status)

    for address in [cluster.address, *(cluster.node(n).address for n in cluster.nodes)]:
        assert asyncio.run(probe(address)) == health_pb2.HealthCheckResponse.SERVING
