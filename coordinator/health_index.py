"""Maintained data-health counters, so `clusterctl status` answers without scanning metadata.

Every stripe row carries `healthy`: its shards in state `ok` on nodes whose shards count
(not in `counted_out`, the nodes that are down or decommissioned). SQLite triggers keep it
right as shards are written, rebuilt, marked corrupt or missing and deleted, and keep
`stripe_counts` (committed stripes by `(k, n, healthy)`) and `object_counts` (committed
objects and their bytes by `(k, n)`) right as objects are committed, replaced and deleted;
all in the same transaction as the change itself, so a crash cannot leave them disagreeing.

A liveness change is the one bulk update: `set_counted_out` adjusts the stripes of the nodes
that went down or came back (once per transition, not once per status call). Objects by
health are then: all committed objects, minus those with a stripe below `n`, which a partial
index finds without visiting healthy stripes.

`recount` rebuilds every counter from scratch; it migrates databases written before the
counters existed, and tests compare it with the maintained values.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS counted_out (node_id TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stripe_counts (
    k INTEGER NOT NULL,
    n INTEGER NOT NULL,
    healthy INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (k, n, healthy)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS object_counts (
    k INTEGER NOT NULL,
    n INTEGER NOT NULL,
    objects INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (k, n)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS stripes_damaged ON stripes (version_id)
    WHERE committed = 1 AND healthy < n;
"""

# Columns added to `stripes`; databases from before the counters get them by ALTER TABLE.
STRIPE_COLUMNS = {
    "k": "INTEGER NOT NULL DEFAULT 0",
    "n": "INTEGER NOT NULL DEFAULT 0",
    "healthy": "INTEGER NOT NULL DEFAULT 0",
    "committed": "INTEGER NOT NULL DEFAULT 0",
}


def _shard_delta(row: str, sign: str) -> str:
    return (
        f"UPDATE stripes SET healthy = healthy {sign} 1 "
        f"WHERE version_id = {row}.version_id AND stripe_index = {row}.stripe_index "
        f"AND {row}.state = 'ok' "
        f"AND NOT EXISTS (SELECT 1 FROM counted_out c WHERE c.node_id = {row}.node_id);"
    )


def _count_delta(row: str, sign: str) -> str:
    return (
        f"INSERT INTO stripe_counts SELECT {row}.k, {row}.n, {row}.healthy, 0 WHERE NOT EXISTS "
        f"(SELECT 1 FROM stripe_counts WHERE k = {row}.k AND n = {row}.n "
        f"AND healthy = {row}.healthy); "
        f"UPDATE stripe_counts SET count = count {sign} 1 "
        f"WHERE k = {row}.k AND n = {row}.n AND healthy = {row}.healthy;"
    )


TRIGGERS = f"""
CREATE TRIGGER shard_health_insert AFTER INSERT ON shards BEGIN
    {_shard_delta("NEW", "+")}
END;
CREATE TRIGGER shard_health_delete AFTER DELETE ON shards BEGIN
    {_shard_delta("OLD", "-")}
END;
CREATE TRIGGER shard_health_update AFTER UPDATE OF state, node_id ON shards BEGIN
    {_shard_delta("OLD", "-")}
    {_shard_delta("NEW", "+")}
END;
CREATE TRIGGER stripe_counts_healthy AFTER UPDATE OF healthy ON stripes
WHEN NEW.committed = 1 BEGIN
    {_count_delta("OLD", "-")}
    {_count_delta("NEW", "+")}
END;
CREATE TRIGGER stripe_counts_commit AFTER UPDATE OF committed ON stripes
WHEN NEW.committed != OLD.committed BEGIN
    INSERT INTO stripe_counts SELECT NEW.k, NEW.n, NEW.healthy, 0 WHERE NOT EXISTS
        (SELECT 1 FROM stripe_counts WHERE k = NEW.k AND n = NEW.n AND healthy = NEW.healthy);
    UPDATE stripe_counts SET count = count + (CASE WHEN NEW.committed = 1 THEN 1 ELSE -1 END)
    WHERE k = NEW.k AND n = NEW.n AND healthy = NEW.healthy;
END;
CREATE TRIGGER stripe_counts_delete AFTER DELETE ON stripes
WHEN OLD.committed = 1 BEGIN
    {_count_delta("OLD", "-")}
END;
CREATE TRIGGER object_counts_insert AFTER INSERT ON objects BEGIN
    INSERT INTO object_counts SELECT v.k, v.n, 0, 0 FROM versions v
        WHERE v.version_id = NEW.version_id AND NOT EXISTS (SELECT 1 FROM object_counts c
        WHERE c.k = v.k AND c.n = v.n);
    UPDATE object_counts SET objects = objects + 1, bytes = bytes + (SELECT v.size
        FROM versions v WHERE v.version_id = NEW.version_id)
    WHERE (k, n) = (SELECT v.k, v.n FROM versions v WHERE v.version_id = NEW.version_id);
END;
CREATE TRIGGER object_counts_delete AFTER DELETE ON objects BEGIN
    UPDATE object_counts SET objects = objects - 1, bytes = bytes - (SELECT v.size
        FROM versions v WHERE v.version_id = OLD.version_id)
    WHERE (k, n) = (SELECT v.k, v.n FROM versions v WHERE v.version_id = OLD.version_id);
END;
"""

TRIGGER_NAMES = re.findall(r"CREATE TRIGGER (\w+)", TRIGGERS)


