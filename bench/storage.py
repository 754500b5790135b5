"""Storage figures of Shoal next to baselines measured in the same run.

    python -m bench.storage [--quick | --full] [--json]

Baselines (bench/reference.py, bench/grpc_baseline.py): zfec encode/decode of a 4 MiB stripe
at (4, 6), xxh3-128, fsynced 1 MiB shard files, a minimal grpc.aio streaming servicer, and the
in-process ceiling (encode + fsync of the 6 shard files of each stripe, in parallel).

Shoal (a temporary LocalCluster of 6 nodes at (4, 6)): put/get of 1 MiB and 64 MiB objects,
4 KiB put/get ops/s with 1 and 8 concurrent callers with p50/p99, four concurrent client
processes putting and getting 64 MiB each, a streamed put and get of a large file (1 GiB by
default) in a client process of its own whose peak RSS is reported, the peak RSS of every
daemon, and a 64 MiB get with 2 of the 6 nodes stopped. Timings are reported, never asserted;
data read back is checked.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import xxhash

from bench import grpc_baseline
from bench.common import (
    MIB,
    Report,
    Row,
    daemon_peak_rss,
    emit,
    median_time,
    say,
    summarize_rss,
    temporary_cluster,
    timed,
)
from bench.ops import Op, OpsResult, closed_loop
from bench.reference import STRIPE, K, N, ReferenceStore, codec_baselines
from shoal.client import Client
from shoal.client.cli.local_cluster import LocalCluster

SMALL = 4 * 1024
BUCKET = "bench"
STOPPED = ["node-2", "node-5"]
CONCURRENT_CLIENTS = 4
REFERENCE = "in-process ceiling"


@dataclass(frozen=True)
class Plan:
    """How long each part runs (--quick, default, --full)."""

    name: str
    runs_small: int  # timed runs of 1 MiB put/get
    runs_big: int  # timed runs of 64 MiB put/get (and of the degraded get)
    runs_codec: int  # timed runs of each codec/hash/fsync baseline
    ops_seconds: float  # duration of each 4 KiB ops/s phase
    big: int  # bytes of the big object
    huge: int  # bytes of the streamed object (put from a file, read with stream)
    huge_runs: int  # put+get runs of the streamed object
    concurrent: int  # bytes each of the concurrent clients puts and gets


QUICK = Plan("quick", 5, 1, 3, 1.0, 64 * MIB, 256 * MIB, 1, 16 * MIB)
DEFAULT = Plan("default", 10, 5, 5, 3.0, 64 * MIB, 1024 * MIB, 1, 64 * MIB)
FULL = Plan("full", 20, 5, 7, 5.0, 64 * MIB, 1024 * MIB, 3, 64 * MIB)


# Small operations -------------------------------------------------------------------------------


def ops_rows(report: Report, what: str, callers: int, shoal: OpsResult, ref: OpsResult) -> None:
    label = f"{what} 4 KiB, {callers} caller{'s' if callers > 1 else ''}"
    key = f"{what}_4kib_{callers}"
    report.add(Row(label, "ops/s", shoal.ops_per_s, ref.ops_per_s, REFERENCE), key + "_ops")
    report.add(
        Row(f"{label}, p50", "ms", shoal.p50_ms, ref.p50_ms, REFERENCE, higher_is_better=False),
        key + "_p50_ms",
    )
    report.add(
        Row(f"{label}, p99", "ms", shoal.p99_ms, ref.p99_ms, REFERENCE, higher_is_better=False),
        key + "_p99_ms",
    )


def put_op(put: Callable[[int, str], object], prefix: str) -> tuple[Op, list[str]]:
    """A closed-loop op putting under a fresh key; remembers the keys it wrote."""
    keys: list[str] = []

    def op(caller: int, sequence: int) -> None:
        key = f"{prefix}-{caller}-{sequence}"
        put(caller, key)
        keys.append(key)

    return op, keys


def get_op(read: Callable[[int, str], bytes], keys: list[str], size: int) -> Op:
    """A closed-loop op reading a random key of `keys` (one seeded generator per caller)."""
    rngs: dict[int, random.Random] = {}

    def op(caller: int, sequence: int) -> None:
        key = rngs.setdefault(caller, random.Random(caller)).choice(keys)
        if len(read(caller, key)) != size:
            raise RuntimeError(f"short read of {key}")

    return op


def small_ops(report: Report, plan: Plan, ref: ReferenceStore, clients: list[Client]) -> None:
    """4 KiB put and get ops/s with 1 and 8 concurrent callers, each with its own Client."""
    payload = os.urandom(SMALL)
    written: dict[int, tuple[list[str], list[str]]] = {}
    for callers in (1, 8):
        say(f"  4 KiB puts, {callers} caller(s)")
        shoal_op, shoal_keys = put_op(
            lambda c, key: clients[c].put(BUCKET, key, payload), f"small-{callers}"
        )
        ref_op, ref_keys = put_op(lambda c, key: ref.put(key, payload), f"small-{callers}")
        shoal_result = closed_loop(shoal_op, callers, plan.ops_seconds)
        ref_result = closed_loop(ref_op, callers, plan.ops_seconds)
        ops_rows(report, "put", callers, shoal_result, ref_result)
        written[callers] = (shoal_keys, ref_keys)
    for callers in (1, 8):
        say(f"  4 KiB gets, {callers} caller(s)")
        shoal_keys, ref_keys = written[8]
        shoal_op = get_op(lambda c, key: clients[c].get(BUCKET, key), shoal_keys, SMALL)
        ref_op = get_op(lambda c, key: ref.get(key), ref_keys, SMALL)
        shoal_result = closed_loop(shoal_op, callers, plan.ops_seconds)
        ref_result = closed_loop(ref_op, callers, plan.ops_seconds)
        ops_rows(report, "get", callers, shoal_result, ref_result)


# Whole objects --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    """An object stored in both Shoal and the reference, and how fast a healthy get was."""

    key: str
    data: bytes
    shoal_get_s: float


def object_rows(
    report: Report, client: Client, ref: ReferenceStore, size: int, runs: int
) -> Stored:
    """Put and get of `size`-byte objects in Shoal and the reference (median of `runs`)."""
    data = os.urandom(size)
    label = f"{size // MIB} MiB"
    counter = itertools.count()
    key = ""

    def shoal_put() -> None:
        nonlocal key
        key = f"object-{size}-{next(counter)}"
        client.put(BUCKET, key, data)

    def ref_put() -> None:
        ref.put(key, data)  # the same key as the last Shoal put

    warmup = 1 if runs > 2 else 0
    say(f"  {label} put/get")
    # Shoal and the ceiling alternate, run by run, so a burst of load elsewhere on the machine
    # hits both figures alike.
    shoal_put_s, ref_put_s = interleaved(shoal_put, ref_put, runs, warmup)
    if client.get(BUCKET, key) != data:
        raise RuntimeError(f"a {label} object did not read back byte for byte")
    if ref.get(key) != data:
        raise RuntimeError(f"the reference did not read a {label} object back")
    shoal_get_s, ref_get_s = interleaved(
        lambda: client.get(BUCKET, key), lambda: ref.get(key), runs, warmup
    )
    mib = size / MIB
    tag = f"{size // MIB}mib"
    report.add(
        Row(f"put {label} object", "MiB/s", mib / shoal_put_s, mib / ref_put_s, REFERENCE),
        f"put_{tag}",
        f"ceiling_put_{tag}",
    )
    report.add(
        Row(f"get {label} object", "MiB/s", mib / shoal_get_s, mib / ref_get_s, REFERENCE),
        f"get_{tag}",
        f"ceiling_get_{tag}",
    )
    return Stored(key, data, shoal_get_s)


def dropped_pages_ceiling(
    report: Report, client: Client, scratch: Path, size: int, runs: int
) -> None:
    """The put against an in-process ceiling that also drops each shard file's pages once it
    is durable, as nodes do past their written_cache window: the ceiling the issue defines
    keeps every page, and on a machine where growing the page cache is dear, that part of a
    node's gain is the page cache's, not its code's (docs/performance.md, round 9)."""
    data = os.urandom(size)
    counter = itertools.count()
    ref = ReferenceStore(scratch / "reference-dropping-pages", drop_pages=True)
    label = f"{size // MIB} MiB"
    say(f"  {label} put: the in-process ceiling dropping written pages")
    try:
        shoal_s, ref_s = interleaved(
            lambda: client.put(BUCKET, f"dropping-{size}-{next(counter)}", data),
            lambda: ref.put(f"dropping-{next(counter)}", data),
            runs,
            1 if runs > 2 else 0,
        )
    finally:
        ref.close()
    mib = size / MIB
    report.add(
        Row(
            f"put {label} object, vs a ceiling dropping pages", "MiB/s", mib / shoal_s,
            mib / ref_s, "in-process ceiling, written pages dropped once durable",
        ),
        baseline_key=f"ceiling_dropping_put_{size // MIB}mib",
    )  # fmt: skip


