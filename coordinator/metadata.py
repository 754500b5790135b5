"""MetadataStore: the coordinator's SQLite database (WAL, synchronous=FULL).

Tables:
    nodes      registered storage nodes (address, zone, capacity)
    buckets    name, default k, n and write quorum, owner
    versions   one row per upload: pending -> committed -> deleted, with its metadata (JSON)
    objects    (bucket, key) -> the committed version readers see
    stripes    per version: stripe index, size, shard length
    shards     per stripe: shard index -> node, length, checksum, state (ok | corrupt)
    deletions  shards nodes should remove, each after a grace time

Invariants:
- A version becomes visible only by `commit`, which in one transaction checks that every
  stripe has at least `write_quorum` shards on distinct nodes, marks the version committed and
  points `objects` at it. A reader therefore sees the old or the new version, never a mix, and
  never a pending one.
- Replacing or deleting an object queues the old version's shards for deletion after
  `delete_grace`, so reads already in flight can finish.
- `commit_compose` makes a version out of the stripes of other committed objects (shards
  hard-linked under the new version's names by the nodes beforehand) in one transaction: the
  sources are retired like deleted objects, which queues their old shard names for removal;
  removing a name whose file has another name frees nothing.
- Every method is one transaction; the coordinator calls them from a single thread.
  Methods marked `@shares_commit` may also run several to a transaction (`run_together`, the
  coordinator's group commit): each in a savepoint of its own, so one that fails is undone
  alone, and one commit (one fsync of the WAL) makes them all durable.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from shoal.common.errors import (
    AlreadyExists,
    BucketNotEmpty,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from shoal.coordinator import health_index

F = TypeVar("F", bound=Callable[..., Any])


def shares_commit(method: F) -> F:
    """Mark a MetadataStore method that may run inside `run_together`: its writes go through
    `_tx` (or it only reads), and it runs no statement that cannot be nested in a transaction
    (BEGIN, PRAGMA, executescript)."""
    method.shares_commit = True  # type: ignore[attr-defined]
    return method


def may_share_commit(fn: Callable[..., Any]) -> bool:
    """True when `fn` is a method marked `@shares_commit`."""
    return bool(getattr(fn, "shares_commit", False))


SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    node_id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    zone TEXT NOT NULL,
    capacity INTEGER NOT NULL,
    registered REAL NOT NULL,
    admin_state TEXT NOT NULL DEFAULT 'active',
    last_seen REAL NOT NULL DEFAULT 0,
    drain_total INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS repair_errors (
    version_id TEXT NOT NULL,
    stripe_index INTEGER NOT NULL,
    shard_index INTEGER NOT NULL,
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_attempt REAL NOT NULL,
    next_attempt REAL NOT NULL,
    PRIMARY KEY (version_id, stripe_index, shard_index)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS buckets (
    name TEXT PRIMARY KEY,
    k INTEGER NOT NULL,
    n INTEGER NOT NULL,
    write_quorum INTEGER NOT NULL,
    created REAL NOT NULL,
    owner TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS versions (
    version_id TEXT PRIMARY KEY,
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'committed', 'deleted')),
    k INTEGER NOT NULL,
    n INTEGER NOT NULL,
    write_quorum INTEGER NOT NULL,
    stripe_bytes INTEGER NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    etag TEXT NOT NULL DEFAULT '',
    stripe_count INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    inline INTEGER NOT NULL DEFAULT 0
);
-- The bytes of small objects stored inline (PutInline): no stripes, no shards.
CREATE TABLE IF NOT EXISTS inline_objects (
    version_id TEXT PRIMARY KEY,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS versions_by_state ON versions (state, created);
CREATE TABLE IF NOT EXISTS objects (
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    version_id TEXT NOT NULL,
    PRIMARY KEY (bucket, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stripes (
    version_id TEXT NOT NULL,
    stripe_index INTEGER NOT NULL,
    size INTEGER NOT NULL,
    shard_length INTEGER NOT NULL,
    k INTEGER NOT NULL DEFAULT 0,
    n INTEGER NOT NULL DEFAULT 0,
    -- Maintained by coordinator/health_index.py triggers (status counters).
    healthy INTEGER NOT NULL DEFAULT 0,
    committed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (version_id, stripe_index)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shards (
    version_id TEXT NOT NULL,
    stripe_index INTEGER NOT NULL,
    shard_index INTEGER NOT NULL,
    node_id TEXT NOT NULL,
    length INTEGER NOT NULL,
    checksum BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'ok' CHECK (state IN ('ok', 'corrupt', 'missing')),
    updated REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (version_id, stripe_index, shard_index)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS shards_by_node ON shards (node_id);
CREATE TABLE IF NOT EXISTS deletions (
    node_id TEXT NOT NULL,
    shard_id TEXT NOT NULL,
    not_before REAL NOT NULL,
    length INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (node_id, shard_id)
) WITHOUT ROWID;
"""

LOCATE_PAGE_MAX = 1024

# Columns added after the first release; older databases get them by ALTER TABLE at start.
ADDED_COLUMNS = {
    "buckets": {"owner": "TEXT NOT NULL DEFAULT ''"},
    "versions": {
        "metadata": "TEXT NOT NULL DEFAULT '{}'",
        "inline": "INTEGER NOT NULL DEFAULT 0",
    },
}


@dataclass(frozen=True)
class BucketRow:
    name: str
    k: int
    n: int
    write_quorum: int
    created: float
    owner: str = ""


@dataclass(frozen=True)
class VersionRow:
    version_id: str
    bucket: str
    key: str
    state: str
    k: int
    n: int
    write_quorum: int
    stripe_bytes: int
    size: int
    etag: str
    stripe_count: int
    created: float
    # JSON object of str -> str (ObjectInfo.metadata).
    metadata: str = "{}"
    # 1 when the bytes are stored inline in the metadata (inline_objects), not in stripes.
    inline: int = 0

    def metadata_dict(self) -> dict[str, str]:
        value = json.loads(self.metadata or "{}")
        return {str(k): str(v) for k, v in value.items()}


