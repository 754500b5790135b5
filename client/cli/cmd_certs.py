"""`clusterctl certs init|issue`: a CA and certificates for mutual TLS (see certs.py)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from shoal.client.cli import certs
from shoal.common.errors import InvalidArgument


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def _days(text: str) -> int:
    value = _count(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _describe(path: Path) -> str:
    mode = path.stat().st_mode & 0o777
    return f"wrote {path} ({mode:04o})"


def _usage(directory: Path, hosts: list[str]) -> None:
    sans = ", ".join([*certs.LOCAL_HOSTS, *hosts])
    print(f"server certificates are valid for: {sans}")
    print(
        f"daemons: --tls-cert {directory}/<name>.pem --tls-key {directory}/<name>-key.pem "
        f"--tls-ca {directory / certs.CA_CERT}"
    )
    print(
        f"clients: clusterctl --tls-ca {directory / certs.CA_CERT} "
        f"--tls-cert {certs.cert_path(directory, certs.CLIENT)} "
        f"--tls-key {certs.key_path(directory, certs.CLIENT)} "
        "(or SHOAL_TLS_CA, SHOAL_TLS_CERT, SHOAL_TLS_KEY)"
    )
    print(
        f"keep {directory / certs.CA_KEY} off the cluster machines: it issues certificates "
        "the cluster trusts"
    )


def cmd_init(args: argparse.Namespace) -> int:
    """Create a CA and certificates for a coordinator, nodes, workers and clients."""
    directory = Path(args.dir)
    hosts = [certs.check_host(h) for h in args.host or []]
    written = certs.init_cluster(
        directory,
        nodes=args.nodes,
        workers=args.workers,
        hosts=hosts,
        days=args.days,
        force=args.force,
    )
    for path in written:
        print(_describe(path))
    _usage(directory, hosts)
    return 0


def cmd_issue(args: argparse.Namespace) -> int:
    """Issue one more certificate with the CA of an existing directory."""
    directory = Path(args.dir)
    name: str = args.name
    if not name or name.startswith(".") or os.sep in name or name == "ca":
        raise InvalidArgument(f"invalid certificate name {name!r}")
    hosts = [certs.check_host(h) for h in args.host or []]
    existing = [certs.cert_path(directory, name), certs.key_path(directory, name)]
    if any(p.exists() for p in existing) and not args.force:
        raise InvalidArgument(f"{existing[0]} already exists; pass --force to replace it")
    issued = certs.issue(directory, name, server=not args.client, hosts=hosts, days=args.days)
    print(_describe(issued.cert))
    print(_describe(issued.key))
    if issued.server:
        print(f"valid for: {', '.join(issued.hosts)} (server and client)")
    else:
        print("client certificate")
    return 0


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add `certs init` and `certs issue` to `sub`."""
    group = sub.add_parser(
        "certs", help="create a CA and certificates for mutual TLS (--tls-* on every daemon)"
    )
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)
    host_help = (
        "host name or IP address daemons are dialled by (repeatable); every server certificate "
        f"names them all, plus {', '.join(certs.LOCAL_HOSTS)}"
    )

    init = actions.add_parser(
        "init",
        parents=[common],
        help="create a CA and certificates for a coordinator, nodes, workers and clients",
        description="Write DIR/ca.pem and ca-key.pem (the cluster CA), coordinator.pem, "
        "node-<i>.pem, worker-<i>.pem and client.pem, each with its -key.pem (mode 0600).",
    )
    init.add_argument("dir", metavar="DIR", help="directory to write the files to")
    init.add_argument("--host", action="append", metavar="NAME_OR_IP", help=host_help)
    init.add_argument(
        "--nodes", type=_count, default=6, help="storage node certificates (default: 6)"
    )
    init.add_argument("--workers", type=_count, default=2, help="worker certificates (default: 2)")
    init.add_argument(
        "--days",
        type=_days,
        default=certs.DEFAULT_DAYS,
        help=f"validity of the certificates in days (default: {certs.DEFAULT_DAYS}; the CA: "
        f"{certs.CA_DAYS})",
    )
    init.add_argument(
        "--force", action="store_true", help="replace a CA and certificates already in DIR"
    )
    init.set_defaults(handler=cmd_init)

    issue = actions.add_parser(
        "issue",
        parents=[common],
        help="issue one more certificate (a new node, worker or client) with DIR's CA",
    )
    issue.add_argument("dir", metavar="DIR", help="directory holding ca.pem and ca-key.pem")
    issue.add_argument("name", metavar="NAME", help="e.g. node-7; writes NAME.pem, NAME-key.pem")
    issue.add_argument("--host", action="append", metavar="NAME_OR_IP", help=host_help)
    issue.add_argument(
        "--client",
        action="store_true",
        help="a client-only certificate (workers, clusterctl, SDK programs)",
    )
    issue.add_argument(
        "--days",
        type=_days,
        default=certs.DEFAULT_DAYS,
        help=f"validity in days (default: {certs.DEFAULT_DAYS})",
    )
    issue.add_argument("--force", action="store_true", help="replace NAME's files if they exist")
    issue.set_defaults(handler=cmd_issue)
