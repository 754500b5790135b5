"""BytesBuilder (common/bytes_builder.py): the in-place result of a large get."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.common import bytes_builder
from shoal.common.bytes_builder import HUGE_PAGE_MIN_BYTES, BytesBuilder


def build(pieces: list[bytes | bytearray | memoryview]) -> bytes:
    builder = BytesBuilder(sum(memoryview(p).nbytes for p in pieces))
    for piece in pieces:
        builder.write(piece)
    return builder.result()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=12), st.integers(min_value=0, max_value=2))
def test_result_is_the_concatenation(blobs: list[bytes], kind: int) -> None:
    pieces: list[bytes | bytearray | memoryview] = [
        (blob, bytearray(blob), memoryview(b"xx" + blob + b"yy")[2 : 2 + len(blob)])[kind]
        for blob in blobs
    ]
    result = build(pieces)
    assert type(result) is bytes
    assert result == b"".join(blobs)
    # Filled in after allocation: no hash may have been cached from the zeroed buffer, or
    # the object would misbehave as a dict key.
    assert hash(result) == hash(b"".join(blobs))


def test_large_results_are_built_in_place() -> None:
    rng = random.Random(7)
    pieces = [rng.randbytes(1 << 20) for _ in range(HUGE_PAGE_MIN_BYTES // (1 << 20) + 3)]
    builder = BytesBuilder(sum(len(p) for p in pieces) + 5)
    assert builder.in_place  # CPython, where the suite runs
    for piece in pieces:
        builder.write(memoryview(piece))
    builder.write(b"tail!")
    assert builder.result() == b"".join(pieces) + b"tail!"


def test_writing_past_the_size_is_refused() -> None:
    builder = BytesBuilder(4)
    builder.write(b"abc")
    with pytest.raises(ValueError, match="5 bytes written into a result of 4"):
        builder.write(b"de")
    builder.write(b"d")
    assert builder.result() == b"abcd"


def test_an_incomplete_result_is_refused() -> None:
    builder = BytesBuilder(10)
    builder.write(b"12345")
    with pytest.raises(ValueError, match="only 5 of 10 bytes"):
        builder.result()


def test_empty_and_negative_sizes() -> None:
    assert BytesBuilder(0).result() == b""
    with pytest.raises(ValueError, match="size must be >= 0"):
        BytesBuilder(-1)


def test_without_the_c_api_it_joins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bytes_builder, "_NEW_BYTES", None)
    builder = BytesBuilder(6)
    assert not builder.in_place
    builder.write(memoryview(b"abc"))
    builder.write(bytearray(b"def"))
    assert builder.result() == b"abcdef"
