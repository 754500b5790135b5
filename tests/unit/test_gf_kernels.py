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

# pyeclib, which brings libisal, is a dependency on x86_64/aarch64 Linux only; elsewhere, or
# when a run turns the kernels off to cover the fallback, zfec computes alone.
pytestmark = [
    pytest.mark.skipif(
        not gf_kernels.EXPECTED_ON,
        reason="pyeclib (libisal) is a dependency on x86_64/aarch64 Linux only",
    ),
    pytest.mark.skipif(
        os.environ.get(gf_kernels.DISABLE_ENV, "").strip().lower() == "zfec",
        reason="this run turned the kernels off (SHOAL_GF_KERNELS=zfec)",
    ),
]


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


def test_long_shards_are_cut_into_calls_isal_can_take(monkeypatch: pytest.MonkeyPatch) -> None:
    # ISA-L's length is a C int; shards longer than MAX_CALL_BYTES go in several calls.
    monkeypatch.setattr(gf_kernels, "MAX_CALL_BYTES", 1000)
    stripe = random.Random(3).randbytes(4 * 4099)
    fast, reference = StripeCodec(4, 6), StripeCodec(4, 6, zfec_only=True)
    shards = fast.encode(stripe)
    assert [bytes(s) for s in shards] == [bytes(s) for s in reference.encode(stripe)]
    assert fast.decode({i: shards[i] for i in (2, 3, 4, 5)}, len(stripe)) == stripe


@pytest.mark.parametrize("rows", [1, 3, 7])
def test_the_load_check_refuses_kernels_wrong_for_one_row_count(
    rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ISA-L has a routine per row count; one of them being wrong must not pass the check.
    gf = gf_kernels.kernels()
    assert gf is not None
    honest = gf_kernels.GfKernels.multiply

    def wrong_for(self: gf_kernels.GfKernels, tables: bytes, k: int, sources: list) -> list:
        out = honest(self, tables, k, sources)
        if len(out) == rows:
            out[0][-1] ^= 1
        return out

    monkeypatch.setattr(gf_kernels.GfKernels, "multiply", wrong_for)
    with pytest.raises(ValueError, match="differs"):
        gf_kernels._check_against_zfec(gf)


def test_another_librarys_pythonapi_argtypes_do_not_break_the_kernels() -> None:
    # ctypes.pythonapi is shared by the process; the kernels use function objects of their own.
    program = (
        "import ctypes\n"
        "ctypes.pythonapi.PyObject_GetBuffer.argtypes = [ctypes.c_void_p]\n"
        "ctypes.pythonapi.PyBuffer_Release.argtypes = [ctypes.c_void_p, ctypes.c_int]\n"
        "from shoal.common.erasure import StripeCodec\n"
        "codec = StripeCodec(4, 6)\n"
        "shards = codec.encode(bytes(range(256)) * 64)\n"
        "print(codec.engine, codec.decode({i: shards[i] for i in (2, 3, 4, 5)}, 16384) == "
        "bytes(range(256)) * 64)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.split() == ["isa-l", "True"]
