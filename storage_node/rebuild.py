"""Executing a repair assignment: rebuild one shard of a stripe from peers and store it here.

A source holding the same shard index is copied as is (moving a shard off a draining node);
otherwise any `k` healthy shards are fetched (data shards first, with fallback and hedging),
the stripe is decoded and re-encoded, and only the wanted shard is kept. Every fetched shard
is checked against its manifest checksum, and the rebuilt shard against the manifest's
checksum for it, so repair can never write wrong bytes.
"""

from __future__ import annotations

import asyncio

from shoal.common.channels import NodeChannels
from shoal.common.checksum import shard_checksum
from shoal.common.erasure import StripeCodec
from shoal.common.errors import CorruptData, Unavailable
from shoal.common.names import shard_id
from shoal.common.shard_transfer import gather_k, get_shard, verify
from shoal.rpc.v1 import storage_pb2 as spb
from shoal.storage_node.shard_store import ShardMeta, ShardStore

HEDGE_AFTER_S = 2.0


class SourceFailed(Exception):
    """One source shard could not be used."""


async def rebuild_shard(
    store: ShardStore, channels: NodeChannels, request: spb.RebuildShardRequest, timeout_s: float
) -> tuple[int, int, bytes]:
    """Rebuild and store the requested shard; returns (length, bytes read, checksum)."""
    sid = shard_id(request.version_id, request.stripe_index, request.shard_index)

    async def fetch(source: spb.ShardSource) -> bytes:
        peer_sid = shard_id(request.version_id, request.stripe_index, source.shard_index)
        try:
            data = await get_shard(channels, source.address, peer_sid, timeout_s)
        except Exception as exc:
            raise SourceFailed(f"{source.node_id}: {exc}") from None
        if not verify(data, request.shard_length, source.checksum):
            raise SourceFailed(f"{source.node_id}: checksum mismatch")
        return data

    same = [s for s in request.sources if s.shard_index == request.shard_index]
    others = [s for s in request.sources if s.shard_index != request.shard_index]
    shard: bytes | None = None
    bytes_read = 0
    if same:
        copied, _failed = await gather_k(same, 1, fetch, HEDGE_AFTER_S)
        if copied:
            shard = copied[0][1]
            bytes_read = len(shard)
    if shard is None:
        got, failed = await gather_k(others, request.k, fetch, HEDGE_AFTER_S)
        bytes_read += sum(len(data) for _s, data in got)
        if len(got) < request.k:
            reasons = "; ".join(str(exc) for _s, exc in failed) or "not enough sources"
            raise Unavailable(f"shard {sid}: read {len(got)} of k={request.k} shards ({reasons})")
        codec = StripeCodec(request.k, request.n)
        blocks = {s.shard_index: data for s, data in got}
        stripe = await asyncio.to_thread(codec.decode, blocks, request.stripe_size)
        shard = await asyncio.to_thread(codec.encode_shard, stripe, request.shard_index)
    checksum = shard_checksum(shard)
    if request.checksum and checksum != request.checksum:
        raise CorruptData(f"shard {sid}: rebuilt bytes do not match the manifest's checksum")
    await asyncio.to_thread(store.write, ShardMeta(sid, len(shard), checksum), shard)
    return len(shard), bytes_read, checksum
