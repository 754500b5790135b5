"""Task figures of Shoal next to multiprocessing.Pool(2) doing the same in the same run.

    python -m bench.tasks [--tasks 10000] [--round-trips 200] [--workers 2] [--slots 1] [--json]

A temporary cluster (6 nodes, `--workers` workers with `--slots` task processes each; the
default 2 x 1 matches Dask's LocalCluster(n_workers=2, threads_per_worker=1)) runs:

- no-op tasks/s: `Client.map(noop, range(N))`, one task per item, from submitting to holding
  every result (the results are checked);
- the same N items with `chunksize=100` (N/100 tasks), to show the per-task overhead;
- tiny-task round trip: `Client.submit(noop, i).result()`, one after another, p50 and p99.

The baseline is `multiprocessing.Pool(2)` on the same cores: `map(noop, range(N), chunksize=1)`
and `apply_async(noop, (i,)).get()` round trips, measured before any gRPC channel exists
(Pool forks). Dask's and Ray's no-op tasks/s and round trips are measured in the same run by
the peers part (bench/peers); `python -m bench` sets Shoal's against them in its targets, and
against the published figures when the peers were not measured.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time

import cloudpickle

from bench.common import Report, Row, daemon_peak_rss, emit, percentile, say, temporary_cluster
from shoal.client import Client

# The workers cannot import `bench`: its functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CHUNK = 100


def noop(x: int) -> int:
    """The task: nothing but returning its argument."""
    return x


def pool_baseline(tasks: int, round_trips: int) -> tuple[float, list[float]]:
    """(tasks/s of Pool(2).map with chunksize=1, round-trip seconds of apply_async().get())."""
    with multiprocessing.Pool(2) as pool:
        pool.map(noop, range(100), chunksize=1)  # warm
        t0 = time.perf_counter()
        if pool.map(noop, range(tasks), chunksize=1) != list(range(tasks)):
            raise RuntimeError("Pool.map returned wrong results")
        rate = tasks / (time.perf_counter() - t0)
        trips = []
        for i in range(round_trips):
            t0 = time.perf_counter()
            pool.apply_async(noop, (i,)).get()
            trips.append(time.perf_counter() - t0)
    return rate, trips


def shoal_noop(client: Client, tasks: int, chunksize: int | None) -> float:
    """Seconds to run `tasks` no-op items through Client.map and hold the results."""
    t0 = time.perf_counter()
    results = client.map(noop, range(tasks), chunksize=chunksize).result()
    elapsed = time.perf_counter() - t0
    if results != list(range(tasks)):
        raise RuntimeError("Client.map returned wrong results")
    return elapsed


def shoal_round_trips(client: Client, count: int) -> list[float]:
    """Seconds of `count` submit-and-wait round trips of a no-op task."""
    trips = []
    for i in range(count):
        t0 = time.perf_counter()
        if client.submit(noop, i).result() != i:
            raise RuntimeError("Client.submit returned a wrong result")
        trips.append(time.perf_counter() - t0)
    return trips


def measure(tasks: int, round_trips: int, workers: int, slots: int) -> Report:
    report = Report(
        f"tasks: 6 nodes, {workers} workers x {slots} slot{'s' if slots > 1 else ''}, "
        f"{tasks:,} no-op tasks, {round_trips} round trips"
    )
    say("baseline: multiprocessing.Pool(2)")
    pool_rate, pool_trips = pool_baseline(tasks, round_trips)
    say(f"starting a local cluster (6 nodes, {workers} workers x {slots} slots)")
    with (
        temporary_cluster(6, workers=workers, worker_slots=slots) as cluster,
        Client(cluster.address) as client,
    ):
        shoal_round_trips(client, 5)  # warm: slot processes import cloudpickle, channels open
        say(f"Shoal: {tasks:,} no-op tasks with map")
        noop_s = shoal_noop(client, tasks, None)
        say(f"Shoal: {tasks:,} no-op items with map(chunksize={CHUNK})")
        chunked_s = shoal_noop(client, tasks, CHUNK)
        say(f"Shoal: {round_trips} tiny-task round trips")
        trips = shoal_round_trips(client, round_trips)
        daemons = daemon_peak_rss(cluster)
    pool = "multiprocessing.Pool(2), same machine"
    report.add(
        Row("no-op tasks, one item per task", "tasks/s", tasks / noop_s, pool_rate, pool),
        "noop_tasks_s",
        "pool_noop_tasks_s",
    )
    report.add(
        Row(f"no-op items, map chunksize={CHUNK}", "items/s", tasks / chunked_s, pool_rate, pool),
        "noop_items_chunked_s",
    )
    for p in (50, 99):
        report.add(
            Row(
                f"tiny-task round trip, p{p}", "ms", percentile(trips, p) * 1000,
                percentile(pool_trips, p) * 1000, "Pool(2).apply_async().get()",
                higher_is_better=False,
            ),
            f"roundtrip_p{p}_ms",
            f"pool_roundtrip_p{p}_ms",
        )  # fmt: skip
    report.extra["daemon_peak_rss_mib"] = daemons
    report.notes.append(
        f"{tasks:,} no-op tasks in {noop_s:.1f}s; with chunksize={CHUNK}: {chunked_s:.1f}s"
    )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Shoal task figures vs multiprocessing.Pool(2).")
    parser.add_argument("--tasks", type=int, default=10_000, help="no-op tasks")
    parser.add_argument("--round-trips", type=int, default=200, help="tiny-task round trips")
    parser.add_argument("--workers", type=int, default=2, help="Shoal workers")
    parser.add_argument("--slots", type=int, default=1, help="task processes per worker")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.round_trips < 1 or args.workers < 1 or args.slots < 1:
        parser.error("--tasks, --round-trips, --workers and --slots must be >= 1")
    emit(measure(args.tasks, args.round_trips, args.workers, args.slots), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
