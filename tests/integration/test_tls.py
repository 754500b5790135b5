"""Mutual TLS plus the cluster token on a real local cluster: with both, everything works
(SDK, shard traffic, jobs whose tasks use the SDK, clusterctl); without a certificate signed by
the cluster CA, or without the token, nobody reads, writes or joins."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import grpc.aio
import pytest

from shoal.client import Client, ConnectionFailed, JobOptions, PermissionDenied
from shoal.client.cli import certs
from shoal.client.cli.local_cluster import LocalCluster, client_tls_files
from shoal.common.names import shard_id
from shoal.common.tls import load_tls
from shoal.common.transport import Transport
from shoal.rpc.v1 import storage_pb2 as spb
from shoal.rpc.v1 import storage_pb2_grpc as spb_grpc
from tests.harness.cluster import TEST_SETTINGS, unique, wait_for

TOKEN = "tls-and-token-0123456789abcdef"


@dataclasses.dataclass(frozen=True)
class Secured:
    cluster: LocalCluster
    token_file: Path
    tls_dir: Path
    other_ca: Path  # a second CA with its own certificates, not trusted by the cluster

    @property
    def client_files(self) -> dict[str, str]:
        ca, cert, key = client_tls_files(str(self.tls_dir))
        return {"tls_ca": ca, "tls_cert": cert, "tls_key": key}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    root = tmp_path_factory.mktemp("tls")
    token_file = root / "token"
    token_file.write_text(TOKEN + "\n")
    other_ca = root / "other-ca"
    certs.init_cluster(other_ca, nodes=1, workers=0)
    settings = dataclasses.replace(
        TEST_SETTINGS, k=2, n=3, token_file=str(token_file), tls_dir=str(root / "tls")
    )
    cluster = LocalCluster(root / "cluster")
    # Four nodes at (2, 3): one can be drained, which makes the coordinator dial nodes and
    # nodes dial each other.
    cluster.up(4, settings=settings, workers=1, worker_slots=1)
    yield Secured(cluster, token_file, root / "tls", other_ca)
    cluster.down()


@pytest.fixture(autouse=True)
def no_env_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SHOAL_"):
            monkeypatch.delenv(name)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    return subprocess.run(
        [sys.executable, "-m", "shoal.client.cli", *args],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip


def test_token_and_tls_open_everything(secured: Secured) -> None:
    with Client(secured.cluster.address, token=TOKEN, **secured.client_files) as client:
        client.create_bucket("sealed", 2, 3)
        data = os.urandom(3 * 1024 * 1024 + 17)  # several stripes, shards on every node
        client.put("sealed", "k", data)
        assert client.get("sealed", "k") == data
        # The worker dials the coordinator with TLS, and so does the SDK client in its task.
        job = client.submit(pow, 3, 4, job_options=JobOptions(max_attempts=1))
        assert job.result(timeout=60) == 81
        assert [n["state"] for n in client.status()["nodes"]] == ["up"] * 4


def test_sdk_takes_tls_files_from_the_environment(
    secured: Secured, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = secured.client_files
    monkeypatch.setenv("SHOAL_TLS_CA", files["tls_ca"])
    monkeypatch.setenv("SHOAL_TLS_CERT", files["tls_cert"])
    monkeypatch.setenv("SHOAL_TLS_KEY", files["tls_key"])
    monkeypatch.setenv("SHOAL_TOKEN_FILE", str(secured.token_file))
    with Client(secured.cluster.address) as client:
        assert isinstance(client.list_buckets(), list)


def test_a_plaintext_client_is_refused(secured: Secured) -> None:
    with (
        Client(secured.cluster.address, token=TOKEN) as client,
        pytest.raises(ConnectionFailed, match="if the cluster uses TLS"),
    ):
        client.list_buckets()


def test_a_client_of_another_ca_is_refused(secured: Secured) -> None:
    other = {
        "tls_ca": str(secured.other_ca / "ca.pem"),
        "tls_cert": str(secured.other_ca / "client.pem"),
        "tls_key": str(secured.other_ca / "client-key.pem"),
    }
    with (
        Client(secured.cluster.address, token=TOKEN, **other) as client,
        pytest.raises(ConnectionFailed, match="not signed by the CA"),
    ):
        client.list_buckets()


def test_a_token_without_tls_or_tls_without_the_token_is_refused(secured: Secured) -> None:
    with (
        Client(secured.cluster.address, token="", **secured.client_files) as client,
        pytest.raises(PermissionDenied, match="cluster token"),
    ):
        client.list_buckets()


def _probe_node(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    """GetShard of a missing shard with the right token, over the given channel security."""

    async def probe() -> grpc.StatusCode:
        metadata = (("authorization", f"Bearer {TOKEN}"),)
        channel = (
            grpc.aio.secure_channel(address, credentials)
            if credentials is not None
            else grpc.aio.insecure_channel(address)
        )
        try:
            stub = spb_grpc.StorageNodeStub(channel)
            request = spb.GetShardRequest(shard_id=f"{'0' * 32}.0.0")
            try:
                async for _message in stub.GetShard(request, timeout=5, metadata=metadata):
                    pass
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK
        finally:
            await channel.close()

    return asyncio.run(probe())


def test_nodes_require_a_client_certificate_signed_by_the_cluster_ca(secured: Secured) -> None:
    address = secured.cluster.node("node-1").address
    ca, cert, key = (Path(p).read_bytes() for p in client_tls_files(str(secured.tls_dir)))
    foreign_cert = (secured.other_ca / "client.pem").read_bytes()
    foreign_key = (secured.other_ca / "client-key.pem").read_bytes()
    good = grpc.ssl_channel_credentials(ca, key, cert)
    no_certificate = grpc.ssl_channel_credentials(ca)
    # Trusts the node, but presents a certificate the cluster CA did not sign.
    foreign = grpc.ssl_channel_credentials(ca, foreign_key, foreign_cert)
    assert _probe_node(address, good) == grpc.StatusCode.NOT_FOUND  # let in; no such shard
    assert _probe_node(address, None) == grpc.StatusCode.UNAVAILABLE
    assert _probe_node(address, no_certificate) == grpc.StatusCode.UNAVAILABLE
    assert _probe_node(address, foreign) == grpc.StatusCode.UNAVAILABLE


def test_health_checks_work_over_tls(secured: Secured) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    ca, cert, key = client_tls_files(str(secured.tls_dir))
    transport = Transport("", load_tls(cert, key, ca))

    async def probe(address: str) -> int:
        async with transport.channel(address) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            return int(reply.status)

    for address in [secured.cluster.address, secured.cluster.node("node-2").address]:
        assert asyncio.run(probe(address)) == health_pb2.HealthCheckResponse.SERVING


def test_intruding_nodes_cannot_join(secured: Secured, tmp_path: Path) -> None:
    """One node has the cluster's certificates but a wrong token; one has the token but no
    TLS. Both are refused, each with a log line saying why."""
    wrong_token = tmp_path / "wrong-token"
    wrong_token.write_text("definitely-not-the-token-42\n")
    issued = certs.issue(secured.tls_dir, "intruder-1", server=True)
    intruders = {
        "intruder-1": [
            "--cluster-token-file", str(wrong_token), "--tls-cert", str(issued.cert),
            "--tls-key", str(issued.key), "--tls-ca", str(secured.tls_dir / "ca.pem"),
        ],
        "intruder-2": ["--cluster-token-file", str(secured.token_file)],
    }  # fmt: skip
    expected = {"intruder-1": "wrong cluster token", "intruder-2": "if the cluster uses TLS"}
    processes = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    try:
        for name, extra in intruders.items():
            command = [
                sys.executable, "-m", "shoal.storage_node", "--listen", "127.0.0.1:0",
                "--data-dir", str(tmp_path / name), "--node-id", name,
                "--coordinator", secured.cluster.address, *extra,
            ]  # fmt: skip
            with (tmp_path / f"{name}.log").open("w") as out:
                processes.append(subprocess.Popen(command, stdout=out, stderr=out, env=env))
        for name, fragment in expected.items():
            log = tmp_path / f"{name}.log"
            wait_for(lambda log=log, f=fragment: f in log.read_text(), what=f"{name} refused")
        with Client(secured.cluster.address, token=TOKEN, **secured.client_files) as client:
            joined = {n["node_id"] for n in client.status()["nodes"]}
        assert joined == {"node-1", "node-2", "node-3", "node-4"}
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=10)


def test_clusterctl_with_and_without_tls_flags(secured: Secured) -> None:
    address = secured.cluster.address
    token = ["--token-file", str(secured.token_file)]
    refused = cli("ls", "--coordinator", address, *token)
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert refused.stderr.startswith("clusterctl: error: cannot reach the coordinator")
    assert "--tls-ca" in refused.stderr
    files = secured.client_files
    tls = ["--tls-ca", files["tls_ca"], "--tls-cert", files["tls_cert"]]
    tls += ["--tls-key", files["tls_key"]]
    allowed = cli("ls", "--coordinator", address, *token, *tls)
    assert allowed.returncode == 0, allowed.stderr
    # Flags before the subcommand work too (global options).
    assert cli("--coordinator", address, *token, *tls, "ls").returncode == 0
    incomplete = cli("ls", "--coordinator", address, *token, "--tls-ca", files["tls_ca"])
    assert incomplete.returncode == 2
    assert "--tls-cert and --tls-key missing" in incomplete.stderr
    # Talking to the local cluster by its directory uses its token and client certificate.
    local = cli("status", "--data-dir", str(secured.cluster.root))
    assert local.returncode == 0, local.stderr


def test_repair_traffic_runs_over_tls(secured: Secured) -> None:
    """Draining a node: the coordinator asks nodes to rebuild its shards (coordinator -> node)
    and they read the other shards from their peers (node -> node), all with TLS."""
    with Client(secured.cluster.address, token=TOKEN, **secured.client_files) as client:
        bucket = unique("drain")
        client.create_bucket(bucket, 2, 3)
        data = os.urandom(4 * 1024 * 1024)
        client.put(bucket, "k", data)
        nodes = client.status()["nodes"]
        busiest = max(nodes, key=lambda n: n["shards"])["node_id"]
        client.drain_node(busiest)

        def drained() -> bool:
            node = next(n for n in client.status()["nodes"] if n["node_id"] == busiest)
            drain = node["drain"]
            return bool(drain and drain["ratio"] == 1.0 and drain["shards_remaining"] == 0)

        try:
            wait_for(drained, timeout_s=60, what=f"{busiest} drained over TLS")
            # Every shard of the object now also lives on a node other than the drained one.
            info = client.head(bucket, "k")
            others = [name for name in secured.cluster.nodes if name != busiest]
            for stripe in range(4):
                for index in range(info.n):
                    sid = shard_id(info.version_id, stripe, index)
                    assert any(secured.cluster.shard_path(o, sid).exists() for o in others)
        finally:
            client.drain_node(busiest, cancel=True)
