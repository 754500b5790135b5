"""Group commit on the coordinator's metadata thread: calls that queue up while it is busy
share one SQLite transaction, each is undone alone when it fails, a failed transaction
keeps nothing and fails every call in it, and the order of calls is kept."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from shoal.common.errors import NotFound
from shoal.coordinator.metadata import MetadataStore, VersionRow
from shoal.coordinator.metadata_thread import MetadataThread

DEADLINE_S = 10.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MetadataStore]:
    store = MetadataStore(tmp_path / "meta.db")
    store.create_bucket("bkt", 4, 6, 5)
    yield store
    store.close()


def pending(key: str, bucket: str = "bkt") -> VersionRow:
    return VersionRow(f"v-{key}", bucket, key, "pending", 4, 6, 5, 100, 0, "", 0, 0.0)


def committed_keys(path: Path) -> set[str]:
    """What another connection sees: only committed transactions."""
    with sqlite3.connect(path) as other:
        return {row[0] for row in other.execute("SELECT key FROM objects")}


def commits_observed() -> tuple[float, float]:
    """(commits, calls committed) of shareable calls so far."""
    count = REGISTRY.get_sample_value("shoal_metadata_commit_calls_count") or 0.0
    total = REGISTRY.get_sample_value("shoal_metadata_commit_calls_sum") or 0.0
    return count, total


class StatementLog:
    """The SQL statements the store's connection runs (sqlite3's trace callback)."""

    def __init__(self, store: MetadataStore) -> None:
        self.statements: list[str] = []
        store._db.set_trace_callback(self.statements.append)

    def count(self, statement: str) -> int:
        return sum(1 for s in self.statements if s.strip().upper() == statement)


class Blocker:
    """A call that holds the metadata thread until released, so others queue behind it."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> None:
        self.started.set()
        assert self.release.wait(DEADLINE_S), "the test never released the metadata thread"


@contextlib.asynccontextmanager
async def busy_thread(
    store: MetadataStore, max_batch: int = 64
) -> AsyncIterator[tuple[MetadataThread, threading.Event]]:
    """A MetadataThread held busy by a Blocker until the test sets the yielded event, so the
    calls the test makes meanwhile queue up behind it; closed on exit."""
    thread = MetadataThread(store, max_batch)
    blocker = Blocker()
    held = asyncio.create_task(thread.call(blocker))
    try:
        assert await asyncio.to_thread(blocker.started.wait, DEADLINE_S)
        watch_queue(thread)
        yield thread, blocker.release
        await held
    finally:
        blocker.release.set()
        thread.close()


class WatchedQueue:
    """The metadata thread's queue with a condition notified on every put, so a test waits
    for calls to arrive instead of polling."""

    def __init__(self, inner: queue.SimpleQueue[Any]) -> None:
        self.inner = inner
        self.arrived = threading.Condition()

    def put(self, item: Any) -> None:
        with self.arrived:
            self.inner.put(item)
            self.arrived.notify_all()

    def get(self) -> Any:
        return self.inner.get()

    def get_nowait(self) -> Any:
        return self.inner.get_nowait()

    def wait_for(self, count: int) -> bool:
        with self.arrived:
            return self.arrived.wait_for(lambda: self.inner.qsize() >= count, DEADLINE_S)


def watch_queue(thread: MetadataThread) -> None:
    """Install a WatchedQueue; call it while the thread runs a Blocker (not inside get())."""
    thread._queue = WatchedQueue(thread._queue)  # type: ignore[assignment]


async def queued(thread: MetadataThread, count: int) -> None:
    """Wait (bounded) until `count` calls are queued behind the busy thread."""
    watched = thread._queue
    assert isinstance(watched, WatchedQueue), "watch_queue() the thread first"
    assert await asyncio.to_thread(watched.wait_for, count), f"{count} calls never queued"


def test_run_together_undoes_only_the_call_that_failed(
    store: MetadataStore, tmp_path: Path
) -> None:
    outcomes = store.run_together(
        [
            lambda: store.commit_inline(pending("a"), b"A", 0.0),
            lambda: store.commit_inline(pending("x", bucket="missing"), b"X", 0.0),
            lambda: store.commit_inline(pending("b"), b"B", 0.0),
        ]
    )
    assert [ok for ok, _ in outcomes] == [True, False, True]
    assert isinstance(outcomes[1][1], NotFound)
    assert outcomes[0][1].key == "a"
    assert outcomes[2][1].key == "b"
    assert committed_keys(tmp_path / "meta.db") == {"a", "b"}
    # The store is back to one transaction per call afterwards.
    store.commit_inline(pending("c"), b"C", 0.0)
    assert committed_keys(tmp_path / "meta.db") == {"a", "b", "c"}