@dataclass(frozen=True)
class DamagedObjects:
    """Committed objects with a stripe below `n` healthy shards, grouped by redundancy and
    by the healthy shards of their worst stripe."""

    k: int
    n: int
    min_healthy_shards: int
    objects: int
    bytes: int


@dataclass(frozen=True)
class HealthSummary:
    """Everything `status` needs about data health, read from the maintained counters."""

    # Committed objects and their bytes by redundancy (k, n).
    objects: dict[tuple[int, int], tuple[int, int]]
    # Committed stripes by (k, n, healthy shards); zero counts omitted.
    stripe_counts: dict[tuple[int, int, int], int]
    damaged: list[DamagedObjects]


def install(db: sqlite3.Connection) -> None:
    """Create the counter tables and triggers, migrating an older database if needed.

    Must run after the base schema; the caller enables `recursive_triggers` so that
    `INSERT OR REPLACE` runs the delete triggers of the rows it replaces. No trigger uses an
    `OR IGNORE`/`OR REPLACE` clause: SQLite applies the outer statement's conflict policy to
    the statements inside a trigger, so an `INSERT OR IGNORE` run by an `INSERT OR REPLACE`
    would silently replace (and reset) a counter row.
    """
    present = {row[1] for row in db.execute("PRAGMA table_info(stripes)")}
    missing = [name for name in STRIPE_COLUMNS if name not in present]
    for name in missing:
        db.execute(f"ALTER TABLE stripes ADD COLUMN {name} {STRIPE_COLUMNS[name]}")
    # Triggers are recreated at every start, so a changed definition takes effect.
    for name in TRIGGER_NAMES:
        db.execute(f"DROP TRIGGER IF EXISTS {name}")
    db.executescript(SCHEMA + TRIGGERS)
    if missing:
        recount(db)


def recount(db: sqlite3.Connection) -> None:
    """Recompute every counter from the shards, stripes and objects tables."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(
            "UPDATE stripes SET k = (SELECT v.k FROM versions v WHERE v.version_id = "
            "stripes.version_id), n = (SELECT v.n FROM versions v WHERE v.version_id = "
            "stripes.version_id), committed = EXISTS (SELECT 1 FROM objects o "
            "WHERE o.version_id = stripes.version_id)"
        )
        db.execute(
            "UPDATE stripes SET healthy = (SELECT COUNT(*) FROM shards sh "
            "WHERE sh.version_id = stripes.version_id AND sh.stripe_index = stripes.stripe_index "
            "AND sh.state = 'ok' AND sh.node_id NOT IN (SELECT node_id FROM counted_out))"
        )
        db.execute("DELETE FROM stripe_counts")
        db.execute(
            "INSERT INTO stripe_counts SELECT k, n, healthy, COUNT(*) FROM stripes "
            "WHERE committed = 1 GROUP BY k, n, healthy"
        )
        db.execute("DELETE FROM object_counts")
        db.execute(
            "INSERT INTO object_counts SELECT v.k, v.n, COUNT(*), COALESCE(SUM(v.size), 0) "
            "FROM objects o JOIN versions v ON v.version_id = o.version_id GROUP BY v.k, v.n"
        )
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def counted_out(db: sqlite3.Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT node_id FROM counted_out")}


def set_counted_out(db: sqlite3.Connection, node_ids: Iterable[str]) -> bool:
    """Make `node_ids` the nodes whose shards do not count; the caller holds a transaction.

    Adjusts the stripes with shards on nodes that changed; returns whether any did.
    """
    wanted = set(node_ids)
    current = counted_out(db)
    for node_id, sign, change in [
        *((n, "-", "INSERT INTO counted_out VALUES (?)") for n in sorted(wanted - current)),
        *((n, "+", "DELETE FROM counted_out WHERE node_id = ?") for n in sorted(current - wanted)),
    ]:
        db.execute(change, (node_id,))
        db.execute(
            f"UPDATE stripes SET healthy = healthy {sign} (SELECT COUNT(*) FROM shards sh "
            "WHERE sh.version_id = stripes.version_id AND sh.stripe_index = stripes.stripe_index "
            "AND sh.node_id = ? AND sh.state = 'ok') "
            "WHERE (version_id, stripe_index) IN "
            "(SELECT version_id, stripe_index FROM shards WHERE node_id = ? AND state = 'ok')",
            (node_id, node_id),
        )
    return wanted != current


def summary(db: sqlite3.Connection) -> HealthSummary:
    """Data health from the counters: O(damaged objects), not O(objects)."""
    objects = {
        (int(k), int(n)): (int(count), int(size))
        for k, n, count, size in db.execute("SELECT k, n, objects, bytes FROM object_counts")
        if count
    }
    counts = {
        (int(k), int(n), int(h)): int(c)
        for k, n, h, c in db.execute("SELECT k, n, healthy, count FROM stripe_counts")
        if c
    }
    damaged = [
        DamagedObjects(int(k), int(n), int(low), int(count), int(size))
        for k, n, low, count, size in db.execute(
            "SELECT d.k, d.n, d.low, COUNT(*), COALESCE(SUM(v.size), 0) FROM (SELECT version_id, "
            "k, n, MIN(healthy) AS low FROM stripes WHERE committed = 1 AND healthy < n "
            "GROUP BY version_id) d JOIN versions v ON v.version_id = d.version_id "
            "GROUP BY d.k, d.n, d.low"
        )
    ]
    return HealthSummary(objects, counts, damaged)
