"""Dask, Ray and PySpark, measured side by side with Shoal in the same run.

    python -m bench.peers [--mib 256] [--objects 64] [--tasks 10000] [--round-trips 200]
                          [--peers dask,ray,spark] [--no-wordcount-figure] [--json]

None of them is a Shoal dependency: each runs in a throwaway virtual environment of its own
(bench/peers/peer.py; made once, pinned versions), on 2 cores as the Shoal parts are:

- Dask distributed on LocalCluster(n_workers=2, threads_per_worker=1) (bench/peers/dask_peer.py),
- Ray on `ray.init(num_cpus=2, include_dashboard=False)` (bench/peers/ray_peer.py): both measure
  the no-op tasks/s and tiny-task round trips of bench/tasks.py;
- PySpark on local[2] (bench/peers/spark_peer.py): the word count only.

Each also counts the words of the same generated corpus as bench/wordcount.py (same size,
object count and seed, so the same bytes) read from local files; the counts are checked
against the counts known from generation. In the suite, `--no-wordcount-figure` leaves the
word counts to `bench.wordcount --dask --ray --spark`, which times them right before and right
after Shoal's, and PySpark is not started here at all. A peer whose environment cannot be
made (no package index, no venv module, no java for PySpark) is reported `skipped: <reason>`
and the others go on; when every peer is skipped, so is the part.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import MIB, Report, Row, emit, say
from bench.peers.dask_peer import DASK
from bench.peers.peer import Peer, PeerFailed, prepare, read_counts
from bench.peers.ray_peer import RAY
from bench.peers.spark_peer import SPARK
from examples.wordcount import Corpus

PEERS = {peer.key: peer for peer in (DASK, RAY, SPARK)}


def add_rows(
    report: Report, peer: Peer, result: dict[str, Any], mib: float, wordcount: bool
) -> None:
    """The peer's figures as baseline-only rows, keyed `<peer>_noop_tasks_s` and so on."""
    name = f"{peer.label(result)}, same run"
    if "noop_tasks_s" in result:
        report.add(
            Row("no-op tasks", "tasks/s", None, result["noop_tasks_s"], name),
            baseline_key=f"{peer.key}_noop_tasks_s",
        )
    for p in (50, 99):
        if f"roundtrip_p{p}_ms" in result:
            report.add(
                Row(
                    f"tiny-task round trip, p{p}", "ms", None, result[f"roundtrip_p{p}_ms"],
                    name, higher_is_better=False,
                ),
                baseline_key=f"{peer.key}_roundtrip_p{p}_ms",
            )  # fmt: skip
    if wordcount:
        report.add(
            Row(
                f"word count {mib:g} MiB, end to end", "s", None, result["wordcount_s"], name,
                higher_is_better=False,
            ),
            baseline_key=f"{peer.key}_wordcount_s",
        )  # fmt: skip
        report.figures[f"{peer.key}_wordcount_mib"] = mib


def measure(
    mib: float,
    objects: int,
    tasks: int,
    round_trips: int,
    seed: int = 0,
    wordcount: bool = True,
    peers: tuple[Peer, ...] = (DASK, RAY, SPARK),
) -> Report:
    # Without the word count, a peer with no task workloads (PySpark) has nothing to do here.
    wanted = [peer for peer in peers if wordcount or peer.task_workloads]
    report = Report(f"peers, same run: {', '.join(peer.name for peer in wanted)}")
    ready, skipped = prepare(wanted, report.notes)
    if not ready:
        report.extra["skipped"] = "; ".join(skipped) or "nothing to measure without the word count"
        return report
    if skipped:
        report.extra["skipped_peers"] = skipped
    with tempfile.TemporaryDirectory(prefix="shoal-bench-peers-") as scratch:
        corpus = Corpus(int(mib * MIB), objects, seed)
        if wordcount:
            say(f"peers: generating the {mib:g} MiB corpus in {objects} local files")
            for index, text in corpus:
                (Path(scratch) / f"{index:05d}.txt").write_bytes(text)
        expected = corpus.expected() if wordcount else Counter()
        for peer, python in ready:
            counts_file = Path(scratch) / f"counts-{peer.key}.json"
            what = []
            if peer.task_workloads:
                what.append(f"{tasks:,} no-op tasks, {round_trips} round trips")
            if wordcount:
                what.append("word count")
            say(f"peers: {peer.name}: {', '.join(what)}")
            started = time.perf_counter()
            try:
                result = peer.run(
                    python, Path(scratch), counts_file, tasks, round_trips,
                    skip_wordcount=not wordcount,
                )  # fmt: skip
                counted = read_counts(counts_file, peer.name)
            except PeerFailed as exc:
                report.notes.append(f"{peer.name} failed: {exc}")
                report.extra.setdefault("failed_peers", {})[peer.key] = str(exc)
                continue
            finally:
                counts_file.unlink(missing_ok=True)
            elapsed = time.perf_counter() - started
            if counted != expected:
                raise RuntimeError(f"{peer.name}'s word counts differ from the expected counts")
            add_rows(report, peer, result, mib, wordcount)
            report.notes.append(
                f"{peer.name}: {peer.setup}; start {result['cluster_start_s']:.1f}s (not in the "
                f"figures), whole run {elapsed:.0f}s"
                + (", word counts equal the generated counts: YES" if wordcount else "")
            )
            report.extra[peer.key] = result
    if not wordcount:
        report.notes.append(
            "the peers' word counts: timed by bench.wordcount, before and after Shoal's"
        )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Dask, Ray and PySpark, side by side with Shoal.")
    parser.add_argument("--mib", type=float, default=256.0, help="word count corpus in MiB")
    parser.add_argument("--objects", type=int, default=64, help="corpus files")
    parser.add_argument("--tasks", type=int, default=10_000, help="no-op tasks")
    parser.add_argument("--round-trips", type=int, default=200, help="tiny-task round trips")
    parser.add_argument(
        "--peers",
        default=",".join(PEERS),
        help=f"comma-separated peers to measure (default: {','.join(PEERS)})",
    )
    parser.add_argument(
        "--no-wordcount-figure",
        action="store_true",
        help="do not report the peers' word counts (bench.wordcount measured them beside "
        "Shoal's); PySpark, which measures nothing else, is then not run",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    chosen = [name for name in args.peers.split(",") if name]
    unknown = set(chosen) - set(PEERS)
    if unknown:
        parser.error(f"unknown peers: {', '.join(sorted(unknown))} (known: {', '.join(PEERS)})")
    if args.tasks < 1 or args.round_trips < 1:
        parser.error("--tasks and --round-trips must be >= 1")
    report = measure(
        args.mib, args.objects, args.tasks, args.round_trips,
        wordcount=not args.no_wordcount_figure, peers=tuple(PEERS[name] for name in chosen),
    )  # fmt: skip
    if "skipped" in report.extra and not args.json:
        print(f"peers: skipped: {report.extra['skipped']}")
        return 0
    emit(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
