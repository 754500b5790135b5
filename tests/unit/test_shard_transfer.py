"""The shard wire format written and read without protobuf objects (common/shard_transfer.py)
must be byte-for-byte what protobuf makes of storage.proto's PutShardRequest/GetShardResponse."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.common.erasure import cut_views
from shoal.common.shard_transfer import (
    MalformedMessage,
    decode_shard_message,
    encode_shard_message,
)
from shoal.rpc.v1 import storage_pb2 as spb

SIZES = [0, 1, 127, 128, 16_383, 16_384, 300_000, 2**21 + 3]


def header(size: int) -> spb.ShardHeader:
    return spb.ShardHeader(shard_id="ab" * 16 + ".3.5", length=size, checksum=bytes(range(16)))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("with_header", [True, False], ids=["first", "later"])
def test_put_message_is_protobufs_encoding(size: int, with_header: bool) -> None:
    data = random.Random(size).randbytes(size)
    head = header(size) if with_header else None
    expected = spb.PutShardRequest(header=head, data=data).SerializeToString()
    assert encode_shard_message(head, memoryview(data)) == expected
    assert encode_shard_message(head, bytearray(data)) == expected
    parsed = spb.PutShardRequest.FromString(expected)
    assert parsed.data == data
    assert parsed.HasField("header") is with_header
    # What the node parses it into: the same header, and the data as a view of the message.
    message = decode_shard_message(expected)
    assert (message.header, bytes(message.data)) == (head, data)
    # The same bytes are a GetShardResponse, which the node sends with this encoder.
    assert spb.GetShardResponse(header=head, data=data).SerializeToString() == expected


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("with_header", [True, False], ids=["first", "later"])
def test_get_message_is_parsed_without_copying(size: int, with_header: bool) -> None:
    data = random.Random(size).randbytes(size)
    head = header(size) if with_header else None
    raw = spb.GetShardResponse(header=head, data=data).SerializeToString()
    message = decode_shard_message(raw)
    assert message.data == data
    assert message.data.obj is raw  # a view into the received bytes
    assert message.header == head


@settings(max_examples=100, deadline=None)
@given(
    data=st.binary(max_size=3000),
    shard_id=st.text(max_size=40),
    length=st.integers(min_value=0, max_value=2**64 - 1),
)
def test_get_message_round_trips_any_header(data: bytes, shard_id: str, length: int) -> None:
    head = spb.ShardHeader(shard_id=shard_id, length=length, checksum=b"\x01" * 16)
    message = decode_shard_message(spb.GetShardResponse(header=head, data=data).SerializeToString())
    assert (message.header, bytes(message.data)) == (head, data)


def test_get_message_skips_unknown_fields() -> None:
    # field 3 varint 150, field 4 fixed64, field 5 fixed32, field 6 bytes, then data (field 2)
    unknown = b"\x18\x96\x01" + b"\x21" + bytes(8) + b"\x2d" + bytes(4) + b"\x32\x02hi"
    raw = unknown + spb.GetShardResponse(data=b"payload").SerializeToString()
    message = decode_shard_message(raw)
    assert (message.header, bytes(message.data)) == (None, b"payload")


@pytest.mark.parametrize(
    "raw",
    [
        b"\x12\x05abc",  # data longer than the message
        b"\x12",  # length missing
        b"\x12\xff",  # truncated varint
        b"\x0b",  # wire type 3 (groups) is not used by storage.proto
        b"\x21\x00",  # fixed64 cut short
        b"\x0a\x02\xff\xff",  # a header that is not a ShardHeader (protobuf's DecodeError)
    ],
)
def test_malformed_messages_raise(raw: bytes) -> None:
    with pytest.raises(
        MalformedMessage, match=r"varint|past the end|wire type|inside a field|header"
    ):
        decode_shard_message(raw)


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=50), max_size=6),
    start=st.integers(min_value=0, max_value=320),
    span=st.integers(min_value=0, max_value=320),
)
def test_cut_views_is_a_slice_of_the_concatenation(sizes: list[int], start: int, span: int) -> None:
    rng = random.Random(sum(sizes) + start)
    blocks = [rng.randbytes(size) for size in sizes]
    views = [memoryview(b) for b in blocks]
    cut = cut_views(views, start, start + span)
    assert b"".join(cut) == b"".join(blocks)[start : start + span]
    assert all(len(v) for v in cut)
    assert all(any(v.obj is b for b in blocks) for v in cut)  # views, not copies
