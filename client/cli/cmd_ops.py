"""Operations on any cluster: repair hold/resume/errors, scrub, node drain/remove."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from rich import box
from rich.table import Table
from rich.text import Text

from shoal.client import RepairErrorInfo
from shoal.client.cli.address import open_client
from shoal.client.cli.args import bounded_int
from shoal.client.cli.render import make_console
from shoal.common.units import format_duration

MAX_ERRORS = 1000
DEFAULT_ERRORS = 100


def cmd_repair_hold(args: argparse.Namespace) -> int:
    """Pause automatic repair (it stays paused across coordinator restarts)."""
    with open_client(args) as client:
        client.hold_repair(True)
    print("automatic repair is held; resume it with 'clusterctl repair resume'")
    return 0


def cmd_repair_resume(args: argparse.Namespace) -> int:
    """Resume automatic repair."""
    with open_client(args) as client:
        client.hold_repair(False)
    print("automatic repair resumed")
    return 0


def _next_attempt(moment: datetime, now: datetime) -> str:
    seconds = (moment - now).total_seconds()
    return f"in {format_duration(seconds)}" if seconds >= 1 else "due now"


def errors_table(errors: list[RepairErrorInfo], now: datetime | None = None) -> Table:
    """One row per recorded repair failure."""
    now = now or datetime.now(UTC)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    table.add_column("OBJECT", overflow="fold")
    table.add_column("STRIPE", justify="right", no_wrap=True)
    table.add_column("SHARD", justify="right", no_wrap=True)
    table.add_column("REASON", ratio=1)
    table.add_column("ATTEMPTS", justify="right", no_wrap=True)
    table.add_column("NEXT ATTEMPT", no_wrap=True)
    for error in errors:
        table.add_row(
            Text(f"{error.bucket}/{error.key}"),
            str(error.stripe_index),
            str(error.shard_index),
            Text(error.reason),
            str(error.attempts),
            _next_attempt(error.next_attempt, now),
        )
    return table


def cmd_repair_errors(args: argparse.Namespace) -> int:
    """List recorded repair failures, most recent first."""
    limit: int = args.limit
    with open_client(args) as client:
        errors, total = client.repair_errors(limit)
    if not errors:
        print("no repair errors")
        return 0
    console = make_console()
    console.print(errors_table(errors))
    if total > len(errors):
        console.print(f"showing {len(errors)} of {total} repair errors (see --limit)")
    return 0


def cmd_scrub(args: argparse.Namespace) -> int:
    """Start a scrub pass now on NODE, or on every live node."""
    node: str | None = args.node
    with open_client(args) as client:
        started = client.scrub(node)
    if started:
        print(f"scrub started on {', '.join(started)} (progress: clusterctl status)")
    else:
        print("no live nodes to scrub")
    return 0


def cmd_node_drain(args: argparse.Namespace) -> int:
    """Move every shard off a node (or cancel that with --cancel)."""
    node: str = args.node
    with open_client(args) as client:
        to_move = client.drain_node(node, cancel=args.cancel)
    if args.cancel:
        print(f"drain of {node} cancelled; it accepts new shards again")
    elif to_move:
        print(f"draining {node}: {to_move} shards to move (progress: clusterctl status)")
    else:
        print(f"draining {node}: no shards to move; remove it with 'clusterctl node remove {node}'")
    return 0


def cmd_node_remove(args: argparse.Namespace) -> int:
    """Decommission a node; the coordinator refuses while stripes need its shards to stay at k."""
    node: str = args.node
    with open_client(args) as client:
        left = client.remove_node(node)
    if left:
        print(f"removed {node}; repair rebuilds the {left} shards it still held elsewhere")
    else:
        print(f"removed {node} (it held no shards)")
    return 0


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add repair and scrub to `sub`; `common` holds --coordinator, --data-dir and --debug."""
    repair = sub.add_parser("repair", help="hold or resume automatic repair, list its errors")
    actions = repair.add_subparsers(dest="action", metavar="ACTION", required=True)
    hold = actions.add_parser(
        "hold", parents=[common], help="pause automatic repair (e.g. for maintenance)"
    )
    hold.set_defaults(handler=cmd_repair_hold)
    resume = actions.add_parser("resume", parents=[common], help="resume automatic repair")
    resume.set_defaults(handler=cmd_repair_resume)
    errors = actions.add_parser(
        "errors", parents=[common], help="list failed shard repairs (most recent first)"
    )
    errors.add_argument(
        "--limit",
        type=bounded_int(MAX_ERRORS),
        default=DEFAULT_ERRORS,
        metavar="N",
        help=f"show at most N errors (1-{MAX_ERRORS}, default: {DEFAULT_ERRORS})",
    )
    errors.set_defaults(handler=cmd_repair_errors)

    scrub = sub.add_parser(
        "scrub", parents=[common], help="verify shard checksums now on one node or every node"
    )
    scrub.add_argument("node", metavar="NODE", nargs="?", help="node id (default: every node)")
    scrub.set_defaults(handler=cmd_scrub)


def register_node(
    actions: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add drain and remove to the `node` subcommand's `actions`."""
    drain = actions.add_parser(
        "drain", parents=[common], help="move every shard off a node (it keeps serving reads)"
    )
    drain.add_argument("node", metavar="ID")
    drain.add_argument("--cancel", action="store_true", help="stop draining; accept shards again")
    drain.set_defaults(handler=cmd_node_drain)
    remove = actions.add_parser(
        "remove", parents=[common], help="decommission a node (drain it first)"
    )
    remove.add_argument("node", metavar="ID")
    remove.set_defaults(handler=cmd_node_remove)
