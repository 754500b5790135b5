"""Task slots: one long-lived child process per slot, fed over a pipe.

A task runs in its slot's process, so it can use a whole core and crash without touching the
worker: if the process dies (a segfault, os._exit, the OOM killer) the call raises `SlotDied`
and the slot starts a fresh process. Cancelling a task kills its process the same way.
Processes are started with `spawn`, never `fork`, because the worker runs gRPC threads.

A job's program (its pickled functions) crosses the pipe once per slot process: the child
keeps up to MAX_SLOT_PROGRAMS of them unpickled, by job id, and the slot remembers which.
The worker's event loop talks to the pipe directly (it waits for the child's messages with
`add_reader`), with no thread hop per task.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
from collections.abc import Callable
from typing import Any

from shoal.common.transport import Transport
from shoal.worker.child import slot_main

_CTX = multiprocessing.get_context("spawn")
MAX_SLOT_PROGRAMS = 8


class SlotDied(Exception):
    """The slot's process exited while running a task."""


class Slot:
    """One task process."""

    def __init__(
        self,
        coordinator: str,
        transport: Transport | None = None,
        local_node_dirs: tuple[str, ...] = (),
    ) -> None:
        self.coordinator = coordinator
        self.transport = transport or Transport()
        self.local_node_dirs = local_node_dirs
        self._start()

    def _start(self) -> None:
        self.programs: set[str] = set()  # job ids whose program the process holds
        parent, child = _CTX.Pipe()
        self.process = _CTX.Process(
            target=slot_main,
            args=(child, self.coordinator, self.transport, self.local_node_dirs),
            daemon=True,
        )
        self.process.start()
        child.close()
        self.conn: multiprocessing.connection.Connection = parent

    async def run(
        self, task: dict[str, Any], program: bytes, on_progress: Callable[[int, int], None]
    ) -> dict[str, Any]:
        """Run a task of the job whose pickled program is `program` to completion. The program
        is sent only if the process does not hold it. Raises SlotDied if the process dies
        (or is killed) meanwhile; the slot then starts a fresh one."""
        job_id = task["job_id"]
        task = {**task, "program": None, "reset_programs": False}
        if job_id not in self.programs:
            task["program"] = program
            if len(self.programs) >= MAX_SLOT_PROGRAMS:
                task["reset_programs"] = True
                self.programs.clear()
        try:
            self.conn.send(task)
            self.programs.add(job_id)
            while True:
                await self._readable()
                message = self.conn.recv()
                if message[0] == "progress":
                    on_progress(message[1], message[2])
                    continue
                reply: dict[str, Any] = message[1]
                if not reply.get("has_program", True):  # it could not be unpickled
                    self.programs.discard(job_id)
                return reply
        except (EOFError, OSError, BrokenPipeError):
            code = await asyncio.to_thread(self._restart)
            raise SlotDied(f"task process died (exit code {code})") from None

    async def _readable(self) -> None:
        """Wait until the child's next message (or its end) can be read."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        fd = self.conn.fileno()
        loop.add_reader(fd, _resolve, ready)
        try:
            await ready
        finally:
            loop.remove_reader(fd)

    def _restart(self) -> int | None:
        """Reap the dead process and start a fresh one; returns the old one's exit code."""
        self.process.join(timeout=5)
        code = self.process.exitcode
        self.conn.close()
        self._start()
        return code

    def kill(self) -> None:
        """Stop the running task now; `run` raises SlotDied and the slot restarts."""
        if self.process.is_alive():
            self.process.kill()

    def close(self) -> None:
        self.conn.close()
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(timeout=5)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
