"""Request ids: every SDK operation sends one id with all of its RPCs, the daemons log it on
the lines about that request, a failed operation's error carries it, and clusterctl prints it
with the error, so an operator can go from a user's error message to the daemon log lines."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shoal.client import AsyncClient, Client
from shoal.client.cli.local_cluster import LocalCluster
from shoal.common.errors import NotFound
from shoal.common.request_ids import request_scope
from tests.harness.cluster import unique, wait_for
from tests.integration.test_cli import clean_env, run_cli

HEX_ID = re.compile(r"^[0-9a-f]{16}$")


def coordinator_log(cluster: LocalCluster) -> str:
    assert cluster.coordinator is not None
    return (Path(cluster.coordinator.data_dir) / "daemon.log").read_text(errors="replace")


def test_sdk_error_carries_a_request_id(client: Client, bucket: str) -> None:
    with pytest.raises(NotFound) as first:
        client.head(bucket, "no-such-key")
    with pytest.raises(NotFound) as second:
        client.head(bucket, "no-such-key")
    assert HEX_ID.match(first.value.request_id), first.value.request_id
    # One id per operation, not one per client.
    assert first.value.request_id != second.value.request_id


async def test_daemon_logs_carry_the_callers_request_id(
    cluster: LocalCluster, bucket: str
) -> None:
    request_id = "feedc0de" + unique("")[-8:]
    async with AsyncClient(cluster.address) as client:
        with request_scope(request_id):
            await client.put(bucket, "logged", b"x" * 1000)
    # The coordinator logs the commit of this put with the id the SDK sent.
    wait_for(
        lambda: any(
            "object committed" in line and f"request_id={request_id}" in line
            for line in coordinator_log(cluster).splitlines()
        ),
        what=f"a coordinator log line with request_id={request_id}",
    )
    # Lines not about a request carry no id.
    serving_lines = [
        line for line in coordinator_log(cluster).splitlines() if " serving " in line
    ]
    assert serving_lines
    assert all("request_id=" not in line for line in serving_lines)


def test_cli_prints_the_request_id_with_an_error(
    cluster: LocalCluster, bucket: str, tmp_path: Path
) -> None:
    result = run_cli(
        "--coordinator", cluster.address, "stat", f"{bucket}/no-such-key", cwd=tmp_path,
        env=clean_env(),
    )  # fmt: skip
    assert result.returncode != 0
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    match = re.search(r"\(request id ([0-9a-f]{16})\)$", lines[0])
    assert match, lines[0]
