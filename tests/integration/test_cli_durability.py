"""`clusterctl durability` against the shared cluster (a real subprocess, real daemons)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from shoal.client import Client
from shoal.client.cli.local_cluster import LocalCluster
from shoal.common.durability import REPAIR_CONFIGURED, REPAIR_GIVEN, REPAIR_MEASURED, estimate
from tests.integration.test_cli import (
    Result,
    Runner,
    assert_one_line_error,
    clean_env,
    ok,
    run_cli,
)

SOURCES = (REPAIR_MEASURED, REPAIR_CONFIGURED)


@pytest.fixture
def cli(cluster: LocalCluster, tmp_path: Path) -> Runner:
    def run(*args: str) -> Result:
        return run_cli("durability", *args, "--coordinator", cluster.address, cwd=tmp_path)

    return run


def test_status_reports_the_repair_throttles(client: Client) -> None:
    timings = client.status()["timings"]
    assert timings["repair_bandwidth_bytes_s"] == 256 * 1024 * 1024  # LocalCluster's setting
    assert timings["repair_concurrency"] == 4  # the coordinator's default


def test_prints_overhead_nines_and_the_repair_source(cli: Runner) -> None:
    out = ok(cli())
    assert "overhead        1.50x" in out
    assert "k, n            4, 6 (survives any 2 nodes lost at once)" in out
    assert "nodes           6\n" in out
    assert "node AFR        2% per node per year" in out
    assert any(f"h, {source}\n" in out for source in SOURCES), out
    assert "down-after" in out
    assert "repair-after" in out
    assert "stripe loss" in out
    assert " nines" in out
    assert "3x replication" in out
    assert "docs/durability.md" in out


def test_json_uses_the_cluster_settings_and_measurements(cli: Runner, client: Client) -> None:
    status = client.status()
    report = json.loads(ok(cli("--json", "--afr", "0.05")))
    live = [node for node in status["nodes"] if node["state"] in ("up", "suspect")]
    assert (report["k"], report["n"], report["overhead"]) == (4, 6, 1.5)
    assert report["nodes"] == len(live) == 6
    assert report["afr"] == 0.05
    assert report["stripes"] >= sum(status["stripes_by_healthy_shards"].values())
    repair = report["repair"]
    timings = status["timings"]
    assert repair["down_after_s"] == timings["down_after_s"]
    assert repair["repair_after_s"] == timings["repair_after_s"]
    if status["repair"]["mean_rebuild_s"] > 0:
        assert repair["source"] == REPAIR_MEASURED
    else:
        assert repair["source"] == REPAIR_CONFIGURED
        # configured: k shard reads per shard of each node's bytes, at repair-bandwidth
        per_node = sum(node["used_bytes"] for node in live) / len(live)
        expected = 4 * per_node / timings["repair_bandwidth_bytes_s"]
        assert repair["rebuild_s"] == pytest.approx(expected, abs=0.01, rel=0.05)
    total_s = repair["down_after_s"] + repair["repair_after_s"] + repair["rebuild_s"]
    assert repair["hours"] == pytest.approx(total_s / 3600, abs=1e-5)
    expected_nines = estimate(4, 6, nodes=6, afr=0.05, repair_hours=repair["hours"]).stripe_nines
    assert report["stripe"]["nines"] == pytest.approx(expected_nines, rel=1e-6)
    assert math.isfinite(report["stripe"]["nines"])
    assert report["replication_3x"]["overhead"] == 3.0


def test_k_n_and_repair_hours_override_the_cluster(cli: Runner) -> None:
    report = json.loads(ok(cli("--json", "--k", "2", "--n", "5", "--repair-hours", "3")))
    assert (report["k"], report["n"], report["tolerates"]) == (2, 5, 3)
    assert report["overhead"] == 2.5
    assert report["repair"] == {
        "hours": 3.0,
        "source": REPAIR_GIVEN,
        "down_after_s": None,
        "repair_after_s": None,
        "rebuild_s": None,
    }


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--afr", "2"), "invalid annual failure rate 2: need 0 < afr < 1"),
        (("--afr", "0"), "need 0 < afr < 1"),
        (("--k", "6", "--n", "4"), "invalid redundancy k=6, n=4: need 1 <= k < n <= 256"),
        (("--k", "4", "--n", "7"), "a stripe of n=7 shards cannot be placed on 6 nodes"),
        (("--repair-hours", "0"), "invalid repair time"),
    ],
)
def test_bad_input_is_one_line_and_fails(cli: Runner, args: tuple[str, ...], fragment: str) -> None:
    result = cli(*args)
    assert_one_line_error(result, 1, fragment)
    assert result.stdout == b""


def test_planning_without_a_cluster(tmp_path: Path) -> None:
    args = ("--k", "8", "--n", "12", "--nodes", "20", "--repair-hours", "2", "--stripes", "1000")
    out = ok(run_cli("durability", *args, cwd=tmp_path, env=clean_env()))
    assert "overhead        1.50x" in out
    assert "repair time     2.00 h, given (--repair-hours)" in out
    assert "cluster loss" in out
    assert "(any of 1000 stripes)" in out
