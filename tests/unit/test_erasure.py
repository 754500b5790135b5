"""StripeCodec: n equal shards out, any k back to the exact stripe, data shards systematic."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.common.erasure import MAX_SHARDS, StripeCodec, check_redundancy, shard_length
from shoal.common.errors import InvalidArgument

MAX_STRIPE = 64 * 1024


@st.composite
def redundancy(draw: st.DrawFn) -> tuple[int, int]:
    n = draw(st.integers(min_value=2, max_value=20))
    k = draw(st.integers(min_value=1, max_value=n - 1))
    return k, n


def _payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@settings(max_examples=150, deadline=None)
@given(
    kn=redundancy(),
    size=st.one_of(
        st.sampled_from([0, 1, 2, 7, 1023, 4097, MAX_STRIPE - 1, MAX_STRIPE]),
        st.integers(min_value=0, max_value=MAX_STRIPE),
    ),
    seed=st.integers(min_value=0, max_value=2**32),
    data=st.data(),
)
def test_any_k_shards_decode_to_the_stripe(
    kn: tuple[int, int], size: int, seed: int, data: st.DataObject
) -> None:
    k, n = kn
    stripe = _payload(size, seed)
    codec = StripeCodec(k, n)
    shards = codec.encode(stripe)

    length = shard_length(size, k)
    assert len(shards) == n
    assert [len(s) for s in shards] == [length] * n

    # Systematic: the data shards are the zero-padded stripe, in order.
    joined = b"".join(bytes(s) for s in shards[:k])
    assert joined == stripe + bytes(k * length - size)

    subset = data.draw(st.permutations(range(n)), label="shard order")[:k]
    chosen = {i: shards[i] for i in subset}
    assert codec.decode(chosen, size) == stripe

    # Extra shards beyond k do not change the answer either.
    assert codec.decode(dict(enumerate(shards)), size) == stripe


@pytest.mark.parametrize(("k", "n"), [(1, 2), (2, 3), (3, 5), (4, 6)])
@pytest.mark.parametrize("size", [0, 1, 2, 3, 5, 10])
def test_every_k_subset_decodes_small_stripes(k: int, n: int, size: int) -> None:
    """Exhaustive over k-subsets for the edge sizes: empty, 1 byte, not divisible by k."""
    codec = StripeCodec(k, n)
    stripe = _payload(size, size)
    shards = codec.encode(stripe)
    assert [len(s) for s in shards] == [shard_length(size, k)] * n
    for subset in itertools.combinations(range(n), k):
        assert codec.decode({i: shards[i] for i in subset}, size) == stripe, subset


@pytest.mark.parametrize(
    ("size", "k", "expected"),
    [(0, 4, 0), (1, 4, 1), (4, 4, 1), (5, 4, 2), (4096, 4, 1024), (4097, 4, 1025)],
)
def test_shard_length_is_ceiling_division(size: int, k: int, expected: int) -> None:
    assert shard_length(size, k) == expected


@pytest.mark.parametrize(
    ("k", "n"),
    [(0, 4), (-1, 4), (4, 4), (5, 4), (1, 1), (4, MAX_SHARDS + 1), (300, 400)],
)
def test_check_redundancy_rejects_out_of_range(k: int, n: int) -> None:
    with pytest.raises(InvalidArgument, match=f"k={k}, n={n}"):
        check_redundancy(k, n)
    with pytest.raises(InvalidArgument):
        StripeCodec(k, n)


@pytest.mark.parametrize(("k", "n"), [(1, 2), (4, 6), (10, 14), (1, MAX_SHARDS), (255, 256)])
def test_check_redundancy_accepts_valid(k: int, n: int) -> None:
    check_redundancy(k, n)


def test_256_shards_round_trip() -> None:
    codec = StripeCodec(3, MAX_SHARDS)
    stripe = _payload(1000, 42)
    shards = codec.encode(stripe)
    assert len(shards) == MAX_SHARDS
    # Only parity shards, from the far end of the index range.
    tail = {i: shards[i] for i in (MAX_SHARDS - 1, MAX_SHARDS - 50, 100)}
    assert codec.decode(tail, len(stripe)) == stripe
    assert codec.encode_shard(stripe, MAX_SHARDS - 1) == bytes(shards[MAX_SHARDS - 1])


def test_decode_with_fewer_than_k_shards_is_rejected() -> None:
    codec = StripeCodec(4, 6)
    stripe = _payload(1000, 1)
    shards = codec.encode(stripe)
    with pytest.raises(InvalidArgument, match="need 4 shards"):
        codec.decode({0: shards[0], 4: shards[4], 5: shards[5]}, len(stripe))


def test_decode_with_wrong_length_shard_is_rejected() -> None:
    codec = StripeCodec(4, 6)
    stripe = _payload(1000, 2)
    shards = codec.encode(stripe)
    given_shards = {i: shards[i] for i in (1, 2, 3, 5)}
    given_shards[2] = bytes(shards[2])[:-1]
    with pytest.raises(InvalidArgument, match="shard 2 has 249 bytes, expected 250"):
        codec.decode(given_shards, len(stripe))


def test_decode_with_out_of_range_index_is_rejected() -> None:
    codec = StripeCodec(2, 3)
    shards = codec.encode(b"abcdef")
    with pytest.raises(InvalidArgument, match=r"outside 0\.\.2"):
        codec.decode({0: shards[0], 3: shards[1]}, 6)


def test_encode_shard_matches_encode() -> None:
    codec = StripeCodec(4, 6)
    stripe = _payload(12345, 3)
    shards = codec.encode(stripe)
    for index in range(6):
        assert codec.encode_shard(stripe, index) == bytes(shards[index])


@pytest.mark.parametrize("size", [1, 4095, 4096, 4097, 10_000])
def test_decode_blocks_are_views_cut_to_the_stripe(size: int) -> None:
    codec = StripeCodec(4, 6)
    stripe = _payload(size, size)
    shards = [bytes(s) for s in codec.encode(stripe)]
    healthy = codec.decode_blocks(dict(enumerate(shards[:4])), size)
    assert b"".join(healthy) == stripe
    assert all(any(v.obj is s for s in shards) for v in healthy)  # the data shards, not copies
    degraded = codec.decode_blocks({i: shards[i] for i in (0, 2, 4, 5)}, size)
    assert b"".join(degraded) == stripe == codec.decode({i: shards[i] for i in (1, 3, 4, 5)}, size)
    assert codec.decode_blocks(dict(enumerate(codec.encode(b""))), 0) == []
