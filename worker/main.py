"""`shoal-worker`: registers with the coordinator, leases tasks, runs them in its slots, and
heartbeats their progress (which renews the leases).

Leasing is a long poll: while a slot is free the worker keeps one LeaseTasks call open, which
the coordinator answers as soon as there is work (or after LEASE_WAIT_S with none). A lease
brings as many tasks as there are free slots, plus, for jobs of short tasks, up to
PREFETCH_PER_SLOT per slot to queue, so a slot starts its next task the moment the last one
ends instead of after a round trip. Completions ride on the next long poll; the others (those
that finish while a call is out, or while the queue is topped up) go in CompleteTasks calls
(one at a time, in batches). A
job's program comes once per worker (the worker caches it) and once per slot process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc.aio

from shoal.common.errors import ConfigError
from shoal.common.health import Health
from shoal.common.lifecycle import daemon_main, sleep_or_shutdown, write_ready_file
from shoal.common.metrics import ready_fields, serve_metrics
from shoal.common.rpc import PROTOCOL_VERSION
from shoal.common.tls import tls_failure
from shoal.common.transport import Transport
from shoal.rpc.v1 import jobs_pb2 as pb
from shoal.rpc.v1 import jobs_pb2_grpc as pb_grpc
from shoal.worker import metrics as worker_metrics
from shoal.worker.config import WorkerConfig
from shoal.worker.pool import Slot, SlotDied

log = logging.getLogger("shoal.worker")

LEASE_WAIT_S = 1.0  # how long a LeaseTasks long poll may wait for work
IDLE_POLL_MIN_S = 0.005  # backoff when a coordinator answers at once without work
IDLE_POLL_MAX_S = 0.25
PREFETCH_PER_SLOT = 32  # cpus of short tasks queued per slot, at most
COMPLETE_RETRY_S = 60.0
MAX_COMPLETIONS_PER_CALL = 512
MAX_COMPLETION_BYTES = 16 * 1024 * 1024  # results per CompleteTasks call (one always goes)
MAX_CACHED_PROGRAMS = 16
MAX_CACHED_PROGRAM_BYTES = 256 * 1024 * 1024


@dataclass
class Running:
    """An attempt this worker holds: queued for a slot, or running in one."""

    assignment: pb.Assignment
    done: int = 0
    total: int = 0
    cancelled: bool = False
    slot: Slot | None = None

    @property
    def key(self) -> tuple[str, str, int, int]:
        a = self.assignment
        return (a.job_id, a.phase, a.index, a.attempt)

    @property
    def cpus(self) -> float:
        return self.assignment.cpus or 1.0


@dataclass
class Report:
    """A completion waiting to be acknowledged by the coordinator."""

    request: pb.CompleteTaskRequest
    deadline: float
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = len(self.request.result) + len(self.request.error) + len(self.request.stderr)


class Worker:
    """The worker daemon's state and loops."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.worker_id = config.worker_id or f"{config.host_id}-w{os.getpid()}"
        self.transport = Transport.from_config(config)
        self.channel = self.transport.channel(config.coordinator)
        self.stub = pb_grpc.JobsStub(self.channel)
        self.heartbeat_interval_s = 1.0
        # Every attempt held (queued or running), and the queue of those waiting for a slot.
        self.running: dict[tuple[str, str, int, int], Running] = {}
        self.queue: deque[Running] = deque()
        self.idle_slots: list[Slot] = []
        self.all_slots: list[Slot] = []
        # Resolved when a slot frees, tasks arrive or completions are acknowledged.
        self._wake: asyncio.Future[None] | None = None
        self.reports: deque[Report] = deque()  # completions not acknowledged yet
        self.piggyback = True  # completions ride on LeaseTasks (False: an older coordinator)
        self.idle_s = IDLE_POLL_MIN_S
        self.programs: OrderedDict[str, bytes] = OrderedDict()  # job id -> pickled program
        self.prefetching = False  # the coordinator queued tasks here on the last lease
        self.tasks: set[asyncio.Task[None]] = set()
        self.completed = 0
        self.calls = {"lease": 0, "leased": 0, "complete": 0}  # RPCs made, tasks leased

    async def start_slots(self) -> None:
        slots = await asyncio.to_thread(
            lambda: [
                Slot(self.config.coordinator, self.transport, self.config.local_node_dir_list)
                for _ in range(self.config.slots)
            ]
        )
        for slot in slots:
            self.all_slots.append(slot)
            self.idle_slots.append(slot)

    @property
    def busy_slots(self) -> int:
        return len(self.all_slots) - len(self.idle_slots)

    async def register(self, shutdown: asyncio.Event) -> bool:
        delay = 0.1
        while not shutdown.is_set():
            try:
                reply = await self.stub.RegisterWorker(
                    pb.RegisterWorkerRequest(
                        worker_id=self.worker_id,
                        host_id=self.config.host_id,
                        zone=self.config.zone,
                        cpus=self.config.slots,
                        memory_bytes=self.config.memory,
                        protocol_version=PROTOCOL_VERSION,
                    ),
                    timeout=self.config.rpc_timeout,
                )
                self.heartbeat_interval_s = reply.heartbeat_interval_s or 1.0
                log.info(
                    "registered", extra={"worker_id": self.worker_id, "slots": self.config.slots}
                )
                return True
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
                    log.error("the coordinator refused this worker: missing or wrong cluster token")
                elif exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    log.error("coordinator refused this worker: %s", exc.details())
                elif reason := tls_failure(exc.details() or "", tls=self.transport.tls is not None):
                    log.error(
                        "cannot register with the coordinator at %s: %s",
                        self.config.coordinator,
                        reason,
                    )
                else:
                    log.warning("registration failed, retrying", extra={"error": exc.code().name})
            if await sleep_or_shutdown(shutdown, delay):
                return False
            delay = min(delay * 2, 2.0)
        return False

    async def heartbeat_loop(self, shutdown: asyncio.Event) -> None:
        while not await sleep_or_shutdown(shutdown, self.heartbeat_interval_s):
            await self.heartbeat_once(shutdown)

    async def heartbeat_once(self, shutdown: asyncio.Event) -> None:
        progress = [
            pb.TaskProgress(
                job_id=r.assignment.job_id,
                phase=r.assignment.phase,
                index=r.assignment.index,
                attempt=r.assignment.attempt,
                done=r.done,
                total=r.total,
                queued=r.slot is None,
            )
            for r in self.running.values()
        ]
        try:
            reply = await self.stub.WorkerHeartbeat(
                pb.WorkerHeartbeatRequest(worker_id=self.worker_id, running=progress),
                timeout=self.config.rpc_timeout,
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("heartbeat failed", extra={"error": exc.code().name})
            return
        if reply.reregister:
            await self.register(shutdown)
        for stop in reply.cancel:
            running = self.running.get((stop.job_id, stop.phase, stop.index, stop.attempt))
            if running is not None and not running.cancelled:
                running.cancelled = True
                if running.slot is not None:
                    running.slot.kill()
                else:  # still queued: never starts
                    self.running.pop(running.key, None)
                    self._poke()
                log.info("task cancelled", extra={"job_id": stop.job_id, "task": stop.index})

    # Leasing ---------------------------------------------------------------------------------

    def _held(self) -> tuple[float, int]:
        """Cpus and memory of every attempt held (queued or running)."""
        cpus = sum(r.cpus for r in self.running.values())
        memory = sum(r.assignment.memory_bytes for r in self.running.values())
        return cpus, memory

    def _free(self) -> tuple[float, int]:
        cpus, memory = self._held()
        return self.config.slots - cpus, max(self.config.memory - memory, 0)

    def _prefetch_room(self) -> float:
        """Cpus of queued tasks this worker would still take beyond its slots."""
        cpus, _ = self._held()
        return PREFETCH_PER_SLOT * self.config.slots - max(cpus - self.config.slots, 0.0)

    def _lease_wanted(self) -> tuple[float, int, float, float, int] | None:
        """The LeaseTasks call to make now as (free cpus, free memory, prefetch room, wait_s,
        max_tasks), or None: a long poll while a slot is free, a quick top-up of the queue
        while the coordinator prefetches for this worker."""
        cpus, memory = self._free()
        room = self._prefetch_room()
        if cpus >= 1 - 1e-9:
            return cpus, memory, room, LEASE_WAIT_S, int(cpus + 1e-9) + int(room)
        if self.prefetching and room >= PREFETCH_PER_SLOT * self.config.slots / 2:
            return 0.0, memory, room, 0.0, int(room)
        return None

    def _poke(self) -> None:
        """The worker's state changed: let the exchange loop decide again."""
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def exchange_loop(self, shutdown: asyncio.Event) -> None:
        """Lease tasks and report completions until shutdown. At most one LeaseTasks is out,
        carrying the completions ready when it starts, and one CompleteTasks, for those that
        finish while a long poll is out or while no lease is wanted."""
        loop = asyncio.get_running_loop()
        stop = asyncio.ensure_future(shutdown.wait())
        lease: asyncio.Task[None] | None = None
        report: asyncio.Task[bool] | None = None
        try:
            while not shutdown.is_set():
                self._wake = loop.create_future()
                if lease is None and (wanted := self._lease_wanted()) is not None:
                    # Completions ride only on long polls: their reply waits for an fsync,
                    # which must not delay the quick top-ups of a prefetch queue.
                    long_poll = wanted[3] > 0
                    carried = self._take_reports() if self.piggyback and long_poll else []
                    lease = loop.create_task(self._lease(shutdown, wanted, carried))
                if report is None and self.reports:
                    report = loop.create_task(self.report_once())
                calls = [call for call in (lease, report) if call is not None]
                await asyncio.wait([stop, self._wake, *calls], return_when=asyncio.FIRST_COMPLETED)
                if lease is not None and lease.done():
                    _reap(lease)
                    lease = None
                if report is not None and report.done():
                    _reap(report)
                    report = None
        finally:
            stop.cancel()
            for call in (lease, report):
                if call is not None:
                    call.cancel()
                    with contextlib.suppress(BaseException):
                        await call

    async def _lease(
        self,
        shutdown: asyncio.Event,
        wanted: tuple[float, int, float, float, int],
        carried: list[Report],
    ) -> None:
        """One LeaseTasks call: hold what it brings; completions it carried are acknowledged
        or go back to be reported again."""
        cpus, memory, room, wait_s, max_tasks = wanted
        loop = asyncio.get_running_loop()
        asked = loop.time()
        self.calls["lease"] += 1
        try:
            reply = await self.stub.LeaseTasks(
                pb.LeaseTasksRequest(
                    worker_id=self.worker_id,
                    free_cpus=cpus,
                    free_memory_bytes=memory,
                    max_tasks=max_tasks,
                    wait_s=wait_s,
                    prefetch=room,
                    cached_programs=list(self.programs),
                    program_once=True,
                    completed=[r.request for r in carried],
                ),
                timeout=self.config.rpc_timeout + wait_s,
            )
        except grpc.aio.AioRpcError as exc:
            log.debug("lease failed", extra={"error": exc.code().name})
            self._give_back(carried, exc.code().name)
            await self._back_off()
            return
        except asyncio.CancelledError:
            self._give_back(carried, "cancelled")
            raise
        if len(reply.accepted) != len(carried):
            self._give_back(carried, "not acknowledged")
            if not reply.reregister:  # a coordinator that ignores carried completions
                self.piggyback = False
        elif carried:
            self.completed += len(carried)
        if reply.reregister:
            await self.register(shutdown)
            return
        self.calls["leased"] += len(reply.tasks)
        for assignment in reply.tasks:
            self._accept(assignment)
        if len(reply.tasks) > int(cpus + 1e-9):
            self.prefetching = True
        elif wait_s == 0:
            self.prefetching = False
        if reply.tasks:
            self.idle_s = IDLE_POLL_MIN_S
        elif wait_s and loop.time() - asked < wait_s / 2:
            # Answered at once without work (a coordinator without long polls): back off.
            await self._back_off()

    async def _back_off(self) -> None:
        await asyncio.sleep(self.idle_s)
        self.idle_s = min(self.idle_s * 2, IDLE_POLL_MAX_S)

    def _accept(self, assignment: pb.Assignment) -> None:
        """Hold a leased attempt: cache its program, queue it, start it if a slot is free."""
        if assignment.program:
            self._cache_program(assignment.job_id, assignment.program)
        elif assignment.job_id in self.programs:
            self.programs.move_to_end(assignment.job_id)
        running = Running(assignment, total=assignment.progress_total)
        self.running[running.key] = running
        self.queue.append(running)
        self._dispatch()

    def _cache_program(self, job_id: str, program: bytes) -> None:
        self.programs[job_id] = program
        self.programs.move_to_end(job_id)
        in_use = {key[0] for key in self.running}
        size = sum(len(p) for p in self.programs.values())
        for old in list(self.programs):
            if len(self.programs) <= MAX_CACHED_PROGRAMS and size <= MAX_CACHED_PROGRAM_BYTES:
                break
            if old != job_id and old not in in_use:
                size -= len(self.programs.pop(old))

    def _dispatch(self) -> None:
        """Start queued attempts while a slot is idle and the next one fits what runs."""
        while self.queue and self.idle_slots:
            head = self.queue[0]
            if head.cancelled:
                self.queue.popleft()
                self.running.pop(head.key, None)
                continue
            cpus = sum(r.cpus for r in self.running.values() if r.slot is not None)
            memory = sum(r.assignment.memory_bytes for r in self.running.values() if r.slot)
            if cpus + head.cpus > self.config.slots + 1e-9 or (
                head.assignment.memory_bytes
                and memory + head.assignment.memory_bytes > self.config.memory
            ):
                return
            self.queue.popleft()
            head.slot = self.idle_slots.pop()
            task = asyncio.get_running_loop().create_task(self._run(head, head.slot))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _run(self, running: Running, slot: Slot) -> None:
        a = running.assignment
        message: dict[str, Any] = {
            "job_id": a.job_id,
            "index": a.index,
            "phase": a.phase,
            "kind": a.kind,
            "payload": a.payload,
            "progress_total": a.progress_total,
            "map_tasks": a.map_tasks,
            "input_bucket": a.input_bucket,
            "input_key": a.input_key,
        }

        def on_progress(done: int, total: int) -> None:
            running.done, running.total = done, total or running.total

        loop = asyncio.get_running_loop()
        started, died = loop.time(), False
        try:
            program = self.programs.get(a.job_id)
            if program is None:
                reply = _failure(f"the program of job {a.job_id} is not cached on this worker")
            else:
                try:
                    reply = await slot.run(message, program, on_progress)
                    # The slot is idle from here on: a late cancel must not kill its process.
                    running.slot = None
                except SlotDied as exc:
                    running.slot, died = None, True
                    reply = _failure(str(exc))
            worker_metrics.record_task(
                worker_metrics.outcome_of(reply, cancelled=running.cancelled, died=died),
                loop.time() - started,
            )
            if not running.cancelled:
                self._report(a, reply, run_s=loop.time() - started)
        finally:
            running.slot = None
            self.idle_slots.append(slot)
            self.running.pop(running.key, None)
            self._dispatch()
            self._poke()

    # Completions -------------------------------------------------------------------------------

    def _report(
        self, a: pb.Assignment, reply: dict[str, Any], *, returned: bool = False, run_s: float = 0.0
    ) -> None:
        request = pb.CompleteTaskRequest(
            worker_id=self.worker_id,
            job_id=a.job_id,
            index=a.index,
            phase=a.phase,
            attempt=a.attempt,
            ok=reply["ok"],
            result=reply["result"],
            error=reply["error"],
            user_error=reply["user_error"],
            stderr=reply.get("stderr", ""),
            partition_bytes=reply["partition_bytes"],
            returned=returned,
            run_s=run_s,
        )
        deadline = asyncio.get_running_loop().time() + COMPLETE_RETRY_S
        self.reports.append(Report(request, deadline))
        self._poke()

    def _take_reports(self) -> list[Report]:
        """The oldest waiting completions, as many as fit one call."""
        batch: list[Report] = []
        size = 0
        while self.reports and len(batch) < MAX_COMPLETIONS_PER_CALL:
            if batch and size + self.reports[0].size > MAX_COMPLETION_BYTES:
                break
            report = self.reports.popleft()
            batch.append(report)
            size += report.size
        return batch

    def _give_back(self, batch: list[Report], error: str) -> None:
        """Completions a call did not deliver: report them again (until their deadline)."""
        now = asyncio.get_running_loop().time()
        for report in reversed(batch):
            if report.deadline > now:
                self.reports.appendleft(report)
            else:
                log.error(
                    "could not report a finished task",
                    extra={"job_id": report.request.job_id, "error": error},
                )
        if batch:
            self._poke()

    async def report_once(self) -> bool:
        """One CompleteTasks call with the oldest waiting reports; False if it failed."""
        batch = self._take_reports()
        if not batch:
            return True
        self.calls["complete"] += 1
        try:
            await self.stub.CompleteTasks(
                pb.CompleteTasksRequest(worker_id=self.worker_id, tasks=[r.request for r in batch]),
                timeout=self.config.rpc_timeout,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:  # an older coordinator
                for report in batch:
                    await self.stub.CompleteTask(report.request, timeout=self.config.rpc_timeout)
            else:
                self._give_back(batch, exc.code().name)
                await asyncio.sleep(0.1)
                return False
        except asyncio.CancelledError:
            self._give_back(batch, "cancelled")
            raise
        self.completed += len(batch)
        self._poke()  # the coordinator counts those slots as free now
        return True

    async def close(self, grace_s: float) -> None:
        loop = asyncio.get_running_loop()
        # Queued attempts never start: give them back at once instead of letting leases lapse.
        while self.queue:
            queued = self.queue.popleft()
            self.running.pop(queued.key, None)
            if not queued.cancelled:
                self._report(queued.assignment, _failure("not started"), returned=True)
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=grace_s)
        for running in list(self.running.values()):
            running.cancelled = True
            if running.slot is not None:
                running.slot.kill()
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=5)
        deadline = loop.time() + COMPLETE_RETRY_S
        delay = 0.1
        while self.reports and loop.time() < deadline:
            if not await self.report_once():
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        for slot in self.all_slots:
            await asyncio.to_thread(slot.close)
        await self.channel.close()


