"""JobsServicer: the Jobs RPCs. Validates, asks the Scheduler, persists what changed.

Jobs live in memory (the Scheduler) and in SQLite (JobStore, written by a group-committing
JobWriter on the metadata thread). Map-reduce intermediates are removed when a job ends.

What is on disk before an RPC answers ("written": committed to the SQLite WAL, which survives
a crash of the coordinator process; "fsynced": also on stable storage, surviving a crash of
the machine; commits are ordered and an fsync covers every earlier commit):

- CompleteTask(s), and completions carried by LeaseTasks: the completion (result, state, and
  the job's end if it ended), fsynced, before the worker's acknowledgement; a worker keeps
  and resends a completion until then.
- GetJob, WaitJob, ListJobs, GetTaskResults first wait until every change made so far is
  committed (fsynced where it had to be), so a client never observes a completion, a job's
  end or a cancellation that any crash could take back.
- CancelJob: the cancellation, fsynced.
- SubmitJob: the job and all its tasks, written, before the job id is returned; the next
  fsynced commit (at the latest its first task's completion) makes them durable. A machine
  crash in between loses the submission, and the client finds no job with that id (nothing
  of it can have been observed: no completion is durable before the submission is).
- LeaseTasks: who runs which attempt, written, before the assignments are returned, so a
  task running through a coordinator restart is adopted by its worker, not run twice. A
  machine crash may forget it, and the task may then run once more (tasks are at-least-once
  anyway). Requeues after a lost lease are written the same way.

Long polls: LeaseTasks (wait_s) waits for runnable work and WaitJob for the job's end, both
woken by the events that change them instead of being polled.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import grpc.aio

from shoal.common.errors import InvalidArgument, NotFound
from shoal.common.jobspec import (
    INTERNAL_BUCKET,
    JOB_KINDS,
    MAX_PARTITIONS,
    POLICIES,
    map_output_prefix,
)
from shoal.common.lifecycle import sleep_or_shutdown
from shoal.common.rpc import PROTOCOL_VERSION, unary
from shoal.coordinator import metrics
from shoal.coordinator.config import CoordinatorConfig
from shoal.coordinator.job_store import JobStore, JobWriter
from shoal.coordinator.membership import Membership
from shoal.coordinator.metadata import MetadataStore
from shoal.coordinator.scheduler import (
    CANCELLED,
    FAILED,
    FINISHED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    Job,
    Scheduler,
    Task,
    Worker,
    shown_state,
)
from shoal.rpc.v1 import jobs_pb2 as pb
from shoal.rpc.v1 import jobs_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
DbCall = Callable[..., Awaitable[Any]]
MAX_PROGRAM_BYTES = 64 * 1024 * 1024
EXPIRY_INTERVAL_S = 0.5
MAX_LEASE_WAIT_S = 2.0  # longest LeaseTasks long poll
MAX_JOB_WAIT_S = 10.0  # longest WaitJob long poll
MAX_INLINE_RESULTS_BYTES = 16 * 1024 * 1024  # results WaitJob returns inline, at most
CLEANUP_BATCH = 256  # map outputs deleted per transaction when a job ends


class JobsServicer(pb_grpc.JobsServicer):
    """The Jobs gRPC service."""

    def __init__(
        self,
        config: CoordinatorConfig,
        store: MetadataStore,
        jobs: JobStore,
        membership: Membership,
        db: DbCall,
    ) -> None:
        self.config = config
        self.store = store
        self.job_store = jobs
        self.membership = membership
        self.db = db
        self.scheduler = Scheduler(config.lease_timeout)
        self.writer = JobWriter(jobs, db)
        # LeaseTasks long polls waiting for work: resolved when work may have become leasable.
        self._lease_waiters: list[asyncio.Future[None]] = []
        # Per job with a WaitJob waiting: set when the job ends.
        self._ended: dict[str, asyncio.Event] = {}
        self._background: set[asyncio.Task[None]] = set()

    async def load(self) -> None:
        for job in await self.db(self.job_store.load):
            self.writer.known(job)
            self.scheduler.add_job(job)
            for task in job.tasks.values():
                if task.state == RUNNING:
                    self.scheduler.restore_running(task)

    async def _save(self, job: Job, tasks: Sequence[Task], *, durable: bool = True) -> None:
        await self.writer.save(job, tasks, durable=durable)

    def _wake_workers(self) -> None:
        """Work may be leasable now (new tasks, requeued ones, freed resources)."""
        waiters, self._lease_waiters = self._lease_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _wait_for_work(self, seconds: float) -> None:
        """Sleep until `_wake_workers` (or `seconds` pass)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._lease_waiters.append(waiter)
        timer = loop.call_later(seconds, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()

    def _job_ended(self, job: Job) -> None:
        """Wake WaitJob calls of a job that reached a final state."""
        event = self._ended.pop(job.job_id, None)
        if event is not None:
            event.set()

    def _in_background(self, coro: Awaitable[None], what: str) -> None:
        async def run() -> None:
            try:
                await coro
            except Exception:
                log.exception("%s failed", what)

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _job(self, job_id: str) -> Job:
        job = self.scheduler.jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        return job

    # Clients -------------------------------------------------------------------------------

    async def _ensure_internal_bucket(self) -> None:
        try:
            await self.db(self.store.bucket, INTERNAL_BUCKET)
        except NotFound:
            nodes = max(self.membership.known_count(), 2)
            n = min(self.config.default_n, nodes)
            k = min(self.config.default_k, n - 1)
            try:
                await self.db(self.store.create_bucket, INTERNAL_BUCKET, k, n, k + 1)
            except Exception:  # created concurrently
                await self.db(self.store.bucket, INTERNAL_BUCKET)

    async def _input_task(self, job_id: str, index: int, spec: pb.TaskSpec) -> Task:
        """An mr_map task: resolve its input object for size and locality."""
        version = await self.db(self.store.current, spec.input_bucket, spec.input_key)
        stripes = await self.db(self.store.stripes, version.version_id, 0, 64)
        hosts = sorted(
            {s.node_id for st in stripes for s in st.shards if s.shard_index < version.k}
        )
        zones = sorted(
            {
                self.membership.nodes[h].zone
                for h in hosts
                if h in self.membership.nodes and self.membership.nodes[h].zone
            }
        )
        return Task(
            job_id,
            "map",
            index,
            "mr_map",
            spec.payload,
            max(version.size, 1),
            spec.cpus or 1.0,
            spec.memory_bytes,
            tuple(hosts),
            tuple(zones),
            spec.input_bucket,
            spec.input_key,
        )

    @unary
    async def SubmitJob(
        self, request: pb.SubmitJobRequest, context: Context
    ) -> pb.SubmitJobResponse:
        if request.kind not in JOB_KINDS:
            raise InvalidArgument(f"job kind must be one of {', '.join(JOB_KINDS)}")
        policy = request.policy or self.config.job_policy
        if policy not in POLICIES:
            raise InvalidArgument(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        if len(request.program) > MAX_PROGRAM_BYTES:
            raise InvalidArgument(
                f"job program is {len(request.program)} bytes, at most {MAX_PROGRAM_BYTES}"
            )
        if not request.tasks:
            raise InvalidArgument(
                "a job needs at least one task (map_reduce: at least one input object)"
            )
        if request.kind == "map_reduce" and not 1 <= request.partitions <= MAX_PARTITIONS:
            raise InvalidArgument(f"partitions must be between 1 and {MAX_PARTITIONS}")
        job_id = uuid.uuid4().hex[:16]
        job = Job(
            job_id,
            request.name or request.kind,
            request.kind,
            bytes(request.program),
            request.partitions,
            policy,
            max(request.max_attempts or 3, 1),
            request.retries,
            request.speculation,
            time.time(),
            output_bucket=request.output_bucket,
            output_prefix=request.output_prefix,
        )
        if request.kind == "map_reduce":
            await self._ensure_internal_bucket()
            for index, spec in enumerate(request.tasks):
                task = await self._input_task(job_id, index, spec)
                job.tasks[task.key] = task
            for partition in range(request.partitions):
                reduce = Task(
                    job_id,
                    "reduce",
                    partition,
                    "mr_reduce",
                    b"",
                    0,
                    request.reduce_cpus or 1.0,
                    request.reduce_memory_bytes,
                )
                job.tasks[reduce.key] = reduce
        else:
            for index, spec in enumerate(request.tasks):
                task = Task(
                    job_id,
                    "tasks",
                    index,
                    spec.kind,
                    spec.payload,
                    spec.progress_total,
                    spec.cpus or 1.0,
                    spec.memory_bytes,
                )
                job.tasks[task.key] = task
        too_big = [t for t in job.tasks.values() if not self._fits_some_worker(t)]
        if too_big and self.scheduler.workers:
            t = too_big[0]
            raise InvalidArgument(
                f"task {t.phase}-{t.index} needs {t.cpus:g} cpus and "
                f"{t.memory} bytes of memory; no worker declares that much"
            )
        # Leasable at once: its tasks' leases are committed with or after the submission.
        self.scheduler.add_job(job)
        self._wake_workers()
        try:
            await self._save(job, list(job.tasks.values()), durable=False)
        except Exception:  # not stored: it must not run
            self.scheduler.cancel(job_id)
            raise
        metrics.record_job_submitted(job.kind)
        log.info(
            "job submitted",
            extra={
                "job_id": job_id,
                "job_name": job.name,
                "kind": job.kind,
                "tasks": len(job.tasks),
                "policy": policy,
            },
        )
        return pb.SubmitJobResponse(job_id=job_id)

    def _fits_some_worker(self, task: Task) -> bool:
        return any(
            task.cpus <= w.cpus and (not task.memory or not w.memory or task.memory <= w.memory)
            for w in self.scheduler.workers.values()
        )

    def job_info(self, job: Job) -> pb.JobInfo:
        counts = {state: 0 for state in (PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED)}
        for task in job.tasks.values():
            counts[shown_state(task)] += 1
        maps = [t for t in job.tasks.values() if t.kind == "mr_map" and t.state == SUCCEEDED]
        progress = job.progress()
        elapsed = (job.finished or time.time()) - job.started if job.started else 0.0
        eta = elapsed * (1 - progress) / progress if 0 < progress < 1 else 0.0
        return pb.JobInfo(
            job_id=job.job_id,
            name=job.name,
            kind=job.kind,
            state=job.state,
            tasks=pb.TaskCounts(**counts),
            progress=progress,
            created=job.created,
            started=job.started,
            finished=job.finished,
            error=job.error,
            local_tasks=sum(1 for t in maps if t.ran_local),
            located_tasks=len(maps),
            rerun_tasks=job.rerun_tasks,
            backup_tasks=job.backup_tasks,
            phase=job.phase,
            eta_s=eta,
            partitions=job.partitions,
            output_bucket=job.output_bucket,
            output_prefix=job.output_prefix,
        )

    @unary
    async def GetJob(self, request: pb.GetJobRequest, context: Context) -> pb.GetJobResponse:
        job = self._job(request.job_id)
        await self.writer.barrier()
        return pb.GetJobResponse(job=self.job_info(job))

    @unary
    async def WaitJob(self, request: pb.WaitJobRequest, context: Context) -> pb.WaitJobResponse:
        job = self._job(request.job_id)
        if job.state not in FINISHED and request.timeout_s > 0:
            ended = self._ended.setdefault(job.job_id, asyncio.Event())
            try:
                await asyncio.wait_for(ended.wait(), min(request.timeout_s, MAX_JOB_WAIT_S))
            except TimeoutError:
                pass
        await self.writer.barrier()
        reply = pb.WaitJobResponse(job=self.job_info(job))
        if request.include_results and job.state == SUCCEEDED and job.kind != "map_reduce":
            size = sum(len(t.result) for t in job.tasks.values())
            if size <= MAX_INLINE_RESULTS_BYTES:
                reply.tasks.extend(self._task_results(job.tasks.values(), failed_only=False))
                reply.results_included = True
        return reply

    @unary
    async def ListJobs(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
        await self.writer.barrier()
        jobs = sorted(self.scheduler.jobs.values(), key=lambda j: j.created, reverse=True)
        if request.active_only:
            jobs = [j for j in jobs if j.state not in FINISHED]
        return pb.ListJobsResponse(jobs=[self.job_info(j) for j in jobs[: request.limit or 50]])

    @unary
    async def CancelJob(
        self, request: pb.CancelJobRequest, context: Context
    ) -> pb.CancelJobResponse:
        job = self._job(request.job_id)
        was_finished = job.state in FINISHED
        changed = self.scheduler.cancel(job.job_id)
        if not was_finished:
            metrics.record_job_finished(job)
        await self._save(job, changed)
        self._job_ended(job)
        await self._cleanup(job)
        log.info("job cancelled", extra={"job_id": job.job_id})
        return pb.CancelJobResponse(job=self.job_info(job))

    @unary
    async def GetTaskResults(
        self, request: pb.GetTaskResultsRequest, context: Context
    ) -> pb.GetTaskResultsResponse:
        job = self._job(request.job_id)
        await self.writer.barrier()
        return pb.GetTaskResultsResponse(
            tasks=self._task_results(job.tasks.values(), failed_only=request.failed_only)
        )

    @staticmethod
    def _task_results(tasks: Iterable[Task], *, failed_only: bool) -> list[pb.TaskResult]:
        ordered = sorted(tasks, key=lambda t: (t.phase, t.index))
        if failed_only:
            ordered = [t for t in ordered if t.error]
        return [
            pb.TaskResult(
                index=t.index,
                phase=t.phase,
                state=t.state,
                result=b"" if failed_only else t.result,
                error=t.error,
                worker_id=t.worker_id,
                attempts=t.attempts_started,
                stderr=t.stderr,
            )
            for t in ordered
        ]

    # Workers -------------------------------------------------------------------------------

    @unary
    async def RegisterWorker(
        self, request: pb.RegisterWorkerRequest, context: Context
    ) -> pb.RegisterWorkerResponse:
        if request.protocol_version != PROTOCOL_VERSION:
            raise InvalidArgument(
                f"worker {request.worker_id} speaks protocol version {request.protocol_version}, "
                f"this coordinator speaks {PROTOCOL_VERSION}"
            )
        if not request.worker_id or request.cpus <= 0:
            raise InvalidArgument("a worker needs an id and at least one cpu slot")
        self.scheduler.register_worker(
            Worker(
                request.worker_id, request.host_id, request.zone, request.cpus, request.memory_bytes
            )
        )
        log.info(
            "worker registered",
            extra={
                "worker_id": request.worker_id,
                "host_id": request.host_id,
                "cpus": request.cpus,
            },
        )
        return pb.RegisterWorkerResponse(
            lease_timeout_s=self.config.lease_timeout,
            heartbeat_interval_s=max(self.config.lease_timeout / 4, 0.1),
        )

    @unary
    async def WorkerHeartbeat(
        self, request: pb.WorkerHeartbeatRequest, context: Context
    ) -> pb.WorkerHeartbeatResponse:
        running = [
            ((p.job_id, p.phase, p.index), p.attempt, p.done, p.total) for p in request.running
        ]
        queued = {((p.job_id, p.phase, p.index), p.attempt) for p in request.running if p.queued}
        cancel = self.scheduler.heartbeat(request.worker_id, running, queued)
        if cancel is None:
            return pb.WorkerHeartbeatResponse(reregister=True)
        if cancel:
            self._wake_workers()  # the dropped attempts' resources are free
        return pb.WorkerHeartbeatResponse(
            cancel=[
                pb.TaskProgress(job_id=k[0], phase=k[1], index=k[2], attempt=n) for k, n in cancel
            ]
        )

    @unary
    async def LeaseTasks(
        self, request: pb.LeaseTasksRequest, context: Context
    ) -> pb.LeaseTasksResponse:
        """Apply the completions it carries, then lease up to max_tasks attempts; with wait_s,
        wait (bounded) until there are some. Answers once the completions are durable."""
        if request.worker_id not in self.scheduler.workers:
            return pb.LeaseTasksResponse(reregister=True)
        # Made durable while this call leases or waits (started now: it writes in the
        # background, and the reply waits for it).
        accepted, persisted = self._apply_completions(request.worker_id, request.completed)
        persisting = asyncio.ensure_future(persisted)
        try:
            reply = await self._lease(request)
        finally:
            await persisting
        reply.accepted.extend(accepted)
        return reply

    async def _lease(self, request: pb.LeaseTasksRequest) -> pb.LeaseTasksResponse:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(request.wait_s, 0.0), MAX_LEASE_WAIT_S)
        while True:
            if request.worker_id not in self.scheduler.workers:
                return pb.LeaseTasksResponse(reregister=True)
            leases = self.scheduler.lease(
                request.worker_id,
                request.free_cpus,
                request.free_memory_bytes,
                request.max_tasks or 1,
                request.prefetch,
            )
            remaining = deadline - loop.time()
            if leases or remaining <= 0:
                break
            await self._wait_for_work(remaining)
        if not leases:
            return pb.LeaseTasksResponse()
        metrics.record_attempts_started(lease.backup for lease in leases)
        # Persist who runs what, so a coordinator restart neither forgets nor reruns it.
        by_job: dict[str, list[Task]] = {}
        for lease in leases:
            by_job.setdefault(lease.task.job_id, []).append(lease.task)
        await self.writer.save_many(
            ((self.scheduler.jobs[job_id], tasks) for job_id, tasks in by_job.items()),
            durable=False,
        )
        has_program = set(request.cached_programs)
        map_tasks = {job_id: self.scheduler.phase_count(job_id, "map") for job_id in by_job}
        out = []
        for lease in leases:
            task = lease.task
            job = self.scheduler.jobs[task.job_id]
            out.append(
                pb.Assignment(
                    job_id=task.job_id,
                    index=task.index,
                    phase=task.phase,
                    attempt=lease.attempt,
                    kind=task.kind,
                    program=b"" if job.job_id in has_program else job.program,
                    payload=task.payload,
                    progress_total=task.progress_total,
                    cpus=task.cpus,
                    memory_bytes=task.memory,
                    map_tasks=map_tasks[task.job_id],
                    input_bucket=task.input_bucket,
                    input_key=task.input_key,
                )
            )
            if request.program_once:
                has_program.add(job.job_id)
        return pb.LeaseTasksResponse(tasks=out)

    @unary
    async def CompleteTask(
        self, request: pb.CompleteTaskRequest, context: Context
    ) -> pb.CompleteTaskResponse:
        (accepted,) = await self._complete(request.worker_id, [request])
        return pb.CompleteTaskResponse(accepted=accepted)

    @unary
    async def CompleteTasks(
        self, request: pb.CompleteTasksRequest, context: Context
    ) -> pb.CompleteTasksResponse:
        return pb.CompleteTasksResponse(
            accepted=await self._complete(request.worker_id, list(request.tasks))
        )

    async def _complete(self, worker_id: str, requests: list[pb.CompleteTaskRequest]) -> list[bool]:
        """Apply completions, commit them (fsynced) in one transaction, then acknowledge."""
        accepted, persisted = self._apply_completions(worker_id, requests)
        await persisted
        return accepted

    def _apply_completions(
        self, worker_id: str, requests: Sequence[pb.CompleteTaskRequest]
    ) -> tuple[list[bool], Awaitable[None]]:
        """Apply completions to the scheduler now; returns whether each was accepted and an
        awaitable that is done once they are durable (and their jobs' ends announced)."""
        accepted: list[bool] = []
        changed: dict[str, list[Task]] = {}
        ended: list[Job] = []
        for request in requests:
            key = (request.job_id, request.phase, request.index)
            started = self._attempt_started(key, request.attempt)
            outcome = self.scheduler.complete(
                worker_id,
                key,
                request.attempt,
                ok=request.ok,
                result=bytes(request.result),
                error=request.error,
                user_error=request.user_error,
                stderr=request.stderr,
                partition_bytes=tuple(request.partition_bytes),
                returned=request.returned,
                run_s=request.run_s,
            )
            accepted.append(outcome.accepted)
            if not outcome.accepted:
                metrics.record_task_attempt("stale")
            elif not request.returned:
                attempt_outcome = (
                    "succeeded" if request.ok else "error" if request.user_error else "failed"
                )
                metrics.record_task_attempt(
                    attempt_outcome, time.time() - started if started else None
                )
            if outcome.changed:
                changed.setdefault(request.job_id, []).extend(outcome.changed)
            if outcome.job_finished:
                job = self.scheduler.jobs[request.job_id]
                metrics.record_job_finished(job)
                ended.append(job)
        if requests:
            self._wake_workers()  # resources freed, tasks requeued, reduce phases opened
        return accepted, self._persist_completions(changed, ended)

    async def _persist_completions(self, changed: dict[str, list[Task]], ended: list[Job]) -> None:
        if changed:
            await self.writer.save_many(
                ((self.scheduler.jobs[job_id], tasks) for job_id, tasks in changed.items()),
                durable=True,
            )
        for job in ended:
            log.info("job finished", extra={"job_id": job.job_id, "state": job.state})
            self._job_ended(job)
            self._in_background(self._cleanup(job), "removing map outputs")

    def _attempt_started(self, key: tuple[str, str, int], number: int) -> float:
        """When attempt `number` of task `key` was leased (wall time); 0.0 if unknown."""
        job = self.scheduler.jobs.get(key[0])
        task = job.tasks.get(key) if job else None
        attempt = task.active.get(number) if task else None
        return attempt.started if attempt else 0.0

    async def _cleanup(self, job: Job) -> None:
        """Delete a finished job's map outputs (its reduce inputs)."""
        if job.kind != "map_reduce":
            return
        try:
            rows = await self.db(
                self.store.list_objects, INTERNAL_BUCKET, map_output_prefix(job.job_id), "", 100_000
            )
        except NotFound:
            return
        keys = [row.key for row in rows]
        # In batches: one transaction (one fsync) per batch rather than per output, short
        # enough not to hold the metadata thread up for other calls.
        for start in range(0, len(keys), CLEANUP_BATCH):
            await self.db(
                self.store.delete_objects,
                INTERNAL_BUCKET,
                keys[start : start + CLEANUP_BATCH],
                self.config.delete_grace,
            )

    async def run(self, shutdown: asyncio.Event) -> None:
        """Expire leases of silent workers, persisting what changed."""
        while not await sleep_or_shutdown(shutdown, EXPIRY_INTERVAL_S):
            changed = self.scheduler.expire()
            for task in changed:
                if task.state in (PENDING, FAILED):  # not the tasks a failed job cancelled
                    metrics.record_task_attempt("lost")
            by_job: dict[str, list[Task]] = {}
            for task in changed:
                by_job.setdefault(task.job_id, []).append(task)
            if by_job:
                self._wake_workers()
            for job_id, tasks in by_job.items():
                job = self.scheduler.jobs[job_id]
                log.info(
                    "tasks lost with their worker requeued",
                    extra={"job_id": job_id, "tasks": len(tasks), "state": job.state},
                )
                if job.state in FINISHED:
                    metrics.record_job_finished(job)
                await self._save(job, tasks, durable=job.state in FINISHED)
                if job.state in FINISHED:
                    self._job_ended(job)
                    await self._cleanup(job)

    def median_task_seconds(self) -> float:
        durations = [
            t.finished - t.started
            for j in self.scheduler.jobs.values()
            for t in j.tasks.values()
            if t.state == SUCCEEDED and t.started
        ]
        return statistics.median(durations) if durations else 0.0


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
