"""Jobs from the SDK: `submit`, `map` and `map_reduce` return a `Job` (or `AsyncJob`) handle.

Functions travel with cloudpickle, or as an import string "package.module:function" for code
installed on the workers. Map-reduce reads its inputs and writes its outputs through Shoal:
`result()` of a map-reduce job yields `(key, value)` pairs from the reducer output objects
(JSON lines in the `output` bucket when one is given, see shoal.common.jobspec).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import cloudpickle

from shoal.common.errors import InvalidArgument, JobCancelled, JobFailed, NotFound, ShoalError
from shoal.common.jobspec import (
    INTERNAL_BUCKET,
    MAX_PARTITIONS,
    POLICIES,
    internal_output_key,
    output_key,
    unpack_intermediate,
)
from shoal.common.names import check_bucket_name, check_key
from shoal.rpc.v1 import jobs_pb2 as pb

JobsCall = Callable[[str, Any], Awaitable[Any]]
TERMINAL = ("succeeded", "failed", "cancelled")
# One WaitJob long poll lasts at most this long (and at most half the client's RPC timeout).
WAIT_POLL_S = 10.0


@dataclass(frozen=True)
class JobOptions:
    """Options of a job.

    Attributes:
        name: shown in status and job lists.
        cpus, memory: what each task needs; a worker never runs more than it declares.
        max_attempts: runs of a task lost with its worker before the job fails.
        retries: extra runs after the task's own code raised (default 0: fail at once).
        policy: locality, round-robin, random or weighted; "" (the default) uses the
            cluster's --job-policy (locality unless configured otherwise).
        speculation: start backup copies of stragglers.
    """

    name: str = ""
    cpus: float = 1.0
    memory: int = 0
    max_attempts: int = 3
    retries: int = 0
    policy: str = ""
    speculation: bool = True

    def check(self) -> None:
        if self.policy and self.policy not in POLICIES:
            raise InvalidArgument(
                f"policy must be one of {', '.join(POLICIES)}, got {self.policy!r}"
            )
        if self.cpus <= 0 or self.memory < 0 or self.max_attempts < 1 or self.retries < 0:
            raise InvalidArgument(
                "job options: cpus > 0, memory >= 0, max_attempts >= 1, retries >= 0"
            )


@dataclass(frozen=True)
class JobStatus:
    """A snapshot of a job."""

    job_id: str
    name: str
    kind: str
    state: str
    phase: str
    progress: float
    tasks: dict[str, int]
    local_tasks: int
    located_tasks: int
    rerun_tasks: int
    backup_tasks: int
    error: str
    eta_s: float
    created: datetime
    started: datetime | None
    finished: datetime | None

    @property
    def done(self) -> bool:
        return self.state in TERMINAL

    @classmethod
    def from_proto(cls, info: pb.JobInfo) -> JobStatus:
        def when(t: float) -> datetime | None:
            return datetime.fromtimestamp(t, UTC) if t else None

        counts = info.tasks
        return cls(
            job_id=info.job_id,
            name=info.name,
            kind=info.kind,
            state=info.state,
            phase=info.phase,
            progress=info.progress,
            tasks={
                "pending": counts.pending,
                "running": counts.running,
                "succeeded": counts.succeeded,
                "failed": counts.failed,
                "cancelled": counts.cancelled,
            },
            local_tasks=info.local_tasks,
            located_tasks=info.located_tasks,
            rerun_tasks=info.rerun_tasks,
            backup_tasks=info.backup_tasks,
            error=info.error,
            eta_s=info.eta_s,
            created=datetime.fromtimestamp(info.created, UTC),
            started=when(info.started),
            finished=when(info.finished),
        )


@dataclass(frozen=True)
class TaskLog:
    """What a failed task left behind."""

    phase: str
    index: int
    state: str
    worker_id: str
    attempts: int
    error: str
    stderr: str


def function_ref(fn: Any, what: str) -> Any:
    """Validate a function argument: a callable or a 'package.module:function' string."""
    if isinstance(fn, str):
        module, sep, attr = fn.partition(":")
        if not sep or not module or not attr:
            raise InvalidArgument(
                f"{what} must be a callable or 'package.module:function', got {fn!r}"
            )
        return fn
    if not callable(fn):
        raise InvalidArgument(f"{what} must be a callable or 'package.module:function'")
    return fn


def dumps(obj: Any, what: str) -> bytes:
    try:
        return bytes(cloudpickle.dumps(obj))
    except Exception as exc:
        raise InvalidArgument(f"cannot serialize {what}: {exc}") from None


def call_job(
    fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], options: JobOptions
) -> pb.SubmitJobRequest:
    options.check()
    ref = function_ref(fn, "fn")
    return _request(
        "submit",
        {"fn": ref},
        options,
        [
            pb.TaskSpec(
                kind="call",
                payload=dumps((args, kwargs), "arguments"),
                progress_total=1,
                cpus=options.cpus,
                memory_bytes=options.memory,
            )
        ],
        name=getattr(fn, "__name__", str(fn)),
    )


def map_job(
    fn: Any, items: Iterable[Any], chunksize: int | None, options: JobOptions
) -> tuple[pb.SubmitJobRequest, int]:
    options.check()
    ref = function_ref(fn, "fn")
    if chunksize is not None and (not isinstance(chunksize, int) or chunksize < 1):
        raise InvalidArgument("chunksize must be None or an integer >= 1")
    values = list(items)
    size = chunksize or 1
    chunks = [values[i : i + size] for i in range(0, len(values), size)]
    tasks = [
        pb.TaskSpec(
            kind="map_chunk",
            payload=dumps(chunk, "map items"),
            progress_total=len(chunk),
            cpus=options.cpus,
            memory_bytes=options.memory,
        )
        for chunk in chunks
    ]
    return _request("map", {"fn": ref}, options, tasks, name=getattr(fn, "__name__", str(fn))), len(
        values
    )


def map_reduce_job(
    mapper: Any,
    reducer: Any,
    inputs: list[tuple[str, str]],
    partitions: int,
    output: tuple[str, str] | None,
    combiner: Any,
    options: JobOptions,
) -> pb.SubmitJobRequest:
    options.check()
    if not isinstance(partitions, int) or not 1 <= partitions <= MAX_PARTITIONS:
        raise InvalidArgument(f"partitions must be an integer between 1 and {MAX_PARTITIONS}")
    if output is not None:
        if not (isinstance(output, tuple) and len(output) == 2 and isinstance(output[1], str)):
            raise InvalidArgument("output must be None or a (bucket, prefix) pair")
        check_bucket_name(output[0])
    if not inputs:
        raise InvalidArgument("map_reduce needs at least one input object")
    program = {
        "mapper": function_ref(mapper, "mapper"),
        "reducer": function_ref(reducer, "reducer"),
        "combiner": function_ref(combiner, "combiner") if combiner is not None else None,
        "partitions": partitions,
        "output": output,
    }
    tasks = [
        pb.TaskSpec(
            kind="mr_map",
            input_bucket=b,
            input_key=k,
            cpus=options.cpus,
            memory_bytes=options.memory,
        )
        for b, k in inputs
    ]
    request = _request(
        "map_reduce", program, options, tasks, name=getattr(mapper, "__name__", "map_reduce")
    )
    request.partitions = partitions
    request.reduce_cpus = options.cpus
    request.reduce_memory_bytes = options.memory
    return request


def _request(
    kind: str, program: dict[str, Any], options: JobOptions, tasks: list[pb.TaskSpec], name: str
) -> pb.SubmitJobRequest:
    return pb.SubmitJobRequest(
        name=options.name or name,
        kind=kind,
        program=dumps(program, "the job's functions"),
        tasks=tasks,
        policy=options.policy,
        max_attempts=options.max_attempts,
        retries=options.retries,
        speculation=options.speculation,
    )


def check_inputs(inputs: Any) -> tuple[str, str] | list[tuple[str, str]]:
    """inputs: a (bucket, prefix) pair or a list of (bucket, key) pairs."""
    if isinstance(inputs, tuple) and len(inputs) == 2 and all(isinstance(p, str) for p in inputs):
        check_bucket_name(inputs[0])
        return inputs
    if isinstance(inputs, list) and inputs:
        for item in inputs:
            if not (isinstance(item, tuple) and len(item) == 2):
                raise InvalidArgument("inputs must be (bucket, prefix) or a list of (bucket, key)")
            check_bucket_name(item[0])
            check_key(item[1])
        return inputs
    raise InvalidArgument("inputs must be (bucket, prefix) or a non-empty list of (bucket, key)")


class AsyncJob:
    """A submitted job (asynchronous handle)."""

    def __init__(
        self,
        job_id: str,
        kind: str,
        call: JobsCall,
        client: Any,
        output: tuple[str, str] | None = None,
        partitions: int = 0,
    ) -> None:
        self.id = job_id
        self.kind = kind
        self._call = call
        self._client = client
        self._output = output
        self._partitions = partitions
        self._long_poll = True  # False once the coordinator turned out not to have WaitJob

    def __repr__(self) -> str:
        return f"AsyncJob({self.id!r}, kind={self.kind!r})"

    async def status(self) -> JobStatus:
        """State, task counts per state and progress."""
        reply = await self._call("GetJob", pb.GetJobRequest(job_id=self.id))
        return JobStatus.from_proto(reply.job)

    async def progress(self) -> float:
        """sum(S_i) / sum(S_max_i) over the job's tasks, in [0, 1]."""
        return (await self.status()).progress

    async def wait(self, timeout: float | None = None) -> JobStatus:
        """Wait until the job ends; TimeoutError after `timeout` seconds."""
        return JobStatus.from_proto((await self._wait(timeout, include_results=False)).job)

    async def _wait(self, timeout: float | None, *, include_results: bool) -> pb.WaitJobResponse:
        """WaitJob long polls until the job ends (the answer comes as soon as it does), with
        the results inline when asked and small enough; polls GetJob on older coordinators."""
        deadline = None if timeout is None else time.monotonic() + timeout
        budget = min(WAIT_POLL_S, getattr(self._client, "rpc_timeout_s", 30.0) / 2)
        delay = 0.005
        while True:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            poll = budget if left is None else min(left, budget)
            if self._long_poll:
                try:
                    reply: pb.WaitJobResponse = await self._call(
                        "WaitJob",
                        pb.WaitJobRequest(
                            job_id=self.id, timeout_s=poll, include_results=include_results
                        ),
                    )
                except ShoalError as exc:
                    if type(exc) is not ShoalError or not str(exc).startswith("unimplemented"):
                        raise
                    self._long_poll = False
                    continue
            else:
                status = await self._call("GetJob", pb.GetJobRequest(job_id=self.id))
                reply = pb.WaitJobResponse(job=status.job)
                if reply.job.state not in TERMINAL and poll > 0:
                    await asyncio.sleep(min(delay, poll))
                    delay = min(delay * 1.5, 0.25)
            if reply.job.state in TERMINAL:
                return reply
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {self.id} still {reply.job.state} after {timeout}s")

    async def _check(
        self, timeout: float | None, *, include_results: bool = False
    ) -> pb.WaitJobResponse:
        reply = await self._wait(timeout, include_results=include_results)
        status = JobStatus.from_proto(reply.job)
        if status.state == "succeeded":
            return reply
        if status.state == "cancelled":
            raise JobCancelled(f"job {self.id} was cancelled", job_id=self.id)
        raise JobFailed(
            f"job {self.id} failed: {status.error}", job_id=self.id, remote_traceback=status.error
        )

    async def _results(self) -> list[pb.TaskResult]:
        reply = await self._call("GetTaskResults", pb.GetTaskResultsRequest(job_id=self.id))
        return sorted(reply.tasks, key=lambda t: t.index)

    async def result(self, timeout: float | None = None) -> Any:
        """submit: the return value; map: the list of results in input order; map_reduce: an
        async iterator of (key, value) over all partitions. Raises JobFailed with the remote
        traceback if a task failed."""
        reply = await self._check(timeout, include_results=self.kind != "map_reduce")
        if self.kind == "map_reduce":
            return self._pairs()
        if reply.results_included:
            tasks = sorted(reply.tasks, key=lambda t: t.index)
        else:
            tasks = await self._results()
        if self.kind == "submit":
            return cloudpickle.loads(tasks[0].result)
        out: list[Any] = []
        for task in tasks:
            out.extend(cloudpickle.loads(task.result))
        return out

    async def _pairs(self) -> AsyncIterator[tuple[Any, Any]]:
        async for batch in self._pair_batches():
            for pair in batch:
                yield pair

    async def _pair_batches(self) -> AsyncIterator[list[tuple[Any, Any]]]:
        """A map-reduce job's (key, value) pairs, one list per reduce partition (the sync
        client crosses threads once per partition, not once per pair)."""
        for partition in range(self._partitions or (await self._partition_count())):
            if self._output is not None:
                bucket, prefix = self._output
                data = await self._client.get(bucket, output_key(prefix, partition))
                records = map(json.loads, data.decode().splitlines())
                yield [(record["key"], record["value"]) for record in records]
            else:
                try:
                    data = await self._client.get(
                        INTERNAL_BUCKET, internal_output_key(self.id, partition)
                    )
                except NotFound:
                    continue
                yield list(unpack_intermediate(data))

    async def _partition_count(self) -> int:
        return sum(1 for t in await self._results() if t.phase == "reduce")

    async def cancel(self) -> JobStatus:
        """Stop the job: pending tasks never start, running ones are killed."""
        reply = await self._call("CancelJob", pb.CancelJobRequest(job_id=self.id))
        return JobStatus.from_proto(reply.job)

    async def logs(self) -> list[TaskLog]:
        """Errors, tracebacks and stderr of the job's failed task attempts."""
        reply = await self._call(
            "GetTaskResults", pb.GetTaskResultsRequest(job_id=self.id, failed_only=True)
        )
        return [
            TaskLog(t.phase, t.index, t.state, t.worker_id, t.attempts, t.error, t.stderr)
            for t in reply.tasks
        ]
