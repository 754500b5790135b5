"""Shared fixtures: a session-wide 6-node cluster for non-destructive tests, and fresh
clusters for tests that kill or corrupt things."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shoal.client import Client
from shoal.client.cli.local_cluster import ClusterSettings, LocalCluster
from tests.harness.cluster import TEST_SETTINGS, start_cluster, unique


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="run long chaos/fault tests")
    parser.addoption(
        "--keep-tmp", action="store_true", help="keep cluster directories for inspection"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow") or os.environ.get("SHOAL_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(
        reason="slow: run with --runslow or SHOAL_RUN_SLOW=1 (CI runs the bounded variant)"
    )
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def cluster_root(request: pytest.FixtureRequest) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="shoal-test-"))
    yield root
    if not request.config.getoption("--keep-tmp"):
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster(cluster_root: Path) -> Iterator[LocalCluster]:
    """A 6-node (4, 6) cluster shared by non-destructive tests; they use unique buckets."""
    local = start_cluster(cluster_root / "shared")
    yield local
    codes = local.down()
    # Graceful shutdown is part of the contract: every daemon exits 0 on SIGTERM.
    assert all(code == 0 for code in codes.values()), f"unclean daemon exits: {codes}"


@pytest.fixture(scope="session")
def client(cluster: LocalCluster) -> Iterator[Client]:
    with Client(cluster.address) as shared:
        yield shared


@pytest.fixture
def bucket(client: Client) -> str:
    name = unique("b")
    client.create_bucket(name, 4, 6)
    return name


@pytest.fixture
def make_cluster(cluster_root: Path) -> Iterator[Callable[..., LocalCluster]]:
    """Factory for a private cluster (for tests that kill nodes); stopped at teardown."""
    started: list[LocalCluster] = []

    def make(
        nodes: int = 6, settings: ClusterSettings = TEST_SETTINGS, zones: list[str] | None = None
    ) -> LocalCluster:
        local = start_cluster(cluster_root / unique("c"), nodes, settings, zones)
        started.append(local)
        return local

    yield make
    for local in started:
        local.down()
