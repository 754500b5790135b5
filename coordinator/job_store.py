"""JobStore: jobs and tasks in the coordinator's SQLite database; JobWriter: group commit.

Job and task rows are written when they change state (submission, completion, failure,
cancellation, lease loss, and each lease, so it is known which worker runs which attempt);
progress reported by heartbeats stays in memory. After a restart finished tasks keep their
results and are never run again, and running tasks stay with their worker for one lease
period: its heartbeat or completion claims them, or the lease runs out and they are requeued.

Writes go through `JobWriter`, which commits the changes of many tasks and jobs in one
transaction (group commit) instead of one fsynced transaction per change. Each change is
either *durable* (fsynced before the caller goes on: completions, cancellations, a job's end)
or only *written* (committed to the WAL without an fsync: submissions, leases and lease-loss
requeues; that survives a crash of the coordinator process, and the next durable commit
fsyncs it, but a power loss may forget it; see coordinator/jobs_service.py for what each RPC
waits for). A job's row, which holds its pickled program, is rewritten only when one of its
own fields changed.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from shoal.coordinator.scheduler import Job, Task, TaskKey

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL, program BLOB NOT NULL,
    partitions INTEGER NOT NULL, policy TEXT NOT NULL, max_attempts INTEGER NOT NULL,
    retries INTEGER NOT NULL, speculation INTEGER NOT NULL, created REAL NOT NULL,
    state TEXT NOT NULL, started REAL NOT NULL, finished REAL NOT NULL, error TEXT NOT NULL,
    rerun_tasks INTEGER NOT NULL, backup_tasks INTEGER NOT NULL,
    output_bucket TEXT NOT NULL DEFAULT '', output_prefix TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS tasks (
    job_id TEXT NOT NULL, phase TEXT NOT NULL, idx INTEGER NOT NULL, kind TEXT NOT NULL,
    payload BLOB NOT NULL, progress_total INTEGER NOT NULL, cpus REAL NOT NULL,
    memory INTEGER NOT NULL, preferred_hosts TEXT NOT NULL, preferred_zones TEXT NOT NULL,
    input_bucket TEXT NOT NULL, input_key TEXT NOT NULL, state TEXT NOT NULL,
    attempts_started INTEGER NOT NULL, lost INTEGER NOT NULL, user_failures INTEGER NOT NULL,
    result BLOB NOT NULL, error TEXT NOT NULL, stderr TEXT NOT NULL, worker_id TEXT NOT NULL,
    ran_local INTEGER NOT NULL, started REAL NOT NULL, finished REAL NOT NULL,
    partition_bytes TEXT NOT NULL,
    PRIMARY KEY (job_id, phase, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS job_syncs (id INTEGER PRIMARY KEY, syncs INTEGER NOT NULL);
"""

_JOB_COLUMNS = (
    "job_id, name, kind, program, partitions, policy, max_attempts, retries, speculation, "
    "created, state, started, finished, error, rerun_tasks, backup_tasks, output_bucket, "
    "output_prefix"
)
_TASK_COLUMNS = (
    "job_id, phase, idx, kind, payload, progress_total, cpus, memory, preferred_hosts, "
    "preferred_zones, input_bucket, input_key, state, attempts_started, lost, user_failures, "
    "result, error, stderr, worker_id, ran_local, started, finished, partition_bytes"
)


