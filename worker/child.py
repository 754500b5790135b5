"""The code that runs inside a worker's task processes.

Each slot process loops: receive a task over its pipe, run it, send progress messages while it
runs and one result message at the end. A job's program is unpickled once per process and
kept by job id (the worker sends it with the first task of the job only), so module globals
of by-value functions live as long as the process, as in any long-lived worker.

User code exceptions come back with their traceback and `user_error=True`; failures reading or
writing Shoal come back with `user_error=False` so the coordinator retries them elsewhere.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import importlib
import io
import json
import os
import signal
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import cloudpickle

from shoal.common import malloc_tuning
from shoal.common.jobspec import (
    INTERNAL_BUCKET,
    internal_output_key,
    map_output_key,
    output_key,
    pack_intermediate,
    partition_of,
    unpack_intermediate,
)

if TYPE_CHECKING:
    from shoal.common.transport import Transport

PROGRESS_EVERY_S = 0.1
REDUCE_FETCH_FIRST = 4
REDUCE_FETCH_BATCH = 16
REDUCE_FETCH_BYTES = 32 * 1024 * 1024
PR_SET_PDEATHSIG = 1
COORDINATOR_OUTAGE_S = 60.0
IDLE_RELEASE_S = 30.0  # a slot with no task for this long hands its free heap back
MAX_STDERR = 64 * 1024

_conn: Connection | None = None
_coordinator = ""
_transport: Transport | None = None
_local_node_dirs: tuple[str, ...] = ()
_client: Any = None
_last_progress = 0.0
_programs: dict[str, dict[str, Any]] = {}  # job id -> unpickled program


class UserCodeError(Exception):
    """The task's own code raised; carries the formatted traceback."""


def report_progress(done: int, total: int) -> None:
    """Set this task's progress (S_i = done of S_max_i = total); cheap to call often."""
    global _last_progress
    now = time.monotonic()
    if _conn is None or (now - _last_progress < PROGRESS_EVERY_S and done < total):
        return
    _last_progress = now
    _conn.send(("progress", int(done), int(total)))


