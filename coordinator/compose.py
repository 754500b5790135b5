"""ComposeObject planning: which source layouts compose, and the new version's stripes.

A version has one `stripe_bytes` and readers find the stripe of byte `x` as
`x // stripe_bytes`, so every stripe but the last must be full. Sources therefore compose
when all non-empty ones share `(k, n)` and `stripe_bytes`, and every non-empty source but the
last is a whole number of stripes (its size a multiple of `stripe_bytes`). The new version's
stripes are the sources' stripes in order, renumbered from 0.

Shard files on the nodes are named `<version>.<stripe>.<shard>`, and reads, repair,
reconciliation and deletions all derive those names from the manifest. So instead of
re-pointing manifest rows at files named after the sources (which every one of those paths
would have to learn about), each node hard-links its shards under the new names first
(`LinkShards`: no bytes copied), and the metadata transaction then commits the new version
with the linked shards and retires the sources, queueing their old names for removal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import xxhash

from shoal.common.errors import InvalidArgument
from shoal.common.names import shard_id
from shoal.coordinator.metadata import ShardRow, StripeRow, VersionRow

MAX_SOURCES = 10_000


@dataclass(frozen=True)
class Link:
    """One shard to link on a node: source name -> target name."""

    node_id: str
    source_id: str
    target_id: str
    stripe: int
    shard: ShardRow


@dataclass(frozen=True)
class ComposePlan:
    k: int
    n: int
    write_quorum: int
    stripe_bytes: int
    size: int
    # Per new stripe index: (size, shard_length).
    stripes: list[tuple[int, int]]
    links: list[Link]


def check_layout(sources: Sequence[VersionRow], default_stripe_bytes: int) -> tuple[int, int, int]:
    """(k, n, stripe_bytes) of the composed object, or InvalidArgument saying why the sources
    do not compose."""
    filled = [v for v in sources if v.size > 0]
    if not filled:
        first = sources[0]
        return first.k, first.n, default_stripe_bytes
    head = filled[0]
    for version in filled:
        where = f"source {version.bucket}/{version.key}"
        if (version.k, version.n) != (head.k, head.n):
            raise InvalidArgument(
                f"{where} has redundancy ({version.k}, {version.n}), the first has "
                f"({head.k}, {head.n}); composed objects have one redundancy"
            )
        if version.stripe_bytes != head.stripe_bytes:
            raise InvalidArgument(
                f"{where} has stripes of {version.stripe_bytes} bytes, the first "
                f"{head.stripe_bytes}; composed objects have one stripe size"
            )
    for version in filled[:-1]:
        if version.size % version.stripe_bytes:
            raise InvalidArgument(
                f"source {version.bucket}/{version.key} of {version.size} bytes is not a whole "
                f"number of {version.stripe_bytes}-byte stripes (only the last source may end "
                "with a short stripe)"
            )
    return head.k, head.n, head.stripe_bytes


def plan(
    target_version_id: str,
    sources: Sequence[tuple[VersionRow, list[StripeRow]]],
    default_stripe_bytes: int,
) -> ComposePlan:
    """The stripes of the composed version and the links that give its shards their names."""
    if not sources:
        raise InvalidArgument("compose needs at least one source")
    if len(sources) > MAX_SOURCES:
        raise InvalidArgument(f"compose takes at most {MAX_SOURCES} sources")
    versions = [v for v, _s in sources]
    k, n, stripe_bytes = check_layout(versions, default_stripe_bytes)
    quorum = max((v.write_quorum for v in versions if v.size > 0), default=k + 1)
    stripes: list[tuple[int, int]] = []
    links: list[Link] = []
    for version, rows in sources:
        if len(rows) != version.stripe_count:
            raise InvalidArgument(
                f"source {version.bucket}/{version.key}: {len(rows)} of "
                f"{version.stripe_count} stripes found"
            )
        for row in rows:
            index = len(stripes)
            stripes.append((row.size, row.shard_length))
            for shard in row.shards:
                if shard.state != "ok":
                    continue  # a corrupt or missing shard is rebuilt for the new version
                links.append(
                    Link(
                        shard.node_id,
                        shard_id(version.version_id, row.index, shard.shard_index),
                        shard_id(target_version_id, index, shard.shard_index),
                        index,
                        shard,
                    )
                )
    size = sum(size for size, _length in stripes)
    return ComposePlan(k, n, quorum, stripe_bytes, size, stripes, links)


def linked_stripes(plan_: ComposePlan, linked: set[tuple[str, str]]) -> list[StripeRow]:
    """The new version's stripe rows with the shards whose (node, target) link succeeded."""
    shards: dict[int, list[ShardRow]] = {i: [] for i in range(len(plan_.stripes))}
    for link in plan_.links:
        if (link.node_id, link.target_id) in linked and link.shard.state == "ok":
            shards[link.stripe].append(link.shard)
    return [
        StripeRow(i, size, length, tuple(shards[i]))
        for i, (size, length) in enumerate(plan_.stripes)
    ]


def compose_etag(etags: Sequence[str]) -> str:
    """The composed object's etag: xxh3-128 of the sources' etags, then '-<count>' (as S3
    marks multipart ETags), since no digest of the whole byte stream is computed."""
    return f"{xxhash.xxh3_128_hexdigest(''.join(etags).encode())}-{len(etags)}"
