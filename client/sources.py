"""Turn what `put` accepts (bytes, a path, a binary file, an iterable of bytes) into stripes.

Stripes are produced one at a time, so memory stays bounded by the stripe size whatever the
source's size. Blocking reads (files) run in a thread.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from pathlib import Path
from typing import Any, BinaryIO

from shoal.common.errors import InvalidArgument

PutData = (
    bytes
    | bytearray
    | memoryview
    | str
    | os.PathLike[str]
    | BinaryIO
    | Iterable[bytes]
    | AsyncIterable[bytes]
)


def describe_invalid(data: Any) -> InvalidArgument:
    return InvalidArgument(
        f"cannot put a {type(data).__name__}: data must be bytes, a path, a binary file object "
        "or an iterable of bytes"
    )


class StripeSource:
    """An opened put source yielding stripes of exactly `stripe_bytes` (the last may be short)."""

    def __init__(self, data: PutData) -> None:
        self._data = data
        self._file: BinaryIO | None = None
        self._owns_file = False
        if isinstance(data, (bytes, bytearray, memoryview)):
            return
        if isinstance(data, (str, os.PathLike)):
            path = Path(data)
            if not path.is_file():
                raise InvalidArgument(f"cannot put {str(path)!r}: no such file")
            self._file = path.open("rb")
            self._owns_file = True
            return
        if hasattr(data, "read"):
            self._file = data  # type: ignore[assignment]
            return
        if isinstance(data, (Iterable, AsyncIterable)):
            return
        raise describe_invalid(data)

    def close(self) -> None:
        if self._owns_file and self._file is not None:
            self._file.close()

    async def stripes(self, stripe_bytes: int) -> AsyncIterator[memoryview]:
        """Yield the source's bytes cut into stripes."""
        data = self._data
        if isinstance(data, (bytes, bytearray, memoryview)):
            view = memoryview(data).cast("B")
            for start in range(0, len(view), stripe_bytes):
                yield view[start : start + stripe_bytes]
            return
        if self._file is not None:
            handle = self._file
            while True:
                block = await asyncio.to_thread(_read_exactly, handle, stripe_bytes)
                if not block:
                    return
                yield memoryview(block)
                if len(block) < stripe_bytes:
                    return
        buffer = bytearray()
        async for piece in _pieces(data):
            if not isinstance(piece, (bytes, bytearray, memoryview)):
                raise InvalidArgument(f"iterable yielded a {type(piece).__name__}, expected bytes")
            if not buffer and len(piece) == stripe_bytes and isinstance(piece, bytes):
                yield memoryview(piece)  # a piece that is exactly one stripe: no copy
                continue
            buffer += piece
            while len(buffer) >= stripe_bytes:
                with memoryview(buffer) as view:
                    stripe = bytes(view[:stripe_bytes])  # one copy (slicing would add one)
                yield memoryview(stripe)
                del buffer[:stripe_bytes]
        if buffer:
            yield memoryview(bytes(buffer))


def _read_exactly(handle: BinaryIO, size: int) -> bytes:
    parts = []
    remaining = size
    while remaining:
        block = handle.read(remaining)
        if not block:
            break
        if not isinstance(block, (bytes, bytearray)):
            raise InvalidArgument("file object must be opened in binary mode")
        parts.append(block)
        remaining -= len(block)
    return parts[0] if len(parts) == 1 else b"".join(parts)


async def _pieces(data: Any) -> AsyncIterator[Any]:
    if isinstance(data, AsyncIterable):
        async for piece in data:
            yield piece
        return
    iterator = iter(data)
    sentinel = object()
    while True:
        piece = await asyncio.to_thread(next, iterator, sentinel)
        if piece is sentinel:
            return
        yield piece
