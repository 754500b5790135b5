"""Sample the daemons and the client under one workload with py-spy; summarize where time goes.

    python -m bench.profile [--workloads put,get,small-put,small-get,tasks,wordcount]
                            [--seconds 15] [--out DIR] [--rate 100] [--svg] [--native] [--top 12]

For each workload (see bench/profile_workload.py) a temporary cluster starts (6 nodes at
(4, 6); 2 workers x 1 slot for `tasks` and `wordcount`), the workload runs in a client process
of its own, and once it is in its steady state py-spy samples, for `--seconds`, at the same
time: the client, node-1 (it holds a shard of every stripe), the coordinator, and for `tasks`
and `wordcount` worker-1 and its task slot. Each profile is written as collapsed stacks
(`DIR/WORKLOAD-ROLE.txt`, one `frame;frame;... count` line per stack: the input of
flamegraph.pl, inferno or speedscope) or, with `--svg`, as py-spy's own flame graph. The CPU
seconds each role used per operation (client, coordinator, the 6 nodes together, workers with
their slots; user and system, from /proc) are printed for every workload. Without --svg a
summary follows: per profile the functions with the largest inclusive and self share of the
samples, leaving out the frames every stack of a thread goes through (thread start, event loop
plumbing). `--native` adds C frames (memmove, syscalls, zfec, gRPC core; libc shows as
addresses) but pauses the processes for each sample and counts idle threads too.

py-spy is not a Shoal dependency: `pip install py-spy` into the virtual environment first. It
needs ptrace rights over the daemons (root, or kernel.yama.ptrace_scope=0). Without --native,
py-spy only sees Python frames: time inside C (zfec, gRPC core, syscalls) counts for the
Python frame that called it, and C running under the uvloop loop shows as `Runner.run`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.common import say, session_pids, temporary_cluster
from shoal.client.cli.local_cluster import LocalCluster

WORKLOADS = ("put", "get", "small-put", "small-get", "tasks", "wordcount")


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def is_slot(pid: int) -> bool:
    """A worker's task process (spawned by multiprocessing, not its resource tracker)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return b"multiprocessing" in command and b"resource_tracker" not in command


def targets(cluster: LocalCluster, workload: str, client_pid: int) -> dict[str, int]:
    """Role -> pid of the processes to sample."""
    assert cluster.coordinator is not None
    pids = {"client": client_pid, "coordinator": cluster.coordinator.pid}
    if workload in ("tasks", "wordcount"):
        worker = cluster.workers["worker-1"].pid
        pids["worker"] = worker
        slots = [pid for pid in session_pids(worker) if is_slot(pid)]
        if slots:
            pids["slot"] = min(slots)
    if workload != "tasks":
        pids["node"] = cluster.nodes["node-1"].pid
    return pids


def cpu_of(pids: list[int]) -> tuple[float, float]:
    """(user, system) CPU seconds of live processes, from /proc/PID/stat."""
    ticks = os.sysconf("SC_CLK_TCK")
    user = system = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user, system = user + int(fields[11]), system + int(fields[12])
    return user / ticks, system / ticks


def roles(cluster: LocalCluster) -> dict[str, list[int]]:
    """Role -> pids, for CPU accounting (a worker with its task slots)."""
    assert cluster.coordinator is not None
    out = {"coordinator": [cluster.coordinator.pid], "nodes": []}
    out["nodes"] = [d.pid for d in cluster.nodes.values()]
    if cluster.workers:
        out["workers + slots"] = [p for d in cluster.workers.values() for p in session_pids(d.pid)]
    return out


def cpu_report(
    workload: str,
    ops: int,
    client: tuple[float, float],
    daemons: dict[str, tuple[float, float]],
    seconds: float,
) -> list[str]:
    """CPU seconds per operation by role, user + system."""
    lines = [f"{workload}: {ops} operations in {seconds:.1f}s; CPU ms per operation (user+sys):"]
    total = 0.0
    for role, (user, system) in {"client": client, **daemons}.items():
        total += user + system
        lines.append(
            f"  {role:<16} {1000 * (user + system) / max(ops, 1):9.1f}  "
            f"(user {1000 * user / max(ops, 1):.1f}, sys {1000 * system / max(ops, 1):.1f})"
        )
    lines.append(
        f"  {'all':<16} {1000 * total / max(ops, 1):9.1f}  ({total / seconds:.2f} cores busy "
        f"on average)"
    )
    return lines


