"""Recording a rebuilt shard is a compare-and-set on the manifest, so a repair planned from a
stale view of a stripe can never leave two shards of one stripe on one node."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.coordinator.metadata import MetadataStore, ShardRow, StripeRow, VersionRow


@pytest.fixture
def store(tmp_path: Path) -> MetadataStore:
    store = MetadataStore(tmp_path / "meta.db")
    store.create_bucket("b", 4, 6, 5)
    return store


def put(store: MetadataStore, key: str, version_id: str) -> None:
    """One committed (4, 6) object of one stripe, shard j on node-j."""
    store.begin_upload(VersionRow(version_id, "b", key, "pending", 4, 6, 5, 100, 0, "", 0, 0.0))
    shards = tuple(ShardRow(j, f"node-{j}", 25, b"c" * 16, "ok") for j in range(6))
    store.commit(version_id, 100, "etag", 1, [StripeRow(0, 100, 25, shards)], 0.0)


def placement(store: MetadataStore, version_id: str) -> dict[int, str]:
    stripe = store.repair_stripe(version_id, 0)
    assert stripe is not None
    return {s.shard_index: s.node_id for s in stripe.shards}


def rebuilt(index: int, node: str) -> ShardRow:
    return ShardRow(index, node, 25, b"d" * 16, "ok")


def test_rebuild_moves_the_shard_and_queues_the_old_copy(store: MetadataStore) -> None:
    put(store, "a", "v1")
    store.mark_bad("v1", 0, 2, "node-2", "corrupt")
    assert store.record_rebuilt("v1", 0, rebuilt(2, "node-7"), "node-2", 25, 0.0)
    assert placement(store, "v1")[2] == "node-7"
    assert store.queued_for("node-2") == {"v1.0.2"}


def test_stale_rebuild_of_a_shard_already_moved_is_refused(store: MetadataStore) -> None:
    put(store, "a", "v1")
    assert store.record_rebuilt("v1", 0, rebuilt(2, "node-7"), "node-2", 25, 0.0)
    # A second repair planned before the first was recorded still believes node-2 holds it.
    assert not store.record_rebuilt("v1", 0, rebuilt(2, "node-6"), "node-2", 25, 0.0)
    assert placement(store, "v1")[2] == "node-7"


def test_target_holding_another_shard_of_the_stripe_is_refused(store: MetadataStore) -> None:
    put(store, "a", "v1")
    before = placement(store, "v1")
    assert not store.record_rebuilt("v1", 0, rebuilt(2, "node-3"), "node-2", 25, 0.0)
    assert placement(store, "v1") == before
    # Even when the other shard there is damaged: its row stays until it is rebuilt too.
    store.mark_bad("v1", 0, 3, "node-3", "missing")
    assert not store.record_rebuilt("v1", 0, rebuilt(2, "node-3"), "node-2", 25, 0.0)
    assert placement(store, "v1") == before


def test_rebuild_in_place_is_allowed(store: MetadataStore) -> None:
    put(store, "a", "v1")
    store.mark_bad("v1", 0, 2, "node-2", "missing")
    assert store.record_rebuilt("v1", 0, rebuilt(2, "node-2"), "node-2", 25, 0.0)
    stripe = store.repair_stripe("v1", 0)
    assert stripe is not None
    assert [s.state for s in stripe.shards] == ["ok"] * 6
    assert store.queued_for("node-2") == set()


def test_repair_stripe_is_none_once_the_object_is_replaced_or_deleted(
    store: MetadataStore,
) -> None:
    put(store, "a", "v1")
    put(store, "a", "v2")
    assert store.repair_stripe("v1", 0) is None
    assert store.repair_stripe("v2", 0) is not None
    assert not store.record_rebuilt("v1", 0, rebuilt(2, "node-7"), "node-2", 25, 0.0)
    store.delete_object("b", "a", 0.0)
    assert store.repair_stripe("v2", 0) is None
