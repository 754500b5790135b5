"""Human rendering of jobs: the status dict's job entries (see shoal.client.status.job_to_dict).

Used by `clusterctl status` (the Jobs section), `clusterctl job list` and `clusterctl job
watch`. Percentages are rounded down, so 100% means done; countdowns are rounded up.
"""

from __future__ import annotations

import math
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from shoal.common.units import format_duration

JOB_STATE_STYLE = {
    "pending": "cyan",
    "running": "yellow",
    "succeeded": "green",
    "failed": "bold red",
    "cancelled": "dim",
}
TERMINAL_STATES = ("succeeded", "failed", "cancelled")
MAX_FINISHED_SHOWN = 5
STATUS_BAR_WIDTH = 20
WATCH_BAR_WIDTH = 40


def finished(job: dict[str, Any]) -> bool:
    return str(job["state"]) in TERMINAL_STATES


def percent(ratio: float) -> str:
    """'45%': rounded down, so 100% means done."""
    return f"{math.floor(max(0.0, min(float(ratio), 1.0)) * 100)}%"


def state_text(job: dict[str, Any]) -> Text:
    state = str(job["state"])
    return Text(state, style=JOB_STATE_STYLE.get(state, ""))


def tasks_text(job: dict[str, Any]) -> str:
    return f"{job['tasks_done']}/{job['tasks_total']}"


def elapsed_text(job: dict[str, Any]) -> str:
    elapsed = float(job["elapsed_s"])
    if job["state"] == "pending" and not elapsed:
        return "-"
    return format_duration(elapsed)


def eta_text(job: dict[str, Any]) -> str:
    """'-' once the job ended, '?' while unknown (nothing done yet), else the countdown."""
    if finished(job):
        return "-"
    eta = float(job["eta_s"])
    return format_duration(math.ceil(eta)) if eta > 0 else "?"


def local_text(job: dict[str, Any]) -> str:
    """Share of located (map) tasks that ran next to their input; '-' without such tasks."""
    ratio = job.get("local_ratio")
    if ratio is None:
        return "-"
    return f"{percent(ratio)} ({job['local_tasks']}/{job['located_tasks']})"


def rerun_text(job: dict[str, Any]) -> str:
    """'2 rerun' when tasks ran again (progress may step back then), else ''."""
    reruns = int(job.get("rerun_tasks", 0))
    return f"{reruns} rerun" if reruns else ""


def bar(ratio: float, width: int, *, plain: bool) -> Text:
    """A progress bar: coloured on a terminal, '#' and '-' when plain (piped, no colour)."""
    ratio = max(0.0, min(float(ratio), 1.0))
    filled = width if ratio >= 1 else min(math.floor(ratio * width), width - 1)
    if plain:
        return Text("#" * filled + "-" * (width - filled))
    text = Text()
    text.append("━" * filled, style="green" if ratio >= 1 else "magenta")
    text.append("━" * (width - filled), style="grey37")
    return text


def progress_text(job: dict[str, Any], *, plain: bool, width: int = STATUS_BAR_WIDTH) -> Text:
    """'━━━━━━━━━━ 45% 2 rerun': the bar, the ratio as a percentage and any reruns."""
    text = bar(job["progress"], width, plain=plain) if width else Text()
    if width:
        text.append(" ")
    text.append(percent(job["progress"]).rjust(4))
    reruns = rerun_text(job)
    if reruns:
        text.append(f" {reruns}", style="yellow")
    return text


def shown_jobs(jobs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Jobs for the status view, in the given (most recent first) order: every unfinished job
    and at most MAX_FINISHED_SHOWN finished ones; also how many finished jobs were left out."""
    shown: list[dict[str, Any]] = []
    finished_seen = 0
    for job in jobs:
        if finished(job):
            finished_seen += 1
            if finished_seen > MAX_FINISHED_SHOWN:
                continue
        shown.append(job)
    return shown, max(finished_seen - MAX_FINISHED_SHOWN, 0)


def jobs_table(
    jobs: list[dict[str, Any]], *, plain: bool, title: str | None = None, listing: bool = False
) -> Table:
    """One row per job. The status view (listing=False) draws a progress bar; the `job list`
    view (listing=True) adds the kind and shows the progress as a percentage only."""
    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
        title=title,
        title_justify="left",
    )
    table.add_column("JOB" if not listing else "ID", no_wrap=True)
    table.add_column("NAME", overflow="fold")
    if listing:
        table.add_column("KIND", no_wrap=True)
    table.add_column("STATE", no_wrap=True)
    table.add_column("TASKS", justify="right", no_wrap=True)
    table.add_column("PROGRESS", no_wrap=True, justify="right" if listing else "left")
    table.add_column("ELAPSED", justify="right", no_wrap=True)
    table.add_column("ETA", justify="right", no_wrap=True)
    table.add_column("LOCAL", justify="right", no_wrap=True)
    for job in jobs:
        cells: list[Text | str] = [Text(str(job["job_id"])), Text(str(job["name"]))]
        if listing:
            cells.append(Text(str(job["kind"])))
        cells += [
            state_text(job),
            tasks_text(job),
            progress_text(job, plain=plain, width=0 if listing else STATUS_BAR_WIDTH),
            elapsed_text(job),
            eta_text(job),
            local_text(job),
        ]
        table.add_row(*cells)
    return table


def status_jobs_section(jobs: list[dict[str, Any]], *, plain: bool) -> list[Table | Text]:
    """The Jobs section of `clusterctl status`."""
    if not jobs:
        return [Text("Jobs: none")]
    shown, hidden = shown_jobs(jobs)
    parts: list[Table | Text] = [jobs_table(shown, plain=plain, title="Jobs")]
    if hidden:
        parts.append(Text("older finished jobs: clusterctl job list --all", style="dim"))
    return parts


def watch_line(job: dict[str, Any]) -> str:
    """One line of `job watch` when not on a terminal."""
    parts = [
        f"{job['state']}",
        f"phase {job['phase']}" if job.get("phase") else "",
        percent(job["progress"]),
        f"tasks {tasks_text(job)}",
        f"elapsed {elapsed_text(job)}",
        f"ETA {eta_text(job)}",
    ]
    if job.get("local_ratio") is not None:
        parts.append(f"local {local_text(job)}")
    parts.append(rerun_text(job))
    return "  ".join(part for part in parts if part)


def watch_key(job: dict[str, Any]) -> tuple[Any, ...]:
    """What counts as a change for `job watch` (not the clock: elapsed and ETA)."""
    tasks = job.get("tasks") or {}
    return (
        job["state"],
        job.get("phase"),
        percent(job["progress"]),
        job["tasks_done"],
        job["tasks_total"],
        tasks.get("running"),
        job.get("rerun_tasks"),
        job.get("local_tasks"),
    )


def watch_view(job: dict[str, Any], *, plain: bool) -> Table:
    """The live `job watch` display: a header line and the progress line."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    header = Text(f"job {job['job_id']} ")
    header.append(str(job["name"]), style="bold")
    header.append(f" ({job['kind']}) ")
    header.append_text(state_text(job))
    if job.get("phase"):
        header.append(f", phase {job['phase']}")
    grid.add_row(header)
    line = progress_text(job, plain=plain, width=WATCH_BAR_WIDTH)
    line.append(f"  tasks {tasks_text(job)}  elapsed {elapsed_text(job)}  ETA {eta_text(job)}")
    if job.get("local_ratio") is not None:
        line.append(f"  local {local_text(job)}")
    grid.add_row(line)
    return grid
