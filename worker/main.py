"""`shoal-worker`: registers with the coordinator, leases tasks, runs them in its slots, and
heartbeats their progress (which renews the leases)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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

IDLE_POLL_MIN_S = 0.005
IDLE_POLL_MAX_S = 0.25
COMPLETE_RETRY_S = 60.0


@dataclass
class Running:
    """An attempt this worker is running."""

    assignment: pb.Assignment
    done: int = 0
    total: int = 0
    cancelled: bool = False
    slot: Slot | None = None

    @property
    def key(self) -> tuple[str, str, int, int]:
        a = self.assignment
        return (a.job_id, a.phase, a.index, a.attempt)


class Worker:
    """The worker daemon's state and loops."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.worker_id = config.worker_id or f"{config.host_id}-w{os.getpid()}"
        self.transport = Transport.from_config(config)
        self.channel = self.transport.channel(config.coordinator)
        self.stub = pb_grpc.JobsStub(self.channel)
        self.heartbeat_interval_s = 1.0
        self.running: dict[tuple[str, str, int, int], Running] = {}
        self.slots: asyncio.Queue[Slot] = asyncio.Queue()
        self.all_slots: list[Slot] = []
        self.threads = ThreadPoolExecutor(max_workers=config.slots, thread_name_prefix="slot")
        self.changed = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.completed = 0

    async def start_slots(self) -> None:
        slots = await asyncio.to_thread(
            lambda: [
                Slot(self.config.coordinator, self.transport) for _ in range(self.config.slots)
            ]
        )
        for slot in slots:
            self.all_slots.append(slot)
            self.slots.put_nowait(slot)

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
                log.info("task cancelled", extra={"job_id": stop.job_id, "task": stop.index})

    def _free(self) -> tuple[float, int]:
        cpus = self.config.slots - sum(r.assignment.cpus or 1.0 for r in self.running.values())
        memory = self.config.memory - sum(r.assignment.memory_bytes for r in self.running.values())
        return cpus, max(memory, 0)

    async def lease_loop(self, shutdown: asyncio.Event) -> None:
        idle = IDLE_POLL_MIN_S
        while not shutdown.is_set():
            cpus, memory = self._free()
            got = 0
            if cpus >= 1 - 1e-9:
                try:
                    reply = await self.stub.LeaseTasks(
                        pb.LeaseTasksRequest(
                            worker_id=self.worker_id,
                            free_cpus=cpus,
                            free_memory_bytes=memory,
                            max_tasks=max(int(cpus), 1),
                        ),
                        timeout=self.config.rpc_timeout,
                    )
                    for assignment in reply.tasks:
                        self._start(assignment)
                    got = len(reply.tasks)
                except grpc.aio.AioRpcError as exc:
                    log.debug("lease failed", extra={"error": exc.code().name})
            if got:
                idle = IDLE_POLL_MIN_S
                continue
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout=idle)
            idle = min(idle * 2, IDLE_POLL_MAX_S)

    def _start(self, assignment: pb.Assignment) -> None:
        running = Running(assignment, total=assignment.progress_total)
        self.running[running.key] = running
        task = asyncio.create_task(self._run(running))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, running: Running) -> None:
        a = running.assignment
        message: dict[str, Any] = {
            "job_id": a.job_id,
            "index": a.index,
            "phase": a.phase,
            "kind": a.kind,
            "program": a.program,
            "payload": a.payload,
            "progress_total": a.progress_total,
            "map_tasks": a.map_tasks,
            "input_bucket": a.input_bucket,
            "input_key": a.input_key,
        }

        def on_progress(done: int, total: int) -> None:
            running.done, running.total = done, total or running.total

        slot = await self.slots.get()
        running.slot = slot
        started, died = asyncio.get_running_loop().time(), False
        try:
            try:
                reply = await asyncio.get_running_loop().run_in_executor(
                    self.threads, slot.run, message, on_progress
                )
                # The slot is idle from here on: a late cancel must not kill its process.
                running.slot = None
            except SlotDied as exc:
                running.slot, died = None, True
                reply = {
                    "ok": False,
                    "result": b"",
                    "error": str(exc),
                    "user_error": False,
                    "partition_bytes": [],
                    "stderr": "",
                }
            worker_metrics.record_task(
                worker_metrics.outcome_of(reply, cancelled=running.cancelled, died=died),
                asyncio.get_running_loop().time() - started,
            )
            if not running.cancelled:
                await self._complete(a, reply)
        finally:
            running.slot = None
            self.slots.put_nowait(slot)
            self.running.pop(running.key, None)
            self.changed.set()

    async def _complete(self, a: pb.Assignment, reply: dict[str, Any]) -> None:
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
        )
        deadline = asyncio.get_running_loop().time() + COMPLETE_RETRY_S
        delay = 0.1
        while True:
            try:
                await self.stub.CompleteTask(request, timeout=self.config.rpc_timeout)
                self.completed += 1
                return
            except grpc.aio.AioRpcError as exc:
                if asyncio.get_running_loop().time() > deadline:
                    log.error(
                        "could not report a finished task",
                        extra={"job_id": a.job_id, "error": exc.code().name},
                    )
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def close(self, grace_s: float) -> None:
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=grace_s)
        for running in list(self.running.values()):
            running.cancelled = True
            if running.slot is not None:
                running.slot.kill()
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=5)
        for slot in self.all_slots:
            await asyncio.to_thread(slot.close)
        self.threads.shutdown(wait=False, cancel_futures=True)
        await self.channel.close()


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


async def serve(config: WorkerConfig, shutdown: asyncio.Event) -> None:
    """Run the worker until `shutdown`, then let running tasks finish (up to the grace)."""
    worker = Worker(config)
    metrics_address = serve_metrics(config.metrics_listen, "worker")
    worker_metrics.install(
        config.slots,
        lambda: max(len(worker.all_slots) - worker.slots.qsize(), 0),
        lambda: len(worker.running),
    )
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
            tasks.create_task(worker.lease_loop(shutdown))
    finally:
        if health:
            await health.stopping()
        await worker.close(config.shutdown_grace)
        if health_server is not None:
            await health_server.stop(1.0)
    log.info("stopped", extra={"worker_id": worker.worker_id, "tasks_completed": worker.completed})


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
