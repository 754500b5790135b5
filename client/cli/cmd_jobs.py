"""`clusterctl job`: list, watch, cancel and inspect jobs on any cluster.

`job watch` exits 0 when the job succeeded and 1 (with the error's last line) when it failed
or was cancelled. An unknown job id is a one-line error (exit 1).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from typing import Any

from rich.live import Live

from shoal.client import Client, Job, TaskLog
from shoal.client.cli.address import open_client
from shoal.client.cli.args import bounded_int
from shoal.client.cli.failures import JobNotSucceeded, UsageError
from shoal.client.cli.jobs_view import (
    finished,
    jobs_table,
    watch_key,
    watch_line,
    watch_view,
)
from shoal.client.cli.render import make_console
from shoal.client.status import job_to_dict
from shoal.common.units import format_duration

POLL_S = 0.25
PIPE_LINE_INTERVAL_S = 0.5
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
TASK_FILTER = re.compile(r"^(?:(?P<phase>[a-z_]+)-)?(?P<index>\d+)$")


def _job(client: Client, job_id: str) -> tuple[Job, dict[str, Any]]:
    """The job's handle and its status entry (NotFound for an unknown id)."""
    job = client.job(job_id)
    return job, job_to_dict(job.status())


def cmd_job_list(args: argparse.Namespace) -> int:
    """Unfinished jobs, or with --all every job the coordinator keeps, newest first."""
    show_all: bool = args.all
    limit: int = args.limit
    with open_client(args) as client:
        jobs = [job_to_dict(j) for j in client.list_jobs(active_only=not show_all, limit=limit)]
    if not jobs:
        print("no jobs" if show_all else "no running jobs (--all lists finished ones too)")
        return 0
    console = make_console()
    console.print(jobs_table(jobs, plain=console.no_color, listing=True))
    return 0


def _outcome(job: dict[str, Any]) -> int:
    """Exit 0 for a succeeded job; raise JobNotSucceeded (exit 1, one line) otherwise."""
    if job["state"] == "succeeded":
        print(f"job {job['job_id']} succeeded in {format_duration(job['elapsed_s'])}")
        return 0
    if job["state"] == "cancelled":
        raise JobNotSucceeded(f"job {job['job_id']} was cancelled")
    error = str(job.get("error") or "").strip()
    raise JobNotSucceeded(f"job {job['job_id']} failed" + (f": {error}" if error else ""))


def _watch_tty(job: Job, current: dict[str, Any]) -> dict[str, Any]:
    console = make_console()
    plain = console.no_color
    with Live(watch_view(current, plain=plain), console=console, auto_refresh=False) as live:
        while not finished(current):
            time.sleep(POLL_S)
            current = job_to_dict(job.status())
            live.update(watch_view(current, plain=plain), refresh=True)
    return current


def _watch_pipe(job: Job, current: dict[str, Any]) -> dict[str, Any]:
    """A line per change, at most one every PIPE_LINE_INTERVAL_S (the final line always)."""
    print(f"job {current['job_id']} {current['name']} ({current['kind']})", flush=True)
    printed: tuple[Any, ...] | None = None
    last_print = 0.0
    while True:
        key = watch_key(current)
        now = time.monotonic()
        done = finished(current)
        if key != printed and (done or now - last_print >= PIPE_LINE_INTERVAL_S):
            print(watch_line(current), flush=True)
            printed, last_print = key, now
        if done:
            return current
        time.sleep(POLL_S)
        current = job_to_dict(job.status())


def cmd_job_watch(args: argparse.Namespace) -> int:
    """Follow a job until it ends: a live progress bar on a terminal, else a line per change."""
    job_id: str = args.job
    with open_client(args) as client:
        job, current = _job(client, job_id)
        follow = _watch_tty if sys.stdout.isatty() else _watch_pipe
        current = follow(job, current)
    return _outcome(current)


def cmd_job_cancel(args: argparse.Namespace) -> int:
    """Cancel a job: pending tasks never start, running ones are killed."""
    job_id: str = args.job
    with open_client(args) as client:
        job, current = _job(client, job_id)
        if finished(current):
            print(f"job {job_id} already {current['state']}; nothing to cancel")
            return 0
        after = job_to_dict(job.cancel())
    print(
        f"job {job_id} {after['state']} ({after['tasks_done']}/{after['tasks_total']} tasks "
        "had finished)"
    )
    return 0


def _matches(log: TaskLog, task: str | None) -> bool:
    if task is None:
        return True
    found = TASK_FILTER.match(task)
    if found is None:  # checked in cmd_job_logs
        return False
    phase = found.group("phase")
    return log.index == int(found.group("index")) and (phase is None or phase == log.phase)


def _print_log(log: TaskLog) -> None:
    attempts = f"{log.attempts} attempt{'s' if log.attempts != 1 else ''}"
    worker = log.worker_id or "no worker"
    print(f"=== {log.phase}-{log.index}: {log.state} on {worker}, {attempts} ===")
    print(log.error.rstrip() or "(no error message)")
    if log.stderr.strip():
        print("--- stderr ---")
        print(log.stderr.rstrip())
    print()


def cmd_job_logs(args: argparse.Namespace) -> int:
    """Errors, tracebacks and captured stderr of the job's failed tasks (optionally one task)."""
    job_id: str = args.job
    task: str | None = args.task
    if task is not None and TASK_FILTER.match(task) is None:
        raise UsageError(f"expected a task as PHASE-INDEX (e.g. map-3) or INDEX, got {task!r}")
    with open_client(args) as client:
        logs = client.job(job_id).logs()
    selected = [log for log in logs if _matches(log, task)]
    if not selected:
        if logs and task is not None:
            print(
                f"no failed task {task} (failed: "
                f"{', '.join(f'{log.phase}-{log.index}' for log in logs)})"
            )
        else:
            print("no failed tasks")
        return 0
    for log in selected:
        _print_log(log)
    return 0


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add `job list|watch|cancel|logs` to `sub`; `common` holds --coordinator and friends."""
    job = sub.add_parser("job", help="list, watch, cancel and inspect jobs")
    actions = job.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser(
        "list", parents=[common], help="list unfinished jobs (--all: finished ones too)"
    )
    listing.add_argument("--all", action="store_true", help="include finished jobs")
    listing.add_argument(
        "--limit",
        type=bounded_int(MAX_LIMIT),
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"show at most N jobs, newest first (1-{MAX_LIMIT}, default: {DEFAULT_LIMIT})",
    )
    listing.set_defaults(handler=cmd_job_list)
    watch = actions.add_parser(
        "watch",
        parents=[common],
        help="follow a job's progress until it ends (exit 0 succeeded, 1 failed or cancelled)",
    )
    watch.add_argument("job", metavar="ID")
    watch.set_defaults(handler=cmd_job_watch)
    cancel = actions.add_parser("cancel", parents=[common], help="cancel a job")
    cancel.add_argument("job", metavar="ID")
    cancel.set_defaults(handler=cmd_job_cancel)
    logs = actions.add_parser(
        "logs", parents=[common], help="tracebacks and stderr of a job's failed tasks"
    )
    logs.add_argument("job", metavar="ID")
    logs.add_argument(
        "task", metavar="TASK", nargs="?", help="only this task: PHASE-INDEX (map-3) or INDEX"
    )
    logs.set_defaults(handler=cmd_job_logs)
