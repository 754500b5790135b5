"""Task slots: one long-lived child process per slot, fed over a pipe.

A task runs in its slot's process, so it can use a whole core and crash without touching the
worker: if the process dies (a segfault, os._exit, the OOM killer) the call raises `SlotDied`
and the slot starts a fresh process. Cancelling a task kills its process the same way.
Processes are started with `spawn`, never `fork`, because the worker runs gRPC threads.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
from collections.abc import Callable
from typing import Any

from shoal.common.transport import Transport
from shoal.worker.child import slot_main

_CTX = multiprocessing.get_context("spawn")


class SlotDied(Exception):
    """The slot's process exited while running a task."""


class Slot:
    """One task process."""

    def __init__(self, coordinator: str, transport: Transport | None = None) -> None:
        self.coordinator = coordinator
        self.transport = transport or Transport()
        self._start()

    def _start(self) -> None:
        parent, child = _CTX.Pipe()
        self.process = _CTX.Process(
            target=slot_main, args=(child, self.coordinator, self.transport), daemon=True
        )
        self.process.start()
        child.close()
        self.conn: multiprocessing.connection.Connection = parent

    def run(self, task: dict[str, Any], on_progress: Callable[[int, int], None]) -> dict[str, Any]:
        """Run a task to completion (blocking; call from a thread)."""
        try:
            self.conn.send(task)
            while True:
                message = self.conn.recv()
                if message[0] == "progress":
                    on_progress(message[1], message[2])
                else:
                    return message[1]  # type: ignore[no-any-return]
        except (EOFError, OSError, BrokenPipeError):
            self.process.join(timeout=5)
            code = self.process.exitcode
            self.conn.close()
            self._start()
            raise SlotDied(f"task process died (exit code {code})") from None

    def kill(self) -> None:
        """Stop the running task now; `run` raises SlotDied and the slot restarts."""
        if self.process.is_alive():
            self.process.kill()

    def close(self) -> None:
        self.conn.close()
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(timeout=5)
