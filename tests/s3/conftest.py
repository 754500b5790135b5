"""A real local cluster (6 nodes, (4, 6), 1 MiB stripes) and a real `shoal-s3` gateway
process in front of it, shared by the S3 tests; each test uses its own buckets. Two users:
alice and bob."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from shoal.client import Client
from shoal.client.cli.local_cluster import LocalCluster
from shoal.s3.credentials import User, canonical_id, write
from tests.harness.cluster import start_cluster, unique

ALICE = User(
    "AKIDALICE00000000001", "alice-secret-0123456789abcdef", "alice", canonical_id("alice")
)
BOB = User("AKIDBOB0000000000002", "bob-secret-0123456789abcdefghi", "bob", canonical_id("bob"))


@dataclass(frozen=True)
class Gateway:
    cluster: LocalCluster
    endpoint: str
    credentials: Path


def s3_client(endpoint: str, user: User, **config: Any) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=user.access_key,
        aws_secret_access_key=user.secret_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **config),
    )


@pytest.fixture(scope="session")
def gateway(cluster_root: Path) -> Iterator[Gateway]:
    local = start_cluster(cluster_root / "s3")
    credentials = cluster_root / "s3-credentials.toml"
    write(credentials, [ALICE, BOB])
    try:
        daemon = local.start_s3(credentials=str(credentials))
        yield Gateway(local, f"http://{daemon.address}", credentials)
        # SIGTERM stops the gateway gracefully: exit status 0.
        assert local.stop_s3(signal.SIGTERM) == 0
    finally:
        codes = local.down()
    assert all(code == 0 for code in codes.values()), codes


@pytest.fixture(scope="session")
def s3(gateway: Gateway) -> Any:
    """boto3 as alice."""
    return s3_client(gateway.endpoint, ALICE)


@pytest.fixture(scope="session")
def s3_bob(gateway: Gateway) -> Any:
    return s3_client(gateway.endpoint, BOB)


@pytest.fixture(scope="session")
def native(gateway: Gateway) -> Iterator[Client]:
    with Client(gateway.cluster.address) as client:
        yield client


@pytest.fixture
def new_bucket(s3: Any) -> Callable[[], str]:
    def make() -> str:
        name = unique("s3")
        s3.create_bucket(Bucket=name)
        return name

    return make


@pytest.fixture
def bucket(new_bucket: Callable[[], str]) -> str:
    return new_bucket()
