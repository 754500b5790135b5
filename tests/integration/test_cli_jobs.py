"""`clusterctl` and jobs end to end: job list/watch/cancel/logs, the Jobs section of status,
status --watch, and local workers (up --workers, worker stop/start, down), against real daemons.

Task functions are module-level and travel by value (this module registers itself with
cloudpickle), so they must not use `assert`.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from rich.console import Console

from shoal.client import Client, JobOptions
from shoal.client.cli.jobs_view import MAX_FINISHED_SHOWN
from shoal.client.cli.local_cluster import LocalCluster, pid_alive
from shoal.client.cli.render import render_status
from tests.harness.cluster import TEST_SETTINGS, wait_for
from tests.integration.test_cli import Result, assert_one_line_error, clean_env, ok, run_cli

cloudpickle.register_pickle_by_value(sys.modules[__name__])

SLOW_TASK_S = 2.0
SLOW_TASKS = 20
JOB_TIMEOUT_S = 30.0

Runner = Callable[..., Result]


# Task functions ----------------------------------------------------------------------------


def double(x: int) -> int:
    return 2 * x


def quick_nap(x: int) -> int:
    time.sleep(0.2)
    return x


def slow_nap(x: int) -> int:
    time.sleep(SLOW_TASK_S)
    return x


def explode(tag: str) -> None:
    print(f"stderr of {tag}", file=sys.stderr)
    raise ValueError(f"bad input {tag}")


# Fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jobs_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """6 nodes and 2 workers with 2 slots each, private to this module."""
    cluster = LocalCluster(tmp_path_factory.mktemp("cli-jobs") / "c")
    cluster.up(6, settings=TEST_SETTINGS, workers=2, worker_slots=2)
    try:
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(scope="module")
def sdk(jobs_cluster: LocalCluster) -> Iterator[Client]:
    with Client(jobs_cluster.address) as client:
        yield client


@pytest.fixture(scope="module")
def finished_jobs(sdk: Client) -> dict[str, str]:
    """A succeeded map job of 8 tasks and a failed submit job, both finished."""
    good = sdk.map(double, range(8), options=JobOptions(name="doubler"))
    bad = sdk.submit(explode, "zebra", job_options=JobOptions(name="exploder"))
    assert good.wait(JOB_TIMEOUT_S).state == "succeeded"
    assert bad.wait(JOB_TIMEOUT_S).state == "failed"
    return {"good": good.id, "bad": bad.id}


@pytest.fixture
def cli(jobs_cluster: LocalCluster, tmp_path: Path) -> Runner:
    def run(*args: str) -> Result:
        return run_cli(*args, "--coordinator", jobs_cluster.address, cwd=tmp_path)

    return run


def row(text: str, job_id: str) -> str:
    [line] = [line for line in text.splitlines() if line.startswith(f"{job_id} ")]
    return line


# Jobs --------------------------------------------------------------------------------------


def test_job_list(cli: Runner, finished_jobs: dict[str, str]) -> None:
    listed = ok(cli("job", "list", "--all"))
    assert listed.splitlines()[0].split() == [
        "ID", "NAME", "KIND", "STATE", "TASKS", "PROGRESS", "ELAPSED", "ETA", "LOCAL",
    ]  # fmt: skip
    good = row(listed, finished_jobs["good"]).split()
    assert good[1:6] == ["doubler", "map", "succeeded", "8/8", "100%"]
    bad = row(listed, finished_jobs["bad"]).split()
    assert bad[1:5] == ["exploder", "submit", "failed", "0/1"]
    # Without --all only unfinished jobs are listed.
    active = ok(cli("job", "list"))
    assert finished_jobs["good"] not in active
    assert finished_jobs["bad"] not in active


def test_watch_succeeded_job(cli: Runner, sdk: Client) -> None:
    job = sdk.map(quick_nap, range(12))
    result = cli("job", "watch", job.id)
    out = ok(result)
    lines = out.splitlines()
    assert lines[0] == f"job {job.id} quick_nap (map)"
    assert lines[-2].startswith("succeeded  phase tasks  100%  tasks 12/12"), out
    assert lines[-1].startswith(f"job {job.id} succeeded in "), out
    assert "\x1b[" not in out
    assert sdk.job(job.id).status().state == "succeeded"


def test_watch_failed_job_is_one_line_error(cli: Runner, finished_jobs: dict[str, str]) -> None:
    result = cli("job", "watch", finished_jobs["bad"])
    assert_one_line_error(result, 1, f"job {finished_jobs['bad']} failed: ValueError: bad input")
    assert "zebra" in result.stderr.decode()
    assert result.stdout.decode().splitlines()[-1].startswith("failed ")


def test_logs_show_the_traceback(cli: Runner, finished_jobs: dict[str, str]) -> None:
    bad = finished_jobs["bad"]
    logs = ok(cli("job", "logs", bad))
    assert logs.startswith("=== tasks-0: failed on worker-"), logs
    assert "1 attempt ===" in logs
    assert "Traceback (most recent call last):" in logs
    assert "ValueError: bad input zebra" in logs
    assert "--- stderr ---\nstderr of zebra" in logs
    assert ok(cli("job", "logs", bad, "tasks-0")) == logs
    assert ok(cli("job", "logs", bad, "0")) == logs
    assert ok(cli("job", "logs", bad, "7")).startswith("no failed task 7 (failed: tasks-0)")
    assert ok(cli("job", "logs", finished_jobs["good"])) == "no failed tasks\n"
    assert_one_line_error(cli("job", "logs", bad, "x-y"), 2, "expected a task as PHASE-INDEX")


def test_cancel_slow_job(cli: Runner, sdk: Client) -> None:
    job = sdk.map(slow_nap, range(SLOW_TASKS), options=JobOptions(name="sleeper"))
    wait_for(lambda: job.status().tasks["running"] > 0, what="slow tasks running")
    assert row(ok(cli("job", "list")), job.id).split()[1:4] == ["sleeper", "map", "running"]

    out = ok(cli("job", "cancel", job.id))
    assert out.startswith(f"job {job.id} cancelled"), out
    status = job.status()
    assert status.state == "cancelled"
    assert status.tasks["succeeded"] < SLOW_TASKS
    assert "already cancelled" in ok(cli("job", "cancel", job.id))
    assert_one_line_error(cli("job", "watch", job.id), 1, f"job {job.id} was cancelled")


@pytest.mark.parametrize("action", ["watch", "cancel", "logs"])
def test_unknown_job_id(cli: Runner, action: str) -> None:
    assert_one_line_error(cli("job", action, "0123456789abcdef"), 1, "no job '0123456789abcdef'")


# Status ------------------------------------------------------------------------------------


def test_status_has_jobs(cli: Runner, finished_jobs: dict[str, str]) -> None:
    result = cli("status", "--json")
    assert result.returncode in (0, 1), result.stderr.decode()
    report = json.loads(result.stdout)
    assert report["schema_version"] == 1
    jobs = {job["job_id"]: job for job in report["jobs"]}
    good, bad = jobs[finished_jobs["good"]], jobs[finished_jobs["bad"]]
    assert set(good) == {
        "job_id", "name", "kind", "state", "phase", "progress", "tasks", "tasks_done",
        "tasks_total", "elapsed_s", "eta_s", "local_tasks", "located_tasks", "local_ratio",
        "rerun_tasks", "backup_tasks", "error",
    }  # fmt: skip
    assert (good["state"], good["progress"], good["tasks_done"], good["tasks_total"]) == (
        "succeeded",
        1.0,
        8,
        8,
    )
    assert good["local_ratio"] is None  # a map job has no located tasks
    assert (bad["state"], bad["error"]) == ("failed", "ValueError: bad input zebra")
    created = [job["job_id"] for job in report["jobs"]]
    assert created.index(finished_jobs["bad"]) < created.index(finished_jobs["good"])

    human = cli("status")
    assert human.returncode in (0, 1), human.stderr.decode()
    text = human.stdout.decode()
    section = text[text.index("\nJobs") :]
    assert row(section, finished_jobs["good"]).split()[1:5] == [
        "doubler",
        "succeeded",
        "8/8",
        "####################",
    ]
    assert "100%" in row(section, finished_jobs["good"])
    assert "0%" in row(section, finished_jobs["bad"])
    assert "\x1b[" not in text


def test_status_jobs_section_rendering() -> None:
    """Reruns, the bar and the finished-job limit (in-process rendering of a status dict)."""
    running = {
        "job_id": "a" * 16, "name": "crunch", "kind": "map_reduce", "state": "running",
        "phase": "map", "progress": 0.456, "tasks": {"running": 2}, "tasks_done": 5,
        "tasks_total": 12, "elapsed_s": 10.0, "eta_s": 11.9, "local_tasks": 3,
        "located_tasks": 4, "local_ratio": 0.75, "rerun_tasks": 2, "backup_tasks": 0, "error": "",
    }  # fmt: skip
    done = [
        {**running, "job_id": f"{i:016x}", "state": "succeeded", "progress": 1.0, "eta_s": 0.0}
        for i in range(MAX_FINISHED_SHOWN + 2)
    ]
    status: dict[str, Any] = {
        "health": "HEALTHY", "reason": "ok", "nodes": [], "repair": {}, "buckets": 0,
        "capacity": {"raw_bytes": 0, "used_bytes": 0, "usable_bytes": 0},
        "default_redundancy": {"k": 4, "n": 6}, "pending_shard_deletions": 0,
        "objects": {"healthy": 0, "degraded": 0, "unavailable": 0},
        "object_bytes": {"healthy": 0, "degraded": 0, "unavailable": 0},
        "stripes_by_healthy_shards": {}, "jobs": [done[0], running, *done[1:]],
    }  # fmt: skip
    out = io.StringIO()
    render_status(status, Console(file=out, width=160, no_color=True, highlight=False))
    text = out.getvalue()
    line = row(text, "a" * 16)
    assert line.split()[1:5] == ["crunch", "running", "5/12", "#########-----------"]
    assert "45% 2 rerun" in line
    assert line.split()[-3:] == ["12s", "75%", "(3/4)"]
    shown = [job["job_id"] for job in done if f"\n{job['job_id']} " in text]
    assert shown == [job["job_id"] for job in done[:MAX_FINISHED_SHOWN]]
    assert "older finished jobs: clusterctl job list --all" in text


def test_status_watch_until_interrupted(
    cli: Runner, jobs_cluster: LocalCluster, tmp_path: Path
) -> None:
    assert_one_line_error(cli("status", "--interval", "1"), 2, "--interval needs --watch")
    out_path = tmp_path / "watch.out"
    with out_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "shoal.client.cli", "status", "--watch", "--interval", "200ms",
             "--coordinator", jobs_cluster.address],
            cwd=tmp_path, env=clean_env(), stdout=out, stderr=subprocess.PIPE,
            # A test run started in the background (e.g. `make test &`) inherits SIGINT as
            # ignored, and Python then installs no Ctrl-C handler: restore the default, as an
            # interactive terminal would have it.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
    try:
        wait_for(lambda: out_path.read_text().count("Health: ") >= 3, what="three status refreshes")
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 130, stderr.decode()
    assert stderr == b""
    text = out_path.read_text()
    assert text.startswith("Every 0.2s, at ")
    assert "\nJobs" in text
    assert "\x1b[" not in text


# Local workers -----------------------------------------------------------------------------


def test_up_with_workers_then_down(tmp_path: Path) -> None:
    root = tmp_path / "local"
    data_dir = ["--data-dir", str(root)]

    def local(*args: str) -> Result:
        return run_cli(*args, *data_dir, cwd=tmp_path)

    up = local(
        "up", "--nodes", "3", "--k", "2", "--n", "3", "--workers", "1", "--worker-slots", "1"
    )
    try:
        out = ok(up)
        assert "1 worker (worker-1) with 1 task slot each" in out
        cluster = LocalCluster(root)
        assert list(cluster.workers) == ["worker-1"]
        pid = cluster.workers["worker-1"].pid
        assert pid_alive(pid)
        with Client(cluster.address) as client:
            assert client.submit(double, 21).result(timeout=JOB_TIMEOUT_S) == 42

            assert ok(local("worker", "stop", "worker-1")) == "stopped worker-1\n"
            assert not pid_alive(pid)
            assert_one_line_error(local("worker", "stop", "worker-1"), 1, "worker-1 is not running")
            assert_one_line_error(local("worker", "start", "nope"), 1, "no worker 'nope'")
            assert ok(local("worker", "start", "worker-1")).startswith("started worker-1 (pid ")
            pid = LocalCluster(root).workers["worker-1"].pid
            assert pid_alive(pid)
            assert client.submit(double, 4).result(timeout=JOB_TIMEOUT_S) == 8
            listed = ok(local("job", "list", "--all"))
            assert len([line for line in listed.splitlines() if " double " in line]) == 2
    finally:
        down = local("down")
        if down.returncode != 0:
            LocalCluster(root).down()  # never leak daemons, even if the CLI failed
    stopped = ok(down)
    assert stopped.startswith("stopped worker-1, node-1, node-2, node-3, coordinator"), stopped
    assert not pid_alive(pid)
