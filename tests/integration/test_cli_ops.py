"""`clusterctl` operations end to end: repair hold/resume/errors, scrub, node drain/remove, and
the self-healing part of `status`, against real daemons with fast failure detection."""

from __future__ import annotations

import io
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from shoal.client import Client
from shoal.client.cli.local_cluster import LocalCluster
from shoal.client.cli.render import render_status
from tests.harness.cluster import REPAIR_SETTINGS, unique, wait_for
from tests.integration.test_cli import Result, assert_one_line_error, clean_env, ok, run_cli

MakeCluster = Callable[..., LocalCluster]
Runner = Callable[..., Result]
REPAIR_TIMEOUT_S = 30.0


def runner(cluster: LocalCluster, cwd: Path, **env: str) -> Runner:
    """Run the CLI against `cluster` (--coordinator after the subcommand)."""

    def run(*args: str) -> Result:
        return run_cli(*args, "--coordinator", cluster.address, cwd=cwd, env=clean_env(**env))

    return run


def status_json(cli: Runner) -> dict[str, Any]:
    result = cli("status", "--json")
    assert result.returncode in (0, 1, 2), result.stderr.decode()
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def human_status(cli: Runner) -> str:
    result = cli("status")
    assert result.returncode in (0, 1, 2), result.stderr.decode()
    assert not result.stderr, result.stderr.decode()
    return result.stdout.decode()


