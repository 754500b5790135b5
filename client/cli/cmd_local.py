"""Local cluster commands: up, down, node stop/start, worker stop/start (daemons on this
machine)."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from shoal.client.cli.address import data_dir, load_cluster
from shoal.client.cli.failures import UsageError
from shoal.client.cli.local_cluster import (
    ClusterError,
    ClusterSettings,
    LocalCluster,
    client_tls_files,
)
from shoal.common.erasure import check_redundancy
from shoal.common.units import format_duration, parse_duration, parse_size

DEFAULTS = ClusterSettings()


def duration_arg(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return seconds


def _delay(text: str) -> float:
    """A duration that may be zero."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _size(text: str) -> int:
    try:
        size = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if size <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return size


def _count(text: str, *, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value


def _workers(text: str) -> int:
    return _count(text, minimum=0)


def _slots(text: str) -> int:
    return _count(text, minimum=1)


def _span(seconds: float) -> str:
    """'500ms', '2.5s', '2m00s': exact below a minute, compact above."""
    if 0 < seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s" if seconds < 60 else format_duration(seconds)


def _zones(text: str | None) -> list[str] | None:
    if text is None:
        return None
    zones = [zone.strip() for zone in text.split(",")]
    if not all(zones):
        raise UsageError(f"--zones must be a comma-separated list of names, got {text!r}")
    return zones


def cmd_up(args: argparse.Namespace) -> int:
    """Start a coordinator and storage nodes in the data directory."""
    k: int = args.k
    n: int = args.n
    nodes: int = args.nodes
    check_redundancy(k, n)
    zones = _zones(args.zones)
    heartbeat_timeout: float = args.heartbeat_timeout
    down_after: float | None = args.down_after
    if down_after is None:
        down_after = max(DEFAULTS.down_after_s, heartbeat_timeout)
    elif down_after < heartbeat_timeout:
        raise UsageError(
            f"--down-after ({_span(down_after)}) must be at least --heartbeat-timeout "
            f"({_span(heartbeat_timeout)})"
        )
    settings = ClusterSettings(
        k=k,
        n=n,
        heartbeat_timeout_s=heartbeat_timeout,
        stripe_bytes=args.stripe_bytes,
        down_after_s=down_after,
        repair_after_s=args.repair_after,
        metrics=args.metrics,
        tls_dir=str(data_dir(args).resolve() / "tls") if args.tls else "",
    )
    workers: int = args.workers
    slots: int | None = args.worker_slots
    cluster = load_cluster(data_dir(args))
    cluster.up(nodes, settings=settings, zones=zones, workers=workers, worker_slots=slots or 0)
    if n > nodes:
        print(
            f"clusterctl: warning: n={n} exceeds the {nodes} nodes started; writes at the "
            "default redundancy fail until more nodes join",
            file=sys.stderr,
        )
    print(f"coordinator at {cluster.address} with {nodes} nodes (k={k}, n={n}) in {cluster.root}")
    print(
        f"nodes are down after {_span(settings.down_after_s)} without a heartbeat; "
        f"repair starts after {_span(settings.repair_after_s)}"
    )
    if workers:
        each = slots or os.cpu_count() or 1
        print(
            f"{workers} worker{'s' if workers != 1 else ''} ({', '.join(cluster.workers)}) "
            f"with {each} task slot{'s' if each != 1 else ''} each; "
            "jobs: clusterctl job list"
        )
    print(f"export SHOAL_COORDINATOR={cluster.address}")
    if settings.metrics:
        daemons = [cluster.coordinator, *cluster.nodes.values(), *cluster.workers.values()]
        targets = [f"{d.name} {d.metrics_address}" for d in daemons if d and d.metrics_address]
        print("Prometheus metrics at http://HOST:PORT/metrics: " + ", ".join(targets))
    if settings.tls_dir:
        ca, cert, key = client_tls_files(settings.tls_dir)
        print(f"mutual TLS on every connection; CA and certificates in {settings.tls_dir}")
        print(f"export SHOAL_TLS_CA={ca} SHOAL_TLS_CERT={cert} SHOAL_TLS_KEY={key}")
    if args.s3:
        _start_s3(cluster, args.s3_listen)
    return 0


def _start_s3(cluster: LocalCluster, listen: str) -> None:
    """Start the S3 gateway with the cluster's generated user and say how to use it."""
    try:
        gateway = cluster.start_s3(listen)
    except BaseException:
        cluster.down()
        raise
    path, access, secret = cluster.s3_credentials()
    endpoint = f"http://{gateway.address}"
    print(f"S3 gateway at {endpoint} (users in {path})")
    print(f"export AWS_ACCESS_KEY_ID={access} AWS_SECRET_ACCESS_KEY={secret}")
    print(f"export AWS_DEFAULT_REGION=us-east-1 AWS_ENDPOINT_URL={endpoint}")
    print(f"aws s3 ls --endpoint-url {endpoint}")


def cmd_down(args: argparse.Namespace) -> int:
    """Stop every daemon of the local cluster (workers and nodes first)."""
    cluster = load_cluster(data_dir(args))
    if cluster.coordinator is None:
        raise ClusterError(f"no local cluster in {cluster.root}")
    gateway = [cluster.gateway] if cluster.gateway else []
    daemons = [*gateway, *cluster.workers.values(), *cluster.nodes.values(), cluster.coordinator]
    running = [d.name for d in daemons if d.pid and cluster.running(d)]
    cluster.down()
    if running:
        print(f"stopped {', '.join(running)}")
    else:
        print(f"nothing was running in {cluster.root}")
    return 0


def cmd_node_stop(args: argparse.Namespace) -> int:
    """Stop one node of the local cluster (SIGTERM, or SIGKILL with --kill)."""
    cluster = load_cluster(data_dir(args))
    cluster.stop_node(args.node, signal.SIGKILL if args.kill else signal.SIGTERM)
    print(f"{'killed' if args.kill else 'stopped'} {args.node}")
    return 0


def cmd_node_start(args: argparse.Namespace) -> int:
    """Restart a stopped node of the local cluster on its previous address."""
    cluster = load_cluster(data_dir(args))
    daemon = cluster.start_node(args.node)
    print(f"started {daemon.name} at {daemon.address}")
    return 0


def cmd_worker_stop(args: argparse.Namespace) -> int:
    """Stop one worker of the local cluster (SIGTERM, or SIGKILL with --kill: its tasks are
    leased again to other workers)."""
    name: str = args.worker
    cluster = load_cluster(data_dir(args))
    daemon = cluster.worker(name)
    if not cluster.running(daemon):
        raise ClusterError(f"{name} is not running")
    cluster.stop_workers([name], signal.SIGKILL if args.kill else signal.SIGTERM)
    print(f"{'killed' if args.kill else 'stopped'} {name}")
    return 0


def cmd_worker_start(args: argparse.Namespace) -> int:
    """Restart a stopped worker of the local cluster."""
    name: str = args.worker
    cluster = load_cluster(data_dir(args))
    cluster.start_workers([name])
    print(f"started {name} (pid {cluster.worker(name).pid})")
    return 0


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add up and down to `sub`; `common` holds --data-dir and --debug."""
    up = sub.add_parser("up", parents=[common], help="start a local cluster")
    up.add_argument("--nodes", type=int, default=6, help="storage nodes to start (default: 6)")
    up.add_argument("--k", type=int, default=DEFAULTS.k, help="default data shards (default: 4)")
    up.add_argument("--n", type=int, default=DEFAULTS.n, help="default total shards (default: 6)")
    up.add_argument(
        "--heartbeat-timeout",
        type=duration_arg,
        default=DEFAULTS.heartbeat_timeout_s,
        metavar="S",
        help="seconds (or 500ms, 1m) before a silent node is suspect (default: 3)",
    )
    up.add_argument(
        "--down-after",
        type=duration_arg,
        metavar="S",
        help="seconds without a heartbeat before a node is down and its shards stop counting "
        f"(default: {DEFAULTS.down_after_s:g}, at least --heartbeat-timeout)",
    )
    up.add_argument(
        "--repair-after",
        type=_delay,
        default=DEFAULTS.repair_after_s,
        metavar="S",
        help="how long a node may stay down before its shards are rebuilt elsewhere "
        f"(default: {_span(DEFAULTS.repair_after_s)})",
    )
    up.add_argument(
        "--stripe-bytes",
        type=_size,
        default=DEFAULTS.stripe_bytes,
        metavar="B",
        help="stripe size in bytes or with a unit such as 1MiB (default: 4MiB)",
    )
    up.add_argument("--zones", metavar="Z1,Z2,...", help="assign nodes to zones round-robin")
    up.add_argument(
        "--workers",
        type=_workers,
        default=0,
        metavar="N",
        help="task workers to start; worker i runs beside node i (default: 0)",
    )
    up.add_argument(
        "--worker-slots",
        type=_slots,
        metavar="S",
        help="task slots (cpus offered) per worker (default: the number of cores)",
    )
    up.add_argument(
        "--tls",
        action="store_true",
        help="mutual TLS between every daemon and client: creates a CA and certificates in "
        "DATA_DIR/tls (kept across restarts) and starts every daemon with them",
    )
    up.add_argument(
        "--metrics",
        action="store_true",
        help="every daemon serves Prometheus metrics on a free port (listed at start and in "
        "DATA_DIR/cluster.json)",
    )
    up.add_argument(
        "--s3",
        action="store_true",
        help="also start the S3 gateway (shoal-s3) with a generated user in DATA_DIR/s3; "
        "prints the endpoint and keys",
    )
    up.add_argument(
        "--s3-listen",
        default="127.0.0.1:9000",
        metavar="HOST:PORT",
        help="where the S3 gateway listens with --s3 (default: 127.0.0.1:9000; port 0 picks "
        "a free port)",
    )
    up.set_defaults(handler=cmd_up)

    down = sub.add_parser(
        "down", parents=[common], help="stop the local cluster (workers, nodes, coordinator)"
    )
    down.set_defaults(handler=cmd_down)


def register_node(
    actions: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add stop and start (local cluster only) to the `node` subcommand's `actions`."""
    stop = actions.add_parser("stop", parents=[common], help="stop a node of the local cluster")
    stop.add_argument("node", metavar="ID")
    stop.add_argument("--kill", action="store_true", help="SIGKILL (a crash) instead of SIGTERM")
    stop.set_defaults(handler=cmd_node_stop)
    start = actions.add_parser(
        "start", parents=[common], help="restart a stopped node of the local cluster"
    )
    start.add_argument("node", metavar="ID")
    start.set_defaults(handler=cmd_node_start)


def register_worker(
    actions: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add stop and start (local cluster only) to the `worker` subcommand's `actions`."""
    stop = actions.add_parser("stop", parents=[common], help="stop a worker of the local cluster")
    stop.add_argument("worker", metavar="ID")
    stop.add_argument(
        "--kill", action="store_true", help="SIGKILL (a crash: its tasks run again elsewhere)"
    )
    stop.set_defaults(handler=cmd_worker_stop)
    start = actions.add_parser(
        "start", parents=[common], help="restart a stopped worker of the local cluster"
    )
    start.add_argument("worker", metavar="ID")
    start.set_defaults(handler=cmd_worker_start)
