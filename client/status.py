"""The cluster status as a plain, JSON-ready dict (schema documented in docs/status-schema.md)."""

from __future__ import annotations

import time
from typing import Any

from shoal.rpc.v1 import common_pb2 as common
from shoal.rpc.v1 import coordinator_pb2 as cpb

STATUS_SCHEMA_VERSION = 1


def overall_health(status: cpb.ClusterStatusResponse) -> tuple[str, str]:
    """(HEALTHY | DEGRADED | UNAVAILABLE, reason)."""
    down = [n.node_id for n in status.nodes if n.state == "down"]
    if status.objects.unavailable:
        return "UNAVAILABLE", f"{status.objects.unavailable} objects have stripes below k shards"
    if status.objects.degraded:
        return "DEGRADED", f"{status.objects.degraded} objects have stripes below n shards"
    if status.stripes_by_margin.get(0, 0):
        return "DEGRADED", f"{status.stripes_by_margin[0]} stripes are one failure from loss"
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
        "nodes": [_node(n) for n in status.nodes],
        "repair": _repair(status.repair),
        "orphaned_bytes": status.orphaned_bytes,
        "stripes_by_margin": {str(m): c for m, c in sorted(status.stripes_by_margin.items())},
        "objects_by_margin": {str(m): c for m, c in sorted(status.objects_by_margin.items())},
        "stripes_at_risk": status.stripes_by_margin.get(0, 0),
        "stripes_below_k": sum(c for m, c in status.stripes_by_margin.items() if m < 0),
        "timings": {
            "heartbeat_timeout_s": status.heartbeat_timeout_s,
            "down_after_s": status.down_after_s,
            "repair_after_s": status.repair_after_s,
            "repair_bandwidth_bytes_s": status.repair_bandwidth_bytes_s,
            "repair_concurrency": status.repair_concurrency,
        },
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


def _ratio(done: float, total: float) -> float:
    return round(done / total, 4) if total else 1.0


def _node(n: common.NodeInfo) -> dict[str, Any]:
    moved = n.drain_total_shards - n.drain_remaining_shards
    return {
        "node_id": n.node_id,
        "address": n.address,
        "zone": n.zone,
        "state": n.state,
        "admin_state": n.admin_state,
        "capacity_bytes": n.capacity_bytes,
        "used_bytes": n.used_bytes,
        "shards": n.shard_count,
        "last_heartbeat_age_s": round(n.last_heartbeat_age_s, 3),
        "down_for_s": round(n.down_for_s, 3),
        "repair_in_s": round(n.repair_in_s, 3),
        "corrupt_found": n.corrupt_found,
        "scrub": {
            "running": n.scrub_running,
            "bytes_done": n.scrub_bytes_done,
            "bytes_total": n.scrub_bytes_total,
            "ratio": _ratio(n.scrub_bytes_done, n.scrub_bytes_total),
        },
        "drain": {
            "shards_total": n.drain_total_shards,
            "shards_remaining": n.drain_remaining_shards,
            "ratio": _ratio(max(moved, 0), n.drain_total_shards),
        }
        if n.admin_state == "draining"
        else None,
    }


def _repair(r: cpb.RepairStatus) -> dict[str, Any]:
    return {
        "held": r.held,
        "active": bool(r.shards_remaining),
        "shards_done": r.shards_done,
        "shards_remaining": r.shards_remaining,
        "shards_to_move": r.shards_to_move,
        "ratio": _ratio(r.shards_done, r.shards_done + r.shards_remaining),
        "bytes_done": r.bytes_done,
        "rate_bytes_s": round(r.rate_bytes_s, 1),
        "eta_s": round(r.eta_s, 1),
        "errors": r.errors,
        "mean_rebuild_s": round(r.mean_rebuild_s, 3),
    }


def job_to_dict(job: Any) -> dict[str, Any]:
    """A JobStatus as the status schema's job entry."""
    started = job.started.timestamp() if job.started else 0.0
    finished = job.finished.timestamp() if job.finished else 0.0
    elapsed = (finished or time.time()) - started if started else 0.0
    return {
        "job_id": job.job_id,
        "name": job.name,
        "kind": job.kind,
        "state": job.state,
        "phase": job.phase,
        "progress": round(job.progress, 4),
        "tasks": dict(job.tasks),
        "tasks_done": job.tasks["succeeded"],
        "tasks_total": sum(job.tasks.values()),
        "elapsed_s": round(elapsed, 1),
        "eta_s": round(job.eta_s, 1),
        "local_tasks": job.local_tasks,
        "located_tasks": job.located_tasks,
        "local_ratio": _ratio(job.local_tasks, job.located_tasks) if job.located_tasks else None,
        "rerun_tasks": job.rerun_tasks,
        "backup_tasks": job.backup_tasks,
        "error": job.error.strip().splitlines()[-1] if job.error else "",
    }