@dataclass(frozen=True)
class ShardRow:
    shard_index: int
    node_id: str
    length: int
    checksum: bytes
    state: str


@dataclass(frozen=True)
class StripeRow:
    index: int
    size: int
    shard_length: int
    shards: tuple[ShardRow, ...]


@dataclass(frozen=True)
class NodeRow:
    node_id: str
    address: str
    zone: str
    capacity: int
    admin_state: str = "active"
    last_seen: float = 0.0
    drain_total: int = 0


@dataclass(frozen=True)
class RepairStripe:
    """A stripe that needs shards rebuilt or moved."""

    version_id: str
    stripe_index: int
    size: int
    shard_length: int
    k: int
    n: int
    shards: tuple[ShardRow, ...]


@dataclass(frozen=True)
class RepairErrorRow:
    version_id: str
    stripe_index: int
    shard_index: int
    bucket: str
    key: str
    reason: str
    attempts: int
    last_attempt: float
    next_attempt: float


_VERSION_COLUMNS = (
    "version_id, bucket, key, state, k, n, write_quorum, stripe_bytes, size, etag, "
    "stripe_count, created, metadata, inline"
)
_BUCKET_COLUMNS = "name, k, n, write_quorum, created, owner"


class Located(NamedTuple):
    """A read's metadata: the version, and its inline bytes or its stripes (one page)."""

    version: VersionRow
    inline_data: bytes | None
    stripes: list[StripeRow]


def _bucket(db: sqlite3.Connection, name: str) -> BucketRow:
    row = db.execute(f"SELECT {_BUCKET_COLUMNS} FROM buckets WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise NotFound(f"bucket {name!r} does not exist")
    return BucketRow(*row)


def _current(db: sqlite3.Connection, bucket: str, key: str) -> VersionRow:
    row = db.execute(
        f"SELECT {', '.join('v.' + c for c in _VERSION_COLUMNS.split(', '))} FROM objects o "
        "JOIN versions v ON v.version_id = o.version_id WHERE o.bucket = ? AND o.key = ?",
        (bucket, key),
    ).fetchone()
    if row is None:
        _bucket(db, bucket)
        raise NotFound(f"object {bucket}/{key} does not exist")
    return VersionRow(*row)


def _inline_data(db: sqlite3.Connection, version_id: str) -> bytes:
    row = db.execute(
        "SELECT data FROM inline_objects WHERE version_id = ?", (version_id,)
    ).fetchone()
    if row is None:
        raise NotFound(f"version {version_id} has no inline data")
    return bytes(row[0])


def _stripes(db: sqlite3.Connection, version_id: str, first: int, count: int) -> list[StripeRow]:
    stripe_rows = db.execute(
        "SELECT stripe_index, size, shard_length FROM stripes WHERE version_id = ? "
        "AND stripe_index >= ? ORDER BY stripe_index LIMIT ?",
        (version_id, first, count),
    ).fetchall()
    if not stripe_rows:
        return []
    last = stripe_rows[-1][0]
    shards: dict[int, list[ShardRow]] = {}
    for index, shard_index, node_id, length, checksum, state in db.execute(
        "SELECT stripe_index, shard_index, node_id, length, checksum, state FROM shards "
        "WHERE version_id = ? AND stripe_index BETWEEN ? AND ? "
        "ORDER BY stripe_index, shard_index",
        (version_id, first, last),
    ):
        shards.setdefault(index, []).append(ShardRow(shard_index, node_id, length, checksum, state))
    return [StripeRow(i, size, length, tuple(shards.get(i, ()))) for i, size, length in stripe_rows]


def _locate(
    db: sqlite3.Connection,
    bucket: str,
    key: str,
    version_id: str,
    first: int,
    count: int,
    *,
    max_stripes: int | None,
) -> Located | None:
    """See MetadataStore.locate; None when more than `max_stripes` stripes would be read."""
    if version_id:
        row = db.execute(
            f"SELECT {_VERSION_COLUMNS} FROM versions WHERE version_id = ?", (version_id,)
        ).fetchone()
        version = VersionRow(*row) if row else None
        if (
            version is None
            or version.state != "committed"
            or (version.bucket, version.key) != (bucket, key)
        ):
            raise NotFound(f"object {bucket}/{key}: the version being read was replaced or deleted")
    else:
        version = _current(db, bucket, key)
    if version.inline:
        return Located(version, _inline_data(db, version.version_id), [])
    wanted = max(0, min(count, version.stripe_count - first))
    if max_stripes is not None and wanted > max_stripes:
        return None
    return Located(version, None, _stripes(db, version.version_id, first, count))


class LoopReader:
    """Small point reads made on the event loop thread, over their own read-only connection.

    Handing a read to the metadata thread and back costs more than the read itself: on 2
    cores it took the coordinator's CPU per 4 KiB get from about 0.73 to 1.05 ms. So the
    reads a small get needs (a version, inline bytes, a few stripes) run here, where each
    is a few index lookups. In WAL mode a reader never waits for the writer; anything bigger
    (`None` from `locate`) still goes to the metadata thread, so the loop never blocks long.
    """

    MAX_STRIPES = 4

    def __init__(self, path: Path) -> None:
        # Used only from the event loop's thread, created wherever the store was.
        self._db = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=0.05
        )
        self._db.execute("PRAGMA query_only=ON")

    def close(self) -> None:
        self._db.close()

    def locate(
        self, bucket: str, key: str, version_id: str, first: int, count: int
    ) -> Located | None:
        """As MetadataStore.locate, or None when the read is too big for the loop (or the
        database is busy): the caller then asks the metadata thread."""
        try:
            return _locate(
                self._db, bucket, key, version_id, first, count, max_stripes=self.MAX_STRIPES
            )
        except sqlite3.OperationalError:
            return None

    def current(self, bucket: str, key: str) -> VersionRow | None:
        """The current version (NotFound as MetadataStore.current); None if the database is
        busy."""
        try:
            return _current(self._db, bucket, key)
        except sqlite3.OperationalError:
            return None


