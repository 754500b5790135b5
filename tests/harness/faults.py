"""Fault-injection helpers: a ledger of put attempts, writer/reader threads, on-disk shard
inventories, status probes, and network namespaces for partition tests.

Payloads are generated from a seed (`payload(seed, size)`) and remembered by digest, so a long
soak test can check every byte it reads without keeping every object in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.client import Client, NotFound, ObjectInfo, ShoalError
from shoal.client.cli.local_cluster import LocalCluster
from shoal.common.errors import InvalidArgument
from shoal.common.names import parse_shard_id, shard_id
from tests.harness.cluster import wait_for

# Payloads ----------------------------------------------------------------------------------


def payload(seed: int, size: int) -> bytes:
    """Deterministic pseudo-random bytes for (seed, size)."""
    return random.Random(seed).randbytes(size)


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


INFLIGHT, ACKED, FAILED = "inflight", "acked", "failed"
DELETED = "deleted"  # the digest a delete attempt is recorded under
STRIPE_HINT = 1024 * 1024  # ranged reads span up to two stripes of the test clusters


@dataclass
class Attempt:
    """One put of a key: what was sent and how it ended."""

    seed: int
    size: int
    digest: str
    state: str = INFLIGHT
    version_id: str = ""
    error: str = ""


class Ledger:
    """Thread-safe record of every put attempt per key, in the order they were made.

    A put that returned is *acknowledged*; one that raised is *in doubt* (its commit may have
    landed before the error, e.g. when the coordinator died before replying). For a key, the
    stored object must be the last acknowledged attempt or an attempt made after it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.attempts: dict[str, list[Attempt]] = {}
        self.inflight = 0
        self.acks = 0
        self.failures = 0
        self.errors: list[str] = []

    def begin(self, key: str, seed: int, size: int, *, delete: bool = False) -> Attempt:
        attempt = Attempt(seed, size, DELETED if delete else digest(payload(seed, size)))
        with self._lock:
            self.attempts.setdefault(key, []).append(attempt)
            self.inflight += 1
        return attempt

    def finish(
        self, attempt: Attempt, info: ObjectInfo | None, error: str = "", *, ok: bool = False
    ) -> None:
        """Record how an attempt ended: acknowledged with `info` (or `ok` for a delete)."""
        with self._lock:
            self.inflight -= 1
            if info is not None or ok:
                attempt.state = ACKED
                attempt.version_id = info.version_id if info is not None else ""
                self.acks += 1
            else:
                attempt.state, attempt.error = FAILED, error
                self.failures += 1
                self.errors.append(error)

    def acked_keys(self) -> list[str]:
        with self._lock:
            return [k for k, a in self.attempts.items() if any(x.state == ACKED for x in a)]

    def stored(self, key: str) -> bool:
        """True when the key's last acknowledged operation is a put (it must be readable)."""
        with self._lock:
            acked = [a for a in self.attempts.get(key, []) if a.state == ACKED]
            return bool(acked) and acked[-1].digest != DELETED

    def last_ack_index(self, key: str) -> int:
        """Index of the key's last acknowledged attempt (-1 if none)."""
        with self._lock:
            attempts = self.attempts.get(key, [])
            return max((i for i, a in enumerate(attempts) if a.state == ACKED), default=-1)

    def acceptable(self, key: str, since: int) -> dict[str, Attempt]:
        """Attempts a read of `key` may legitimately return, by digest: the last acknowledged
        one as of `since` and every attempt made after it."""
        with self._lock:
            return {a.digest: a for a in self.attempts.get(key, [])[max(since, 0) :]}

    def final(self, key: str) -> dict[str, Attempt]:
        """What `key` may hold once all writers have stopped."""
        return self.acceptable(key, self.last_ack_index(key))

    def acked_count(self) -> int:
        with self._lock:
            return self.acks


def put_and_record(
    client: Client, ledger: Ledger, bucket: str, key: str, seed: int, size: int
) -> bool:
    """Put one payload, recording the attempt; True if acknowledged."""
    attempt = ledger.begin(key, seed, size)
    try:
        info = client.put(bucket, key, payload(seed, size))
    except ShoalError as exc:
        ledger.finish(attempt, None, f"{type(exc).__name__}: {exc}")
        return False
    ledger.finish(attempt, info)
    return True


