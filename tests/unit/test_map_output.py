"""Map outputs and internal reducer outputs are stored compressed, and earlier versions'
plain pickles still read."""

from __future__ import annotations

import pickle

from shoal.common.jobspec import pack_intermediate, unpack_intermediate
from shoal.worker.child import pack_map_output, unpack_map_output


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
