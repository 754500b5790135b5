"""Storage figures of Shoal next to in-process baselines measured in the same run.

    python -m bench.storage [--quick] [--json]

Baselines (no network, no RPC, one process): zfec encode and decode of a 4 MiB stripe at
(4, 6) with the low-level `zfec.Encoder`/`zfec.Decoder`, xxh3-128 hashing, fsynced 1 MiB shard
file writes (write, fsync, rename, fsync the directory: what a node does), and an in-process
reference store that does what a put or get must do at the least: encode each stripe and write
its 6 shard files durably (in parallel, as 6 nodes would), or read and verify `k` shard files
(decoding when data shards are missing).

Shoal (a temporary LocalCluster of 6 nodes at (4, 6)): put/get of 1 MiB and 64 MiB objects,
4 KiB put/get ops/s with 1 and 8 concurrent callers (threads, each with its own Client) with
p50/p99 latency, and a 64 MiB get with 2 of the 6 nodes stopped. Timings are reported, never
asserted; data read back is checked byte for byte.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

import xxhash
import zfec

from bench.common import (
    MIB,
    Report,
    Row,
    emit,
    median_time,
    peak_rss_mib,
    percentile,
    say,
    temporary_cluster,
)
from shoal.client import Client

K, N = 4, 6
STRIPE = 4 * MIB
SMALL = 4 * 1024
BUCKET = "bench"
STOPPED = ["node-2", "node-5"]


@dataclass(frozen=True)
class Plan:
    """How long each part runs (default vs --quick)."""

    runs_small: int  # timed runs of 1 MiB put/get
    runs_big: int  # timed runs of 64 MiB put/get
    runs_codec: int  # timed runs of each codec/hash/fsync baseline
    ops_seconds: float  # duration of each 4 KiB ops/s phase
    big: int  # bytes of the big object


DEFAULT = Plan(runs_small=10, runs_big=3, runs_codec=5, ops_seconds=3.0, big=64 * MIB)
QUICK = Plan(runs_small=5, runs_big=1, runs_codec=3, ops_seconds=1.0, big=64 * MIB)


# In-process baselines ---------------------------------------------------------------------------


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(directory: Path, name: str, data: bytes | memoryview) -> None:
    """Write a file as a node writes a shard: temp file, fsync, rename, fsync the directory."""
    tmp = directory / "incoming" / name
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, directory / "shards" / name)
    fsync_dir(directory / "shards")


class ReferenceStore:
    """What a put or get must do at the least, in one process: no network, no RPC, no metadata.

    put: per stripe (one at a time), encode with zfec, hash each shard (xxh3-128), write the n
    shard files durably, in parallel, into n directories on the same disk as the cluster.
    get: per stripe, read the first k available shards, verify their checksums, join (or
    decode when a data shard is missing).
    """

    def __init__(self, root: Path, k: int = K, n: int = N, stripe: int = STRIPE) -> None:
        self.k, self.n, self.stripe = k, n, stripe
        self.encoder = zfec.Encoder(k, n)
        self.decoder = zfec.Decoder(k, n)
        self.dirs = [root / f"disk-{i}" for i in range(n)]
        for directory in self.dirs:
            (directory / "incoming").mkdir(parents=True)
            (directory / "shards").mkdir()
        self.pool = ThreadPoolExecutor(max_workers=n * 8, thread_name_prefix="reference")
        self.manifests: dict[str, list[tuple[int, list[bytes]]]] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self.pool.shutdown()

    def encode(self, stripe: memoryview) -> list[bytes | memoryview]:
        length = -(-len(stripe) // self.k)
        blocks: list[bytes | memoryview] = []
        for i in range(self.k):
            block = stripe[i * length : (i + 1) * length]
            blocks.append(block if len(block) == length else bytes(block).ljust(length, b"\0"))
        return [*blocks, *self.encoder.encode(tuple(blocks), tuple(range(self.k, self.n)))]

    def put(self, key: str, data: bytes) -> None:
        view = memoryview(data)
        manifest = []
        for number, offset in enumerate(range(0, max(len(view), 1), self.stripe)):
            piece = view[offset : offset + self.stripe]
            shards = self.encode(piece)
            sums = [xxhash.xxh3_128_digest(shard) for shard in shards]
            writes = [
                self.pool.submit(write_durably, self.dirs[i], f"{key}.{number}.{i}", shard)
                for i, shard in enumerate(shards)
            ]
            for write in writes:
                write.result()
            manifest.append((len(piece), sums))
        with self._lock:
            self.manifests[key] = manifest

    def get(self, key: str, lost: frozenset[int] = frozenset()) -> bytes:
        out = []
        for number, (size, sums) in enumerate(self.manifests[key]):
            chosen = [i for i in range(self.n) if i not in lost][: self.k]
            shards = []
            for i in chosen:
                data = (self.dirs[i] / "shards" / f"{key}.{number}.{i}").read_bytes()
                if xxhash.xxh3_128_digest(data) != sums[i]:
                    raise RuntimeError(f"reference store: shard {i} of {key} is corrupt")
                shards.append(data)
            if chosen == list(range(self.k)):
                blocks = shards
            else:
                blocks = self.decoder.decode(tuple(shards), tuple(chosen))
            out.append(b"".join(blocks)[:size])
        return b"".join(out)


def codec_baselines(report: Report, plan: Plan, scratch: Path) -> None:
    """zfec, xxh3 and fsync on their own."""
    stripe = os.urandom(STRIPE)
    store = ReferenceStore(scratch / "codec")
    try:
        shards = store.encode(memoryview(stripe))
        encode_s = median_time(lambda: store.encode(memoryview(stripe)), plan.runs_codec)
        survivors = (shards[0], shards[1], shards[4], shards[5])
        decoded = b"".join(store.decoder.decode(survivors, (0, 1, 4, 5)))
        if decoded[:STRIPE] != stripe:
            raise RuntimeError("zfec decode did not return the stripe")
        decode_s = median_time(
            lambda: store.decoder.decode(survivors, (0, 1, 4, 5)), plan.runs_codec
        )
        hash_s = median_time(lambda: xxhash.xxh3_128_digest(stripe), plan.runs_codec * 4)
        shard = os.urandom(MIB)
        counter = itertools.count()
        fsync_s = median_time(
            lambda: write_durably(store.dirs[0], f"fsync-{next(counter)}", shard),
            plan.runs_codec * 2,
        )
    finally:
        store.close()
    mib = STRIPE / MIB
    rows = [
        ("zfec encode, 4 MiB stripe at (4, 6)", mib / encode_s, "zfec.Encoder, 1 thread"),
        ("zfec decode, 4 MiB stripe, 2 data shards lost", mib / decode_s, "zfec.Decoder, 1 thread"),
        ("xxh3-128 hash", mib / hash_s, "xxhash.xxh3_128_digest"),
        ("fsynced 1 MiB shard file", 1 / fsync_s, "write+fsync+rename+fsync dir"),
    ]
    for metric, value, name in rows:
        report.add(Row(metric, "MiB/s", None, value, name))
    report.extra["fsync_shard_ms"] = fsync_s * 1000
    report.notes.append(f"one fsynced 1 MiB shard file: {fsync_s * 1000:.1f} ms")


# Operations against Shoal and the reference -------------------------------------------------------


Op = Callable[[int, int], None]
PutOp = tuple[Op, list[str]]


@dataclass
class OpsResult:
    """Throughput and latencies of a closed-loop ops phase."""

    ops_per_s: float
    p50_ms: float
    p99_ms: float
    ops: int


def closed_loop(op: Op, callers: int, seconds: float) -> OpsResult:
    """Run `op(caller, sequence)` back to back in `callers` threads for `seconds`."""
    latencies: list[list[float]] = [[] for _ in range(callers)]
    start = threading.Barrier(callers + 1)
    deadline = 0.0

    def caller(index: int) -> None:
        start.wait()
        sequence = 0
        while (t0 := time.perf_counter()) < deadline:
            op(index, sequence)
            latencies[index].append(time.perf_counter() - t0)
            sequence += 1

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    deadline = began + seconds
    start.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    flat = [value for values in latencies for value in values]
    return OpsResult(
        ops_per_s=len(flat) / elapsed,
        p50_ms=percentile(flat, 50) * 1000,
        p99_ms=percentile(flat, 99) * 1000,
        ops=len(flat),
    )


def ops_rows(report: Report, what: str, callers: int, shoal: OpsResult, ref: OpsResult) -> None:
    name = "in-process reference"
    label = f"{what} 4 KiB, {callers} caller{'s' if callers > 1 else ''}"
    report.add(Row(label, "ops/s", shoal.ops_per_s, ref.ops_per_s, name))
    report.add(Row(f"{label}, p50", "ms", shoal.p50_ms, ref.p50_ms, name, higher_is_better=False))
    report.add(Row(f"{label}, p99", "ms", shoal.p99_ms, ref.p99_ms, name, higher_is_better=False))


def put_op(client_for: Callable[[int], Client], prefix: str, payload: bytes) -> PutOp:
    """A closed-loop op putting `payload` under a fresh key; remembers the keys it wrote."""
    keys: list[str] = []

    def op(caller: int, sequence: int) -> None:
        key = f"{prefix}/{caller}/{sequence}"
        client_for(caller).put(BUCKET, key, payload)
        keys.append(key)

    return op, keys


def ref_put_op(ref: ReferenceStore, prefix: str, payload: bytes) -> PutOp:
    """The reference's version of `put_op`."""
    keys: list[str] = []

    def op(caller: int, sequence: int) -> None:
        key = f"{prefix}-{caller}-{sequence}"
        ref.put(key, payload)
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
        shoal_op, shoal_keys = put_op(clients.__getitem__, f"small-{callers}", payload)
        ref_op, ref_keys = ref_put_op(ref, f"small-{callers}", payload)
        shoal_result = closed_loop(shoal_op, callers, plan.ops_seconds)
        ref_result = closed_loop(ref_op, callers, plan.ops_seconds)
        ops_rows(report, "put", callers, shoal_result, ref_result)
        written[callers] = (shoal_keys, ref_keys)
    for callers in (1, 8):
        say(f"  4 KiB gets, {callers} caller(s)")
        shoal_keys, ref_keys = written[callers]
        shoal_op = get_op(lambda c, key: clients[c].get(BUCKET, key), shoal_keys, SMALL)
        ref_op = get_op(lambda c, key: ref.get(key), ref_keys, SMALL)
        shoal_result = closed_loop(shoal_op, callers, plan.ops_seconds)
        ref_result = closed_loop(ref_op, callers, plan.ops_seconds)
        ops_rows(report, "get", callers, shoal_result, ref_result)


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
    shoal_put_s = median_time(shoal_put, runs, warmup)
    if client.get(BUCKET, key) != data:
        raise RuntimeError(f"a {label} object did not read back byte for byte")
    shoal_get_s = median_time(lambda: client.get(BUCKET, key), runs, warmup)
    # Before the reference's buffers: the client's own peak with this object size.
    report.extra[f"peak_rss_mib_after_{size // MIB}mib"] = peak_rss_mib()
    ref_put_s = median_time(ref_put, runs, warmup)
    if ref.get(key) != data:
        raise RuntimeError(f"the reference did not read a {label} object back")
    ref_get_s = median_time(lambda: ref.get(key), runs, warmup)
    mib = size / MIB
    name = "in-process reference"
    report.add(Row(f"put {label} object", "MiB/s", mib / shoal_put_s, mib / ref_put_s, name))
    report.add(Row(f"get {label} object", "MiB/s", mib / shoal_get_s, mib / ref_get_s, name))
    return Stored(key, data, shoal_get_s)


