"""SIMD kernels for zfec's code: ISA-L's GF(2^8) matrix routines, through ctypes.

zfec computes parity one byte at a time (`_addmul1`: about 0.8 GB/s a thread here); Intel's
ISA-L computes the same products with SSE/AVX2/AVX-512 table lookups (a 4 MiB stripe at
(4, 6) encodes at about 14 GB/s through `StripeCodec` here, 17x zfec). Both work in GF(2^8)
over the polynomial 0x11d, so ISA-L multiplying by *zfec's* generator matrix yields zfec's
shards byte for byte: the stored format, the decoder of record and every shard written before
stay zfec's. `common.erasure` takes the matrix from zfec and uses these kernels for the
arithmetic when they load, zfec's own when they do not.

ISA-L comes as the `libisal` that pyeclib's x86_64 and aarch64 Linux wheels bundle (pyeclib is
OpenStack Swift's erasure-code binding; its own API cannot take an arbitrary matrix, so the
library is called directly), or else a system `libisal` (Debian's libisal2). Three functions
are used, with the signatures of ISA-L's `erasure_code.h`: `ec_init_tables`, `ec_encode_data`
and `gf_invert_matrix`. Loading checks the library against zfec first, encoding and decoding
with 1 to 7 rows (ISA-L has a routine per row count) at a short and a long length; any
mismatch or missing piece leaves the kernels unloaded, and `SHOAL_GF_KERNELS=zfec` turns them
off. ctypes releases the GIL during the foreign calls, as zfec does, so callers still run them
in threads.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import importlib.metadata
import logging
import os
import platform
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import zfec

from shoal.common.checksum import Buffer

log = logging.getLogger(__name__)

DISABLE_ENV = "SHOAL_GF_KERNELS"
# ISA-L's `len` argument is a C int.
MAX_CALL_BYTES = 1 << 30


class _PyBuffer(ctypes.Structure):
    """CPython's Py_buffer (the buffer protocol), to get the address of a read-only buffer:
    ctypes' `from_buffer` takes writable ones only."""

    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    ]


_PYBUF_SIMPLE = 0  # contiguous bytes, read-only allowed
_PYBUF_WRITABLE = 1


@functools.cache
def _buffer_api() -> tuple[Callable[..., int], Callable[..., None]]:
    """PyObject_GetBuffer and PyBuffer_Release as function objects of our own (not the shared
    `ctypes.pythonapi` attributes, whose argtypes any other library may set)."""
    get = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int)
    release = ctypes.PYFUNCTYPE(None, ctypes.POINTER(_PyBuffer))
    return (
        get(("PyObject_GetBuffer", ctypes.pythonapi)),
        release(("PyBuffer_Release", ctypes.pythonapi)),
    )


@contextlib.contextmanager
def _addresses(buffers: Sequence[Buffer], *, writable: bool) -> Iterator[list[int]]:
    """The start addresses of contiguous `buffers`, held (exported) for the block."""
    get_buffer, release_buffer = _buffer_api()
    held: list[_PyBuffer] = []
    try:
        for buffer in buffers:
            view = _PyBuffer()
            flags = _PYBUF_WRITABLE if writable else _PYBUF_SIMPLE
            get_buffer(buffer, ctypes.byref(view), flags)  # raises BufferError if unfit
            held.append(view)
        yield [int(view.buf or 0) for view in held]
    finally:
        for view in held:
            release_buffer(ctypes.byref(view))


class GfKernels:
    """ISA-L's matrix routines over GF(2^8)."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self._init_tables = library.ec_init_tables
        self._init_tables.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p]
        self._init_tables.restype = None
        self._encode = library.ec_encode_data
        self._encode.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self._encode.restype = None
        self._invert = library.gf_invert_matrix
        self._invert.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
        self._invert.restype = ctypes.c_int

    def tables(self, rows: bytes, k: int) -> bytes:
        """ISA-L's expanded tables for multiplying by `rows` (a row-major (len/k) x k matrix)."""
        count, rest = divmod(len(rows), k)
        if rest or count < 1:
            raise ValueError(f"{len(rows)} matrix bytes are not whole rows of {k}")
        out = ctypes.create_string_buffer(32 * k * count)
        self._init_tables(k, count, rows, out)
        return out.raw

    def multiply(self, tables: bytes, k: int, sources: Sequence[Buffer]) -> list[bytearray]:
        """The products of the matrix behind `tables` with the `k` equal-length `sources`, one
        new buffer per matrix row."""
        if len(sources) != k:
            raise ValueError(f"{len(sources)} sources for a matrix of {k} columns")
        count = len(tables) // (32 * k)
        length = memoryview(sources[0]).nbytes
        if any(memoryview(s).nbytes != length for s in sources):
            raise ValueError("sources differ in length")
        outputs = [bytearray(length) for _ in range(count)]
        with (
            _addresses(sources, writable=False) as source_at,
            _addresses(outputs, writable=True) as output_at,
        ):
            source_ptrs = (ctypes.c_void_p * k)()
            output_ptrs = (ctypes.c_void_p * count)()
            for done in range(0, length, MAX_CALL_BYTES):
                size = min(MAX_CALL_BYTES, length - done)
                source_ptrs[:] = [address + done for address in source_at]
                output_ptrs[:] = [address + done for address in output_at]
                self._encode(size, k, count, tables, source_ptrs, output_ptrs)
        return outputs

    def invert(self, matrix: bytes, k: int) -> bytes | None:
        """The inverse of the k x k `matrix` over GF(2^8), None when it is singular."""
        if len(matrix) != k * k:
            raise ValueError(f"{len(matrix)} bytes is not a {k} x {k} matrix")
        scratch = ctypes.create_string_buffer(matrix, k * k)  # ISA-L overwrites its input
        out = ctypes.create_string_buffer(k * k)
        if self._invert(scratch, out, k) != 0:
            return None
        return out.raw


