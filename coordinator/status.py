"""The cluster status report: nodes, capacity, and objects by health."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from shoal.coordinator.config import CoordinatorConfig
from shoal.coordinator.health_index import HealthSummary
from shoal.rpc.v1 import common_pb2 as common
from shoal.rpc.v1 import coordinator_pb2 as pb


def classify(healthy: int, k: int, n: int) -> str:
    """An object's health from the fewest healthy shards any of its stripes has."""
    if healthy >= n:
        return "healthy"
    if healthy >= k:
        return "degraded"
    return "unavailable"


class DataHealth(NamedTuple):
    """Data health as status reports it."""

    objects: dict[str, int]  # by health: healthy, degraded, unavailable
    object_bytes: dict[str, int]
    objects_by_margin: dict[int, int]  # worst stripe's healthy shards minus k
    stripes_by_healthy_shards: dict[int, int]
    stripes_by_margin: dict[int, int]


def data_health(health: HealthSummary) -> DataHealth:
    """Data health from the maintained counters. Objects are healthy unless counted in
    `health.damaged` (a stripe below `n`)."""
    counts = {"healthy": 0, "degraded": 0, "unavailable": 0}
    sizes = dict.fromkeys(counts, 0)
    by_margin: dict[int, int] = {}
    # Every object starts at full margin n - k (empty objects stay there) ...
    for (k, n), (objects, size) in health.objects.items():
        counts["healthy"] += objects
        sizes["healthy"] += size
        by_margin[n - k] = by_margin.get(n - k, 0) + objects
    # ... and the damaged ones move to the margin of their worst stripe.
    for group in health.damaged:
        label = classify(group.min_healthy_shards, group.k, group.n)
        counts["healthy"] -= group.objects
        sizes["healthy"] -= group.bytes
        counts[label] += group.objects
        sizes[label] += group.bytes
        by_margin[group.n - group.k] -= group.objects
        margin = group.min_healthy_shards - group.k
        by_margin[margin] = by_margin.get(margin, 0) + group.objects
    by_margin = {margin: count for margin, count in by_margin.items() if count}
    histogram: dict[int, int] = {}
    stripe_margins: dict[int, int] = {}
    for (k, _n, healthy), count in health.stripe_counts.items():
        histogram[healthy] = histogram.get(healthy, 0) + count
        stripe_margins[healthy - k] = stripe_margins.get(healthy - k, 0) + count
    return DataHealth(counts, sizes, by_margin, histogram, stripe_margins)


def build_status(
    config: CoordinatorConfig,
    nodes: Sequence[common.NodeInfo],
    health: HealthSummary,
    bucket_count: int,
    pending_deletions: int,
    repair: pb.RepairStatus,
    orphaned_bytes: int,
) -> pb.ClusterStatusResponse:
    """Assemble ClusterStatusResponse from membership and the maintained health counters.

    Objects are healthy unless counted in `health.damaged` (a stripe below `n`).
    """
    counts, sizes, by_margin, histogram, stripe_margins = data_health(health)
    raw = sum(node.capacity_bytes for node in nodes)
    used = sum(node.used_bytes for node in nodes)
    usable = (raw - used) * config.default_k // config.default_n
    width = max([*histogram.keys(), config.default_n, 0]) + 1
    return pb.ClusterStatusResponse(
        nodes=nodes,
        raw_capacity_bytes=raw,
        used_bytes=used,
        usable_capacity_bytes=max(usable, 0),
        objects=pb.HealthCounts(**counts),
        object_bytes=pb.HealthCounts(**sizes),
        bucket_count=bucket_count,
        default_k=config.default_k,
        default_n=config.default_n,
        heartbeat_timeout_s=config.heartbeat_timeout,
        stripes_by_healthy_shards=[histogram.get(i, 0) for i in range(width)],
        pending_shard_deletions=pending_deletions,
        repair=repair,
        orphaned_bytes=orphaned_bytes,
        stripes_by_margin=stripe_margins,
        objects_by_margin=by_margin,
        down_after_s=config.down_after,
        repair_after_s=config.repair_after,
        repair_bandwidth_bytes_s=config.repair_bandwidth,
        repair_concurrency=config.repair_concurrency,
    )
