"""MetadataThread: the coordinator's one SQLite thread, with group commit.

Every MetadataStore and JobStore call of the coordinator runs here, one at a time and in the
order the event loop asked for them, which serialises transactions and keeps fsyncs off the
loop. Calls that arrive while the thread is busy queue up; when it frees, it takes every
queued call (up to `max_batch`) and runs consecutive calls of `@shares_commit` methods in one
transaction (`MetadataStore.run_together`): eight small puts waiting on the database cost one
fsync of the WAL instead of eight. A caller's result is handed back only after the commit
that covers it is durable, so a put is acknowledged exactly as durable as before.

Other calls (JobStore's own group-committing writes, scans, the health recount) run alone, as
before. A call whose caller was cancelled before the thread reached it is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from shoal.coordinator import metrics
from shoal.coordinator.metadata import MetadataStore, may_share_commit

T = TypeVar("T")
log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 64


@dataclass
class _Call:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    delivered: bool = field(default=False)

    def shares_commit_with(self, store: MetadataStore) -> bool:
        return getattr(self.fn, "__self__", None) is store and may_share_commit(self.fn)

    def deliver(self, ok: bool, value: Any) -> None:
        """Hand the outcome to the caller's loop; a loop that has closed meanwhile (its caller
        is gone) is skipped, never an error that could stop the thread."""
        self.delivered = True
        if self.loop.is_closed():
            return
        try:
            self.loop.call_soon_threadsafe(_settle, self.future, ok, value)
        except RuntimeError:  # closed between the check and the call
            pass


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():  # the caller was cancelled meanwhile
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class MetadataThread:
    """Runs metadata calls on one thread; see the module docstring."""

    def __init__(self, store: MetadataStore, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.store = store
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._closing = threading.Lock()  # orders call()'s check-and-put against close()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="metadata", daemon=True)
        self._thread.start()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(*args) on the metadata thread; its result once durably committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._closing:
            if self._closed:
                raise RuntimeError("the metadata thread is closed")
            self._queue.put(_Call(fn, args, future, loop))
        return await future

    def close(self) -> None:
        """Finish the calls already queued, then stop the thread (blocking)."""
        with self._closing:
            if not self._closed:
                self._closed = True
                self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            calls = [first]
            stopping = False
            while len(calls) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                calls.append(more)
            try:
                self._execute([c for c in calls if not c.future.cancelled()])
            except BaseException as exc:  # a bug here must fail these calls, not the thread
                log.exception("metadata thread: calls failed outside their own code")
                for call in calls:
                    if not call.delivered:
                        call.deliver(False, exc)
            if stopping:
                return

    def _execute(self, calls: Sequence[_Call]) -> None:
        """Run `calls` in order: runs of calls that may share a commit together, others alone."""
        group: list[_Call] = []
        for call in calls:
            if call.shares_commit_with(self.store):
                group.append(call)
                continue
            self._run_group(group)
            group = []
            self._run_alone(call)
        self._run_group(group)

    @staticmethod
    def _run_alone(call: _Call) -> None:
        try:
            result = call.fn(*call.args)
        except BaseException as exc:
            call.deliver(False, exc)
        else:
            call.deliver(True, result)

    def _run_group(self, group: Sequence[_Call]) -> None:
        if not group:
            return
        if len(group) == 1:
            metrics.METADATA_COMMIT_CALLS.observe(1)
            self._run_alone(group[0])
            return
        bound = [_bind(call) for call in group]
        try:
            outcomes = self.store.run_together(bound)
        except BaseException as exc:  # the transaction failed as a whole: nothing is kept
            for call in group:
                call.deliver(False, exc)
            return
        metrics.METADATA_COMMIT_CALLS.observe(len(group))
        for call, (ok, value) in zip(group, outcomes, strict=True):
            call.deliver(ok, value)


def _bind(call: _Call) -> Callable[[], Any]:
    return lambda: call.fn(*call.args)
