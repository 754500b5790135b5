"""The task workloads of bench/tasks.py and bench/wordcount.py on Dask distributed.

    python dask_workloads.py --corpus DIR --counts OUT.json [--tasks N] [--round-trips R]

Runs inside the throwaway virtual environment bench/peers creates (dask and distributed only:
this file imports nothing from Shoal), on LocalCluster(n_workers=2, threads_per_worker=1):
N no-op tasks with `client.map` (tasks/s, from submitting to holding every result), R tiny-task
round trips with `client.submit(...).result()` (p50, p99), and a word count of the `*.txt`
files in DIR, one task per file, merged as results arrive (the same tokenizer as
examples/wordcount.py, from workloads_common.py). Prints one JSON document; the word counts go
to OUT.json so the caller can check them against the counts known from generating the corpus.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING

import dask
import distributed
from distributed import Client, LocalCluster, as_completed

if TYPE_CHECKING:
    from bench.peers.workloads_common import (
        corpus_paths,
        count_file,
        finish,
        noop,
        parse_args,
        run_tasks,
    )
else:  # run as a file in the peer's venv, with bench/peers on PYTHONPATH (bench/peers/peer.py)
    from workloads_common import corpus_paths, count_file, finish, noop, parse_args, run_tasks


def main() -> int:
    args = parse_args("Dask's task workloads and word count.")
    paths = corpus_paths(args.corpus)
    t0 = time.perf_counter()
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        start_s = time.perf_counter() - t0
        client.gather(client.map(noop, range(100), pure=False))  # warm
        figures: dict[str, float] = {}
        if not args.only_wordcount:
            figures = run_tasks(
                lambda n: client.gather(client.map(noop, range(n), pure=False)),
                lambda i: client.submit(noop, i, pure=False).result(),
                args.tasks,
                args.round_trips,
            )
        total: Counter[str] = Counter()
        if not args.skip_wordcount:
            t0 = time.perf_counter()
            for future in as_completed(client.map(count_file, paths, pure=False)):
                total.update(future.result())
            figures["wordcount_s"] = time.perf_counter() - t0
    return finish(
        args.counts, total, version=distributed.__version__, start_s=start_s, files=len(paths),
        dask=dask.__version__, **figures,
    )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
