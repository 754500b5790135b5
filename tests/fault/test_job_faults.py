"""Jobs through faults: a worker SIGKILLed mid-job, the coordinator killed mid-job.

Each test has a private 3-node (2, 3) cluster with 3 s leases (TEST_SETTINGS), so a killed
worker's tasks are leased again about 3 s later. Map tasks record `start`/`end` lines (key,
pid, worker pid) in a file, which tells where they ran and how often.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import cloudpickle

from shoal.client import Client, ConnectionFailed, Job, JobOptions, Unavailable
from shoal.client.cli.local_cluster import LocalCluster, pid_alive
from tests.harness.cluster import TEST_SETTINGS, unique, wait_for
from tests.harness.jobs import (
    durable_map_successes,
    expected_counts,
    gated_word_counter,
    make_corpus,
    put_corpus,
    read_records,
    record,
    slow_word_counter,
    start_workers,
    sum_counts,
)

cloudpickle.register_pickle_by_value(sys.modules[__name__])

SETTINGS = dataclasses.replace(TEST_SETTINGS, k=2, n=3)
PARTITIONS = 4


def record_and_sleep(log: str, seconds: float) -> int:
    record(log, "start", os.getpid(), os.getppid())
    time.sleep(seconds)
    return os.getpid()


def corpus_cluster(
    make_cluster: Callable[..., LocalCluster], objects: int, workers: list[int]
) -> tuple[LocalCluster, Client, str, dict[str, bytes]]:
    """A private cluster with workers of the given slots, and a bucket of `objects` texts."""
    cluster = make_cluster(3, SETTINGS)
    start_workers(cluster, workers)
    client = Client(cluster.address)
    bucket = unique("wc")
    client.create_bucket(bucket, 2, 3)
    texts = make_corpus(objects, 200, seed=objects)
    put_corpus(client, bucket, texts)
    return cluster, client, bucket, texts


def reachable(job: Job) -> bool:
    try:
        job.status()
    except (ConnectionFailed, Unavailable):
        return False
    return True


def restart_coordinator(cluster: LocalCluster, job: Job) -> None:
    cluster.start_coordinator()
    wait_for(lambda: reachable(job), what="the restarted coordinator to answer")


def test_worker_sigkill_mid_job_still_counts_exactly(
    make_cluster: Callable[..., LocalCluster], tmp_path: Path
) -> None:
    cluster, client, bucket, texts = corpus_cluster(make_cluster, 12, [2, 2])
    log = tmp_path / "maps.log"
    with client:
        job = client.map_reduce(
            slow_word_counter(str(log), 0.6),
            sum_counts,
            inputs=(bucket, ""),
            partitions=PARTITIONS,
            combiner=sum_counts,
            # Without backups of stragglers, re-leasing is the only way lost work runs again.
            options=JobOptions(speculation=False),
        )
        victim = cluster.workers["worker-1"].pid
        survivor = cluster.workers["worker-2"].pid

        def victim_running() -> set[str]:
            records = read_records(log)
            started = {r[1] for r in records if r[0] == "start" and int(r[3]) == victim}
            return started - {r[1] for r in records if r[0] == "end"}

        wait_for(
            lambda: job.status().tasks["succeeded"] >= 2 and bool(victim_running()),
            timeout_s=60,
            what="worker-1 to run a map task mid-job",
        )
        in_flight = victim_running()
        cluster.stop_workers(["worker-1"], signal.SIGKILL)

        result = list(job.result(timeout=120))
        expected = expected_counts(texts)
        assert len(result) == len(expected)
        assert dict(result) == dict(expected)
        status = job.status()
        assert status.state == "succeeded"
        assert status.tasks["succeeded"] == len(texts) + PARTITIONS
        assert status.rerun_tasks >= 1, "worker-1's running tasks were never run again"
        # What worker-1 was running when it died ran again on worker-2.
        rerun_by_survivor = {
            r[1] for r in read_records(log) if r[0] == "end" and int(r[3]) == survivor
        }
        assert in_flight & rerun_by_survivor, (in_flight, rerun_by_survivor)


def test_killed_worker_takes_its_task_processes_with_it(
    make_cluster: Callable[..., LocalCluster], tmp_path: Path
) -> None:
    cluster = make_cluster(3, SETTINGS)
    start_workers(cluster, [1])
    log = tmp_path / "task.log"
    task_pid = 0
    try:
        with Client(cluster.address) as client:
            job = client.submit(record_and_sleep, str(log), 60.0)
            wait_for(lambda: bool(read_records(log)), what="the task to start")
            task_pid, worker_pid = (int(field) for field in read_records(log)[0][1:3])
            assert worker_pid == cluster.workers["worker-1"].pid
            cluster.stop_workers(["worker-1"], signal.SIGKILL)
            job.cancel()
            wait_for(
                lambda: not pid_alive(task_pid),
                timeout_s=5,
                what="the dead worker's task process to exit",
            )
    finally:
        if task_pid and pid_alive(task_pid):
            os.kill(task_pid, signal.SIGKILL)


def test_coordinator_kill_mid_job_resumes_without_rerunning_tasks(
    make_cluster: Callable[..., LocalCluster], tmp_path: Path
) -> None:
    """Crash with 10 maps done, 4 running (held in user code, so no task talks to Shoal while
    the coordinator is away) and 2 pending; after the restart the running ones are adopted."""
    cluster, client, bucket, texts = corpus_cluster(make_cluster, 16, [2, 2])
    log, gate = tmp_path / "maps.log", tmp_path / "gate"
    keys = sorted(texts)
    inputs = [(bucket, key) for key in keys]  # map task i reads keys[i]
    with client:
        job = client.map_reduce(
            gated_word_counter(str(log), str(gate), frozenset(keys[10:])),
            sum_counts,
            inputs=inputs,
            partitions=PARTITIONS,
            options=JobOptions(policy="weighted"),  # maps are leased in input order
        )

        def blocked() -> int:
            return sum(1 for r in read_records(log) if r[0] == "blocked")

        wait_for(
            lambda: blocked() == 4 and len(durable_map_successes(cluster, job.id)) == 10,
            timeout_s=60,
            what="10 maps committed and every slot busy",
        )
        cluster.stop_coordinator(signal.SIGKILL)
        assert durable_map_successes(cluster, job.id) == set(range(10))

        restart_coordinator(cluster, job)
        wait_for(
            lambda: job.status().tasks["running"] == 4,
            what="workers to report their running tasks to the new coordinator",
        )
        assert job.status().tasks["succeeded"] == 10
        gate.touch()

        assert dict(job.result(timeout=120)) == dict(expected_counts(texts))
        status = job.status()
        assert status.state == "succeeded"
        assert status.tasks["succeeded"] == len(texts) + PARTITIONS
        assert status.rerun_tasks == 0
        runs = Counter(r[1] for r in read_records(log) if r[0] == "start")
        assert runs == Counter(keys), "some map tasks ran more than once"


def test_task_running_through_coordinator_restart_runs_once(
    make_cluster: Callable[..., LocalCluster], tmp_path: Path
) -> None:
    cluster = make_cluster(3, SETTINGS)
    start_workers(cluster, [2])  # a free slot could take the task a second time
    log = tmp_path / "task.log"
    with Client(cluster.address) as client:
        job = client.submit(record_and_sleep, str(log), 4.0)
        wait_for(lambda: bool(read_records(log)), what="the task to start")
        first = int(read_records(log)[0][1])
        cluster.stop_coordinator(signal.SIGKILL)
        restart_coordinator(cluster, job)
        assert job.result(timeout=60) == first
        assert [int(r[1]) for r in read_records(log)] == [first], "the task ran twice"


def test_coordinator_outage_is_not_charged_to_running_tasks(
    make_cluster: Callable[..., LocalCluster], tmp_path: Path
) -> None:
    cluster, client, bucket, texts = corpus_cluster(make_cluster, 1, [1])
    log, gate = tmp_path / "maps.log", tmp_path / "gate"
    (key,) = texts
    with client:
        job = client.map_reduce(
            gated_word_counter(str(log), str(gate), frozenset([key])),
            sum_counts,
            inputs=[(bucket, key)],
            partitions=1,
            options=JobOptions(max_attempts=1),
        )
        wait_for(lambda: bool(read_records(log)), what="the map task to start")
        cluster.stop_coordinator(signal.SIGKILL)
        gate.touch()
        # The mapper returns and the task writes its output while the coordinator is down
        # (a restart takes far longer than that write).
        wait_for(lambda: read_records(log)[-1][0] == "end", what="the mapper to return")
        restart_coordinator(cluster, job)
        assert dict(job.result(timeout=60)) == dict(expected_counts(texts))
