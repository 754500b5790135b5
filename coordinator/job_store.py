"""JobStore: jobs and tasks in the coordinator's SQLite database.

Job and task rows are written when they change state (submission, completion, failure,
cancellation, lease loss, and each lease, so it is known which worker runs which attempt);
progress reported by heartbeats stays in memory. After a restart finished tasks keep their
results and are never run again, and running tasks stay with their worker for one lease
period: its heartbeat or completion claims them, or the lease runs out and they are requeued.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shoal.coordinator.scheduler import Job, Task

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
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def save(self, job: Job, tasks: Sequence[Task]) -> None:
        """Write a job row and the given task rows in one transaction."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(
                f"INSERT OR REPLACE INTO jobs ({_JOB_COLUMNS}) VALUES ({', '.join('?' * 18)})",
                (
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
                ),
            )
            self._db.executemany(
                f"INSERT OR REPLACE INTO tasks ({_TASK_COLUMNS}) VALUES ({', '.join('?' * 24)})",
                [_task_row(t) for t in tasks],
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


def _task_row(t: Task) -> tuple[object, ...]:
    return (
        t.job_id,
        t.phase,
        t.index,
        t.kind,
        t.payload,
        t.progress_total,
        t.cpus,
        t.memory,
        json.dumps(list(t.preferred_hosts)),
        json.dumps(list(t.preferred_zones)),
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
        json.dumps(list(t.partition_bytes)),
    )


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
