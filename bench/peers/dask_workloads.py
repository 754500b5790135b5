"""The task workloads of bench/tasks.py and bench/wordcount.py on Dask distributed.

    python dask_workloads.py --corpus DIR --counts OUT.json [--tasks N] [--round-trips R]

Runs inside the throwaway virtual environment bench/peers creates (dask and distributed only:
this file imports nothing from Shoal), on LocalCluster(n_workers=2, threads_per_worker=1):
N no-op tasks with `client.map` (tasks/s, from submitting to holding every result), R tiny-task
round trips with `client.submit(...).result()` (p50, p99), and a word count of the `*.txt`
files in DIR, one task per file, merged as results arrive (the same tokenizer as
examples/wordcount.py). Prints one JSON document; the word counts go to OUT.json so the caller
can check them against the counts known from generating the corpus.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from collections import Counter
from pathlib import Path

import dask
import distributed
from distributed import Client, LocalCluster, as_completed

# Same as examples/wordcount.py: a run of word characters, with inner apostrophes.
WORD = re.compile(r"\w+(?:'\w+)*")


def noop(x: int) -> int:
    return x


def count_file(path: str) -> Counter[str]:
    text = Path(path).read_bytes().decode("utf-8", errors="replace")
    return Counter(WORD.findall(text.lower()))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(p / 100 * len(ordered)))) - 1]


def run_tasks(client: Client, tasks: int, round_trips: int) -> dict[str, float]:
    """No-op tasks/s and tiny-task round trips (p50, p99)."""
    t0 = time.perf_counter()
    results = client.gather(client.map(noop, range(tasks), pure=False))
    noop_s = time.perf_counter() - t0
    if results != list(range(tasks)):
        raise SystemExit("dask returned wrong no-op results")
    trips = []
    for i in range(round_trips):
        t0 = time.perf_counter()
        if client.submit(noop, i, pure=False).result() != i:
            raise SystemExit("dask returned a wrong round-trip result")
        trips.append(time.perf_counter() - t0)
    return {
        "noop_tasks_s": tasks / noop_s,
        "roundtrip_p50_ms": percentile(trips, 50) * 1000,
        "roundtrip_p99_ms": percentile(trips, 99) * 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--counts", type=Path, required=True)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--round-trips", type=int, default=200)
    parser.add_argument("--only-wordcount", action="store_true", help="skip the task workloads")
    parser.add_argument("--skip-wordcount", action="store_true", help="only the task workloads")
    args = parser.parse_args()
    paths = sorted(str(p) for p in args.corpus.glob("*.txt"))
    t0 = time.perf_counter()
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        start_s = time.perf_counter() - t0
        client.gather(client.map(noop, range(100), pure=False))  # warm
        tasks: dict[str, float] = {}
        if not args.only_wordcount:
            tasks = run_tasks(client, args.tasks, args.round_trips)
        total: Counter[str] = Counter()
        if not args.skip_wordcount:
            t0 = time.perf_counter()
            for future in as_completed(client.map(count_file, paths, pure=False)):
                total.update(future.result())
            tasks["wordcount_s"] = time.perf_counter() - t0
    args.counts.write_text(json.dumps(total))
    report = {
        "dask": dask.__version__,
        "distributed": distributed.__version__,
        "cluster_start_s": start_s,
        **tasks,
        "files": len(paths),
    }
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
