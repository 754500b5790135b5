"""Where the CLI finds the local cluster directory and the coordinator.

Precedence for the coordinator: --coordinator, then an explicit --data-dir's local cluster,
then SHOAL_COORDINATOR, then the local cluster in SHOAL_CLUSTER_DIR or ./.shoal.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from shoal.client import Client
from shoal.client.cli.failures import NoCoordinator, UsageError
from shoal.client.cli.local_cluster import (
    ClusterError,
    ClusterSettings,
    LocalCluster,
    client_tls_files,
)
from shoal.common.auth import read_token_file

DEFAULT_DATA_DIR = ".shoal"
NO_COORDINATOR = (
    "no coordinator: pass --coordinator, set SHOAL_COORDINATOR or start a local cluster with "
    "'clusterctl up'"
)


def data_dir(args: argparse.Namespace) -> Path:
    """The local cluster directory: --data-dir, else SHOAL_CLUSTER_DIR, else ./.shoal."""
    explicit: str | None = args.data_dir
    return Path(explicit or os.environ.get("SHOAL_CLUSTER_DIR") or DEFAULT_DATA_DIR)


def load_cluster(root: Path) -> LocalCluster:
    """Open the local cluster state in `root`; ClusterError if the state file is unreadable."""
    try:
        return LocalCluster(root)
    except (ValueError, TypeError, KeyError) as exc:
        raise ClusterError(f"cannot read the local cluster state in {root}: {exc}") from None


def _local_address(root: Path) -> str | None:
    if not (root / "cluster.json").exists():
        return None
    cluster = load_cluster(root)
    if cluster.coordinator is None or not cluster.coordinator.address:
        return None
    if not cluster.running(cluster.coordinator):
        raise NoCoordinator(
            f"the local cluster in {cluster.root} is not running (start it with 'clusterctl up')"
        )
    return cluster.address


def coordinator_address(args: argparse.Namespace) -> str:
    """Resolve the coordinator address for a command (see the module docstring)."""
    flag: str | None = args.coordinator
    if flag:
        return flag
    if args.data_dir is None and os.environ.get("SHOAL_COORDINATOR"):
        return os.environ["SHOAL_COORDINATOR"]
    address = _local_address(data_dir(args))
    if address is None:
        raise NoCoordinator(NO_COORDINATOR)
    return address


def _local_settings(args: argparse.Namespace) -> ClusterSettings | None:
    """The local cluster's settings when a command talks to it (no --coordinator)."""
    root = data_dir(args)
    if not getattr(args, "coordinator", None) and (root / "cluster.json").exists():
        return load_cluster(root).settings
    return None


def cluster_token(args: argparse.Namespace) -> str | None:
    """The cluster token: --token-file, else the local cluster's token file (when talking to
    the local cluster), else None (the SDK then reads SHOAL_TOKEN / SHOAL_TOKEN_FILE)."""
    path: str | None = getattr(args, "token_file", None)
    if path:
        return read_token_file(path)
    settings = _local_settings(args)
    if settings is not None and settings.token_file:
        return read_token_file(settings.token_file)
    return None


def cluster_tls(args: argparse.Namespace) -> tuple[str | None, str | None, str | None]:
    """The client's TLS files (CA, certificate, key): --tls-ca, --tls-cert, --tls-key, else
    the local cluster's CA and client certificate (when talking to a local cluster with TLS),
    else None each (the SDK then reads SHOAL_TLS_CA, SHOAL_TLS_CERT, SHOAL_TLS_KEY)."""
    ca: str | None = getattr(args, "tls_ca", None)
    cert: str | None = getattr(args, "tls_cert", None)
    key: str | None = getattr(args, "tls_key", None)
    if ca or cert or key:
        given = (("--tls-ca", ca), ("--tls-cert", cert), ("--tls-key", key))
        missing = [flag for flag, value in given if not value]
        if missing:
            raise UsageError(
                f"--tls-ca, --tls-cert and --tls-key go together: {' and '.join(missing)} missing"
            )
        return ca, cert, key
    settings = _local_settings(args)
    if settings is not None and settings.tls_dir:
        return client_tls_files(settings.tls_dir)
    return None, None, None


def open_client(args: argparse.Namespace) -> Client:
    """A Client connected to the resolved coordinator (use as a context manager)."""
    ca, cert, key = cluster_tls(args)
    return Client(
        coordinator_address(args), token=cluster_token(args), tls_ca=ca, tls_cert=cert, tls_key=key
    )
