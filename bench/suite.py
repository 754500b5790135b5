"""The whole suite: `make bench` (default), `make bench-full` (--full), --quick while developing.

    python -m bench [--quick | --full] [--json] [--only PART,...] [--no-peers]

Runs each part in a process of its own (storage, repair, tasks, wordcount, peers: see their
modules), so one part's threads, memory and forked children never touch the next; then prints
one table (Shoal's figure, its same-run baseline, the ratio), the peak RSS of the client and
of every daemon, and issue 6's targets, each with the measured figure, what it needs and
"target met" or "MISSED". A part that fails or cannot run (peers without a package index)
is reported as such and the rest goes on. `--json` prints one document for tracking instead.

The peers (Dask, Ray, PySpark; bench/peers) are measured in the same run unless `--no-peers`:
their word counts by the wordcount part, right before and right after Shoal's (`--dask --ray
--spark`), their task figures by the peers part.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.common import Report, fmt, fmt_ratio, machine, say, summarize_rss
from bench.targets import MISSED, PUBLISHED, Verdict, check_all, machine_speed_lines


@dataclass(frozen=True)
class Part:
    """One benchmark module and its arguments per plan."""

    name: str
    module: str
    args: dict[str, list[str]]


TASKS = {
    "quick": ["--tasks", "2000", "--round-trips", "50"],
    "default": [],
    "full": ["--round-trips", "500"],
}
PARTS = [
    Part("storage", "bench.storage", {"quick": ["--quick"], "default": [], "full": ["--full"]}),
    Part(
        "repair",
        "bench.repair",
        {"quick": ["--mib", "128"], "default": ["--mib", "512"], "full": ["--mib", "1024"]},
    ),
    Part("tasks", "bench.tasks", TASKS),
    Part("wordcount", "bench.wordcount", {"quick": ["--mib", "32"], "default": [], "full": []}),
    Part(
        "peers",
        "bench.peers",
        {"quick": ["--mib", "32", *TASKS["quick"]], "default": [], "full": TASKS["full"]},
    ),
]


@dataclass
class Outcome:
    """What running one part gave: a report, or why there is none."""

    part: str
    report: Report | None = None
    problem: str = ""
    seconds: float = 0.0


def run_part(part: Part, plan: str, extra: Sequence[str] = ()) -> Outcome:
    arguments = [*part.args[plan], *extra]
    say(f"\n=== {part.name} ({part.module} {' '.join(arguments)}) ===")
    started = time.perf_counter()
    command = [sys.executable, "-m", part.module, *arguments, "--json"]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        return Outcome(part.name, None, f"failed (exit {done.returncode}, see above)", elapsed)
    try:
        report = Report.from_dict(json.loads(done.stdout))
    except (ValueError, TypeError) as exc:
        return Outcome(part.name, None, f"failed: unreadable output ({exc})", elapsed)
    if "skipped" in report.extra:
        return Outcome(part.name, report, f"skipped: {report.extra['skipped']}", elapsed)
    return Outcome(part.name, report, "", elapsed)


# Rendering --------------------------------------------------------------------------------------


def table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]], aligns: str) -> list[str]:
    """Plain-text table; a row of one cell is a section heading."""
    cells = [header, *(row for row in rows if len(row) > 1)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        if len(row) == 1:
            return row[0]
        cells = zip(row, aligns, widths, strict=True)
        return "  ".join(f"{c:{'<' if a == 'l' else '>'}{w}}" for c, a, w in cells).rstrip()

    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def results_table(outcomes: list[Outcome]) -> list[str]:
    rows: list[tuple[str, ...]] = []
    for outcome in outcomes:
        title = outcome.report.title if outcome.report else outcome.part
        rows.append((f"[{title}]",))
        if outcome.problem:
            rows.append((f"  {outcome.problem}",))
        if outcome.report is None:
            continue
        for row in outcome.report.rows:
            rows.append(
                (
                    f"{row.metric} ({row.unit})",
                    fmt(row.shoal),
                    fmt(row.baseline),
                    fmt_ratio(row.ratio),
                    row.baseline_name,
                )
            )
    header = ("metric", "Shoal", "baseline", "ratio", "baseline is")
    return table(header, rows, "lrrrl")


def rss_lines(outcomes: list[Outcome], figures: dict[str, float]) -> list[str]:
    lines = ["peak RSS (VmHWM, MiB):"]
    if "client_rss_mib" in figures:
        size = figures.get("client_rss_object_mib", 0)
        lines.append(
            f"  client (a process doing only the put and the get of {size:g} MiB): "
            f"{figures['client_rss_mib']:.0f} MiB "
            f"({figures.get('client_rss_after_put_mib', 0):.0f} MiB after the put)"
        )
    for outcome in outcomes:
        daemons = outcome.report.extra.get("daemon_peak_rss_mib") if outcome.report else None
        if daemons:
            lines.append(f"  {outcome.part} cluster: {summarize_rss(daemons)}")
    return lines


def targets_table(verdicts: list[Verdict]) -> list[str]:
    rows = [
        (
            f"{v.what} ({v.unit})",
            fmt(v.shoal),
            v.needed,
            v.verdict,
        )
        for v in verdicts
    ]
    lines = table(("issue 6 target", "Shoal", "needs", "verdict"), rows, "lrll")
    notes = sorted({v.note for v in verdicts if v.note})
    return lines + [f"  note: {note}" for note in notes]


def published_lines() -> list[str]:
    by_system: dict[str, list[str]] = {}
    for figure in PUBLISHED:
        by_system.setdefault(figure.system, []).append(
            f"{figure.metric} {figure.label()} {figure.unit}"
        )
    lines = ["published peer figures (issue 6, 2 cores; constants, not measured here):"]
    for system, items in by_system.items():
        lines += textwrap.wrap(
            f"{system}: {'; '.join(items)}", 100, initial_indent="  ", subsequent_indent="    "
        )
    return lines


def render(outcomes: list[Outcome], figures: dict[str, float], meta: dict[str, Any]) -> str:
    verdicts = check_all(figures)
    out = [f"Shoal benchmark suite ({meta['plan']}), {meta['date']}", ""]
    out += results_table(outcomes)
    out += ["", "ratio = Shoal's performance / the baseline's (1.00x = as fast; lower = slower)"]
    for outcome in outcomes:
        if outcome.report and outcome.report.notes:
            out.append(f"{outcome.part}:")
            out += [f"  {note}" for note in outcome.report.notes]
    out += ["", *rss_lines(outcomes, figures), "", *targets_table(verdicts)]
    missed = sum(1 for v in verdicts if v.verdict.startswith(MISSED))
    met = sum(1 for v in verdicts if v.verdict.startswith("target met"))
    out.append(f"targets: {met} met, {missed} missed, {len(verdicts) - met - missed} not measured")
    speed = machine_speed_lines(figures)
    if speed:
        out += ["", *speed]
    out += ["", *published_lines(), ""]
    out.append(
        f"machine: {meta['machine']['cpus']} cpus, Python {meta['machine']['python']}, "
        f"load average (1 min) {meta['load_start']} at the start, "
        f"{meta['machine']['load_average_1m']} at the end; run time {meta['seconds']:.0f}s"
    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Shoal's benchmark suite (issue 6)."
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes, ~3 min (development)")
    size.add_argument("--full", action="store_true", help="more runs, 1 GiB x 3, longer phases")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--only", default="", help="comma-separated parts to run")
    parser.add_argument(
        "--no-peers", action="store_true", help="do not measure Dask, Ray or PySpark"
    )
    args = parser.parse_args(argv)
    plan = "quick" if args.quick else "full" if args.full else "default"
    wanted = {p for p in args.only.split(",") if p} or {p.name for p in PARTS}
    unknown = wanted - {p.name for p in PARTS}
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    if args.no_peers:
        wanted.discard("peers")
    started = time.perf_counter()
    load_start = round(os.getloadavg()[0], 2)
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    extra: dict[str, list[str]] = {}
    if {"wordcount", "peers"} <= wanted:
        # The peers' word counts are timed by the wordcount part, right before and after
        # Shoal's (this VM's speed drifts within minutes); the peers part keeps the task
        # workloads (Dask's and Ray's; PySpark has none, so it is not started there).
        extra = {
            "wordcount": ["--dask", "--ray", "--spark"],
            "peers": ["--no-wordcount-figure"],
        }
    outcomes = [
        run_part(part, plan, extra.get(part.name, ())) for part in PARTS if part.name in wanted
    ]
    figures: dict[str, float] = {}
    for outcome in outcomes:
        if outcome.report is not None:
            figures.update(outcome.report.figures)
    meta = {
        "plan": plan,
        "date": date,
        "machine": machine(),
        "load_start": load_start,
        "seconds": time.perf_counter() - started,
    }
    if args.json:
        document = {
            **meta,
            "parts": {
                o.part: {
                    "problem": o.problem,
                    "seconds": o.seconds,
                    "report": o.report.as_dict() if o.report else None,
                }
                for o in outcomes
            },
            "figures": figures,
            "targets": [v.as_dict() for v in check_all(figures)],
            "published": [p.__dict__ for p in PUBLISHED],
        }
        print(json.dumps(document, indent=2))
    else:
        print("\n" + render(outcomes, figures, meta))
    return 1 if any(o.problem.startswith("failed") for o in outcomes) else 0
