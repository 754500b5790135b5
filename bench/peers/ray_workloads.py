"""The task workloads of bench/tasks.py and bench/wordcount.py on Ray.

    python ray_workloads.py --corpus DIR --counts OUT.json [--tasks N] [--round-trips R]

Runs inside the throwaway virtual environment bench/peers creates for Ray (ray only: this file
imports nothing from Shoal), on a local Ray started by `ray.init(num_cpus=2,
include_dashboard=False)` (its start is not in the figures): N no-op `@ray.remote` tasks
submitted at once and every result gathered with `ray.get` (tasks/s), R tiny-task round trips
`ray.get(noop.remote(i))` one after another (p50, p99), and a word count of the `*.txt` files
in DIR, one remote task per file, merged as results arrive (`ray.wait`), with the tokenizer of
examples/wordcount.py (workloads_common.py). Prints one JSON document; the word counts go to
OUT.json so the caller can check them against the counts known from generating the corpus.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from typing import TYPE_CHECKING

import ray  # type: ignore[import-not-found]

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

CPUS = 2


def main() -> int:
    args = parse_args("Ray's task workloads and word count.")
    paths = corpus_paths(args.corpus)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no prompt, no report home
    t0 = time.perf_counter()
    ray.init(
        num_cpus=CPUS, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False
    )
    try:
        start_s = time.perf_counter() - t0
        remote_noop = ray.remote(noop)
        remote_count = ray.remote(count_file)
        ray.get([remote_noop.remote(i) for i in range(100)])  # warm
        figures: dict[str, float] = {}
        if not args.only_wordcount:
            figures = run_tasks(
                lambda n: ray.get([remote_noop.remote(i) for i in range(n)]),
                lambda i: ray.get(remote_noop.remote(i)),
                args.tasks,
                args.round_trips,
            )
        total: Counter[str] = Counter()
        if not args.skip_wordcount:
            t0 = time.perf_counter()
            pending = [remote_count.remote(path) for path in paths]
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                total.update(ray.get(done[0]))
            figures["wordcount_s"] = time.perf_counter() - t0
    finally:
        ray.shutdown()
    return finish(
        args.counts, total, version=ray.__version__, start_s=start_s, files=len(paths), **figures
    )


if __name__ == "__main__":
    raise SystemExit(main())