def node(report: dict[str, Any], node_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [n for n in report["nodes"] if n["node_id"] == node_id]
    assert len(found) == 1, (node_id, report["nodes"])
    return found[0]


def node_line(text: str, node_id: str) -> str:
    [line] = [line for line in text.splitlines() if line.startswith(f"{node_id} ")]
    return line


def fill(client: Client, objects: int = 3, size: int = 1536 * 1024) -> int:
    """Put `objects` two-stripe objects (1 MiB stripes); returns the stripe count."""
    bucket = unique("b")
    client.create_bucket(bucket, 4, 6)
    for i in range(objects):
        client.put(bucket, f"obj-{i}", os.urandom(size))
    return objects * 2


def fully_redundant(client: Client, stripes: int) -> bool:
    report = client.status()
    return bool(
        report["stripes_by_margin"] == {"2": stripes} and report["repair"]["shards_remaining"] == 0
    )


def test_hold_kill_resume(make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = make_cluster(7, REPAIR_SETTINGS)
    cli = runner(cluster, tmp_path)
    with Client(cluster.address) as client:
        stripes = fill(client)
        wait_for(lambda: fully_redundant(client, stripes), what="full redundancy after puts")

        assert "repair is held" in ok(cli("repair", "hold"))
        assert status_json(cli)["repair"]["held"] is True
        human = human_status(cli)
        assert "REPAIR HELD: automatic repair is paused (clusterctl repair resume)" in human
        assert "Repair: HELD" in human

        # Kill the node holding the most shards, so some stripes surely lose one.
        victim = max(client.status()["nodes"], key=lambda n: n["shards"])["node_id"]
        cluster.stop_nodes([victim], signal.SIGKILL)
        wait_for(
            lambda: node(client.status(), victim)["state"] == "down",
            what=f"{victim} reported down",
        )
        report = status_json(cli)
        assert report["repair"]["held"] is True
        assert report["repair"]["shards_done"] == 0
        assert report["stripes_by_margin"].get("1", 0) > 0
        assert report["stripes_below_k"] == 0
        line = node_line(human_status(cli), victim)
        assert "down " in line
        assert any(part in line for part in ("repair in", "repairing", "repair held")), line

        assert "automatic repair resumed" in ok(cli("repair", "resume"))
        wait_for(
            lambda: fully_redundant(client, stripes),
            timeout_s=REPAIR_TIMEOUT_S,
            what="repair back to full redundancy",
        )
    report = status_json(cli)
    assert report["repair"]["held"] is False
    assert report["stripes_by_margin"] == {"2": stripes}
    assert report["repair"]["shards_remaining"] == 0
    assert report["stripes_at_risk"] == 0
    human = human_status(cli)
    assert "REPAIR HELD" not in human
    assert "Repair: idle" in human
    assert "+2 (full)" in human
    assert "Stripes at risk: 0 one failure from loss, 0 below k" in human
    assert "down " in node_line(human, victim)

    narrow = human_status(runner(cluster, tmp_path, COLUMNS="60"))
    assert all(len(line) <= 60 for line in narrow.splitlines()), narrow
    assert "Redundancy margin" in narrow
    assert "down " in node_line(narrow, victim)

    errors = ok(cli("repair", "errors"))
    assert errors == "no repair errors\n" or "REASON" in errors

    live = sorted(n for n in cluster.nodes if n != victim)
    assert ok(cli("scrub")) == f"scrub started on {', '.join(live)} (progress: clusterctl status)\n"
    assert f"scrub started on {live[0]} " in ok(cli("scrub", live[0]))
    assert_one_line_error(cli("scrub", victim), 1, f"node {victim} is down")


def test_drain_then_remove(make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = make_cluster(7, REPAIR_SETTINGS)
    cli = runner(cluster, tmp_path)
    with Client(cluster.address) as client:
        stripes = fill(client)
        out = ok(cli("node", "drain", "node-1"))
        assert out.startswith("draining node-1: "), out

        def drained() -> bool:
            drain = node(client.status(), "node-1")["drain"]
            return bool(drain and drain["ratio"] == 1.0 and drain["shards_remaining"] == 0)

        wait_for(drained, timeout_s=REPAIR_TIMEOUT_S, what="node-1 drained")
        wait_for(lambda: fully_redundant(client, stripes), what="no work left after the drain")

    report = status_json(cli)
    drained_node = node(report, "node-1")
    assert drained_node["state"] == "draining"
    assert drained_node["admin_state"] == "draining"
    assert drained_node["drain"]["ratio"] == 1.0
    assert drained_node["drain"]["shards_remaining"] == 0
    total = drained_node["drain"]["shards_total"]
    assert total > 0
    assert f"drained 100% ({total}/{total})" in node_line(human_status(cli), "node-1")

    assert ok(cli("node", "remove", "node-1")).startswith("removed node-1")
    report = status_json(cli)
    assert node(report, "node-1")["state"] == "decommissioned"
    assert report["stripes_by_margin"] == {"2": stripes}
    assert "decommissioned" in node_line(human_status(cli), "node-1")
    assert_one_line_error(cli("node", "drain", "node-1"), 1, "was removed")

    # A drain can be cancelled: the node is active again and shows no drain.
    assert "draining node-2" in ok(cli("node", "drain", "node-2"))
    assert "drain of node-2 cancelled" in ok(cli("node", "drain", "node-2", "--cancel"))
    cancelled = node(status_json(cli), "node-2")
    assert (cancelled["admin_state"], cancelled["state"], cancelled["drain"]) == (
        "active",
        "up",
        None,
    )


def test_remove_refused_below_k(make_cluster: MakeCluster, tmp_path: Path) -> None:
    cluster = make_cluster(6, REPAIR_SETTINGS)
    cli = runner(cluster, tmp_path)
    with Client(cluster.address) as client:
        stripes = fill(client, objects=2)
        cluster.stop_nodes(["node-5", "node-6"], signal.SIGKILL)

        def both_down() -> bool:
            report = client.status()
            return all(node(report, n)["state"] == "down" for n in ("node-5", "node-6"))

        wait_for(both_down, what="node-5 and node-6 down")
        # Four live nodes for six shards a stripe: repair has nowhere to go and says so.
        wait_for(
            lambda: client.repair_errors(1)[1] > 1,
            timeout_s=REPAIR_TIMEOUT_S,
            what="repair errors recorded",
        )

    result = cli("node", "remove", "node-1")
    assert_one_line_error(result, 1, "refusing to remove node-1")
    assert f"{stripes} stripes would drop below k" in result.stderr.decode()
    report = status_json(cli)
    assert node(report, "node-1")["state"] == "up"
    assert report["stripes_by_margin"] == {"0": stripes}
    assert report["stripes_at_risk"] == stripes
    human = human_status(cli)
    assert f"Stripes at risk: {stripes} one failure from loss, 0 below k" in human

    table = ok(cli("repair", "errors"))
    header = table.splitlines()[0].split()
    assert header == ["OBJECT", "STRIPE", "SHARD", "REASON", "ATTEMPTS", "NEXT", "ATTEMPT"]
    assert "no eligible node" in table
    limited = ok(cli("repair", "errors", "--limit", "1"))
    assert "showing 1 of " in limited
    bad_limit = cli("repair", "errors", "--limit", "0")
    assert bad_limit.returncode == 2  # argparse: usage plus one error line
    assert "argument --limit: must be between 1 and 1000, got 0" in bad_limit.stderr.decode()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["node", "remove", "node-99"], "no node 'node-99'"),
        (["node", "drain", "node-99"], "no node 'node-99'"),
        (["scrub", "node-99"], "no node 'node-99'"),
        (["node", "remove", "bad id!"], "invalid node id"),
    ],
    ids=["remove", "drain", "scrub", "invalid-id"],
)
def test_unknown_node_is_one_line(
    cluster: LocalCluster, tmp_path: Path, args: list[str], fragment: str
) -> None:
    assert_one_line_error(runner(cluster, tmp_path)(*args), 1, fragment)


