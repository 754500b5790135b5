"""The job scheduler as a state machine: feed it events, check its decisions (no I/O)."""

from __future__ import annotations

import random
import statistics
import time

from shoal.coordinator.scheduler import (
    FAILED,
    PENDING,
    QUEUED_STALE_S,
    RUNNING,
    SUCCEEDED,
    Job,
    RunningMedian,
    Scheduler,
    Task,
    Worker,
    shown_state,
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


# The indexed scheduler: same decisions as scanning every task, without scanning -------------


class CountingTasks(dict):  # type: ignore[type-arg]
    """A job's task dict that counts whole-dict scans (values, items, iteration)."""

    scans = 0

    def values(self):  # type: ignore[no-untyped-def, override]
        CountingTasks.scans += 1
        return super().values()

    def items(self):  # type: ignore[no-untyped-def, override]
        CountingTasks.scans += 1
        return super().items()

    def __iter__(self):  # type: ignore[no-untyped-def]
        CountingTasks.scans += 1
        return super().__iter__()


def reference_pick(job: Job, worker: Worker, cpus: float) -> Task | None:
    """What the scheduler picked before it had an index: the best of all runnable tasks."""
    runnable = [
        t
        for t in dict.values(job.tasks)
        if job.runnable(t) and t.cpus <= cpus + 1e-9 and not t.memory
    ]
    if not runnable:
        return None
    if job.policy == "locality":

        def rank(task: Task) -> tuple[int, int]:
            if worker.host_id and worker.host_id in task.preferred_hosts:
                return (0, task.index)
            if worker.zone and worker.zone in task.preferred_zones:
                return (1, task.index)
            return (2, task.index)

        return min(runnable, key=rank)
    return min(runnable, key=lambda t: (t.phase != "map", t.index))


def test_lease_and_complete_never_scan_the_jobs_tasks() -> None:
    scheduler = scheduler_with(Worker("w", "h", "", cpus=4, memory=0))
    job = make_job("big", 5000, policy="weighted")
    job.tasks = CountingTasks(job.tasks)
    scheduler.add_job(job)
    CountingTasks.scans = 0
    done = 0
    while done < 4999:
        leases = scheduler.lease("w", 4, 0, 4)
        for lease in leases[: 4999 - done]:
            finish(scheduler, "w", lease)
            done += 1
        scheduler.expire()
    assert CountingTasks.scans == 0, "a lease, completion or expiry scanned the job's tasks"
    assert job.state == RUNNING


def test_picks_match_scanning_every_task_through_requeues_and_failures() -> None:
    rng = random.Random(7)
    for policy in ("locality", "weighted", "round-robin"):
        workers = [
            Worker("w1", "node-1", "z1", cpus=2, memory=0),
            Worker("w2", "node-2", "z1", cpus=2, memory=0),
            Worker("w3", "node-3", "z2", cpus=2, memory=0),
        ]
        scheduler = scheduler_with(*workers, lease_timeout_s=30.0)
        job = Job("j", "j", "map", b"", 0, policy, 1000, 1000, False, time.time())
        for i in range(300):
            task = Task(
                "j",
                "tasks",
                i,
                "call",
                b"",
                1,
                cpus=rng.choice([1.0, 2.0]),
                preferred_hosts=tuple(
                    rng.sample(["node-1", "node-2", "node-3"], rng.randint(0, 2))
                ),
                preferred_zones=tuple(rng.sample(["z1", "z2"], rng.randint(0, 1))),
            )
            job.tasks[task.key] = task
        scheduler.add_job(job)
        running: list[tuple[str, object]] = []
        for _step in range(2000):
            if job.state != RUNNING and job.state != "pending":
                break
            worker = rng.choice(workers)
            cpus = rng.choice([1.0, 2.0])
            free = min(cpus, worker.cpus - sum(
                job.tasks[(j, p, i)].cpus for j, p, i, _n in worker.running
            ))  # fmt: skip
            expected = reference_pick(job, worker, free)
            leases = scheduler.lease(worker.worker_id, cpus, 0, 1)
            assert [lease.task.key for lease in leases] == ([expected.key] if expected else []), (
                policy
            )
            running += [(worker.worker_id, lease) for lease in leases]
            if running and rng.random() < 0.6:
                worker_id, lease = running.pop(rng.randrange(len(running)))
                outcome = rng.random()
                if outcome < 0.15:  # lost: its lease runs out
                    for attempt in lease.task.active.values():  # type: ignore[attr-defined]
                        attempt.lease_expiry = 0.0
                    scheduler.expire()
                else:
                    finish(scheduler, worker_id, lease, ok=outcome > 0.3, user=outcome < 0.25)
        assert sum(1 for t in job.tasks.values() if t.state == SUCCEEDED) > 50


def map_reduce_job(maps: int, reduces: int) -> Job:
    job = Job("mr", "mr", "map_reduce", b"", reduces, "locality", 3, 0, False, time.time())
    for i in range(maps):
        task = Task("mr", "map", i, "mr_map", b"", 100, preferred_hosts=(f"node-{i % 3}",))
        job.tasks[task.key] = task
    for p in range(reduces):
        task = Task("mr", "reduce", p, "mr_reduce", b"", 0)
        job.tasks[task.key] = task
    return job


def test_reduce_tasks_are_queued_when_the_last_map_succeeds() -> None:
    scheduler = scheduler_with(Worker("w", "node-0", "", cpus=8, memory=0))
    job = map_reduce_job(5, 3)
    scheduler.add_job(job)
    maps = scheduler.lease("w", 8, 0, 8)
    assert sorted(lease.task.phase for lease in maps) == ["map"] * 5
    for lease in maps[:4]:
        scheduler.complete("w", lease.task.key, lease.attempt, ok=True, result=b"",
                           error="", user_error=False, stderr="",
                           partition_bytes=(10, 20, 30))  # fmt: skip
        assert scheduler.lease("w", 8, 0, 8) == [], "a reduce ran before every map finished"
    last = maps[4]
    outcome = scheduler.complete("w", last.task.key, last.attempt, ok=True, result=b"",
                                 error="", user_error=False, stderr="",
                                 partition_bytes=(1, 2, 3))  # fmt: skip
    assert {t.phase for t in outcome.changed} == {"map", "reduce"}
    reduces = scheduler.lease("w", 8, 0, 8)
    assert sorted(lease.task.index for lease in reduces) == [0, 1, 2]
    assert [lease.task.progress_total for lease in reduces] == [41, 82, 123]
    assert scheduler.phase_count("mr", "map") == 5


def test_random_policy_leases_every_task_once() -> None:
    scheduler = scheduler_with(Worker("w", "h", "", cpus=1, memory=0))
    job = make_job("r", 50, policy="random")
    scheduler.add_job(job)
    order = []
    for _ in range(50):
        (lease,) = scheduler.lease("w", 1, 0, 1)
        order.append(lease.task.index)
        finish(scheduler, "w", lease)
    assert sorted(order) == list(range(50))
    assert order != sorted(order), "random picked in index order"
    assert job.state == SUCCEEDED


def complete_in(scheduler: Scheduler, worker_id: str, lease: object, run_s: float) -> None:
    task = lease.task  # type: ignore[attr-defined]
    scheduler.complete(
        worker_id, task.key, lease.attempt, ok=True, result=b"", error="",  # type: ignore[attr-defined]
        user_error=False, stderr="", partition_bytes=(), run_s=run_s,
    )  # fmt: skip


def test_prefetch_queues_short_tasks_only() -> None:
    scheduler = scheduler_with(Worker("w", "h", "", cpus=1, memory=0))
    quick, slow = make_job("quick", 100, created=2.0), make_job("slow", 100, created=1.0)
    scheduler.add_job(quick)
    # Until run times are known, one task per free cpu, whatever the worker offers.
    for _ in range(3):
        (lease,) = scheduler.lease("w", 1, 0, 20, prefetch=16)
        complete_in(scheduler, "w", lease, 0.001)
    leases = scheduler.lease("w", 1, 0, 20, prefetch=16)
    assert len(leases) == 17, "1 ms tasks: one to run plus 16 cpus queued"
    assert scheduler.lease("w", 0, 0, 20, prefetch=0) == [], "the worker's queue is full"
    for lease in leases:
        complete_in(scheduler, "w", lease, 0.001)
    scheduler.add_job(slow)
    for _ in range(3):
        lease = next(x for x in scheduler.lease("w", 1, 0, 1) if x.task.job_id == "slow")
        complete_in(scheduler, "w", lease, 1.0)
    leases = scheduler.lease("w", 1, 0, 40, prefetch=32)
    assert [x.task.job_id for x in leases].count("slow") == 1, "1 s tasks are never queued"


def test_prefetch_is_limited_to_a_short_queue_of_work() -> None:
    scheduler = scheduler_with(Worker("w", "h", "", cpus=2, memory=0))
    job = make_job("j", 100)
    scheduler.add_job(job)
    for _ in range(3):
        for lease in scheduler.lease("w", 2, 0, 2):
            complete_in(scheduler, "w", lease, 0.02)
    # 20 ms tasks on 2 cpus: 2 running + 2 x 50 ms / 20 ms = 5 queued.
    assert len(scheduler.lease("w", 2, 0, 100, prefetch=64)) == 7
    assert scheduler.lease("w", 0, 0, 100, prefetch=64) == [], "it holds that much already"


def test_returned_attempt_is_pending_again_without_counting() -> None:
    scheduler = scheduler_with(Worker("w", "h", "", cpus=1, memory=0))
    job = make_job("j", 1)
    scheduler.add_job(job)
    (lease,) = scheduler.lease("w", 1, 0, 1)
    outcome = scheduler.complete(
        "w", lease.task.key, lease.attempt, ok=False, result=b"", error="not started",
        user_error=False, stderr="", partition_bytes=(), returned=True,
    )  # fmt: skip
    assert outcome.accepted
    assert lease.task.state == PENDING
    assert (lease.task.lost, job.rerun_tasks) == (0, 0)
    (again,) = scheduler.lease("w", 1, 0, 1)
    assert again.task is lease.task


def test_restored_running_task_keeps_its_worker_busy_then_requeues() -> None:
    scheduler = scheduler_with(lease_timeout_s=0.0)
    job = make_job("j", 2)
    task = job.tasks[("j", "tasks", 0)]
    task.state, task.worker_id, task.attempts_started = RUNNING, "w", 1
    job.state = RUNNING
    scheduler.add_job(job)
    scheduler.restore_running(task)
    scheduler.register_worker(Worker("w", "h", "", cpus=1, memory=0))
    assert scheduler.lease("w", 1, 0, 1) == [], "the restored attempt holds the only cpu"
    assert [t.key for t in scheduler.expire()] == [task.key]
    assert task.state == PENDING
    indexes = sorted(lease.task.index for lease in scheduler.lease("w", 1, 0, 1))
    assert indexes == [0]


def test_running_median_is_the_median() -> None:
    rng = random.Random(3)
    median = RunningMedian()
    values: list[float] = []
    for _ in range(500):
        value = rng.choice([rng.random(), 0.5, float(rng.randint(0, 5))])
        values.append(value)
        median.add(value)
        assert median.median() == statistics.median(values)


def test_queued_attempts_show_as_pending_until_they_start() -> None:
    scheduler = scheduler_with(Worker("w", "h", "", cpus=1, memory=0))
    job = make_job("j", 20)
    scheduler.add_job(job)
    for _ in range(3):
        (lease,) = scheduler.lease("w", 1, 0, 1)
        complete_in(scheduler, "w", lease, 0.001)
    first, *queued = scheduler.lease("w", 1, 0, 3, prefetch=2)
    assert [shown_state(x.task) for x in (first, *queued)] == [RUNNING, PENDING, PENDING]
    assert all(x.task.state == RUNNING for x in queued), "leased: never handed out twice"
    # The worker started the first queued one.
    reports = [(x.task.key, x.attempt, 0, 10) for x in (first, *queued)]
    scheduler.heartbeat("w", reports, {(queued[1].task.key, queued[1].attempt)})
    assert [shown_state(x.task) for x in (first, *queued)] == [RUNNING, RUNNING, PENDING]


def test_stale_queued_attempts_move_to_a_worker_with_room() -> None:
    """Prefetched attempts stuck behind a task that turned out long are taken back once
    another worker has a free slot, without counting against the task."""
    scheduler = scheduler_with(
        Worker("a", "h1", "", cpus=1, memory=0), Worker("b", "h2", "", cpus=1, memory=0)
    )
    job = make_job("j", 20)
    scheduler.add_job(job)
    for _ in range(3):
        (lease,) = scheduler.lease("a", 1, 0, 1)
        complete_in(scheduler, "a", lease, 0.001)
    (blocker,) = scheduler.lease("b", 1, 0, 1)  # b is busy for now
    first, *queued = scheduler.lease("a", 1, 0, 3, prefetch=2)
    assert len(queued) == 2
    reports = [(x.task.key, x.attempt, 0, 10) for x in (first, *queued)]
    waiting = {(x.task.key, x.attempt) for x in queued}
    assert scheduler.heartbeat("a", reports, waiting) == [], "fresh in the queue: kept"
    for lease in queued:  # a's first task runs long: the queued ones go stale
        lease.task.active[lease.attempt].started -= 2 * QUEUED_STALE_S
    assert scheduler.heartbeat("a", reports, waiting) == [], "nobody else has room: kept"
    complete_in(scheduler, "b", blocker, 0.001)
    cancelled = scheduler.heartbeat("a", reports, waiting)
    assert sorted(cancelled or []) == sorted((x.task.key, x.attempt) for x in queued)
    assert all(x.task.state == PENDING and x.task.lost == 0 for x in queued)
    assert first.task.state == RUNNING
    moved = scheduler.lease("b", 1, 0, 1)
    assert [x.task.key for x in moved] == [queued[0].task.key]
