"""The erasure codec: one stripe in, `n` shards out; any `k` shards back to the stripe.

A stripe of `size` bytes is cut into `k` data blocks of `shard_length = ceil(size / k)` bytes
(the last one zero-padded), and `n - k` parity blocks are added with zfec's code. zfec is
systematic: shards `0..k-1` *are* the data blocks, so a read that gets all of them joins them
and never decodes. The padded length is undone with the stripe size kept in the manifest.
`decode_blocks` hands the stripe back as views of the blocks (no copy: callers join them into
their own buffer once); `decode` joins them.

The arithmetic is ISA-L's SIMD kernels multiplying by zfec's generator matrix when they load
(`common.gf_kernels`: the same shards byte for byte, about 17x faster), zfec's own `Encoder` and
`Decoder` otherwise. Both release the GIL, so callers run `encode`/`decode` in a thread.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import zfec

from shoal.common.errors import InvalidArgument
from shoal.common.gf_kernels import GfKernels, generator_rows, kernels, parity_rows

MAX_SHARDS = 256


def check_redundancy(k: int, n: int) -> None:
    """Raise InvalidArgument unless 1 <= k < n <= 256."""
    if not (1 <= k < n <= MAX_SHARDS):
        raise InvalidArgument(f"invalid redundancy k={k}, n={n}: need 1 <= k < n <= {MAX_SHARDS}")


def shard_length(stripe_size: int, k: int) -> int:
    """Bytes in each shard of a stripe of `stripe_size` bytes."""
    return -(-stripe_size // k)


def cut_views(views: Sequence[memoryview], start: int, end: int) -> list[memoryview]:
    """Bytes `start..end` of the concatenation of `views`, as views (nothing is copied)."""
    out = []
    position = 0
    for view in views:
        lo, hi = max(start - position, 0), min(end - position, len(view))
        if lo < hi:
            out.append(view if (lo, hi) == (0, len(view)) else view[lo:hi])
        position += len(view)
        if position >= end:
            break
    return out


class StripeCodec:
    """Encode stripes into `n` shards and decode them back from any `k`."""

    def __init__(self, k: int, n: int, *, zfec_only: bool = False) -> None:
        """`zfec_only` computes with zfec even where ISA-L's kernels loaded (for comparisons)."""
        check_redundancy(k, n)
        self.k = k
        self.n = n
        self._encoder = zfec.Encoder(k, n)
        self._decoder = zfec.Decoder(k, n)
        self._kernels = None if zfec_only else kernels()
        self._parity_tables = (
            self._kernels.tables(parity_rows(k, n), k) if self._kernels is not None else b""
        )

    @property
    def engine(self) -> str:
        """Which code computes the parity and decodes: "isa-l" or "zfec"."""
        return "zfec" if self._kernels is None else "isa-l"

    def encode(self, stripe: bytes | memoryview) -> list[bytes | memoryview]:
        """Return the `n` shards of `stripe`: data shards are zero-copy views where possible,
        parity shards new buffers (`bytes` from zfec, writable memoryviews from the kernels)."""
        view = memoryview(stripe).cast("B")
        size = len(view)
        if size == 0:
            return [b""] * self.n
        length = shard_length(size, self.k)
        blocks: list[bytes | memoryview] = []
        for i in range(self.k):
            block = view[i * length : (i + 1) * length]
            if len(block) < length:
                padded = bytearray(length)  # zero-filled; one copy of the short block
                padded[: len(block)] = block
                blocks.append(memoryview(padded))
            else:
                blocks.append(block)
        parity: Sequence[bytes | bytearray]
        if self._kernels is None:
            parity = self._encoder.encode(tuple(blocks), tuple(range(self.k, self.n)))
        else:
            parity = self._kernels.multiply(self._parity_tables, self.k, blocks)
        return [*blocks, *(memoryview(p) if isinstance(p, bytearray) else p for p in parity)]

    def decode(self, shards: Mapping[int, bytes | memoryview], stripe_size: int) -> bytes:
        """Rebuild the stripe from at least `k` shards keyed by shard index."""
        return b"".join(self.decode_blocks(shards, stripe_size))

    def decode_blocks(
        self, shards: Mapping[int, bytes | memoryview], stripe_size: int
    ) -> list[memoryview]:
        """The stripe rebuilt from at least `k` shards, as views of its data blocks (given
        shards are not copied) cut to `stripe_size` bytes in total."""
        if len(shards) < self.k:
            raise InvalidArgument(f"need {self.k} shards to decode, got {len(shards)}")
        length = shard_length(stripe_size, self.k)
        for index, data in shards.items():
            if not 0 <= index < self.n:
                raise InvalidArgument(f"shard index {index} outside 0..{self.n - 1}")
            if len(data) != length:
                raise InvalidArgument(f"shard {index} has {len(data)} bytes, expected {length}")
        if stripe_size == 0:
            return []
        if all(i in shards for i in range(self.k)):
            blocks: Sequence[bytes | memoryview] = [shards[i] for i in range(self.k)]
        else:
            chosen = tuple(sorted(shards)[: self.k])
            if self._kernels is None:
                blocks = self._decoder.decode(tuple(shards[i] for i in chosen), chosen)
            else:
                blocks = self._decode_with_kernels(self._kernels, shards, chosen)
        return cut_views([memoryview(b) for b in blocks], 0, stripe_size)

    def _decode_with_kernels(
        self, gf: GfKernels, shards: Mapping[int, bytes | memoryview], chosen: tuple[int, ...]
    ) -> list[bytes | memoryview]:
        """The k data blocks from the `chosen` shards: missing ones are rows of the inverse of
        the chosen shards' generator rows applied to those shards."""
        missing = [i for i in range(self.k) if i not in chosen]
        rebuilt = gf.multiply(
            _decode_tables(gf, self.k, self.n, chosen), self.k, [shards[i] for i in chosen]
        )
        by_index = dict(zip(missing, rebuilt, strict=True))
        return [memoryview(by_index[i]) if i in by_index else shards[i] for i in range(self.k)]

    def encode_shard(self, stripe: bytes | memoryview, index: int) -> bytes:
        """Return only shard `index` of `stripe` (used by repair to rebuild one shard)."""
        return bytes(self.encode(stripe)[index])


@functools.lru_cache(maxsize=64)
def _decode_tables(gf: GfKernels, k: int, n: int, chosen: tuple[int, ...]) -> bytes:
    """ISA-L tables that turn the shards `chosen` (sorted, so every data shard given is among
    them) into the data blocks missing from them. Cached: a degraded read meets the same loss
    pattern stripe after stripe (64 patterns: at most 32 MiB of tables for k = 128)."""
    inverse = gf.invert(generator_rows(k, n, chosen), k)
    if inverse is None:  # cannot happen for zfec's (MDS) matrix; say so rather than guess
        raise ValueError(f"shards {chosen} of a ({k}, {n}) code are not independent")
    missing = [i for i in range(k) if i not in chosen]
    return gf.tables(b"".join(inverse[i * k : (i + 1) * k] for i in missing), k)