def test_up_passes_down_and_repair_delays(tmp_path: Path) -> None:
    data_dir = ["--data-dir", str(tmp_path / "local")]
    refused = run_cli(
        "up", "--heartbeat-timeout", "2s", "--down-after", "1s", *data_dir, cwd=tmp_path
    )
    assert_one_line_error(refused, 2, "--down-after (1s) must be at least --heartbeat-timeout")
    up = run_cli(
        "up",
        "--nodes",
        "2",
        "--k",
        "1",
        "--n",
        "2",
        "--down-after",
        "4s",
        "--repair-after",
        "1m",
        *data_dir,
        cwd=tmp_path,
    )
    try:
        assert "repair starts after 1m00s" in ok(up)
        report = json.loads(run_cli("status", "--json", *data_dir, cwd=tmp_path).stdout)
        assert report["timings"]["down_after_s"] == 4.0
        assert report["timings"]["repair_after_s"] == 60.0
    finally:
        LocalCluster(tmp_path / "local").down()


def _fake_node(node_id: str, **fields: Any) -> dict[str, Any]:
    info: dict[str, Any] = {
        "node_id": node_id,
        "address": "127.0.0.1:40001",
        "zone": "",
        "state": "up",
        "admin_state": "active",
        "capacity_bytes": 100 << 30,
        "used_bytes": 3 << 30,
        "shards": 120,
        "last_heartbeat_age_s": 0.2,
        "down_for_s": 0.0,
        "repair_in_s": 0.0,
        "corrupt_found": 0,
        "scrub": {"running": False, "bytes_done": 0, "bytes_total": 0, "ratio": 1.0},
        "drain": None,
    }
    info.update(fields)
    return info


def test_render_states_on_a_narrow_terminal() -> None:
    """The human view of states a live test cannot hold still: mid-drain, mid-scrub, mid-repair."""
    status: dict[str, Any] = {
        "schema_version": 1,
        "health": "UNAVAILABLE",
        "reason": "1 objects have stripes below k shards",
        "nodes": [
            _fake_node("node-1", state="down", down_for_s=252, repair_in_s=648),
            _fake_node(
                "node-2",
                state="draining",
                admin_state="draining",
                drain={"shards_total": 30, "shards_remaining": 18, "ratio": 0.4},
            ),
            _fake_node(
                "node-3",
                scrub={"running": True, "bytes_done": 41, "bytes_total": 100, "ratio": 0.41},
            ),
            _fake_node("node-4", state="down", down_for_s=900),
        ],
        "repair": {
            "held": False,
            "active": True,
            "shards_done": 37,
            "shards_remaining": 83,
            "shards_to_move": 18,
            "ratio": 0.3083,
            "bytes_done": 12_5 * 1024 * 1024 // 10,
            "rate_bytes_s": 4.1 * 1024 * 1024,
            "eta_s": 20.0,
            "errors": 0,
            "mean_rebuild_s": 0.2,
        },
        "orphaned_bytes": 3 << 20,
        "stripes_by_margin": {"-1": 1, "0": 4, "2": 100},
        "objects_by_margin": {"-1": 1, "0": 2, "2": 40},
        "stripes_at_risk": 4,
        "stripes_below_k": 1,
        "timings": {"heartbeat_timeout_s": 10.0, "down_after_s": 30.0, "repair_after_s": 900.0},
        "capacity": {"raw_bytes": 400 << 30, "used_bytes": 12 << 30, "usable_bytes": 258 << 30},
        "objects": {"healthy": 40, "degraded": 2, "unavailable": 1},
        "object_bytes": {"healthy": 40 << 20, "degraded": 2 << 20, "unavailable": 1 << 20},
        "stripes_by_healthy_shards": {"6": 100, "4": 4, "3": 1},
        "buckets": 2,
        "default_redundancy": {"k": 4, "n": 6},
        "pending_shard_deletions": 0,
    }
    out = io.StringIO()
    render_status(status, Console(file=out, width=60, no_color=True, highlight=False))
    text = out.getvalue()
    assert all(len(line) <= 60 for line in text.splitlines()), text
    flat = " ".join(text.split())
    assert "down 4m12s, repair in 10m48s" in flat
    assert "down 15m00s, repairing" in flat
    assert "draining 40% (12/30)" in flat
    assert "41%" in node_line(text, "node-3")
    assert "repairing 37/120 shards (30.8%), 12.5 MiB at 4.1 MiB/s, ETA 20s, 0 errors" in flat
    assert "18 shards to move off draining nodes" in flat
    assert "orphaned: 3.0 MiB" in flat
    for label in ("+2 (full)", "+1", "0 (one failure from loss)", "-1 (below k)"):
        assert label in text, label
    assert "Stripes at risk: 4 one failure from loss, 1 below k" in flat
    assert "REPAIR HELD" not in text

    status["repair"]["held"] = True
    out = io.StringIO()
    render_status(status, Console(file=out, width=60, no_color=True, highlight=False))
    flat = " ".join(out.getvalue().split())
    assert "REPAIR HELD: automatic repair is paused (clusterctl repair resume)" in flat
    assert "down 4m12s, repair in 10m48s (held)" in flat
    assert "down 15m00s, repair held" in flat