def delete_and_record(client: Client, ledger: Ledger, bucket: str, key: str) -> bool:
    """Delete a key, recording the attempt; True if acknowledged (NotFound counts: the key
    is absent either way)."""
    attempt = ledger.begin(key, 0, 0, delete=True)
    try:
        client.delete(bucket, key)
    except NotFound:
        pass
    except ShoalError as exc:
        ledger.finish(attempt, None, f"{type(exc).__name__}: {exc}")
        return False
    ledger.finish(attempt, None, ok=True)
    return True


class Writers:
    """Threads that put objects (each with its own Client) until stopped."""

    def __init__(
        self,
        address: str,
        bucket: str,
        ledger: Ledger,
        *,
        count: int,
        seed: int,
        sizes: tuple[int, int],
        overwrite_p: float = 0.0,
        delete_p: float = 0.0,
        empty_p: float = 0.0,
        pace_s: float = 0.0,
    ) -> None:
        self.address = address
        self.delete_p = delete_p
        self.empty_p = empty_p
        self.bucket = bucket
        self.ledger = ledger
        self.sizes = sizes
        self.overwrite_p = overwrite_p
        self.pace_s = pace_s
        self.stop = threading.Event()
        self.crashes: list[BaseException] = []
        self._threads = [
            threading.Thread(target=self._run, args=(i, seed * 1000 + i), daemon=True)
            for i in range(count)
        ]

    def start(self) -> Writers:
        for thread in self._threads:
            thread.start()
        return self

    def _run(self, index: int, seed: int) -> None:
        rng = random.Random(seed)
        mine: list[str] = []
        try:
            with Client(self.address, rpc_timeout_s=10.0) as client:
                while not self.stop.is_set():
                    roll = rng.random()
                    if mine and roll < self.delete_p:
                        delete_and_record(client, self.ledger, self.bucket, rng.choice(mine))
                        continue
                    if mine and roll < self.delete_p + self.overwrite_p:
                        key = rng.choice(mine)
                    else:
                        key = f"w{index}-{len(mine):05d}"
                        mine.append(key)
                    size = 0 if rng.random() < self.empty_p else rng.randint(*self.sizes)
                    seed = rng.getrandbits(48)
                    if not put_and_record(client, self.ledger, self.bucket, key, seed, size):
                        self.stop.wait(0.1)  # back off while the cluster cannot take writes
                    if self.pace_s:
                        self.stop.wait(rng.uniform(0, self.pace_s))
        except BaseException as exc:  # surfaced by join()
            self.crashes.append(exc)

    def join(self, timeout_s: float = 90.0) -> None:
        self.stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.1))
        alive = [t.name for t in self._threads if t.is_alive()]
        assert not alive, f"writer threads did not stop within {timeout_s}s: {alive}"
        assert not self.crashes, f"writer thread crashed: {self.crashes[0]!r}"


@dataclass
class ReadStats:
    gets: int = 0
    bytes_verified: int = 0
    transient: int = 0
    transient_kinds: dict[str, int] = field(default_factory=dict)
    wrong: list[str] = field(default_factory=list)


