"""Shared helpers of the benchmarks: timing, result rows, the table, JSON and a temporary cluster.

Every figure is printed next to a baseline measured in the same run on the same machine, and
`ratio` always reads "Shoal as a fraction of the baseline's performance": 1.00 is as fast, 0.50
is half as fast (twice the time, half the throughput), whatever the unit. Nothing here asserts
a timing; the benchmarks report, the tests decide correctness.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shoal.client.cli.local_cluster import ClusterSettings, LocalCluster

MIB = 1024 * 1024


@dataclass
class Row:
    """One line of the results table.

    Attributes:
        metric: what was measured.
        unit: the unit of `shoal` and `baseline` ("s", "MiB/s", "ops/s", "ms", ...).
        shoal: Shoal's figure (None for a baseline-only row).
        baseline: the reference figure measured in the same run (None when there is none).
        baseline_name: what the baseline is.
        higher_is_better: True for throughputs, False for times and latencies.
    """

    metric: str
    unit: str
    shoal: float | None
    baseline: float | None = None
    baseline_name: str = ""
    higher_is_better: bool = True

    @property
    def ratio(self) -> float | None:
        """Shoal's performance over the baseline's (1.0 = as fast, below 1 = slower)."""
        if self.shoal is None or self.baseline is None or self.shoal <= 0 or self.baseline <= 0:
            return None
        if self.higher_is_better:
            return self.shoal / self.baseline
        return self.baseline / self.shoal

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        return data


@dataclass
class Report:
    """Everything a benchmark measured: rows, extra facts (notes) and raw values for JSON."""

    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, float] = field(default_factory=dict)
    """Key figures by stable name (`put_64mib`, `noop_tasks_s`, ...), for targets and tracking."""

    def add(self, row: Row, key: str = "", baseline_key: str = "") -> Row:
        """Add a row; `key`/`baseline_key` also record its Shoal/baseline figure by name."""
        self.rows.append(row)
        if key and row.shoal is not None:
            self.figures[key] = row.shoal
        if baseline_key and row.baseline is not None:
            self.figures[baseline_key] = row.baseline
        return row

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "machine": machine(),
            "rows": [row.as_dict() for row in self.rows],
            "notes": self.notes,
            "figures": self.figures,
            **self.extra,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """The inverse of `as_dict` (for reports read back from a benchmark's --json)."""
        known = {"title", "machine", "rows", "notes", "figures"}
        rows = []
        for row in data.get("rows", []):
            fields_ = {k: v for k, v in row.items() if k != "ratio"}
            rows.append(Row(**fields_))
        return cls(
            title=data.get("title", ""),
            rows=rows,
            notes=list(data.get("notes", [])),
            extra={k: v for k, v in data.items() if k not in known},
            figures=dict(data.get("figures", {})),
        )


def machine() -> dict[str, Any]:
    """Facts that matter when comparing runs."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = -1.0
    return {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": sys.platform,
        "load_average_1m": round(load, 2),
    }


def fmt(value: float | None) -> str:
    """A figure with 3 significant digits (or '-' when absent)."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if abs(value) >= 999.5:  # what rounds to 1,000 or more: "1,000", never "1e+03"
        return f"{value:,.0f}"
    return f"{value:.3g}"


def fmt_ratio(ratio: float | None) -> str:
    """'0.42x' (two significant digits below 0.1: '0.0034x'), or '-'."""
    if ratio is None:
        return "-"
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x"


def render_table(report: Report) -> str:
    """The report as a plain-text table (same on a terminal and in a log)."""
    header = ("metric", "Shoal", "baseline", "ratio", "baseline is")
    lines = [
        (
            f"{row.metric} ({row.unit})",
            fmt(row.shoal),
            fmt(row.baseline),
            fmt_ratio(row.ratio),
            row.baseline_name,
        )
        for row in report.rows
    ]
    widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(len(header))]
    aligns = ("<", ">", ">", ">", "<")

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, aligns, widths, strict=True))

    out = [report.title, "", line(header).rstrip(), "  ".join("-" * w for w in widths)]
    out += [line(cells).rstrip() for cells in lines]
    out.append("")
    out.append("ratio = Shoal's performance / the baseline's (1.00x = as fast; lower = slower)")
    out += report.notes
    m = machine()
    out.append(f"machine: {m['cpus']} cpus, Python {m['python']}, load {m['load_average_1m']}")
    return "\n".join(out)


def emit(report: Report, as_json: bool) -> None:
    """Print the report: a table, or one JSON document with `--json`."""
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print("\n" + render_table(report))