def _reap(call: asyncio.Task[Any]) -> None:
    """Consume a finished call's outcome (its errors were handled or are logged here)."""
    if not call.cancelled() and call.exception() is not None:
        log.error("worker call failed", exc_info=call.exception())


def _failure(error: str) -> dict[str, Any]:
    """A slot reply for an attempt that could not run (not the task's fault)."""
    return {
        "ok": False,
        "result": b"",
        "error": error,
        "user_error": False,
        "partition_bytes": [],
        "stderr": "",
    }


async def serve_health(
    transport: Transport, config: WorkerConfig
) -> tuple[grpc.aio.Server | None, Health | None, str]:
    """The worker's gRPC server, which serves only the standard health service (NOT_SERVING
    until registered with the coordinator and again once shutting down)."""
    if not config.health_listen:
        return None, None, ""
    server = transport.server()
    health = Health(server, ())
    port = transport.add_port(server, config.health_listen)
    if port == 0:
        raise ConfigError(f"health_listen: cannot listen on {config.health_listen}")
    await server.start()
    return server, health, f"{config.health_listen.rsplit(':', 1)[0]}:{port}"


def warn_missing_local_dirs(config: WorkerConfig) -> None:
    """Log each `local_node_dirs` entry that is not there (yet): its node may start later."""
    for path in config.local_node_dir_list:
        if not os.path.isdir(path):
            log.warning(
                "local node directory does not exist (yet); its shards are read through the "
                "node until it does",
                extra={"path": path},
            )


