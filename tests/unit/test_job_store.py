"""Group commit of job state (JobWriter over a real JobStore) and the Jobs service's long polls
and durability rules, in process: no cluster, no gRPC server."""

from __future__ import annotations

import asyncio
import functools
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from shoal.coordinator.config import CoordinatorConfig
from shoal.coordinator.job_store import JobStore, JobWriter
from shoal.coordinator.jobs_service import JobsServicer
from shoal.coordinator.membership import Membership
from shoal.coordinator.scheduler import Job, Task
from shoal.rpc.v1 import jobs_pb2 as pb

cloudpickle.register_pickle_by_value(sys.modules[__name__])


class Recorder(JobStore):
    """A JobStore that records each commit: (durable, job rows, job updates, task rows)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.commits: list[tuple[str, int, int, int]] = []

    def write(self, jobs: Any, job_updates: Any, tasks: Any, *, durable: bool) -> None:
        super().write(jobs, job_updates, tasks, durable=durable)
        kind = "fsynced" if durable else "written"
        self.commits.append((kind, len(jobs), len(job_updates), len(tasks)))

    def sync(self) -> None:
        super().sync()
        self.commits.append(("sync", 0, 0, 0))


@pytest.fixture
def executor() -> Any:
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metadata")
    yield pool
    pool.shutdown(wait=True)


def db_of(pool: ThreadPoolExecutor) -> Any:
    async def db(fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, functools.partial(fn, *args))

    return db


def stored(path: Path) -> dict[str, Job]:
    """The jobs as the database holds them (what a restarted coordinator would load)."""
    store = JobStore(path)
    try:
        return {job.job_id: job for job in store.load()}
    finally:
        store.close()


def a_job(job_id: str, tasks: int) -> Job:
    job = Job(job_id, job_id, "map", b"program", 0, "locality", 3, 0, False, 1.0)
    for i in range(tasks):
        task = Task(job_id, "tasks", i, "call", b"", 1)
        job.tasks[task.key] = task
    return job


async def test_changes_of_one_turn_share_one_transaction(tmp_path: Path, executor: Any) -> None:
    store = Recorder(tmp_path / "db")
    writer = JobWriter(store, db_of(executor))
    jobs = [a_job(f"j{i}", 3) for i in range(20)]
    await asyncio.gather(*(writer.save(job, list(job.tasks.values())) for job in jobs))
    assert store.commits == [("fsynced", 20, 0, 60)]
    # Unchanged job rows (with their programs) are not written again; changed ones updated.
    jobs[0].tasks[("j0", "tasks", 0)].state = "running"
    await writer.save(jobs[0], [jobs[0].tasks[("j0", "tasks", 0)]])
    jobs[1].state = "running"
    await writer.save(jobs[1], [])
    assert store.commits[1:] == [("fsynced", 0, 0, 1), ("fsynced", 0, 1, 0)]
    loaded = stored(tmp_path / "db")
    assert loaded["j0"].tasks[("j0", "tasks", 0)].state == "running"
    assert loaded["j1"].state == "running"
    assert len(loaded) == 20


async def test_leases_are_released_before_the_fsync(tmp_path: Path, executor: Any) -> None:
    store = Recorder(tmp_path / "db")
    writer = JobWriter(store, db_of(executor))
    job = a_job("j", 2)
    task = job.tasks[("j", "tasks", 0)]
    order: list[str] = []

    async def lease() -> None:
        await writer.save(job, [task], durable=False)
        order.append("lease answered")

    async def submit() -> None:
        await writer.save(job, list(job.tasks.values()))
        order.append("submit answered")

    await asyncio.gather(submit(), lease())
    assert store.commits == [("written", 1, 0, 2), ("sync", 0, 0, 0)]
    assert order == ["lease answered", "submit answered"]
    # Written-only batches are never fsynced on their own.
    await writer.save(job, [task], durable=False)
    assert store.commits[-1] == ("written", 0, 0, 1)


async def test_barrier_waits_for_what_was_marked(tmp_path: Path, executor: Any) -> None:
    store = Recorder(tmp_path / "db")
    writer = JobWriter(store, db_of(executor))
    job = a_job("j", 1)
    writer.mark(job, list(job.tasks.values()), durable=True)
    await writer.barrier()
    assert store.commits == [("fsynced", 1, 0, 1)]
    await writer.barrier()  # nothing pending: returns at once
    assert len(store.commits) == 1


async def test_a_failed_transaction_is_reported_and_written_again(
    tmp_path: Path, executor: Any
) -> None:
    store = Recorder(tmp_path / "db")
    writer = JobWriter(store, db_of(executor))
    job = a_job("j", 1)
    failing = store.write

    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    store.write = broken  # type: ignore[method-assign]
    with pytest.raises(OSError, match="disk full"):
        await writer.save(job, list(job.tasks.values()))
    store.write = failing  # type: ignore[method-assign]
    other = a_job("k", 1)
    await writer.save(other, list(other.tasks.values()))
    assert set(stored(tmp_path / "db")) == {"j", "k"}


# The service -------------------------------------------------------------------------------


def double(x: int) -> int:
    return 2 * x


class FakeContext:
    async def abort(self, code: Any, details: str, trailing_metadata: Any = ()) -> None:
        raise AssertionError(f"aborted: {code} {details}")


@pytest.fixture
async def service(tmp_path: Path, executor: Any) -> Any:
    store = Recorder(tmp_path / "db")
    servicer = JobsServicer(
        CoordinatorConfig(),
        None,  # type: ignore[arg-type]  # submit/map jobs never touch the metadata store
        store,
        Membership(10, 30, 900),
        db_of(executor),
    )
    await servicer.load()
    await servicer.RegisterWorker(
        pb.RegisterWorkerRequest(worker_id="w", host_id="h", cpus=2, protocol_version=1),
        FakeContext(),
    )
    yield servicer
    store.close()


def submit_request(items: list[int]) -> pb.SubmitJobRequest:
    return pb.SubmitJobRequest(
        name="double",
        kind="map",
        program=cloudpickle.dumps({"fn": double}),
        tasks=[
            pb.TaskSpec(kind="map_chunk", payload=cloudpickle.dumps([x]), progress_total=1)
            for x in items
        ],
    )


def lease_request(**fields: Any) -> pb.LeaseTasksRequest:
    return pb.LeaseTasksRequest(worker_id="w", free_cpus=2, max_tasks=2, **fields)


def completions(assignments: Any) -> list[pb.CompleteTaskRequest]:
    return [
        pb.CompleteTaskRequest(
            job_id=a.job_id,
            phase=a.phase,
            index=a.index,
            attempt=a.attempt,
            ok=True,
            result=cloudpickle.dumps([2 * a.index]),
            run_s=0.001,
        )
        for a in assignments
    ]


async def until(predicate: Any, what: str, timeout_s: float = 5.0) -> None:
    """Let the event loop run until `predicate()` holds; fail after `timeout_s`."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0)  # one turn of the loop, not a timed wait


