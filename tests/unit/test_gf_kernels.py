"""ISA-L's kernels compute zfec's code: the same shards byte for byte, the same stripes back."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest
import zfec
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.common import gf_kernels
from shoal.common.erasure import StripeCodec

# pyeclib, which brings libisal, is a dependency on Linux only; elsewhere zfec computes alone.
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="ISA-L comes with Linux only")


def test_kernels_load_where_pyeclib_is_a_dependency() -> None:
    assert gf_kernels.kernels() is not None
    assert StripeCodec(4, 6).engine == "isa-l"


@st.composite
def redundancy(draw: st.DrawFn) -> tuple[int, int]:
    n = draw(st.integers(min_value=2, max_value=24))
    k = draw(st.integers(min_value=1, max_value=n - 1))
    return k, n


@settings(max_examples=150, deadline=None)
@given(
    kn=redundancy(),
    size=st.integers(min_value=1, max_value=40_000),
    seed=st.integers(min_value=0, max_value=2**32),
    data=st.data(),
)
def test_kernels_encode_and_decode_exactly_as_zfec(
    kn: tuple[int, int], size: int, seed: int, data: st.DataObject
) -> None:
    k, n = kn
    stripe = random.Random(seed).randbytes(size)
    fast, reference = StripeCodec(k, n), StripeCodec(k, n, zfec_only=True)
    assert (fast.engine, reference.engine) == ("isa-l", "zfec")

    shards = fast.encode(stripe)
    assert [bytes(s) for s in shards] == [bytes(s) for s in reference.encode(stripe)]

    kept = sorted(data.draw(st.permutations(range(n)), label="shard order")[:k])
    chosen = {i: shards[i] for i in kept}
    assert fast.decode(chosen, size) == stripe
    # zfec's own decoder reads what the kernels wrote (and the other way round above).
    assert reference.decode(chosen, size) == stripe


def test_parity_rows_are_zfecs_generator_matrix() -> None:
    k, n = 3, 7
    rows = gf_kernels.parity_rows(k, n)
    blocks = [random.Random(i).randbytes(1) for i in range(k)]
    parity = zfec.Encoder(k, n).encode(blocks, list(range(k, n)))
    gf = gf_kernels.kernels()
    assert gf is not None
    by_rows = gf.multiply(gf.tables(rows, k), k, blocks)
    assert [bytes(b) for b in by_rows] == [bytes(p) for p in parity]
    assert len(rows) == (n - k) * k


def test_the_kernels_take_read_only_views_and_leave_them_untouched() -> None:
    codec = StripeCodec(4, 6)
    source = bytes(random.Random(7).randbytes(4 * 1024 + 1))
    copy = bytes(source)
    shards = codec.encode(memoryview(source)[1:])
    assert source == copy
    assert b"".join(bytes(s) for s in shards[:4])[: len(source) - 1] == source[1:]


def test_singular_matrix_is_reported_not_inverted() -> None:
    gf = gf_kernels.kernels()
    assert gf is not None
    assert gf.invert(bytes([1, 2, 2, 4]), 2) is None  # row 2 = 2 * row 1
    assert gf.invert(bytes([1, 0, 0, 1]), 2) == bytes([1, 0, 0, 1])
    with pytest.raises(ValueError, match="not a 2 x 2 matrix"):
        gf.invert(bytes(3), 2)


def test_mismatched_sources_are_refused() -> None:
    gf = gf_kernels.kernels()
    assert gf is not None
    tables = gf.tables(gf_kernels.parity_rows(2, 3), 2)
    with pytest.raises(ValueError, match="differ in length"):
        gf.multiply(tables, 2, [b"ab", b"abc"])
    with pytest.raises(ValueError, match="1 sources"):
        gf.multiply(tables, 2, [b"ab"])


def test_environment_turns_the_kernels_off() -> None:
    program = "from shoal.common.erasure import StripeCodec; print(StripeCodec(4, 6).engine)"

    def engine(**env: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", program],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return done.stdout.strip()

    assert engine(SHOAL_GF_KERNELS="zfec") == "zfec"
    assert engine(SHOAL_GF_KERNELS="") == "isa-l"
