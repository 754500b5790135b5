"""The cluster status as a plain, JSON-ready dict (schema documented in docs/status-schema.md)."""

from __future__ import annotations

from typing import Any

from shoal.rpc.v1 import coordinator_pb2 as cpb

STATUS_SCHEMA_VERSION = 1


def overall_health(status: cpb.ClusterStatusResponse) -> tuple[str, str]:
    """(HEALTHY | DEGRADED | UNAVAILABLE, reason)."""
    down = [n.node_id for n in status.nodes if n.state == "down"]
    if status.objects.unavailable:
        return "UNAVAILABLE", f"{status.objects.unavailable} objects have stripes below k shards"
    if status.objects.degraded:
        return "DEGRADED", f"{status.objects.degraded} objects have stripes below n shards"
    if down:
        return "DEGRADED", f"nodes down: {', '.join(down)}"
    if not status.nodes:
        return "UNAVAILABLE", "no storage nodes registered"
    return "HEALTHY", "all objects have all shards on live nodes"


def status_to_dict(status: cpb.ClusterStatusResponse) -> dict[str, Any]:
    """Convert the coordinator's status reply into the documented dict."""
    health, reason = overall_health(status)
    return {
        "schema_version": STATUS_SCHEMA_VERSION,
        "health": health,
        "reason": reason,
        "nodes": [
            {
                "node_id": n.node_id,
                "address": n.address,
                "zone": n.zone,
                "state": n.state,
                "capacity_bytes": n.capacity_bytes,
                "used_bytes": n.used_bytes,
                "shards": n.shard_count,
                "last_heartbeat_age_s": round(n.last_heartbeat_age_s, 3),
                "down_for_s": round(n.down_for_s, 3),
            }
            for n in status.nodes
        ],
        "capacity": {
            "raw_bytes": status.raw_capacity_bytes,
            "used_bytes": status.used_bytes,
            "usable_bytes": status.usable_capacity_bytes,
        },
        "objects": {
            "healthy": status.objects.healthy,
            "degraded": status.objects.degraded,
            "unavailable": status.objects.unavailable,
        },
        "object_bytes": {
            "healthy": status.object_bytes.healthy,
            "degraded": status.object_bytes.degraded,
            "unavailable": status.object_bytes.unavailable,
        },
        "stripes_by_healthy_shards": {
            str(i): c for i, c in enumerate(status.stripes_by_healthy_shards) if c
        },
        "buckets": status.bucket_count,
        "default_redundancy": {"k": status.default_k, "n": status.default_n},
        "pending_shard_deletions": status.pending_shard_deletions,
    }