class Readers:
    """Threads that read acknowledged keys and check every byte (each with its own Client).

    A get may fail transiently (Unavailable, CorruptData, ConnectionFailed: counted), but it
    must never return bytes that no put of that key sent, and never NotFound for a key whose
    last acknowledged operation was a put (unless a delete of it was under way).
    """

    def __init__(
        self,
        address: str,
        bucket: str,
        ledger: Ledger,
        *,
        count: int,
        seed: int,
        ranged_p: float = 0.0,
    ) -> None:
        self.ranged_p = ranged_p
        self.address = address
        self.bucket = bucket
        self.ledger = ledger
        self.stats = ReadStats()
        self._lock = threading.Lock()
        self.stop = threading.Event()
        self.crashes: list[BaseException] = []
        self._threads = [
            threading.Thread(target=self._run, args=(seed * 7919 + i,), daemon=True)
            for i in range(count)
        ]

    def start(self) -> Readers:
        for thread in self._threads:
            thread.start()
        return self

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        try:
            with Client(self.address, rpc_timeout_s=10.0) as client:
                while not self.stop.is_set():
                    keys = self.ledger.acked_keys()
                    if not keys:
                        self.stop.wait(0.05)
                        continue
                    key = rng.choice(keys)
                    if rng.random() < self.ranged_p:
                        self._read_range(client, key, rng)
                    else:
                        self._read_one(client, key)
        except BaseException as exc:
            self.crashes.append(exc)

    def _read_one(self, client: Client, key: str) -> None:
        since = self.ledger.last_ack_index(key)
        try:
            data = client.get(self.bucket, key)
        except ShoalError as exc:
            self._failed(key, since, exc, "")
            return
        allowed = self.ledger.acceptable(key, since)
        with self._lock:
            self.stats.gets += 1
            if digest(data) in allowed:
                self.stats.bytes_verified += len(data)
            else:
                sizes = sorted({a.size for a in allowed.values()})
                self.stats.wrong.append(
                    f"{key}: got {len(data)} bytes matching no put of it (sizes sent: {sizes})"
                )

    def _failed(self, key: str, since: int, exc: ShoalError, what: str) -> None:
        """Classify a failed get: NotFound is only right if a delete of the key was acked or
        under way; anything else counts as a transient failure."""
        if isinstance(exc, NotFound):
            deleted = DELETED in self.ledger.acceptable(key, since)
            with self._lock:
                if deleted:
                    self.stats.gets += 1
                else:
                    self.stats.wrong.append(f"{key}{what}: acknowledged object not found: {exc}")
            return
        with self._lock:
            self.stats.transient += 1
            kind = type(exc).__name__ + what
            self.stats.transient_kinds[kind] = self.stats.transient_kinds.get(kind, 0) + 1
        self.stop.wait(0.1)  # back off while the cluster cannot serve this read

    def _read_range(self, client: Client, key: str, rng: random.Random) -> None:
        """A ranged get, checked against the same range of every acceptable put."""
        since = self.ledger.last_ack_index(key)
        candidates = [a for a in self.ledger.acceptable(key, since).values() if a.digest != DELETED]
        if not candidates:
            return
        smallest = min(a.size for a in candidates)
        offset = rng.randint(0, smallest)
        length = rng.randint(0, 2 * STRIPE_HINT)
        try:
            data = client.get(self.bucket, key, offset=offset, length=length)
        except ShoalError as exc:
            self._failed(key, since, exc, " (ranged)")
            return
        allowed = self.ledger.acceptable(key, since)
        ok = any(
            payload(a.seed, a.size)[offset : offset + length] == data
            for a in allowed.values()
            if a.digest != DELETED
        )
        with self._lock:
            self.stats.gets += 1
            if ok:
                self.stats.bytes_verified += len(data)
            else:
                self.stats.wrong.append(
                    f"{key}[{offset}:{offset + length}]: {len(data)} bytes match no put of it"
                )

    def join(self, timeout_s: float = 60.0) -> None:
        self.stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.1))
        alive = [t.name for t in self._threads if t.is_alive()]
        assert not alive, f"reader threads did not stop within {timeout_s}s: {alive}"
        assert not self.crashes, f"reader thread crashed: {self.crashes[0]!r}"


def verify_ledger(client: Client, ledger: Ledger, bucket: str) -> tuple[int, int, int, list[str]]:
    """Read every key back once writers have stopped; returns (gets, bytes verified, lost,
    problems). A key whose last acknowledged operation was a put must hold that object (or
    one of the puts made after it, whose outcome is in doubt); a deleted key may be absent."""
    listed = list_all(client, bucket)
    problems = [f"{key}: listed but never put" for key in set(listed) - set(ledger.attempts)]
    gets = verified = lost = 0
    for key in sorted(ledger.attempts):
        allowed = ledger.final(key)
        stored = ledger.stored(key)
        if key not in listed:
            if stored and DELETED not in allowed:
                lost += 1
                problems.append(f"{key}: acknowledged but not listed")
            continue
        try:
            data = client.get(bucket, key)
        except ShoalError as exc:
            lost += int(stored)
            problems.append(f"{key}: unreadable after healing: {exc}")
            continue
        gets += 1
        if digest(data) in allowed and listed[key].size == len(data):
            verified += len(data)
        else:
            lost += int(stored)
            problems.append(f"{key}: {len(data)} bytes match no put of it")
    return gets, verified, lost, problems


# Status ------------------------------------------------------------------------------------


def try_status(client: Client) -> dict[str, Any] | None:
    """The cluster status, or None while the coordinator cannot answer."""
    try:
        return client.status()
    except ShoalError:
        return None


def node_states(status: dict[str, Any]) -> dict[str, str]:
    return {n["node_id"]: n["state"] for n in status["nodes"]}


def wait_node_state(client: Client, node: str, state: str, timeout_s: float = 30.0) -> None:
    """Wait until the coordinator reports `node` in `state` (up, suspect, down)."""

    def reached() -> bool:
        status = try_status(client)
        return status is not None and node_states(status).get(node) == state

    wait_for(reached, timeout_s, f"{node} reported {state}")