def interleaved(
    first: Callable[[], object], second: Callable[[], object], runs: int, warmup: int
) -> tuple[float, float]:
    """Median seconds of `first` and of `second`, called alternately `runs` times each."""
    times: tuple[list[float], list[float]] = ([], [])
    for run in range(warmup + max(runs, 1)):
        for fn, out in ((first, times[0]), (second, times[1])):
            elapsed = timed(fn)
            if run >= warmup:
                out.append(elapsed)
    return statistics.median(times[0]), statistics.median(times[1])


def wire_rows(report: Report, grpc: grpc_baseline.GrpcFigures) -> None:
    """Shoal's 64 MiB put/get and 4 KiB ops against what a bare grpc.aio servicer moves."""
    figures = report.figures
    name = "bare grpc.aio stream"
    # A put sends n/k times the object's bytes; the baseline is the object rate the bare
    # stream's bytes would carry.
    report.add(
        Row(
            "put 64 MiB object, vs the wire", "MiB/s", figures.get("put_64mib"),
            grpc.upload_mib_s * K / N, f"{name} upload x k/n (shard bytes are n/k x object)",
        ),
        baseline_key="grpc_put_equivalent",
    )  # fmt: skip
    report.add(
        Row(
            "get 64 MiB object, vs the wire", "MiB/s", figures.get("get_64mib"),
            grpc.download_mib_s, f"{name} download, 1 MiB messages",
        ),
        baseline_key="grpc_download",
    )  # fmt: skip
    report.add(
        Row(
            "get 4 KiB, 8 callers, vs the wire", "ops/s", figures.get("get_4kib_8_ops"),
            grpc.echo_ops_8, "bare grpc.aio unary 4 KiB echo, 8 callers",
        ),
        baseline_key="grpc_echo_8_ops",
    )  # fmt: skip
    report.add(Row("bare grpc.aio unary 4 KiB echo, 1 caller, p50", "ms", None, grpc.echo_p50_ms))
    report.figures["grpc_upload"] = grpc.upload_mib_s
    report.figures["grpc_echo_p50_ms"] = grpc.echo_p50_ms