async def complete(service: Any, assignments: Any) -> list[bool]:
    reply = await service.CompleteTasks(
        pb.CompleteTasksRequest(worker_id="w", tasks=completions(assignments)), FakeContext()
    )
    return list(reply.accepted)


async def test_a_waiting_lease_is_answered_when_work_arrives(service: Any) -> None:
    context = FakeContext()
    lease = asyncio.ensure_future(service.LeaseTasks(lease_request(wait_s=2.0), context))
    await until(lambda: service._lease_waiters, "the lease to wait for work")
    assert not lease.done(), "no work yet: the lease waits"
    await service.SubmitJob(submit_request([0]), context)
    reply = await lease
    # Had it not been woken, it would have returned empty after wait_s.
    assert [a.index for a in reply.tasks] == [0]
    unknown = await service.LeaseTasks(pb.LeaseTasksRequest(worker_id="x", wait_s=2.0), context)
    assert unknown.reregister


async def test_completions_are_durable_when_acknowledged(service: Any, tmp_path: Path) -> None:
    context = FakeContext()
    job_id = (await service.SubmitJob(submit_request([0, 1, 2]), context)).job_id
    reply = await service.LeaseTasks(lease_request(), context)
    assert len(reply.tasks) == 2
    durable = stored(tmp_path / "db")[job_id]
    assert {t.state for t in durable.tasks.values()} == {"running", "pending"}, (
        "leases are written before they are answered"
    )
    assert await complete(service, reply.tasks) == [True, True]
    durable = stored(tmp_path / "db")[job_id]
    assert sorted(t.index for t in durable.tasks.values() if t.state == "succeeded") == [0, 1]
    # A completion sent again (its acknowledgement was lost) changes nothing.
    assert await complete(service, reply.tasks[:1]) == [False]


