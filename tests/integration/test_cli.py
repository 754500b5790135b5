"""`clusterctl` end to end: the CLI runs as a real subprocess against real daemons."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shoal.client import Client, ObjectInfo
from shoal.client.cli.local_cluster import LocalCluster
from tests.harness.cluster import unique, wait_for

CLI_TIMEOUT_S = 60.0
EXIT_BY_HEALTH = {"HEALTHY": 0, "DEGRADED": 1, "UNAVAILABLE": 2}

Result = subprocess.CompletedProcess[bytes]
Runner = Callable[..., Result]


def clean_env(**extra: str) -> dict[str, str]:
    """The test environment without SHOAL_* variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    env.update(extra)
    return env


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdin: bytes | None = None
) -> Result:
    """Run `python -m shoal.client.cli ARGS` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "shoal.client.cli", *args],
        cwd=cwd,
        env=env or clean_env(),
        input=stdin,
        capture_output=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def ok(result: Result) -> str:
    """Assert exit status 0 and return stdout as text."""
    assert result.returncode == 0, (result.returncode, result.stderr.decode())
    return result.stdout.decode()


def assert_one_line_error(result: Result, code: int, fragment: str) -> None:
    """The failure contract: exit `code`, one 'clusterctl: error:' line, no traceback."""
    stderr = result.stderr.decode()
    assert result.returncode == code, (result.returncode, stderr)
    assert stderr.count("\n") == 1, stderr
    assert stderr.endswith("\n"), stderr
    assert stderr.startswith("clusterctl: error: "), stderr
    assert fragment in stderr, stderr
    assert "Traceback" not in stderr + result.stdout.decode(errors="replace")


@pytest.fixture
def cli(cluster: LocalCluster, tmp_path: Path) -> Runner:
    """Run the CLI against the shared cluster, with --coordinator after the subcommand."""

    def run(*args: str, stdin: bytes | None = None) -> Result:
        return run_cli(*args, "--coordinator", cluster.address, cwd=tmp_path, stdin=stdin)

    return run


def test_round_trip_mb_put_ls_stat_get(cli: Runner, client: Client, tmp_path: Path) -> None:
    bucket = unique("b")
    data = os.urandom(3 * 1024 * 1024 + 12345)  # several 1 MiB stripes plus a short one
    source = tmp_path / "source.bin"
    source.write_bytes(data)

    assert f"created bucket {bucket} (k=4, n=6)" in ok(cli("mb", bucket, "--k", "4", "--n", "6"))
    assert str(len(data)) in ok(cli("put", str(source), f"{bucket}/dir/blob.bin"))
    ok(cli("put", "-", f"{bucket}/other", stdin=b"from stdin"))

    listed = ok(cli("ls"))
    [row] = [line.split() for line in listed.splitlines() if line.endswith(f" {bucket}")]
    assert row[2:] == ["k=4", "n=6", bucket]
    keys = ok(cli("ls", bucket)).splitlines()
    assert [line.split()[-1] for line in keys] == ["dir/blob.bin", "other"]
    assert keys[0].split()[2] == str(len(data))
    prefixed = ok(cli("ls", f"{bucket}/dir/")).splitlines()
    assert [line.split()[-1] for line in prefixed] == ["dir/blob.bin"]

    stat = ok(cli("stat", f"{bucket}/dir/blob.bin"))
    info = client.head(bucket, "dir/blob.bin")
    for field in dataclasses.fields(ObjectInfo):
        assert f"\n{field.name}:" in "\n" + stat, field.name
    assert f"etag:         {info.etag}\n" in stat
    assert f"version_id:   {info.version_id}\n" in stat
    assert f"stripe_count: {info.stripe_count}\n" in stat

    target = tmp_path / "out" / "copy.bin"
    target.parent.mkdir()
    ok(cli("get", f"{bucket}/dir/blob.bin", str(target)))
    assert target.read_bytes() == data
    assert [p.name for p in target.parent.iterdir()] == ["copy.bin"]  # no temp file left behind

    streamed = cli("get", f"{bucket}/dir/blob.bin")
    assert streamed.returncode == 0
    assert streamed.stdout == data
    dashed = cli("get", f"{bucket}/other", "-")
    assert dashed.returncode == 0
    assert dashed.stdout == b"from stdin"


def test_rm_then_stat_is_a_one_line_error(cli: Runner, bucket: str) -> None:
    ok(cli("put", "-", f"{bucket}/doomed", stdin=b"x" * 1000))
    assert f"deleted {bucket}/doomed" in ok(cli("rm", f"{bucket}/doomed"))
    assert_one_line_error(cli("stat", f"{bucket}/doomed"), 1, "does not exist")
    assert ok(cli("ls", bucket)) == ""
    assert f"deleted bucket {bucket}" in ok(cli("rb", bucket))


def test_status_json(cli: Runner) -> None:
    result = cli("status", "--json")
    status = json.loads(result.stdout)
    assert status["schema_version"] == 1
    assert result.returncode == EXIT_BY_HEALTH[status["health"]]
    # Other tests share this cluster, but none of them stops a node or corrupts shards.
    assert result.returncode in (0, 1), result.stderr.decode()
    assert sorted(n["node_id"] for n in status["nodes"]) == [f"node-{i}" for i in range(1, 7)]
    assert set(status["capacity"]) == {"raw_bytes", "used_bytes", "usable_bytes"}
    assert set(status["objects"]) == {"healthy", "degraded", "unavailable"}
    assert status["default_redundancy"] == {"k": 4, "n": 6}


def test_status_human_has_no_colour_when_piped(cluster: LocalCluster, tmp_path: Path) -> None:
    # --coordinator before the subcommand works as well as after it.
    result = run_cli("--coordinator", cluster.address, "status", cwd=tmp_path)
    out = result.stdout.decode()
    assert result.returncode in (0, 1), result.stderr.decode()
    assert out.startswith("Health: ")
    assert "Capacity: raw " in out
    for i in range(1, 7):
        assert f"node-{i}" in out
    assert "\x1b[" not in out


def test_coordinator_from_environment(cluster: LocalCluster, tmp_path: Path) -> None:
    result = run_cli("ls", cwd=tmp_path, env=clean_env(SHOAL_COORDINATOR=cluster.address))
    ok(result)


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["put", "{tmp}/missing.bin", "{bucket}/k"], 1, "No such file or directory"),
        (["put", "{tmp}", "{bucket}/k"], 1, "Is a directory"),
        (["put", "{tmp}/src", "no-slash-here"], 2, "expected BUCKET/KEY"),
        (["get", "{bucket}/"], 2, "expected BUCKET/KEY"),
        (["ls", "no-such-bucket-{uid}"], 1, "does not exist"),
        (["put", "{tmp}/src", "no-such-bucket-{uid}/k"], 1, "does not exist"),
        (["get", "{bucket}/no-such-key"], 1, "does not exist"),
        (["mb", "Not_A_Bucket"], 1, "invalid bucket name"),
    ],
    ids=[
        "missing-file",
        "directory",
        "bad-ref",
        "empty-key",
        "ls-no-bucket",
        "put-no-bucket",
        "get-no-key",
        "bad-bucket-name",
    ],
)
def test_errors_are_one_line(
    cli: Runner, bucket: str, tmp_path: Path, args: list[str], code: int, fragment: str
) -> None:
    (tmp_path / "src").write_bytes(b"payload")
    values = {"tmp": str(tmp_path), "bucket": bucket, "uid": unique("x")}
    assert_one_line_error(cli(*[a.format(**values) for a in args]), code, fragment)


@pytest.mark.parametrize(("command", "code"), [("status", 2), ("ls", 1)])
def test_unreachable_coordinator(tmp_path: Path, command: str, code: int) -> None:
    result = run_cli(command, "--coordinator", "127.0.0.1:1", cwd=tmp_path)
    assert_one_line_error(result, code, "cannot reach the coordinator at 127.0.0.1:1")


def test_no_coordinator_anywhere(tmp_path: Path) -> None:
    result = run_cli("ls", "--data-dir", str(tmp_path / "empty"), cwd=tmp_path)
    assert_one_line_error(result, 1, "no coordinator: pass --coordinator")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = run_cli("--debug", "ls", "--coordinator", "127.0.0.1:1", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" in result.stderr.decode()


def test_local_cluster_lifecycle(tmp_path: Path) -> None:
    root = tmp_path / "local"
    data_dir = ["--data-dir", str(root)]

    def status() -> tuple[int, dict[str, Any]]:
        result = run_cli("status", "--json", *data_dir, cwd=tmp_path)
        return result.returncode, json.loads(result.stdout or b"{}")

    def reaches(code: int, health: str, node_state: str) -> bool:
        rc, report = status()
        states = {n["node_id"]: n["state"] for n in report.get("nodes", [])}
        return rc == code and report.get("health") == health and states.get("node-1") == node_state

    up = run_cli(
        "up",
        "--nodes",
        "3",
        "--k",
        "2",
        "--n",
        "3",
        "--heartbeat-timeout",
        "2s",
        "--zones",
        "z1,z2,z3",
        *data_dir,
        cwd=tmp_path,
    )
    try:
        out = ok(up)
        address = LocalCluster(root).address
        assert f"coordinator at {address}" in out
        assert f"export SHOAL_COORDINATOR={address}" in out
        wait_for(lambda: reaches(0, "HEALTHY", "up"), what="a healthy 3-node cluster")
        _, report = status()
        assert {n["zone"] for n in report["nodes"]} == {"z1", "z2", "z3"}
        assert report["default_redundancy"] == {"k": 2, "n": 3}

        assert "stopped node-1" in ok(run_cli("node", "stop", "node-1", *data_dir, cwd=tmp_path))
        assert_one_line_error(
            run_cli("node", "stop", "node-1", *data_dir, cwd=tmp_path), 1, "node-1 is not running"
        )
        wait_for(lambda: reaches(1, "DEGRADED", "down"), what="node-1 reported down")
        human = run_cli("status", *data_dir, cwd=tmp_path)
        assert human.returncode == 1
        assert "down " in human.stdout.decode()

        assert "started node-1" in ok(run_cli("node", "start", "node-1", *data_dir, cwd=tmp_path))
        wait_for(lambda: reaches(0, "HEALTHY", "up"), what="node-1 back up")
        assert "Health: HEALTHY" in ok(run_cli("status", *data_dir, cwd=tmp_path))
    finally:
        down = run_cli("down", *data_dir, cwd=tmp_path)
        if down.returncode != 0:
            LocalCluster(root).down()  # never leak daemons, even if the CLI failed
    assert "coordinator" in ok(down)
    assert_one_line_error(run_cli("status", *data_dir, cwd=tmp_path), 2, "is not running")
