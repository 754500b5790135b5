"""`clusterctl status`: the cluster's health, capacity, nodes and objects."""

from __future__ import annotations

import argparse
import json

from shoal.client.cli.address import open_client
from shoal.client.cli.render import make_console, render_status

EXIT_BY_HEALTH = {"HEALTHY": 0, "DEGRADED": 1, "UNAVAILABLE": 2}
UNREACHABLE_EXIT = 2


def cmd_status(args: argparse.Namespace) -> int:
    """Print the status; exit 0 if HEALTHY, 1 if DEGRADED, 2 if UNAVAILABLE."""
    with open_client(args) as client:
        status = client.status()
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        render_status(status, make_console())
    return EXIT_BY_HEALTH.get(str(status["health"]), UNREACHABLE_EXIT)


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add the status subcommand to `sub`."""
    status = sub.add_parser(
        "status",
        parents=[common],
        help="show cluster health (exit 0 healthy, 1 degraded, 2 unavailable)",
    )
    status.add_argument("--json", action="store_true", help="print the status dict as JSON")
    status.set_defaults(handler=cmd_status, unreachable_exit=UNREACHABLE_EXIT)
