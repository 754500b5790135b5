"""Build a large `bytes` object of known size piece by piece, copying each piece once, in place.

`b"".join(pieces)` needs every piece alive until the end (a 64 MiB get held 64 MiB of received
messages, then allocated and page-faulted 64 MiB more, copying it all in one go from memory long
out of cache). `BytesBuilder` allocates the result up front and copies each piece into it as it
arrives, so the pieces can be freed at once and are copied while still in cache.

How: on CPython, `PyBytes_FromStringAndSize(NULL, size)` returns a new, uninitialised bytes
object that the C API lets its creator fill before anyone else sees it; a writable memoryview
over its buffer does the copies. For a large result the buffer is also advised to use
transparent huge pages (`madvise(MADV_HUGEPAGE)`, when the kernel offers them on request): one
fault per 2 MiB instead of 512. The object is handed out only by `result()`, once every byte was
written; until then nothing else holds it. Elsewhere (another Python implementation, or no
`ctypes.pythonapi`) the builder collects the pieces and joins them.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

from shoal.common.checksum import Buffer

# Results at least this large are advised to use huge pages.
HUGE_PAGE_MIN_BYTES = 8 * 1024 * 1024
_HUGE_PAGE = 2 * 1024 * 1024
_MADV_HUGEPAGE = 14  # <sys/mman.h> on Linux


def _new_bytes_function() -> Any:
    if sys.implementation.name != "cpython":
        return None
    try:
        function = ctypes.pythonapi.PyBytes_FromStringAndSize
    except AttributeError:
        return None
    function.restype = ctypes.py_object
    function.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]
    return function


def _madvise_function() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    function.restype = ctypes.c_int
    function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return function


_NEW_BYTES = _new_bytes_function()
_MADVISE = _madvise_function()
# Where a bytes object's data starts, from the object's address (CPython's PyBytesObject:
# the header, then ob_sval, whose one declared byte is the terminating NUL).
_DATA_OFFSET = bytes.__basicsize__ - 1


def _advise_huge_pages(address: int, size: int) -> None:
    start = -(-address // _HUGE_PAGE) * _HUGE_PAGE
    end = (address + size) // _HUGE_PAGE * _HUGE_PAGE
    if _MADVISE is not None and end > start:
        # Best effort: without huge pages (THP off, or another kernel) it is only slower.
        _MADVISE(start, end - start, _MADV_HUGEPAGE)


class BytesBuilder:
    """A `bytes` of exactly `size` bytes, written in order with `write`, taken with `result`."""

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        self.size = size
        self.written = 0
        self._result: bytes | None = None
        self._view: memoryview | None = None
        self._pieces: list[bytes] = []
        if _NEW_BYTES is not None and size > 0:
            result = _NEW_BYTES(None, size)
            address = id(result) + _DATA_OFFSET
            self._view = memoryview((ctypes.c_char * size).from_address(address)).cast("B")
            self._result = result
            if size >= HUGE_PAGE_MIN_BYTES:
                _advise_huge_pages(address, size)

    @property
    def in_place(self) -> bool:
        """True when pieces are copied straight into the result (CPython)."""
        return self._view is not None

    def write(self, piece: Buffer) -> None:
        """Append `piece`; ValueError if it would run past `size`."""
        view = memoryview(piece).cast("B")
        length = view.nbytes
        if self.written + length > self.size:
            raise ValueError(
                f"{self.written + length} bytes written into a result of {self.size} bytes"
            )
        if self._view is not None:
            self._view[self.written : self.written + length] = view
        else:
            self._pieces.append(bytes(piece))
        self.written += length

    def result(self) -> bytes:
        """The bytes, once all `size` were written (ValueError otherwise). Call it once."""
        if self.written != self.size:
            raise ValueError(f"only {self.written} of {self.size} bytes were written")
        if self._view is None:
            return b"".join(self._pieces)
        result, self._result = self._result, None
        self._view.release()
        self._view = None
        assert result is not None
        return result
