"""Dask distributed, measured side by side with Shoal in the same run.

    python -m bench.peers [--mib 256] [--objects 64] [--tasks 10000] [--round-trips 200] [--json]

Dask is never a Shoal dependency: this creates a throwaway virtual environment (bench/.peers-venv,
ignored by git; SHOAL_BENCH_PEERS_VENV overrides the place), pip-installs dask and distributed
(pinned below) into it once, and runs bench/peers/dask_workloads.py there on
LocalCluster(n_workers=2, threads_per_worker=1): the no-op tasks/s and tiny-task round trips of
bench/tasks.py, and the word count of bench/wordcount.py over the same generated corpus (same
size, object count and seed, so the same bytes) read from local files. The counts are checked
against the counts known from generation. When the environment cannot be made (no package
index, no venv module) the report says `skipped: <reason>` and the suite goes on.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.common import MIB, Report, Row, emit, say
from examples.wordcount import Corpus

DASK_VERSION = "2026.8.0"
REQUIREMENTS = [f"dask=={DASK_VERSION}", f"distributed=={DASK_VERSION}"]
HERE = Path(__file__).resolve().parent
DEFAULT_VENV = HERE.parent / ".peers-venv"
STAMP = ".shoal-bench-installed"
INSTALL_TIMEOUT_S = 900
RUN_TIMEOUT_S = 1800


class Skipped(Exception):
    """The peer cannot be measured here; the message says why."""


def venv_dir() -> Path:
    return Path(os.environ.get("SHOAL_BENCH_PEERS_VENV") or DEFAULT_VENV)


def ensure_venv(venv: Path) -> Path:
    """The throwaway venv's python, creating the venv and installing Dask when needed."""
    python = venv / "bin" / "python"
    stamp = venv / STAMP
    wanted = " ".join(REQUIREMENTS)
    if python.exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        return python
    say(f"peers: creating {venv} and installing {wanted} (once)")
    base = getattr(sys, "_base_executable", sys.executable)
    steps = [
        [base, "-m", "venv", "--clear", str(venv)],
        [str(python), "-m", "pip", "install", "-q", *REQUIREMENTS],
    ]
    for step in steps:
        try:
            done = subprocess.run(
                step, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise Skipped(f"{' '.join(step[:3])} failed: {exc}") from None
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise Skipped(f"{' '.join(step[1:4])} failed: {last}")
    stamp.write_text(wanted + "\n")
    return python


def run_dask(
    python: Path,
    corpus_dir: Path,
    counts: Path,
    tasks: int,
    round_trips: int,
    only_wordcount: bool = False,
    skip_wordcount: bool = False,
) -> dict[str, float]:
    command = [
        str(python), str(HERE / "dask_workloads.py"), "--corpus", str(corpus_dir),
        "--counts", str(counts), "--tasks", str(tasks), "--round-trips", str(round_trips),
        *(["--only-wordcount"] if only_wordcount else []),
        *(["--skip-wordcount"] if skip_wordcount else []),
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"the Dask workloads failed (exit {done.returncode}):\n{tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def dask_wordcount(python: Path, corpus_dir: Path, expected: Counter[str]) -> dict[str, float]:
    """Dask's word count alone over the `*.txt` files in `corpus_dir` (checked against
    `expected`); bench/wordcount.py times it right before and right after Shoal's."""
    counts_file = corpus_dir.parent / f"{corpus_dir.name}-dask-counts.json"
    try:
        result = run_dask(python, corpus_dir, counts_file, 0, 0, only_wordcount=True)
        correct = Counter(json.loads(counts_file.read_text())) == expected
    finally:
        counts_file.unlink(missing_ok=True)
    if not correct:
        raise RuntimeError("Dask's word counts differ from the expected counts")
    return result


def measure(
    mib: float,
    objects: int,
    tasks: int,
    round_trips: int,
    seed: int = 0,
    wordcount: bool = True,
) -> Report:
    report = Report(
        f"peers: Dask distributed {DASK_VERSION}, LocalCluster(n_workers=2, threads_per_worker=1)"
    )
    try:
        python = ensure_venv(venv_dir())
    except Skipped as exc:
        report.extra["skipped"] = str(exc)
        report.notes.append(f"Dask skipped: {exc}")
        return report
    with tempfile.TemporaryDirectory(prefix="shoal-bench-peers-") as scratch:
        corpus = Corpus(int(mib * MIB), objects, seed)
        if wordcount:
            say(f"peers: generating the {mib:g} MiB corpus in {objects} local files")
            for index, text in corpus:
                (Path(scratch) / f"{index:05d}.txt").write_bytes(text)
        counts_file = Path(scratch) / "counts.json"
        what = ", word count" if wordcount else ""
        say(f"peers: Dask: {tasks:,} no-op tasks, {round_trips} round trips{what}")
        started = time.perf_counter()
        result = run_dask(
            python, Path(scratch), counts_file, tasks, round_trips, skip_wordcount=not wordcount
        )
        elapsed = time.perf_counter() - started
        counted = Counter(json.loads(counts_file.read_text()))
        correct = counted == corpus.expected() if wordcount else not counted
    if not correct:
        raise RuntimeError("Dask's word counts differ from the expected counts")
    dask = f"Dask {result['distributed']}, same run"
    report.add(
        Row("no-op tasks", "tasks/s", None, result["noop_tasks_s"], dask), "", "dask_noop_tasks_s"
    )
    for p in (50, 99):
        report.add(
            Row(
                f"tiny-task round trip, p{p}", "ms", None, result[f"roundtrip_p{p}_ms"], dask,
                higher_is_better=False,
            ),
            baseline_key=f"dask_roundtrip_p{p}_ms",
        )  # fmt: skip
    if wordcount:
        report.add(
            Row(
                f"word count {mib:g} MiB, end to end", "s", None, result["wordcount_s"], dask,
                higher_is_better=False,
            ),
            baseline_key="dask_wordcount_s",
        )  # fmt: skip
        report.figures["dask_wordcount_mib"] = mib
    else:
        report.notes.append("Dask's word count: timed by bench.wordcount, before and after Shoal's")
    report.notes.append(
        f"Dask: cluster start {result['cluster_start_s']:.1f}s (not in the figures), "
        f"whole run {elapsed:.0f}s"
        + (", word counts equal the generated counts: YES" if wordcount else "")
    )
    report.extra["dask"] = result
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Dask distributed, side by side with Shoal.")
    parser.add_argument("--mib", type=float, default=256.0, help="word count corpus in MiB")
    parser.add_argument("--objects", type=int, default=64, help="corpus files")
    parser.add_argument("--tasks", type=int, default=10_000, help="no-op tasks")
    parser.add_argument("--round-trips", type=int, default=200, help="tiny-task round trips")
    parser.add_argument(
        "--no-wordcount-figure",
        action="store_true",
        help="do not report Dask's word count (bench.wordcount --dask measured it beside Shoal's)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    report = measure(
        args.mib, args.objects, args.tasks, args.round_trips,
        wordcount=not args.no_wordcount_figure,
    )  # fmt: skip
    if "skipped" in report.extra and not args.json:
        print(f"peers: skipped: {report.extra['skipped']}")
        return 0
    emit(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
