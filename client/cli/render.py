"""Human rendering of the cluster status dict (see shoal.client.status) with rich."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from rich import box
from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from shoal.client.cli.jobs_view import status_jobs_section
from shoal.common.units import format_bytes, format_duration

HEALTH_STYLE = {"HEALTHY": "bold green", "DEGRADED": "bold yellow", "UNAVAILABLE": "bold red"}
NODE_STATE_STYLE = {
    "up": "green",
    "suspect": "yellow",
    "down": "red",
    "draining": "cyan",
    "decommissioned": "dim",
}
OBJECT_HEALTH_STYLE = {"healthy": "green", "degraded": "yellow", "unavailable": "red"}
PIPE_WIDTH = 160


def _pipe_width() -> int:
    """Width when not on a terminal: COLUMNS if set (e.g. COLUMNS=60), else PIPE_WIDTH."""
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else PIPE_WIDTH


def make_console(stream: TextIO | None = None) -> Console:
    """A console that colours only a terminal and does not wrap tables when piped (unless
    COLUMNS asks for a width)."""
    out = stream or sys.stdout
    tty = out.isatty()
    return Console(
        file=out,
        no_color=not tty,
        highlight=False,
        emoji=False,
        width=None if tty else _pipe_width(),
    )


def _percent(ratio: float) -> str:
    """Rounded down, so 100% means done."""
    return f"{math.floor(ratio * 100)}%"


def _countdown(seconds: float) -> str:
    """Rounded up, so a countdown shows 0s only when it has run out."""
    return format_duration(math.ceil(seconds))


def _down_state(node: dict[str, Any], repair: dict[str, Any]) -> str:
    text = f"down {format_duration(node['down_for_s'])}"
    wait = float(node.get("repair_in_s", 0.0))
    if repair.get("held"):
        text += f", repair in {_countdown(wait)} (held)" if wait > 0 else ", repair held"
    elif wait > 0:
        text += f", repair in {_countdown(wait)}"
    else:
        text += ", repairing" if repair.get("active") else ", repair idle"
    if node.get("drain") is not None:
        text += ", draining"
    return text


def _drain_state(drain: dict[str, Any] | None) -> str:
    if not drain:
        return "draining"
    total, remaining = int(drain["shards_total"]), int(drain["shards_remaining"])
    if total < remaining:
        # The total is lost when the coordinator restarts; only the remainder is known.
        return f"draining ({remaining} shards left)"
    verb = "drained" if remaining == 0 else "draining"
    return f"{verb} {_percent(drain['ratio'])} ({total - remaining}/{total})"


def node_state(node: dict[str, Any], repair: dict[str, Any]) -> Text:
    """The STATE cell: the state, with down time and repair countdown, or drain progress."""
    state = node["state"]
    style = NODE_STATE_STYLE.get(state, "")
    if state == "down":
        return Text(_down_state(node, repair), style=style)
    if state == "draining":
        return Text(_drain_state(node.get("drain")), style=style)
    return Text(state, style=style)


def _heartbeat(node: dict[str, Any]) -> Text:
    if node["state"] == "decommissioned":
        return Text("-")
    age = float(node["last_heartbeat_age_s"])
    if node["state"] == "down":
        return Text(f"{format_duration(age)} ago", style="red")
    return Text(f"{age:.1f}s ago")


def _scrub(node: dict[str, Any]) -> Text:
    scrub = node.get("scrub") or {}
    text = Text(_percent(scrub["ratio"]) if scrub.get("running") else "-")
    corrupt = int(node.get("corrupt_found", 0))
    if corrupt:
        text.append(f" {corrupt} corrupt", style="red")
    return text


def _shows_scrub(nodes: list[dict[str, Any]]) -> bool:
    return any((n.get("scrub") or {}).get("running") or n.get("corrupt_found") for n in nodes)


@dataclass(frozen=True)
class _Column:
    name: str
    cell: Callable[[dict[str, Any], dict[str, Any]], Text]
    right: bool = False
    wrap: bool = True
    min_width: int | None = None


def _node_columns(nodes: list[dict[str, Any]]) -> list[_Column]:
    columns = [
        _Column("NODE", lambda n, _r: Text(n["node_id"]), wrap=False),
        _Column("ADDRESS", lambda n, _r: Text(n["address"])),
        _Column("ZONE", lambda n, _r: Text(n["zone"] or "-")),
        _Column("STATE", node_state, min_width=len("decommissioned")),
        _Column("CAPACITY", lambda n, _r: Text(format_bytes(n["capacity_bytes"])), True, False),
        _Column("USED", lambda n, _r: Text(format_bytes(n["used_bytes"])), True, False),
        _Column("SHARDS", lambda n, _r: Text(str(n["shards"])), True, False),
        _Column("HEARTBEAT", lambda n, _r: _heartbeat(n)),
    ]
    if _shows_scrub(nodes):
        columns.append(_Column("SCRUB", lambda n, _r: _scrub(n)))
    if not any(n["zone"] for n in nodes):
        columns = [c for c in columns if c.name != "ZONE"]
    return columns


# Dropped in this order, one at a time, while the node table is wider than the terminal.
OPTIONAL_NODE_COLUMNS = ("ADDRESS", "HEARTBEAT", "CAPACITY", "ZONE", "USED")


def _build_nodes_table(
    nodes: list[dict[str, Any]], repair: dict[str, Any], columns: list[_Column]
) -> Table:
    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
        title="Nodes",
        title_justify="left",
    )
    for column in columns:
        table.add_column(
            column.name,
            justify="right" if column.right else "left",
            no_wrap=not column.wrap,
            overflow="fold",
            min_width=column.min_width,
        )
    for node in nodes:
        table.add_row(*[column.cell(node, repair) for column in columns])
    return table


def nodes_table(
    nodes: list[dict[str, Any]],
    repair: dict[str, Any] | None = None,
    console: Console | None = None,
) -> Table:
    """One row per storage node; a SCRUB column while a scrub runs or corruption was found.

    With a console, columns in OPTIONAL_NODE_COLUMNS are dropped until the table fits its
    width, so a narrow terminal keeps the node, its state and usage readable.
    """
    repair = repair or {}
    columns = _node_columns(nodes)
    table = _build_nodes_table(nodes, repair, columns)
    if console is None:
        return table
    for name in OPTIONAL_NODE_COLUMNS:
        unclamped = console.options.update(max_width=10**6)
        if Measurement.get(console, unclamped, table).maximum <= console.width:
            break
        columns = [c for c in columns if c.name != name]
        table = _build_nodes_table(nodes, repair, columns)
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


def _margin_label(margin: int, full: int) -> str:
    if margin < 0:
        return f"{margin} (below k)"
    if margin == 0:
        return "0 (one failure from loss)"
    return f"+{margin} (full)" if margin == full else f"+{margin}"


def _margin_style(margin: int, count: int) -> str:
    if not count or margin > 0:
        return ""
    return "bold red" if margin < 0 else "yellow"


def margin_table(status: dict[str, Any]) -> Table:
    """Stripes and objects by redundancy margin (healthy shards minus k), most margin first.

    Rows run from the default redundancy's full margin (n - k) down to 0, plus any margins
    present outside that range, so an empty 'one failure from loss' row is visible too.
    """
    stripes: dict[str, int] = status.get("stripes_by_margin") or {}
    objects: dict[str, int] = status.get("objects_by_margin") or {}
    redundancy = status["default_redundancy"]
    full = int(redundancy["n"]) - int(redundancy["k"])
    margins = {int(m) for m in (*stripes, *objects)} | set(range(full + 1))
    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        title="Redundancy margin (healthy shards beyond k)",
        title_justify="left",
    )
    table.add_column("MARGIN")
    table.add_column("STRIPES", justify="right", no_wrap=True)
    table.add_column("OBJECTS", justify="right", no_wrap=True)
    for margin in sorted(margins, reverse=True):
        stripe_count = stripes.get(str(margin), 0)
        object_count = objects.get(str(margin), 0)
        style = _margin_style(margin, stripe_count + object_count)
        table.add_row(
            Text(_margin_label(margin, full), style=style), str(stripe_count), str(object_count)
        )
    return table


def risk_line(status: dict[str, Any]) -> Text:
    """How many stripes one more failure would make unreadable, and how many already are."""
    at_risk = int(status.get("stripes_at_risk", 0))
    below = int(status.get("stripes_below_k", 0))
    line = Text("Stripes at risk: ")
    line.append(f"{at_risk} one failure from loss", style="yellow" if at_risk else "green")
    line.append(", ")
    line.append(f"{below} below k (unreadable)", style="bold red" if below else "green")
    return line


def repair_line(repair: dict[str, Any]) -> Text:
    """'Repair: idle', 'Repair: HELD ...' or the progress of the current repair episode."""
    line = Text("Repair: ")
    done, remaining = int(repair["shards_done"]), int(repair["shards_remaining"])
    if repair.get("held"):
        line.append("HELD", style="bold red")
        if remaining:
            line.append(f", {remaining} shards waiting")
        if repair.get("errors"):
            line.append(f", {repair['errors']} errors", style="red")
    elif repair.get("active"):
        parts = [f"repairing {done}/{done + remaining} shards ({repair['ratio'] * 100:.1f}%)"]
        if repair["bytes_done"]:
            parts.append(
                f"{format_bytes(repair['bytes_done'])} at {format_bytes(repair['rate_bytes_s'])}/s"
            )
        parts.append(f"ETA {format_duration(repair['eta_s']) if repair['eta_s'] else 'unknown'}")
        line.append(", ".join(parts) + ", ", style="yellow")
        errors = int(repair["errors"])
        line.append(f"{errors} errors", style="red" if errors else "yellow")
    else:
        line.append("idle")
        if repair.get("errors"):
            line.append(f", {repair['errors']} errors in the last run", style="red")
    to_move = int(repair.get("shards_to_move", 0))
    if to_move:
        line.append(f"; {to_move} shards to move off draining nodes")
    if repair.get("errors"):
        line.append(" (clusterctl repair errors)")
    return line


def held_banner() -> Text:
    """The line shown while automatic repair is held."""
    return Text(
        "REPAIR HELD: automatic repair is paused (clusterctl repair resume)", style="bold red"
    )


def status_view(status: dict[str, Any], console: Console) -> list[RenderableType]:
    """The status as renderables, top to bottom: health, repair, capacity, nodes, redundancy
    margin, objects, stripes and jobs (blank Text lines separate the sections)."""
    view: list[RenderableType] = []
    health = status["health"]
    line = Text("Health: ")
    line.append(health, style=HEALTH_STYLE.get(health, "bold"))
    line.append(f" ({status['reason']})")
    view.append(line)
    repair: dict[str, Any] = status.get("repair") or {}
    if repair.get("held"):
        view.append(held_banner())
    capacity = status["capacity"]
    redundancy = status["default_redundancy"]
    view.append(
        Text(
            f"Capacity: raw {format_bytes(capacity['raw_bytes'])}, "
            f"used {format_bytes(capacity['used_bytes'])}, "
            f"usable {format_bytes(capacity['usable_bytes'])} "
            f"(default k={redundancy['k']}, n={redundancy['n']})"
        )
    )
    view.append(
        Text(
            f"Buckets: {status['buckets']}; "
            f"shard deletions pending: {status['pending_shard_deletions']}; "
            f"orphaned: {format_bytes(status.get('orphaned_bytes', 0))}"
        )
    )
    if repair:
        view.append(repair_line(repair))
    timings = status.get("timings")
    if timings:
        view.append(
            Text(
                f"Timings: suspect after {_seconds(timings['heartbeat_timeout_s'])} and down "
                f"after {_seconds(timings['down_after_s'])} without a heartbeat; "
                f"repair after {_seconds(timings['repair_after_s'])}"
            )
        )
    view += [Text(), nodes_table(status["nodes"], repair, console), Text()]
    if status.get("stripes_by_margin") is not None:
        if status["stripes_by_margin"] or status.get("objects_by_margin"):
            view.append(margin_table(status))
        else:
            view.append(Text("Redundancy margin: no stripes stored"))
        view += [risk_line(status), Text()]
    view += [objects_table(status), Text()]
    if status["stripes_by_healthy_shards"]:
        view.append(stripes_table(status["stripes_by_healthy_shards"]))
    else:
        view.append(Text("Stripes: none stored"))
    if "jobs" in status:
        view.append(Text())
        view += status_jobs_section(status["jobs"] or [], plain=console.no_color)
    return view


def render_status(status: dict[str, Any], console: Console) -> None:
    """Print the status (see status_view)."""
    for part in status_view(status, console):
        console.print(part)


def _seconds(value: float) -> str:
    return f"{value:g}s" if value < 60 else format_duration(value)