def min_margin(status: dict[str, Any], full: int = 2) -> int:
    """The smallest stripe margin (healthy shards minus k); `full` when nothing is stored."""
    return min((int(m) for m in status["stripes_by_margin"]), default=full)


def fully_repaired(status: dict[str, Any] | None) -> bool:
    """Every stripe has n healthy shards and nothing is queued for repair."""
    return (
        status is not None
        and set(status["stripes_by_margin"]) <= {"2"}
        and status["repair"]["shards_remaining"] == 0
        and status["objects"]["degraded"] == 0
        and status["objects"]["unavailable"] == 0
    )


# Shards on disk ----------------------------------------------------------------------------


def shards_on_disk(data_dirs: dict[str, Path]) -> dict[str, set[str]]:
    """Node name -> shard ids in service in its data dir (shards/*/*)."""
    found: dict[str, set[str]] = {}
    for name, data_dir in data_dirs.items():
        ids = set()
        for path in (data_dir / "shards").glob("*/*"):
            try:
                parse_shard_id(path.name)
            except InvalidArgument:
                continue
            ids.add(path.name)
        found[name] = ids
    return found


def cluster_data_dirs(cluster: LocalCluster) -> dict[str, Path]:
    return {name: Path(d.data_dir) for name, d in cluster.nodes.items()}


def expected_shards(objects: Iterable[ObjectInfo]) -> set[str]:
    """Every shard id the manifests of these objects should have: n per stripe."""
    return {
        shard_id(info.version_id, stripe, index)
        for info in objects
        for stripe in range(info.stripe_count)
        for index in range(info.n)
    }


def disk_matches(data_dirs: dict[str, Path], expected: set[str]) -> tuple[bool, str]:
    """True when the shard files across all nodes are exactly `expected`, each on one node,
    and no node holds two shards of one stripe. The string explains a mismatch."""
    on_disk = shards_on_disk(data_dirs)
    copies: dict[str, list[str]] = {}
    for node, ids in on_disk.items():
        for sid in ids:
            copies.setdefault(sid, []).append(node)
    present = set(copies)
    extra, missing = present - expected, expected - present
    duplicated = {sid: nodes for sid, nodes in copies.items() if len(nodes) > 1}
    same_node = []
    for node, ids in on_disk.items():
        by_stripe: dict[tuple[str, int], list[str]] = {}
        for sid in ids:
            version_id, stripe, _index = parse_shard_id(sid)
            by_stripe.setdefault((version_id, stripe), []).append(sid)
        twice = sorted(sorted(sids) for sids in by_stripe.values() if len(sids) > 1)
        if twice:
            same_node.append(f"{node} {twice[:2]}")
    if not (extra or missing or duplicated or same_node):
        return True, ""
    return False, (
        f"{len(extra)} unreferenced shard files (e.g. {sorted(extra)[:3]}), "
        f"{len(missing)} missing (e.g. {sorted(missing)[:3]}), "
        f"{len(duplicated)} on several nodes, nodes holding two shards of a stripe: {same_node}"
    )


def list_all(client: Client, bucket: str) -> dict[str, ObjectInfo]:
    return {info.key: info for info in client.list(bucket)}


def wait_no_garbage(
    data_dirs: dict[str, Path], client: Client, bucket: str, timeout_s: float = 60.0
) -> None:
    """Wait until the shard files on the nodes are exactly those of the bucket's committed
    objects (n per stripe, one per node) and no shard deletion is pending."""
    why = [""]

    def clean() -> bool:
        try:
            expected = expected_shards(list_all(client, bucket).values())
        except ShoalError as exc:
            why[0] = f"cannot list: {exc}"
            return False
        ok, why[0] = disk_matches(data_dirs, expected)
        status = try_status(client)
        if status is None:
            return False
        if status["pending_shard_deletions"]:
            why[0] += f"; {status['pending_shard_deletions']} shard deletions pending"
            return False
        return ok

    try:
        wait_for(clean, timeout_s, "shards on disk to equal those of committed objects")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {why[0]}") from None


def count_log_lines(path: Path, needle: str) -> int:
    try:
        with path.open(errors="replace") as handle:
            return sum(1 for line in handle if needle in line)
    except FileNotFoundError:
        return 0


# Daemons outside LocalCluster ----------------------------------------------------------------


