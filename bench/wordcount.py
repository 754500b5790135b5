"""Word count through Shoal next to the same count done locally, on the same bytes, in one run.

    python -m bench.wordcount [--mib 256] [--objects 64] [--workers 2] [--slots 1]
                              [--partitions 4] [--dask] [--ray] [--spark] [--json]

A temporary local cluster (6 storage nodes at (4, 6), `--workers` workers with `--slots` task
processes each; 2 x 1 by default, as Dask's LocalCluster(n_workers=2, threads_per_worker=1))
stores a generated corpus; `examples/wordcount.py` counts it with a map-reduce job. The
same corpus is also written to local files and counted by a single process
(`collections.Counter`) and by `multiprocessing.Pool(2)`, with the same tokenizer. All three
results must equal the counts known from generation; the timings are reported, never asserted.
With `--dask`, `--ray` and `--spark`, the word count of Dask distributed, Ray and PySpark over
the same local files (bench/peers, a throwaway venv each) is timed right before and right after
Shoal's, and Shoal's is compared with the mean of the two: this VM's speed drifts within
minutes, and the mean cancels a steady drift. The order is a palindrome around Shoal's job
(Dask, Ray, PySpark; Shoal; PySpark, Ray, Dask), so under a steady drift every peer's mean
lands at the moment Shoal ran.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import (
    MIB,
    Report,
    Row,
    cluster_cpu_seconds,
    cpu_seconds,
    daemon_peak_rss,
    emit,
    peak_rss_mib,
    say,
    temporary_cluster,
)
from bench.peers.dask_peer import DASK
from bench.peers.peer import Peer, PeerFailed, prepare
from bench.peers.ray_peer import RAY
from bench.peers.spark_peer import SPARK
from examples.wordcount import Corpus, count_words, object_key, run
from shoal.client import Client

BUCKET = "corpus"
PREFIX = "text/"
POOL_PROCESSES = 2


def count_file(path: str) -> Counter[str]:
    """The word counts of one local file (the unit of work of both baselines)."""
    return count_words(Path(path).read_bytes().decode("utf-8", errors="replace"))


def count_single(paths: list[str]) -> Counter[str]:
    """Baseline 1: one process reads and counts every file."""
    total: Counter[str] = Counter()
    for path in paths:
        total.update(count_file(path))
    return total


def count_pool(paths: list[str], processes: int = POOL_PROCESSES) -> Counter[str]:
    """Baseline 2: a multiprocessing pool counts one file per task (pool start-up included)."""
    total: Counter[str] = Counter()
    with multiprocessing.Pool(processes) as pool:
        for counts in pool.imap_unordered(count_file, paths):
            total.update(counts)
    return total


def peer_wordcounts(
    ready: list[tuple[Peer, Path]],
    corpus_dir: Path,
    expected: Counter[str],
    runs: dict[str, list[dict[str, Any]]],
    failed: dict[str, str],
    when: str,
) -> None:
    """Each peer's word count over the local files, in the order of `ready`; a peer that failed
    once is not run again (its failure goes to `failed`)."""
    for peer, python in ready:
        if peer.key in failed:
            continue
        say(f"{peer.name}: word count ({when} Shoal's)")
        try:
            runs[peer.key].append(peer.wordcount(python, corpus_dir, expected))
        except PeerFailed as exc:
            failed[peer.key] = f"{when} Shoal's: {exc}"


def timed_call(
    fn: Callable[[list[str]], Counter[str]], paths: list[str]
) -> tuple[Counter[str], float, float]:
    """(counts, elapsed seconds, CPU seconds of this process and its reaped children)."""
    cpu = cpu_seconds()
    started = time.perf_counter()
    result = fn(paths)
    return result, time.perf_counter() - started, cpu_seconds() - cpu


def add_peer_row(
    report: Report,
    peer: Peer,
    runs: list[dict[str, Any]],
    failure: str | None,
    shoal_s: float,
    mib: float,
) -> None:
    """The peer's word count next to Shoal's (the mean of its runs), and a note on the runs."""
    if failure is not None:
        report.notes.append(f"{peer.name}'s word count failed {failure}")
        report.extra.setdefault("failed_peers", {})[peer.key] = failure
    if not runs:
        return
    mean_s = sum(one["wordcount_s"] for one in runs) / len(runs)
    both = "mean of runs just before and after" if len(runs) == 2 else "one run only"
    report.add(
        Row(
            "word count, end to end", "s", shoal_s, mean_s,
            f"{peer.label(runs[0])}, {both}", higher_is_better=False,
        ),
        baseline_key=f"{peer.key}_wordcount_s",
    )  # fmt: skip
    report.figures[f"{peer.key}_wordcount_mib"] = mib
    report.notes.append(
        f"{peer.name}'s word count before and after Shoal's: "
        + ", ".join(f"{one['wordcount_s']:.1f}s" for one in runs)
        + f" ({peer.setup}, the same local files; counts equal the generated counts)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Word count through Shoal vs local baselines.")
    parser.add_argument("--mib", type=float, default=256.0, help="corpus size in MiB")
    parser.add_argument("--objects", type=int, default=64, help="objects (map tasks)")
    parser.add_argument("--workers", type=int, default=2, help="Shoal workers")
    parser.add_argument("--slots", type=int, default=1, help="task processes per worker")
    parser.add_argument("--partitions", type=int, default=4, help="reduce partitions")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed")
    for flag, name in (("--dask", "Dask's"), ("--ray", "Ray's"), ("--spark", "PySpark's")):
        parser.add_argument(
            flag,
            action="store_true",
            help=f"also time {name} word count (bench/peers) right before and right after Shoal's",
        )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.mib <= 0 or args.objects < 1 or args.workers < 1 or args.slots < 1:
        parser.error("--mib > 0, --objects >= 1, --workers >= 1 and --slots >= 1 are required")
    cores = args.slots
    corpus = Corpus(int(args.mib * MIB), args.objects, args.seed)
    report = Report(
        f"word count: {args.mib:g} MiB in {args.objects} objects, 6 nodes at (4, 6), "
        f"{args.workers} workers x {cores} slot(s), {args.partitions} partitions"
    )
    wanted = [peer for peer, on in ((DASK, args.dask), (RAY, args.ray), (SPARK, args.spark)) if on]
    ready, _ = prepare(wanted, report.notes)
    peer_runs: dict[str, list[dict[str, Any]]] = {peer.key: [] for peer, _ in ready}
    peer_failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="shoal-bench-corpus-") as scratch:
        say(f"generating {args.mib:g} MiB in {args.objects} local files")
        paths: list[str] = []
        for index, text in corpus:
            path = Path(scratch) / f"{index:05d}.txt"
            path.write_bytes(text)
            paths.append(str(path))
        expected = corpus.expected()
        size = sum(Path(path).stat().st_size for path in paths)
        # The baselines run before any gRPC channel exists: Pool forks, and gRPC threads and
        # fork do not mix.
        say("baseline: single-process Counter")
        single, single_s, single_cpu = timed_call(count_single, paths)
        say(f"baseline: multiprocessing.Pool({POOL_PROCESSES})")
        pooled, pool_s, pool_cpu = timed_call(count_pool, paths)
        say(f"starting a local cluster (6 nodes, {args.workers} workers x {cores} slot(s))")
        with (
            temporary_cluster(6, workers=args.workers, worker_slots=cores) as cluster,
            Client(cluster.address) as client,
        ):
            client.create_bucket(BUCKET, k=4, n=6)
            say(f"uploading {args.objects} objects")
            started = time.perf_counter()
            for index, name in enumerate(paths):
                client.put(BUCKET, object_key(PREFIX, index), name)
            upload_s = time.perf_counter() - started
            # The peers' word counts right before and right after Shoal's, in mirrored order:
            # this VM's speed drifts by tens of percent within minutes, and the mean of each
            # peer's two runs cancels a steady drift.
            peer_wordcounts(ready, Path(scratch), expected, peer_runs, peer_failed, "before")
            say("Shoal: map_reduce word count")
            before = (cluster_cpu_seconds(cluster), cpu_seconds())
            result = run(client, BUCKET, PREFIX, args.partitions, show_progress=not args.json)
            after = (cluster_cpu_seconds(cluster), cpu_seconds())
            peer_wordcounts(ready[::-1], Path(scratch), expected, peer_runs, peer_failed, "after")
            daemons = daemon_peak_rss(cluster)
    shoal_cpu = None
    if before[0] is not None and after[0] is not None:
        shoal_cpu = after[0] - before[0] + after[1] - before[1]
    correct = {
        "shoal": result.counts == expected,
        "single_process": single == expected,
        "pool": pooled == expected,
    }
    mib = size / MIB
    report.add(
        Row(
            "word count, end to end", "s", result.elapsed_s, single_s,
            "single-process collections.Counter", higher_is_better=False,
        ),
        "wordcount_s",
        "single_wordcount_s",
    )  # fmt: skip
    report.add(
        Row(
            "word count, end to end", "s", result.elapsed_s, pool_s,
            f"multiprocessing.Pool({POOL_PROCESSES})", higher_is_better=False,
        ),
        baseline_key="pool_wordcount_s",
    )  # fmt: skip
    for peer, _ in ready:
        add_peer_row(
            report, peer, peer_runs[peer.key], peer_failed.get(peer.key), result.elapsed_s, mib
        )
    report.add(
        Row(
            "word count, CPU time", "s", shoal_cpu, single_cpu,
            "single-process collections.Counter", higher_is_better=False,
        )
    )  # fmt: skip
    status = result.status
    report.notes += [
        "CPU time: Shoal counts every process of the cluster and this client during the job; "
        f"Pool({POOL_PROCESSES}) used {pool_cpu:.1f} CPU s",
        f"corpus: {mib:.1f} MiB, {expected.total():,} words, {len(expected):,} distinct; "
        f"uploaded at {mib / upload_s:.1f} MiB/s ({upload_s:.1f}s, not in the figures)",
        f"throughput: Shoal {mib / result.elapsed_s:.1f} MiB/s, single process "
        f"{mib / single_s:.1f} MiB/s, Pool({POOL_PROCESSES}) {mib / pool_s:.1f} MiB/s",
        f"map tasks on the host holding their input: {status.local_tasks}/"
        f"{status.located_tasks} ({result.local_ratio:.0%}); reruns {status.rerun_tasks}, "
        f"backups {status.backup_tasks}",
        "results equal the generated counts: "
        + ", ".join(f"{name} {'YES' if ok else 'NO'}" for name, ok in correct.items()),
        f"bench process peak RSS: {peak_rss_mib():.0f} MiB",
    ]
    report.extra = {
        "mib": mib,
        "objects": args.objects,
        "workers": args.workers,
        "worker_slots": cores,
        "partitions": args.partitions,
        "seconds": {"shoal": result.elapsed_s, "single_process": single_s, "pool": pool_s},
        "cpu_seconds": {"shoal": shoal_cpu, "single_process": single_cpu, "pool": pool_cpu},
        "upload_seconds": upload_s,
        "local_tasks": status.local_tasks,
        "located_tasks": status.located_tasks,
        "correct": correct,
        "daemon_peak_rss_mib": daemons,
    }
    report.figures["wordcount_mib"] = mib
    emit(report, args.json)
    if not all(correct.values()):
        print("word count results differ from the expected counts", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
