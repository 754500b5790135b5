"""LoopReader, the coordinator's small reads on the event loop, answers exactly as the
metadata thread would, sees every commit at once, and hands big reads back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.common.errors import NotFound
from shoal.coordinator.metadata import (
    LoopReader,
    MetadataStore,
    ShardRow,
    StripeRow,
    VersionRow,
)


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[MetadataStore, LoopReader]]:
    store = MetadataStore(tmp_path / "meta.db")
    store.create_bucket("bkt", 4, 6, 5)
    reader = LoopReader(tmp_path / "meta.db")
    yield store, reader
    reader.close()
    store.close()


def put_striped(store: MetadataStore, key: str, version_id: str, stripes: int) -> None:
    store.begin_upload(VersionRow(version_id, "bkt", key, "pending", 4, 6, 5, 100, 0, "", 0, 0.0))
    rows = [
        StripeRow(
            i, 100, 25, tuple(ShardRow(j, f"node-{j}", 25, b"c" * 16, "ok") for j in range(6))
        )
        for i in range(stripes)
    ]
    store.commit(version_id, 100 * stripes, "etag", stripes, rows, 0.0)


def put_inline(store: MetadataStore, key: str, version_id: str, data: bytes) -> None:
    store.commit_inline(
        VersionRow(version_id, "bkt", key, "pending", 4, 6, 5, 100, 0, "", 0, 0.0),
        data,
        0.0,
    )


def test_small_reads_match_the_metadata_thread(stores: tuple[MetadataStore, LoopReader]) -> None:
    store, reader = stores
    put_inline(store, "tiny", "v1", b"hello")
    put_striped(store, "small", "v2", 2)
    for key, version_id in (("tiny", ""), ("small", ""), ("small", "v2")):
        assert reader.locate("bkt", key, version_id, 0, 256) == store.locate(
            "bkt", key, version_id, 0, 256
        )
    located = reader.locate("bkt", "tiny", "", 0, 256)
    assert located is not None
    assert located.inline_data == b"hello"
    assert reader.current("bkt", "small") == store.current("bkt", "small")


def test_a_commit_is_visible_at_once(stores: tuple[MetadataStore, LoopReader]) -> None:
    store, reader = stores
    with pytest.raises(NotFound):
        reader.locate("bkt", "k", "", 0, 256)
    put_inline(store, "k", "v1", b"one")
    first = reader.locate("bkt", "k", "", 0, 256)
    assert first is not None
    assert first.inline_data == b"one"
    put_inline(store, "k", "v2", b"two")
    second = reader.locate("bkt", "k", "", 0, 256)
    assert second is not None
    assert second.inline_data == b"two"
    with pytest.raises(NotFound, match="replaced or deleted"):
        reader.locate("bkt", "k", "v1", 0, 256)
    store.delete_object("bkt", "k", 0.0)
    with pytest.raises(NotFound, match="does not exist"):
        reader.current("bkt", "k")


def test_missing_bucket_is_named(stores: tuple[MetadataStore, LoopReader]) -> None:
    _store, reader = stores
    with pytest.raises(NotFound, match="bucket 'nope' does not exist"):
        reader.locate("nope", "k", "", 0, 256)


def test_big_reads_go_back_to_the_metadata_thread(
    stores: tuple[MetadataStore, LoopReader],
) -> None:
    store, reader = stores
    put_striped(store, "big", "v1", LoopReader.MAX_STRIPES + 3)
    assert reader.locate("bkt", "big", "", 0, 256) is None
    # A page of it that is small enough is read on the loop.
    tail = reader.locate("bkt", "big", "", 4, 256)
    assert tail is not None
    assert tail == store.locate("bkt", "big", "", 4, 256)
    assert [s.index for s in tail.stripes] == [4, 5, 6]


def test_reader_cannot_write(stores: tuple[MetadataStore, LoopReader]) -> None:
    _store, reader = stores
    with pytest.raises(Exception, match="readonly"):
        reader._db.execute("DELETE FROM objects")


def test_delete_objects_deletes_what_exists_in_one_go(
    stores: tuple[MetadataStore, LoopReader],
) -> None:
    store, reader = stores
    for i in range(5):
        put_inline(store, f"out/{i}", f"v{i}", b"x" * i)
    put_striped(store, "out/striped", "vs", 2)
    deleted = store.delete_objects("bkt", ["out/0", "out/2", "out/striped", "out/missing"], 0.0)
    assert deleted == 3
    assert [row.key for row in store.list_objects("bkt", "out/", "", 100)] == [
        "out/1",
        "out/3",
        "out/4",
    ]
    with pytest.raises(NotFound, match="does not exist"):
        reader.current("bkt", "out/striped")
    assert store.delete_objects("bkt", [], 0.0) == 0