async def serve(config: WorkerConfig, shutdown: asyncio.Event) -> None:
    """Run the worker until `shutdown`, then let running tasks finish (up to the grace)."""
    warn_missing_local_dirs(config)
    worker = Worker(config)
    metrics_address = serve_metrics(config.metrics_listen, "worker")
    worker_metrics.install(config.slots, lambda: worker.busy_slots, lambda: len(worker.running))
    health_server, health, health_address = await serve_health(worker.transport, config)
    await worker.start_slots()
    try:
        if not await worker.register(shutdown):
            return
        if health:
            await health.serving()
        if config.ready_file:
            ready = {"worker_id": worker.worker_id, **ready_fields(metrics_address)}
            if health_address:
                ready["address"] = health_address
            write_ready_file(config.ready_file, ready)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(worker.heartbeat_loop(shutdown))
            tasks.create_task(worker.exchange_loop(shutdown))
    finally:
        if health:
            await health.stopping()
        await worker.close(config.shutdown_grace)
        if health_server is not None:
            await health_server.stop(1.0)
    log.info(
        "stopped",
        extra={
            "worker_id": worker.worker_id,
            "tasks_completed": worker.completed,
            "lease_calls": worker.calls["lease"],
            "tasks_leased": worker.calls["leased"],
            "complete_calls": worker.calls["complete"],
        },
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `shoal-worker`."""
    return daemon_main(
        WorkerConfig,
        argv,
        prog="shoal-worker",
        description="Shoal worker: runs job tasks in a pool of processes.",
        serve=serve,
    )


if __name__ == "__main__":
    raise SystemExit(main())