class _RetryingClient:
    """The SDK client of a task process, riding out a coordinator restart: calls that cannot
    reach the coordinator are retried for up to COORDINATOR_OUTAGE_S, so a short outage is
    not charged to the task as a lost attempt."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._shuffle: tuple[int, int] | None = None

    def _retry(self, call: Callable[[], Any]) -> Any:
        from shoal.client import ConnectionFailed

        deadline = time.monotonic() + COORDINATOR_OUTAGE_S
        delay = 0.1
        while True:
            try:
                return call()
            except ConnectionFailed:
                if time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def get(self, bucket: str, key: str) -> bytes:
        return self._retry(lambda: self._client.get(bucket, key))  # type: ignore[no-any-return]

    def put(
        self, bucket: str, key: str, data: bytes, redundancy: tuple[int, int] | None = None
    ) -> Any:
        k, n = redundancy or (None, None)
        return self._retry(lambda: self._client.put(bucket, key, data, k=k, n=n))

    def put_many(
        self, bucket: str, objects: dict[str, bytes], redundancy: tuple[int, int] | None = None
    ) -> Any:
        k, n = redundancy or (None, None)
        return self._retry(lambda: self._client.put_many(bucket, objects, k=k, n=n))

    def get_many(self, bucket: str, keys: list[str]) -> list[bytes]:
        return self._retry(lambda: self._client.get_many(bucket, keys))  # type: ignore[no-any-return]

    def shuffle_redundancy(self) -> tuple[int, int]:
        """(k, n) for map outputs: `n - k + 1` whole replicas, for the internal bucket's
        (k, n). A replica survives the same `n - k` node losses as the bucket's erasure
        code, and a map output (a few KiB to a few MiB, written once, read once by one
        reducer, deleted with the job) then costs `n - k + 1` shard writes instead of `n`,
        and one shard read instead of `k`. Replication's storage overhead matters little
        for data that lives as long as its job."""
        if self._shuffle is None:
            buckets = self._retry(self._client.list_buckets)
            bucket = next((b for b in buckets if b.name == INTERNAL_BUCKET), None)
            k, n = (bucket.k, bucket.n) if bucket else (1, 3)
            self._shuffle = (1, n - k + 1)
        return self._shuffle

    def read(self, bucket: str, key: str, on_bytes: Callable[[int], None]) -> bytes:
        """The whole object, calling on_bytes(bytes read so far) as pieces arrive."""

        def attempt() -> bytes:
            pieces, read = [], 0
            for piece in self._client.stream(bucket, key):
                pieces.append(piece)
                read += len(piece)
                on_bytes(read)
            return b"".join(pieces)

        return self._retry(attempt)  # type: ignore[no-any-return]


def _client_for_tasks() -> _RetryingClient:
    global _client
    if _client is None:
        from shoal.client import Client

        tls = _transport.tls if _transport else None
        _client = _RetryingClient(
            Client(
                _coordinator,
                token=_transport.token if _transport else "",
                tls_ca=tls.ca_path if tls else "",
                tls_cert=tls.cert_path if tls else "",
                tls_key=tls.key_path if tls else "",
                local_node_dirs=_local_node_dirs,
            )
        )
    return _client  # type: ignore[no-any-return]


def resolve(fn: Any) -> Callable[..., Any]:
    """A callable, or 'package.module:function' imported on the worker."""
    if callable(fn):
        return fn  # type: ignore[no-any-return]
    module_name, _, attr = str(fn).partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[no-any-return]


def _user(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:
        raise UserCodeError(traceback.format_exc()) from None


def run_call(program: dict[str, Any], payload: bytes) -> bytes:
    args, kwargs = cloudpickle.loads(payload)
    fn = resolve(program["fn"])
    try:
        result = fn(*args, **kwargs)
    except Exception:
        raise UserCodeError(traceback.format_exc()) from None
    return bytes(cloudpickle.dumps(result))


def run_map_chunk(program: dict[str, Any], payload: bytes) -> bytes:
    items = cloudpickle.loads(payload)
    fn = resolve(program["fn"])
    results = []
    for i, item in enumerate(items):
        results.append(_user(fn, item))
        if i + 1 < len(items):  # the result itself reports the last one
            report_progress(i + 1, len(items))
    return bytes(cloudpickle.dumps(results))


# The partitions of short string keys seen by this process's map tasks, by partition count:
# words recur across a job's map tasks (and jobs), and a dict lookup costs a tenth of hashing
# the key's canonical form. Only keys of up to MAX_MEMO_KEY_CHARS characters are kept (long
# keys, URLs or lines, rarely recur and would make the memo large), and a memo is cleared when
# it holds MAX_MEMO_KEYS of them: some 25 MiB at most.
_partition_memo: dict[int, dict[str, int]] = {}
MAX_MEMO_KEYS = 1 << 17
MAX_MEMO_KEY_CHARS = 64


def _group(pairs: Iterable[Any], partitions: int, combiner: Any) -> list[dict[Any, list[Any]]]:
    """The map output `pairs` split into `partitions` groups of key -> values, each key's
    values combined into one with `combiner` when there is one. Raises UserCodeError when
    the pairs or the combiner fail."""
    groups: list[dict[Any, list[Any]]] = [{} for _ in range(partitions)]
    memo = _partition_memo.setdefault(partitions, {})
    try:
        for key, value in pairs:
            if type(key) is str and len(key) <= MAX_MEMO_KEY_CHARS:  # exactly str: a
                # subclass may hash and compare differently
                partition = memo.get(key)
                if partition is None:
                    if len(memo) >= MAX_MEMO_KEYS:
                        memo.clear()
                    partition = memo[key] = partition_of(key, partitions)
            else:
                partition = partition_of(key, partitions)
            group = groups[partition]
            values = group.get(key)
            if values is None:
                group[key] = [value]
            else:
                values.append(value)
        if combiner is not None:
            for group in groups:
                for key, values in group.items():
                    group[key] = [combiner(key, values)]
    except Exception:
        raise UserCodeError(traceback.format_exc()) from None
    return groups


def pack_map_output(group: dict[Any, list[Any]]) -> bytes:
    """One partition of a map task's output, as stored in the internal bucket."""
    return pack_intermediate(group)


def unpack_map_output(blob: bytes) -> dict[Any, list[Any]]:
    """The partition `pack_map_output` stored (or a plain pickle from an earlier version)."""
    group: dict[Any, list[Any]] = unpack_intermediate(blob)
    return group


def run_map(program: dict[str, Any], task: dict[str, Any]) -> tuple[bytes, list[int]]:
    client = _client_for_tasks()
    total = max(task["progress_total"], 1)
    data = client.read(
        task["input_bucket"], task["input_key"], lambda read: report_progress(read, total)
    )
    mapper = resolve(program["mapper"])
    combiner = resolve(program["combiner"]) if program.get("combiner") else None
    pairs = _user(lambda: list(mapper(task["input_key"], data)))
    groups = _group(pairs, program["partitions"], combiner)
    blobs = {
        map_output_key(task["job_id"], task["index"], partition): pack_map_output(group)
        for partition, group in enumerate(groups)
    }
    # Small partitions (a word count's) are committed together in one call to the
    # coordinator; larger ones are stored one by one.
    client.put_many(INTERNAL_BUCKET, blobs, client.shuffle_redundancy())
    report_progress(total, total)
    return b"", [len(blob) for blob in blobs.values()]


