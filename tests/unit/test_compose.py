"""ComposeObject planning and the metadata columns added for it (and their migration)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from shoal.common.errors import InvalidArgument
from shoal.common.names import check_metadata
from shoal.coordinator import compose
from shoal.coordinator.metadata import MetadataStore, ShardRow, StripeRow, VersionRow


def _version(vid: str, size: int, stripe: int = 100, k: int = 2, n: int = 3) -> VersionRow:
    count = -(-size // stripe)
    return VersionRow(vid, "b", vid, "committed", k, n, k + 1, stripe, size, "e" + vid, count, 0.0)


def _stripes(version: VersionRow) -> list[StripeRow]:
    rows = []
    for i in range(version.stripe_count):
        size = min(version.stripe_bytes, version.size - i * version.stripe_bytes)
        shards = tuple(ShardRow(j, f"node-{j}", 50, b"c" * 16, "ok") for j in range(version.n))
        rows.append(StripeRow(i, size, 50, shards))
    return rows


def _sources(*versions: VersionRow) -> list[tuple[VersionRow, list[StripeRow]]]:
    return [(v, _stripes(v)) for v in versions]


def test_plan_renumbers_stripes_and_links_every_shard() -> None:
    planned = compose.plan("t" * 32, _sources(_version("a", 300), _version("b", 150)), 100)
    assert (planned.k, planned.n, planned.stripe_bytes, planned.size) == (2, 3, 100, 450)
    assert planned.stripes == [(100, 50)] * 4 + [(50, 50)]
    assert len(planned.links) == 5 * 3
    first = planned.links[9]
    assert (first.source_id, first.target_id) == ("b.0.0", f"{'t' * 32}.3.0")
    rows = compose.linked_stripes(planned, {(x.node_id, x.target_id) for x in planned.links[3:]})
    assert [len(r.shards) for r in rows] == [0, 3, 3, 3, 3]


@pytest.mark.parametrize(
    ("sources", "problem"),
    [
        ((_version("a", 250), _version("b", 100)), "whole number"),
        ((_version("a", 200), _version("b", 100, stripe=50)), "stripe size"),
        ((_version("a", 200), _version("b", 100, k=3, n=4)), "redundancy"),
    ],
)
def test_layouts_that_do_not_compose(sources: tuple[VersionRow, ...], problem: str) -> None:
    with pytest.raises(InvalidArgument, match=problem):
        compose.plan("t" * 32, _sources(*sources), 100)


def test_empty_sources_compose_anywhere() -> None:
    planned = compose.plan("t" * 32, _sources(_version("a", 0), _version("b", 250)), 100)
    assert planned.size == 250
    assert compose.compose_etag(["x", "y"]).endswith("-2")


def test_metadata_limits() -> None:
    assert check_metadata({"a": "b"}) == {"a": "b"}
    for bad in ({"": "x"}, {"k": "v" * 9000}, {"a": 1}, {"k" * 300: "v"}):
        with pytest.raises(InvalidArgument):
            check_metadata(bad)


def test_database_without_owner_and_metadata_columns_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    store = MetadataStore(path)
    store.create_bucket("old-bucket", 2, 3, 3)
    store.begin_upload(VersionRow("v1", "old-bucket", "k", "pending", 2, 3, 3, 100, 0, "", 0, 0.0))
    store.commit("v1", 0, "e", 0, [], 0.0)
    store.close()
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(
        "ALTER TABLE buckets DROP COLUMN owner; ALTER TABLE versions DROP COLUMN metadata;"
    )
    db.close()
    reopened = MetadataStore(path)
    assert reopened.bucket("old-bucket").owner == ""
    assert reopened.current("old-bucket", "k").metadata_dict() == {}
    reopened.create_bucket("new-bucket", 2, 3, 3, owner="alice")
    assert reopened.bucket("new-bucket").owner == "alice"