def degraded_get(
    report: Report, plan: Plan, cluster: LocalCluster, client: Client, ref: ReferenceStore,
    stored: Stored,
) -> None:  # fmt: skip
    """A get of a stored object with 2 of the 6 nodes stopped (a decode in the reference).

    The ratio to the healthy get compares like with like: both are Shoal's gets timed back to
    back on their own, the healthy ones right before the nodes stop (the first healthy figure
    may be minutes old) and the degraded ones right after. The comparison with the reference
    (read k shard files + zfec decode) alternates the two, as the other ceiling rows do; that
    alternation costs Shoal's figure some 8% here (cache and allocator churn of the reference
    running in the same process), so it is not mixed into the ratio.
    """

    def get() -> bytes:
        return client.get(BUCKET, stored.key)

    healthy_s = median_time(get, plan.runs_big, 0)
    say(f"  degraded get: stopping {', '.join(STOPPED)}")
    cluster.stop_nodes(STOPPED)
    if client.get(BUCKET, stored.key) != stored.data:
        raise RuntimeError("the degraded get did not return the object byte for byte")
    lost = frozenset({0, 1})  # the reference's worst case: two data shards to decode around
    if ref.get(stored.key, lost) != stored.data:
        raise RuntimeError("the reference degraded read did not return the object")
    degraded_s = median_time(get, plan.runs_big, 0)
    shoal_s, ref_s = interleaved(get, lambda: ref.get(stored.key, lost), plan.runs_big, 0)
    mib = len(stored.data) / MIB
    tag = f"{len(stored.data) // MIB}mib"
    label = f"get {len(stored.data) // MIB} MiB, 2 of 6 nodes stopped"
    report.add(
        Row(label, "MiB/s", mib / shoal_s, mib / ref_s, "reference read + zfec decode"),
        f"degraded_get_alternating_{tag}",
    )
    report.add(
        Row(
            "degraded get vs healthy get, each on its own", "MiB/s", mib / degraded_s,
            mib / healthy_s, "Shoal's healthy get, timed just before",
        ),
        f"degraded_get_{tag}",
        f"healthy_get_{tag}",
    )  # fmt: skip


