"""Human rendering of the cluster status dict (see shoal.client.status) with rich."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from shoal.common.units import format_bytes, format_duration

HEALTH_STYLE = {"HEALTHY": "bold green", "DEGRADED": "bold yellow", "UNAVAILABLE": "bold red"}
NODE_STATE_STYLE = {"up": "green", "suspect": "yellow", "down": "red"}
OBJECT_HEALTH_STYLE = {"healthy": "green", "degraded": "yellow", "unavailable": "red"}
PIPE_WIDTH = 160


def make_console(stream: TextIO | None = None) -> Console:
    """A console that colours only a terminal and does not wrap tables when piped."""
    out = stream or sys.stdout
    tty = out.isatty()
    return Console(
        file=out,
        no_color=not tty,
        highlight=False,
        emoji=False,
        width=None if tty else PIPE_WIDTH,
    )


def _heartbeat(node: dict[str, Any]) -> Text:
    if node["state"] == "down":
        return Text(f"down {format_duration(node['down_for_s'])}", style="red")
    return Text(f"{node['last_heartbeat_age_s']:.1f}s ago")


def nodes_table(nodes: list[dict[str, Any]]) -> Table:
    """One row per storage node."""
    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
        title="Nodes",
        title_justify="left",
    )
    for name in ("NODE", "ADDRESS", "ZONE", "STATE"):
        table.add_column(name, no_wrap=name != "ZONE")
    for name in ("CAPACITY", "USED", "SHARDS"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("HEARTBEAT", no_wrap=True)
    for node in nodes:
        table.add_row(
            Text(node["node_id"]),
            Text(node["address"]),
            Text(node["zone"] or "-"),
            Text(node["state"], style=NODE_STATE_STYLE.get(node["state"], "")),
            format_bytes(node["capacity_bytes"]),
            format_bytes(node["used_bytes"]),
            str(node["shards"]),
            _heartbeat(node),
        )
    return table


def objects_table(status: dict[str, Any]) -> Table:
    """Object counts and bytes by health."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, title="Objects", title_justify="left")
    table.add_column("HEALTH")
    table.add_column("OBJECTS", justify="right")
    table.add_column("BYTES", justify="right")
    for health, style in OBJECT_HEALTH_STYLE.items():
        count = status["objects"][health]
        table.add_row(
            Text(health, style=style if count else ""),
            str(count),
            format_bytes(status["object_bytes"][health]),
        )
    return table


def stripes_table(histogram: dict[str, int]) -> Table:
    """Stripe counts by number of healthy shards, most shards first."""
    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        title="Stripes by healthy shards",
        title_justify="left",
    )
    table.add_column("HEALTHY SHARDS", justify="right")
    table.add_column("STRIPES", justify="right")
    for shards, count in sorted(histogram.items(), key=lambda item: -int(item[0])):
        table.add_row(shards, str(count))
    return table


def render_status(status: dict[str, Any], console: Console) -> None:
    """Print the status: health, capacity, nodes, objects and stripes."""
    health = status["health"]
    line = Text("Health: ")
    line.append(health, style=HEALTH_STYLE.get(health, "bold"))
    line.append(f" ({status['reason']})")
    console.print(line)
    capacity = status["capacity"]
    redundancy = status["default_redundancy"]
    console.print(
        f"Capacity: raw {format_bytes(capacity['raw_bytes'])}, "
        f"used {format_bytes(capacity['used_bytes'])}, "
        f"usable {format_bytes(capacity['usable_bytes'])} "
        f"(default k={redundancy['k']}, n={redundancy['n']})"
    )
    console.print(
        f"Buckets: {status['buckets']}; "
        f"shard deletions pending: {status['pending_shard_deletions']}"
    )
    console.print()
    console.print(nodes_table(status["nodes"]))
    console.print()
    console.print(objects_table(status))
    console.print()
    if status["stripes_by_healthy_shards"]:
        console.print(stripes_table(status["stripes_by_healthy_shards"]))
    else:
        console.print("Stripes: none stored")
