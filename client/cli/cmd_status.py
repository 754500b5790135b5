"""`clusterctl status`: the cluster's health, capacity, nodes, objects and jobs.

`status --watch` redraws the view every --interval seconds (in place on a terminal, one
full view after another when piped) until Ctrl-C, which exits 130 without a message.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from shoal.client import Client
from shoal.client.cli.address import open_client
from shoal.client.cli.cmd_local import duration_arg
from shoal.client.cli.failures import UsageError, describe
from shoal.client.cli.render import make_console, render_status, status_view
from shoal.common.errors import ShoalError

EXIT_BY_HEALTH = {"HEALTHY": 0, "DEGRADED": 1, "UNAVAILABLE": 2}
UNREACHABLE_EXIT = 2
INTERRUPTED_EXIT = 130
DEFAULT_INTERVAL_S = 2.0


def cmd_status(args: argparse.Namespace) -> int:
    """Print the status; exit 0 if HEALTHY, 1 if DEGRADED, 2 if UNAVAILABLE."""
    interval: float | None = args.interval
    if interval is not None and not args.watch:
        raise UsageError("--interval needs --watch")
    if args.watch:
        return _watch(args, interval or DEFAULT_INTERVAL_S)
    with open_client(args) as client:
        status = client.status()
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        render_status(status, make_console())
    return EXIT_BY_HEALTH.get(str(status["health"]), UNREACHABLE_EXIT)


def _header(interval: float) -> Text:
    moment = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return Text(f"Every {interval:g}s, at {moment} (Ctrl-C to stop)", style="dim")


def _view(
    client: Client, console: Console, interval: float, last: dict[str, Any]
) -> tuple[list[RenderableType], dict[str, Any]]:
    """A fresh view with a header; after a failed refresh, the error above the last status."""
    header: list[RenderableType] = [_header(interval)]
    try:
        status = client.status()
    except (ShoalError, OSError) as exc:
        header.append(Text(f"refresh failed: {describe(exc)}", style="bold red"))
        status = last
    return [*header, Text(), *status_view(status, console)], status


def _watch(args: argparse.Namespace, interval: float) -> int:
    """Redraw until Ctrl-C; only the first fetch may fail the command (e.g. exit 2)."""
    console = make_console()
    with open_client(args) as client:
        status = client.status()
        view: list[RenderableType] = [_header(interval), Text(), *status_view(status, console)]
        try:
            if sys.stdout.isatty():
                with Live(Group(*view), console=console, auto_refresh=False) as live:
                    while True:
                        time.sleep(interval)
                        view, status = _view(client, console, interval, status)
                        live.update(Group(*view), refresh=True)
            while True:
                for part in view:
                    console.print(part)
                console.print()
                console.file.flush()
                time.sleep(interval)
                view, status = _view(client, console, interval, status)
        except KeyboardInterrupt:
            return INTERRUPTED_EXIT


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add the status subcommand to `sub`."""
    status = sub.add_parser(
        "status",
        parents=[common],
        help="show cluster health and jobs (exit 0 healthy, 1 degraded, 2 unavailable)",
    )
    output = status.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the status dict as JSON")
    output.add_argument(
        "--watch",
        action="store_true",
        help="refresh the view until Ctrl-C (in place on a terminal; exits 130)",
    )
    status.add_argument(
        "--interval",
        type=duration_arg,
        metavar="S",
        help=f"seconds (or 500ms) between refreshes with --watch (default: {DEFAULT_INTERVAL_S:g})",
    )
    status.set_defaults(handler=cmd_status, unreachable_exit=UNREACHABLE_EXIT)
