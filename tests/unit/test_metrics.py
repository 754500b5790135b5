"""Metrics: the HTTP endpoint, the RPC interceptor's codes/latency/bytes on a real grpc.aio
server (OK, ShoalError aborts, crashes, cancellation, deadlines, refused tokens, streaming),
and the role collectors read at scrape time."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from prometheus_client import REGISTRY

from shoal.common.errors import ConfigError, NotFound
from shoal.common.metrics import (
    ready_fields,
    rpc_interceptors,
    serve_metrics,
    start_metrics_server,
    stop_metrics_server,
)
from shoal.common.rpc import streaming, unary
from shoal.common.transport import Transport
from shoal.coordinator import metrics as coordinator_metrics
from shoal.coordinator.membership import DRAINING, Membership
from shoal.coordinator.scheduler import Job, Scheduler, Task, Worker
from shoal.storage_node import metrics as node_metrics
from shoal.storage_node.shard_store import ShardStore
from shoal.worker import metrics as worker_metrics

SERVICE = "test.Probe"
TOKEN = "a-token-of-sixteen-plus-chars"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def requests(method: str, code: str, service: str = SERVICE) -> float:
    return sample("shoal_rpc_requests_total", service=service, method=method, code=code)


def scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        return str(response.read().decode())


# The endpoint --------------------------------------------------------------------------------


def test_metrics_server_binds_a_free_port_and_serves_the_registry() -> None:
    address = start_metrics_server("127.0.0.1:0", "node")
    try:
        host, port = address.rsplit(":", 1)
        assert host == "127.0.0.1"
        assert int(port) > 0
        text = scrape(address)
        assert "# TYPE shoal_rpc_requests_total counter" in text
        assert 'shoal_daemon_info{role="node"' in text
        assert "process_cpu_seconds_total" in text or "python_info" in text
    finally:
        stop_metrics_server(address)


def test_metrics_off_by_default_and_bad_listen_is_a_config_error() -> None:
    assert serve_metrics("", "coordinator") == ""
    assert ready_fields("") == {}
    assert ready_fields("127.0.0.1:9") == {"metrics_address": "127.0.0.1:9"}
    assert rpc_interceptors("") == []
    with pytest.raises(ConfigError, match="metrics_listen"):
        start_metrics_server("no-port")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match="cannot serve metrics"):
            start_metrics_server(f"127.0.0.1:{port}")


def test_a_daemon_with_a_bad_metrics_listen_exits_2_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    flags = ["--listen", "127.0.0.1:0", "--metrics-listen", "no-port"]
    result = subprocess.run(
        [sys.executable, "-m", "shoal.coordinator", "--data-dir", str(tmp_path / "c"), *flags],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "shoal-coordinator: error: invalid value for 'metrics_listen': 'no-port' is not HOST:PORT"
    ]


# The interceptor -----------------------------------------------------------------------------


class Probe:
    """Raw-bytes handlers: requests name what the handler should do."""

    def __init__(self) -> None:
        self.ran = 0

    @unary
    async def Unary(self, request: bytes, context: Any) -> bytes:
        self.ran += 1
        if request == b"missing":
            raise NotFound("no such thing")
        if request == b"crash":
            raise RuntimeError("bug")
        if request == b"slow":
            await asyncio.sleep(10)
        if request == b"set-code":
            context.set_code(grpc.StatusCode.RESOURCE_EXHAUSTED)
        return b"reply:" + request

    @streaming
    async def Stream(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        for i in range(3):
            yield b"x" * 100
            if request == b"fail-midway" and i == 1:
                raise NotFound("gone midway")

    @unary
    async def Upload(self, requests: AsyncIterator[bytes], context: Any) -> bytes:
        total = 0
        async for chunk in requests:
            total += len(chunk)
        return str(total).encode()


def probe_handler(probe: Probe) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(probe.Unary),
            "Stream": grpc.unary_stream_rpc_method_handler(probe.Stream),
            "Upload": grpc.stream_unary_rpc_method_handler(probe.Upload),
        },
    )


class Server:
    def __init__(self, token: str = "") -> None:
        self.probe = Probe()
        self.token = token
        self.server: grpc.aio.Server | None = None
        self.address = ""

    async def __aenter__(self) -> Server:
        # As the daemons build theirs: metrics outside the token check.
        self.server = Transport(self.token).server(rpc_interceptors("on"))
        self.server.add_generic_rpc_handlers((probe_handler(self.probe),))
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        self.address = f"127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        await self.server.stop(0)


def unary_codes() -> dict[str, float]:
    """Every code recorded for the probe's Unary method so far (for failure messages)."""
    return {
        sample.labels["code"]: sample.value
        for metric in REGISTRY.collect()
        if metric.name == "shoal_rpc_requests"
        for sample in metric.samples
        if sample.name == "shoal_rpc_requests_total"
        and sample.labels.get("service") == SERVICE
        and sample.labels.get("method") == "Unary"
    }


