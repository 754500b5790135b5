"""The erasure codec: one stripe in, `n` shards out; any `k` shards back to the stripe.

A stripe of `size` bytes is cut into `k` data blocks of `shard_length = ceil(size / k)` bytes
(the last one zero-padded), and zfec's low-level `Encoder` adds `n - k` parity blocks. zfec is
systematic: shards `0..k-1` *are* the data blocks, so a read that gets all of them joins them
and never decodes. The padded length is undone with the stripe size kept in the manifest.
`decode_blocks` hands the stripe back as views of the blocks (no copy: callers join them into
their own buffer once); `decode` joins them.

zfec releases the GIL while encoding, so callers run `encode`/`decode` in a thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import zfec

from shoal.common.errors import InvalidArgument

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

    def __init__(self, k: int, n: int) -> None:
        check_redundancy(k, n)
        self.k = k
        self.n = n
        self._encoder = zfec.Encoder(k, n)
        self._decoder = zfec.Decoder(k, n)

    def encode(self, stripe: bytes | memoryview) -> list[bytes | memoryview]:
        """Return the `n` shards of `stripe`. Data shards are zero-copy views where possible."""
        view = memoryview(stripe)
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
        parity = self._encoder.encode(tuple(blocks), tuple(range(self.k, self.n)))
        return [*blocks, *parity]

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
            chosen = sorted(shards)[: self.k]
            blocks = self._decoder.decode(tuple(shards[i] for i in chosen), tuple(chosen))
        return cut_views([memoryview(b) for b in blocks], 0, stripe_size)

    def encode_shard(self, stripe: bytes | memoryview, index: int) -> bytes:
        """Return only shard `index` of `stripe` (used by repair to rebuild one shard)."""
        return bytes(self.encode(stripe)[index])
