"""A reducer fetches its map outputs a batch per call with the next batch in flight, hands
them over in order, holds no more than two batches, and takes fewer per batch once outputs
prove large."""

from __future__ import annotations

import threading
from typing import Any, cast

import pytest

from shoal.worker.child import _fetch_in_order

DEADLINE_S = 10.0


class RecordingStore:
    """Answers get_many(bucket, keys) with each key's bytes (padded to `size` bytes) and
    records every batch asked for (the condition is notified when one starts). A key
    "missing" raises KeyError."""

    def __init__(self, size: int = 0) -> None:
        self.size = size
        self.changed = threading.Condition()
        self.batches: list[list[str]] = []

    def get_many(self, bucket: str, keys: list[str]) -> list[bytes]:
        with self.changed:
            self.batches.append(list(keys))
            self.changed.notify_all()
        if "missing" in keys:
            raise KeyError("missing")
        return [key.encode().ljust(self.size, b".") for key in keys]


def test_outputs_come_in_order_a_batch_per_call() -> None:
    store = RecordingStore()
    keys = [str(i) for i in range(40)]
    fetched = list(_fetch_in_order(cast(Any, store), "b", keys, batch=16, first=4))
    assert fetched == [k.encode() for k in keys]
    assert store.batches == [keys[:4], keys[4:20], keys[20:36], keys[36:]]


def test_large_outputs_make_smaller_batches() -> None:
    store = RecordingStore(size=40)
    keys = [str(i) for i in range(9)]
    fetched = list(_fetch_in_order(cast(Any, store), "b", keys, batch=16, budget=100, first=3))
    assert [blob.rstrip(b".") for blob in fetched] == [k.encode() for k in keys]
    # 100 bytes of budget over 40-byte outputs: two per batch after the first.
    assert [len(batch) for batch in store.batches] == [3, 2, 2, 2]


def test_no_more_than_the_next_batch_is_fetched_ahead_of_the_consumer() -> None:
    store = RecordingStore()
    outputs = _fetch_in_order(cast(Any, store), "b", [str(i) for i in range(40)], batch=4, first=4)
    assert next(outputs) == b"0"
    # Suspended after handing over the first output, the generator has fetched the first
    # batch and asked for the second; wait until that call has started, then check that
    # nothing further was asked for.
    with store.changed:
        started = store.changed.wait_for(lambda: len(store.batches) >= 2, DEADLINE_S)
    assert started, "the next batch was never asked for"
    assert store.batches == [["0", "1", "2", "3"], ["4", "5", "6", "7"]]
    outputs.close()


def test_a_failed_fetch_reaches_the_reducer() -> None:
    store = RecordingStore()
    with pytest.raises(KeyError):
        list(_fetch_in_order(cast(Any, store), "b", ["0", "1", "missing", "3"], batch=2, first=2))
