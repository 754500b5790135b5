"""place(): distinct, zone-spread, deterministic, minimally disruptive, capacity-weighted."""

from __future__ import annotations

import math
import random
from collections import Counter

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from shoal.common.placement import Candidate, place, rank

ZONES = ["", "z1", "z2", "z3", "z4"]


@st.composite
def candidate_lists(draw: st.DrawFn, min_size: int = 0, max_size: int = 24) -> list[Candidate]:
    numbers = draw(
        st.lists(st.integers(0, 10**6), min_size=min_size, max_size=max_size, unique=True)
    )
    ids = [f"node-{i}" for i in numbers]
    return [
        Candidate(
            node_id=node_id,
            zone=draw(st.sampled_from(ZONES)),
            free_bytes=draw(st.integers(min_value=0, max_value=2**40)),
        )
        for node_id in ids
    ]


stripe_keys = st.builds("{:032x}.{}".format, st.integers(0, 2**128 - 1), st.integers(0, 10_000))


@settings(max_examples=200)
@given(
    key=stripe_keys,
    candidates=candidate_lists(),
    count=st.integers(min_value=0, max_value=30),
    data=st.data(),
)
def test_distinct_never_excluded_and_count(
    key: str, candidates: list[Candidate], count: int, data: st.DataObject
) -> None:
    ids = [c.node_id for c in candidates]
    excluded = set(data.draw(st.lists(st.sampled_from(ids)) if ids else st.just([])))
    chosen = place(key, candidates, count, exclude=excluded)
    chosen_ids = [c.node_id for c in chosen]
    assert len(chosen_ids) == len(set(chosen_ids))
    assert not excluded & set(chosen_ids)
    assert set(chosen_ids) <= set(ids)
    assert len(chosen) == min(count, len(set(ids) - excluded))


@settings(max_examples=100)
@given(key=stripe_keys, candidates=candidate_lists(min_size=1))
def test_duplicates_by_node_id_are_ignored(key: str, candidates: list[Candidate]) -> None:
    doubled = candidates + [Candidate(c.node_id, "other-zone", 1) for c in candidates]
    chosen = place(key, doubled, len(doubled))
    assert sorted(c.node_id for c in chosen) == sorted(c.node_id for c in candidates)
    # The first occurrence wins.
    assert all(c.zone != "other-zone" for c in chosen)


@st.composite
def zoned_cluster(draw: st.DrawFn) -> tuple[list[Candidate], int]:
    """Z zones, each with at least ceil(count / Z) nodes, and a count."""
    zones = draw(st.integers(min_value=1, max_value=5))
    count = draw(st.integers(min_value=1, max_value=20))
    per_zone_min = math.ceil(count / zones)
    candidates = []
    for z in range(zones):
        size = draw(st.integers(min_value=per_zone_min, max_value=per_zone_min + 4))
        for i in range(size):
            free = draw(st.integers(min_value=1, max_value=2**40))
            candidates.append(Candidate(f"z{z}-n{i}", f"zone-{z}", free))
    return candidates, count


@settings(max_examples=200)
@given(key=stripe_keys, cluster=zoned_cluster())
def test_zone_spread_is_even(key: str, cluster: tuple[list[Candidate], int]) -> None:
    candidates, count = cluster
    zones = {c.zone for c in candidates}
    chosen = place(key, candidates, count)
    assert len(chosen) == count
    per_zone = Counter(c.zone for c in chosen)
    loads = [per_zone.get(z, 0) for z in zones]
    assert max(loads) - min(loads) <= 1, per_zone


@settings(max_examples=150)
@given(
    key=stripe_keys,
    candidates=candidate_lists(min_size=1),
    count=st.integers(min_value=1, max_value=12),
    order=st.randoms(use_true_random=False),
)
def test_deterministic_regardless_of_candidate_order(
    key: str, candidates: list[Candidate], count: int, order: random.Random
) -> None:
    first = place(key, candidates, count)
    shuffled = list(candidates)
    order.shuffle(shuffled)
    assert place(key, shuffled, count) == first
    assert place(key, candidates, count) == first
    assert rank(key, shuffled) == rank(key, candidates)


