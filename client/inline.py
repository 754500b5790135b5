"""Small objects stored inline in the coordinator's metadata (PutInline).

A put of at most `INLINE_MAX_BYTES` given as bytes goes to the coordinator in one call and is
committed with its manifest in one SQLite transaction: no placement, no shard RPCs, no shard
fsyncs. The bytes are exactly as durable as every object's manifest (without which no object
can be read), so the recovery rule still holds: an inline object survives the loss of any
storage nodes. The coordinator may decline (its own `--inline-max-bytes`, 0 = off); the put
then writes stripes as usual. Reads get the bytes in the Locate reply.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from shoal.client.get import ObjectReader
from shoal.common.units import KiB
from shoal.rpc.v1 import coordinator_pb2 as cpb

# The coordinator's default limit; AsyncClient.inline_max_bytes changes the client's side.
INLINE_MAX_BYTES = 16 * KiB


def inline_payload(data: object, limit: int) -> bytes | None:
    """`data` as bytes when it is an in-memory buffer small enough to send inline."""
    if isinstance(data, bytes | bytearray) and len(data) <= limit:
        return bytes(data)
    if isinstance(data, memoryview) and data.nbytes <= limit:
        return data.tobytes()
    return None


class InlineReader(ObjectReader):
    """Reads an inline object: one "stripe" holding all of it, already in the Locate reply."""

    def __init__(self, located: cpb.LocateResponse) -> None:
        # The stripe machinery of ObjectReader (channels, codec, pages) is never used here.
        self.info = located.info
        self._data = bytes(located.inline_data)

    async def stripes(self, first: int, last: int) -> AsyncGenerator[bytes, None]:
        if first <= 0 <= last and self._data:
            yield self._data
