"""Group commit on the coordinator's metadata thread: calls that queue up while it is busy
share one SQLite transaction, each is undone alone when it fails, a failed transaction
keeps nothing and fails every call in it, and the order of calls is kept."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator
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

    def __call__(self) -> str:
        self.started.set()
        assert self.release.wait(DEADLINE_S), "the test never released the metadata thread"
        return "released"


async def queue_behind(thread: MetadataThread, blocker: Blocker) -> asyncio.Task[str]:
    held = asyncio.create_task(thread.call(blocker))
    assert await asyncio.to_thread(blocker.started.wait, DEADLINE_S)
    return held


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
    thread = MetadataThread(store, max_batch=64)
    try:
        blocker = Blocker()
        held = await queue_behind(thread, blocker)
        before = commits_observed()
        statements = StatementLog(store)
        visible_when_acknowledged: dict[str, bool] = {}

        def check_durable(key: str) -> Callable[[asyncio.Future[Any]], None]:
            # Runs on the loop as the caller gets its result: another connection must
            # already see the row, i.e. the commit happened before the acknowledgement.
            def check(_: asyncio.Future[Any]) -> None:
                visible_when_acknowledged[key] = key in committed_keys(tmp_path / "meta.db")

            return check

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
        await asyncio.sleep(0)  # let every call reach the queue
        blocker.release.set()
        assert await held == "released"
        rows = await asyncio.gather(*puts)
        with pytest.raises(NotFound):
            await missing
        after = commits_observed()
    finally:
        thread.close()
    assert [row.key for row in rows] == [f"k{i}" for i in range(10)]
    assert committed_keys(tmp_path / "meta.db") == {f"k{i}" for i in range(10)}
    assert statements.count("COMMIT") == 1, "eleven queued calls should take one commit"
    assert statements.count("BEGIN IMMEDIATE") == 1
    assert visible_when_acknowledged == {f"k{i}": True for i in range(10)}
    assert after[0] - before[0] == 1
    assert after[1] - before[1] == 11


async def test_group_commit_of_one_commits_every_call_alone(
    store: MetadataStore, tmp_path: Path
) -> None:
    thread = MetadataThread(store, max_batch=1)
    try:
        blocker = Blocker()
        held = await queue_behind(thread, blocker)
        statements = StatementLog(store)
        puts = [
            asyncio.create_task(thread.call(store.commit_inline, pending(f"k{i}"), b"x", 0.0))
            for i in range(5)
        ]
        await asyncio.sleep(0)
        blocker.release.set()
        await held
        await asyncio.gather(*puts)
    finally:
        thread.close()
    assert statements.count("COMMIT") == 5
    assert committed_keys(tmp_path / "meta.db") == {f"k{i}" for i in range(5)}


async def test_calls_run_in_the_order_they_were_asked_for(store: MetadataStore) -> None:
    thread = MetadataThread(store)
    try:
        blocker = Blocker()
        held = await queue_behind(thread, blocker)
        first = asyncio.create_task(thread.call(store.commit_inline, pending("a"), b"x", 0.0))
        # list_objects may not share a commit: it runs alone, after the group before it.
        listed = asyncio.create_task(thread.call(store.list_objects, "bkt", "", "", 100))
        second = asyncio.create_task(thread.call(store.commit_inline, pending("b"), b"x", 0.0))
        await asyncio.sleep(0)
        blocker.release.set()
        await asyncio.gather(held, first, second)
        assert [row.key for row in await listed] == ["a"]
    finally:
        thread.close()


async def test_a_transaction_that_cannot_begin_fails_every_call_and_keeps_nothing(
    store: MetadataStore, tmp_path: Path
) -> None:
    path = tmp_path / "meta.db"
    store._db.execute("PRAGMA busy_timeout=50")
    other = sqlite3.connect(path, isolation_level=None)
    thread = MetadataThread(store)
    try:
        blocker = Blocker()
        held = await queue_behind(thread, blocker)
        puts = [
            asyncio.create_task(thread.call(store.commit_inline, pending(f"k{i}"), b"x", 0.0))
            for i in range(3)
        ]
        await asyncio.sleep(0)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the database
        blocker.release.set()
        await held
        results = await asyncio.gather(*puts, return_exceptions=True)
        other.execute("ROLLBACK")
    finally:
        thread.close()
        other.close()
    assert all(isinstance(r, sqlite3.OperationalError) for r in results), results
    assert committed_keys(path) == set()


async def test_a_call_cancelled_before_it_ran_is_skipped(
    store: MetadataStore, tmp_path: Path
) -> None:
    thread = MetadataThread(store)
    try:
        blocker = Blocker()
        held = await queue_behind(thread, blocker)
        cancelled = asyncio.create_task(
            thread.call(store.commit_inline, pending("gone"), b"x", 0.0)
        )
        kept = asyncio.create_task(thread.call(store.commit_inline, pending("kept"), b"x", 0.0))
        await asyncio.sleep(0)
        cancelled.cancel()
        blocker.release.set()
        await asyncio.gather(held, kept)
        with pytest.raises(asyncio.CancelledError):
            await cancelled
    finally:
        thread.close()
    assert committed_keys(tmp_path / "meta.db") == {"kept"}


async def test_close_finishes_queued_calls_then_refuses_new_ones(store: MetadataStore) -> None:
    thread = MetadataThread(store)
    put = asyncio.create_task(thread.call(store.commit_inline, pending("a"), b"x", 0.0))
    await asyncio.sleep(0)
    await asyncio.to_thread(thread.close)
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
