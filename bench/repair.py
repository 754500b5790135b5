"""Repair throughput after a node loss, next to an in-process rebuild of the same shards.

    python -m bench.repair [--mib 512] [--json]

A temporary cluster of 7 nodes at (4, 6) (a 7th node so every stripe has somewhere to rebuild
to) with fast failure detection (down after 1.5 s, repair at once, bandwidth cap lifted) stores
`--mib` MiB in 64 MiB objects; then node-1 is killed (SIGKILL). The figure is the shard bytes
node-1 held over the time from the coordinator declaring it down until every stripe is back to
6 healthy shards (polling `status()` every 0.1 s). The baseline rebuilds the same amount of
shard data in one process: read 4 shard files, verify, decode, re-encode the lost shard, check
its checksum and write it durably, one stripe after another.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from bench.common import MIB, Report, Row, emit, say, temporary_cluster
from bench.reference import K, N, ReferenceStore
from shoal.client import Client
from shoal.client.cli.local_cluster import ClusterSettings

BUCKET = "repair"
OBJECT = 64 * MIB
VICTIM = "node-1"
TIMEOUT_S = 600.0


def node_status(status: dict[str, Any], node_id: str) -> dict[str, Any]:
    return next(node for node in status["nodes"] if node["node_id"] == node_id)


def fully_redundant(status: dict[str, Any]) -> bool:
    """Every committed stripe has n healthy shards again."""
    margins = status["stripes_by_margin"]
    return set(margins) <= {str(N - K)} and not status["repair"]["shards_remaining"]


def measure(mib: int) -> Report:
    """Kill a node of a 7-node cluster holding `mib` MiB and time the repair."""
    report = Report(f"repair: 7 nodes at (4, 6), {mib} MiB stored, {VICTIM} killed")
    settings = ClusterSettings(
        heartbeat_timeout_s=1.0,
        heartbeat_interval_s=0.25,
        down_after_s=1.5,
        repair_after_s=0.0,
        repair_bandwidth=64 * 1024 * MIB,
    )
    data = os.urandom(OBJECT)
    objects = max(mib * MIB // OBJECT, 1)
    with temporary_cluster(7, settings=settings) as cluster, Client(cluster.address) as client:
        client.create_bucket(BUCKET, k=K, n=N)
        say(f"storing {objects} x {OBJECT // MIB} MiB on 7 nodes")
        for index in range(objects):
            client.put(BUCKET, f"object-{index}", data)
        time.sleep(1.0)  # one more heartbeat, so the victim's reported usage is current
        victim = node_status(client.status(), VICTIM)
        lost_bytes, lost_shards = int(victim["used_bytes"]), int(victim["shards"])
        say(f"killing {VICTIM} ({lost_shards} shards, {lost_bytes / MIB:.0f} MiB)")
        killed = time.monotonic()
        cluster.stop_nodes([VICTIM], signal.SIGKILL)
        down_at = first_at = 0.0
        read_rate = mean_rebuild_s = 0.0
        status: dict[str, Any] = {}
        while time.monotonic() - killed < TIMEOUT_S:
            status = client.status()
            now = time.monotonic()
            if not down_at and node_status(status, VICTIM)["state"] == "down":
                down_at = now
            if down_at and not first_at and status["repair"]["shards_done"]:
                first_at = now
            read_rate = max(read_rate, status["repair"]["rate_bytes_s"])
            mean_rebuild_s = status["repair"]["mean_rebuild_s"] or mean_rebuild_s
            if down_at and fully_redundant(status):
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"repair did not finish within {TIMEOUT_S:.0f}s: {status['repair']}")
        done_at = time.monotonic()
        for index in range(objects):
            if client.get(BUCKET, f"object-{index}") != data:
                raise RuntimeError("an object read back differently after repair")
    say("baseline: in-process rebuild of the same shard bytes")
    with TemporaryDirectory(prefix="shoal-bench-repair-") as scratch:
        ref = ReferenceStore(Path(scratch))
        try:
            # The victim held about lost_bytes of shards: rebuild one shard of as many stripes.
            stripes = max(round(lost_bytes / (ref.stripe // K)), 1)
            ref.put("repair", os.urandom(stripes * ref.stripe))
            t0 = time.perf_counter()
            written = ref.rebuild("repair", 0)
            ref_s = time.perf_counter() - t0
        finally:
            ref.close()
    repair_s = done_at - down_at
    rate = lost_bytes / MIB / repair_s
    report.add(
        Row(
            "repair after a node loss, shard bytes rebuilt", "MiB/s", rate,
            written / MIB / ref_s, "in-process rebuild: read k, decode, encode, fsync",
        ),
        "repair_mib_s",
    )  # fmt: skip
    report.add(
        Row("repair after a node loss, time to full redundancy", "s", repair_s, None),
        "repair_s",
    )
    report.figures["repair_mean_rebuild_ms"] = mean_rebuild_s * 1000
    report.notes += [
        f"repair: {lost_shards} shards ({lost_bytes / MIB:.0f} MiB) rebuilt in {repair_s:.1f}s "
        f"from {VICTIM} declared down ({down_at - killed:.1f}s after the kill); first shard "
        f"rebuilt {first_at - down_at:.1f}s after that; peak read rate of source shards "
        f"{read_rate / MIB:.0f} MiB/s; mean time per rebuilt shard {mean_rebuild_s * 1000:.0f} ms",
        "repair settings: --repair-after 0, bandwidth cap lifted, 4 shards at once (default)",
    ]
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Repair throughput after a node loss.")
    parser.add_argument("--mib", type=int, default=512, help="MiB stored before the loss")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    emit(measure(args.mib), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
