"""The job scheduler's state machine: jobs, tasks, attempts, workers and leases. No I/O.

`JobsServicer` feeds it events (submit, lease request, heartbeat, completion, lease expiry)
and persists what changed; the scheduler only decides.

- A task is `pending`, `running` (one or more active attempts), `succeeded`, `failed` or
  `cancelled`. Reduce tasks of a map-reduce job become runnable once every map succeeded.
- Leases: an attempt belongs to a worker until `lease_timeout_s` passes without that worker's
  heartbeat; then the attempt is dropped and the task runs again (`rerun_tasks` counts this,
  the only case where progress can step back). After `max_attempts` lost attempts the job fails.
- User errors (the task's code raised) fail the job at once unless `retries` allows more.
- Fairness: a lease request is served round-robin over runnable jobs ordered by how many
  attempts each has running, so no job starves behind another's thousands of queued tasks.
- Placement per job policy: `locality` prefers tasks whose input lives on the worker's host,
  then its zone, then any; `random` picks at random; `round-robin` hands out one task per
  request so work alternates between workers; `weighted` fills every free slot.
- Resources: a task's cpus and memory must fit what the worker declared minus what it runs.
- Stragglers: once 90% of a phase is done, a task running over 3x the phase's median
  (and 2 s) gets one backup attempt on another worker; the first to finish wins.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass, field

PENDING = "pending"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
FINISHED = (SUCCEEDED, FAILED, CANCELLED)
POLICIES = ("locality", "round-robin", "random", "weighted")
STRAGGLER_PHASE_DONE = 0.9
STRAGGLER_FACTOR = 3.0
STRAGGLER_MIN_S = 2.0

TaskKey = tuple[str, str, int]  # job id, phase, index


@dataclass
class Attempt:
    number: int
    worker_id: str
    started: float
    lease_expiry: float
    done: float = 0.0
    backup: bool = False


@dataclass
class Task:
    job_id: str
    phase: str
    index: int
    kind: str
    payload: bytes
    progress_total: int
    cpus: float = 1.0
    memory: int = 0
    preferred_hosts: tuple[str, ...] = ()
    preferred_zones: tuple[str, ...] = ()
    input_bucket: str = ""
    input_key: str = ""
    state: str = PENDING
    attempts_started: int = 0
    lost: int = 0
    user_failures: int = 0
    result: bytes = b""
    error: str = ""
    stderr: str = ""
    worker_id: str = ""
    ran_local: bool = False
    started: float = 0.0
    finished: float = 0.0
    done: int = 0
    partition_bytes: tuple[int, ...] = ()
    active: dict[int, Attempt] = field(default_factory=dict)

    @property
    def key(self) -> TaskKey:
        return (self.job_id, self.phase, self.index)


@dataclass
class Job:
    job_id: str
    name: str
    kind: str
    program: bytes
    partitions: int
    policy: str
    max_attempts: int
    retries: int
    speculation: bool
    created: float
    state: str = PENDING
    started: float = 0.0
    finished: float = 0.0
    error: str = ""
    rerun_tasks: int = 0
    backup_tasks: int = 0
    output_bucket: str = ""
    output_prefix: str = ""
    tasks: dict[TaskKey, Task] = field(default_factory=dict)

    def phase_tasks(self, phase: str) -> list[Task]:
        return [t for t in self.tasks.values() if t.phase == phase]

    @property
    def phase(self) -> str:
        if self.kind == "map_reduce":
            maps_done = all(t.state == SUCCEEDED for t in self.phase_tasks("map"))
            return "reduce" if maps_done else "map"
        return "tasks"

    def runnable(self, task: Task) -> bool:
        if task.state != PENDING or self.state not in (PENDING, RUNNING):
            return False
        if task.phase == "reduce":
            return all(t.state == SUCCEEDED for t in self.phase_tasks("map"))
        return True

    def progress(self) -> float:
        """sum(S_i) / sum(S_max_i); map-reduce weighs the reduce phase like the map phase."""
        if self.state == SUCCEEDED:
            return 1.0
        if self.kind == "map_reduce":
            maps = self.phase_tasks("map")
            reduces = self.phase_tasks("reduce")
            map_total = sum(t.progress_total for t in maps) or len(maps) or 1
            map_done = (
                sum(_task_done(t) for t in maps)
                if any(t.progress_total for t in maps)
                else sum(1 for t in maps if t.state == SUCCEEDED)
            )
            reduce_total = sum(t.progress_total for t in reduces)
            reduce_frac = (
                sum(_task_done(t) for t in reduces) / reduce_total if reduce_total else 0.0
            )
            return min((map_done / map_total + reduce_frac) / 2, 1.0)
        total = sum(t.progress_total or 1 for t in self.tasks.values())
        done = sum(
            _task_done(t) if t.progress_total else int(t.state == SUCCEEDED)
            for t in self.tasks.values()
        )
        return min(done / total, 1.0) if total else 1.0


def _task_done(task: Task) -> float:
    if task.state == SUCCEEDED:
        return float(task.progress_total)
    best = max((a.done for a in task.active.values()), default=0.0)
    return min(max(best, task.done if task.state == RUNNING else 0), task.progress_total)


@dataclass
class Worker:
    worker_id: str
    host_id: str
    zone: str
    cpus: float
    memory: int
    last_heartbeat: float = field(default_factory=time.monotonic)
    running: set[tuple[str, str, int, int]] = field(default_factory=set)
    leased: int = 0


@dataclass
class Lease:
    """A task attempt handed to a worker."""

    task: Task
    attempt: int
    backup: bool


@dataclass
class Completion:
    """What a completion changed: accepted, tasks to persist, job finished."""

    accepted: bool
    changed: list[Task]
    job_finished: bool


class Scheduler:
    """All jobs and workers; every method is a synchronous decision."""

    def __init__(self, lease_timeout_s: float, rng: random.Random | None = None) -> None:
        self.lease_timeout_s = lease_timeout_s
        self.jobs: dict[str, Job] = {}
        self.workers: dict[str, Worker] = {}
        self._rng = rng or random.Random()
        self._rr_counter = 0

    # Jobs ----------------------------------------------------------------------------------

    def add_job(self, job: Job) -> None:
        self.jobs[job.job_id] = job

    def cancel(self, job_id: str) -> list[Task]:
        job = self.jobs[job_id]
        changed: list[Task] = []
        if job.state in FINISHED:
            return changed
        job.state, job.finished = CANCELLED, time.time()
        for task in job.tasks.values():
            if task.state not in FINISHED:
                task.state = CANCELLED
                changed.append(task)
        return changed

    def _fail_job(self, job: Job, error: str) -> list[Task]:
        job.state, job.error, job.finished = FAILED, error, time.time()
        changed = []
        for task in job.tasks.values():
            if task.state in (PENDING, RUNNING):
                task.state = CANCELLED
                changed.append(task)
        return changed

    # Workers -------------------------------------------------------------------------------

    def register_worker(self, worker: Worker) -> None:
        """Add or refresh a worker; attempts it already runs (also ones restored after a
        coordinator restart) keep counting against its resources."""
        worker.running = {
            (*task.key, number)
            for job in self.jobs.values()
            for task in job.tasks.values()
            for number, attempt in task.active.items()
            if attempt.worker_id == worker.worker_id
        }
        self.workers[worker.worker_id] = worker

    def heartbeat(
        self, worker_id: str, running: list[tuple[TaskKey, int, int, int]]
    ) -> list[tuple[TaskKey, int]] | None:
        """Renew the worker's leases and record progress; returns attempts to cancel
        (None if the worker is unknown). Attempts unknown after a coordinator restart are
        adopted when their task still needs running."""
        worker = self.workers.get(worker_id)
        if worker is None:
            return None
        now = time.monotonic()
        worker.last_heartbeat = now
        cancel = []
        for key, number, done, total in running:
            job = self.jobs.get(key[0])
            task = job.tasks.get(key) if job else None
            if job is None or task is None or task.state in FINISHED:
                self._drop_attempt(key, task, number, worker_id)
                cancel.append((key, number))
                continue
            attempt = task.active.get(number)
            if attempt is None:
                if task.state != PENDING:
                    self._drop_attempt(key, task, number, worker_id)
                    cancel.append((key, number))
                    continue
                attempt = Attempt(number, worker_id, time.time(), now)
                task.active[number] = attempt
                task.state, task.worker_id = RUNNING, worker_id
                task.attempts_started = max(task.attempts_started, number)
                worker.running.add((*key, number))
                if job.state == PENDING:
                    job.state, job.started = RUNNING, time.time()
            attempt.lease_expiry = now + self.lease_timeout_s
            # The task reports done of total; S_i is that fraction of the task's S_max_i.
            units = done * task.progress_total / total if total else float(done)
            attempt.done = max(attempt.done, min(units, float(task.progress_total)))
        return cancel

    def _drop_attempt(self, key: TaskKey, task: Task | None, number: int, worker_id: str) -> None:
        """Forget an attempt the worker is told to stop, so its cpus and memory count as
        free again (a cancelled job's tasks, a backup copy that lost)."""
        worker = self.workers.get(worker_id)
        if worker is not None:
            worker.running.discard((*key, number))
        if task is not None:
            task.active.pop(number, None)

    def restore_running(self, task: Task) -> None:
        """After a coordinator restart: keep a task that was running as running under its
        last attempt for one lease period, so its worker can report it (heartbeat or
        completion) instead of the task being run a second time."""
        attempt = Attempt(
            task.attempts_started,
            task.worker_id,
            time.time(),
            time.monotonic() + self.lease_timeout_s,
        )
        task.active[attempt.number] = attempt
        worker = self.workers.get(task.worker_id)
        if worker is not None:
            worker.running.add((*task.key, attempt.number))

    def expire(self) -> list[Task]:
        """Drop attempts whose lease ran out; returns tasks that changed."""
        now = time.monotonic()
        changed = []
        for job in self.jobs.values():
            if job.state in FINISHED:
                continue
            for task in job.tasks.values():
                expired = [a for a in task.active.values() if a.lease_expiry < now]
                for attempt in expired:
                    del task.active[attempt.number]
                    worker = self.workers.get(attempt.worker_id)
                    if worker is not None:
                        worker.running.discard((*task.key, attempt.number))
                if not expired or task.state != RUNNING or task.active:
                    continue
                task.lost += 1
                job.rerun_tasks += 1
                if task.lost >= job.max_attempts:
                    task.state = FAILED
                    task.error = (
                        f"lost its worker {task.lost} times (max_attempts={job.max_attempts})"
                    )
                    changed += [
                        task,
                        *self._fail_job(job, f"task {task.phase}-{task.index}: {task.error}"),
                    ]
                else:
                    task.state = PENDING
                    changed.append(task)
        return changed

    # Leasing -------------------------------------------------------------------------------

    def lease(
        self, worker_id: str, free_cpus: float, free_memory: int, max_tasks: int
    ) -> list[Lease]:
        """Hand a worker runnable attempts that fit its free resources, fairly across jobs."""
        worker = self.workers.get(worker_id)
        if worker is None:
            return []
        cpus, memory = self._free(worker, free_cpus, free_memory)
        leases: list[Lease] = []
        jobs = [j for j in self.jobs.values() if j.state in (PENDING, RUNNING)]
        jobs.sort(key=lambda j: (self._running(j), j.created))
        exhausted: set[str] = set()
        while len(leases) < max_tasks and len(exhausted) < len(jobs):
            progressed = False
            for job in jobs:
                if job.job_id in exhausted or len(leases) >= max_tasks:
                    continue
                task = self._pick(job, worker, cpus, memory)
                if task is None:
                    exhausted.add(job.job_id)
                    continue
                leases.append(self._start(job, task, worker, backup=False))
                cpus -= task.cpus
                memory -= task.memory
                progressed = True
                if job.policy == "round-robin":
                    exhausted.add(job.job_id)
            if not progressed:
                break
        if not leases and max_tasks:
            backup = self._straggler(worker, cpus, memory)
            if backup is not None:
                leases.append(backup)
        return leases

    def _running(self, job: Job) -> int:
        return sum(len(t.active) for t in job.tasks.values())

    def _free(self, worker: Worker, free_cpus: float, free_memory: int) -> tuple[float, int]:
        used_cpus = used_memory = 0.0
        for job_id, phase, index, _number in worker.running:
            task = (
                self.jobs[job_id].tasks.get((job_id, phase, index)) if job_id in self.jobs else None
            )
            if task is not None:
                used_cpus += task.cpus
                used_memory += task.memory
        cpus = min(free_cpus, worker.cpus - used_cpus)
        memory = (
            min(free_memory, worker.memory - int(used_memory)) if worker.memory else free_memory
        )
        return cpus, memory

    @staticmethod
    def _fits(task: Task, cpus: float, memory: int) -> bool:
        return task.cpus <= cpus + 1e-9 and (not task.memory or task.memory <= memory)

    def _pick(self, job: Job, worker: Worker, cpus: float, memory: int) -> Task | None:
        runnable = [
            t for t in job.tasks.values() if job.runnable(t) and self._fits(t, cpus, memory)
        ]
        if not runnable:
            return None
        if job.policy == "random":
            return self._rng.choice(runnable)
        if job.policy == "locality":

            def rank(task: Task) -> tuple[int, int]:
                if worker.host_id and worker.host_id in task.preferred_hosts:
                    return (0, task.index)
                if worker.zone and worker.zone in task.preferred_zones:
                    return (1, task.index)
                return (2, task.index)

            return min(runnable, key=rank)
        return min(runnable, key=lambda t: (t.phase != "map", t.index))

    def _start(self, job: Job, task: Task, worker: Worker, *, backup: bool) -> Lease:
        now = time.monotonic()
        task.attempts_started += 1
        number = task.attempts_started
        task.active[number] = Attempt(
            number, worker.worker_id, time.time(), now + self.lease_timeout_s, backup=backup
        )
        if task.state == PENDING:
            task.state, task.started, task.worker_id = RUNNING, time.time(), worker.worker_id
        worker.running.add((*task.key, number))
        worker.leased += 1
        if job.state == PENDING:
            job.state, job.started = RUNNING, time.time()
        if backup:
            job.backup_tasks += 1
        return Lease(task, number, backup)

    def _straggler(self, worker: Worker, cpus: float, memory: int) -> Lease | None:
        for job in self.jobs.values():
            if job.state != RUNNING or not job.speculation:
                continue
            phase = job.phase if job.kind == "map_reduce" else "tasks"
            tasks = job.phase_tasks(phase) if job.kind == "map_reduce" else list(job.tasks.values())
            done = [t for t in tasks if t.state == SUCCEEDED]
            if not tasks or len(done) / len(tasks) < STRAGGLER_PHASE_DONE or not done:
                continue
            median = statistics.median(t.finished - t.started for t in done)
            limit = max(STRAGGLER_FACTOR * median, STRAGGLER_MIN_S)
            now = time.time()
            for task in tasks:
                if (
                    task.state == RUNNING
                    and len(task.active) == 1
                    and self._fits(task, cpus, memory)
                    and all(a.worker_id != worker.worker_id for a in task.active.values())
                    and now - min(a.started for a in task.active.values()) > limit
                ):
                    return self._start(job, task, worker, backup=True)
        return None

    # Completion ----------------------------------------------------------------------------

    def complete(
        self,
        worker_id: str,
        key: TaskKey,
        number: int,
        *,
        ok: bool,
        result: bytes,
        error: str,
        user_error: bool,
        stderr: str,
        partition_bytes: tuple[int, ...],
    ) -> Completion:
        worker = self.workers.get(worker_id)
        if worker is not None:
            worker.running.discard((*key, number))
        job = self.jobs.get(key[0])
        task = job.tasks.get(key) if job else None
        if job is None or task is None:
            return Completion(False, [], False)
        task.active.pop(number, None)
        if task.state in FINISHED or job.state in FINISHED:
            return Completion(False, [], False)
        if ok:
            task.state, task.finished = SUCCEEDED, time.time()
            task.result, task.stderr, task.worker_id = result, stderr, worker_id
            task.partition_bytes = partition_bytes
            task.done = task.progress_total
            host = worker.host_id if worker else ""
            task.ran_local = bool(host) and host in task.preferred_hosts
            changed = [task]
            if task.phase == "map" and all(t.state == SUCCEEDED for t in job.phase_tasks("map")):
                for reduce in job.phase_tasks("reduce"):
                    reduce.progress_total = (
                        sum(
                            m.partition_bytes[reduce.index]
                            for m in job.phase_tasks("map")
                            if len(m.partition_bytes) > reduce.index
                        )
                        or 1
                    )
                    changed.append(reduce)
            finished = all(t.state == SUCCEEDED for t in job.tasks.values())
            if finished:
                job.state, job.finished = SUCCEEDED, time.time()
            return Completion(True, changed, finished)
        task.error, task.stderr, task.worker_id = error, stderr, worker_id
        if task.active:  # another attempt (a backup) is still running
            return Completion(True, [task], False)
        if user_error:
            task.user_failures += 1
            exhausted = task.user_failures > job.retries
        else:
            task.lost += 1
            exhausted = task.lost >= job.max_attempts
        if not exhausted:
            task.state = PENDING
            if not user_error:
                job.rerun_tasks += 1
            return Completion(True, [task], False)
        task.state, task.finished = FAILED, time.time()
        what = "raised" if user_error else "failed"
        changed = [task, *self._fail_job(job, f"task {task.phase}-{task.index} {what}:\n{error}")]
        return Completion(True, changed, True)
