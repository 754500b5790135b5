"""The client side of a profiling run: one workload in a loop, in a process of its own.

    python -m bench.profile_workload KIND ADDRESS SECONDS

KIND is `put` (64 MiB objects, one after another), `get` (the same 64 MiB object again and
again), `small-put` / `small-get` (4 KiB objects, 8 caller threads, each with its own Client)
`tasks` (Client.map of 2,000 no-op tasks, again and again) or `wordcount` (the map-reduce of
examples/wordcount.py over a 32 MiB corpus in 32 objects, again and again). Prints `ready` once
set up (so the profiler attaches to a process already in its steady state), runs for SECONDS,
then prints `done OPS USER_S SYS_S`: the operations it did and its CPU seconds since `ready`.
"""

from __future__ import annotations

import itertools
import os
import resource
import sys
import threading
import time
from collections.abc import Callable

import cloudpickle

from shoal.client import AlreadyExists, Client

cloudpickle.register_pickle_by_value(sys.modules[__name__])

BUCKET = "profile"
BIG = 64 * 1024 * 1024
SMALL = 4096
CALLERS = 8


START = (0.0, 0.0)


def ready() -> None:
    """Tell the profiler the steady state begins; CPU is counted from here."""
    global START
    START = cpu()
    print("ready", flush=True)


def noop(x: int) -> int:
    return x


def loop(fn: Callable[[], object], seconds: float) -> int:
    deadline = time.monotonic() + seconds
    count = 0
    while time.monotonic() < deadline:
        fn()
        count += 1
    return count


def small(address: str, kind: str, seconds: float) -> int:
    clients = [Client(address) for _ in range(CALLERS)]
    payload = os.urandom(SMALL)
    keys = [f"small-{i}" for i in range(64)]
    for key in keys:
        clients[0].put(BUCKET, key, payload)
    counts = [0] * CALLERS
    ready()

    def caller(index: int) -> None:
        client, sequence = clients[index], itertools.count()
        op: Callable[[], object]
        if kind == "small-put":
            op = lambda: client.put(BUCKET, f"p-{index}-{next(sequence)}", payload)  # noqa: E731
        else:
            op = lambda: client.get(BUCKET, keys[next(sequence) % len(keys)])  # noqa: E731
        counts[index] = loop(op, seconds)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for client in clients:
        client.close()
    return sum(counts)


def cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def main() -> int:
    kind, address, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    with Client(address) as client:
        try:
            client.create_bucket(BUCKET, k=4, n=6)
        except AlreadyExists:
            pass
        if kind.startswith("small"):
            done = small(address, kind, seconds)
        elif kind == "put":
            data, sequence = os.urandom(BIG), itertools.count()
            ready()
            done = loop(lambda: client.put(BUCKET, f"big-{next(sequence) % 4}", data), seconds)
        elif kind == "get":
            client.put(BUCKET, "big", os.urandom(BIG))
            client.get(BUCKET, "big")
            ready()
            done = loop(lambda: client.get(BUCKET, "big"), seconds)
        elif kind == "wordcount":
            from examples.wordcount import generate_corpus, run

            generate_corpus(client, "corpus", "text/", 32 * 1024 * 1024, 32)
            ready()
            done = loop(lambda: run(client, "corpus", "text/", show_progress=False), seconds)
        elif kind == "tasks":
            client.map(noop, range(10)).result()
            ready()
            done = loop(lambda: client.map(noop, range(2000)).result(), seconds)
        else:
            raise SystemExit(f"unknown workload {kind!r}")
    user, system = cpu()
    print(f"done {done} {user - START[0]:.3f} {system - START[1]:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