def say(message: str, *, quiet: bool = False) -> None:
    """Progress messages go to stderr, so `--json` output stays parseable."""
    if not quiet:
        print(message, file=sys.stderr, flush=True)


# Timing ----------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> float:
    """Seconds one call of `fn` takes."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def median_time(fn: Callable[[], Any], runs: int = 5, warmup: int = 1) -> float:
    """The median seconds of `runs` calls of `fn`, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    return statistics.median(timed(fn) for _ in range(max(runs, 1)))


def repeat_for(fn: Callable[[], Any], seconds: float, min_runs: int = 3) -> list[float]:
    """Call `fn` repeatedly for about `seconds` (at least `min_runs` times); each call's time."""
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < min_runs or time.perf_counter() < deadline:
        times.append(timed(fn))
    return times


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0-100) of `values`, nearest-rank."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(p / 100 * len(ordered))))
    return ordered[rank - 1]


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / MIB


def vmhwm_mib(pid: int | str = "self") -> float | None:
    """Peak RSS (VmHWM) of a process since its exec, in MiB; None when unreadable.

    Unlike ru_maxrss, VmHWM does not count a forked parent's pages from before exec, so it is
    the process's own figure.
    """
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def session_pids(session: int) -> list[int]:
    """Pids of the live processes in session `session` (a daemon and what it started)."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 3 and int(fields[3]) == session:
            pids.append(int(entry.name))
    return pids


def daemon_peak_rss(cluster: LocalCluster) -> dict[str, float]:
    """Peak RSS (VmHWM, MiB) of every live daemon of the cluster, read from /proc.

    A worker's figure is its own process; its task slots (processes it started, same session)
    are reported as `<worker>/slots`, the largest of them.
    """
    out: dict[str, float] = {}
    daemons = [cluster.coordinator, *cluster.nodes.values(), *cluster.workers.values()]
    for daemon in daemons:
        if daemon is None or not daemon.pid:
            continue
        own = vmhwm_mib(daemon.pid)
        if own is not None:
            out[daemon.name] = own
        if daemon.role == "worker":
            slots = [vmhwm_mib(pid) for pid in session_pids(daemon.pid) if pid != daemon.pid]
            known = [value for value in slots if value is not None]
            if known:
                out[f"{daemon.name}/slots"] = max(known)
    return out


def summarize_rss(peaks: dict[str, float]) -> str:
    """'coordinator 61 MiB, nodes 45-52 MiB, ...' from `daemon_peak_rss`."""
    groups: dict[str, list[float]] = {}
    for name, value in peaks.items():
        if name.endswith("/slots"):
            role = "task slots"
        elif name.startswith("node-"):
            role = "nodes"
        elif name.startswith("worker-"):
            role = "workers"
        else:
            role = name
        groups.setdefault(role, []).append(value)
    parts = []
    for role, values in groups.items():
        low, high = min(values), max(values)
        span = f"{high:.0f}" if round(low) == round(high) else f"{low:.0f}-{high:.0f}"
        parts.append(f"{role} {span} MiB")
    return ", ".join(parts)


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and its reaped children so far."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def cluster_cpu_seconds(cluster: LocalCluster) -> float | None:
    """CPU seconds used so far by every live process of the cluster (Linux; None elsewhere).

    LocalCluster starts each daemon in its own session, so a daemon's pid is its session id
    and the processes it starts (a worker's task slots) share it.
    """
    daemons = [cluster.coordinator, *cluster.nodes.values(), *cluster.workers.values()]
    sessions = {d.pid for d in daemons if d is not None and d.pid}
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        entries = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
    except (OSError, ValueError):
        return None
    total = 0
    for pid in entries:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                # After "(comm)": state ppid pgrp session ... utime stime cutime cstime
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 14 and int(fields[3]) in sessions:
            total += sum(int(value) for value in fields[11:15])
    return total / ticks


# A temporary cluster ----------------------------------------------------------------------------


@contextlib.contextmanager
def temporary_cluster(
    nodes: int = 6,
    *,
    k: int = 4,
    n: int = 6,
    workers: int = 0,
    worker_slots: int = 0,
    settings: ClusterSettings | None = None,
) -> Iterator[LocalCluster]:
    """A LocalCluster in a temporary directory, stopped and deleted on exit.

    The daemons' data directories are on the same disk as the system's temporary directory
    (set TMPDIR to measure another disk).
    """
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as root:
        cluster = LocalCluster(Path(root) / "cluster")
        try:
            cluster.up(
                nodes,
                settings=settings or ClusterSettings(k=k, n=n),
                workers=workers,
                worker_slots=worker_slots,
            )
            yield cluster
        finally:
            cluster.down()
