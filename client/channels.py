"""One gRPC channel per storage node address, reused across calls (created lazily, in the
event loop that uses them)."""

from __future__ import annotations

import grpc.aio

from shoal.common.rpc import insecure_channel
from shoal.rpc.v1 import storage_pb2_grpc as spb_grpc


class NodeChannels:
    """Channels and stubs to storage nodes, keyed by address."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, spb_grpc.StorageNodeStub] = {}

    def stub(self, address: str) -> spb_grpc.StorageNodeStub:
        stub = self._stubs.get(address)
        if stub is None:
            channel = insecure_channel(address)
            self._channels[address] = channel
            stub = self._stubs[address] = spb_grpc.StorageNodeStub(channel)
        return stub

    async def close(self) -> None:
        channels, self._channels, self._stubs = self._channels, {}, {}
        for channel in channels.values():
            await channel.close()
