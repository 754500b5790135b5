"""The coordinator's Prometheus metrics (the RPC metrics are in shoal.common.metrics).

Scrape-time gauges (computed from the in-memory state when Prometheus scrapes, never stored):

    shoal_nodes{state}                      storage nodes by state: up, suspect, down,
                                            draining, decommissioned
    shoal_cluster_capacity_bytes            capacity of the nodes not decommissioned
    shoal_cluster_used_bytes                bytes they store (from their heartbeats)
    shoal_cluster_shards                    shards they store (from their heartbeats)
    shoal_jobs{state}                       jobs held by the scheduler, by state
    shoal_tasks{state}                      tasks of unfinished jobs, by state
    shoal_workers                           registered workers

Jobs (updated by JobsServicer):

    shoal_jobs_submitted_total{kind}
    shoal_jobs_finished_total{state}        succeeded, failed, cancelled
    shoal_job_duration_seconds{state}       submission to end
    shoal_task_attempts_started_total{backup}
    shoal_task_attempts_total{outcome}      succeeded, error (the task raised), failed (its
                                            process died), lost (lease expired), stale (a
                                            late report of a finished task)
    shoal_task_duration_seconds{outcome}    lease to completion report of an attempt

Data health and repair: updated through the functions below by the code that computes them
(status, repair, commit and bad-shard paths). Data-health series appear only once
`set_data_health` has run (absent means not computed yet, not zero):

    shoal_objects{health}                   healthy, degraded, unavailable
    shoal_object_bytes{health}
    shoal_stripes_at_risk                   stripes with exactly k healthy shards (margin 0)
    shoal_stripes_below_k                   stripes with fewer than k healthy shards
    shoal_data_health_timestamp_seconds     when the above were computed
    shoal_repair_shards_total{kind}         rebuild, move
    shoal_repair_read_bytes_total           shard bytes read by finished repairs
    shoal_repair_shard_duration_seconds     one RebuildShard, request to reply
    shoal_repair_failures_total{reason}     unreadable, no_target, rebuild_failed, other
    shoal_repair_backlog_shards{kind}       rebuild, move
    shoal_repair_held                       1 while an operator holds automatic repair
    shoal_bad_shards_reported_total{state}  corrupt, missing (scrubbers and readers)
    shoal_objects_committed_total, shoal_object_bytes_committed_total,
    shoal_degraded_stripes_committed_total

Metadata (updated by MetadataThread):

    shoal_metadata_commit_calls             calls of puts, deletes and lookups made durable
                                            by one SQLite commit (group commit: > 1 when
                                            calls queued while the thread was busy)
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shoal.common.metrics import register_collector
from shoal.coordinator.membership import (
    DECOMMISSIONED,
    DOWN,
    DRAINING,
    SUSPECT,
    UP,
    Membership,
)
from shoal.coordinator.scheduler import (
    CANCELLED,
    FAILED,
    FINISHED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    Job,
    Scheduler,
)

NODE_STATES = (UP, SUSPECT, DOWN, DRAINING, DECOMMISSIONED)
JOB_STATES = (PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED)
TASK_OUTCOMES = ("succeeded", "error", "failed", "lost", "stale")
REPAIR_FAILURE_REASONS = ("unreadable", "no_target", "rebuild_failed", "other")
HEALTH_STATES = ("healthy", "degraded", "unavailable")

TASK_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
JOB_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0)
REPAIR_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# Jobs ----------------------------------------------------------------------------------------

JOBS_SUBMITTED = Counter("shoal_jobs_submitted", "Jobs submitted, by kind", ["kind"])
JOBS_FINISHED = Counter("shoal_jobs_finished", "Jobs that ended, by final state", ["state"])
JOB_DURATION = Histogram(
    "shoal_job_duration_seconds",
    "Time from a job's submission to its end, by final state",
    ["state"],
    buckets=JOB_BUCKETS,
)
TASK_ATTEMPTS_STARTED = Counter(
    "shoal_task_attempts_started",
    "Task attempts leased to workers (backup: a speculative copy of a straggler)",
    ["backup"],
)
TASK_ATTEMPTS = Counter("shoal_task_attempts", "Task attempts that ended, by outcome", ["outcome"])
TASK_DURATION = Histogram(
    "shoal_task_duration_seconds",
    "Time from leasing a task attempt to its completion report, by outcome",
    ["outcome"],
    buckets=TASK_BUCKETS,
)
for _state in (SUCCEEDED, FAILED, CANCELLED):
    JOBS_FINISHED.labels(_state)
for _outcome in TASK_OUTCOMES:
    TASK_ATTEMPTS.labels(_outcome)
TASK_ATTEMPTS_STARTED.labels("false")
TASK_ATTEMPTS_STARTED.labels("true")


def record_job_submitted(kind: str) -> None:
    JOBS_SUBMITTED.labels(kind).inc()


def record_job_finished(job: Job) -> None:
    """Call once, when `job` reaches a final state."""
    if job.state not in FINISHED:
        return
    JOBS_FINISHED.labels(job.state).inc()
    end = job.finished or time.time()
    JOB_DURATION.labels(job.state).observe(max(end - job.created, 0.0))


def record_attempts_started(backups: Iterable[bool]) -> None:
    for backup in backups:
        TASK_ATTEMPTS_STARTED.labels("true" if backup else "false").inc()


def record_task_attempt(outcome: str, seconds: float | None = None) -> None:
    """One attempt ended with `outcome` (one of TASK_OUTCOMES) after `seconds` (if known)."""
    TASK_ATTEMPTS.labels(outcome).inc()
    if seconds is not None:
        TASK_DURATION.labels(outcome).observe(max(seconds, 0.0))


# Data health and repair (updated by status, repair, commit and bad-shard code) ----------------

REPAIR_SHARDS = Counter("shoal_repair_shards", "Shards repair rebuilt or moved, by kind", ["kind"])
REPAIR_READ_BYTES = Counter("shoal_repair_read_bytes", "Shard bytes read by repairs that finished")
REPAIR_DURATION = Histogram(
    "shoal_repair_shard_duration_seconds",
    "Time to rebuild or move one shard (RebuildShard request to reply)",
    buckets=REPAIR_BUCKETS,
)
REPAIR_FAILURES = Counter(
    "shoal_repair_failures", "Shard repairs that failed, by reason", ["reason"]
)
REPAIR_BACKLOG = Gauge(
    "shoal_repair_backlog_shards", "Shards waiting to be rebuilt or moved, by kind", ["kind"]
)
REPAIR_HELD = Gauge("shoal_repair_held", "1 while automatic repair is held by an operator")
BAD_SHARDS = Counter(
    "shoal_bad_shards_reported",
    "Corrupt or missing shards reported by scrubbers and readers, by state",
    ["state"],
)
OBJECTS_COMMITTED = Counter("shoal_objects_committed", "Objects committed (puts that finished)")
OBJECT_BYTES_COMMITTED = Counter(
    "shoal_object_bytes_committed", "Object bytes committed (logical size, before coding)"
)
DEGRADED_STRIPES_COMMITTED = Counter(
    "shoal_degraded_stripes_committed",
    "Stripes committed with fewer than n shards written (repair completes them)",
)
METADATA_COMMIT_CALLS = Histogram(
    "shoal_metadata_commit_calls",
    "Metadata calls made durable by one SQLite commit (group commit)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 256, 1024, 4096),
)
for _kind in ("rebuild", "move"):
    REPAIR_SHARDS.labels(_kind)
    REPAIR_BACKLOG.labels(_kind)
for _reason in REPAIR_FAILURE_REASONS:
    REPAIR_FAILURES.labels(_reason)
for _bad in ("corrupt", "missing"):
    BAD_SHARDS.labels(_bad)


def record_rebuild(nbytes: int, seconds: float, *, moved: bool = False) -> None:
    """A shard was rebuilt (or moved off a draining node) and recorded: `nbytes` shard bytes
    read for it, `seconds` from request to reply."""
    REPAIR_SHARDS.labels("move" if moved else "rebuild").inc()
    REPAIR_READ_BYTES.inc(max(nbytes, 0))
    REPAIR_DURATION.observe(max(seconds, 0.0))


def record_repair_failure(reason: str) -> None:
    """A shard repair failed; `reason` is one of REPAIR_FAILURE_REASONS (else counted as
    'other', so free text never becomes a label)."""
    REPAIR_FAILURES.labels(reason if reason in REPAIR_FAILURE_REASONS else "other").inc()


def set_repair_backlog(rebuild: int, move: int) -> None:
    """Shards waiting to be rebuilt / moved (the backlog a repair cycle computed)."""
    REPAIR_BACKLOG.labels("rebuild").set(rebuild)
    REPAIR_BACKLOG.labels("move").set(move)


def set_repair_held(held: bool) -> None:
    REPAIR_HELD.set(1 if held else 0)


def record_bad_shard(state: str) -> None:
    """A shard was reported bad; `state` is 'corrupt' or 'missing'."""
    BAD_SHARDS.labels("missing" if state == "missing" else "corrupt").inc()


def record_commit(size: int, degraded_stripes: int = 0) -> None:
    """An object of `size` bytes was committed, `degraded_stripes` of its stripes short of n."""
    OBJECTS_COMMITTED.inc()
    OBJECT_BYTES_COMMITTED.inc(max(size, 0))
    if degraded_stripes:
        DEGRADED_STRIPES_COMMITTED.inc(degraded_stripes)


@dataclass(frozen=True)
class DataHealth:
    objects: Mapping[str, int]
    object_bytes: Mapping[str, int]
    stripes_at_risk: int
    stripes_below_k: int
    computed_at: float


class DataHealthCollector(Collector):
    """Yields the last data-health snapshot; nothing before the first one."""

    def __init__(self) -> None:
        self.latest: DataHealth | None = None

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        health = self.latest
        if health is None:
            return
        objects = GaugeMetricFamily("shoal_objects", "Objects by health", labels=["health"])
        sizes = GaugeMetricFamily("shoal_object_bytes", "Object bytes by health", labels=["health"])
        for state in sorted({*HEALTH_STATES, *health.objects, *health.object_bytes}):
            objects.add_metric([state], health.objects.get(state, 0))
            sizes.add_metric([state], health.object_bytes.get(state, 0))
        yield objects
        yield sizes
        yield GaugeMetricFamily(
            "shoal_stripes_at_risk",
            "Stripes with exactly k healthy shards: one more loss makes them unreadable",
            value=health.stripes_at_risk,
        )
        yield GaugeMetricFamily(
            "shoal_stripes_below_k",
            "Stripes with fewer than k healthy shards (unreadable until nodes return)",
            value=health.stripes_below_k,
        )
        yield GaugeMetricFamily(
            "shoal_data_health_timestamp_seconds",
            "When the data-health gauges were last computed (Unix time)",
            value=health.computed_at,
        )


DATA_HEALTH = DataHealthCollector()
REGISTRY.register(DATA_HEALTH)


def set_data_health(
    objects: Mapping[str, int],
    object_bytes: Mapping[str, int],
    stripes_by_margin: Mapping[int, int],
) -> None:
    """Publish a data-health snapshot: objects and their bytes by health ('healthy',
    'degraded', 'unavailable') and the stripe count by redundancy margin (healthy shards
    minus k; 0 = at risk, negative = below k)."""
    DATA_HEALTH.latest = DataHealth(
        dict(objects),
        dict(object_bytes),
        stripes_by_margin.get(0, 0),
        sum(count for margin, count in stripes_by_margin.items() if margin < 0),
        time.time(),
    )


# Scrape-time gauges over membership and the scheduler -----------------------------------------


class CoordinatorCollector(Collector):
    """Node states, cluster capacity and job/task/worker counts, read at scrape time.

    Runs on the HTTP server's thread while the event loop mutates the same dicts: each is
    copied with one C-level `list(...)` (atomic under the GIL) before it is walked."""

    def __init__(self, membership: Membership, scheduler: Scheduler) -> None:
        self.membership = membership
        self.scheduler = scheduler

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        records = list(self.membership.nodes.values())
        states = dict.fromkeys(NODE_STATES, 0)
        capacity = used = shards = 0
        for record in records:
            state = record.state
            states[state] = states.get(state, 0) + 1
            if state != DECOMMISSIONED:
                capacity += record.capacity_bytes
                used += record.used_bytes
                shards += record.shard_count
        nodes = GaugeMetricFamily("shoal_nodes", "Storage nodes by state", labels=["state"])
        for state, count in states.items():
            nodes.add_metric([state], count)
        yield nodes
        yield GaugeMetricFamily(
            "shoal_cluster_capacity_bytes",
            "Capacity of the storage nodes not decommissioned (from their heartbeats)",
            value=capacity,
        )
        yield GaugeMetricFamily(
            "shoal_cluster_used_bytes", "Shard bytes stored on those nodes", value=used
        )
        yield GaugeMetricFamily(
            "shoal_cluster_shards", "Shards stored on those nodes", value=shards
        )

        jobs = list(self.scheduler.jobs.values())
        job_states = dict.fromkeys(JOB_STATES, 0)
        task_states = dict.fromkeys(JOB_STATES, 0)
        for job in jobs:
            job_states[job.state] = job_states.get(job.state, 0) + 1
            if job.state in FINISHED:
                continue
            for task in list(job.tasks.values()):
                task_states[task.state] = task_states.get(task.state, 0) + 1
        by_job = GaugeMetricFamily(
            "shoal_jobs", "Jobs held by the scheduler, by state", labels=["state"]
        )
        for state, count in job_states.items():
            by_job.add_metric([state], count)
        yield by_job
        by_task = GaugeMetricFamily(
            "shoal_tasks", "Tasks of unfinished jobs, by state", labels=["state"]
        )
        for state, count in task_states.items():
            by_task.add_metric([state], count)
        yield by_task
        yield GaugeMetricFamily(
            "shoal_workers", "Workers registered", value=len(self.scheduler.workers)
        )


_installed: list[Collector] = []


def install(membership: Membership, scheduler: Scheduler) -> None:
    """Expose the scrape-time gauges of this coordinator's membership and scheduler."""
    register_collector(CoordinatorCollector(membership, scheduler), _installed)
