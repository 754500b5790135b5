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
- Prefetch: a worker may ask for up to `prefetch` cpus of attempts beyond its free resources,
  to queue and start the moment a slot frees. Only jobs whose tasks are short (median run
  time under PREFETCH_MAX_TASK_S) are prefetched, and only about PREFETCH_QUEUE_S of their
  work per cpu of the worker, so long tasks are still placed one free slot at a time.

Cost: a lease, a completion and a heartbeat are O(log n) in the job's task count (a
`RunQueue` of pending tasks per job, running sets and phase counters kept incrementally);
nothing on the lease path scans a job's tasks. `expire` and `_straggler` visit only the
attempts that run.
"""

from __future__ import annotations

import heapq
import itertools
import random
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
# Prefetch: tasks of a phase whose median run time (in the slot, as workers report it) is at
# most this many seconds, measured over at least PREFETCH_MIN_SAMPLES tasks, may be queued on
# a worker, up to about PREFETCH_QUEUE_S of work per cpu of the worker.
PREFETCH_MAX_TASK_S = 0.05
PREFETCH_MIN_SAMPLES = 3
PREFETCH_QUEUE_S = 0.05
# At most this many cpus of queued (prefetched) attempts per worker, whatever it asks.
MAX_PREFETCH_CPUS = 64.0
# A prefetched attempt still queued this long after its lease sits behind a task that turned
# out long: it is taken back (the worker is told to drop it) when another worker has a free
# slot, so it runs there instead of waiting; losing it costs the task nothing.
QUEUED_STALE_S = 1.0

TaskKey = tuple[str, str, int]  # job id, phase, index


@dataclass
class Attempt:
    number: int
    worker_id: str
    started: float
    lease_expiry: float
    done: float = 0.0
    backup: bool = False
    queued: bool = False  # prefetched: waiting in the worker's queue, not started yet


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


def shown_state(task: Task) -> str:
    """The state to report: a task whose only attempts wait in workers' queues (prefetched,
    not started) is shown as pending, as it is to the user."""
    if task.state == RUNNING and task.active and all(a.queued for a in task.active.values()):
        return PENDING
    return task.state


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


class RunningMedian:
    """The median of a growing multiset of numbers: O(log n) per `add`, O(1) per `median`
    (the lower half in a max-heap, the upper half in a min-heap)."""

    def __init__(self) -> None:
        self._low: list[float] = []  # negated: a max-heap
        self._high: list[float] = []

    def __len__(self) -> int:
        return len(self._low) + len(self._high)

    def add(self, value: float) -> None:
        if not self._low or value <= -self._low[0]:
            heapq.heappush(self._low, -value)
        else:
            heapq.heappush(self._high, value)
        if len(self._low) > len(self._high) + 1:
            heapq.heappush(self._high, -heapq.heappop(self._low))
        elif len(self._high) > len(self._low):
            heapq.heappush(self._low, -heapq.heappop(self._high))

    def median(self) -> float:
        """As statistics.median: the middle value, or the mean of the two middle ones."""
        if not self._low:
            raise ValueError("no values")
        if len(self._low) > len(self._high):
            return -self._low[0]
        return (-self._low[0] + self._high[0]) / 2


_Entry = tuple[int, int, int, Task]  # phase rank, index, sequence (never equal), task


def _phase_rank(task: Task) -> int:
    return 0 if task.phase == "map" else 1


class RunQueue:
    """The pending, runnable tasks of one job that need the same cpus and memory.

    Ordered for the job's policy: a heap by (map before reduce, index); for `locality` also
    one heap per preferred host and per preferred zone; for `random` a plain list. Entries
    are removed lazily: one whose task is no longer pending is dropped when it surfaces, so
    leasing, requeueing and cancelling never search the queue.
    """

    def __init__(self, policy: str, cpus: float, memory: int) -> None:
        self.policy = policy
        self.cpus = cpus
        self.memory = memory
        self.order: list[_Entry] = []
        self.by_host: dict[str, list[_Entry]] = {}
        self.by_zone: dict[str, list[_Entry]] = {}
        self.items: list[Task] = []  # random
        self._seq = itertools.count()

    def push(self, task: Task) -> None:
        """Queue a pending task (again: a stale entry of it may remain, which is harmless)."""
        if self.policy == "random":
            self.items.append(task)
            return
        entry = (_phase_rank(task), task.index, next(self._seq), task)
        heapq.heappush(self.order, entry)
        if self.policy == "locality":
            for host in task.preferred_hosts:
                heapq.heappush(self.by_host.setdefault(host, []), entry)
            for zone in task.preferred_zones:
                heapq.heappush(self.by_zone.setdefault(zone, []), entry)

    @staticmethod
    def _top(heap: list[_Entry]) -> Task | None:
        while heap and heap[0][3].state != PENDING:
            heapq.heappop(heap)
        return heap[0][3] if heap else None

    def candidate(self, worker: Worker) -> tuple[tuple[int, int], list[_Entry]] | None:
        """The best pending task for `worker` as (rank, heap holding it on top): `locality`
        ranks (0 on the worker's host, 1 in its zone, 2 elsewhere; then index), the other
        heap policies (map before reduce, index)."""
        if self.policy != "locality":
            task = self._top(self.order)
            return None if task is None else ((_phase_rank(task), task.index), self.order)
        best: tuple[tuple[int, int], list[_Entry]] | None = None
        heaps = (
            (0, self.by_host.get(worker.host_id) if worker.host_id else None),
            (1, self.by_zone.get(worker.zone) if worker.zone else None),
            (2, self.order),
        )
        for rank, heap in heaps:
            if heap is None:
                continue
            task = self._top(heap)
            if task is not None and (best is None or (rank, task.index) < best[0]):
                best = ((rank, task.index), heap)
        return best

    def take_random(self, rng: random.Random) -> Task | None:
        """Remove and return a pending task chosen uniformly (`random` policy)."""
        while self.items:
            i = rng.randrange(len(self.items))
            task = self.items[i]
            self.items[i] = self.items[-1]
            self.items.pop()
            if task.state == PENDING:
                return task
        return None


@dataclass
class JobIndex:
    """What the scheduler keeps per job so that no decision scans the job's tasks."""

    queues: dict[tuple[float, int], RunQueue] = field(default_factory=dict)
    # Tasks that are running or still have an active attempt (a backup, a cancelled one).
    running: set[TaskKey] = field(default_factory=set)
    attempts: int = 0  # active attempts, for the fair share
    totals: dict[str, int] = field(default_factory=dict)  # tasks per phase
    succeeded: dict[str, int] = field(default_factory=dict)  # succeeded tasks per phase
    durations: dict[str, RunningMedian] = field(default_factory=dict)  # of succeeded tasks
    # Run times of succeeded attempts as workers report them (without time queued).
    run_times: dict[str, RunningMedian] = field(default_factory=dict)

    def phase_done(self, phase: str) -> bool:
        return self.succeeded.get(phase, 0) == self.totals.get(phase, 0)


class Scheduler:
    """All jobs and workers; every method is a synchronous decision."""

    def __init__(self, lease_timeout_s: float, rng: random.Random | None = None) -> None:
        self.lease_timeout_s = lease_timeout_s
        self.jobs: dict[str, Job] = {}
        self.workers: dict[str, Worker] = {}
        self._rng = rng or random.Random()
        # Jobs that may still run tasks (pending or running), and the index of every job that
        # is active or still has active attempts.
        self._active: dict[str, Job] = {}
        self._index: dict[str, JobIndex] = {}

    # Jobs ----------------------------------------------------------------------------------

    def add_job(self, job: Job) -> None:
        """Add a job with its tasks (new, or loaded after a restart) and index it."""
        self.jobs[job.job_id] = job
        index = JobIndex()
        for task in job.tasks.values():
            index.totals[task.phase] = index.totals.get(task.phase, 0) + 1
            if task.state == SUCCEEDED:
                self._record_success(index, task)
            if task.active or task.state == RUNNING:
                index.running.add(task.key)
                index.attempts += len(task.active)
        if job.state in FINISHED and not index.running:
            return
        self._index[job.job_id] = index
        if job.state in FINISHED:
            return
        self._active[job.job_id] = job
        for task in job.tasks.values():
            if task.state == PENDING and (task.phase != "reduce" or index.phase_done("map")):
                self._enqueue(job, index, task)

    def phase_count(self, job_id: str, phase: str) -> int:
        """How many tasks of `phase` the job has (O(1) while it is indexed)."""
        index = self._index.get(job_id)
        if index is not None:
            return index.totals.get(phase, 0)
        return sum(1 for t in self.jobs[job_id].tasks.values() if t.phase == phase)

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
        self._job_over(job)
        return changed

    def _fail_job(self, job: Job, error: str) -> list[Task]:
        job.state, job.error, job.finished = FAILED, error, time.time()
        changed = []
        for task in job.tasks.values():
            if task.state in (PENDING, RUNNING):
                task.state = CANCELLED
                changed.append(task)
        self._job_over(job)
        return changed

    def _job_over(self, job: Job) -> None:
        """A job reached a final state: it leaves the lease path; its index stays only while
        attempts of it are still active (they hold their workers' resources)."""
        self._active.pop(job.job_id, None)
        index = self._index.get(job.job_id)
        if index is None:
            return
        index.queues.clear()
        index.running = {
            key for key in index.running if job.tasks[key].active or job.tasks[key].state == RUNNING
        }
        if not index.running:
            del self._index[job.job_id]

    @staticmethod
    def _record_success(index: JobIndex, task: Task) -> None:
        index.succeeded[task.phase] = index.succeeded.get(task.phase, 0) + 1
        index.durations.setdefault(task.phase, RunningMedian()).add(task.finished - task.started)

    def _enqueue(self, job: Job, index: JobIndex, task: Task) -> None:
        shape = (task.cpus, task.memory)
        queue = index.queues.get(shape)
        if queue is None:
            queue = index.queues[shape] = RunQueue(job.policy, task.cpus, task.memory)
        queue.push(task)

    def _requeue(self, job: Job, task: Task) -> None:
        """Make a task pending again (lost or failed attempt to retry)."""
        task.state = PENDING
        index = self._index.get(job.job_id)
        if index is not None and job.job_id in self._active:
            self._sync_running(job, index, task)
            self._enqueue(job, index, task)

    # Attempts (every change of task.active goes through these) ------------------------------

    def _add_attempt(self, job: Job, task: Task, attempt: Attempt) -> None:
        task.active[attempt.number] = attempt
        index = self._index.get(job.job_id)
        if index is None:
            index = self._index[job.job_id] = JobIndex()
        index.attempts += 1
        index.running.add(task.key)
        worker = self.workers.get(attempt.worker_id)
        if worker is not None:
            worker.running.add((*task.key, attempt.number))

    def _remove_attempt(self, job: Job | None, task: Task | None, number: int) -> None:
        if task is None:
            return
        attempt = task.active.pop(number, None)
        if attempt is None:
            return
        worker = self.workers.get(attempt.worker_id)
        if worker is not None:
            worker.running.discard((*task.key, number))
        index = self._index.get(task.job_id)
        if index is not None:
            index.attempts -= 1
            if job is not None:
                self._sync_running(job, index, task)

    def _sync_running(self, job: Job, index: JobIndex, task: Task) -> None:
        if task.active or task.state == RUNNING:
            index.running.add(task.key)
            return
        index.running.discard(task.key)
        if not index.running and job.job_id not in self._active:
            self._index.pop(job.job_id, None)

    # Workers -------------------------------------------------------------------------------

    def register_worker(self, worker: Worker) -> None:
        """Add or refresh a worker; attempts it already runs (also ones restored after a
        coordinator restart) keep counting against its resources."""
        worker.running = {
            (*key, number)
            for job_id, index in self._index.items()
            for key in index.running
            for number, attempt in self.jobs[job_id].tasks[key].active.items()
            if attempt.worker_id == worker.worker_id
        }
        self.workers[worker.worker_id] = worker

    def heartbeat(
        self,
        worker_id: str,
        running: list[tuple[TaskKey, int, int, int]],
        queued: set[tuple[TaskKey, int]] | None = None,
    ) -> list[tuple[TaskKey, int]] | None:
        """Renew the worker's leases and record progress; returns attempts to cancel
        (None if the worker is unknown). Attempts unknown after a coordinator restart are
        adopted when their task still needs running. `queued`: the reported attempts that
        wait in the worker's queue (the others have started)."""
        worker = self.workers.get(worker_id)
        if worker is None:
            return None
        now = time.monotonic()
        worker.last_heartbeat = now
        cancel = []
        stale: list[tuple[Job, Task, int]] = []
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
                task.state, task.worker_id = RUNNING, worker_id
                self._add_attempt(job, task, attempt)
                task.attempts_started = max(task.attempts_started, number)
                if job.state == PENDING:
                    job.state, job.started = RUNNING, time.time()
            attempt.lease_expiry = now + self.lease_timeout_s
            if queued is not None:
                attempt.queued = (key, number) in queued
            # The task reports done of total; S_i is that fraction of the task's S_max_i.
            units = done * task.progress_total / total if total else float(done)
            attempt.done = max(attempt.done, min(units, float(task.progress_total)))
            if attempt.queued and time.time() - attempt.started > QUEUED_STALE_S:
                stale.append((job, task, number))
        if stale and self._room_elsewhere(worker_id):
            for job, task, number in stale:
                self._drop_attempt(task.key, task, number, worker_id)
                cancel.append((task.key, number))
                if not task.active and task.state == RUNNING:
                    self._requeue(job, task)
        return cancel

    def _room_elsewhere(self, worker_id: str) -> bool:
        """Whether another live worker has a whole free cpu (queued attempts count as held)."""
        deadline = time.monotonic() - self.lease_timeout_s
        return any(
            other.worker_id != worker_id
            and other.last_heartbeat > deadline
            and sum(self._held_cpus(other)) + 1 <= other.cpus + 1e-9
            for other in self.workers.values()
        )

    def _drop_attempt(self, key: TaskKey, task: Task | None, number: int, worker_id: str) -> None:
        """Forget an attempt the worker is told to stop, so its cpus and memory count as
        free again (a cancelled job's tasks, a backup copy that lost)."""
        worker = self.workers.get(worker_id)
        if worker is not None:
            worker.running.discard((*key, number))
        self._remove_attempt(self.jobs.get(key[0]), task, number)

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
        self._add_attempt(self.jobs[task.job_id], task, attempt)

    def expire(self) -> list[Task]:
        """Drop attempts whose lease ran out; returns tasks that changed. Visits only the
        attempts that run, not every task."""
        now = time.monotonic()
        changed = []
        for job in list(self._active.values()):
            index = self._index.get(job.job_id)
            if index is None:
                continue
            for key in sorted(index.running, key=lambda k: k[2]):
                task = job.tasks[key]
                expired = [a.number for a in task.active.values() if a.lease_expiry < now]
                for number in expired:
                    self._remove_attempt(job, task, number)
                if not expired or task.state != RUNNING or task.active:
                    continue
                task.lost += 1
                job.rerun_tasks += 1
                if task.lost >= job.max_attempts:
                    task.state = FAILED
                    task.error = (
                        f"lost its worker {task.lost} times (max_attempts={job.max_attempts})"
                    )
                    self._sync_running(job, index, task)
                    changed += [
                        task,
                        *self._fail_job(job, f"task {task.phase}-{task.index}: {task.error}"),
                    ]
                else:
                    self._requeue(job, task)
                    changed.append(task)
        return changed

    # Leasing -------------------------------------------------------------------------------

    def lease(
        self,
        worker_id: str,
        free_cpus: float,
        free_memory: int,
        max_tasks: int,
        prefetch: float = 0.0,
    ) -> list[Lease]:
        """Hand a worker runnable attempts that fit its free resources, fairly across jobs;
        then, if it asks to `prefetch`, up to that many cpus of short tasks to queue."""
        worker = self.workers.get(worker_id)
        if worker is None:
            return []
        cpus, memory = self._free(worker, free_cpus, free_memory)
        jobs = sorted(
            self._active.values(), key=lambda j: (self._index[j.job_id].attempts, j.created)
        )
        leases: list[Lease] = []
        self._fill(worker, jobs, cpus, memory, max_tasks, leases, queued=False)
        if prefetch > 0 and len(leases) < max_tasks:
            used = sum(self._held_cpus(worker))
            budget = min(prefetch, MAX_PREFETCH_CPUS, worker.cpus + MAX_PREFETCH_CPUS - used)
            fast = [job for job in jobs if self._short_tasks(job)]
            if budget > 0 and fast:
                per_task = worker.memory or free_memory
                held: dict[str, int] = {}
                for job_id, *_rest in worker.running:
                    held[job_id] = held.get(job_id, 0) + 1
                limits = {
                    job.job_id: self._prefetch_limit(job, worker) - held.get(job.job_id, 0)
                    for job in fast
                }
                self._fill(
                    worker, fast, budget, per_task, max_tasks, leases, queued=True, limits=limits
                )
        if not leases and max_tasks:
            backup = self._straggler(worker, cpus, memory)
            if backup is not None:
                leases.append(backup)
        return leases

    def _fill(
        self,
        worker: Worker,
        jobs: list[Job],
        cpus: float,
        memory: int,
        max_tasks: int,
        leases: list[Lease],
        *,
        queued: bool,
        limits: dict[str, int] | None = None,
    ) -> None:
        """Round-robin over `jobs` (fair-share order), one task each per pass, until
        `max_tasks`, the resources, the runnable tasks or a job's entry in `limits` run out.
        Queued (prefetched) tasks each fit `memory` rather than sharing it: they run one after
        another."""
        exhausted: set[str] = set()
        while len(leases) < max_tasks and len(exhausted) < len(jobs):
            progressed = False
            for job in jobs:
                if job.job_id in exhausted or len(leases) >= max_tasks:
                    continue
                if limits is not None:
                    if limits[job.job_id] <= 0:
                        exhausted.add(job.job_id)
                        continue
                    limits[job.job_id] -= 1
                task = self._pick(job, worker, cpus, memory)
                if task is None:
                    exhausted.add(job.job_id)
                    continue
                leases.append(self._start(job, task, worker, backup=False, queued=queued))
                cpus -= task.cpus
                if not queued:
                    memory -= task.memory
                progressed = True
                if job.policy == "round-robin":
                    exhausted.add(job.job_id)
            if not progressed:
                break

    def _held_cpus(self, worker: Worker) -> list[float]:
        out = []
        for job_id, phase, index, _number in worker.running:
            job = self.jobs.get(job_id)
            task = job.tasks.get((job_id, phase, index)) if job else None
            if task is not None:
                out.append(task.cpus)
        return out

    def _free(self, worker: Worker, free_cpus: float, free_memory: int) -> tuple[float, int]:
        used_cpus = used_memory = 0.0
        for job_id, phase, index, _number in worker.running:
            job = self.jobs.get(job_id)
            task = job.tasks.get((job_id, phase, index)) if job else None
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

    def _current_phase(self, job: Job, index: JobIndex) -> str:
        if job.kind == "map_reduce":
            return "reduce" if index.phase_done("map") else "map"
        return "tasks"

    def _run_time(self, job: Job) -> float | None:
        """Median run time of the current phase's tasks (None: not enough measured): the
        workers' reports, else the time from lease to completion."""
        index = self._index[job.job_id]
        phase = self._current_phase(job, index)
        for times in (index.run_times.get(phase), index.durations.get(phase)):
            if times is not None and len(times) >= PREFETCH_MIN_SAMPLES:
                return times.median()
        return None

    def _short_tasks(self, job: Job) -> bool:
        """Whether the job's current phase runs short tasks (worth prefetching)."""
        run_time = self._run_time(job)
        return run_time is not None and run_time <= PREFETCH_MAX_TASK_S

    def _prefetch_limit(self, job: Job, worker: Worker) -> int:
        """How many attempts of a short-task job a worker may hold: its cpus plus about
        PREFETCH_QUEUE_S of queued work per cpu."""
        run_time = max(self._run_time(job) or PREFETCH_MAX_TASK_S, 1e-4)
        return int(worker.cpus) + max(int(worker.cpus * PREFETCH_QUEUE_S / run_time), 1)

    def _pick(self, job: Job, worker: Worker, cpus: float, memory: int) -> Task | None:
        """Take the job's best pending task for this worker that fits (see RunQueue)."""
        index = self._index.get(job.job_id)
        if index is None:
            return None
        fitting = [
            q
            for q in index.queues.values()
            if q.cpus <= cpus + 1e-9 and (not q.memory or q.memory <= memory)
        ]
        if job.policy == "random":
            while fitting:
                weights = [len(q.items) for q in fitting]
                if not any(weights):
                    return None
                (queue,) = self._rng.choices(fitting, weights)
                task = queue.take_random(self._rng)
                if task is not None:
                    return task
                fitting.remove(queue)
            return None
        best: tuple[tuple[int, int], list[_Entry]] | None = None
        for queue in fitting:
            candidate = queue.candidate(worker)
            if candidate is not None and (best is None or candidate[0] < best[0]):
                best = candidate
        return None if best is None else heapq.heappop(best[1])[3]

    def _start(
        self, job: Job, task: Task, worker: Worker, *, backup: bool, queued: bool = False
    ) -> Lease:
        now = time.monotonic()
        task.attempts_started += 1
        number = task.attempts_started
        if task.state == PENDING:
            task.state, task.started, task.worker_id = RUNNING, time.time(), worker.worker_id
        self._add_attempt(
            job,
            task,
            Attempt(
                number,
                worker.worker_id,
                time.time(),
                now + self.lease_timeout_s,
                backup=backup,
                queued=queued,
            ),
        )
        worker.leased += 1
        if job.state == PENDING:
            job.state, job.started = RUNNING, time.time()
        if backup:
            job.backup_tasks += 1
        return Lease(task, number, backup)

    def _straggler(self, worker: Worker, cpus: float, memory: int) -> Lease | None:
        for job in list(self._active.values()):
            if job.state != RUNNING or not job.speculation:
                continue
            index = self._index[job.job_id]
            phase = self._current_phase(job, index)
            total, done = index.totals.get(phase, 0), index.succeeded.get(phase, 0)
            if not total or not done or done / total < STRAGGLER_PHASE_DONE:
                continue
            limit = max(STRAGGLER_FACTOR * index.durations[phase].median(), STRAGGLER_MIN_S)
            now = time.time()
            for key in sorted(index.running, key=lambda k: k[2]):
                task = job.tasks[key]
                if (
                    task.phase == phase
                    and task.state == RUNNING
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
        returned: bool = False,
        run_s: float = 0.0,
    ) -> Completion:
        """An attempt ended: it succeeded, failed, or (`returned`) was never started by a
        worker shutting down, which puts the task back without counting an attempt. `run_s`
        is how long it ran in its slot, if the worker says."""
        worker = self.workers.get(worker_id)
        if worker is not None:
            worker.running.discard((*key, number))
        job = self.jobs.get(key[0])
        task = job.tasks.get(key) if job else None
        if job is None or task is None:
            return Completion(False, [], False)
        self._remove_attempt(job, task, number)
        if task.state in FINISHED or job.state in FINISHED:
            return Completion(False, [], False)
        if returned:
            if task.active or task.state != RUNNING:
                return Completion(True, [], False)
            self._requeue(job, task)
            return Completion(True, [task], False)
        index = self._index[job.job_id]
        if ok:
            task.state, task.finished = SUCCEEDED, time.time()
            task.result, task.stderr, task.worker_id = result, stderr, worker_id
            task.partition_bytes = partition_bytes
            task.done = task.progress_total
            host = worker.host_id if worker else ""
            task.ran_local = bool(host) and host in task.preferred_hosts
            self._sync_running(job, index, task)
            self._record_success(index, task)
            if run_s > 0:
                index.run_times.setdefault(task.phase, RunningMedian()).add(run_s)
            changed = [task]
            if task.phase == "map" and index.phase_done("map"):
                changed += self._open_reduce_phase(job, index)
            finished = sum(index.succeeded.values()) == len(job.tasks)
            if finished:
                job.state, job.finished = SUCCEEDED, time.time()
                self._job_over(job)
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
            self._requeue(job, task)
            if not user_error:
                job.rerun_tasks += 1
            return Completion(True, [task], False)
        task.state, task.finished = FAILED, time.time()
        self._sync_running(job, index, task)
        what = "raised" if user_error else "failed"
        changed = [task, *self._fail_job(job, f"task {task.phase}-{task.index} {what}:\n{error}")]
        return Completion(True, changed, True)

    def _open_reduce_phase(self, job: Job, index: JobIndex) -> list[Task]:
        """Every map succeeded: size the reduce tasks' inputs and queue them."""
        maps = [t for t in job.tasks.values() if t.phase == "map"]
        reduces = [t for t in job.tasks.values() if t.phase == "reduce"]
        for reduce in reduces:
            reduce.progress_total = (
                sum(
                    m.partition_bytes[reduce.index]
                    for m in maps
                    if len(m.partition_bytes) > reduce.index
                )
                or 1
            )
            if reduce.state == PENDING:
                self._enqueue(job, index, reduce)
        return reduces
