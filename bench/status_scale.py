"""How long `status` takes on a coordinator that knows many objects (issue 5: "answers within
a second on a cluster with 100k objects").

`python -m bench.status_scale [--objects 100000]` writes a coordinator metadata database with
that many committed single-stripe (4, 6) objects spread over 6 registered nodes (rows written
directly, then the health counters recounted, which is how an upgraded database is migrated),
starts a real `shoal-coordinator` on it, and times `Client.status()`:

- while the nodes count as up (healthy: every object at full redundancy), and
- after they are all down (no node ever heartbeats here), the worst case, in which every
  stripe is damaged and the coordinator has paid its one bulk update for the liveness change.

The baseline is the scan the coordinator used before the counters existed (the same answer
computed from the shards table), timed on the same database. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Report, Row, emit, say
from shoal.client import Client
from shoal.coordinator.metadata import MetadataStore

NODES = [f"node-{i}" for i in range(1, 7)]

SCAN = (
    "WITH stripe_health AS (SELECT s.version_id, s.stripe_index, "
    "SUM(CASE WHEN sh.state = 'ok' THEN 1 ELSE 0 END) AS healthy "
    "FROM objects o JOIN stripes s ON s.version_id = o.version_id "
    "LEFT JOIN shards sh ON sh.version_id = s.version_id AND sh.stripe_index = s.stripe_index "
    "GROUP BY s.version_id, s.stripe_index) "
    "SELECT v.version_id, v.size, MIN(COALESCE(h.healthy, v.n)) FROM objects o "
    "JOIN versions v ON v.version_id = o.version_id "
    "LEFT JOIN stripe_health h ON h.version_id = v.version_id GROUP BY v.version_id"
)


def fill(path: Path, objects: int) -> None:
    store = MetadataStore(path)
    db = store._db
    db.execute("PRAGMA synchronous=OFF")
    store.create_bucket("scale", 4, 6, 5)
    now = time.time()
    db.execute("BEGIN")
    for i, node in enumerate(NODES):
        db.execute(
            "INSERT INTO nodes (node_id, address, zone, capacity, registered, last_seen) "
            "VALUES (?, ?, '', ?, ?, ?)",
            (node, f"127.0.0.1:{1 + i}", 1 << 40, now, now),
        )
    # Triggers maintain the counters row by row; for a bulk load, drop them and recount.
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        db.execute(f"DROP TRIGGER {name}")
    for i in range(objects):
        vid = f"v{i:010d}"
        db.execute(
            "INSERT INTO versions VALUES (?, 'scale', ?, 'committed', 4, 6, 5, ?, 1000, 'e', 1, ?)",
            (vid, f"key-{i:08d}", 4 << 20, now),
        )
        db.execute("INSERT INTO objects VALUES ('scale', ?, ?)", (f"key-{i:08d}", vid))
        db.execute(
            "INSERT INTO stripes (version_id, stripe_index, size, shard_length, k, n) "
            "VALUES (?, 0, 1000, 250, 4, 6)",
            (vid,),
        )
        db.executemany(
            "INSERT INTO shards VALUES (?, 0, ?, ?, 250, ?, 'ok', ?)",
            [(vid, j, NODES[(i + j) % 6], b"c" * 16, now) for j in range(6)],
        )
    db.execute("COMMIT")
    store.close()
    # Reopening recreates the triggers; recount fills every counter from the rows.
    store = MetadataStore(path)
    store.recount_health()
    store.close()


def timed_status(client: Client, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        client.status()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shoal-status-scale-") as tmp:
        root = Path(tmp)
        data = root / "cluster" / "coordinator"
        data.mkdir(parents=True)
        started = time.perf_counter()
        fill(data / "metadata.sqlite3", args.objects)
        say(f"filled {args.objects} objects in {time.perf_counter() - started:.1f}s")
        store = MetadataStore(data / "metadata.sqlite3")
        started = time.perf_counter()
        store._db.execute(SCAN).fetchall()
        scan_s = time.perf_counter() - started
        store.close()

        ready = data / "ready.json"
        coordinator = subprocess.Popen(
            [sys.executable, "-m", "shoal.coordinator", "--listen", "127.0.0.1:0",
             "--data-dir", str(data), "--ready-file", str(ready),
             "--heartbeat-timeout", "2", "--down-after", "4", "--log-level", "WARNING"],
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while not ready.exists():
                if time.monotonic() > deadline or coordinator.poll() is not None:
                    raise SystemExit("the coordinator did not start")
                time.sleep(0.1)
            address = json.loads(ready.read_text())["address"]
            with Client(address) as client:
                healthy = timed_status(client, args.repeats)
                say(f"while nodes count as up: {client.status()['objects']}")
                while client.status()["objects"]["unavailable"] < args.objects:
                    if time.monotonic() > deadline + 60:
                        raise SystemExit("nodes never counted as down")
                    time.sleep(0.5)
                down = timed_status(client, args.repeats)
                say(f"all nodes down: {client.status()['objects']}")
        finally:
            coordinator.terminate()
            coordinator.wait(timeout=30)
    rows = [
        Row(
            f"status, {args.objects} objects, healthy (median)",
            "s",
            statistics.median(healthy),
            scan_s,
            "full metadata scan (pre-counter status), same database",
            higher_is_better=False,
        ),
        Row(
            f"status, {args.objects} objects, every node down (median)",
            "s",
            statistics.median(down),
            scan_s,
            "full metadata scan (pre-counter status), same database",
            higher_is_better=False,
        ),
    ]
    report = Report(f"clusterctl status at {args.objects} objects", rows)
    emit(report, args.json)


if __name__ == "__main__":
    main()
