"""Transport security in one value: the cluster token and, optionally, mutual TLS.

Every gRPC channel and server port of Shoal is made here (`Transport.channel`,
`Transport.server`, `Transport.add_port`), so no call site can dial or listen in plaintext
when the cluster uses TLS, or forget the token. Daemons build theirs from their config
(`Transport.from_config`); the SDK from its arguments and SHOAL_* environment variables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import grpc
import grpc.aio

from shoal.common import request_ids
from shoal.common.auth import client_interceptors, read_token_file, server_interceptors
from shoal.common.rpc import CHANNEL_OPTIONS, SERVER_OPTIONS
from shoal.common.tls import TlsFiles, load_tls


class TransportSettings(Protocol):
    """The settings every daemon config has for its transport."""

    @property
    def cluster_token_file(self) -> str: ...
    @property
    def tls_cert(self) -> str: ...
    @property
    def tls_key(self) -> str: ...
    @property
    def tls_ca(self) -> str: ...


@dataclass(frozen=True)
class Transport:
    """How to reach and serve peers: `token` ("" = none) on every call, TLS when `tls` is set."""

    token: str = field(default="", repr=False)
    tls: TlsFiles | None = None

    @classmethod
    def from_config(cls, config: TransportSettings) -> Transport:
        """A daemon's transport; ConfigError (one line naming the setting) if unusable."""
        token = read_token_file(config.cluster_token_file) if config.cluster_token_file else ""
        return cls(token, load_tls(config.tls_cert, config.tls_key, config.tls_ca))

    def channel(self, address: str) -> grpc.aio.Channel:
        """A channel to `address` with Shoal's options; TLS (presenting this side's certificate)
        when configured, and the token on every call."""
        interceptors = [*request_ids.client_interceptors(), *client_interceptors(self.token)]
        if self.tls is None:
            return grpc.aio.insecure_channel(
                address, options=CHANNEL_OPTIONS, interceptors=interceptors
            )
        return grpc.aio.secure_channel(
            address,
            self.tls.channel_credentials(),
            options=CHANNEL_OPTIONS,
            interceptors=interceptors,
        )

    def server(self, outer: list[grpc.aio.ServerInterceptor] | None = None) -> grpc.aio.Server:
        """A gRPC server that checks the token on every call (health checks excepted) and runs
        each handler with its caller's request id. `outer` interceptors (metrics) wrap the
        token check: they see refused calls too."""
        interceptors = [
            request_ids.ServerInterceptor(),
            *(outer or []),
            *server_interceptors(self.token),
        ]
        return grpc.aio.server(options=SERVER_OPTIONS, interceptors=interceptors)

    def add_port(self, server: grpc.aio.Server, listen: str) -> int:
        """Listen on `listen` (TLS requiring a client certificate when configured); the port
        bound, 0 on failure."""
        if self.tls is None:
            return server.add_insecure_port(listen)
        return server.add_secure_port(listen, self.tls.server_credentials())
