"""Helpers for job tests: task functions, word-count corpora, records that tasks append to a
file, and per-task views of a job.

Task functions travel to workers with cloudpickle. Functions of an importable module are
pickled *by reference*, and a worker cannot import `tests.*` unless its cwd happens to be the
repository root; so this module (and each job test module) registers itself with
`cloudpickle.register_pickle_by_value`, and its functions travel by value. Task functions must
not use `assert` (pytest rewrites asserts in test modules into references to its own helpers).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
import grpc

from shoal.client import Client
from shoal.client.cli.local_cluster import LocalCluster
from shoal.common.jobspec import output_key
from shoal.coordinator.job_store import JobStore
from shoal.coordinator.scheduler import Job
from shoal.rpc.v1 import jobs_pb2 as pb
from shoal.rpc.v1 import jobs_pb2_grpc as pb_grpc

cloudpickle.register_pickle_by_value(sys.modules[__name__])

# A small vocabulary with some non-ASCII words (keys and JSON output must survive them).
WORDS = [
    *("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"),
    *("lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon", "phi"),
    *("chi", "psi", "omega", "café", "naïve", "über", "smørrebrød", "東京", "shoal", "shard"),
]


# Word count ----------------------------------------------------------------------------------


def make_corpus(objects: int, words_per_object: int, seed: int) -> dict[str, bytes]:
    """`objects` texts of Zipf-ish word frequencies, keyed doc-000, doc-001, ..."""
    rng = random.Random(seed)
    weights = [1 / (rank + 1) for rank in range(len(WORDS))]
    corpus = {}
    for i in range(objects):
        words = rng.choices(WORDS, weights=weights, k=words_per_object)
        lines = [" ".join(words[j : j + 12]) for j in range(0, len(words), 12)]
        corpus[f"doc-{i:03d}"] = "\n".join(lines).encode()
    return corpus


def put_corpus(
    client: Client,
    bucket: str,
    corpus: dict[str, bytes],
    prefix: str = "",
    *,
    striped: bool = False,
) -> None:
    """Store the corpus; `striped` streams each text so even small ones are erasure-coded
    onto nodes (small buffers would be stored inline in the metadata, on no node)."""
    for key, data in corpus.items():
        client.put(bucket, prefix + key, iter([data]) if striped else data)


def expected_counts(corpus: dict[str, bytes]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for data in corpus.values():
        counts.update(data.decode().split())
    return counts


def count_words(key: str, data: bytes) -> Iterator[tuple[str, int]]:
    """Mapper: (word, 1) for every word of the object."""
    for word in data.decode().split():
        yield word, 1


def sum_counts(word: str, counts: list[int]) -> int:
    """Reducer and combiner: the total of a word's counts."""
    return sum(counts)


def slow_word_counter(log: str, seconds: float) -> Callable[[str, bytes], list[tuple[str, int]]]:
    """A mapper that records `start`/`end` lines (key, pid, parent pid) around a sleep."""

    def mapper(key: str, data: bytes) -> list[tuple[str, int]]:
        record(log, "start", key, os.getpid(), os.getppid())
        time.sleep(seconds)
        pairs = list(count_words(key, data))
        record(log, "end", key, os.getpid(), os.getppid())
        return pairs

    return mapper


def gated_word_counter(
    log: str, gate: str, gated: frozenset[str]
) -> Callable[[str, bytes], list[tuple[str, int]]]:
    """A mapper that records `start`/`end` lines; for keys in `gated` it records `blocked`
    and waits until the file `gate` exists before finishing."""

    def mapper(key: str, data: bytes) -> list[tuple[str, int]]:
        record(log, "start", key, os.getpid(), os.getppid())
        if key in gated:
            record(log, "blocked", key, os.getpid(), os.getppid())
            while not os.path.exists(gate):
                time.sleep(0.02)
        pairs = list(count_words(key, data))
        record(log, "end", key, os.getpid(), os.getppid())
        return pairs

    return mapper


def read_json_output(
    client: Client, bucket: str, prefix: str, partitions: int
) -> dict[int, list[tuple[str, int]]]:
    """The reducer output objects of a map-reduce job with output=(bucket, prefix)."""
    out: dict[int, list[tuple[str, int]]] = {}
    for partition in range(partitions):
        data = client.get(bucket, output_key(prefix, partition))
        out[partition] = [
            (row["key"], row["value"]) for row in map(json.loads, data.decode().splitlines())
        ]
    return out


# Records appended by tasks -------------------------------------------------------------------


def record(path: str | os.PathLike[str], *fields: object) -> None:
    """Append one line in a single O_APPEND write (atomic with respect to other writers)."""
    line = " ".join(str(field) for field in fields) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read_records(path: Path) -> list[list[str]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [line.split(" ") for line in text.splitlines()]


def nap(seconds: float) -> tuple[int, float, float]:
    """Task: sleep; return (worker pid, start, end) (a slot process's parent is its worker)."""
    start = time.time()
    time.sleep(seconds)
    return os.getppid(), start, time.time()


def max_overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """The largest number of intervals running at one instant."""
    spans = list(intervals)
    events = sorted(
        [(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans],
        key=lambda e: (e[0], e[1]),  # an end at t comes before a start at t
    )
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


# Clusters and tasks ----------------------------------------------------------------------------


def start_workers(cluster: LocalCluster, slots: list[int]) -> list[str]:
    """Start one worker per entry of `slots` (worker i beside node i), in parallel."""
    names = [cluster.add_worker(slots=count, start=False).name for count in slots]
    cluster.start_workers(names)
    return names


def worker_by_pid(cluster: LocalCluster) -> dict[int, str]:
    return {daemon.pid: name for name, daemon in cluster.workers.items() if daemon.pid}


@dataclass(frozen=True)
class TaskView:
    """One task of a job as the coordinator reports it (GetTaskResults)."""

    phase: str
    index: int
    state: str
    worker_id: str
    attempts: int


def durable_job(cluster: LocalCluster, job_id: str) -> Job:
    """The job as the coordinator's database holds it (what survives a crash)."""
    assert cluster.coordinator is not None
    store = JobStore(Path(cluster.coordinator.data_dir) / "metadata.sqlite3")
    try:
        (job,) = [j for j in store.load() if j.job_id == job_id]
    finally:
        store.close()
    return job


def durable_map_successes(cluster: LocalCluster, job_id: str) -> set[int]:
    job = durable_job(cluster, job_id)
    return {t.index for t in job.tasks.values() if t.phase == "map" and t.state == "succeeded"}


def task_views(address: str, job_id: str) -> list[TaskView]:
    """Every task of a job with the worker that ran it (the SDK exposes only failed ones)."""
    with grpc.insecure_channel(address) as channel:
        reply = pb_grpc.JobsStub(channel).GetTaskResults(
            pb.GetTaskResultsRequest(job_id=job_id), timeout=10
        )
    return [TaskView(t.phase, t.index, t.state, t.worker_id, t.attempts) for t in reply.tasks]
