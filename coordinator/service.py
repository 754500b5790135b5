"""CoordinatorServicer: the Coordinator RPCs. Validates input, then asks MetadataStore,
Membership and placement; it never touches shard bytes.

All SQLite work runs on one dedicated thread (`self.db(...)`, a MetadataThread), which
serialises transactions, keeps fsyncs off the event loop and commits calls that queued up
together (group commit).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc.aio
import xxhash

from shoal.common.channels import NodeChannels
from shoal.common.erasure import check_redundancy
from shoal.common.errors import InsufficientNodes, InvalidArgument, NotFound, Unavailable
from shoal.common.ids import is_valid_node_id, new_version_id
from shoal.common.names import check_bucket_name, check_key, check_metadata
from shoal.common.placement import place
from shoal.common.rpc import MAX_OBJECTS_PER_CALL, PROTOCOL_VERSION, unary
from shoal.common.transport import Transport
from shoal.coordinator import compose
from shoal.coordinator import metrics as coordinator_metrics
from shoal.coordinator.config import CoordinatorConfig
from shoal.coordinator.membership import (
    ACTIVE,
    DECOMMISSIONED,
    DOWN,
    DRAINING,
    Membership,
    NodeRecord,
)
from shoal.coordinator.metadata import (
    BucketRow,
    LoopReader,
    MetadataStore,
    NodeRow,
    ShardRow,
    StripeRow,
    VersionRow,
)
from shoal.coordinator.metadata_thread import MetadataThread
from shoal.coordinator.reconcile import Reconciler
from shoal.coordinator.repair import RepairScheduler
from shoal.coordinator.status import build_status
from shoal.rpc.v1 import common_pb2 as common
from shoal.rpc.v1 import coordinator_pb2 as pb
from shoal.rpc.v1 import coordinator_pb2_grpc as pb_grpc
from shoal.rpc.v1 import storage_pb2 as spb

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")
MAX_PLACE_BATCH = 256
# Stripe locations per object in a LocateMany reply: 256 objects at n = 256 stay far below
# the message limit, as do 256 inline objects of at most 64 KiB.
MAX_MANY_STRIPES = 4
MAX_LIST = 1000
# Stripe sizes a put may ask for (BeginPutRequest.stripe_bytes).
MIN_STRIPE_BYTES = 4 * 1024
MAX_STRIPE_BYTES = 64 * 1024 * 1024
LINK_BATCH = 2000
LINK_TIMEOUT_S = 30.0


def version_info(v: VersionRow) -> common.ObjectInfo:
    """ObjectInfo message of a version row."""
    return common.ObjectInfo(
        bucket=v.bucket,
        key=v.key,
        size=v.size,
        etag=v.etag,
        k=v.k,
        n=v.n,
        created=v.created,
        version_id=v.version_id,
        stripe_bytes=v.stripe_bytes,
        stripe_count=v.stripe_count,
        write_quorum=v.write_quorum,
        metadata=v.metadata_dict(),
        inline=bool(v.inline),
    )


def bucket_message(b: BucketRow) -> pb.Bucket:
    return pb.Bucket(
        name=b.name, k=b.k, n=b.n, write_quorum=b.write_quorum, created=b.created, owner=b.owner
    )


def stripe_rows(stripes: Any) -> list[StripeRow]:
    """Convert WrittenStripe messages into rows."""
    return [
        StripeRow(
            s.index,
            s.size,
            s.shard_length,
            tuple(
                ShardRow(x.shard_index, x.node_id, x.length, bytes(x.checksum), "ok")
                for x in s.shards
            ),
        )
        for s in stripes
    ]


class CoordinatorServicer(pb_grpc.CoordinatorServicer):
    """The Coordinator gRPC service."""

    def __init__(
        self,
        config: CoordinatorConfig,
        store: MetadataStore,
        membership: Membership,
        transport: Transport | None = None,
        reader: LoopReader | None = None,
    ) -> None:
        self.config = config
        self.store = store
        # Small reads on the event loop (see LoopReader); None: every read on the thread.
        self.reader = reader
        self.membership = membership
        self.metadata_thread = MetadataThread(store, config.metadata_group_commit)
        self.channels = NodeChannels(transport)
        self.repair = RepairScheduler(config, store, membership, self.db, self.channels)
        self.reconciler = Reconciler(config, store, membership, self.db, self.channels)
        self.reconciler.on_missing = self.repair.poke
        self.drain_totals: dict[str, int] = {}

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a MetadataStore (or JobStore) call on the metadata thread."""
        return await self.metadata_thread.call(fn, *args)

    async def close(self) -> None:
        await self.channels.close()
        self.metadata_thread.close()

    def node_info(self, record: NodeRecord, drain_remaining: int = 0) -> common.NodeInfo:
        return common.NodeInfo(
            node_id=record.node_id,
            address=record.address,
            zone=record.zone,
            state=record.state,
            capacity_bytes=record.capacity_bytes,
            used_bytes=record.used_bytes,
            shard_count=record.shard_count,
            last_heartbeat_age_s=self.membership.heartbeat_age(record),
            down_for_s=self.membership.down_for(record),
            admin_state=record.admin_state,
            repair_in_s=self.membership.repair_in(record),
            scrub_running=record.scrub_running,
            scrub_bytes_done=record.scrub_bytes_done,
            scrub_bytes_total=record.scrub_bytes_total,
            corrupt_found=record.corrupt_found,
            drain_total_shards=self.drain_totals.get(record.node_id, 0),
            drain_remaining_shards=drain_remaining,
        )

    # Membership ----------------------------------------------------------------------------

    @unary
    async def RegisterNode(
        self, request: pb.RegisterNodeRequest, context: Context
    ) -> pb.RegisterNodeResponse:
        if request.protocol_version != PROTOCOL_VERSION:
            raise InvalidArgument(
                f"node {request.node_id} speaks protocol version {request.protocol_version}, "
                f"this coordinator speaks {PROTOCOL_VERSION}"
            )
        if not is_valid_node_id(request.node_id):
            raise InvalidArgument(f"invalid node id {request.node_id!r}")
        if ":" not in request.address:
            raise InvalidArgument(f"invalid node address {request.address!r}")
        known = self.membership.nodes.get(request.node_id)
        if known is not None and known.admin_state == DECOMMISSIONED:
            raise InvalidArgument(
                f"node {request.node_id} was removed from the cluster; wipe its data directory "
                "to join again as a new node"
            )
        await self.db(
            self.store.upsert_node,
            NodeRow(request.node_id, request.address, request.zone, request.capacity_bytes),
        )
        self.membership.upsert(
            request.node_id, request.address, request.zone, request.capacity_bytes
        )
        self.reconciler.request(request.node_id)
        log.info(
            "node registered",
            extra={"node_id": request.node_id, "address": request.address, "zone": request.zone},
        )
        return pb.RegisterNodeResponse(node_id=request.node_id)

    @unary
    async def Heartbeat(
        self, request: pb.HeartbeatRequest, context: Context
    ) -> pb.HeartbeatResponse:
        record = self.membership.heartbeat(
            request.node_id, request.capacity_bytes, request.used_bytes, request.shard_count
        )
        if record is None:
            return pb.HeartbeatResponse(reregister=True)
        record.scrub_running = request.scrub_running
        record.scrub_bytes_done = request.scrub_bytes_done
        record.scrub_bytes_total = request.scrub_bytes_total
        record.corrupt_found = request.corrupt_found
        scrub_now, record.scrub_requested = record.scrub_requested, False
        if request.deleted_shard_ids:
            await self.db(
                self.store.confirm_deletions, request.node_id, list(request.deleted_shard_ids)
            )
        due = await self.db(self.store.due_deletions, request.node_id, time.time())
        return pb.HeartbeatResponse(delete_shard_ids=due, scrub_now=scrub_now)

    # Buckets -------------------------------------------------------------------------------

    def _redundancy(self, k: int, n: int, write_quorum: int = 0) -> tuple[int, int, int]:
        k = k or self.config.default_k
        n = n or self.config.default_n
        check_redundancy(k, n)
        write_quorum = write_quorum or k + 1
        if not k + 1 <= write_quorum <= n:
            raise InvalidArgument(
                f"invalid write quorum {write_quorum}: must be between k+1={k + 1} and n={n}"
            )
        known = self.membership.known_count()
        if n > known:
            raise InsufficientNodes(
                f"n={n} shards per stripe need {n} distinct nodes, the cluster knows {known}",
                needed=n,
                available=known,
            )
        return k, n, write_quorum

    @unary
    async def CreateBucket(
        self, request: pb.CreateBucketRequest, context: Context
    ) -> pb.CreateBucketResponse:
        check_bucket_name(request.name)
        k, n, quorum = self._redundancy(request.k, request.n, request.write_quorum)
        if len(request.owner) > 256:
            raise InvalidArgument("bucket owner: at most 256 characters")
        row = await self.db(self.store.create_bucket, request.name, k, n, quorum, request.owner)
        log.info(
            "bucket created", extra={"bucket": row.name, "k": k, "n": n, "write_quorum": quorum}
        )
        return pb.CreateBucketResponse(bucket=bucket_message(row))

    @unary
    async def DeleteBucket(
        self, request: pb.DeleteBucketRequest, context: Context
    ) -> pb.DeleteBucketResponse:
        check_bucket_name(request.name)
        await self.db(self.store.delete_bucket, request.name)
        return pb.DeleteBucketResponse()

    @unary
    async def ListBuckets(
        self, request: pb.ListBucketsRequest, context: Context
    ) -> pb.ListBucketsResponse:
        rows = await self.db(self.store.buckets)
        return pb.ListBucketsResponse(buckets=[bucket_message(b) for b in rows])

    # Writes --------------------------------------------------------------------------------

    def _placement(self, version: VersionRow, index: int) -> pb.StripePlacement:
        candidates = self.membership.candidates()
        if len(candidates) < version.write_quorum:
            raise InsufficientNodes(
                f"need {version.write_quorum} live nodes for the write quorum of k={version.k}, "
                f"n={version.n}; {len(candidates)} live",
                needed=version.write_quorum,
                available=len(candidates),
            )
        extra = min(version.n, max(len(candidates) - version.n, 0))
        chosen = place(f"{version.version_id}.{index}", candidates, version.n + extra)
        nodes = [self.node_info(self.membership.nodes[c.node_id]) for c in chosen]
        return pb.StripePlacement(index=index, nodes=nodes)

    @unary
    async def BeginPut(self, request: pb.BeginPutRequest, context: Context) -> pb.BeginPutResponse:
        check_bucket_name(request.bucket)
        check_key(request.key)
        bucket = await self.db(self.store.bucket, request.bucket)
        if request.k or request.n:
            k, n, quorum = self._redundancy(request.k or bucket.k, request.n or bucket.n)
            if (k, n) == (bucket.k, bucket.n):
                quorum = bucket.write_quorum
        else:
            k, n, quorum = self._redundancy(bucket.k, bucket.n, bucket.write_quorum)
        stripe_bytes = request.stripe_bytes or self.config.stripe_bytes
        if not MIN_STRIPE_BYTES <= stripe_bytes <= MAX_STRIPE_BYTES:
            raise InvalidArgument(
                f"stripe_bytes {stripe_bytes}: must be between {MIN_STRIPE_BYTES} and "
                f"{MAX_STRIPE_BYTES}"
            )
        version = VersionRow(
            new_version_id(),
            request.bucket,
            request.key,
            "pending",
            k,
            n,
            quorum,
            stripe_bytes,
            0,
            "",
            0,
            time.time(),
        )
        first = self._placement(version, 0)
        await self.db(self.store.begin_upload, version)
        return pb.BeginPutResponse(
            upload_id=version.version_id,
            k=k,
            n=n,
            write_quorum=quorum,
            stripe_bytes=version.stripe_bytes,
            first_stripe=first,
        )

    @unary
    async def PutInline(
        self, request: pb.PutInlineRequest, context: Context
    ) -> pb.PutInlineResponse:
        """A small object in one call, stored in the metadata itself (see inline_max_bytes)."""
        (reply,) = await self._put_inline([request])
        return reply

    @unary
    async def PutInlineMany(
        self, request: pb.PutInlineManyRequest, context: Context
    ) -> pb.PutInlineManyResponse:
        """Several small objects in one call and one metadata transaction."""
        _check_batch(len(request.objects))
        return pb.PutInlineManyResponse(results=await self._put_inline(list(request.objects)))

    async def _put_inline(self, requests: list[pb.PutInlineRequest]) -> list[pb.PutInlineResponse]:
        """Validate every request, then commit the accepted ones in one transaction; one reply
        per request, in order (accepted=False above the inline limit)."""
        chosen: list[tuple[int, VersionRow, bytes]] = []
        buckets: dict[str, BucketRow] = {}
        seen: set[tuple[str, str]] = set()
        for position, request in enumerate(requests):
            check_bucket_name(request.bucket)
            check_key(request.key)
            if (request.bucket, request.key) in seen:
                raise InvalidArgument(f"key {request.key!r} appears twice in one call")
            seen.add((request.bucket, request.key))
            if len(request.data) > self.config.inline_max_bytes:
                continue
            metadata = check_metadata(dict(request.metadata))
            bucket = buckets.get(request.bucket)
            if bucket is None:
                bucket = buckets[request.bucket] = await self.db(self.store.bucket, request.bucket)
            k, n, quorum = self._redundancy(
                request.k or bucket.k,
                request.n or bucket.n,
                bucket.write_quorum if not (request.k or request.n) else 0,
            )
            data = bytes(request.data)
            version = VersionRow(
                new_version_id(),
                request.bucket,
                request.key,
                "committed",
                k,
                n,
                quorum,
                max(len(data), 1),
                len(data),
                xxhash.xxh3_128_hexdigest(data),
                0,
                time.time(),
                json.dumps(metadata, sort_keys=True),
            )
            chosen.append((position, version, data))
        replies = [pb.PutInlineResponse(accepted=False) for _ in requests]
        if not chosen:
            return replies
        rows = await self.db(
            self.store.commit_inline_many,
            [(version, data) for _position, version, data in chosen],
            self.config.delete_grace,
        )
        for (position, _version, _data), row in zip(chosen, rows, strict=True):
            coordinator_metrics.record_commit(row.size, 0)
            log.info(
                "object committed",
                extra={"bucket": row.bucket, "key": row.key, "size": row.size, "inline": True},
            )
            replies[position] = pb.PutInlineResponse(accepted=True, info=version_info(row))
        return replies

    @unary
    async def PlaceStripes(
        self, request: pb.PlaceStripesRequest, context: Context
    ) -> pb.PlaceStripesResponse:
        if not 1 <= request.count <= MAX_PLACE_BATCH:
            raise InvalidArgument(f"count must be 1..{MAX_PLACE_BATCH}")
        version = await self.db(self.store.version, request.upload_id)
        if version.state != "pending":
            raise InvalidArgument(f"upload {request.upload_id} is not in progress")
        return pb.PlaceStripesResponse(
            stripes=[
                self._placement(version, request.first_stripe + i) for i in range(request.count)
            ]
        )

    def _check_nodes(self, stripes: list[StripeRow]) -> None:
        for stripe in stripes:
            for shard in stripe.shards:
                if shard.node_id not in self.membership.nodes:
                    raise InvalidArgument(f"stripe {stripe.index}: unknown node {shard.node_id!r}")

    @unary
    async def ReportStripes(
        self, request: pb.ReportStripesRequest, context: Context
    ) -> pb.ReportStripesResponse:
        stripes = stripe_rows(request.stripes)
        self._check_nodes(stripes)
        await self.db(self.store.record_stripes, request.upload_id, stripes)
        return pb.ReportStripesResponse()

    @unary
    async def CommitPut(
        self, request: pb.CommitPutRequest, context: Context
    ) -> pb.CommitPutResponse:
        metadata = check_metadata(dict(request.metadata))
        stripes = stripe_rows(request.stripes)
        self._check_nodes(stripes)
        for stripe in stripes:
            lengths = {x.length for x in stripe.shards}
            if lengths != {stripe.shard_length}:
                raise InvalidArgument(
                    f"stripe {stripe.index}: shard lengths {sorted(lengths)} "
                    f"differ from {stripe.shard_length}"
                )
        version, degraded = await self.db(
            self.store.commit,
            request.upload_id,
            request.size,
            request.etag,
            request.stripe_count,
            stripes,
            self.config.delete_grace,
            metadata,
        )
        coordinator_metrics.record_commit(version.size, degraded)
        if degraded:
            self.repair.poke()
        log.info(
            "object committed",
            extra={
                "bucket": version.bucket,
                "key": version.key,
                "size": version.size,
                "degraded_stripes": degraded,
            },
        )
        return pb.CommitPutResponse(info=version_info(version), degraded_stripes=degraded)

    @unary
    async def AbortPut(self, request: pb.AbortPutRequest, context: Context) -> pb.AbortPutResponse:
        await self.db(self.store.abort, request.upload_id)
        log.info("upload aborted", extra={"upload_id": request.upload_id, "reason": request.reason})
        return pb.AbortPutResponse()

    @unary
    async def ComposeObject(
        self, request: pb.ComposeObjectRequest, context: Context
    ) -> pb.ComposeObjectResponse:
        check_bucket_name(request.bucket)
        check_key(request.key)
        metadata = check_metadata(dict(request.metadata))
        refs = [(s.bucket, s.key, s.version_id) for s in request.sources]
        for bucket, key, _version in refs:
            check_bucket_name(bucket)
            check_key(key)
        if len({(b, k) for b, k, _v in refs}) != len(refs):
            raise InvalidArgument("compose sources must be distinct objects")
        if not 1 <= len(refs) <= compose.MAX_SOURCES:
            raise InvalidArgument(f"compose takes 1 to {compose.MAX_SOURCES} sources")
        await self.db(self.store.bucket, request.bucket)
        sources = await self.db(self.store.compose_sources, refs)
        version_id = new_version_id()
        planned = compose.plan(version_id, sources, self.config.stripe_bytes)
        version = VersionRow(
            version_id,
            request.bucket,
            request.key,
            "pending",
            planned.k,
            planned.n,
            planned.write_quorum,
            planned.stripe_bytes,
            0,
            "",
            0,
            time.time(),
        )
        await self.db(self.store.begin_upload, version)
        linked: set[tuple[str, str]] = set()
        try:
            linked = await self._link(planned.links)
            stripes = compose.linked_stripes(planned, linked)
            etag = compose.compose_etag([v.etag for v, _s in sources])
            committed, degraded = await self.db(
                self.store.commit_compose,
                version_id,
                [v for v, _s in sources],
                stripes,
                etag,
                metadata,
                self.config.delete_grace,
            )
        except BaseException:
            await self.db(self.store.abort, version_id)
            await self._unlink(planned.links, linked)
            raise
        coordinator_metrics.record_commit(committed.size, degraded)
        if degraded:
            self.repair.poke()
        log.info(
            "object composed",
            extra={
                "bucket": committed.bucket,
                "key": committed.key,
                "size": committed.size,
                "sources": len(sources),
                "degraded_stripes": degraded,
            },
        )
        return pb.ComposeObjectResponse(info=version_info(committed), degraded_stripes=degraded)

    async def _link(self, links: list[compose.Link]) -> set[tuple[str, str]]:
        """Ask each node to link its shards under their new names; (node, target) pairs that
        exist afterwards. Down or unreachable nodes link nothing (their shards count as
        missing in the new version, which repair rebuilds)."""
        by_node: dict[str, list[compose.Link]] = {}
        for link in links:
            by_node.setdefault(link.node_id, []).append(link)

        async def link_on(node_id: str, batch: list[compose.Link]) -> set[tuple[str, str]]:
            record = self.membership.nodes.get(node_id)
            if record is None or record.state in (DOWN, DECOMMISSIONED):
                return set()
            done: set[tuple[str, str]] = set()
            stub = self.channels.stub(record.address)
            for start in range(0, len(batch), LINK_BATCH):
                request = spb.LinkShardsRequest(
                    links=[
                        spb.ShardLink(source_id=x.source_id, target_id=x.target_id)
                        for x in batch[start : start + LINK_BATCH]
                    ]
                )
                try:
                    reply = await stub.LinkShards(request, timeout=LINK_TIMEOUT_S)
                except grpc.aio.AioRpcError as exc:
                    log.warning(
                        "could not link shards for compose",
                        extra={"node_id": node_id, "error": exc.code().name},
                    )
                    return done
                done.update((node_id, target) for target in reply.linked)
            return done

        results = await asyncio.gather(*(link_on(n, b) for n, b in by_node.items()))
        return set().union(*results) if results else set()

    async def _unlink(self, links: list[compose.Link], linked: set[tuple[str, str]]) -> None:
        """Queue the names a failed compose linked for removal (the sources keep theirs)."""
        by_node: dict[str, list[tuple[str, int]]] = {}
        for link in links:
            if (link.node_id, link.target_id) in linked:
                by_node.setdefault(link.node_id, []).append((link.target_id, link.shard.length))
        for node_id, names in by_node.items():
            await self.db(self.store.queue_deletions, node_id, names, time.time())

    # Reads ---------------------------------------------------------------------------------

    def _shard_location(self, shard: ShardRow) -> common.ShardLocation:
        record = self.membership.nodes.get(shard.node_id)
        return common.ShardLocation(
            shard_index=shard.shard_index,
            node_id=shard.node_id,
            address=record.address if record else "",
            length=shard.length,
            checksum=shard.checksum,
            state=shard.state,
            node_state=record.state if record else "unknown",
            node_down_for_s=self.membership.down_for(record) if record else 0.0,
        )

    @unary
    async def Locate(self, request: pb.LocateRequest, context: Context) -> pb.LocateResponse:
        return await self._locate(request)

    @unary
    async def LocateMany(
        self, request: pb.LocateManyRequest, context: Context
    ) -> pb.LocateManyResponse:
        _check_batch(len(request.objects))
        for item in request.objects:
            if not 1 <= item.max_stripes <= MAX_MANY_STRIPES:
                raise InvalidArgument(
                    f"LocateMany: max_stripes must be 1..{MAX_MANY_STRIPES} per object "
                    "(a reader pages through the rest with Locate)"
                )
        return pb.LocateManyResponse(results=[await self._locate(r) for r in request.objects])

    async def _locate(self, request: pb.LocateRequest) -> pb.LocateResponse:
        check_bucket_name(request.bucket)
        check_key(request.key)
        count = min(request.max_stripes or 1024, 1024)
        args = (request.bucket, request.key, request.version_id, request.first_stripe, count)
        located = self.reader.locate(*args) if self.reader else None
        if located is None:
            located = await self.db(self.store.locate, *args)
        version, data, stripes = located
        if data is not None:
            info = version_info(version)
            # Readers see one stripe holding the whole object (none when it is empty).
            info.stripe_bytes, info.stripe_count = max(len(data), 1), 1 if data else 0
            return pb.LocateResponse(info=info, inline_data=data)
        self.membership.refresh()
        return pb.LocateResponse(
            info=version_info(version),
            stripes=[
                common.StripeLocation(
                    index=s.index,
                    size=s.size,
                    shard_length=s.shard_length,
                    shards=[self._shard_location(x) for x in s.shards],
                )
                for s in stripes
            ],
        )

    @unary
    async def HeadObject(
        self, request: pb.HeadObjectRequest, context: Context
    ) -> pb.HeadObjectResponse:
        check_bucket_name(request.bucket)
        check_key(request.key)
        version = self.reader.current(request.bucket, request.key) if self.reader else None
        if version is None:
            version = await self.db(self.store.current, request.bucket, request.key)
        return pb.HeadObjectResponse(info=version_info(version))

    @unary
    async def DeleteObject(
        self, request: pb.DeleteObjectRequest, context: Context
    ) -> pb.DeleteObjectResponse:
        check_bucket_name(request.bucket)
        check_key(request.key)
        await self.db(
            self.store.delete_object, request.bucket, request.key, self.config.delete_grace
        )
        log.info("object deleted", extra={"bucket": request.bucket, "key": request.key})
        return pb.DeleteObjectResponse()

    @unary
    async def ListObjects(
        self, request: pb.ListObjectsRequest, context: Context
    ) -> pb.ListObjectsResponse:
        check_bucket_name(request.bucket)
        limit = min(request.limit or MAX_LIST, MAX_LIST)
        rows = await self.db(
            self.store.list_objects, request.bucket, request.prefix, request.start_after, limit + 1
        )
        return pb.ListObjectsResponse(
            objects=[version_info(v) for v in rows[:limit]], truncated=len(rows) > limit
        )

    @unary
    async def ReportCorruptShards(
        self, request: pb.ReportCorruptShardsRequest, context: Context
    ) -> pb.ReportCorruptShardsResponse:
        for shard in request.shards:
            state = "missing" if shard.reason.startswith("missing") else "corrupt"
            marked = await self.db(
                self.store.mark_bad,
                shard.version_id,
                shard.stripe_index,
                shard.shard_index,
                shard.node_id,
                state,
            )
            coordinator_metrics.record_bad_shard(state)
            self.repair.poke()
            log.warning(
                "bad shard reported",
                extra={
                    "version_id": shard.version_id,
                    "stripe": shard.stripe_index,
                    "shard": shard.shard_index,
                    "node_id": shard.node_id,
                    "state": state,
                    "reason": shard.reason,
                    "recorded": marked,
                },
            )
        return pb.ReportCorruptShardsResponse()

    # Operations ----------------------------------------------------------------------------

    @unary
    async def ClusterStatus(
        self, request: pb.ClusterStatusRequest, context: Context
    ) -> pb.ClusterStatusResponse:
        health = await self.db(self.store.health_summary, self.membership.counted_out_ids())
        buckets = await self.db(self.store.buckets)
        pending, pending_bytes = await self.db(self.store.pending_deletions)
        nodes = []
        for record in sorted(self.membership.nodes.values(), key=lambda r: r.node_id):
            remaining = 0
            if record.admin_state == DRAINING:
                remaining = await self.db(self.store.shards_on, record.node_id)
            nodes.append(self.node_info(record, remaining))
        progress = self.repair.progress
        repair = pb.RepairStatus(
            held=self.repair.held,
            shards_done=progress.done,
            shards_remaining=progress.remaining,
            bytes_done=progress.bytes_done,
            rate_bytes_s=progress.rate,
            eta_s=progress.eta,
            errors=progress.errors,
            episode_started=progress.started,
            shards_to_move=progress.to_move,
            mean_rebuild_s=progress.mean_rebuild_s,
        )
        orphaned = pending_bytes + sum(self.reconciler.waiting_orphan_bytes.values())
        return build_status(self.config, nodes, health, len(buckets), pending, repair, orphaned)

    @unary
    async def SetRepairHold(
        self, request: pb.SetRepairHoldRequest, context: Context
    ) -> pb.SetRepairHoldResponse:
        await self.repair.set_held(request.held)
        return pb.SetRepairHoldResponse(held=self.repair.held)

    @unary
    async def ListRepairErrors(
        self, request: pb.ListRepairErrorsRequest, context: Context
    ) -> pb.ListRepairErrorsResponse:
        rows, total = await self.db(self.store.repair_errors, min(request.limit or 100, 1000))
        return pb.ListRepairErrorsResponse(
            errors=[
                pb.RepairError(
                    version_id=r.version_id,
                    stripe_index=r.stripe_index,
                    shard_index=r.shard_index,
                    bucket=r.bucket,
                    key=r.key,
                    reason=r.reason,
                    attempts=r.attempts,
                    last_attempt=r.last_attempt,
                    next_attempt=r.next_attempt,
                )
                for r in rows
            ],
            total=total,
        )

    def _node(self, node_id: str) -> NodeRecord:
        record = self.membership.nodes.get(node_id)
        if record is None:
            known = ", ".join(sorted(self.membership.nodes)) or "none"
            raise NotFound(f"no node {node_id!r} (known: {known})")
        return record

    @unary
    async def StartScrub(
        self, request: pb.StartScrubRequest, context: Context
    ) -> pb.StartScrubResponse:
        records = [self._node(n) for n in request.node_ids] or [
            self.membership.nodes[n] for n in sorted(self.membership.readable_ids())
        ]
        for record in records:
            if record.state in (DOWN, DECOMMISSIONED):
                raise Unavailable(f"node {record.node_id} is {record.state}; it cannot scrub now")
            record.scrub_requested = True
        return pb.StartScrubResponse(node_ids=[r.node_id for r in records])

    @unary
    async def DrainNode(
        self, request: pb.DrainNodeRequest, context: Context
    ) -> pb.DrainNodeResponse:
        record = self._node(request.node_id)
        if record.admin_state == DECOMMISSIONED:
            raise InvalidArgument(f"node {record.node_id} was removed; it cannot be drained")
        state = ACTIVE if request.cancel else DRAINING
        held = await self.db(self.store.set_admin_state, record.node_id, state)
        self.membership.set_admin_state(record.node_id, state)
        if state == DRAINING:
            self.drain_totals[record.node_id] = held
        else:
            self.drain_totals.pop(record.node_id, None)
        return pb.DrainNodeResponse(shards_to_move=held if state == DRAINING else 0)

    @unary
    async def RemoveNode(
        self, request: pb.RemoveNodeRequest, context: Context
    ) -> pb.RemoveNodeResponse:
        record = self._node(request.node_id)
        needed = await self.db(
            self.store.stripes_needing, record.node_id, self.membership.readable_ids()
        )
        if needed:
            raise Unavailable(
                f"refusing to remove {record.node_id}: {needed} stripes would drop below k "
                "healthy shards without it; drain it first "
                f"(clusterctl node drain {record.node_id})"
            )
        held = await self.db(self.store.set_admin_state, record.node_id, DECOMMISSIONED)
        self.membership.set_admin_state(record.node_id, DECOMMISSIONED)
        self.drain_totals.pop(record.node_id, None)
        return pb.RemoveNodeResponse(shards_left=held)

    async def expire_uploads_once(self) -> None:
        """Abort uploads that stayed uncommitted past `upload_timeout`."""
        expired = await self.db(self.store.expire_uploads, time.time() - self.config.upload_timeout)
        if expired:
            log.info("expired stale uploads", extra={"count": len(expired)})


def _check_batch(count: int) -> None:
    """Refuse a PutInlineMany or LocateMany call with more objects than one call may carry."""
    if count > MAX_OBJECTS_PER_CALL:
        raise InvalidArgument(f"at most {MAX_OBJECTS_PER_CALL} objects per call")
