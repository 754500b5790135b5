"""JobsServicer: the Jobs RPCs. Validates, asks the Scheduler, persists what changed.

Jobs live in memory (the Scheduler) and in SQLite (JobStore); persistence runs on the
metadata thread. Map-reduce intermediates are removed when a job ends.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
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
from shoal.coordinator.job_store import JobStore
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
)
from shoal.rpc.v1 import jobs_pb2 as pb
from shoal.rpc.v1 import jobs_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
DbCall = Callable[..., Awaitable[Any]]
MAX_PROGRAM_BYTES = 64 * 1024 * 1024
EXPIRY_INTERVAL_S = 0.5


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

    async def load(self) -> None:
        for job in await self.db(self.job_store.load):
            self.scheduler.add_job(job)
            for task in job.tasks.values():
                if task.state == RUNNING:
                    self.scheduler.restore_running(task)

    async def _save(self, job: Job, tasks: Sequence[Task]) -> None:
        await self.db(self.job_store.save, job, list(tasks))

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
        self.scheduler.add_job(job)
        await self._save(job, list(job.tasks.values()))
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
            counts[task.state] += 1
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
        return pb.GetJobResponse(job=self.job_info(self._job(request.job_id)))

    @unary
    async def ListJobs(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
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
        await self._cleanup(job)
        log.info("job cancelled", extra={"job_id": job.job_id})
        return pb.CancelJobResponse(job=self.job_info(job))

    @unary
    async def GetTaskResults(
        self, request: pb.GetTaskResultsRequest, context: Context
    ) -> pb.GetTaskResultsResponse:
        job = self._job(request.job_id)
        tasks = sorted(job.tasks.values(), key=lambda t: (t.phase, t.index))
        if request.failed_only:
            tasks = [t for t in tasks if t.error]
        return pb.GetTaskResultsResponse(
            tasks=[
                pb.TaskResult(
                    index=t.index,
                    phase=t.phase,
                    state=t.state,
                    result=b"" if request.failed_only else t.result,
                    error=t.error,
                    worker_id=t.worker_id,
                    attempts=t.attempts_started,
                    stderr=t.stderr,
                )
                for t in tasks
            ]
        )

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
        cancel = self.scheduler.heartbeat(request.worker_id, running)
        if cancel is None:
            return pb.WorkerHeartbeatResponse(reregister=True)
        return pb.WorkerHeartbeatResponse(
            cancel=[
                pb.TaskProgress(job_id=k[0], phase=k[1], index=k[2], attempt=n) for k, n in cancel
            ]
        )

    @unary
    async def LeaseTasks(
        self, request: pb.LeaseTasksRequest, context: Context
    ) -> pb.LeaseTasksResponse:
        leases = self.scheduler.lease(
            request.worker_id, request.free_cpus, request.free_memory_bytes, request.max_tasks or 1
        )
        metrics.record_attempts_started(lease.backup for lease in leases)
        # Persist who runs what, so a coordinator restart neither forgets nor reruns it.
        by_job: dict[str, list[Task]] = {}
        for lease in leases:
            by_job.setdefault(lease.task.job_id, []).append(lease.task)
        for job_id, tasks in by_job.items():
            await self._save(self.scheduler.jobs[job_id], tasks)
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
                    program=job.program,
                    payload=task.payload,
                    progress_total=task.progress_total,
                    cpus=task.cpus,
                    memory_bytes=task.memory,
                    map_tasks=len(job.phase_tasks("map")),
                    input_bucket=task.input_bucket,
                    input_key=task.input_key,
                )
            )
        return pb.LeaseTasksResponse(tasks=out)

    @unary
    async def CompleteTask(
        self, request: pb.CompleteTaskRequest, context: Context
    ) -> pb.CompleteTaskResponse:
        key = (request.job_id, request.phase, request.index)
        started = self._attempt_started(key, request.attempt)
        outcome = self.scheduler.complete(
            request.worker_id,
            key,
            request.attempt,
            ok=request.ok,
            result=bytes(request.result),
            error=request.error,
            user_error=request.user_error,
            stderr=request.stderr,
            partition_bytes=tuple(request.partition_bytes),
        )
        if not outcome.accepted:
            metrics.record_task_attempt("stale")
        else:
            attempt_outcome = (
                "succeeded" if request.ok else "error" if request.user_error else "failed"
            )
            metrics.record_task_attempt(attempt_outcome, time.time() - started if started else None)
        if outcome.changed:
            job = self.scheduler.jobs[request.job_id]
            if outcome.job_finished:
                metrics.record_job_finished(job)
            await self._save(job, outcome.changed)
            if outcome.job_finished:
                log.info("job finished", extra={"job_id": job.job_id, "state": job.state})
                await self._cleanup(job)
        return pb.CompleteTaskResponse(accepted=outcome.accepted)

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
        for row in rows:
            try:
                await self.db(
                    self.store.delete_object, INTERNAL_BUCKET, row.key, self.config.delete_grace
                )
            except NotFound:
                continue

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
            for job_id, tasks in by_job.items():
                job = self.scheduler.jobs[job_id]
                log.info(
                    "tasks lost with their worker requeued",
                    extra={"job_id": job_id, "tasks": len(tasks), "state": job.state},
                )
                if job.state in FINISHED:
                    metrics.record_job_finished(job)
                await self._save(job, tasks)
                if job.state in FINISHED:
                    await self._cleanup(job)

    def median_task_seconds(self) -> float:
        durations = [
            t.finished - t.started
            for j in self.scheduler.jobs.values()
            for t in j.tasks.values()
            if t.state == SUCCEEDED and t.started
        ]
        return statistics.median(durations) if durations else 0.0