async def wait_until(predicate: Any, within: float = 30.0) -> None:
    """Poll until `predicate` holds. The window is wide because grpc delivers a deadline or a
    cancellation to the handler from its own threads, and a loaded CI machine has stalled for
    over 10 s; a healthy run returns within milliseconds."""
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, (
            f"metric never appeared within {within}s; Unary codes so far: {unary_codes()}"
        )
        await asyncio.sleep(0.01)


async def test_unary_codes_latency_and_bytes() -> None:
    before = {
        code: requests("Unary", code)
        for code in ("OK", "NOT_FOUND", "UNKNOWN", "RESOURCE_EXHAUSTED")
    }
    count_before = sample("shoal_rpc_duration_seconds_count", service=SERVICE, method="Unary")
    received = sample("shoal_rpc_received_bytes_total", service=SERVICE, method="Unary")
    sent = sample("shoal_rpc_sent_bytes_total", service=SERVICE, method="Unary")
    async with Server() as server, grpc.aio.insecure_channel(server.address) as channel:
        call = channel.unary_unary(f"/{SERVICE}/Unary")
        assert await call(b"hello", timeout=5) == b"reply:hello"
        for request, code in (
            (b"missing", grpc.StatusCode.NOT_FOUND),
            (b"crash", grpc.StatusCode.UNKNOWN),
            (b"set-code", grpc.StatusCode.RESOURCE_EXHAUSTED),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(request, timeout=5)
            assert caught.value.code() == code
    assert requests("Unary", "OK") == before["OK"] + 1
    assert requests("Unary", "NOT_FOUND") == before["NOT_FOUND"] + 1
    assert requests("Unary", "UNKNOWN") == before["UNKNOWN"] + 1
    assert requests("Unary", "RESOURCE_EXHAUSTED") == before["RESOURCE_EXHAUSTED"] + 1
    after = sample("shoal_rpc_duration_seconds_count", service=SERVICE, method="Unary")
    assert after == count_before + 4
    # Requests: hello, missing, crash, set-code; the one reply that was sent: reply:hello.
    assert sample(
        "shoal_rpc_received_bytes_total", service=SERVICE, method="Unary"
    ) == received + len(b"hellomissingcrashset-code")
    assert sample("shoal_rpc_sent_bytes_total", service=SERVICE, method="Unary") >= sent + len(
        b"reply:hello"
    )
    assert sample("shoal_rpc_in_flight", service=SERVICE, method="Unary") == 0


async def test_streaming_calls_are_counted_when_the_stream_ends() -> None:
    ok = requests("Stream", "OK")
    failed = requests("Stream", "NOT_FOUND")
    upload_ok = requests("Upload", "OK")
    upload_bytes = sample("shoal_rpc_received_bytes_total", service=SERVICE, method="Upload")
    async with Server() as server, grpc.aio.insecure_channel(server.address) as channel:
        stream = channel.unary_stream(f"/{SERVICE}/Stream")
        assert [m async for m in stream(b"all", timeout=5)] == [b"x" * 100] * 3
        got: list[bytes] = []

        async def read_all() -> None:
            async for message in stream(b"fail-midway", timeout=5):
                got.append(message)

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await read_all()
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert len(got) == 2

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(4):
                yield b"y" * 1000

        upload = channel.stream_unary(f"/{SERVICE}/Upload")
        assert await upload(chunks(), timeout=5) == b"4000"
    assert requests("Stream", "OK") == ok + 1
    assert requests("Stream", "NOT_FOUND") == failed + 1
    assert requests("Upload", "OK") == upload_ok + 1
    assert (
        sample("shoal_rpc_received_bytes_total", service=SERVICE, method="Upload")
        == upload_bytes + 4000
    )


async def test_cancelled_and_timed_out_calls() -> None:
    cancelled = requests("Unary", "CANCELLED")
    expired = requests("Unary", "DEADLINE_EXCEEDED")
    async with Server() as server, grpc.aio.insecure_channel(server.address) as channel:
        call = channel.unary_unary(f"/{SERVICE}/Unary")
        pending = call(b"slow", timeout=30)
        await wait_until(lambda: server.probe.ran >= 1)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        await wait_until(lambda: requests("Unary", "CANCELLED") == cancelled + 1)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(b"slow", timeout=0.3)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await wait_until(lambda: requests("Unary", "DEADLINE_EXCEEDED") == expired + 1)
    assert sample("shoal_rpc_in_flight", service=SERVICE, method="Unary") == 0


async def test_refused_token_is_recorded_and_the_handler_never_runs() -> None:
    denied = requests("Unary", "PERMISSION_DENIED")
    async with Server(token=TOKEN) as server, grpc.aio.insecure_channel(server.address) as channel:
        call = channel.unary_unary(f"/{SERVICE}/Unary")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(b"hello", timeout=5)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert server.probe.ran == 0
        ok = requests("Unary", "OK")
        metadata = (("authorization", f"Bearer {TOKEN}"),)
        assert await call(b"hello", timeout=5, metadata=metadata) == b"reply:hello"
        assert server.probe.ran == 1
    assert requests("Unary", "PERMISSION_DENIED") == denied + 1
    assert requests("Unary", "OK") == ok + 1


async def test_unknown_methods_do_not_create_labels_per_name() -> None:
    unknown = requests("unknown", "UNIMPLEMENTED", service="unknown")
    async with Server() as server, grpc.aio.insecure_channel(server.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary("/made.Up/Name")(b"", timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert requests("unknown", "UNIMPLEMENTED", service="unknown") == unknown + 1
    assert (
        REGISTRY.get_sample_value(
            "shoal_rpc_requests_total",
            {"service": "made.Up", "method": "Name", "code": "UNIMPLEMENTED"},
        )
        is None
    )


# Role collectors -----------------------------------------------------------------------------


@pytest.fixture
def restore_collectors() -> Iterator[None]:
    yield
    for installed in (
        coordinator_metrics._installed,
        node_metrics._installed,
        worker_metrics._installed,
    ):
        for collector in installed:
            REGISTRY.unregister(collector)
        installed.clear()


def test_coordinator_gauges_are_read_at_scrape_time(restore_collectors: None) -> None:
    membership = Membership(10.0, 30.0, 900.0)
    scheduler = Scheduler(10.0)
    coordinator_metrics.install(membership, scheduler)
    assert sample("shoal_nodes", state="up") == 0
    for i in range(3):
        membership.upsert(f"n{i}", f"127.0.0.1:{7100 + i}", "", 1000)
        membership.heartbeat(f"n{i}", 1000, 100 * i, i)
    membership.set_admin_state("n2", DRAINING)
    assert sample("shoal_nodes", state="up") == 2
    assert sample("shoal_nodes", state="draining") == 1
    assert sample("shoal_nodes", state="down") == 0
    assert sample("shoal_cluster_capacity_bytes") == 3000
    assert sample("shoal_cluster_used_bytes") == 300
    job = Job("j1", "j1", "map", b"", 0, "locality", 3, 0, False, 0.0)
    for i in range(2):
        task = Task("j1", "tasks", i, "call", b"", 0)
        job.tasks[task.key] = task
    scheduler.add_job(job)
    scheduler.register_worker(Worker("w1", "h1", "", 4, 0))
    assert sample("shoal_jobs", state="pending") == 1
    assert sample("shoal_tasks", state="pending") == 2
    assert sample("shoal_workers") == 1


def test_job_and_task_counters() -> None:
    finished = sample("shoal_jobs_finished_total", state="succeeded")
    durations = sample("shoal_job_duration_seconds_count", state="succeeded")
    job = Job("j2", "j2", "map", b"", 0, "locality", 3, 0, False, 100.0)
    job.state, job.finished = "running", 0.0
    coordinator_metrics.record_job_finished(job)  # not finished: ignored
    job.state, job.finished = "succeeded", 112.5
    coordinator_metrics.record_job_finished(job)
    assert sample("shoal_jobs_finished_total", state="succeeded") == finished + 1
    assert sample("shoal_job_duration_seconds_count", state="succeeded") == durations + 1
    lost = sample("shoal_task_attempts_total", outcome="lost")
    coordinator_metrics.record_task_attempt("lost")
    assert sample("shoal_task_attempts_total", outcome="lost") == lost + 1


def test_data_health_and_repair_functions() -> None:
    coordinator_metrics.set_data_health(
        {"healthy": 5, "degraded": 2, "unavailable": 1},
        {"healthy": 500, "degraded": 200, "unavailable": 100},
        {2: 10, 1: 3, 0: 2, -1: 1, -2: 1},
    )
    assert sample("shoal_objects", health="degraded") == 2
    assert sample("shoal_object_bytes", health="unavailable") == 100
    assert sample("shoal_stripes_at_risk") == 2
    assert sample("shoal_stripes_below_k") == 2
    assert sample("shoal_data_health_timestamp_seconds") > 0
    rebuilt = sample("shoal_repair_shards_total", kind="rebuild")
    read = sample("shoal_repair_read_bytes_total")
    other = sample("shoal_repair_failures_total", reason="other")
    coordinator_metrics.record_rebuild(4096, 0.2)
    coordinator_metrics.record_repair_failure("free text never becomes a label")
    coordinator_metrics.set_repair_backlog(7, 1)
    coordinator_metrics.set_repair_held(True)
    assert sample("shoal_repair_shards_total", kind="rebuild") == rebuilt + 1
    assert sample("shoal_repair_read_bytes_total") == read + 4096
    assert sample("shoal_repair_failures_total", reason="other") == other + 1
    assert sample("shoal_repair_backlog_shards", kind="rebuild") == 7
    assert sample("shoal_repair_held") == 1
    coordinator_metrics.set_repair_held(False)


def test_node_gauges_follow_the_store(tmp_path: Path, restore_collectors: None) -> None:
    from shoal.common.checksum import shard_checksum
    from shoal.common.names import shard_id
    from shoal.storage_node.shard_store import ShardMeta

    store = ShardStore(tmp_path, capacity_bytes=1 << 20)
    node_metrics.install(store)
    assert sample("shoal_node_shards_stored") == 0
    assert sample("shoal_node_capacity_bytes") == 1 << 20
    data = b"z" * 1000
    store.write(ShardMeta(shard_id("ab" * 16, 0, 0), len(data), shard_checksum(data)), data)
    assert sample("shoal_node_shards_stored") == 1
    assert sample("shoal_node_stored_bytes") == 1000
    assert REGISTRY.get_sample_value("shoal_node_written_cache_bytes") is None  # not dropping


@pytest.mark.skipif(
    not hasattr(os, "posix_fadvise"), reason="no posix_fadvise here: nodes cannot drop pages"
)
def test_node_reports_the_written_pages_it_keeps_and_drops(
    tmp_path: Path, restore_collectors: None
) -> None:
    from shoal.common.checksum import shard_checksum
    from shoal.common.names import shard_id
    from shoal.common.shard_file import HEADER_BYTES
    from shoal.storage_node.shard_store import ShardMeta
    from shoal.storage_node.written_pages import charged_bytes

    store = ShardStore(tmp_path, written_cache=charged_bytes(HEADER_BYTES + 1000) + 1)
    node_metrics.install(store)
    assert sample("shoal_node_written_cache_bytes") == 0
    assert sample("shoal_node_written_pages_dropped_total") == 0
    data = b"w" * 1000
    for stripe in range(2):
        meta = ShardMeta(shard_id("cd" * 16, stripe, 0), len(data), shard_checksum(data))
        store.write(meta, data)
    # A shard of 32 + 1,000 bytes takes a whole page, so the window holds one: the second
    # shard pushed the first out.
    assert sample("shoal_node_written_cache_bytes") == charged_bytes(HEADER_BYTES + 1000)
    assert sample("shoal_node_written_pages_dropped_total") == 1


def test_worker_outcomes_and_slots(restore_collectors: None) -> None:
    outcome = worker_metrics.outcome_of
    assert outcome({"ok": True}, cancelled=False, died=False) == "succeeded"
    assert outcome({"ok": False, "user_error": True}, cancelled=False, died=False) == "error"
    assert outcome({"ok": False, "user_error": False}, cancelled=False, died=False) == "failed"
    assert outcome({"ok": False}, cancelled=False, died=True) == "died"
    assert outcome({"ok": False}, cancelled=True, died=True) == "cancelled"
    before = sample("shoal_worker_tasks_total", outcome="succeeded")
    worker_metrics.record_task("succeeded", 0.5)
    assert sample("shoal_worker_tasks_total", outcome="succeeded") == before + 1
    worker_metrics.install(4, lambda: 3, lambda: 5)
    assert sample("shoal_worker_slots") == 4
    assert sample("shoal_worker_slots_busy") == 3
    assert sample("shoal_worker_tasks_running") == 5
