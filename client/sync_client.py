"""Client: the synchronous SDK, a thin facade over AsyncClient running on a shared loop thread."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import io
import os
import threading
from collections.abc import (
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any, TypeVar

import uvloop

from shoal.client.async_client import AsyncClient, AsyncObjectStream
from shoal.client.get import GetTuning
from shoal.client.jobs import AsyncJob, JobOptions, JobStatus, TaskLog
from shoal.client.local_reads import LocalShardFiles
from shoal.client.put import PutTuning
from shoal.client.sources import PutData
from shoal.client.types import BucketInfo, ObjectInfo, RepairErrorInfo
from shoal.common.errors import ShoalError

T = TypeVar("T")
CLOSE_TIMEOUT_S = 5.0


class _SharedLoop:
    """One uvloop event loop, on one daemon thread, that every Client in the process uses.

    A loop per Client meant a thread per Client: eight threads each calling their own Client
    kept eight loops waking and trading the GIL, and 4 KiB gets cost about 0.93 CPU-ms in
    the client against 0.73 with one loop. The loop starts with the first Client and lives
    as long as the process (an idle loop costs nothing); a forked child starts its own.
    """

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None
    _pid = 0
    thread_id: int | None = None

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None or cls._pid != os.getpid() or cls._loop.is_closed():
                loop = uvloop.new_event_loop()
                # Shared by every client: room for their file reads, encodes and iterators.
                loop.set_default_executor(
                    ThreadPoolExecutor(max_workers=32, thread_name_prefix="shoal-client-io")
                )
                thread = threading.Thread(target=loop.run_forever, name="shoal-client", daemon=True)
                thread.start()
                cls._loop, cls._pid, cls.thread_id = loop, os.getpid(), thread.ident
            return cls._loop


class Client:
    """Synchronous Shoal client with the same methods as `AsyncClient`.

    Args:
        address: coordinator HOST:PORT; defaults to SHOAL_COORDINATOR or 127.0.0.1:7000.
        rpc_timeout_s, put_tuning, get_tuning, token, tls_ca, tls_cert, tls_key,
            local_node_dirs: as for AsyncClient.

    Use as a context manager (`with Client(addr) as client:`) or call `close()`.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        rpc_timeout_s: float = 30.0,
        put_tuning: PutTuning | None = None,
        get_tuning: GetTuning | None = None,
        token: str | None = None,
        tls_ca: str | os.PathLike[str] | None = None,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
        local_node_dirs: Iterable[str | os.PathLike[str]] | str | os.PathLike[str] | None = None,
    ) -> None:
        self._async = AsyncClient(
            address,
            rpc_timeout_s=rpc_timeout_s,
            put_tuning=put_tuning,
            get_tuning=get_tuning,
            token=token,
            tls_ca=tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
            local_node_dirs=local_node_dirs,
        )
        self.address = self._async.address
        self._loop = _SharedLoop.get()
        self._closed = False

    @property
    def local_shards(self) -> LocalShardFiles | None:
        """Counters of short-circuit reads (None unless local_node_dirs was given)."""
        return self._async.local_shards

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self._closed:
            coro.close()
            raise ShoalError("the client is closed")
        if threading.get_ident() == _SharedLoop.thread_id:
            coro.close()  # waiting here would stop the very loop that has to answer
            raise ShoalError(
                "a Client method was called on the client's own event loop thread (from a "
                "callback?); use AsyncClient there"
            )
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            raise

    def _iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self._run(anext(agen))  # type: ignore[arg-type]
                except StopAsyncIteration:
                    return
        finally:
            if not self._closed:
                self._run(agen.aclose())  # type: ignore[attr-defined]

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close this client's channels (the shared event loop stays for other clients)."""
        if self._closed:
            return
        # Bounded: closing after an interrupted call (Ctrl-C) must not hang the program.
        with contextlib.suppress(TimeoutError):
            self._run(self._async.close(), timeout=CLOSE_TIMEOUT_S)
        self._closed = True

    def create_bucket(
        self,
        name: str,
        k: int | None = None,
        n: int | None = None,
        *,
        write_quorum: int | None = None,
        owner: str | None = None,
    ) -> BucketInfo:
        """See AsyncClient.create_bucket."""
        return self._run(
            self._async.create_bucket(name, k, n, write_quorum=write_quorum, owner=owner)
        )

    def delete_bucket(self, name: str) -> None:
        """See AsyncClient.delete_bucket."""
        self._run(self._async.delete_bucket(name))

    def list_buckets(self) -> list[BucketInfo]:
        """See AsyncClient.list_buckets."""
        return self._run(self._async.list_buckets())

    def put(
        self,
        bucket: str,
        key: str,
        data: PutData,
        *,
        k: int | None = None,
        n: int | None = None,
        metadata: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None,
        stripe_bytes: int | None = None,
    ) -> ObjectInfo:
        """See AsyncClient.put."""
        return self._run(
            self._async.put(
                bucket, key, data, k=k, n=n, metadata=metadata, stripe_bytes=stripe_bytes
            )
        )

    def put_many(
        self,
        bucket: str,
        objects: Mapping[str, bytes | bytearray | memoryview],
        *,
        k: int | None = None,
        n: int | None = None,
    ) -> dict[str, ObjectInfo]:
        """See AsyncClient.put_many."""
        return self._run(self._async.put_many(bucket, objects, k=k, n=n))

    def compose(
        self,
        bucket: str,
        key: str,
        sources: Sequence[tuple[str, str] | tuple[str, str, str]],
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """See AsyncClient.compose."""
        return self._run(self._async.compose(bucket, key, sources, metadata=metadata))

    def get(self, bucket: str, key: str, *, offset: int = 0, length: int | None = None) -> bytes:
        """See AsyncClient.get."""
        return self._run(self._async.get(bucket, key, offset=offset, length=length))

    def get_many(self, bucket: str, keys: Sequence[str]) -> list[bytes]:
        """See AsyncClient.get_many."""
        return self._run(self._async.get_many(bucket, keys))

    def stream(
        self, bucket: str, key: str, *, offset: int = 0, length: int | None = None
    ) -> Iterator[bytes]:
        """See AsyncClient.stream."""
        return self._iterate(self._async.stream(bucket, key, offset=offset, length=length))

    def download(self, bucket: str, key: str, path: str | os.PathLike[str]) -> ObjectInfo:
        """See AsyncClient.download."""
        return self._run(self._async.download(bucket, key, path))

    def open(self, bucket: str, key: str) -> ObjectStream:
        """Open the object as a readable binary stream (io.BufferedReader)."""
        return ObjectStream(self, self._run(self._async.open(bucket, key)))

    def head(self, bucket: str, key: str) -> ObjectInfo:
        """See AsyncClient.head."""
        return self._run(self._async.head(bucket, key))

    def delete(self, bucket: str, key: str) -> None:
        """See AsyncClient.delete."""
        self._run(self._async.delete(bucket, key))

    def list(self, bucket: str, prefix: str = "", *, start_after: str = "") -> Iterator[ObjectInfo]:
        """See AsyncClient.list."""
        return self._iterate(self._async.list(bucket, prefix, start_after=start_after))

    def status(self) -> dict[str, Any]:
        """See AsyncClient.status."""
        return self._run(self._async.status())

    def submit(
        self, fn: Any, *args: Any, job_options: JobOptions | None = None, **kwargs: Any
    ) -> Job:
        """See AsyncClient.submit."""
        return Job(
            self, self._run(self._async.submit(fn, *args, job_options=job_options, **kwargs))
        )

    def map(
        self,
        fn: Any,
        iterable: Iterable[Any],
        *,
        chunksize: int | None = None,
        options: JobOptions | None = None,
    ) -> Job:
        """See AsyncClient.map."""
        return Job(
            self, self._run(self._async.map(fn, iterable, chunksize=chunksize, options=options))
        )

    def map_reduce(
        self,
        mapper: Any,
        reducer: Any,
        *,
        inputs: Any,
        partitions: int = 4,
        output: tuple[str, str] | None = None,
        combiner: Any = None,
        options: JobOptions | None = None,
    ) -> Job:
        """See AsyncClient.map_reduce."""
        return Job(
            self,
            self._run(
                self._async.map_reduce(
                    mapper,
                    reducer,
                    inputs=inputs,
                    partitions=partitions,
                    output=output,
                    combiner=combiner,
                    options=options,
                )
            ),
        )

    def job(self, job_id: str) -> Job:
        """A handle to an existing job."""
        return Job(self, self._run(self._async.job(job_id)))

    def list_jobs(self, *, active_only: bool = False, limit: int = 50) -> builtins.list[JobStatus]:
        """See AsyncClient.list_jobs."""
        return self._run(self._async.list_jobs(active_only=active_only, limit=limit))

    def hold_repair(self, held: bool = True) -> bool:
        """See AsyncClient.hold_repair."""
        return self._run(self._async.hold_repair(held))

    def repair_errors(self, limit: int = 100) -> tuple[builtins.list[RepairErrorInfo], int]:
        """See AsyncClient.repair_errors."""
        return self._run(self._async.repair_errors(limit))

    def scrub(self, node_id: str | None = None) -> builtins.list[str]:
        """See AsyncClient.scrub."""
        return self._run(self._async.scrub(node_id))

    def drain_node(self, node_id: str, *, cancel: bool = False) -> int:
        """See AsyncClient.drain_node."""
        return self._run(self._async.drain_node(node_id, cancel=cancel))

    def remove_node(self, node_id: str) -> int:
        """See AsyncClient.remove_node."""
        return self._run(self._async.remove_node(node_id))


class ObjectStream(io.RawIOBase):
    """A read-only binary stream over an object, fetched stripe by stripe."""

    def __init__(self, client: Client, stream: AsyncObjectStream) -> None:
        super().__init__()
        self._client = client
        self._stream = stream
        self.info = stream.info

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._client._run(self._stream.read(len(view)))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed and not self._client._closed:
            self._client._run(self._stream.aclose())
        super().close()


class Job:
    """A submitted job (synchronous handle); see AsyncJob for the semantics."""

    def __init__(self, client: Client, job: AsyncJob) -> None:
        self._client = client
        self._job = job
        self.id = job.id
        self.kind = job.kind

    def __repr__(self) -> str:
        return f"Job({self.id!r}, kind={self.kind!r})"

    def status(self) -> JobStatus:
        """State, task counts per state and progress."""
        return self._client._run(self._job.status())

    def progress(self) -> float:
        """sum(S_i) / sum(S_max_i) over the job's tasks, in [0, 1]."""
        return self._client._run(self._job.progress())

    def wait(self, timeout: float | None = None) -> JobStatus:
        """Wait until the job ends; TimeoutError after `timeout` seconds."""
        return self._client._run(self._job.wait(timeout))

    def result(self, timeout: float | None = None) -> Any:
        """submit: the value; map: the list of results; map_reduce: an iterator of (key, value)."""
        if self.kind == "map_reduce":
            self._client._run(self._job._check(timeout))
            # One hop to the client's loop per reduce partition, not per pair.
            batches = self._client._iterate(self._job._pair_batches())
            return (pair for batch in batches for pair in batch)
        return self._client._run(self._job.result(timeout))

    def cancel(self) -> JobStatus:
        """Stop the job."""
        return self._client._run(self._job.cancel())

    def logs(self) -> list[TaskLog]:
        """Errors, tracebacks and stderr of failed task attempts."""
        return self._client._run(self._job.logs())
