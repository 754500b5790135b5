"""Map outputs and internal reducer outputs are stored compressed, and earlier versions'
plain pickles still read; a map task's pairs are grouped by the stable partition of their
keys."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.common.jobspec import pack_intermediate, partition_of, unpack_intermediate
from shoal.worker import child
from shoal.worker.child import UserCodeError, _group, pack_map_output, unpack_map_output


def test_round_trip_and_compression() -> None:
    group = {f"word{i % 500}": [i, i + 1] for i in range(5000)}
    blob = pack_map_output(group)
    assert unpack_map_output(blob) == group
    assert len(blob) < len(pickle.dumps(group, protocol=pickle.HIGHEST_PROTOCOL)) / 2


def test_plain_pickles_of_earlier_versions_still_read() -> None:
    group = {"a": [1], ("tuple", 2): [3.5, None]}
    assert unpack_map_output(pickle.dumps(group, protocol=pickle.HIGHEST_PROTOCOL)) == group
    assert unpack_map_output(pickle.dumps(group, protocol=2)) == group


def test_empty_partition() -> None:
    assert unpack_map_output(pack_map_output({})) == {}


def test_reducer_outputs_round_trip_and_old_ones_still_read() -> None:
    results = [(f"word{i}", i) for i in range(1250)]
    blob = pack_intermediate(results)
    assert unpack_intermediate(blob) == results
    assert len(blob) < 16 * 1024, "a word count's reducer output should fit the inline limit"
    assert unpack_intermediate(pickle.dumps(results, protocol=pickle.HIGHEST_PROTOCOL)) == results


# Grouping a map task's pairs by reduce partition (worker/child.py `_group`) ------------------


class Word(str):
    """A str subclass: grouped like the equal str, never memoized."""


KEYS = st.one_of(
    st.text(max_size=8),
    st.text(min_size=65, max_size=70),  # too long to memoize
    st.text(max_size=3).map(Word),
    st.integers(-5, 5),
    st.booleans(),
    st.sampled_from([0.0, 1.0, -1.5]),  # equal to 0, 1 and False/True as dict keys
    st.binary(max_size=4),
    st.tuples(st.text(max_size=3), st.integers(0, 3)),
)


def _reference(pairs: list[tuple[Any, int]], partitions: int) -> list[dict[Any, list[int]]]:
    """What `_group` must return without a combiner, computed the obvious way."""
    groups: list[dict[Any, list[int]]] = [{} for _ in range(partitions)]
    for key, value in pairs:
        groups[partition_of(key, partitions)].setdefault(key, []).append(value)
    return groups


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(KEYS, st.integers()), max_size=60), st.integers(1, 7))
def test_grouping_matches_the_partition_of_every_key(
    pairs: list[tuple[Any, int]], partitions: int
) -> None:
    expected = _reference(pairs, partitions)
    # Twice: the second call finds the string keys' partitions memoized.
    assert _group(pairs, partitions, None) == expected
    assert _group(pairs, partitions, None) == expected
    combined = _group(pairs, partitions, lambda key, values: sum(values))
    assert combined == [{k: [sum(v)] for k, v in group.items()} for group in expected]


def test_the_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(child, "MAX_MEMO_KEYS", 10)
    monkeypatch.setattr(child, "_partition_memo", {})
    words = [(f"w{i}", 1) for i in range(25)]
    assert _group(words, 3, None) == _reference(words, 3)
    assert len(child._partition_memo[3]) <= 10
    assert _group(words, 3, None) == _reference(words, 3)


def test_bad_pairs_and_a_failing_combiner_are_the_users_errors() -> None:
    with pytest.raises(UserCodeError, match="ValueError"):
        _group([("a", 1), ("not a pair",)], 2, None)  # type: ignore[list-item]
    with pytest.raises(UserCodeError, match="TypeError"):
        _group([(["unhashable"], 1)], 2, None)

    def refuse(key: str, values: list[int]) -> int:
        raise RuntimeError(f"no combining {key}")

    with pytest.raises(UserCodeError, match="no combining a"):
        _group([("a", 1), ("a", 2)], 2, refuse)
