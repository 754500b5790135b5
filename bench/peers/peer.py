"""What the peers (Dask, Ray, PySpark) share: a throwaway venv each, running it, checking it.

No peer is ever a Shoal dependency. Each gets a virtual environment of its own under bench/
(ignored by git; an environment variable per peer moves it), made once with the pinned
requirements and reused while its stamp file lists the same ones. Its workload script
(bench/peers/*_workloads.py) runs there as a file, with only bench/peers on PYTHONPATH (for
workloads_common.py, which the peers' workers import too), and prints one JSON document; the
word counts it writes are checked against the counts known from generating the corpus.

A peer that cannot be set up here (no package index, no venv module, no java for PySpark)
raises `Skipped`: the caller reports `<peer> skipped: <reason>` and goes on. A peer whose run
fails raises `PeerFailed`; wrong word counts raise RuntimeError (a benchmark fails when a
result is wrong).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import say

HERE = Path(__file__).resolve().parent
STAMP = ".shoal-bench-installed"
INSTALL_TIMEOUT_S = 900
RUN_TIMEOUT_S = 1800


class Skipped(Exception):
    """The peer cannot be measured here; the message says why."""


class PeerFailed(Exception):
    """The peer's workloads did not run to the end; the message says how they failed."""


def ensure_venv(venv: Path, requirements: Iterable[str]) -> Path:
    """The python of the throwaway venv `venv`, creating it and installing `requirements` when
    its stamp file does not list exactly them. Raises Skipped when that cannot be done."""
    python = venv / "bin" / "python"
    stamp = venv / STAMP
    pins = list(requirements)
    wanted = " ".join(pins)
    if python.exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        return python
    say(f"peers: creating {venv} and installing {wanted} (once)")
    base = getattr(sys, "_base_executable", sys.executable)
    steps = [
        [base, "-m", "venv", "--clear", str(venv)],
        [str(python), "-m", "pip", "install", "-q", *pins],
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


@dataclass(frozen=True)
class Peer:
    """One peer system: where its venv lives, what goes in it, which script measures it.

    Attributes:
        name: as printed ("Dask", "Ray", "PySpark").
        key: the prefix of its figure keys (`dask_wordcount_s`, `ray_noop_tasks_s`, ...).
        setup: how it runs here, as printed ("LocalCluster(n_workers=2, threads_per_worker=1)").
        script: its workload script, a file in bench/peers.
        requirements: the pinned pip requirements of its venv.
        default_venv: where its venv lives unless `venv_variable` is set.
        venv_variable: the environment variable that moves its venv.
        task_workloads: whether its script measures no-op tasks and round trips too.
        missing: returns why the peer cannot run on this machine, or "" when it can.
    """

    name: str
    key: str
    setup: str
    script: str
    requirements: tuple[str, ...]
    default_venv: Path
    venv_variable: str
    task_workloads: bool = True
    missing: Callable[[], str] | None = None

    def venv_dir(self) -> Path:
        return Path(os.environ.get(self.venv_variable) or self.default_venv)

    def ensure_venv(self) -> Path:
        """The python of the peer's venv (made once); raises Skipped when it cannot be had."""
        reason = self.missing() if self.missing is not None else ""
        if reason:
            raise Skipped(reason)
        return ensure_venv(self.venv_dir(), self.requirements)

    def run(
        self,
        python: Path,
        corpus_dir: Path,
        counts: Path,
        tasks: int,
        round_trips: int,
        only_wordcount: bool = False,
        skip_wordcount: bool = False,
    ) -> dict[str, Any]:
        """Run the peer's workload script; its JSON figures (the counts go to `counts`)."""
        command = [
            str(python), str(HERE / self.script), "--corpus", str(corpus_dir),
            "--counts", str(counts), "--tasks", str(tasks), "--round-trips", str(round_trips),
            *(["--only-wordcount"] if only_wordcount or not self.task_workloads else []),
            *(["--skip-wordcount"] if skip_wordcount else []),
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(HERE)}
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT_S,
                check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise PeerFailed(f"the {self.name} workloads ran over {RUN_TIMEOUT_S}s") from None
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-5:])
            raise PeerFailed(f"the {self.name} workloads failed (exit {done.returncode}):\n{tail}")
        try:
            report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            last = (done.stdout.strip().splitlines() or ["nothing"])[-1][:200]
            raise PeerFailed(f"the {self.name} workloads printed no JSON report: {last}") from None
        return report

    def wordcount(self, python: Path, corpus_dir: Path, expected: Counter[str]) -> dict[str, Any]:
        """The peer's word count alone over the `*.txt` files in `corpus_dir`, checked against
        `expected`; bench/wordcount.py times it right before and right after Shoal's."""
        counts_file = corpus_dir.parent / f"{corpus_dir.name}-{self.key}-counts.json"
        try:
            result = self.run(python, corpus_dir, counts_file, 0, 0, only_wordcount=True)
            correct = read_counts(counts_file, self.name) == expected
        finally:
            counts_file.unlink(missing_ok=True)
        if not correct:
            raise RuntimeError(f"{self.name}'s word counts differ from the expected counts")
        return result

    def label(self, result: dict[str, Any]) -> str:
        """'Ray 2.60.0' from a result of its script."""
        return f"{self.name} {result.get('version', '?')}"


def read_counts(counts_file: Path, name: str) -> Counter[str]:
    """The word counts a peer's script wrote; PeerFailed when it wrote none that parse."""
    try:
        return Counter(json.loads(counts_file.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise PeerFailed(f"{name} wrote no readable word counts: {exc}") from None


def prepare(peers: Iterable[Peer], notes: list[str]) -> tuple[list[tuple[Peer, Path]], list[str]]:
    """The peers whose venvs could be had, with their pythons, and why the others are skipped
    (each also appended to `notes` as '<peer> skipped: <reason>')."""
    ready: list[tuple[Peer, Path]] = []
    skipped: list[str] = []
    for peer in peers:
        try:
            ready.append((peer, peer.ensure_venv()))
        except Skipped as exc:
            skipped.append(f"{peer.name}: {exc}")
            notes.append(f"{peer.name} skipped: {exc}")
    return ready, skipped