class JobStore:
    """Persistence of jobs and tasks. Call from the metadata thread only."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._durable = True
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def save(self, job: Job, tasks: Sequence[Task]) -> None:
        """Write a job row and the given task rows in one fsynced transaction."""
        self.write([job_row(job)], [], [task_row(t) for t in tasks], durable=True)

    def write(
        self,
        jobs: Sequence[tuple[object, ...]],
        job_updates: Sequence[tuple[object, ...]],
        tasks: Sequence[tuple[object, ...]],
        *,
        durable: bool,
    ) -> None:
        """Write whole job rows (`job_row`), updates of jobs' changing fields
        (`job_update_row`) and task rows (`task_row`) in one transaction, fsynced when
        `durable` (synchronous=FULL), else only written to the WAL (synchronous=NORMAL)."""
        if durable != self._durable:
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._durable = durable
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if jobs:
                self._db.executemany(
                    f"INSERT OR REPLACE INTO jobs ({_JOB_COLUMNS}) VALUES ({', '.join('?' * 18)})",
                    jobs,
                )
            if job_updates:
                self._db.executemany(
                    "UPDATE jobs SET state = ?, started = ?, finished = ?, error = ?, "
                    "rerun_tasks = ?, backup_tasks = ? WHERE job_id = ?",
                    job_updates,
                )
            if tasks:
                self._db.executemany(
                    f"INSERT OR REPLACE INTO tasks ({_TASK_COLUMNS}) "
                    f"VALUES ({', '.join('?' * 24)})",
                    tasks,
                )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def sync(self) -> None:
        """Make every earlier commit durable: a tiny fsynced commit (in WAL mode it fsyncs
        the log, with the frames of the commits before it)."""
        if not self._durable:
            self._db.execute("PRAGMA synchronous=FULL")
            self._durable = True
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(
                "INSERT INTO job_syncs (id, syncs) VALUES (1, 1) "
                "ON CONFLICT (id) DO UPDATE SET syncs = syncs + 1"
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def load(self) -> list[Job]:
        """Every job with its tasks (running ones are restored under their last attempt)."""
        jobs: dict[str, Job] = {}
        for row in self._db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs ORDER BY created"):
            (
                job_id,
                name,
                kind,
                program,
                partitions,
                policy,
                max_attempts,
                retries,
                speculation,
                created,
                state,
                started,
                finished,
                error,
                rerun,
                backup,
                output_bucket,
                output_prefix,
            ) = row
            jobs[job_id] = Job(
                job_id,
                name,
                kind,
                bytes(program),
                partitions,
                policy,
                max_attempts,
                retries,
                bool(speculation),
                created,
                state,
                started,
                finished,
                error,
                rerun,
                backup,
                output_bucket,
                output_prefix,
            )
        for row in self._db.execute(f"SELECT {_TASK_COLUMNS} FROM tasks"):
            task = _task_from_row(row)
            if task.job_id in jobs:
                jobs[task.job_id].tasks[task.key] = task
        return list(jobs.values())


def job_row(job: Job) -> tuple[object, ...]:
    """A whole jobs row (with the program), in _JOB_COLUMNS order."""
    return (
        job.job_id,
        job.name,
        job.kind,
        job.program,
        job.partitions,
        job.policy,
        job.max_attempts,
        job.retries,
        int(job.speculation),
        job.created,
        job.state,
        job.started,
        job.finished,
        job.error,
        job.rerun_tasks,
        job.backup_tasks,
        job.output_bucket,
        job.output_prefix,
    )


def job_fields(job: Job) -> tuple[object, ...]:
    """The fields of a job that change after submission (JobStore.write's job_updates order,
    without the trailing job id)."""
    return (job.state, job.started, job.finished, job.error, job.rerun_tasks, job.backup_tasks)


def task_row(t: Task) -> tuple[object, ...]:
    """A whole tasks row, in _TASK_COLUMNS order."""
    return (
        t.job_id,
        t.phase,
        t.index,
        t.kind,
        t.payload,
        t.progress_total,
        t.cpus,
        t.memory,
        _json_list(t.preferred_hosts),
        _json_list(t.preferred_zones),
        t.input_bucket,
        t.input_key,
        t.state,
        t.attempts_started,
        t.lost,
        t.user_failures,
        t.result,
        t.error,
        t.stderr,
        t.worker_id,
        int(t.ran_local),
        t.started,
        t.finished,
        _json_list(t.partition_bytes),
    )


def _json_list(values: tuple[Any, ...]) -> str:
    return json.dumps(list(values)) if values else "[]"


def _task_from_row(row: Any) -> Task:
    (
        job_id,
        phase,
        idx,
        kind,
        payload,
        total,
        cpus,
        memory,
        hosts,
        zones,
        in_bucket,
        in_key,
        state,
        attempts,
        lost,
        user_failures,
        result,
        error,
        stderr,
        worker_id,
        ran_local,
        started,
        finished,
        partition_bytes,
    ) = row
    task = Task(
        str(job_id),
        str(phase),
        int(idx),
        str(kind),
        bytes(payload),
        int(total),
        float(cpus),
        int(memory),
        tuple(json.loads(str(hosts))),
        tuple(json.loads(str(zones))),
        str(in_bucket),
        str(in_key),
    )
    task.state = str(state)
    task.attempts_started, task.lost = int(attempts), int(lost)
    task.user_failures = int(user_failures)
    task.result, task.error, task.stderr = bytes(result), str(error), str(stderr)
    task.worker_id, task.ran_local = str(worker_id), bool(ran_local)
    task.started, task.finished = float(started), float(finished)
    task.partition_bytes = tuple(json.loads(str(partition_bytes)))
    return task


DbCall = Callable[..., Awaitable[Any]]
FLUSH_TURNS = 2  # event-loop turns a flush waits for more changes to join its transaction


class Batch:
    """The changes that go into one transaction, and what their waiters wait on."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.written = loop.create_future()  # committed (to the WAL at least)
        self.done = loop.create_future()  # and fsynced, if any change asked to be durable
        for future in (self.written, self.done):
            future.add_done_callback(_retrieve)
        self.jobs: dict[str, Job] = {}
        self.tasks: dict[TaskKey, Task] = {}
        self.durable = False  # some change must be fsynced
        self.written_only = False  # some change only needs to be written

    def fail(self, exc: BaseException) -> None:
        for future in (self.written, self.done):
            if not future.done():
                future.set_exception(exc)