class Daemon:
    """A shoal daemon started directly (optionally through a command prefix such as
    `ip netns exec NS`); its ready file gives its address."""

    def __init__(
        self, name: str, module: str, data_dir: Path, args: list[str], prefix: list[str]
    ) -> None:
        self.name = name
        self.data_dir = data_dir
        self.ready = data_dir / "ready.json"
        self.address = ""
        data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            *prefix,
            sys.executable,
            "-m",
            module,
            "--data-dir",
            str(data_dir),
            "--ready-file",
            str(self.ready),
            *args,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
        with (data_dir / "daemon.log").open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,
            )

    def wait_ready(self, timeout_s: float = 20.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.ready.exists():
                self.address = str(json.loads(self.ready.read_text())["address"])
                return self.address
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited ({self.process.returncode}):\n{self.log()}"
                )
            time.sleep(0.02)
        raise AssertionError(f"{self.name} not ready after {timeout_s}s:\n{self.log()}")

    def log(self, lines: int = 40) -> str:
        text = (self.data_dir / "daemon.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> int | None:
        """Signal the daemon and wait for it (SIGKILL after `timeout_s`)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


# Network namespaces --------------------------------------------------------------------------


def _ip(*args: str, ns: str | None = None) -> subprocess.CompletedProcess[str]:
    prefix = ["ip", "netns", "exec", ns] if ns else []
    return subprocess.run(
        [*prefix, "ip", *args], capture_output=True, text=True, timeout=10, check=False
    )


def netns_unavailable() -> str:
    """Why network namespaces cannot be used here ('' when they can)."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    if shutil.which("ip") is None:
        return "the 'ip' command (iproute2) is not installed"
    probe = f"shoal-probe-{uuid.uuid4().hex[:8]}"
    added = _ip("netns", "add", probe)
    if added.returncode != 0:
        return f"'ip netns add' failed: {added.stderr.strip()}"
    _ip("netns", "del", probe)
    return ""


@dataclass(frozen=True)
class VethLink:
    """A namespace joined to the host by a veth pair on a private /30."""

    ns: str
    host_if: str
    ns_if: str
    host_ip: str
    ns_ip: str
    subnet: str

    def cut(self) -> None:
        """Take the link down on the namespace side. The host side stays up, so its route
        keeps pointing into the (now dead) veth and no packet for the subnet can leave the
        machine through another route."""
        _check(_ip("link", "set", self.ns_if, "down", ns=self.ns))

    def restore(self) -> None:
        _check(_ip("link", "set", self.ns_if, "up", ns=self.ns))

    def prefix(self) -> list[str]:
        """Command prefix that runs a program inside the namespace."""
        return ["ip", "netns", "exec", self.ns]


def _check(result: subprocess.CompletedProcess[str]) -> None:
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(result.args)} failed: {result.stderr.strip()}")


@contextlib.contextmanager
def isolated_namespace() -> Iterator[VethLink]:
    """Create a namespace with a veth pair to the host (10.231.X.1/30 <-> 10.231.X.2/30) and
    remove everything again on exit. An `unreachable` fallback route for the subnet keeps its
    traffic on this machine even while the veth route is gone."""
    tag = uuid.uuid4().hex[:6]
    octet = random.Random(tag).randrange(1, 254)
    subnet = f"10.231.{octet}.0/30"
    link = VethLink(
        ns=f"shoal-{tag}",
        host_if=f"shv{tag}",
        ns_if=f"shn{tag}",
        host_ip=f"10.231.{octet}.1",
        ns_ip=f"10.231.{octet}.2",
        subnet=subnet,
    )
    steps: list[Callable[[], object]] = []
    try:
        _check(_ip("netns", "add", link.ns))
        steps.append(lambda: _ip("netns", "del", link.ns))
        _check(_ip("link", "add", link.host_if, "type", "veth", "peer", "name", link.ns_if))
        steps.append(lambda: _ip("link", "del", link.host_if))
        _check(_ip("route", "add", "unreachable", subnet, "metric", "4242"))
        steps.append(lambda: _ip("route", "del", "unreachable", subnet, "metric", "4242"))
        _check(_ip("link", "set", link.ns_if, "netns", link.ns))
        _check(_ip("addr", "add", f"{link.host_ip}/30", "dev", link.host_if))
        _check(_ip("link", "set", link.host_if, "up"))
        _check(_ip("addr", "add", f"{link.ns_ip}/30", "dev", link.ns_if, ns=link.ns))
        _check(_ip("link", "set", link.ns_if, "up", ns=link.ns))
        _check(_ip("link", "set", "lo", "up", ns=link.ns))
        yield link
    finally:
        for undo in reversed(steps):
            undo()
