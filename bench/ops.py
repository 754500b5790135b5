"""Closed-loop small operations: callers in threads issue the next request when the last returns."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.common import percentile

Op = Callable[[int, int], None]
"""op(caller, sequence): one request of caller `caller`, its `sequence`-th."""


@dataclass(frozen=True)
class OpsResult:
    """Throughput and latencies of a closed-loop ops phase."""

    ops_per_s: float
    p50_ms: float
    p99_ms: float
    ops: int


def closed_loop(op: Op, callers: int, seconds: float) -> OpsResult:
    """Run `op(caller, sequence)` back to back in `callers` threads for `seconds`."""
    latencies: list[list[float]] = [[] for _ in range(callers)]
    start = threading.Barrier(callers + 1)
    deadline = 0.0

    def caller(index: int) -> None:
        start.wait()
        sequence = 0
        while (t0 := time.perf_counter()) < deadline:
            op(index, sequence)
            latencies[index].append(time.perf_counter() - t0)
            sequence += 1

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    deadline = began + seconds
    start.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    flat = [value for values in latencies for value in values]
    return OpsResult(
        ops_per_s=len(flat) / elapsed,
        p50_ms=percentile(flat, 50) * 1000,
        p99_ms=percentile(flat, 99) * 1000,
        ops=len(flat),
    )