class MetadataStore:
    """All coordinator metadata. Not thread-safe: call from one thread."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before a put is acknowledged, even across power loss.
        self._db.execute("PRAGMA synchronous=FULL")
        # INSERT OR REPLACE must run the delete triggers of the rows it replaces, or the
        # maintained health counters would drift (health_index.py).
        self._db.execute("PRAGMA recursive_triggers=ON")
        self._db.executescript(SCHEMA)
        for table, columns in ADDED_COLUMNS.items():
            present = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for name, definition in columns.items():
                if name not in present:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")
        health_index.install(self._db)
        self._together = False  # inside run_together: the transaction is already open

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        if self._together:  # run_together's savepoint around this call undoes it on error
            yield self._db
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        """Roll back the open transaction, if SQLite has not already done so itself (it does
        on SQLITE_FULL, IOERR, NOMEM or an interrupt): the caller's error is the one to report,
        not "no transaction is active"."""
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def run_together(self, calls: Sequence[Callable[[], Any]]) -> list[tuple[bool, Any]]:
        """Run calls of `@shares_commit` methods in one transaction, in order: one commit,
        so one fsync, for all of them (group commit).

        Each call runs in a savepoint of its own: one that raises is rolled back alone, and its
        exception is returned in its place. Returns (True, result) or (False, exception) per
        call, once the commit is durable. If the transaction itself cannot begin or commit,
        that error is raised and nothing of the batch is kept."""
        outcomes: list[tuple[bool, Any]] = []
        self._db.execute("BEGIN IMMEDIATE")
        self._together = True
        try:
            for call in calls:
                self._db.execute("SAVEPOINT call")
                try:
                    outcomes.append((True, call()))
                except Exception as exc:
                    if not self._db.in_transaction:
                        # SQLite rolled the whole transaction back (disk full, I/O error):
                        # the batch is lost, and this call's error says why.
                        raise
                    self._db.execute("ROLLBACK TO call")
                    outcomes.append((False, exc))
                self._db.execute("RELEASE call")
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        finally:
            self._together = False
        return outcomes

    # Nodes ---------------------------------------------------------------------------------

    @shares_commit
    def upsert_node(self, node: NodeRow) -> None:
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO nodes (node_id, address, zone, capacity, registered, last_seen) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (node_id) DO UPDATE SET "
                "address = excluded.address, zone = excluded.zone, capacity = excluded.capacity, "
                "last_seen = excluded.last_seen",
                (node.node_id, node.address, node.zone, node.capacity, now, now),
            )

    def nodes(self) -> list[NodeRow]:
        rows = self._db.execute(
            "SELECT node_id, address, zone, capacity, admin_state, last_seen, drain_total "
            "FROM nodes ORDER BY node_id"
        )
        return [NodeRow(*row) for row in rows]

    def touch_nodes(self, last_seen: dict[str, float]) -> None:
        """Persist when nodes were last heard from (wall time)."""
        with self._tx() as db:
            db.executemany(
                "UPDATE nodes SET last_seen = ? WHERE node_id = ?",
                [(seen, node_id) for node_id, seen in last_seen.items()],
            )

    def set_admin_state(self, node_id: str, admin_state: str) -> int:
        """Set a node's admin state; returns the shards it holds (the drain total)."""
        with self._tx() as db:
            held = self._shards_on(db, node_id)
            db.execute(
                "UPDATE nodes SET admin_state = ?, drain_total = ? WHERE node_id = ?",
                (admin_state, held if admin_state == "draining" else 0, node_id),
            )
        return held

    @staticmethod
    def _shards_on(db: sqlite3.Connection, node_id: str) -> int:
        row = db.execute("SELECT COUNT(*) FROM shards WHERE node_id = ?", (node_id,)).fetchone()
        return int(row[0])

    def shards_on(self, node_id: str) -> int:
        """Shards the manifests place on a node."""
        return self._shards_on(self._db, node_id)

    def stripes_needing(self, node_id: str, readable: set[str]) -> int:
        """Stripes that would fall below k healthy shards without this node's shards."""
        self._set_nodes("live_nodes", readable - {node_id})
        row = self._db.execute(
            _STRIPE_HEALTH_CTE + "SELECT COUNT(*) FROM stripe_health h "
            "JOIN versions v ON v.version_id = h.version_id "
            "JOIN shards sh ON sh.version_id = h.version_id AND sh.stripe_index = h.stripe_index "
            "WHERE sh.node_id = ? AND h.healthy < v.k",
            (node_id,),
        ).fetchone()
        return int(row[0])

    def _set_nodes(self, table: str, node_ids: set[str]) -> None:
        self._db.execute(f"CREATE TEMP TABLE IF NOT EXISTS {table} (node_id TEXT PRIMARY KEY)")
        self._db.execute(f"DELETE FROM {table}")
        self._db.executemany(f"INSERT INTO {table} VALUES (?)", [(n,) for n in node_ids])

    # Settings ------------------------------------------------------------------------------

    def setting(self, name: str, default: str = "") -> str:
        row = self._db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return str(row[0]) if row else default

    def set_setting(self, name: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (name, value))

    # Buckets -------------------------------------------------------------------------------

    def create_bucket(
        self, name: str, k: int, n: int, write_quorum: int, owner: str = ""
    ) -> BucketRow:
        row = BucketRow(name, k, n, write_quorum, time.time(), owner)
        with self._tx() as db:
            try:
                db.execute(
                    f"INSERT INTO buckets ({_BUCKET_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                    (name, k, n, write_quorum, row.created, owner),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"bucket {name!r} already exists") from None
        return row

    @shares_commit
    def bucket(self, name: str) -> BucketRow:
        return _bucket(self._db, name)

    def buckets(self) -> list[BucketRow]:
        return [
            BucketRow(*r)
            for r in self._db.execute(f"SELECT {_BUCKET_COLUMNS} FROM buckets ORDER BY name")
        ]

    def delete_bucket(self, name: str) -> None:
        with self._tx() as db:
            if db.execute("SELECT 1 FROM buckets WHERE name = ?", (name,)).fetchone() is None:
                raise NotFound(f"bucket {name!r} does not exist")
            if db.execute("SELECT 1 FROM objects WHERE bucket = ? LIMIT 1", (name,)).fetchone():
                raise BucketNotEmpty(f"bucket {name!r} is not empty: delete its objects first")
            db.execute("DELETE FROM buckets WHERE name = ?", (name,))

    # Uploads -------------------------------------------------------------------------------

    @shares_commit
    def begin_upload(self, version: VersionRow) -> None:
        with self._tx() as db:
            if (
                db.execute("SELECT 1 FROM buckets WHERE name = ?", (version.bucket,)).fetchone()
                is None
            ):
                raise NotFound(f"bucket {version.bucket!r} does not exist")
            db.execute(
                f"INSERT INTO versions ({_VERSION_COLUMNS}) VALUES ({', '.join('?' * 14)})",
                (
                    version.version_id,
                    version.bucket,
                    version.key,
                    "pending",
                    version.k,
                    version.n,
                    version.write_quorum,
                    version.stripe_bytes,
                    0,
                    "",
                    0,
                    version.created,
                    version.metadata,
                    0,
                ),
            )

    @shares_commit
    def commit_inline(self, version: VersionRow, data: bytes, delete_grace_s: float) -> VersionRow:
        """Store a small object whole in the metadata and make it the visible object, in one
        transaction (as durable as any manifest: synchronous=FULL)."""
        return self.commit_inline_many([(version, data)], delete_grace_s)[0]

    @shares_commit
    def commit_inline_many(
        self, objects: list[tuple[VersionRow, bytes]], delete_grace_s: float
    ) -> list[VersionRow]:
        """`commit_inline` for several objects in one transaction (all or none are stored)."""
        rows = []
        with self._tx() as db:
            for version, data in objects:
                rows.append(self._insert_inline(db, version, data, delete_grace_s))
        return rows

    def _insert_inline(
        self, db: sqlite3.Connection, version: VersionRow, data: bytes, delete_grace_s: float
    ) -> VersionRow:
        if db.execute("SELECT 1 FROM buckets WHERE name = ?", (version.bucket,)).fetchone() is None:
            raise NotFound(f"bucket {version.bucket!r} does not exist")
        row = dataclasses.replace(version, state="committed", size=len(data), inline=1)
        db.execute(
            f"INSERT INTO versions ({_VERSION_COLUMNS}) VALUES ({', '.join('?' * 14)})",
            dataclasses.astuple(row)[:14],
        )
        db.execute("INSERT INTO inline_objects VALUES (?, ?)", (row.version_id, data))
        self._make_current(db, row, delete_grace_s)
        return row

    def _make_current(self, db: sqlite3.Connection, row: VersionRow, delete_grace_s: float) -> None:
        """Make `row` the visible version of its key; the one it replaces is retired."""
        old = db.execute(
            "SELECT version_id FROM objects WHERE bucket = ? AND key = ?",
            (row.bucket, row.key),
        ).fetchone()
        db.execute(
            "INSERT OR REPLACE INTO objects VALUES (?, ?, ?)",
            (row.bucket, row.key, row.version_id),
        )
        if old is not None:
            self._retire(db, old[0], time.time() + delete_grace_s)

    def inline_data(self, version_id: str) -> bytes:
        """The bytes of an inline object."""
        return _inline_data(self._db, version_id)

    @shares_commit
    def version(self, version_id: str) -> VersionRow:
        row = self._db.execute(
            f"SELECT {_VERSION_COLUMNS} FROM versions WHERE version_id = ?", (version_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"upload {version_id} does not exist")
        return VersionRow(*row)

    def _pending(self, db: sqlite3.Connection, version_id: str) -> VersionRow:
        row = db.execute(
            f"SELECT {_VERSION_COLUMNS} FROM versions WHERE version_id = ?", (version_id,)
        ).fetchone()
        if row is None or row[3] != "pending":
            raise NotFound(
                f"upload {version_id} is not in progress (aborted, expired or committed)"
            )
        return VersionRow(*row)

    @staticmethod
    def _insert_stripes(
        db: sqlite3.Connection, version: VersionRow, stripes: Sequence[StripeRow]
    ) -> None:
        version_id = version.version_id
        for stripe in stripes:
            # Shards first: their delete triggers adjust the stripe row they belong to.
            db.execute(
                "DELETE FROM shards WHERE version_id = ? AND stripe_index = ?",
                (version_id, stripe.index),
            )
            db.execute(
                "INSERT OR REPLACE INTO stripes (version_id, stripe_index, size, shard_length, "
                "k, n) VALUES (?, ?, ?, ?, ?, ?)",
                (version_id, stripe.index, stripe.size, stripe.shard_length, version.k, version.n),
            )
            now = time.time()
            db.executemany(
                "INSERT INTO shards VALUES (?, ?, ?, ?, ?, ?, 'ok', ?)",
                [
                    (version_id, stripe.index, s.shard_index, s.node_id, s.length, s.checksum, now)
                    for s in stripe.shards
                ],
            )

    @shares_commit
    def record_stripes(self, version_id: str, stripes: Sequence[StripeRow]) -> None:
        """Remember written stripes of a pending upload (so an abort can remove them)."""
        with self._tx() as db:
            version = self._pending(db, version_id)
            for stripe in stripes:
                self._check_stripe(version, stripe)
            self._insert_stripes(db, version, stripes)

    @staticmethod
    def _check_stripe(version: VersionRow, stripe: StripeRow) -> None:
        nodes = {s.node_id for s in stripe.shards}
        indexes = {s.shard_index for s in stripe.shards}
        if len(nodes) != len(stripe.shards) or len(indexes) != len(stripe.shards):
            raise InvalidArgument(f"stripe {stripe.index}: shards must be on distinct nodes")
        if any(not 0 <= i < version.n for i in indexes):
            raise InvalidArgument(f"stripe {stripe.index}: shard index outside 0..{version.n - 1}")
        if len(stripe.shards) < version.write_quorum:
            raise InvalidArgument(
                f"stripe {stripe.index}: {len(stripe.shards)} shards written, "
                f"write quorum is {version.write_quorum}"
            )
        if not 0 < stripe.size <= version.stripe_bytes:
            raise InvalidArgument(f"stripe {stripe.index}: size {stripe.size} out of range")

    @shares_commit
    def commit(
        self,
        version_id: str,
        size: int,
        etag: str,
        stripe_count: int,
        stripes: Sequence[StripeRow],
        delete_grace_s: float,
        metadata: dict[str, str] | None = None,
    ) -> tuple[VersionRow, int]:
        """Make a pending upload the visible object; returns (version, degraded stripe count)."""
        with self._tx() as db:
            version = self._pending(db, version_id)
            for stripe in stripes:
                self._check_stripe(version, stripe)
            self._insert_stripes(db, version, stripes)
            rows = db.execute(
                "SELECT s.stripe_index, s.size, COUNT(sh.shard_index) FROM stripes s "
                "LEFT JOIN shards sh "
                "ON sh.version_id = s.version_id AND sh.stripe_index = s.stripe_index "
                "WHERE s.version_id = ? GROUP BY s.stripe_index ORDER BY s.stripe_index",
                (version_id,),
            ).fetchall()
            if [r[0] for r in rows] != list(range(stripe_count)):
                raise InvalidArgument(
                    f"upload {version_id}: {len(rows)} stripes recorded, {stripe_count} declared"
                )
            if sum(r[1] for r in rows) != size:
                raise InvalidArgument(f"upload {version_id}: stripe sizes do not add up to {size}")
            if any(r[1] != version.stripe_bytes for r in rows[:-1]):
                raise InvalidArgument(f"upload {version_id}: only the last stripe may be short")
            degraded = sum(1 for r in rows if r[2] < version.n)
            self._publish(db, version, size, etag, stripe_count, metadata, delete_grace_s)
        return self.version(version_id), degraded

    def _publish(
        self,
        db: sqlite3.Connection,
        version: VersionRow,
        size: int,
        etag: str,
        stripe_count: int,
        metadata: dict[str, str] | None,
        delete_grace_s: float,
    ) -> None:
        """Mark a version committed and make it the object under its key (the caller holds
        the transaction and has checked its stripes)."""
        db.execute(
            "UPDATE versions SET state = 'committed', size = ?, etag = ?, stripe_count = ?, "
            "created = ?, metadata = ? WHERE version_id = ?",
            (
                size,
                etag,
                stripe_count,
                time.time(),
                json.dumps(metadata or {}, sort_keys=True),
                version.version_id,
            ),
        )
        self._make_current(db, version, delete_grace_s)
        db.execute("UPDATE stripes SET committed = 1 WHERE version_id = ?", (version.version_id,))

    # Compose -------------------------------------------------------------------------------

    def compose_sources(
        self, refs: Sequence[tuple[str, str, str]]
    ) -> list[tuple[VersionRow, list[StripeRow]]]:
        """The current versions of (bucket, key, version id or "") with all their stripes;
        NotFound when one is absent or no longer the given version."""
        found = []
        for bucket, key, version_id in refs:
            version = self.current(bucket, key)
            if version_id and version.version_id != version_id:
                raise NotFound(f"object {bucket}/{key}: version {version_id} is not current")
            stripes = self.stripes(version.version_id, 0, max(version.stripe_count, 1))
            found.append((version, stripes))
        return found

    def commit_compose(
        self,
        version_id: str,
        sources: Sequence[VersionRow],
        stripes: Sequence[StripeRow],
        etag: str,
        metadata: dict[str, str] | None,
        delete_grace_s: float,
    ) -> tuple[VersionRow, int]:
        """Make a pending compose version (whose shards the nodes have linked) the object
        under its key and retire the sources, in one transaction. NotFound if a source changed
        since it was resolved; Unavailable if a stripe has fewer than write_quorum shards."""
        with self._tx() as db:
            version = self._pending(db, version_id)
            for source in sources:
                row = db.execute(
                    "SELECT version_id FROM objects WHERE bucket = ? AND key = ?",
                    (source.bucket, source.key),
                ).fetchone()
                if row is None or row[0] != source.version_id:
                    raise NotFound(
                        f"object {source.bucket}/{source.key} was replaced or deleted while "
                        "being composed"
                    )
            for stripe in stripes:
                if len(stripe.shards) < version.write_quorum:
                    raise Unavailable(
                        f"stripe {stripe.index}: only {len(stripe.shards)} of {version.n} shards "
                        f"could be linked, write quorum is {version.write_quorum}"
                    )
                self._check_stripe(version, stripe)
            if [s.index for s in stripes] != list(range(len(stripes))):
                raise InvalidArgument(f"compose {version_id}: stripes are not contiguous")
            self._insert_stripes(db, version, stripes)
            size = sum(s.size for s in stripes)
            degraded = sum(1 for s in stripes if len(s.shards) < version.n)
            # Sources first, so the target key replacing one of them does not retire it twice.
            not_before = time.time() + delete_grace_s
            for source in sources:
                db.execute(
                    "DELETE FROM objects WHERE bucket = ? AND key = ? AND version_id = ?",
                    (source.bucket, source.key, source.version_id),
                )
                self._retire(db, source.version_id, not_before)
            self._publish(db, version, size, etag, len(stripes), metadata, delete_grace_s)
        return self.version(version_id), degraded

    @staticmethod
    def _retire(db: sqlite3.Connection, version_id: str, not_before: float) -> None:
        """Mark a version deleted and queue its shards for removal."""
        db.execute("UPDATE versions SET state = 'deleted' WHERE version_id = ?", (version_id,))
        # Out of the counters first, so deleting its shards does not churn them.
        db.execute("UPDATE stripes SET committed = 0 WHERE version_id = ?", (version_id,))
        db.execute(
            "INSERT OR IGNORE INTO deletions SELECT node_id, "
            "version_id || '.' || stripe_index || '.' || shard_index, ?, length "
            "FROM shards WHERE version_id = ?",
            (not_before, version_id),
        )
        db.execute("DELETE FROM repair_errors WHERE version_id = ?", (version_id,))
        db.execute("DELETE FROM shards WHERE version_id = ?", (version_id,))
        db.execute("DELETE FROM stripes WHERE version_id = ?", (version_id,))
        db.execute("DELETE FROM inline_objects WHERE version_id = ?", (version_id,))

    @shares_commit
    def abort(self, version_id: str) -> None:
        """Drop a pending upload and queue whatever shards it recorded for removal."""
        with self._tx() as db:
            row = db.execute(
                "SELECT state FROM versions WHERE version_id = ?", (version_id,)
            ).fetchone()
            if row is None or row[0] != "pending":
                return
            self._retire(db, version_id, time.time())

    def expire_uploads(self, older_than: float) -> list[str]:
        """Abort pending uploads started before `older_than` (wall time); returns their ids."""
        ids = [
            r[0]
            for r in self._db.execute(
                "SELECT version_id FROM versions WHERE state = 'pending' AND created < ?",
                (older_than,),
            )
        ]
        for version_id in ids:
            self.abort(version_id)
        return ids

    # Objects -------------------------------------------------------------------------------

    @shares_commit
    def current(self, bucket: str, key: str) -> VersionRow:
        return _current(self._db, bucket, key)

    def locate(self, bucket: str, key: str, version_id: str, first: int, count: int) -> Located:
        """What a reader needs in one metadata call: the version (`version_id`, or the
        current one when empty), and either its inline bytes or stripes `first`.. (up to
        `count`). NotFound when the object (or that version of it) is not there."""
        located = _locate(self._db, bucket, key, version_id, first, count, max_stripes=None)
        assert located is not None
        return located

    def stripes(self, version_id: str, first: int, count: int) -> list[StripeRow]:
        return _stripes(self._db, version_id, first, count)

    @shares_commit
    def delete_object(self, bucket: str, key: str, delete_grace_s: float) -> None:
        with self._tx() as db:
            row = db.execute(
                "SELECT version_id FROM objects WHERE bucket = ? AND key = ?", (bucket, key)
            ).fetchone()
            if row is None:
                self.bucket(bucket)
                raise NotFound(f"object {bucket}/{key} does not exist")
            db.execute("DELETE FROM objects WHERE bucket = ? AND key = ?", (bucket, key))
            self._retire(db, row[0], time.time() + delete_grace_s)

    @shares_commit
    def delete_objects(self, bucket: str, keys: list[str], delete_grace_s: float) -> int:
        """Delete every object of `keys` that exists, in one transaction (one commit, not one
        per object); returns how many were deleted. Missing keys are skipped."""
        deleted = 0
        with self._tx() as db:
            for key in keys:
                row = db.execute(
                    "SELECT version_id FROM objects WHERE bucket = ? AND key = ?", (bucket, key)
                ).fetchone()
                if row is None:
                    continue
                db.execute("DELETE FROM objects WHERE bucket = ? AND key = ?", (bucket, key))
                self._retire(db, row[0], time.time() + delete_grace_s)
                deleted += 1
        return deleted

    def list_objects(
        self, bucket: str, prefix: str, start_after: str, limit: int
    ) -> list[VersionRow]:
        self.bucket(bucket)
        columns = ", ".join("v." + c for c in _VERSION_COLUMNS.split(", "))
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else None
        sql = (
            f"SELECT {columns} FROM objects o JOIN versions v ON v.version_id = o.version_id "
            "WHERE o.bucket = ? AND o.key > ? AND o.key >= ?"
        )
        params: list[object] = [bucket, start_after, prefix]
        if upper is not None:
            sql += " AND o.key < ?"
            params.append(upper)
        sql += " ORDER BY o.key LIMIT ?"
        params.append(limit)
        return [VersionRow(*r) for r in self._db.execute(sql, params)]

    @shares_commit
    def mark_bad(
        self, version_id: str, stripe_index: int, shard_index: int, node_id: str, state: str
    ) -> bool:
        """Record that a node's copy of a shard is corrupt or missing (repair rebuilds it)."""
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE shards SET state = ? WHERE version_id = ? AND stripe_index = ? "
                "AND shard_index = ? AND node_id = ?",
                (state, version_id, stripe_index, shard_index, node_id),
            )
            return cursor.rowcount > 0

    # Shard deletions -----------------------------------------------------------------------

    def due_deletions(self, node_id: str, now: float, limit: int = 1000) -> list[str]:
        return [
            r[0]
            for r in self._db.execute(
                "SELECT shard_id FROM deletions WHERE node_id = ? AND not_before <= ? LIMIT ?",
                (node_id, now, limit),
            )
        ]

    @shares_commit
    def confirm_deletions(self, node_id: str, shard_ids: Sequence[str]) -> None:
        if not shard_ids:
            return
        with self._tx() as db:
            db.executemany(
                "DELETE FROM deletions WHERE node_id = ? AND shard_id = ?",
                [(node_id, s) for s in shard_ids],
            )

    def pending_deletions(self) -> tuple[int, int]:
        """(shards, bytes) queued for removal."""
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(length), 0) FROM deletions"
        ).fetchone()
        return int(row[0]), int(row[1])

    @shares_commit
    def queue_deletions(
        self, node_id: str, shards: Sequence[tuple[str, int]], not_before: float
    ) -> None:
        """Ask a node to remove shards (shard id, length) once `not_before` has passed.

        A shard a manifest currently places on that node is never queued: the check runs in
        the same transaction as the insert, so an upload committing while its shards were
        being judged orphans cannot lose them.
        """
        rows = []
        for sid, length in shards:
            version_id, stripe, index = sid.split(".")
            rows.append(
                (node_id, sid, not_before, length, version_id, int(stripe), int(index), node_id)
            )
        with self._tx() as db:
            db.executemany(
                "INSERT OR IGNORE INTO deletions SELECT ?, ?, ?, ? WHERE NOT EXISTS ("
                "SELECT 1 FROM shards WHERE version_id = ? AND stripe_index = ? "
                "AND shard_index = ? AND node_id = ?)",
                rows,
            )

    # Health --------------------------------------------------------------------------------

    def health_summary(self, counted_out: set[str]) -> health_index.HealthSummary:
        """Data health from the maintained counters, after making `counted_out` (nodes that
        are down or decommissioned) the nodes whose shards do not count."""
        self.set_counted_out(counted_out)
        return health_index.summary(self._db)

    def set_counted_out(self, node_ids: set[str]) -> bool:
        """Nodes whose shards do not count toward health; True if that changed (the update
        touches every stripe with a shard on a changed node, so it runs on liveness changes)."""
        if health_index.counted_out(self._db) == node_ids:
            return False
        with self._tx() as db:
            return health_index.set_counted_out(db, node_ids)

    def all_stripes_full(self) -> bool:
        """Whether every committed stripe has `n` healthy shards (from the counters: no scan).
        Down nodes count against it, so it errs toward False."""
        row = self._db.execute(
            "SELECT 1 FROM stripe_counts WHERE healthy < n AND count > 0 LIMIT 1"
        ).fetchone()
        return row is None

    def recount_health(self) -> None:
        """Recompute the health counters from scratch (migration; consistency checks)."""
        health_index.recount(self._db)

    # Repair --------------------------------------------------------------------------------

    def _repair_scope(self, lost: set[str], draining: set[str]) -> None:
        self._set_nodes("lost_nodes", lost)
        self._set_nodes("draining_nodes", draining)

    def repair_backlog(self, lost: set[str], draining: set[str]) -> tuple[int, int]:
        """(shards to rebuild, shards to move off draining nodes) over committed objects."""
        self._repair_scope(lost, draining)
        row = self._db.execute(
            _REPAIR_CTE + "SELECT COALESCE(SUM(n - good), 0), COALESCE(SUM(draining), 0) "
            "FROM repair_need"
        ).fetchone()
        return int(row[0]), int(row[1])

    def repair_candidates(
        self, lost: set[str], draining: set[str], now: float, limit: int
    ) -> list[RepairStripe]:
        """Stripes needing work, fewest good shards first, skipping ones in error backoff."""
        self._repair_scope(lost, draining)
        rows = self._db.execute(
            _REPAIR_CTE + "SELECT r.version_id, r.stripe_index, r.size, r.shard_length, r.k, r.n "
            "FROM repair_need r WHERE (r.good < r.n OR r.draining > 0) AND NOT EXISTS ("
            "  SELECT 1 FROM repair_errors e WHERE e.version_id = r.version_id "
            "  AND e.stripe_index = r.stripe_index AND e.next_attempt > ?) "
            "ORDER BY r.good - r.k, r.version_id, r.stripe_index LIMIT ?",
            (now, limit),
        ).fetchall()
        return [
            RepairStripe(
                version_id, index, size, length, k, n, self._stripe_shards(version_id, index)
            )
            for version_id, index, size, length, k, n in rows
        ]

    def _stripe_shards(self, version_id: str, stripe_index: int) -> tuple[ShardRow, ...]:
        return tuple(
            ShardRow(*s)
            for s in self._db.execute(
                "SELECT shard_index, node_id, length, checksum, state FROM shards "
                "WHERE version_id = ? AND stripe_index = ? ORDER BY shard_index",
                (version_id, stripe_index),
            )
        )

    def repair_stripe(self, version_id: str, stripe_index: int) -> RepairStripe | None:
        """The stripe as it is now, or None once its object was deleted or replaced.

        Repair reads this just before it starts: a queued candidate may be stale, because a
        repair of the same stripe may have finished since the scan that queued it, and
        choosing targets from the old shard list could put two shards on one node.
        """
        row = self._db.execute(
            "SELECT s.size, s.shard_length, v.k, v.n FROM objects o "
            "JOIN versions v ON v.version_id = o.version_id "
            "JOIN stripes s ON s.version_id = v.version_id "
            "WHERE o.version_id = ? AND s.stripe_index = ?",
            (version_id, stripe_index),
        ).fetchone()
        if row is None:
            return None
        size, length, k, n = row
        return RepairStripe(
            version_id,
            stripe_index,
            size,
            length,
            k,
            n,
            self._stripe_shards(version_id, stripe_index),
        )

    def record_rebuilt(
        self,
        version_id: str,
        stripe_index: int,
        shard: ShardRow,
        old_node: str | None,
        old_length: int,
        delete_grace_s: float,
    ) -> bool:
        """Point the manifest at a rebuilt shard, in place of the copy on `old_node` (None:
        the manifest had no row for it).

        A compare-and-set: False, recording nothing, when the object was deleted or replaced
        meanwhile, when the shard is no longer where the repair found it, or when the target
        already holds another shard of the stripe (the rule that a node holds at most one
        shard of a stripe is checked here, in the transaction, not only by the caller).
        """
        sid = f"{version_id}.{stripe_index}.{shard.shard_index}"
        now = time.time()
        with self._tx() as db:
            current = db.execute(
                "SELECT 1 FROM versions v JOIN stripes s ON s.version_id = v.version_id "
                "WHERE v.version_id = ? AND v.state = 'committed' AND s.stripe_index = ?",
                (version_id, stripe_index),
            ).fetchone()
            if current is None:
                return False
            holders = dict(
                db.execute(
                    "SELECT shard_index, node_id FROM shards "
                    "WHERE version_id = ? AND stripe_index = ?",
                    (version_id, stripe_index),
                ).fetchall()
            )
            if holders.get(shard.shard_index) != old_node:
                return False
            if any(
                node == shard.node_id and index != shard.shard_index
                for index, node in holders.items()
            ):
                return False
            db.execute(
                "INSERT OR REPLACE INTO shards VALUES (?, ?, ?, ?, ?, ?, 'ok', ?)",
                (
                    version_id,
                    stripe_index,
                    shard.shard_index,
                    shard.node_id,
                    shard.length,
                    shard.checksum,
                    now,
                ),
            )
            db.execute(
                "DELETE FROM repair_errors WHERE version_id = ? AND stripe_index = ? "
                "AND shard_index = ?",
                (version_id, stripe_index, shard.shard_index),
            )
            db.execute(
                "DELETE FROM deletions WHERE node_id = ? AND shard_id = ?", (shard.node_id, sid)
            )
            if old_node and old_node != shard.node_id:
                db.execute(
                    "INSERT OR IGNORE INTO deletions VALUES (?, ?, ?, ?)",
                    (old_node, sid, now + delete_grace_s, old_length),
                )
        return True

    def record_repair_error(
        self, version_id: str, stripe_index: int, shard_index: int, reason: str, now: float
    ) -> None:
        """Remember why a shard could not be rebuilt; retried later with growing backoff."""
        with self._tx() as db:
            row = db.execute(
                "SELECT attempts FROM repair_errors WHERE version_id = ? AND stripe_index = ? "
                "AND shard_index = ?",
                (version_id, stripe_index, shard_index),
            ).fetchone()
            attempts = (row[0] if row else 0) + 1
            backoff = min(2.0 ** min(attempts, 6), 60.0)
            db.execute(
                "INSERT OR REPLACE INTO repair_errors VALUES (?, ?, ?, ?, ?, ?, ?)",
                (version_id, stripe_index, shard_index, reason, attempts, now, now + backoff),
            )

    def repair_errors(self, limit: int) -> tuple[list[RepairErrorRow], int]:
        """Recorded repair errors, most recent first, and their total count."""
        total = int(self._db.execute("SELECT COUNT(*) FROM repair_errors").fetchone()[0])
        rows = self._db.execute(
            "SELECT e.version_id, e.stripe_index, e.shard_index, COALESCE(v.bucket, ''), "
            "COALESCE(v.key, ''), e.reason, e.attempts, e.last_attempt, e.next_attempt "
            "FROM repair_errors e LEFT JOIN versions v ON v.version_id = e.version_id "
            "ORDER BY e.last_attempt DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [RepairErrorRow(*r) for r in rows], total

    # Reconciliation ------------------------------------------------------------------------

    def node_references(self, node_id: str) -> dict[str, float]:
        """Shard ids the manifests (committed or pending) place on a node, with update time."""
        rows = self._db.execute(
            "SELECT version_id || '.' || stripe_index || '.' || shard_index, updated "
            "FROM shards WHERE node_id = ?",
            (node_id,),
        )
        return {sid: float(updated) for sid, updated in rows}

    def version_states(self, version_ids: set[str]) -> dict[str, str]:
        """State of each known version id (unknown ids are absent)."""
        states: dict[str, str] = {}
        ids = sorted(version_ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            for version_id, state in self._db.execute(
                f"SELECT version_id, state FROM versions WHERE version_id IN ({marks})", chunk
            ):
                states[version_id] = state
        return states

    def mark_missing(self, node_id: str, shard_ids: Sequence[str], older_than: float) -> int:
        """Mark shards a node does not have as missing (unless updated since `older_than`)."""
        marked = 0
        with self._tx() as db:
            for sid in shard_ids:
                version_id, stripe, index = sid.split(".")
                marked += db.execute(
                    "UPDATE shards SET state = 'missing' WHERE version_id = ? AND stripe_index = ? "
                    "AND shard_index = ? AND node_id = ? AND state = 'ok' AND updated < ?",
                    (version_id, int(stripe), int(index), node_id, older_than),
                ).rowcount
        return marked

    def queued_for(self, node_id: str) -> set[str]:
        return {
            r[0]
            for r in self._db.execute(
                "SELECT shard_id FROM deletions WHERE node_id = ?", (node_id,)
            )
        }


_REPAIR_CTE = (
    "WITH repair_need AS (SELECT st.version_id, st.stripe_index, st.size, st.shard_length, "
    "v.k, v.n, "
    "SUM(CASE WHEN sh.state = 'ok' AND ln.node_id IS NULL THEN 1 ELSE 0 END) AS good, "
    "SUM(CASE WHEN sh.state = 'ok' AND dn.node_id IS NOT NULL THEN 1 ELSE 0 END) AS draining "
    "FROM objects o JOIN versions v ON v.version_id = o.version_id "
    "JOIN stripes st ON st.version_id = v.version_id "
    "LEFT JOIN shards sh ON sh.version_id = st.version_id AND sh.stripe_index = st.stripe_index "
    "LEFT JOIN lost_nodes ln ON ln.node_id = sh.node_id "
    "LEFT JOIN draining_nodes dn ON dn.node_id = sh.node_id "
    "GROUP BY st.version_id, st.stripe_index) "
)

_STRIPE_HEALTH_CTE = (
    "WITH stripe_health AS (SELECT s.version_id, s.stripe_index, "
    "SUM(CASE WHEN sh.state = 'ok' AND ln.node_id IS NOT NULL THEN 1 ELSE 0 END) AS healthy "
    "FROM objects o JOIN stripes s ON s.version_id = o.version_id "
    "LEFT JOIN shards sh ON sh.version_id = s.version_id AND sh.stripe_index = s.stripe_index "
    "LEFT JOIN live_nodes ln ON ln.node_id = sh.node_id "
    "GROUP BY s.version_id, s.stripe_index) "
)