@functools.cache
def parity_rows(k: int, n: int) -> bytes:
    """zfec's generator rows for parity shards `k..n-1`, row-major ((n - k) x k).

    zfec's matrix is systematic (rows 0..k-1 are the identity), so encoding the k unit vectors
    side by side (block j holds a 1 at byte j) spells out column j of every parity row."""
    units = [bytes(1 if byte == j else 0 for byte in range(k)) for j in range(k)]
    parity = zfec.Encoder(k, n).encode(units, list(range(k, n)))
    return b"".join(bytes(block) for block in parity)


# Where pyproject.toml makes pyeclib (hence libisal) a dependency.
EXPECTED_ON = sys.platform == "linux" and platform.machine() in ("x86_64", "aarch64")


@functools.cache
def kernels() -> GfKernels | None:
    """The kernels when ISA-L loads and agrees with zfec; None otherwise (zfec does all)."""
    setting = os.environ.get(DISABLE_ENV, "").strip().lower()
    if setting == "zfec":
        log.info("GF kernels turned off by %s; zfec computes the codes", DISABLE_ENV)
        return None
    if setting:
        log.warning("%s=%r is not a setting (only 'zfec' is); ignored", DISABLE_ENV, setting)
    found = _bundled_isal() or ctypes.util.find_library("isal")
    if found is None:
        log.log(
            logging.WARNING if EXPECTED_ON else logging.INFO,
            "no ISA-L library found (pyeclib not installed); zfec computes the codes, ~17x slower",
        )
        return None
    try:
        loaded = GfKernels(ctypes.CDLL(str(found)))
        _check_against_zfec(loaded)
    except Exception as exc:  # any failure means: compute with zfec instead
        log.warning("ISA-L at %s is unusable (%s); zfec computes the codes", found, exc)
        return None
    return loaded


def _bundled_isal() -> Path | None:
    """The libisal shipped inside pyeclib's wheel (in `pyeclib.libs/`), if installed."""
    try:
        distribution = importlib.metadata.distribution("pyeclib")
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in distribution.files or ():
        if file.name.startswith("libisal") and ".so" in file.name:
            located = Path(str(distribution.locate_file(file)))
            if located.is_file():
                return located
    return None


# (k, n) whose parity covers 1 to 7 rows: ISA-L has a routine per row count up to 6 and loops
# beyond, each in SSE/AVX2/AVX-512/GFNI flavours chosen by the CPU.
SELF_CHECK_CODES = ((1, 2), (4, 5), (4, 6), (3, 6), (4, 8), (5, 10), (6, 12), (8, 15))


def _check_against_zfec(candidate: GfKernels) -> None:
    """Raise ValueError unless `candidate` encodes, and decodes the data blocks from the
    parity shards (the most losses a code takes), exactly as zfec does."""
    rng = random.Random(0x5A0A1)
    for k, n in SELF_CHECK_CODES:
        for length in (29, 4099):  # shorter than one SIMD vector, and many vectors plus a tail
            blocks = [rng.randbytes(length) for _ in range(k)]
            expected = zfec.Encoder(k, n).encode(blocks, list(range(k, n)))
            got = candidate.multiply(candidate.tables(parity_rows(k, n), k), k, blocks)
            if [bytes(b) for b in got] != [bytes(b) for b in expected]:
                raise ValueError(f"parity differs from zfec's at ({k}, {n}), {length} bytes")
            lost = min(n - k, k)  # data blocks 0..lost-1 rebuilt from the first parity shards
            chosen = list(range(lost, k)) + list(range(k, k + lost))
            inverse = candidate.invert(generator_rows(k, n, chosen), k)
            if inverse is None:
                raise ValueError(f"gf_invert_matrix found ({k}, {n}) singular")
            sources = [blocks[i] for i in range(lost, k)] + [bytes(p) for p in got[:lost]]
            rebuilt = candidate.multiply(candidate.tables(inverse[: lost * k], k), k, sources)
            if [bytes(b) for b in rebuilt] != blocks[:lost]:
                raise ValueError(f"decoding differs from the data at ({k}, {n}), {length} bytes")
    if candidate.invert(bytes(9), 3) is not None:
        raise ValueError("gf_invert_matrix inverted the zero matrix")


def generator_rows(k: int, n: int, shards: Sequence[int]) -> bytes:
    """zfec's generator rows (row-major, k bytes each) of the given shard indices."""
    parity = parity_rows(k, n)
    return b"".join(
        bytes(1 if column == i else 0 for column in range(k))
        if i < k
        else parity[(i - k) * k : (i - k + 1) * k]
        for i in shards
    )
