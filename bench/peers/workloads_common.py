"""What the peers' workload scripts share: the tokenizer, the no-op task, the timing loops.

Runs inside the throwaway virtual environments bench/peers creates, so it imports the standard
library only (never Shoal, never a peer). The scripts import it as a top-level module: the
launcher (bench/peers/peer.py) runs them as files with this directory on PYTHONPATH, so the
peers' worker processes can import it too when they unpickle `count_file` or `noop`.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Same as examples/wordcount.py: a run of word characters, with inner apostrophes.
WORD = re.compile(r"\w+(?:'\w+)*")


def noop(x: int) -> int:
    """The no-op task: nothing but returning its argument."""
    return x


def count_file(path: str) -> Counter[str]:
    """The word counts of one local file (the unit of work of every word count)."""
    text = Path(path).read_bytes().decode("utf-8", errors="replace")
    return Counter(WORD.findall(text.lower()))


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0-100) of `values`, nearest-rank (as bench/common.py)."""
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(p / 100 * len(ordered)))) - 1]


def parse_args(description: str) -> argparse.Namespace:
    """The command line every workload script takes (bench/peers/peer.py builds it)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--corpus", type=Path, required=True, help="directory of *.txt files")
    parser.add_argument("--counts", type=Path, required=True, help="where the counts go (JSON)")
    parser.add_argument("--tasks", type=int, default=10_000, help="no-op tasks")
    parser.add_argument("--round-trips", type=int, default=200, help="tiny-task round trips")
    parser.add_argument("--only-wordcount", action="store_true", help="skip the task workloads")
    parser.add_argument("--skip-wordcount", action="store_true", help="only the task workloads")
    return parser.parse_args()


def corpus_paths(corpus: Path) -> list[str]:
    """The corpus files, in a fixed order."""
    return sorted(str(p) for p in corpus.glob("*.txt"))


def run_tasks(
    run_all: Callable[[int], list[int]], run_one: Callable[[int], int], tasks: int, round_trips: int
) -> dict[str, float]:
    """No-op tasks/s and tiny-task round trips (p50, p99), results checked.

    `run_all(n)` submits n no-op tasks (task i returns i) and gathers every result;
    `run_one(i)` submits one and waits for its result.
    """
    t0 = time.perf_counter()
    results = run_all(tasks)
    noop_s = time.perf_counter() - t0
    if results != list(range(tasks)):
        raise SystemExit("wrong no-op results")
    trips = []
    for i in range(round_trips):
        t0 = time.perf_counter()
        if run_one(i) != i:
            raise SystemExit("a wrong round-trip result")
        trips.append(time.perf_counter() - t0)
    figures = {"noop_tasks_s": tasks / noop_s}
    if trips:
        figures["roundtrip_p50_ms"] = percentile(trips, 50) * 1000
        figures["roundtrip_p99_ms"] = percentile(trips, 99) * 1000
    return figures


def finish(
    counts_file: Path,
    total: Counter[str],
    *,
    version: str,
    start_s: float,
    files: int,
    **figures: Any,
) -> int:
    """Write the word counts for the caller to check, and print the run's report as one JSON
    line: the peer's `version`, its start-up time (not in the figures), the number of corpus
    `files`, and its `figures`."""
    counts_file.write_text(json.dumps(total))
    report = {"version": version, "cluster_start_s": start_s, **figures, "files": files}
    print(json.dumps(report), flush=True)
    return 0