# Client processes -------------------------------------------------------------------------------


def write_source(path: Path, size: int) -> str:
    """Write `size` bytes of varied data to `path` (each MiB differs); returns its xxh3-128."""
    block = os.urandom(MIB)
    hasher = xxhash.xxh3_128()
    with path.open("wb") as handle:
        for i in range(-(-size // MIB)):
            piece = (i.to_bytes(8, "little") + block[8:])[: size - i * MIB]
            handle.write(piece)
            hasher.update(piece)
    return hasher.hexdigest()


def client_processes(
    address: str, keys: list[str], source: Path, runs: int = 1
) -> list[dict[str, Any]]:
    """Run one `bench.client_proc` per key, all phases in step; their JSON reports."""
    command = [sys.executable, "-m", "bench.client_proc", address, BUCKET]
    procs = [
        subprocess.Popen(
            [*command, key, str(source), "--runs", str(runs), "--wait-go"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for key in keys
    ]
    try:
        for phase in ("put", "get"):
            for proc in procs:
                assert proc.stdout is not None
                line = proc.stdout.readline().strip()
                if line != f"ready {phase}":
                    raise RuntimeError(f"client process: expected 'ready {phase}', got {line!r}")
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
        reports = []
        for proc in procs:
            out, _ = proc.communicate(timeout=3600)
            if proc.returncode != 0:
                raise RuntimeError(f"client process exited with {proc.returncode}")
            reports.append(json.loads(out.strip().splitlines()[-1]))
        return reports
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def phase_rate(reports: list[dict[str, Any]], phase: str) -> float:
    """MiB/s over all clients: their bytes over the span from the first start to the last end."""
    spans = [report["phases"][phase] for report in reports]
    runs = sum(len(report[f"{phase}_s"]) for report in reports)
    total = sum(int(report["size"]) for report in reports) * runs / len(reports)
    span = max(end for _s, end in spans) - min(start for start, _e in spans)
    return float(total / MIB / span)


def concurrent_clients(
    report: Report, plan: Plan, address: str, ref: ReferenceStore, scratch: Path
) -> None:
    """Four client processes put (then get) their own object at the same time."""
    size = plan.concurrent
    label = f"{size // MIB} MiB each, {CONCURRENT_CLIENTS} clients at once"
    say(f"  {CONCURRENT_CLIENTS} concurrent client processes, {size // MIB} MiB each")
    source = scratch / "concurrent.bin"
    digest = write_source(source, size)
    keys = [f"concurrent-{i}" for i in range(CONCURRENT_CLIENTS)]
    reports = client_processes(address, keys, source)
    if any(r["digest"] != digest for r in reports):
        raise RuntimeError("a concurrent client read back different bytes")
    with ThreadPoolExecutor(CONCURRENT_CLIENTS) as pool:
        t0 = time.perf_counter()
        list(pool.map(lambda key: ref.put_file(key, source), keys))
        ref_put = time.perf_counter() - t0
        t0 = time.perf_counter()
        list(pool.map(lambda key: sum(map(len, ref.stripes(key))), keys))
        ref_get = time.perf_counter() - t0
    total = size * CONCURRENT_CLIENTS / MIB
    name = f"{REFERENCE}, {CONCURRENT_CLIENTS} threads"
    report.add(
        Row(f"put {label}", "MiB/s", phase_rate(reports, "put"), total / ref_put, name),
        "put_4clients",
    )
    report.add(
        Row(f"get {label}", "MiB/s", phase_rate(reports, "get"), total / ref_get, name),
        "get_4clients",
    )


def streamed(report: Report, plan: Plan, address: str, ref: ReferenceStore, scratch: Path) -> None:
    """A put from a file and a streamed get, in a client process of its own (peak RSS)."""
    size = plan.huge
    label = f"{size // MIB} MiB" if size < 1024 * MIB else f"{size / (1024 * MIB):g} GiB"
    say(f"  {label} streamed put/get (generating the file)")
    source = scratch / "huge.bin"
    digest = write_source(source, size)
    (result,) = client_processes(address, ["huge"], source, plan.huge_runs)
    if result["digest"] != digest:
        raise RuntimeError(f"the {label} object did not read back identical")
    say(f"  {label}: the in-process ceiling")
    t0 = time.perf_counter()
    ref.put_file("huge", source)
    ref_put = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref_digest = xxhash.xxh3_128()
    for stripe in ref.stripes("huge"):
        ref_digest.update(stripe)
    ref_get = time.perf_counter() - t0
    if ref_digest.hexdigest() != digest:
        raise RuntimeError(f"the reference did not read the {label} object back")
    source.unlink()
    mib = size / MIB
    put_s = sorted(result["put_s"])[len(result["put_s"]) // 2]
    get_s = sorted(result["get_s"])[len(result["get_s"]) // 2]
    tag = "1gib" if size == 1024 * MIB else f"{size // MIB}mib"
    report.add(
        Row(f"put {label} from a file (streamed)", "MiB/s", mib / put_s, mib / ref_put, REFERENCE),
        f"put_{tag}",
    )
    report.add(
        Row(f"get {label} with stream()", "MiB/s", mib / get_s, mib / ref_get, REFERENCE),
        f"get_{tag}",
    )
    report.figures["client_rss_mib"] = float(result["peak_rss_mib"])
    report.figures["client_rss_after_put_mib"] = float(result["after_put_rss_mib"])
    report.figures["client_rss_object_mib"] = mib
    report.notes.append(
        f"client peak RSS (VmHWM of a process doing only the client work) for a {label} put "
        f"from a file and get with stream(): {result['peak_rss_mib']:.0f} MiB "
        f"({result['after_put_rss_mib']:.0f} MiB after the put)"
    )


# Main ---------------------------------------------------------------------------------------------


def measure(plan: Plan) -> Report:
    """Every storage figure of `plan`, in one report."""
    report = Report(f"storage: 6 nodes at (4, 6), stripe {STRIPE // MIB} MiB ({plan.name})")
    started = time.perf_counter()
    with TemporaryDirectory(prefix="shoal-bench-storage-") as scratch_dir:
        scratch = Path(scratch_dir)
        say("baselines: zfec, xxh3, fsync")
        codec_baselines(report, plan.runs_codec, scratch)
        say("baseline: a bare grpc.aio streaming servicer")
        grpc = grpc_baseline.measure(plan.big, plan.runs_big, plan.ops_seconds)
        say("starting a local cluster (6 nodes)")
        ref = ReferenceStore(scratch / "reference")
        with temporary_cluster(6) as cluster:
            clients = [Client(cluster.address) for _ in range(8)]
            try:
                client = clients[0]
                client.create_bucket(BUCKET, k=K, n=N)
                say("Shoal and the in-process ceiling")
                object_rows(report, client, ref, MIB, plan.runs_small)
                small_ops(report, plan, ref, clients)
                big = object_rows(report, client, ref, plan.big, plan.runs_big)
                wire_rows(report, grpc)
                concurrent_clients(report, plan, cluster.address, ref, scratch)
                if plan.huge:
                    streamed(report, plan, cluster.address, ref, scratch)
                # Last of the healthy cluster's rows: its 12 extra 64 MiB puts shift no other.
                dropped_pages_ceiling(report, client, scratch, plan.big, plan.runs_big)
                daemons = daemon_peak_rss(cluster)
                degraded_get(report, plan, cluster, client, ref, big)
            finally:
                for each in clients:
                    each.close()
                ref.close()
    report.extra["daemon_peak_rss_mib"] = daemons
    report.notes.append(f"daemons' peak RSS (VmHWM): {summarize_rss(daemons)}")
    report.notes.append(f"total run time: {time.perf_counter() - started:.0f}s")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Shoal storage figures vs in-process baselines.")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer runs, 256 MiB streamed object")
    size.add_argument("--full", action="store_true", help="more runs, 3 x 1 GiB streamed")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL if args.full else DEFAULT
    emit(measure(plan), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
