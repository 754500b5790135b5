"""A reducer fetches its map outputs several at a time, hands them over in order, and never
holds more than its window ahead of the merge."""

from __future__ import annotations

import threading
from typing import Any, cast

import pytest

from shoal.worker.child import _fetch_in_order

DEADLINE_S = 10.0


class RecordingStore:
    """Answers get(bucket, key) with the key's bytes and records the most gets in flight.

    With `reverse_within` = W, the gets of each aligned group of W keys finish last key first
    (key i waits until key i + 1 has finished), so completion is certainly out of order and
    the first W gets are certainly in flight together."""

    def __init__(self, keys: int, reverse_within: int = 1) -> None:
        self.reverse_within = reverse_within
        self.finished = [threading.Event() for _ in range(keys + 1)]
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)  # notified when a get starts
        self.in_flight = 0
        self.most_in_flight = 0
        self.started: list[str] = []

    def get(self, bucket: str, key: str) -> bytes:
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.started.append(key)
            self.changed.notify_all()
        try:
            if key == "missing":
                raise KeyError(key)
            index = int(key)
            if (index + 1) % self.reverse_within:
                assert self.finished[index + 1].wait(DEADLINE_S), f"key {index + 1} never finished"
            return key.encode()
        finally:
            with self.lock:
                self.in_flight -= 1
            if key != "missing":
                self.finished[int(key)].set()


def test_outputs_come_in_order_with_at_most_window_in_flight() -> None:
    store = RecordingStore(40, reverse_within=8)
    keys = [str(i) for i in range(40)]
    fetched = list(_fetch_in_order(cast(Any, store), "b", keys, window=8))
    assert fetched == [k.encode() for k in keys]
    assert store.most_in_flight == 8


def test_the_window_bounds_what_is_fetched_ahead_of_the_consumer() -> None:
    store = RecordingStore(40)
    outputs = _fetch_in_order(cast(Any, store), "b", [str(i) for i in range(40)], window=4)
    assert next(outputs) == b"0"
    # Suspended after handing over the first output, the generator has asked for exactly
    # the window's 4 gets; wait until the pool has run them all, then check it ran no more.
    with store.changed:
        started = store.changed.wait_for(lambda: len(store.started) >= 4, DEADLINE_S)
    assert started, "the window's gets never started"
    assert sorted(store.started, key=int) == ["0", "1", "2", "3"]
    outputs.close()


def test_a_failed_get_reaches_the_reducer() -> None:
    store = RecordingStore(3)
    with pytest.raises(KeyError):
        list(_fetch_in_order(cast(Any, store), "b", ["0", "missing", "2"], window=2))
