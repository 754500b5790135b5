"""AsyncClient: the one real implementation of the SDK (the sync Client wraps it).

Every method validates its arguments before any network call and raises only `ShoalError`
subclasses. Coordinator calls use `rpc_timeout_s`; shard transfers use the per-shard timeouts
of `PutTuning` and `GetTuning`. Methods are cancel-safe: a cancelled put aborts its upload.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import tempfile
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc.aio

from shoal.client.get import GetTuning, ObjectReader, UnreachableNodes
from shoal.client.inline import INLINE_MAX_BYTES, InlineReader, inline_payload
from shoal.client.jobs import (
    AsyncJob,
    JobOptions,
    JobStatus,
    call_job,
    check_inputs,
    map_job,
    map_reduce_job,
)
from shoal.client.local_reads import LocalShardFiles, parse_dirs
from shoal.client.put import PutTuning, run_put
from shoal.client.sources import PutData, StripeSource
from shoal.client.status import job_to_dict, status_to_dict
from shoal.client.types import BucketInfo, ObjectInfo, RepairErrorInfo
from shoal.common.auth import token_from_env
from shoal.common.bytes_builder import BytesBuilder
from shoal.common.channels import NodeChannels
from shoal.common.erasure import check_redundancy
from shoal.common.errors import ConfigError, ConnectionFailed, InvalidArgument, ShoalError
from shoal.common.ids import is_valid_node_id
from shoal.common.names import check_bucket_name, check_key, check_metadata
from shoal.common.request_ids import operation
from shoal.common.rpc import batches, to_shoal_error
from shoal.common.tls import load_tls, tls_failure
from shoal.common.transport import Transport
from shoal.rpc.v1 import coordinator_pb2 as cpb
from shoal.rpc.v1 import coordinator_pb2_grpc as cpb_grpc
from shoal.rpc.v1 import jobs_pb2 as jobs_pb
from shoal.rpc.v1 import jobs_pb2_grpc as jobs_grpc

# Gets of at least this many bytes build their result in place (see `get`).
BUILD_IN_PLACE_MIN_BYTES = 1024 * 1024

DEFAULT_COORDINATOR = "127.0.0.1:7000"
LIST_PAGE = 1000
# Striped objects a get_many reads at once (small ones come whole in the locate reply).
GET_MANY_STRIPED_AT_ONCE = 4
TLS_ENV = {"tls_cert": "SHOAL_TLS_CERT", "tls_key": "SHOAL_TLS_KEY", "tls_ca": "SHOAL_TLS_CA"}
PathArg = str | os.PathLike[str] | None


def default_address() -> str:
    """The coordinator address from SHOAL_COORDINATOR, else 127.0.0.1:7000."""
    return os.environ.get("SHOAL_COORDINATOR") or DEFAULT_COORDINATOR


def client_transport(
    token: str | None, tls_cert: PathArg, tls_key: PathArg, tls_ca: PathArg
) -> Transport:
    """The SDK's transport: each argument that is None comes from its environment variable
    (SHOAL_TOKEN / SHOAL_TOKEN_FILE, SHOAL_TLS_CERT, SHOAL_TLS_KEY, SHOAL_TLS_CA); "" is off."""
    paths: list[str] = []
    names: list[str] = []
    for name, value in (("tls_cert", tls_cert), ("tls_key", tls_key), ("tls_ca", tls_ca)):
        if value is None:
            paths.append(os.environ.get(TLS_ENV[name], ""))
            names.append(TLS_ENV[name])
        else:
            paths.append(os.fspath(value))
            names.append(name)
    try:
        tls = load_tls(*paths, names=(names[0], names[1], names[2]))
    except ConfigError as exc:
        raise InvalidArgument(str(exc)) from None
    return Transport(token if token is not None else token_from_env(), tls)


def _check_optional_redundancy(k: int | None, n: int | None) -> None:
    for name, value in (("k", k), ("n", n)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise InvalidArgument(f"{name} must be an integer, got {type(value).__name__}")
    if k is not None and n is not None:
        check_redundancy(k, n)
    elif k is not None and not 1 <= k < 256:
        raise InvalidArgument(f"invalid redundancy k={k}: need 1 <= k < n <= 256")
    elif n is not None and not 2 <= n <= 256:
        raise InvalidArgument(f"invalid redundancy n={n}: need 1 <= k < n <= 256")


class AsyncClient:
    """Asynchronous Shoal client.

    Args:
        address: coordinator HOST:PORT; defaults to SHOAL_COORDINATOR or 127.0.0.1:7000.
        rpc_timeout_s: timeout of each coordinator call.
        put_tuning: pipeline depth and shard write timeout.
        get_tuning: shard read timeout, hedging delay and readahead.
        token: the cluster token, if the cluster requires one; defaults to SHOAL_TOKEN or the
            contents of SHOAL_TOKEN_FILE.
        tls_ca, tls_cert, tls_key: for a cluster with TLS: PEM files of the cluster CA, of a
            client certificate it signed, and of that certificate's key (all three or none);
            default to SHOAL_TLS_CA, SHOAL_TLS_CERT, SHOAL_TLS_KEY. Pass "" to turn one off.
        local_node_dirs: data directories of storage nodes on this host (paths, or one
            comma-separated string): their shards are read from the files directly rather
            than through the nodes, still verified against the manifest (short-circuit reads,
            see `shoal.client.local_reads`). Off by default.

    Use as `async with AsyncClient(addr) as client:` or call `close()`.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        rpc_timeout_s: float = 30.0,
        put_tuning: PutTuning | None = None,
        get_tuning: GetTuning | None = None,
        token: str | None = None,
        tls_ca: PathArg = None,
        tls_cert: PathArg = None,
        tls_key: PathArg = None,
        local_node_dirs: Iterable[str | os.PathLike[str]] | str | os.PathLike[str] | None = None,
    ) -> None:
        self.address = address or default_address()
        self._transport = client_transport(token, tls_cert, tls_key, tls_ca)
        if ":" not in self.address:
            raise InvalidArgument(f"invalid coordinator address {self.address!r}: use HOST:PORT")
        self.rpc_timeout_s = rpc_timeout_s
        self.put_tuning = put_tuning or PutTuning()
        self.get_tuning = get_tuning or GetTuning()
        # Puts of bytes up to this size try PutInline first (0: never; see client/inline.py).
        self.inline_max_bytes = INLINE_MAX_BYTES
        self._channel: grpc.aio.Channel | None = None
        self._stub: cpb_grpc.CoordinatorAsyncStub | None = None
        self._jobs_stub: jobs_grpc.JobsAsyncStub | None = None
        self._nodes = NodeChannels(self._transport)
        # Shared by the readers of this client (see UnreachableNodes).
        self._unreachable = UnreachableNodes()
        dirs = parse_dirs(local_node_dirs)
        self.local_shards = LocalShardFiles(dirs) if dirs else None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every channel."""
        await self._nodes.close()
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = self._jobs_stub = None

    async def _call(self, method: str, request: Any) -> Any:
        """Call a coordinator method, translating gRPC errors into ShoalErrors."""
        return await self._invoke("coordinator", method, request)

    async def _jobs_call(self, method: str, request: Any) -> Any:
        """Call a Jobs method on the coordinator."""
        return await self._invoke("jobs", method, request)

    # Every coordinator call, including those of AsyncJob handles, reports its request id.
    @operation
    async def _invoke(self, service: str, method: str, request: Any) -> Any:
        if self._stub is None or self._jobs_stub is None:
            self._channel = self._transport.channel(self.address)
            self._stub = cpb_grpc.CoordinatorStub(self._channel)
            self._jobs_stub = jobs_grpc.JobsStub(self._channel)
        stub: Any = self._stub if service == "coordinator" else self._jobs_stub
        try:
            return await getattr(stub, method)(request, timeout=self.rpc_timeout_s)
        except grpc.aio.AioRpcError as exc:
            error = to_shoal_error(exc, f"coordinator at {self.address}")
            if isinstance(error, ConnectionFailed):
                reason = tls_failure(exc.details() or "", tls=self._transport.tls is not None)
                raise ConnectionFailed(
                    f"cannot reach the coordinator at {self.address}"
                    + (f": {reason}" if reason else "")
                ) from None
            raise error from None

    # Buckets -------------------------------------------------------------------------------

    @operation
    async def create_bucket(
        self,
        name: str,
        k: int | None = None,
        n: int | None = None,
        *,
        write_quorum: int | None = None,
        owner: str | None = None,
    ) -> BucketInfo:
        """Create a bucket whose objects default to `(k, n)` (cluster default: 4, 6).

        `owner` is recorded with the bucket (the S3 gateway stores its user's id there).

        Raises:
            InvalidArgument: bad name or redundancy. AlreadyExists: the bucket exists.
            InsufficientNodes: `n` exceeds the number of nodes the cluster knows.
        """
        check_bucket_name(name)
        _check_optional_redundancy(k, n)
        reply = await self._call(
            "CreateBucket",
            cpb.CreateBucketRequest(
                name=name, k=k or 0, n=n or 0, write_quorum=write_quorum or 0, owner=owner or ""
            ),
        )
        return BucketInfo.from_proto(reply.bucket)

    @operation
    async def delete_bucket(self, name: str) -> None:
        """Delete an empty bucket (BucketNotEmpty otherwise, NotFound if absent)."""
        check_bucket_name(name)
        await self._call("DeleteBucket", cpb.DeleteBucketRequest(name=name))

    @operation
    async def list_buckets(self) -> list[BucketInfo]:
        """All buckets, by name."""
        reply = await self._call("ListBuckets", cpb.ListBucketsRequest())
        return [BucketInfo.from_proto(b) for b in reply.buckets]

    # Objects -------------------------------------------------------------------------------

    @operation
    async def put(
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
        """Store `data` (bytes, a path, a binary file object, or an (async) iterable of bytes).

        The object becomes visible atomically once every stripe has at least the write quorum
        of shards durable; an existing object under the key is replaced atomically. `metadata`
        (str -> str, at most 8 KiB in all) is stored with it and returned in `ObjectInfo`; it
        may be a callable returning the mapping, called once all data has been read (for
        metadata that depends on the data, such as a digest computed while streaming).
        `stripe_bytes` overrides the cluster's stripe size for this object (4 KiB to 64 MiB),
        e.g. so that objects whose sizes are multiples of it can be composed.

        Raises:
            InvalidArgument, NotFound (bucket), InsufficientNodes, Unavailable, ConnectionFailed.
        """
        check_bucket_name(bucket)
        check_key(key)
        _check_optional_redundancy(k, n)
        if callable(metadata):
            late = metadata

            def final_metadata() -> Mapping[str, str]:
                return check_metadata(late())
        else:
            checked = check_metadata(metadata)

            def final_metadata() -> Mapping[str, str]:
                return checked

        if stripe_bytes is not None and (
            not isinstance(stripe_bytes, int) or isinstance(stripe_bytes, bool) or stripe_bytes < 1
        ):
            raise InvalidArgument(f"stripe_bytes must be a positive integer, got {stripe_bytes!r}")
        payload = inline_payload(data, self.inline_max_bytes) if stripe_bytes is None else None
        if payload is not None:
            inline = await self._call(
                "PutInline",
                cpb.PutInlineRequest(
                    bucket=bucket, key=key, k=k or 0, n=n or 0, data=payload,
                    metadata=final_metadata(),
                ),
            )  # fmt: skip
            if inline.accepted:
                return ObjectInfo.from_proto(inline.info)
        return await self._put_striped(bucket, key, data, k, n, final_metadata, stripe_bytes)

    async def _put_striped(
        self,
        bucket: str,
        key: str,
        data: PutData,
        k: int | None,
        n: int | None,
        metadata: Callable[[], Mapping[str, str]],
        stripe_bytes: int | None = None,
    ) -> ObjectInfo:
        """Store `data` as erasure-coded stripes (arguments already validated)."""
        source = StripeSource(data)
        try:
            begin = await self._call(
                "BeginPut",
                cpb.BeginPutRequest(
                    bucket=bucket, key=key, k=k or 0, n=n or 0, stripe_bytes=stripe_bytes or 0
                ),
            )
            reply = await run_put(
                begin=begin,
                stripes=source.stripes(begin.stripe_bytes),
                channels=self._nodes,
                call=self._call,
                tuning=self.put_tuning,
                metadata=metadata,
            )
        finally:
            source.close()
        return ObjectInfo.from_proto(reply.info)

    @operation
    async def put_many(
        self,
        bucket: str,
        objects: Mapping[str, bytes | bytearray | memoryview],
        *,
        k: int | None = None,
        n: int | None = None,
    ) -> dict[str, ObjectInfo]:
        """Store several objects given as bytes; returns each key's `ObjectInfo`.

        Small objects (up to `inline_max_bytes`) go to the coordinator up to 256 per call and
        are committed together; the others are stored one by one as by `put`. Each object is
        stored whole or not at all, but the set is not atomic: after an error, some may be
        stored (a retry replaces them).

        Raises:
            InvalidArgument, NotFound (bucket), InsufficientNodes, Unavailable, ConnectionFailed.
        """
        check_bucket_name(bucket)
        _check_optional_redundancy(k, n)
        if not isinstance(objects, Mapping):
            raise InvalidArgument(
                f"put_many takes a mapping of key -> bytes, got {type(objects).__name__}"
            )
        small: list[tuple[str, bytes]] = []
        for key, data in objects.items():
            check_key(key)
            if not isinstance(data, bytes | bytearray | memoryview):
                raise InvalidArgument(
                    f"put_many: the data of {key!r} must be bytes, got {type(data).__name__}"
                )
            payload = inline_payload(data, self.inline_max_bytes)
            if payload is not None:
                small.append((key, payload))
        stored: dict[str, ObjectInfo] = {}
        for chunk in batches(small):
            reply = await self._call(
                "PutInlineMany",
                cpb.PutInlineManyRequest(
                    objects=[
                        cpb.PutInlineRequest(bucket=bucket, key=key, k=k or 0, n=n or 0, data=data)
                        for key, data in chunk
                    ]
                ),
            )
            for (key, _data), result in zip(chunk, reply.results, strict=True):
                if result.accepted:
                    stored[key] = ObjectInfo.from_proto(result.info)
        for key, data in objects.items():
            if key not in stored:  # large, or declined by the coordinator
                stored[key] = await self._put_striped(bucket, key, data, k, n, dict)
        return {key: stored[key] for key in objects}

    @operation
    async def compose(
        self,
        bucket: str,
        key: str,
        sources: Sequence[tuple[str, str] | tuple[str, str, str]],
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Make `bucket/key` the concatenation of `sources` ((bucket, key) or (bucket, key,
        version id) of existing objects, in order) without copying their bytes; the sources
        are consumed (deleted) and an existing object under `key` is replaced, atomically.

        Sources compose when they share (k, n) and stripe size and every one but the last is
        a whole number of stripes (see `put(..., stripe_bytes=...)`).

        Raises:
            InvalidArgument (layout), NotFound (a source is gone or was replaced),
            Unavailable (too few nodes could link their shards), ConnectionFailed.
        """
        check_bucket_name(bucket)
        check_key(key)
        checked = check_metadata(metadata)
        refs = []
        for source in sources:
            if not isinstance(source, tuple) or len(source) not in (2, 3):
                raise InvalidArgument("compose sources are (bucket, key[, version_id]) tuples")
            check_bucket_name(source[0])
            check_key(source[1])
            version = source[2] if len(source) == 3 else ""
            refs.append(cpb.ObjectRef(bucket=source[0], key=source[1], version_id=version))
        if not refs:
            raise InvalidArgument("compose needs at least one source")
        reply = await self._call(
            "ComposeObject",
            cpb.ComposeObjectRequest(bucket=bucket, key=key, sources=refs, metadata=checked),
        )
        return ObjectInfo.from_proto(reply.info)

    async def _reader(self, bucket: str, key: str) -> ObjectReader:
        check_bucket_name(bucket)
        check_key(key)
        located = await self._call(
            "Locate", cpb.LocateRequest(bucket=bucket, key=key, max_stripes=256)
        )
        return self._object_reader(located)

    def _object_reader(self, located: cpb.LocateResponse) -> ObjectReader:
        if located.info.inline:
            return InlineReader(located)
        return ObjectReader(
            located,
            self._nodes,
            self._call,
            self.get_tuning,
            self._unreachable,
            self.local_shards,
        )

    async def stream(
        self, bucket: str, key: str, *, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        """Yield the object's bytes (or a range) piece by piece, with bounded memory."""
        _check_range(offset, length)
        reader = await self._reader(bucket, key)
        async with contextlib.aclosing(_range_pieces(reader, offset, length)) as pieces:
            async for piece in pieces:
                yield piece

    @operation
    async def get(
        self, bucket: str, key: str, *, offset: int = 0, length: int | None = None
    ) -> bytes:
        """Return the object's bytes, or `length` bytes from `offset` (reads only needed stripes).

        Raises:
            NotFound, InvalidArgument (bad range), Unavailable (too many shards unreachable,
            with the reason for each), ConnectionFailed.
        """
        _check_range(offset, length)
        return await _read_bytes(await self._reader(bucket, key), offset, length)

    @operation
    async def get_many(self, bucket: str, keys: Sequence[str]) -> list[bytes]:
        """Return the bytes of several objects, in the order of `keys`.

        One call to the coordinator locates up to 256 of them and carries the small (inline)
        ones whole; the others are then read as by `get`, a few at once. Every result is held
        in memory: read large objects with `get`, `stream` or `download`.

        Raises:
            NotFound (naming a missing key), InvalidArgument, Unavailable, ConnectionFailed.
        """
        check_bucket_name(bucket)
        if isinstance(keys, str | bytes) or not isinstance(keys, Sequence):
            raise InvalidArgument(f"get_many takes a sequence of keys, got {type(keys).__name__}")
        for key in keys:
            check_key(key)
        results: list[bytes] = []
        for chunk in batches(keys):
            reply = await self._call(
                "LocateMany",
                cpb.LocateManyRequest(
                    objects=[
                        cpb.LocateRequest(bucket=bucket, key=key, max_stripes=1) for key in chunk
                    ]
                ),
            )
            found: list[bytes | None] = []
            for key, located in zip(chunk, reply.results, strict=True):
                if located.info.key != key:
                    raise ShoalError(f"get_many: the coordinator answered for {located.info.key!r}")
                found.append(bytes(located.inline_data) if located.info.inline else None)
            # Striped objects are located again as they are read, a few at once, so a long
            # batch never reads from locations that have gone stale meanwhile.
            striped = [i for i, data in enumerate(found) if data is None]
            for i, data in zip(
                striped,
                await self._read_whole_objects(bucket, [chunk[i] for i in striped]),
                strict=True,
            ):
                found[i] = data
            results.extend(data for data in found if data is not None)
        return results

    async def _read_whole_objects(self, bucket: str, keys: Sequence[str]) -> list[bytes]:
        """The bytes of `keys`, each located afresh, GET_MANY_STRIPED_AT_ONCE at a time."""
        limit = asyncio.Semaphore(GET_MANY_STRIPED_AT_ONCE)

        async def read(key: str) -> bytes:
            async with limit:
                return await _read_bytes(await self._reader(bucket, key), 0, None)

        return list(await asyncio.gather(*(read(key) for key in keys)))

    @operation
    async def download(self, bucket: str, key: str, path: str | os.PathLike[str]) -> ObjectInfo:
        """Write the object to `path` atomically (temp file + rename); returns its info."""
        target = Path(path)
        problem = await asyncio.to_thread(_download_target_problem, target)
        if problem:
            raise InvalidArgument(f"cannot download to {str(target)!r}: {problem}")
        reader = await self._reader(bucket, key)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                async with contextlib.aclosing(reader.views()) as stripes:
                    async for views in stripes:
                        await asyncio.to_thread(handle.writelines, views)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return ObjectInfo.from_proto(reader.info)

    @operation
    async def open(self, bucket: str, key: str) -> AsyncObjectStream:
        """Open the object for streaming reads: `await s.read(n)` or `async for piece in s`;
        or `s.pieces(offset, length)` for a range. `s.info` is the version being read."""
        reader = await self._reader(bucket, key)
        return AsyncObjectStream(reader)

    @operation
    async def head(self, bucket: str, key: str) -> ObjectInfo:
        """The object's metadata (NotFound if absent)."""
        check_bucket_name(bucket)
        check_key(key)
        reply = await self._call("HeadObject", cpb.HeadObjectRequest(bucket=bucket, key=key))
        return ObjectInfo.from_proto(reply.info)

    @operation
    async def delete(self, bucket: str, key: str) -> None:
        """Delete the object: invisible at once, shards removed in the background."""
        check_bucket_name(bucket)
        check_key(key)
        await self._call("DeleteObject", cpb.DeleteObjectRequest(bucket=bucket, key=key))

    async def list(
        self, bucket: str, prefix: str = "", *, start_after: str = ""
    ) -> AsyncIterator[ObjectInfo]:
        """Yield the bucket's objects whose keys start with `prefix`, in key order (only keys
        after `start_after` when given)."""
        check_bucket_name(bucket)
        if not isinstance(prefix, str) or not isinstance(start_after, str):
            raise InvalidArgument("prefix and start_after must be strings")
        while True:
            reply = await self._call(
                "ListObjects",
                cpb.ListObjectsRequest(
                    bucket=bucket, prefix=prefix, start_after=start_after, limit=LIST_PAGE
                ),
            )
            for info in reply.objects:
                yield ObjectInfo.from_proto(info)
            if not reply.truncated or not reply.objects:
                return
            start_after = reply.objects[-1].key

    @operation
    async def status(self) -> dict[str, Any]:
        """The cluster status that `clusterctl status` shows (see docs/status-schema.md)."""
        reply = await self._call("ClusterStatus", cpb.ClusterStatusRequest())
        recent = await self._jobs_call("ListJobs", jobs_pb.ListJobsRequest(limit=10))
        active = await self._jobs_call("ListJobs", jobs_pb.ListJobsRequest(active_only=True))
        merged = {j.job_id: j for j in [*active.jobs, *recent.jobs]}
        newest_first = sorted(merged.values(), key=lambda j: j.created, reverse=True)
        status = status_to_dict(reply)
        status["jobs"] = [job_to_dict(JobStatus.from_proto(j)) for j in newest_first]
        return status

    # Jobs ----------------------------------------------------------------------------------

    @operation
    async def submit(
        self, fn: Any, *args: Any, job_options: JobOptions | None = None, **kwargs: Any
    ) -> AsyncJob:
        """Run `fn(*args, **kwargs)` as one task on a worker; `await job.result()` returns its
        value. `fn` is a callable (sent with cloudpickle) or 'package.module:function'."""
        request = call_job(fn, args, kwargs, job_options or JobOptions())
        reply = await self._jobs_call("SubmitJob", request)
        return AsyncJob(reply.job_id, "submit", self._jobs_call, self)

    @operation
    async def map(
        self,
        fn: Any,
        iterable: Iterable[Any],
        *,
        chunksize: int | None = None,
        options: JobOptions | None = None,
    ) -> AsyncJob:
        """Run `fn(item)` for every item (one task per item, or per `chunksize` items);
        `await job.result()` returns the results in input order."""
        request, _count = map_job(fn, iterable, chunksize, options or JobOptions())
        if not request.tasks:
            raise InvalidArgument("map needs at least one item")
        reply = await self._jobs_call("SubmitJob", request)
        return AsyncJob(reply.job_id, "map", self._jobs_call, self)

    @operation
    async def map_reduce(
        self,
        mapper: Any,
        reducer: Any,
        *,
        inputs: Any,
        partitions: int = 4,
        output: tuple[str, str] | None = None,
        combiner: Any = None,
        options: JobOptions | None = None,
    ) -> AsyncJob:
        """Map-reduce over objects: `mapper(key, data)` yields (k, v) pairs, optional
        `combiner(k, values)` runs on the map side, `reducer(k, values)` returns one value per
        key. `inputs` is (bucket, prefix) or a list of (bucket, key). Output goes to
        `output=(bucket, prefix)` as JSON lines per partition, or stays internal."""
        checked = check_inputs(inputs)
        if isinstance(checked, tuple):
            bucket, prefix = checked
            pairs = [(bucket, info.key) async for info in self.list(bucket, prefix)]
        else:
            pairs = checked
        request = map_reduce_job(
            mapper, reducer, pairs, partitions, output, combiner, options or JobOptions()
        )
        if output is not None:
            request.output_bucket, request.output_prefix = output
        reply = await self._jobs_call("SubmitJob", request)
        return AsyncJob(reply.job_id, "map_reduce", self._jobs_call, self, output, partitions)

    @operation
    async def job(self, job_id: str) -> AsyncJob:
        """A handle to an existing job."""
        if not isinstance(job_id, str) or not job_id:
            raise InvalidArgument("job id must be a non-empty string")
        reply = await self._jobs_call("GetJob", jobs_pb.GetJobRequest(job_id=job_id))
        info = reply.job
        output = (info.output_bucket, info.output_prefix) if info.output_bucket else None
        return AsyncJob(job_id, info.kind, self._jobs_call, self, output, info.partitions)

    @operation
    async def list_jobs(
        self, *, active_only: bool = False, limit: int = 50
    ) -> builtins.list[JobStatus]:
        """Recent jobs, newest first."""
        reply = await self._jobs_call(
            "ListJobs", jobs_pb.ListJobsRequest(limit=limit, active_only=active_only)
        )
        return [JobStatus.from_proto(j) for j in reply.jobs]

    # Operations ----------------------------------------------------------------------------

    @operation
    async def hold_repair(self, held: bool = True) -> bool:
        """Pause (held=True) or resume automatic repair, e.g. for planned maintenance."""
        reply = await self._call("SetRepairHold", cpb.SetRepairHoldRequest(held=held))
        return bool(reply.held)

    @operation
    async def repair_errors(self, limit: int = 100) -> tuple[builtins.list[RepairErrorInfo], int]:
        """Recorded repair failures (most recent first) and their total count."""
        if not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise InvalidArgument("limit must be an integer between 1 and 1000")
        reply = await self._call("ListRepairErrors", cpb.ListRepairErrorsRequest(limit=limit))
        return [RepairErrorInfo.from_proto(e) for e in reply.errors], int(reply.total)

    @operation
    async def scrub(self, node_id: str | None = None) -> builtins.list[str]:
        """Start a scrub pass now on one node (or every live node); returns the node ids."""
        nodes = [_check_node_id(node_id)] if node_id is not None else []
        reply = await self._call("StartScrub", cpb.StartScrubRequest(node_ids=nodes))
        return list(reply.node_ids)

    @operation
    async def drain_node(self, node_id: str, *, cancel: bool = False) -> int:
        """Move every shard off a node (it keeps serving reads); returns shards to move."""
        reply = await self._call(
            "DrainNode", cpb.DrainNodeRequest(node_id=_check_node_id(node_id), cancel=cancel)
        )
        return int(reply.shards_to_move)

    @operation
    async def remove_node(self, node_id: str) -> int:
        """Decommission a node; refused while it holds shards some stripe needs to stay at k.

        Returns the shards it still held (repair rebuilds them elsewhere)."""
        reply = await self._call(
            "RemoveNode", cpb.RemoveNodeRequest(node_id=_check_node_id(node_id))
        )
        return int(reply.shards_left)


def _check_node_id(node_id: str) -> str:
    if not isinstance(node_id, str) or not is_valid_node_id(node_id):
        raise InvalidArgument(f"invalid node id {node_id!r}: letters, digits, '.', '_' and '-'")
    return node_id


def _download_target_problem(target: Path) -> str:
    if target.is_dir():
        return "it is a directory"
    if not target.parent.exists():
        return "no such directory"
    return ""


def _check_range(offset: int, length: int | None) -> None:
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise InvalidArgument(f"offset must be an integer >= 0, got {offset!r}")
    if length is not None and (
        not isinstance(length, int) or isinstance(length, bool) or length < 0
    ):
        raise InvalidArgument(f"length must be None or an integer >= 0, got {length!r}")


async def _read_bytes(reader: ObjectReader, offset: int, length: int | None) -> bytes:
    """`length` bytes from `offset` (to the end when None) of the object `reader` reads."""
    size = max(reader.range_end(offset, length) - offset, 0)
    # The shards arrive as views into their messages; each is copied once, into the result.
    async with contextlib.aclosing(reader.views(offset, length)) as stripes:
        if size < BUILD_IN_PLACE_MIN_BYTES:
            return b"".join([view async for views in stripes for view in views])
        # Large: copied into the result as they come (BytesBuilder), so the received
        # messages are freed stripe by stripe instead of all held until a final join.
        result = BytesBuilder(size)
        async for views in stripes:
            for view in views:
                result.write(view)
        return result.result()


async def _range_pieces(
    reader: ObjectReader, offset: int, length: int | None
) -> AsyncGenerator[bytes, None]:
    """The range as bytes, a stripe (or the part of one in range) at a time: one copy each."""
    # aclosing: stopping early must cancel the read-ahead at once, not when garbage collected.
    async with contextlib.aclosing(reader.views(offset, length)) as stripes:
        async for views in stripes:
            yield b"".join(views)


class AsyncObjectStream:
    """A readable stream over one object version."""

    def __init__(self, reader: ObjectReader) -> None:
        self.info = ObjectInfo.from_proto(reader.info)
        self._reader = reader
        self._pieces: AsyncGenerator[bytes, None] = _range_pieces(reader, 0, None)
        self._buffer = b""
        self._eof = False

    async def pieces(self, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Yield `length` bytes from `offset` (to the end when None) of this same version,
        piece by piece with bounded memory (independent of read()'s position)."""
        _check_range(offset, length)
        async with contextlib.aclosing(_range_pieces(self._reader, offset, length)) as pieces:
            async for piece in pieces:
                yield piece

    async def read(self, size: int = -1) -> bytes:
        """Read up to `size` bytes (all remaining when negative); b"" at the end."""
        if size is None or size < 0:
            parts = [self._buffer]
            self._buffer = b""
            async for piece in self._pieces:
                parts.append(piece)
            self._eof = True
            return b"".join(parts)
        while len(self._buffer) < size and not self._eof:
            try:
                self._buffer += await anext(self._pieces)
            except StopAsyncIteration:
                self._eof = True
        result, self._buffer = self._buffer[:size], self._buffer[size:]
        return result

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        if self._buffer:
            data, self._buffer = self._buffer, b""
            yield data
        async for piece in self._pieces:
            yield piece

    async def aclose(self) -> None:
        await self._pieces.aclose()