async def test_wait_job_returns_when_the_job_ends_with_results(service: Any) -> None:
    context = FakeContext()
    job_id = (await service.SubmitJob(submit_request([0, 1]), context)).job_id
    early = await service.WaitJob(pb.WaitJobRequest(job_id=job_id, timeout_s=0.01), context)
    assert early.job.state == "pending"
    assert not early.results_included
    waiting = asyncio.ensure_future(
        service.WaitJob(
            pb.WaitJobRequest(job_id=job_id, timeout_s=5.0, include_results=True), context
        )
    )
    leased = await service.LeaseTasks(lease_request(), context)
    await until(lambda: job_id in service._ended, "WaitJob to wait for the job's end")
    assert not waiting.done()
    await complete(service, leased.tasks)
    reply = await asyncio.wait_for(waiting, 4.0)
    assert reply.job.state == "succeeded"
    assert reply.results_included
    assert [cloudpickle.loads(t.result) for t in reply.tasks] == [[0], [2]]


async def test_program_travels_once_per_reply_and_not_to_workers_holding_it(
    service: Any,
) -> None:
    context = FakeContext()
    job_id = (await service.SubmitJob(submit_request(list(range(6))), context)).job_id
    reply = await service.LeaseTasks(lease_request(program_once=True), context)
    assert [bool(a.program) for a in reply.tasks] == [True, False]
    await complete(service, reply.tasks)
    reply = await service.LeaseTasks(lease_request(cached_programs=[job_id]), context)
    assert [bool(a.program) for a in reply.tasks] == [False, False]
    await complete(service, reply.tasks)
    reply = await service.LeaseTasks(lease_request(), context)  # an older worker
    assert [bool(a.program) for a in reply.tasks] == [True, True]


async def test_completions_ride_on_the_next_lease(service: Any, tmp_path: Path) -> None:
    context = FakeContext()
    job_id = (await service.SubmitJob(submit_request([0, 1, 2]), context)).job_id
    first = await service.LeaseTasks(lease_request(), context)
    reply = await service.LeaseTasks(
        lease_request(completed=completions(first.tasks), wait_s=1.0), context
    )
    assert list(reply.accepted) == [True, True]
    assert [a.index for a in reply.tasks] == [2], "the freed cpus were leased in the same call"
    durable = stored(tmp_path / "db")[job_id]
    assert sorted(t.index for t in durable.tasks.values() if t.state == "succeeded") == [0, 1]
    # Carried again (the reply was lost): not accepted twice; the last task completes alone.
    again = await service.LeaseTasks(
        lease_request(completed=completions([*first.tasks, *reply.tasks])), context
    )
    assert list(again.accepted) == [False, False, True]
    assert (await service.GetJob(pb.GetJobRequest(job_id=job_id), context)).job.state == (
        "succeeded"
    )


async def test_single_completion_rpc_still_works(service: Any, tmp_path: Path) -> None:
    """Workers from before CompleteTasks report one task per CompleteTask call."""
    context = FakeContext()
    job_id = (await service.SubmitJob(submit_request([0]), context)).job_id
    (assignment,) = (await service.LeaseTasks(lease_request(), context)).tasks
    (request,) = completions([assignment])
    reply = await service.CompleteTask(request, context)
    assert reply.accepted
    assert stored(tmp_path / "db")[job_id].state == "succeeded"