def profile(workload: str, args: argparse.Namespace, spy: str) -> tuple[list[Path], list[str]]:
    """Run one workload and sample its processes; returns the profile files and CPU lines."""
    workers = 2 if workload in ("tasks", "wordcount") else 0
    outputs = []
    with temporary_cluster(6, workers=workers, worker_slots=1 if workers else 0) as cluster:
        client = subprocess.Popen(
            [sys.executable, "-m", "bench.profile_workload", workload, cluster.address,
             str(args.seconds + 3)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert client.stdout is not None
        if client.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the {workload} workload did not start")
        groups = roles(cluster)
        before = {role: cpu_of(pids) for role, pids in groups.items()}
        began = time.monotonic()
        time.sleep(1.0)
        spies = []
        for role, pid in targets(cluster, workload, client.pid).items():
            out = args.out / f"{workload}-{role}.{'svg' if args.svg else 'txt'}"
            command = [
                spy, "record", "--pid", str(pid), "--duration", str(args.seconds),
                "--rate", str(args.rate), "--output", str(out),
                "--format", "flamegraph" if args.svg else "raw",
            ]  # fmt: skip
            # --native has to pause the process for each sample; without it, sampling does not.
            command.append("--native" if args.native else "--nonblocking")
            spies.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=sys.stderr))
            outputs.append(out)
        for spy_process in spies:
            spy_process.wait()
        tail = client.communicate(timeout=args.seconds + 120)[0].strip().split()
        elapsed = time.monotonic() - began
        after = {role: cpu_of(pids) for role, pids in groups.items()}
        daemons = {
            role: (after[role][0] - before[role][0], after[role][1] - before[role][1])
            for role in groups
        }
        ops, user, system = int(tail[1]), float(tail[2]), float(tail[3])
        lines = cpu_report(workload, ops, (user, system), daemons, elapsed)
        say("\n".join(lines))
    return outputs, lines


PLUMBING = (
    "(threading.py)",
    "(<frozen runpy>)",
    "(asyncio/runners.py)",
    "(asyncio/base_events.py)",
    "(asyncio/events.py)",
    "(futures/thread.py)",
    "(common/lifecycle.py)",
)
OPAQUE = {
    "Runner.run (asyncio/runners.py)": "C under the uvloop event loop (gRPC core, uvloop)",
    "Thread.run (threading.py)": "C in a thread started from Python (e.g. gRPC's poller)",
}


def function_of(frame: str) -> str:
    """'name (path/to/file.py:123)' -> 'name (file.py)'."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    return f"{name} ({'/'.join(path.split('/')[-2:])})"


def summarize(path: Path, top: int) -> list[str]:
    """The functions with the largest inclusive and self share of the samples in `path`."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [function_of(f) for f in stack.split(";") if "(" in f]
        if not frames:
            continue
        total += count
        own[OPAQUE.get(frames[-1], frames[-1])] += count
        for name in set(frames):
            if not name.endswith(PLUMBING) and not name.startswith("<module>"):
                inclusive[name] += count
    if not total:
        return [f"{path.name}: no samples"]
    lines = [f"{path.name}: {total} samples"]
    lines += ["  inclusive:"] + [
        f"    {count / total:6.1%}  {name}" for name, count in inclusive.most_common(top)
    ]
    lines += ["  self:"] + [
        f"    {count / total:6.1%}  {name}" for name, count in own.most_common(top)
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Profile Shoal's daemons and client with py-spy.")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--rate", type=int, default=100, help="samples per second")
    parser.add_argument("--out", type=Path, default=None, help="directory for the profiles")
    parser.add_argument("--svg", action="store_true", help="flame graph SVGs, no summary")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--native", action="store_true", help="py-spy --native: C frames too")
    args = parser.parse_args(argv)
    spy = py_spy()
    if spy is None:
        print("skipped: py-spy is not installed (pip install py-spy)")
        return 0
    chosen = [w for w in args.workloads.split(",") if w]
    unknown = set(chosen) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    args.out = args.out or Path(tempfile.mkdtemp(prefix="shoal-profile-"))
    args.out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    cpu_lines: list[str] = []
    for workload in chosen:
        say(f"profiling {workload} for {args.seconds}s")
        outputs, lines = profile(workload, args, spy)
        files += outputs
        cpu_lines += lines
    if not args.svg:
        summary = cpu_lines + [
            line for path in files if path.exists() for line in summarize(path, args.top)
        ]
        (args.out / "summary.txt").write_text("\n".join(summary) + "\n")
        print("\n".join(summary))
    print(f"profiles in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