class JobWriter:
    """Group commit of job and task rows through a `JobStore` on the metadata thread.

    Changes are marked (`save`, `save_many`) and written by one background flush at a time:
    everything marked during the same few event-loop turns, or while the previous transaction
    was being written, goes into the next transaction. A batch with durable changes is
    fsynced; if it also has changes that only need writing (leases), it is committed first
    without an fsync, which releases those waiters, and then fsynced by a second, tiny commit
    (`JobStore.sync`): a job is leased and started while its submission is being fsynced.
    `save` returns once its rows are committed as asked; `barrier` once everything marked so
    far is (what a reader is about to observe). Rows are built on the event loop when the
    batch starts, so they never race with the scheduler's changes.
    """

    def __init__(self, store: JobStore, db: DbCall) -> None:
        self._store = store
        self._db = db
        self._next: Batch | None = None  # collecting changes
        self._carry: Batch | None = None  # changes of a failed transaction, to write again
        self._writing: Batch | None = None  # being written
        self._flusher: asyncio.Task[None] | None = None
        self._written: dict[str, tuple[object, ...]] = {}  # job id -> job_fields as stored
        self.transactions = 0  # commits made (for tests)

    def known(self, job: Job) -> None:
        """A job whose row is already stored as it is (loaded after a restart)."""
        self._written[job.job_id] = job_fields(job)

    def mark(self, job: Job, tasks: Iterable[Task], *, durable: bool) -> Batch:
        """Queue the job's row (if its fields changed) and these task rows for the next
        transaction; returns its batch."""
        loop = asyncio.get_running_loop()
        batch = self._next
        if batch is None:
            batch = self._next = Batch(loop)
            if self._carry is not None:
                batch.jobs.update(self._carry.jobs)
                batch.tasks.update(self._carry.tasks)
                batch.durable, self._carry = self._carry.durable, None
        batch.jobs[job.job_id] = job
        for task in tasks:
            batch.tasks[task.key] = task
        if durable:
            batch.durable = True
        else:
            batch.written_only = True
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        return batch

    async def save(self, job: Job, tasks: Iterable[Task], *, durable: bool = True) -> None:
        """Mark and wait until committed: fsynced if durable, else written."""
        batch = self.mark(job, tasks, durable=durable)
        await asyncio.shield(batch.done if durable else batch.written)

    async def save_many(self, changes: Iterable[tuple[Job, list[Task]]], *, durable: bool) -> None:
        """`save` for several jobs, in one transaction."""
        batch: Batch | None = None
        for job, tasks in changes:
            batch = self.mark(job, tasks, durable=durable)
        if batch is not None:
            await asyncio.shield(batch.done if durable else batch.written)

    async def barrier(self) -> None:
        """Wait until every change marked so far is committed (and fsynced if durable)."""
        pending = self._next or self._writing
        if pending is not None:
            await asyncio.shield(pending.done)

    async def _flush(self) -> None:
        # Let the rest of this turn, and the lease long polls it woke, join the batch.
        for _ in range(FLUSH_TURNS):
            await asyncio.sleep(0)
        while self._next is not None:
            batch, self._next = self._next, None
            new_jobs, updates, fields = [], [], {}
            for job in batch.jobs.values():
                now = fields[job.job_id] = job_fields(job)
                before = self._written.get(job.job_id)
                if before is None:
                    new_jobs.append(job_row(job))
                elif before != now:
                    updates.append((*now, job.job_id))
            rows = [task_row(t) for t in batch.tasks.values()]
            # One fsynced commit, unless lease waiters can go before the fsync.
            split = batch.durable and batch.written_only
            self._writing = batch
            try:
                write = functools.partial(self._store.write, durable=batch.durable and not split)
                await self._db(write, new_jobs, updates, rows)
                self.transactions += 1
                self._written.update(fields)
                batch.written.set_result(None)
                if split:
                    await self._db(self._store.sync)
                    self.transactions += 1
                batch.done.set_result(None)
            except BaseException as exc:
                batch.fail(exc)
                self._carry_over(batch)
                if not isinstance(exc, Exception):
                    raise
                log.error("writing job state failed", extra={"error": repr(exc)})
            finally:
                self._writing = None

    def _carry_over(self, failed: Batch) -> None:
        """Keep a failed batch's changes for the next transaction, made when something else
        is marked (its own waiters have been told)."""
        if self._carry is None:
            self._carry = failed
            return
        self._carry.jobs.update(failed.jobs)
        self._carry.tasks.update(failed.tasks)
        self._carry.durable = self._carry.durable or failed.durable


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a batch's exception as seen (its waiters may all have gone)."""
    if not future.cancelled():
        future.exception()