async def test_calls_queued_while_busy_share_one_commit(
    store: MetadataStore, tmp_path: Path
) -> None:
    visible_when_acknowledged: dict[str, bool] = {}

    def check_durable(key: str) -> Callable[[asyncio.Future[Any]], None]:
        # Runs on the loop as the caller gets its result: another connection must already
        # see the row, i.e. the commit happened before the acknowledgement.
        def check(_: asyncio.Future[Any]) -> None:
            visible_when_acknowledged[key] = key in committed_keys(tmp_path / "meta.db")

        return check

    async with busy_thread(store, max_batch=64) as (thread, release):
        before = commits_observed()
        statements = StatementLog(store)
        puts = []
        for i in range(10):
            put = asyncio.ensure_future(
                thread.call(store.commit_inline, pending(f"k{i}"), b"x", 0.0)
            )
            put.add_done_callback(check_durable(f"k{i}"))
            puts.append(put)
        missing = asyncio.create_task(
            thread.call(store.commit_inline, pending("m", bucket="missing"), b"x", 0.0)
        )
        await queued(thread, 11)
        release.set()
        rows = await asyncio.gather(*puts)
        with pytest.raises(NotFound):
            await missing
        after = commits_observed()
    assert [row.key for row in rows] == [f"k{i}" for i in range(10)]
    assert committed_keys(tmp_path / "meta.db") == {f"k{i}" for i in range(10)}
    assert statements.count("COMMIT") == 1, "eleven queued calls should take one commit"
    assert statements.count("BEGIN IMMEDIATE") == 1
    assert visible_when_acknowledged == {f"k{i}": True for i in range(10)}
    assert after[0] - before[0] == 1
    assert after[1] - before[1] == 11


async def test_batched_inline_puts_share_the_commit_of_other_calls(
    store: MetadataStore, tmp_path: Path
) -> None:
    # PutInline and PutInlineMany both commit through commit_inline_many.
    async with busy_thread(store, max_batch=64) as (thread, release):
        statements = StatementLog(store)
        batches = [
            asyncio.create_task(
                thread.call(
                    store.commit_inline_many,
                    [(pending(f"b{i}-{j}"), b"x") for j in range(3)],
                    0.0,
                )
            )
            for i in range(4)
        ]
        single = asyncio.create_task(thread.call(store.commit_inline, pending("one"), b"x", 0.0))
        missing = asyncio.create_task(
            thread.call(
                store.commit_inline_many,
                [(pending("m1"), b"x"), (pending("m2", bucket="missing"), b"x")],
                0.0,
            )
        )
        await queued(thread, 6)
        release.set()
        rows = await asyncio.gather(*batches)
        await single
        with pytest.raises(NotFound):
            await missing
    assert [[row.key for row in batch] for batch in rows] == [
        [f"b{i}-{j}" for j in range(3)] for i in range(4)
    ]
    # The failed batch keeps nothing, not even its first object; the others share one commit.
    assert committed_keys(tmp_path / "meta.db") == {
        f"b{i}-{j}" for i in range(4) for j in range(3)
    } | {"one"}
    assert statements.count("COMMIT") == 1, "six queued calls should take one commit"


async def test_group_commit_of_one_commits_every_call_alone(
    store: MetadataStore, tmp_path: Path
) -> None:
    async with busy_thread(store, max_batch=1) as (thread, release):
        statements = StatementLog(store)
        puts = [
            asyncio.create_task(thread.call(store.commit_inline, pending(f"k{i}"), b"x", 0.0))
            for i in range(5)
        ]
        await queued(thread, 5)
        release.set()
        await asyncio.gather(*puts)
    assert statements.count("COMMIT") == 5
    assert committed_keys(tmp_path / "meta.db") == {f"k{i}" for i in range(5)}