def _fetch_in_order(
    client: _RetryingClient,
    bucket: str,
    keys: list[str],
    batch: int = REDUCE_FETCH_BATCH,
    budget: int = REDUCE_FETCH_BYTES,
    first: int = REDUCE_FETCH_FIRST,
) -> Iterator[bytes]:
    """The objects `keys`, in order, fetched a batch per `get_many` call with the next batch
    in flight while the caller works through the current one: a reducer's map outputs are
    often small, and fetching them one by one would leave it waiting on a coordinator round
    trip per map task. The first batch has `first` keys; later ones up to `batch`, fewer when
    outputs prove large (a batch is sized to hold about `budget` bytes judged by the largest
    output seen so far). At most two batches are held."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reduce-fetch")
    position = 0
    largest = 0

    def request(size: int) -> Future[list[bytes]] | None:
        nonlocal position
        chunk = keys[position : position + size]
        position += len(chunk)
        return pool.submit(client.get_many, bucket, chunk) if chunk else None

    try:
        pending = request(first)
        while pending is not None:
            current = pending.result()
            largest = max(largest, *(len(blob) for blob in current))
            pending = request(max(1, min(batch, budget // max(largest, 1))))
            yield from current
    finally:
        # A fetch still running finishes in its thread; nothing waits for it here.
        pool.shutdown(wait=False, cancel_futures=True)


def run_reduce(program: dict[str, Any], task: dict[str, Any]) -> bytes:
    client = _client_for_tasks()
    partition, job_id = task["index"], task["job_id"]
    total = max(task["progress_total"], 1)
    merged: dict[Any, list[Any]] = {}
    read = 0
    keys = [map_output_key(job_id, i, partition) for i in range(task["map_tasks"])]
    for blob in _fetch_in_order(client, INTERNAL_BUCKET, keys):
        read += len(blob)
        for key, values in unpack_map_output(blob).items():
            merged.setdefault(key, []).extend(values)
        report_progress(read, total)
    reducer = resolve(program["reducer"])
    try:
        keys = sorted(merged)
    except TypeError:
        keys = list(merged)
    results = [(key, _user(reducer, key, merged[key])) for key in keys]
    output = program.get("output")
    if output:
        bucket, prefix = output
        try:
            lines = "".join(json.dumps({"key": k, "value": v}) + "\n" for k, v in results)
        except TypeError as exc:
            raise UserCodeError(
                f"reducer output is not JSON-serializable for output=...: {exc}"
            ) from None
        client.put(bucket, output_key(prefix, partition), lines.encode())
    else:
        client.put(
            INTERNAL_BUCKET, internal_output_key(job_id, partition), pack_intermediate(results)
        )
    report_progress(total, total)
    return b""


def _program(task: dict[str, Any]) -> dict[str, Any]:
    """The task's job program: unpickled from the task if it carries one, else cached."""
    if task.get("reset_programs"):
        _programs.clear()
    job_id = task["job_id"]
    if task.get("program") is not None:
        _programs[job_id] = cloudpickle.loads(task["program"])
    program = _programs.get(job_id)
    if program is None:
        raise RuntimeError(f"the program of job {job_id} was never sent to this task process")
    return program


def execute(task: dict[str, Any]) -> dict[str, Any]:
    """Run one task; never raises."""
    stderr = io.StringIO()
    reply: dict[str, Any] = {
        "ok": False,
        "result": b"",
        "error": "",
        "user_error": False,
        "partition_bytes": [],
    }
    try:
        with contextlib.redirect_stderr(stderr):
            program = _program(task)
            kind = task["kind"]
            if kind == "call":
                reply["result"] = run_call(program, task["payload"])
            elif kind == "map_chunk":
                reply["result"] = run_map_chunk(program, task["payload"])
            elif kind == "mr_map":
                reply["result"], reply["partition_bytes"] = run_map(program, task)
            elif kind == "mr_reduce":
                reply["result"] = run_reduce(program, task)
            else:
                raise ValueError(f"unknown task kind {kind!r}")
            reply["ok"] = True
    except UserCodeError as exc:
        reply["error"], reply["user_error"] = str(exc), True
    except Exception:
        reply["error"] = traceback.format_exc()
    reply["stderr"] = stderr.getvalue()[-MAX_STDERR:]
    reply["has_program"] = task["job_id"] in _programs
    return reply


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the worker dies, even by SIGKILL, so no task
    keeps running user code for a worker that is gone."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the worker died before prctl took effect
        os._exit(1)


def slot_main(
    conn: Connection,
    coordinator: str,
    transport: Transport | None = None,
    local_node_dirs: tuple[str, ...] = (),
) -> None:
    """Entry point of a slot process: serve tasks from the pipe until it closes.

    A slot is one of the worker's own processes (as a Dask worker's is), so it tunes malloc
    as a task process (`malloc_tuning.tune_task_process`): its tasks' buffers, the SDK's
    shard buffers and user code's own, are reused from task to task instead of being
    zero-filled by the kernel afresh. After a task that left more than
    `malloc_tuning.TASK_HEAP_KEEP` of it free, and after IDLE_RELEASE_S without a task, the
    free heap goes back to the kernel.
    `local_node_dirs` (the worker's setting) turns on short-circuit reads of the shards of
    the storage nodes on this host for the tasks' client."""
    global _conn, _coordinator, _transport, _local_node_dirs
    _die_with_parent()
    malloc_tuning.tune_task_process()
    _conn, _coordinator, _transport = conn, coordinator, transport
    _local_node_dirs = local_node_dirs
    while True:
        try:
            if not conn.poll(IDLE_RELEASE_S):
                malloc_tuning.release_all_free_heap()  # idle: keep no spare heap
            task = conn.recv()
        except (EOFError, OSError):
            return
        conn.send(("done", execute(task)))
        malloc_tuning.release_free_heap()