def degraded_get(
    report: Report,
    plan: Plan,
    stop_nodes: Callable[[], None],
    client: Client,
    ref: ReferenceStore,
    stored: Stored,
) -> None:
    """A get of a stored object with 2 of the 6 nodes stopped (a decode in the reference)."""
    say(f"  degraded get: stopping {', '.join(STOPPED)}")
    stop_nodes()
    if client.get(BUCKET, stored.key) != stored.data:
        raise RuntimeError("the degraded get did not return the object byte for byte")
    shoal_s = median_time(lambda: client.get(BUCKET, stored.key), plan.runs_big, 0)
    lost = frozenset({0, 1})  # the reference's worst case: two data shards to decode around
    if ref.get(stored.key, lost) != stored.data:
        raise RuntimeError("the reference degraded read did not return the object")
    ref_s = median_time(lambda: ref.get(stored.key, lost), plan.runs_big, 0)
    mib = len(stored.data) / MIB
    label = f"get {len(stored.data) // MIB} MiB, 2 of 6 nodes stopped"
    report.add(Row(label, "MiB/s", mib / shoal_s, mib / ref_s, "reference read + zfec decode"))
    report.notes.append(
        f"degraded get: {shoal_s / stored.shoal_get_s:.2f}x the time of the healthy get "
        f"({mib / shoal_s:.0f} vs {mib / stored.shoal_get_s:.0f} MiB/s)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Shoal storage figures vs in-process baselines.")
    parser.add_argument("--quick", action="store_true", help="fewer runs and shorter phases")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else DEFAULT
    report = Report(f"storage: 6 nodes at (4, 6), stripe 4 MiB{' (--quick)' if args.quick else ''}")
    started = time.perf_counter()
    with TemporaryDirectory(prefix="shoal-bench-storage-") as scratch_dir:
        scratch = Path(scratch_dir)
        say("baselines: zfec, xxh3, fsync")
        codec_baselines(report, plan, scratch)
        say("starting a local cluster (6 nodes)")
        ref = ReferenceStore(scratch / "reference")
        with temporary_cluster(6) as cluster:
            clients = [Client(cluster.address) for _ in range(8)]
            try:
                client = clients[0]
                client.create_bucket(BUCKET, k=K, n=N)
                say("Shoal and the in-process reference")
                object_rows(report, client, ref, MIB, plan.runs_small)
                small_ops(report, plan, ref, clients)
                big = object_rows(report, client, ref, plan.big, plan.runs_big)
                stop = lambda: cluster.stop_nodes(STOPPED)  # noqa: E731
                degraded_get(report, plan, stop, client, ref, big)
            finally:
                for each in clients:
                    each.close()
                ref.close()
    client_rss = report.extra[f"peak_rss_mib_after_{plan.big // MIB}mib"]
    report.notes.append(
        f"client peak RSS (ru_maxrss) after Shoal's {plan.big // MIB} MiB put and gets: "
        f"{client_rss:.0f} MiB, including the {plan.big // MIB} MiB payload and the bytes get "
        f"returned; whole bench process at the end: {peak_rss_mib():.0f} MiB"
    )
    report.notes.append(f"total run time: {time.perf_counter() - started:.0f}s")
    report.extra["peak_rss_mib"] = peak_rss_mib()
    emit(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
