"""Value types returned by the SDK."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from shoal.rpc.v1 import common_pb2 as common
from shoal.rpc.v1 import coordinator_pb2 as cpb


@dataclass(frozen=True)
class ObjectInfo:
    """Metadata of a stored object."""

    bucket: str
    key: str
    size: int
    etag: str
    k: int
    n: int
    created: datetime
    version_id: str = ""
    stripe_count: int = 0
    stripe_bytes: int = 0
    # What the writer stored with the object (put(..., metadata=...)).
    metadata: dict[str, str] = field(default_factory=dict)
    # Stored whole in the coordinator's metadata (small objects; see shoal.client.inline).
    inline: bool = False

    @classmethod
    def from_proto(cls, info: common.ObjectInfo) -> ObjectInfo:
        return cls(
            bucket=info.bucket,
            key=info.key,
            size=info.size,
            etag=info.etag,
            k=info.k,
            n=info.n,
            created=datetime.fromtimestamp(info.created, UTC),
            version_id=info.version_id,
            stripe_count=info.stripe_count,
            stripe_bytes=info.stripe_bytes,
            metadata=dict(info.metadata),
            inline=info.inline,
        )


@dataclass(frozen=True)
class BucketInfo:
    """A bucket and its default redundancy."""

    name: str
    k: int
    n: int
    write_quorum: int
    created: datetime
    owner: str = ""

    @classmethod
    def from_proto(cls, bucket: cpb.Bucket) -> BucketInfo:
        return cls(
            name=bucket.name,
            k=bucket.k,
            n=bucket.n,
            write_quorum=bucket.write_quorum,
            created=datetime.fromtimestamp(bucket.created, UTC),
            owner=bucket.owner,
        )


@dataclass(frozen=True)
class RepairErrorInfo:
    """A shard repair that failed and will be retried."""

    bucket: str
    key: str
    version_id: str
    stripe_index: int
    shard_index: int
    reason: str
    attempts: int
    last_attempt: datetime
    next_attempt: datetime

    @classmethod
    def from_proto(cls, error: cpb.RepairError) -> RepairErrorInfo:
        return cls(
            bucket=error.bucket,
            key=error.key,
            version_id=error.version_id,
            stripe_index=error.stripe_index,
            shard_index=error.shard_index,
            reason=error.reason,
            attempts=error.attempts,
            last_attempt=datetime.fromtimestamp(error.last_attempt, UTC),
            next_attempt=datetime.fromtimestamp(error.next_attempt, UTC),
        )
