"""One gRPC channel per storage node address, reused across calls (created lazily, in the
event loop that uses them)."""

from __future__ import annotations

import time

import grpc.aio

from shoal.common.transport import Transport
from shoal.rpc.v1 import storage_pb2_grpc as spb_grpc

RETIRED_CLOSE_AFTER_S = 60.0


class NodeChannels:
    """Channels and stubs to storage nodes, keyed by address, made by one `Transport` (token
    and TLS)."""

    def __init__(self, transport: Transport | None = None) -> None:
        self.transport = transport or Transport()
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, spb_grpc.StorageNodeAsyncStub] = {}
        self._retired: list[tuple[float, grpc.aio.Channel]] = []

    def stub(self, address: str) -> spb_grpc.StorageNodeAsyncStub:
        stub = self._stubs.get(address)
        if stub is None:
            channel = self.transport.channel(address)
            self._channels[address] = channel
            stub = self._stubs[address] = spb_grpc.StorageNodeStub(channel)
        return stub

    def channel(self, address: str) -> grpc.aio.Channel:
        """The channel behind `stub(address)` (made if need be), for calls the generated stub
        does not offer, such as raw-bytes shard transfers: same interceptors, token and TLS."""
        self.stub(address)
        return self._channels[address]

    async def reset(self, address: str) -> None:
        """Drop the channel to `address` so the next call connects afresh.

        A channel that saw its node die sits in reconnect backoff and fails calls at once; a
        node that has come back is reachable again through a new channel immediately.
        """
        channel = self._channels.pop(address, None)
        self._stubs.pop(address, None)
        if channel is not None:
            # Other calls may still be streaming on it and closing it would cancel them, so it
            # is closed once it has been retired longer than any shard call may last.
            now = time.monotonic()
            self._retired.append((now, channel))
            while self._retired and now - self._retired[0][0] > RETIRED_CLOSE_AFTER_S:
                await self._retired.pop(0)[1].close()

    async def close(self) -> None:
        channels, self._channels, self._stubs = self._channels, {}, {}
        retired, self._retired = self._retired, []
        for channel in [*channels.values(), *(c for _t, c in retired)]:
            await channel.close()
