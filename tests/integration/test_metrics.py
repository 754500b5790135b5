"""Every daemon serves Prometheus metrics: a real cluster started with --metrics-listen
127.0.0.1:0 stores and reads an object and runs a small job, then each daemon (coordinator,
every node, the worker) is scraped over HTTP and its series checked."""

from __future__ import annotations

import dataclasses
import os
import sys
import urllib.request
from collections.abc import Callable

import cloudpickle
from prometheus_client.parser import text_string_to_metric_families

from shoal.client import Client
from shoal.client.cli.local_cluster import DaemonState, LocalCluster
from tests.harness.cluster import TEST_SETTINGS, unique, wait_for
from tests.harness.jobs import start_workers

cloudpickle.register_pickle_by_value(sys.modules[__name__])

NODES = 3
METRICS_SETTINGS = dataclasses.replace(TEST_SETTINGS, metrics=True)


def double(x: int) -> int:
    return 2 * x


class Scrape:
    """One daemon's /metrics, parsed."""

    def __init__(self, daemon: DaemonState) -> None:
        assert daemon.metrics_address, f"{daemon.name} reported no metrics address"
        url = f"http://{daemon.metrics_address}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
            self.text = response.read().decode()
        self.samples = [
            sample
            for family in text_string_to_metric_families(self.text)
            for sample in family.samples
        ]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called `name` whose labels include `labels`."""
        return sum(
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def has(self, name: str) -> bool:
        return any(s.name == name for s in self.samples)


def test_every_daemon_serves_metrics(make_cluster: Callable[..., LocalCluster]) -> None:
    cluster = make_cluster(NODES, METRICS_SETTINGS)
    (worker,) = start_workers(cluster, [1])
    data = os.urandom(300 * 1024)
    bucket = unique("m")
    with Client(cluster.address) as client:
        client.create_bucket(bucket, 2, 3)
        client.put(bucket, "obj", data)
        assert client.get(bucket, "obj") == data
        assert client.map(double, [1, 2, 3]).result(timeout=60) == [2, 4, 6]

    coordinator = Scrape(cluster.coordinator) if cluster.coordinator else None
    assert coordinator is not None
    rpc = "shoal_rpc_requests_total"
    for method in ("BeginPut", "CommitPut", "Locate", "RegisterNode", "Heartbeat"):
        assert coordinator.value(rpc, service="shoal.rpc.v1.Coordinator", method=method, code="OK")
    # Completions ride on the worker's next LeaseTasks long poll or a CompleteTasks batch, and
    # the client waits with WaitJob.
    for method in ("SubmitJob", "RegisterWorker", "LeaseTasks", "WaitJob"):
        assert coordinator.value(rpc, service="shoal.rpc.v1.Jobs", method=method, code="OK")
    assert coordinator.value(
        "shoal_rpc_duration_seconds_count", service="shoal.rpc.v1.Coordinator", method="CommitPut"
    )
    assert coordinator.value("shoal_rpc_received_bytes_total", method="CommitPut") > 0
    assert coordinator.value("shoal_nodes", state="up") == NODES
    assert coordinator.value("shoal_nodes", state="down") == 0
    assert coordinator.value("shoal_cluster_capacity_bytes") > 0
    assert coordinator.value("shoal_workers") == 1
    assert coordinator.value("shoal_jobs_submitted_total") >= 1
    assert coordinator.value("shoal_jobs_finished_total", state="succeeded") >= 1
    assert coordinator.value("shoal_job_duration_seconds_count", state="succeeded") >= 1
    assert coordinator.value("shoal_task_attempts_total", outcome="succeeded") >= 1
    assert coordinator.value("shoal_task_attempts_started_total") >= 1
    assert coordinator.value("shoal_task_duration_seconds_count", outcome="succeeded") >= 1
    assert coordinator.value("shoal_daemon_info", role="coordinator") == 1
    assert coordinator.value("shoal_repair_held") == 0
    # Data health is published from the maintained counters every few seconds.
    wait_for(
        lambda: Scrape(cluster.coordinator).value("shoal_objects", health="healthy") >= 1
        if cluster.coordinator
        else False,
        what="shoal_objects{health=healthy} on the coordinator",
    )
    assert Scrape(cluster.coordinator).value("shoal_stripes_below_k") == 0
    assert coordinator.has("process_resident_memory_bytes")

    shard_bytes_sent = 0.0
    for name, daemon in cluster.nodes.items():
        node = Scrape(daemon)
        # (2, 3) on 3 nodes: every node holds a shard of the object.
        put = node.value(rpc, service="shoal.rpc.v1.StorageNode", method="PutShard", code="OK")
        assert put >= 1, name
        assert node.value("shoal_node_shard_received_bytes_total", op="put") > 0, name
        assert node.value("shoal_node_shards_written_total", op="put") >= 1, name
        assert node.value("shoal_node_shards_stored") >= 1, name
        assert node.value("shoal_node_stored_bytes") > 0, name
        assert node.value("shoal_rpc_received_bytes_total", method="PutShard") > 0, name
        assert node.value("shoal_daemon_info", role="node") == 1, name
        shard_bytes_sent += node.value("shoal_node_shard_sent_bytes_total", op="get")
    # The get read k = 2 shards of half the object each.
    assert shard_bytes_sent >= len(data)

    scraped = Scrape(cluster.worker(worker))
    assert scraped.value("shoal_worker_tasks_total", outcome="succeeded") >= 1
    assert scraped.value("shoal_worker_task_duration_seconds_count", outcome="succeeded") >= 1
    assert scraped.value("shoal_worker_slots") == 1
    assert scraped.has("shoal_worker_slots_busy")
    assert scraped.value("shoal_daemon_info", role="worker") == 1
    assert not scraped.has("shoal_rpc_requests_total")  # a worker serves no gRPC

    codes = cluster.down()
    assert all(code == 0 for code in codes.values()), f"unclean daemon exits: {codes}"
