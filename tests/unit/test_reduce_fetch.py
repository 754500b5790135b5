"""A reducer fetches its map outputs a batch per call with the next batch in flight, hands
them over in order, and never holds more than two batches."""

from __future__ import annotations

import threading
from typing import Any, cast

import pytest

from shoal.worker.child import _fetch_in_order

DEADLINE_S = 10.0


class RecordingStore:
    """Answers get_many(bucket, keys) with each key's bytes and records every batch asked for
    (the condition is notified when one starts). A key "missing" raises KeyError."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.batches: list[list[str]] = []

    def get_many(self, bucket: str, keys: list[str]) -> list[bytes]:
        with self.changed:
            self.batches.append(list(keys))
            self.changed.notify_all()
        if "missing" in keys:
            raise KeyError("missing")
        return [key.encode() for key in keys]


def test_outputs_come_in_order_a_batch_per_call() -> None:
    store = RecordingStore()
    keys = [str(i) for i in range(40)]
    fetched = list(_fetch_in_order(cast(Any, store), "b", keys, batch=16))
    assert fetched == [k.encode() for k in keys]
    assert store.batches == [keys[:16], keys[16:32], keys[32:]]


def test_no_more_than_the_next_batch_is_fetched_ahead_of_the_consumer() -> None:
    store = RecordingStore()
    outputs = _fetch_in_order(cast(Any, store), "b", [str(i) for i in range(40)], batch=4)
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
        list(_fetch_in_order(cast(Any, store), "b", ["0", "1", "missing", "3"], batch=2))