@settings(max_examples=200)
@given(
    key=stripe_keys,
    candidates=candidate_lists(min_size=2),
    count=st.integers(min_value=1, max_value=12),
    data=st.data(),
)
def test_removing_an_unchosen_node_keeps_the_placement(
    key: str, candidates: list[Candidate], count: int, data: st.DataObject
) -> None:
    chosen = place(key, candidates, count)
    chosen_ids = {c.node_id for c in chosen}
    others = [c for c in candidates if c.node_id not in chosen_ids]
    assume(others)
    gone = data.draw(st.sampled_from(others), label="removed node")
    remaining = [c for c in candidates if c.node_id != gone.node_id]
    assert place(key, remaining, count) == chosen


def test_removing_a_chosen_node_moves_only_its_shard() -> None:
    candidates = [Candidate(f"n{i}", "", 1000) for i in range(12)]
    moved = 0
    for s in range(200):
        key = f"{s:032x}.0"
        before = place(key, candidates, 6)
        gone = before[0]
        after = place(key, [c for c in candidates if c != gone], 6)
        # Without zones, the survivors keep their slots and one new node joins.
        assert set(before) - {gone} <= set(after)
        moved += len(set(after) - set(before))
    assert moved == 200


def test_capacity_weighting_prefers_emptier_nodes() -> None:
    gib = 1024**3
    big = Candidate("big", "", 4 * gib)
    smalls = [Candidate(f"small-{i}", "", gib) for i in range(4)]
    wins: Counter[str] = Counter()
    stripes = 4000
    for s in range(stripes):
        (pick,) = place(f"{s:032x}.{s % 7}", [big, *smalls], 1)
        wins[pick.node_id] += 1
    # Weighted HRW: P(big) = 4 / (4 + 4 * 1) = 0.5, each small 0.125 (expected 2000 vs 500).
    mean_small = sum(wins[c.node_id] for c in smalls) / len(smalls)
    assert wins["big"] > 2.5 * mean_small, wins
    assert 1600 < wins["big"] < 2400, wins
    assert all(wins[c.node_id] > 300 for c in smalls), wins


def test_zero_free_bytes_still_eligible() -> None:
    full = Candidate("full", "", 0)
    chosen = place("0" * 32 + ".0", [full], 1)
    assert chosen == [full]


def test_occupied_zones_steer_choices_elsewhere() -> None:
    candidates = [Candidate(f"{z}-{i}", z, 1000) for z in ("a", "b", "c") for i in range(3)]
    for s in range(100):
        key = f"{s:032x}.0"
        # Zone "a" already holds two shards of the stripe: the next two go to b and c.
        chosen = place(key, candidates, 2, occupied_zones=["a", "a"])
        assert sorted(c.zone for c in chosen) == ["b", "c"]
        # With a and b holding one each, the next shard goes to c.
        (only,) = place(key, candidates, 1, occupied_zones=["a", "b"])
        assert only.zone == "c"
        # All three zones occupied twice except c once: c first, then any zone.
        chosen = place(key, candidates, 4, occupied_zones=["a", "a", "b", "b", "c"])
        assert chosen[0].zone == "c"
        assert Counter(c.zone for c in chosen) == Counter({"a": 1, "b": 1, "c": 2})


def test_occupied_zone_used_when_no_other_zone_is_eligible() -> None:
    candidates = [Candidate(f"a-{i}", "a", 1000) for i in range(3)]
    chosen = place("f" * 32 + ".1", candidates, 2, occupied_zones=["a"] * 5, exclude=["a-0"])
    assert {c.node_id for c in chosen} == {"a-1", "a-2"}
