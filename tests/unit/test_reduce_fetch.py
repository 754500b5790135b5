"""A reducer fetches its map outputs several at a time, hands them over in order, and never
holds more than its window ahead of the merge."""

from __future__ import annotations

import threading
import time
from typing import Any, cast

import pytest

from shoal.worker.child import _fetch_in_order


class RecordingStore:
    """Answers get(bucket, key) with the key's bytes after a delay that makes early keys
    slowest, so out-of-order completion is certain; records the most gets in flight."""

    def __init__(self, keys: int) -> None:
        self.keys = keys
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.started: list[str] = []

    def get(self, bucket: str, key: str) -> bytes:
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.started.append(key)
        if key == "missing":
            with self.lock:
                self.in_flight -= 1
            raise KeyError(key)
        time.sleep(0.001 * (self.keys - int(key)))
        with self.lock:
            self.in_flight -= 1
        return key.encode()


def test_outputs_come_in_order_with_at_most_window_in_flight() -> None:
    store = RecordingStore(40)
    keys = [str(i) for i in range(40)]
    fetched = list(_fetch_in_order(cast(Any, store), "b", keys, window=8))
    assert fetched == [k.encode() for k in keys]
    assert 1 < store.most_in_flight <= 8


def test_the_window_bounds_what_is_fetched_ahead_of_the_consumer() -> None:
    store = RecordingStore(40)
    outputs = _fetch_in_order(cast(Any, store), "b", [str(i) for i in range(40)], window=4)
    assert next(outputs) == b"0"
    time.sleep(0.05)  # give the pool every chance to run ahead
    assert len(store.started) <= 5  # the 4 in flight, plus the one just handed over
    outputs.close()


def test_a_failed_get_reaches_the_reducer() -> None:
    store = RecordingStore(3)
    with pytest.raises(KeyError):
        list(_fetch_in_order(cast(Any, store), "b", ["0", "missing", "2"], window=2))