async def test_calls_run_in_the_order_they_were_asked_for(store: MetadataStore) -> None:
    async with busy_thread(store) as (thread, release):
        first = asyncio.create_task(thread.call(store.commit_inline, pending("a"), b"x", 0.0))
        # list_objects may not share a commit: it runs alone, after the group before it.
        listed = asyncio.create_task(thread.call(store.list_objects, "bkt", "", "", 100))
        second = asyncio.create_task(thread.call(store.commit_inline, pending("b"), b"x", 0.0))
        await queued(thread, 3)
        release.set()
        await asyncio.gather(first, second)
        assert [row.key for row in await listed] == ["a"]


async def test_a_transaction_that_cannot_begin_fails_every_call_and_keeps_nothing(
    store: MetadataStore, tmp_path: Path
) -> None:
    path = tmp_path / "meta.db"
    store._db.execute("PRAGMA busy_timeout=50")
    other = sqlite3.connect(path, isolation_level=None)
    try:
        async with busy_thread(store) as (thread, release):
            puts = [
                asyncio.create_task(thread.call(store.commit_inline, pending(f"k{i}"), b"x", 0.0))
                for i in range(3)
            ]
            await queued(thread, 3)
            other.execute("BEGIN IMMEDIATE")  # another writer holds the database
            release.set()
            results = await asyncio.gather(*puts, return_exceptions=True)
            other.execute("ROLLBACK")
    finally:
        other.close()
    assert all(isinstance(r, sqlite3.OperationalError) for r in results), results
    assert committed_keys(path) == set()


async def test_a_call_cancelled_before_it_ran_is_skipped(
    store: MetadataStore, tmp_path: Path
) -> None:
    async with busy_thread(store) as (thread, release):
        cancelled = asyncio.create_task(
            thread.call(store.commit_inline, pending("gone"), b"x", 0.0)
        )
        kept = asyncio.create_task(thread.call(store.commit_inline, pending("kept"), b"x", 0.0))
        await queued(thread, 2)
        cancelled.cancel()
        release.set()
        await kept
        with pytest.raises(asyncio.CancelledError):
            await cancelled
    assert committed_keys(tmp_path / "meta.db") == {"kept"}


async def test_close_finishes_queued_calls_then_refuses_new_ones(store: MetadataStore) -> None:
    thread = MetadataThread(store)
    blocker = Blocker()
    held = asyncio.create_task(thread.call(blocker))
    assert await asyncio.to_thread(blocker.started.wait, DEADLINE_S)
    watch_queue(thread)
    put = asyncio.create_task(thread.call(store.commit_inline, pending("a"), b"x", 0.0))
    await queued(thread, 1)
    closing = asyncio.create_task(asyncio.to_thread(thread.close))
    await queued(thread, 2)  # close() has queued its stop behind the put
    blocker.release.set()
    await closing
    await held
    assert (await put).key == "a"
    with pytest.raises(RuntimeError, match="closed"):
        await thread.call(store.bucket, "bkt")


def test_an_error_that_ends_the_whole_transaction_is_reported_as_itself(
    store: MetadataStore, tmp_path: Path
) -> None:
    # SQLite rolls a transaction back by itself on SQLITE_FULL (here: a page limit); the
    # batch is lost, and the error says "full", not "no transaction is active".
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count={pages + 4}")
    with pytest.raises(sqlite3.OperationalError, match="full"):
        store.run_together(
            [
                lambda: store.commit_inline(pending("a"), b"x", 0.0),
                lambda: store.commit_inline(pending("big"), b"y" * 200_000, 0.0),
            ]
        )
    assert not store._db.in_transaction
    store._db.execute("PRAGMA max_page_count=1073741823")
    assert committed_keys(tmp_path / "meta.db") == set()
    store.commit_inline(pending("after"), b"x", 0.0)  # the store goes on working
    assert committed_keys(tmp_path / "meta.db") == {"after"}


def test_a_caller_whose_loop_closed_does_not_stop_the_thread(store: MetadataStore) -> None:
    thread = MetadataThread(store)
    blocker = Blocker()

    async def start_then_leave() -> None:
        left_behind = asyncio.ensure_future(thread.call(blocker))
        assert await asyncio.to_thread(blocker.started.wait, DEADLINE_S)
        assert not left_behind.done()

    try:
        asyncio.run(start_then_leave())  # its loop is closed once this returns
        blocker.release.set()  # the blocker's result now goes to a closed loop
        row = asyncio.run(
            asyncio.wait_for(
                thread.call(store.commit_inline, pending("later"), b"x", 0.0), DEADLINE_S
            )
        )
    finally:
        thread.close()
    assert row.key == "later"
