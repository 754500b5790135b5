"""The job scheduler as a state machine: feed it events, check its decisions (no I/O)."""

from __future__ import annotations

import random
import time

from shoal.coordinator.scheduler import (
    FAILED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    Job,
    Scheduler,
    Task,
    Worker,
)


def make_job(
    job_id: str,
    tasks: int,
    *,
    policy: str = "locality",
    kind: str = "map",
    created: float = 0.0,
    hosts: list[tuple[str, ...]] | None = None,
    cpus: float = 1.0,
    retries: int = 0,
    max_attempts: int = 3,
) -> Job:
    job = Job(
        job_id, job_id, kind, b"", 0, policy, max_attempts, retries, True, created or time.time()
    )
    for i in range(tasks):
        task = Task(
            job_id,
            "tasks",
            i,
            "call",
            b"",
            10,
            cpus=cpus,
            preferred_hosts=hosts[i] if hosts else (),
        )
        job.tasks[task.key] = task
    return job


def scheduler_with(*workers: Worker, lease_timeout_s: float = 10.0) -> Scheduler:
    scheduler = Scheduler(lease_timeout_s, random.Random(0))
    for worker in workers:
        scheduler.register_worker(worker)
    return scheduler


def finish(
    scheduler: Scheduler, worker_id: str, lease: object, ok: bool = True, user: bool = False
) -> None:
    task = lease.task  # type: ignore[attr-defined]
    scheduler.complete(
        worker_id,
        task.key,
        lease.attempt,
        ok=ok,
        result=b"r",
        error="boom",  # type: ignore[attr-defined]
        user_error=user,
        stderr="",
        partition_bytes=(),
    )


def test_fair_share_alternates_between_jobs() -> None:
    scheduler = scheduler_with(Worker("w", "h", "", cpus=4, memory=0))
    scheduler.add_job(make_job("big", 1000, created=1.0))
    scheduler.add_job(make_job("small", 2, created=2.0))
    leases = scheduler.lease("w", 4, 0, 4)
    jobs = [lease.task.job_id for lease in leases]
    assert sorted(jobs) == ["big", "big", "small", "small"], (
        "the small job must not wait behind the big one"
    )


def test_never_more_cpus_than_declared() -> None:
    scheduler = scheduler_with(Worker("w", "h", "", cpus=3, memory=0))
    scheduler.add_job(make_job("j", 10, cpus=2))
    first = scheduler.lease("w", 3, 0, 10)
    assert len(first) == 1
    assert scheduler.lease("w", 3, 0, 10) == [], (
        "the worker's own report of free cpus is not trusted alone"
    )
    finish(scheduler, "w", first[0])
    assert len(scheduler.lease("w", 3, 0, 10)) == 1


def test_locality_prefers_tasks_whose_data_is_on_the_worker_host() -> None:
    hosts = [("node-2",), ("node-1",), ("node-3",), ("node-1",)]
    scheduler = scheduler_with(Worker("w1", "node-1", "", cpus=2, memory=0))
    scheduler.add_job(make_job("j", 4, hosts=hosts))
    leased = {lease.task.index for lease in scheduler.lease("w1", 2, 0, 2)}
    assert leased == {1, 3}


def test_expired_lease_requeues_and_counts_a_rerun() -> None:
    scheduler = scheduler_with(Worker("w", "h", "", cpus=1, memory=0), lease_timeout_s=0.0)
    job = make_job("j", 1)
    scheduler.add_job(job)
    (lease,) = scheduler.lease("w", 1, 0, 1)
    assert lease.task.state == RUNNING
    changed = scheduler.expire()
    assert [t.state for t in changed] == [PENDING]
    assert job.rerun_tasks == 1
    for _ in range(2):
        scheduler.lease("w", 1, 0, 1)
        scheduler.expire()
    assert job.state == FAILED, "max_attempts=3 lost attempts fail the job"
    assert "lost its worker 3 times" in job.error


def test_user_error_fails_at_once_unless_retries_allow() -> None:
    scheduler = scheduler_with(Worker("w", "h", "", cpus=1, memory=0))
    strict = make_job("strict", 1)
    scheduler.add_job(strict)
    finish(scheduler, "w", scheduler.lease("w", 1, 0, 1)[0], ok=False, user=True)
    assert strict.state == FAILED
    assert "raised" in strict.error
    lenient = make_job("lenient", 1, retries=1)
    scheduler.add_job(lenient)
    finish(scheduler, "w", scheduler.lease("w", 1, 0, 1)[0], ok=False, user=True)
    assert lenient.state == RUNNING
    finish(scheduler, "w", scheduler.lease("w", 1, 0, 1)[0])
    assert lenient.state == SUCCEEDED


def test_reported_progress_is_a_fraction_of_the_task() -> None:
    scheduler = scheduler_with(Worker("w", "h", "", cpus=1, memory=0))
    job = make_job("j", 2)
    scheduler.add_job(job)
    (lease,) = scheduler.lease("w", 1, 0, 1)
    scheduler.heartbeat("w", [(lease.task.key, lease.attempt, 1, 4)])
    assert abs(job.progress() - 0.125) < 1e-9  # a quarter of one task of two


def test_cancelled_attempts_free_the_worker() -> None:
    scheduler = scheduler_with(Worker("w", "h", "", cpus=1, memory=0))
    job = make_job("j", 2)
    scheduler.add_job(job)
    (lease,) = scheduler.lease("w", 1, 0, 1)
    scheduler.cancel("j")
    cancel = scheduler.heartbeat("w", [(lease.task.key, lease.attempt, 0, 10)])
    assert cancel == [(lease.task.key, lease.attempt)]
    scheduler.add_job(make_job("next", 1))
    assert len(scheduler.lease("w", 1, 0, 1)) == 1, "the cancelled attempt still held the slot"


def test_straggler_gets_one_backup_on_another_worker() -> None:
    scheduler = scheduler_with(
        Worker("a", "h1", "", cpus=20, memory=0), Worker("b", "h2", "", cpus=1, memory=0)
    )
    job = make_job("j", 10)
    scheduler.add_job(job)
    leases = scheduler.lease("a", 20, 0, 20)
    for lease in leases[:9]:
        lease.task.started = time.time() - 1.0
        finish(scheduler, "a", lease)
    slow = leases[9].task
    slow.active[leases[9].attempt].started = time.time() - 60
    backup = scheduler.lease("b", 1, 0, 1)
    assert [b.task.key for b in backup] == [slow.key]
    assert backup[0].backup
    assert job.backup_tasks == 1
    finish(scheduler, "b", backup[0])
    assert job.state == SUCCEEDED
