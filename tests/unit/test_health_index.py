"""The maintained health counters (coordinator/health_index.py) always equal a from-scratch
count over the metadata, whatever sequence of writes, repairs, damage and liveness changes
led there; and a status on a healthy cluster does work independent of the object count."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.coordinator import compose
from shoal.coordinator.metadata import MetadataStore, ShardRow, StripeRow, VersionRow

NODES = [f"node-{i}" for i in range(8)]
REDUNDANCY = [(2, 3), (4, 6)]


def reference(db: sqlite3.Connection, counted_out: set[str]) -> tuple[object, ...]:
    """Objects by (k, n) and worst stripe, and stripes by (k, n, healthy), by brute force."""
    healthy_of: dict[tuple[str, int], int] = {}
    for vid, stripe, node, state in db.execute(
        "SELECT sh.version_id, sh.stripe_index, sh.node_id, sh.state FROM shards sh "
        "JOIN objects o ON o.version_id = sh.version_id"
    ):
        healthy_of.setdefault((vid, stripe), 0)
        if state == "ok" and node not in counted_out:
            healthy_of[(vid, stripe)] += 1
    stripes: dict[tuple[int, int, int], int] = {}
    objects: dict[tuple[int, int], list[int]] = {}
    damaged: dict[tuple[int, int, int], list[int]] = {}
    for vid, k, n, size, count in db.execute(
        "SELECT v.version_id, v.k, v.n, v.size, v.stripe_count FROM objects o "
        "JOIN versions v ON v.version_id = o.version_id"
    ):
        totals = objects.setdefault((k, n), [0, 0])
        totals[0] += 1
        totals[1] += size
        worst = n
        for index in range(count):
            healthy = healthy_of.get((vid, index), 0)
            stripes[(k, n, healthy)] = stripes.get((k, n, healthy), 0) + 1
            worst = min(worst, healthy)
        if worst < n:
            group = damaged.setdefault((k, n, worst), [0, 0])
            group[0] += 1
            group[1] += size
    return (
        {key: (v[0], v[1]) for key, v in objects.items()},
        stripes,
        {key: (v[0], v[1]) for key, v in damaged.items()},
    )


def maintained(store: MetadataStore, counted_out: set[str]) -> tuple[object, ...]:
    summary = store.health_summary(counted_out)
    return (
        summary.objects,
        summary.stripe_counts,
        {(d.k, d.n, d.min_healthy_shards): (d.objects, d.bytes) for d in summary.damaged},
    )


class Model:
    """Drives a real MetadataStore through the operations the coordinator performs."""

    def __init__(self, path: Path) -> None:
        self.store = MetadataStore(path)
        self.store._db.execute("PRAGMA synchronous=OFF")
        for k, n in REDUNDANCY:
            self.store.create_bucket(f"b{k}{n}", k, n, k + 1)
        self.counter = 0
        self.counted_out: set[str] = set()

    def put(
        self,
        redundancy: int,
        key: int,
        stripes: int,
        written: int,
        start: int,
        *,
        name: str = "",
        full: bool = False,
    ) -> None:
        k, n = REDUNDANCY[redundancy % len(REDUNDANCY)]
        self.counter += 1
        vid = f"v{self.counter:06d}"
        bucket = f"b{k}{n}"
        self.store.begin_upload(
            VersionRow(vid, bucket, name or f"k{key}", "pending", k, n, k + 1, 100, 0, "", 0, 0.0)
        )
        shards_per_stripe = max(k + 1, n - written)
        rows = [
            StripeRow(
                i,
                100 if i < stripes - 1 or full else 37,
                30,
                tuple(
                    ShardRow(j, NODES[(start + i + j) % len(NODES)], 30, b"c" * 16, "ok")
                    for j in range(shards_per_stripe)
                ),
            )
            for i in range(stripes)
        ]
        size = sum(r.size for r in rows)
        self.store.commit(vid, size, "etag", stripes, rows, 0.0)

    def compose(self, redundancy: int, parts: int, stripes: int, written: int, key: int) -> None:
        """Write `parts` objects and compose them into one under k<key> (as ComposeObject
        does once every node linked its shards), replacing whatever was there."""
        k, n = REDUNDANCY[redundancy % len(REDUNDANCY)]
        names = [f"part-{self.counter}-{i}" for i in range(parts)]
        for i, name in enumerate(names):
            last = i == parts - 1
            self.put(redundancy, 0, stripes, written, i, name=name, full=not last)
        bucket = f"b{k}{n}"
        sources = self.store.compose_sources([(bucket, name, "") for name in names])
        self.counter += 1
        vid = f"v{self.counter:06d}"
        planned = compose.plan(vid, sources, 100)
        self.store.begin_upload(
            VersionRow(vid, bucket, f"k{key}", "pending", k, n, k + 1, 100, 0, "", 0, 0.0)
        )
        linked = {(x.node_id, x.target_id) for x in planned.links}
        rows = compose.linked_stripes(planned, linked)
        etag = compose.compose_etag([v.etag for v, _s in sources])
        self.store.commit_compose(vid, [v for v, _s in sources], rows, etag, {"a": "b"}, 0.0)

    def empty_put(self, key: int) -> None:
        self.counter += 1
        vid = f"v{self.counter:06d}"
        self.store.begin_upload(
            VersionRow(vid, "b46", f"e{key}", "pending", 4, 6, 5, 100, 0, "", 0, 0.0)
        )
        self.store.commit(vid, 0, "etag", 0, [], 0.0)

    def _shards(self) -> list[tuple[str, int, int, str]]:
        return list(
            self.store._db.execute(
                "SELECT sh.version_id, sh.stripe_index, sh.shard_index, sh.node_id FROM shards sh "
                "JOIN objects o ON o.version_id = sh.version_id ORDER BY 1, 2, 3"
            )
        )

    def damage(self, pick: int, state: str) -> None:
        shards = self._shards()
        if shards:
            vid, stripe, index, node = shards[pick % len(shards)]
            self.store.mark_bad(vid, stripe, index, node, state)

    def rebuild(self, pick: int, target: int) -> None:
        shards = self._shards()
        if shards:
            vid, stripe, index, node = shards[pick % len(shards)]
            new_node = NODES[target % len(NODES)]
            row = ShardRow(index, new_node, 30, b"d" * 16, "ok")
            self.store.record_rebuilt(vid, stripe, row, node, 30, 0.0)

    def delete(self, key: int) -> None:
        row = self.store._db.execute(
            "SELECT bucket, key FROM objects ORDER BY bucket, key LIMIT 1 OFFSET ?",
            (key % max(1, self._object_count()),),
        ).fetchone()
        if row:
            self.store.delete_object(row[0], row[1], 0.0)

    def _object_count(self) -> int:
        return int(self.store._db.execute("SELECT COUNT(*) FROM objects").fetchone()[0])

    def liveness(self, down: frozenset[int]) -> None:
        self.counted_out = {NODES[i % len(NODES)] for i in down}
        self.store.set_counted_out(self.counted_out)

    def abort_pending(self, key: int) -> None:
        self.counter += 1
        vid = f"v{self.counter:06d}"
        self.store.begin_upload(
            VersionRow(vid, "b23", f"p{key}", "pending", 2, 3, 3, 100, 0, "", 0, 0.0)
        )
        shards = tuple(ShardRow(j, NODES[j], 30, b"c" * 16, "ok") for j in range(3))
        self.store.record_stripes(vid, [StripeRow(0, 50, 30, shards)])
        self.store.abort(vid)

    def check(self) -> None:
        expected = reference(self.store._db, self.counted_out)
        assert maintained(self.store, self.counted_out) == expected
        stripes = expected[1]
        assert isinstance(stripes, dict)
        full = all(healthy >= n for (_k, n, healthy) in stripes)
        assert self.store.all_stripes_full() == full
        self.store.recount_health()
        assert maintained(self.store, self.counted_out) == expected


OPERATIONS = st.one_of(
    st.tuples(
        st.just("put"),
        st.integers(0, 1),
        st.integers(0, 6),
        st.integers(1, 3),
        st.integers(0, 2),
        st.integers(0, 7),
    ),
    st.tuples(st.just("empty_put"), st.integers(0, 3)),
    st.tuples(
        st.just("compose"),
        st.integers(0, 1),
        st.integers(1, 3),
        st.integers(0, 3),
        st.integers(1, 3),
        st.integers(0, 3),
    ),
    st.tuples(st.just("damage"), st.integers(0, 500), st.sampled_from(["corrupt", "missing"])),
    st.tuples(st.just("rebuild"), st.integers(0, 500), st.integers(0, 7)),
    st.tuples(st.just("delete"), st.integers(0, 50)),
    st.tuples(st.just("liveness"), st.frozensets(st.integers(0, 7), max_size=3)),
    st.tuples(st.just("abort_pending"), st.integers(0, 3)),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(operations=st.lists(OPERATIONS, min_size=1, max_size=25))
def test_counters_match_a_full_recount(
    tmp_path_factory: pytest.TempPathFactory, operations: list[tuple[object, ...]]
) -> None:
    model = Model(tmp_path_factory.mktemp("meta") / "metadata.sqlite3")
    for name, *args in operations:
        getattr(model, str(name))(*args)
        model.check()


def _fill(store: MetadataStore, objects: int) -> None:
    store._db.execute("PRAGMA synchronous=OFF")
    store.create_bucket("b", 4, 6, 5)
    for i in range(objects):
        vid = f"v{i:08d}"
        store.begin_upload(VersionRow(vid, "b", f"k{i}", "pending", 4, 6, 5, 100, 0, "", 0, 0.0))
        shards = tuple(ShardRow(j, NODES[(i + j) % 6], 30, b"c" * 16, "ok") for j in range(6))
        store.commit(vid, 100, "e", 1, [StripeRow(0, 100, 30, shards)], 0.0)


def _vm_steps(store: MetadataStore, counted_out: set[str]) -> int:
    """SQLite virtual-machine steps (in units of 100) a health summary takes."""
    steps = 0

    def tick() -> int:
        nonlocal steps
        steps += 1
        return 0

    store._db.set_progress_handler(tick, 100)
    try:
        store.health_summary(counted_out)
    finally:
        store._db.set_progress_handler(None, 0)
    return steps


def test_status_work_does_not_grow_with_healthy_objects(tmp_path: Path) -> None:
    """The property behind "status answers within a second at 100k objects", measured in
    SQLite VM steps rather than seconds so it cannot flake: with every stripe healthy, the
    summary costs the same for 200 objects as for 2,000 (a scan would cost 10x)."""
    small, large = MetadataStore(tmp_path / "small.db"), MetadataStore(tmp_path / "large.db")
    _fill(small, 200)
    _fill(large, 2000)
    assert large.health_summary(set()).objects == {(4, 6): (2000, 200_000)}
    small_steps, large_steps = _vm_steps(small, set()), _vm_steps(large, set())
    assert large_steps <= small_steps + 5, (small_steps, large_steps)
    # With a node down, the work is bounded by the damaged stripes, and the answer is right.
    assert large.set_counted_out({NODES[0]})
    summary = large.health_summary({NODES[0]})
    assert [(d.min_healthy_shards, d.objects) for d in summary.damaged] == [(5, 2000)]
    assert summary.stripe_counts == {(4, 6, 5): 2000}


def test_database_from_before_the_counters_is_migrated(tmp_path: Path) -> None:
    """A metadata file written before the counters existed gets the columns, triggers and
    correct counts the first time a new coordinator opens it."""
    path = tmp_path / "old.db"
    store = MetadataStore(path)
    _fill(store, 30)
    store.mark_bad("v00000003", 0, 2, NODES[5], "corrupt")
    store.close()
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(
        "DROP INDEX stripes_damaged; DROP TABLE stripe_counts; DROP TABLE object_counts; "
        "DROP TABLE counted_out; "
        + "".join(
            f"DROP TRIGGER {name[0]};"
            for name in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        )
        + "ALTER TABLE stripes DROP COLUMN healthy; ALTER TABLE stripes DROP COLUMN committed;"
        "ALTER TABLE stripes DROP COLUMN k; ALTER TABLE stripes DROP COLUMN n;"
    )
    db.close()
    reopened = MetadataStore(path)
    expected = reference(reopened._db, set())
    assert maintained(reopened, set()) == expected
    assert expected[2] == {(4, 6, 5): (1, 100)}
    reopened.close()
