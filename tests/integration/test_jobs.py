"""Jobs on a real cluster: a coordinator, 6 storage nodes and 6 workers (subprocesses).

Worker i runs beside node i (host id node-i) with one slot, except worker-1 which has two.
Most tests share that cluster (module fixture); cancellation tests get private 3-node
clusters so killed task processes cannot disturb the shared one.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import itertools
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cloudpickle
import pytest

from shoal.client import (
    AsyncClient,
    AsyncJob,
    Client,
    InvalidArgument,
    Job,
    JobCancelled,
    JobFailed,
    JobOptions,
    ObjectInfo,
)
from shoal.client.cli.local_cluster import LocalCluster, pid_alive
from shoal.common.jobspec import INTERNAL_BUCKET, map_output_prefix, partition_of
from shoal.worker import report_progress
from tests.harness.cluster import TEST_SETTINGS, unique, wait_for
from tests.harness.jobs import (
    count_words,
    expected_counts,
    make_corpus,
    max_overlap,
    nap,
    put_corpus,
    read_json_output,
    read_records,
    record,
    start_workers,
    sum_counts,
    task_views,
    worker_by_pid,
)

cloudpickle.register_pickle_by_value(sys.modules[__name__])

# Backup attempts of stragglers leak their worker's cpus when they lose (see
# test_cancelled_tasks_give_their_slots_back), which would starve later tests on the shared
# cluster: the longer jobs here run without speculation.
NO_BACKUPS = JobOptions(speculation=False)
WORKER_SLOTS = [2, 1, 1, 1, 1, 1]
TOTAL_SLOTS = sum(WORKER_SLOTS)
PARTITIONS = 4


# Task functions (module level, pickled by value) ---------------------------------------------


def square_slowly(x: int, count: int) -> int:
    """Later items finish first, so results arrive out of input order."""
    time.sleep((count - x) * 0.015)
    return x * x


def triple(x: int) -> int:
    return 3 * x


def power(base: int, *, exponent: int) -> int:
    return int(base**exponent)


def explode(attempts: str, tag: str) -> None:
    record(attempts, "run")
    print(f"stderr of {tag}", file=sys.stderr)
    raise ValueError(f"bad input {tag}")


def flaky(attempts: str, failures: int) -> int:
    """Fail the first `failures` runs (counted in a file), then return the run number."""
    record(attempts, "run")
    runs = len(Path(attempts).read_text().splitlines())
    if runs <= failures:
        raise RuntimeError(f"attempt {runs} failed")
    return runs


def sleep_and_echo(x: int) -> int:
    time.sleep(0.25)
    return x


def long_sleeper(log: str, index: int) -> int:
    record(log, "start", index, os.getpid())
    time.sleep(60)
    record(log, "end", index, os.getpid())
    return index


def step_slowly(x: int) -> int:
    time.sleep(0.2)
    return x


def report_tenths() -> str:
    # Reports 1..9 of 10: until it returns, the job must show less than 100%. (Reporting 10
    # of 10 would rightly show 100% for the moment before the completion arrives.)
    for done in range(1, 10):
        report_progress(done, 10)
        time.sleep(0.25)
    return "done"


# Fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jobs_cluster(cluster_root: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster(cluster_root / unique("jobs"))
    cluster.up(6, settings=TEST_SETTINGS)
    try:
        start_workers(cluster, WORKER_SLOTS)
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(scope="module")
def jobs_client(jobs_cluster: LocalCluster) -> Iterator[Client]:
    with Client(jobs_cluster.address) as client:
        yield client


@pytest.fixture(scope="module")
def corpus(jobs_client: Client) -> tuple[str, dict[str, bytes]]:
    """24 text objects in a (4, 6) bucket."""
    bucket = unique("wc")
    jobs_client.create_bucket(bucket, 4, 6)
    texts = make_corpus(24, 400, seed=7)
    put_corpus(jobs_client, bucket, texts)
    return bucket, texts


# Tests -------------------------------------------------------------------------------------


def test_task_functions_travel_by_value(tmp_path: Path) -> None:
    """A process that cannot import `tests` (like a worker started elsewhere) runs them."""
    blob = cloudpickle.dumps((count_words, sum_counts, square_slowly))
    program = (
        "import sys, cloudpickle\n"
        "try:\n"
        "    import tests\n"
        "    sys.exit('tests is importable here')\n"
        "except ImportError:\n"
        "    pass\n"
        "count, total, square = cloudpickle.loads(sys.stdin.buffer.read())\n"
        "print(list(count('k', b'a b a')), total('a', [1, 2]), square(3, 3))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", program],
        input=blob,
        capture_output=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == "[('a', 1), ('b', 1), ('a', 1)] 3 9"


@pytest.mark.parametrize("variant", ["plain", "combiner", "output"])
def test_word_count_equals_counter(
    jobs_client: Client, corpus: tuple[str, dict[str, bytes]], variant: str
) -> None:
    bucket, texts = corpus
    expected = expected_counts(texts)
    output = (bucket, f"out-{unique('wc')}/") if variant == "output" else None
    job = jobs_client.map_reduce(
        count_words,
        sum_counts,
        inputs=(bucket, "doc-"),
        partitions=PARTITIONS,
        combiner=sum_counts if variant == "combiner" else None,
        output=output,
        options=NO_BACKUPS,
    )
    result = list(job.result(timeout=90))
    assert len(result) == len(expected), "a word came out of more than one reducer"
    assert dict(result) == dict(expected)

    status = job.status()
    assert status.state == "succeeded"
    assert status.progress == 1.0
    assert status.tasks["succeeded"] == len(texts) + PARTITIONS
    assert status.located_tasks == len(texts)

    if output is not None:
        # The JSON lines objects, read back directly: each word once, in its own partition.
        parts = read_json_output(jobs_client, *output, PARTITIONS)
        assert {word: n for rows in parts.values() for word, n in rows} == dict(expected)
        for partition, rows in parts.items():
            assert all(partition_of(word, PARTITIONS) == partition for word, _ in rows)
            assert [word for word, _ in rows] == sorted(word for word, _ in rows)
        # A handle found by id reads the same output; the job is listed.
        assert dict(jobs_client.job(job.id).result(timeout=10)) == dict(expected)
        assert job.id in {j.job_id for j in jobs_client.list_jobs(limit=50)}
        # Map outputs (the reducers' inputs) are removed once the job is over.
        wait_for(
            lambda: not list(jobs_client.list(INTERNAL_BUCKET, map_output_prefix(job.id))),
            what="map intermediates to be deleted",
        )


def padded_words(key: str, data: bytes) -> list[tuple[str, int]]:
    """Mapper whose output per partition stays well above the inline limit once compressed
    (hex digests barely compress), so it is striped."""
    import hashlib

    return [(hashlib.sha256(f"{key}-{i}".encode()).hexdigest(), 1) for i in range(2000)]


class Gate:
    """A local TCP port that task processes connect to and block on (`recv`) until the test
    opens the gate: a wait on a condition, not on a clock."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._held: list[socket.socket] = []
        self._open = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed
                return
            with self._lock:
                if self._open:
                    self._release(conn)
                else:
                    self._held.append(conn)

    @staticmethod
    def _release(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            conn.sendall(b"go")
        conn.close()

    def open(self) -> None:
        with self._lock:
            self._open = True
            for conn in self._held:
                self._release(conn)
            self._held.clear()

    def close(self) -> None:
        """Open the gate and stop listening (after the last task that waits on it)."""
        self.open()
        self._listener.close()


def reducer_waiting_for(port: int) -> Callable[[str, list[int]], int]:
    """A reducer that first blocks (60 s at most) until the test opens the `Gate` on `port`,
    so the test can look at the map outputs while they are still there."""

    waited: list[bool] = []  # per task process: wait before its first word only

    def reduce(word: str, counts: list[int]) -> int:
        if not waited:
            with socket.create_connection(("127.0.0.1", port), timeout=60) as gate:
                gate.recv(2)  # returns when the gate opens (or raises after the timeout)
            waited.append(True)
        return sum(counts)

    return reduce


def test_map_outputs_are_replicated(jobs_client: Client) -> None:
    """A map output is stored as n - k + 1 whole replicas (k = 1) of the internal bucket's
    (k, n) = (4, 6): three copies survive the same two node losses with half the shard writes,
    and a reducer reads one shard instead of four."""
    bucket = unique("shuffle")
    jobs_client.create_bucket(bucket, 4, 6)
    jobs_client.put(bucket, "in-0", b"unused")
    gate = Gate()
    job = jobs_client.map_reduce(
        padded_words,
        reducer_waiting_for(gate.port),
        inputs=[(bucket, "in-0")],
        partitions=2,
        options=NO_BACKUPS,
    )
    outputs: list[ObjectInfo] = []

    def map_outputs_written() -> bool:
        outputs[:] = list(jobs_client.list(INTERNAL_BUCKET, map_output_prefix(job.id)))
        return len(outputs) == 2

    try:
        wait_for(map_outputs_written, what="both map outputs")
        for info in outputs:
            assert not info.inline
            assert (info.k, info.n) == (1, 3), info
            assert jobs_client.head(INTERNAL_BUCKET, info.key).stripe_count >= 1
    finally:
        gate.open()  # reducers that start later pass straight through
    try:
        assert sum(dict(job.result(timeout=90)).values()) == 2000
    finally:
        gate.close()


@pytest.mark.parametrize("chunksize", [None, 5], ids=["one-per-task", "chunks-of-5"])
def test_map_keeps_input_order(jobs_client: Client, chunksize: int | None) -> None:
    count = 24
    items = list(range(count))

    def square(x: int) -> int:
        return square_slowly(x, count)

    job = jobs_client.map(square, items, chunksize=chunksize)
    assert job.result(timeout=60) == [x * x for x in items]
    status = job.status()
    assert status.tasks["succeeded"] == (count if chunksize is None else -(-count // chunksize))


def test_task_exception_surfaces_remote_traceback(jobs_client: Client, tmp_path: Path) -> None:
    attempts = tmp_path / "attempts"
    tag = unique("tag")
    job = jobs_client.submit(explode, str(attempts), tag)
    with pytest.raises(JobFailed) as failed:
        job.result(timeout=60)
    assert not isinstance(failed.value, JobCancelled)
    traceback = failed.value.remote_traceback
    assert "Traceback (most recent call last)" in traceback
    assert f"ValueError: bad input {tag}" in traceback
    assert "in explode" in traceback

    status = job.status()
    assert status.state == "failed"
    assert status.tasks["failed"] == 1
    assert f"bad input {tag}" in status.error
    # Failed at once: the code ran exactly once.
    assert len(read_records(attempts)) == 1

    logs = job.logs()
    assert len(logs) == 1
    assert (logs[0].state, logs[0].attempts) == ("failed", 1)
    assert logs[0].worker_id.startswith("worker-")
    assert f"ValueError: bad input {tag}" in logs[0].error
    assert f"stderr of {tag}" in logs[0].stderr


def test_retries_let_a_flaky_task_succeed(jobs_client: Client, tmp_path: Path) -> None:
    attempts = tmp_path / "attempts"
    job = jobs_client.submit(flaky, str(attempts), 2, job_options=JobOptions(retries=2))
    assert job.result(timeout=60) == 3
    assert len(read_records(attempts)) == 3
    assert job.status().state == "succeeded"

    # One retry is not enough for two failures: the job fails after exactly two runs.
    attempts_2 = tmp_path / "attempts-2"
    job = jobs_client.submit(flaky, str(attempts_2), 2, job_options=JobOptions(retries=1))
    with pytest.raises(JobFailed) as failed:
        job.result(timeout=60)
    assert "RuntimeError: attempt 2 failed" in failed.value.remote_traceback
    assert len(read_records(attempts_2)) == 2


def test_progress_is_monotonic_and_ends_at_one(jobs_client: Client) -> None:
    # 12 tasks of 2 items over 7 slots: two waves, each item reported as it finishes.
    job = jobs_client.map(step_slowly, range(24), chunksize=2)
    seen: list[float] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = job.status()
        seen.append(status.progress)
        if status.done:
            break
        time.sleep(0.01)
    assert status.state == "succeeded"
    assert seen[-1] == 1.0
    assert all(a <= b for a, b in itertools.pairwise(seen)), seen
    assert any(0 < p < 1 for p in seen), f"no intermediate progress observed: {seen}"
    assert job.result(timeout=10) == list(range(24))


def test_reported_progress_is_a_fraction_of_the_task(jobs_client: Client) -> None:
    job = jobs_client.submit(report_tenths)
    while_running: list[float] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = job.status()
        if status.done:
            break
        while_running.append(status.progress)
        time.sleep(0.02)
    assert job.result(timeout=10) == "done"
    assert job.progress() == 1.0
    assert all(p < 1.0 for p in while_running), "100% shown while the task was still running"
    assert any(0 < p < 1 for p in while_running)


def test_locality_runs_map_tasks_beside_their_data(jobs_client: Client) -> None:
    # (2, 3) objects: each object's data shards sit on 2 of the 6 hosts, so placement
    # blind to locality would run about a third of the map tasks locally.
    bucket = unique("loc")
    jobs_client.create_bucket(bucket, 2, 3)
    texts = make_corpus(36, 60, seed=11)
    # Striped: inline objects live on no node, so they have no locality to honour.
    put_corpus(jobs_client, bucket, texts, striped=True)
    job = jobs_client.map_reduce(
        count_words,
        sum_counts,
        inputs=(bucket, ""),
        partitions=2,
        combiner=sum_counts,
        options=NO_BACKUPS,
    )
    assert dict(job.result(timeout=90)) == dict(expected_counts(texts))
    status = job.status()
    assert status.located_tasks == len(texts)
    ratio = status.local_tasks / status.located_tasks
    assert ratio >= 0.6, f"only {status.local_tasks}/{status.located_tasks} map tasks ran locally"


def test_worker_never_runs_more_cpus_than_it_declares(
    jobs_cluster: LocalCluster, jobs_client: Client
) -> None:
    names = worker_by_pid(jobs_cluster)
    # Only worker-1 has 2 cpus: 2-cpu tasks all go there, one at a time.
    job = jobs_client.map(nap, [0.4] * 4, options=JobOptions(cpus=2))
    runs = job.result(timeout=60)
    assert {names.get(pid) for pid, _, _ in runs} == {"worker-1"}
    assert {t.worker_id for t in task_views(jobs_cluster.address, job.id)} == {"worker-1"}
    assert max_overlap((start, end) for _, start, end in runs) == 1, runs

    # Control: 1-cpu tasks do share worker-1 (two at a time, never more).
    job = jobs_client.map(nap, [0.4] * (2 * TOTAL_SLOTS))
    runs = job.result(timeout=60)
    on_first = [(start, end) for pid, start, end in runs if names.get(pid) == "worker-1"]
    assert max_overlap(on_first) == 2, on_first
    per_worker: dict[str, list[tuple[float, float]]] = {}
    for pid, start, end in runs:
        per_worker.setdefault(names[pid], []).append((start, end))
    assert all(max_overlap(spans) <= 1 for name, spans in per_worker.items() if name != "worker-1")

    # More than any worker declares: refused at submission.
    with pytest.raises(InvalidArgument, match="cpus"):
        jobs_client.submit(nap, 0.0, job_options=JobOptions(cpus=3))
    with pytest.raises(InvalidArgument, match="memory"):
        jobs_client.map(nap, [0.0], options=JobOptions(memory=1 << 60))


def test_small_job_finishes_while_a_big_one_runs(jobs_client: Client) -> None:
    big = jobs_client.map(sleep_and_echo, range(8 * TOTAL_SLOTS), options=NO_BACKUPS)
    wait_for(lambda: big.status().tasks["running"] > 0, what="the big job to start")
    small = jobs_client.map(sleep_and_echo, range(2))
    assert small.result(timeout=60) == [0, 1]
    status = big.status()
    assert status.state == "running", "the small job waited for the big one"
    assert status.tasks["succeeded"] < 8 * TOTAL_SLOTS
    assert big.result(timeout=120) == list(range(8 * TOTAL_SLOTS))
    small_done, big_done = small.status().finished, big.status().finished
    assert small_done is not None
    assert big_done is not None
    assert small_done < big_done


@pytest.mark.parametrize("policy", ["round-robin", "random", "weighted", "locality"])
def test_policies_complete_map_jobs(jobs_client: Client, policy: str) -> None:
    job = jobs_client.map(triple, range(20), options=JobOptions(policy=policy))
    assert job.result(timeout=60) == [3 * x for x in range(20)]
    assert job.status().tasks["succeeded"] == 20


def test_unknown_policy_is_refused(jobs_client: Client) -> None:
    with pytest.raises(InvalidArgument, match="policy"):
        jobs_client.map(triple, range(2), options=JobOptions(policy="fastest"))


async def test_async_client_submit_and_map(jobs_cluster: LocalCluster) -> None:
    async with AsyncClient(jobs_cluster.address) as client:
        job = await client.submit(power, 2, exponent=10)
        assert isinstance(job, AsyncJob)
        assert await job.result(timeout=60) == 1024

        mapped = await client.map(triple, range(10), chunksize=3)
        assert await mapped.result(timeout=60) == [3 * x for x in range(10)]
        status = await mapped.status()
        assert status.state == "succeeded"
        assert status.progress == 1.0
        assert status.tasks["succeeded"] == 4

        found = await client.job(mapped.id)
        assert await found.result(timeout=10) == [3 * x for x in range(10)]


# Cancellation (private clusters: see the capacity bug below) ----------------------------------


def cancel_cluster(make_cluster: Callable[..., LocalCluster]) -> LocalCluster:
    """3 nodes and two workers with 2 + 1 slots."""
    cluster = make_cluster(3, dataclasses.replace(TEST_SETTINGS, k=2, n=3))
    start_workers(cluster, [2, 1])
    return cluster


def cancel_when_all_slots_run(client: Client, log: Path, slots: int) -> Job:
    """Start a job of long sleepers, wait until every slot runs one, cancel it."""

    def sleeper(index: int) -> int:
        return long_sleeper(str(log), index)

    job = client.map(sleeper, range(2 * slots))
    wait_for(lambda: len(read_records(log)) == slots, what="every slot to run a task")
    status = job.cancel()
    assert status.state == "cancelled"
    started = [int(fields[2]) for fields in read_records(log)]
    # Workers learn of the cancel from their next heartbeat and kill the task processes.
    wait_for(
        lambda: not any(pid_alive(pid) for pid in started),
        timeout_s=TEST_SETTINGS.lease_timeout_s + 5,
        what="cancelled task processes to be killed",
    )
    return job


def test_cancel_stops_running_tasks(
    make_cluster: Callable[..., LocalCluster], tmp_path: Path
) -> None:
    cluster = cancel_cluster(make_cluster)
    log = tmp_path / "tasks.log"
    with Client(cluster.address) as client:
        job = cancel_when_all_slots_run(client, log, slots=3)
        status = job.status()
        assert status.state == "cancelled"
        assert status.tasks == {
            "pending": 0, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 6,
        }  # fmt: skip
        with pytest.raises(JobCancelled):
            job.result(timeout=10)
        records = read_records(log)
        assert [fields[0] for fields in records] == ["start"] * 3, "a task finished or started"
        assert job.id not in {j.job_id for j in client.list_jobs(active_only=True)}


def test_cancelled_tasks_give_their_slots_back(
    make_cluster: Callable[..., LocalCluster], tmp_path: Path
) -> None:
    cluster = cancel_cluster(make_cluster)
    with Client(cluster.address) as client:
        cancel_when_all_slots_run(client, tmp_path / "tasks.log", slots=3)
        # The slots are free again: a 2-cpu task runs on worker-1, 1-cpu tasks anywhere
        # (a lease takes well under a second; the timeouts leave room for a loaded machine).
        job = client.submit(nap, 0.0, job_options=JobOptions(cpus=2))
        assert job.result(timeout=8)[0] == cluster.workers["worker-1"].pid
        assert client.map(triple, range(6)).result(timeout=8) == [3 * x for x in range(6)]


def slot_malloc_tuning() -> tuple[int, bool]:
    """Run in a task: the malloc tuning of the task slot process (0, False when untuned)."""
    from shoal.common import malloc_tuning

    return malloc_tuning.tuned_threshold(), malloc_tuning.heap_only()


def test_task_slots_tune_malloc_as_task_processes(jobs_client: Client) -> None:
    """A task slot is one of the worker's own processes, tuned for running tasks: the node's
    threshold and every allocation from the heap (unless the operator's settings turn the
    tuning off)."""
    from shoal.common import malloc_tuning

    glibc = hasattr(os, "confstr") and bool(os.confstr("CS_GNU_LIBC_VERSION"))
    operator_settings = any(name in os.environ for name in malloc_tuning.OPERATOR_SETTINGS)
    tuned = glibc and not operator_settings
    # Heap-only needs mallinfo2 (glibc 2.33+) to measure the free heap it hands back.
    heap_only = tuned and hasattr(ctypes.CDLL(None), "mallinfo2")
    expected = (malloc_tuning.NODE_MMAP_THRESHOLD if tuned else 0, heap_only)
    assert jobs_client.submit(slot_malloc_tuning).result(timeout=60) == expected
