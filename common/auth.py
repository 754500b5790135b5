"""The cluster token: a shared secret required on every RPC when a cluster is configured with
one (`--cluster-token-file` on every daemon; `Client(token=...)`, SHOAL_TOKEN or
SHOAL_TOKEN_FILE for clients).

Clients attach it as `authorization: Bearer <token>` metadata through a channel interceptor,
so no call site can forget it. Servers check it in an interceptor with a constant-time
comparison before any handler runs, and refuse with PERMISSION_DENIED. The token is never
logged.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from shoal.common.errors import ConfigError, PermissionDenied

HEADER = "authorization"
ERROR_TRAILER = "shoal-error"


def read_token_file(path: str) -> str:
    """The token in a file (surrounding whitespace stripped); ConfigError if unusable."""
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read cluster token file {path}: {exc.strerror}") from None
    if len(token) < 16:
        raise ConfigError(f"cluster token in {path} is too short: use at least 16 characters")
    return token


def token_from_env() -> str:
    """SHOAL_TOKEN, else the contents of SHOAL_TOKEN_FILE, else empty (no token)."""
    if os.environ.get("SHOAL_TOKEN"):
        return os.environ["SHOAL_TOKEN"].strip()
    if os.environ.get("SHOAL_TOKEN_FILE"):
        try:
            return read_token_file(os.environ["SHOAL_TOKEN_FILE"])
        except ConfigError as exc:
            raise PermissionDenied(str(exc)) from None
    return ""


class _TokenMetadata:
    """Adds the token to the metadata of every outgoing call."""

    def __init__(self, token: str) -> None:
        self._pair = (HEADER, f"Bearer {token}")

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata.add(*self._pair)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


class _UnaryUnary(_TokenMetadata, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _UnaryStream(_TokenMetadata, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _StreamUnary(_TokenMetadata, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


class _StreamStream(_TokenMetadata, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


def client_interceptors(token: str) -> list[Any]:
    """Channel interceptors that send `token` with every call (none when token is empty)."""
    if not token:
        return []
    return [_UnaryUnary(token), _UnaryStream(token), _StreamUnary(token), _StreamStream(token)]


def _deny_handler(handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    async def deny(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            "missing or wrong cluster token (pass the cluster's token: Client(token=...), "
            "SHOAL_TOKEN_FILE or --token-file)",
            trailing_metadata=((ERROR_TRAILER, "PermissionDenied"),),
        )

    async def deny_stream(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await deny(_request, context)
        yield  # pragma: no cover - never reached, makes this an async generator

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny_stream)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny_stream)
    return grpc.unary_unary_rpc_method_handler(deny)


class TokenCheck(grpc.aio.ServerInterceptor):
    """Refuses every RPC whose metadata lacks the cluster token."""

    def __init__(self, token: str, open_methods: tuple[str, ...] = ()) -> None:
        self._expected = f"Bearer {token}".encode()
        self._open = open_methods

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        if handler is None or details.method in self._open:
            return handler
        offered = b""
        for key, value in details.invocation_metadata or ():
            if key == HEADER:
                offered = value.encode() if isinstance(value, str) else value
        if hmac.compare_digest(offered, self._expected):
            return handler
        return _deny_handler(handler)


def server_interceptors(token: str) -> list[grpc.aio.ServerInterceptor]:
    """The interceptors a daemon's gRPC server needs (none when it has no token)."""
    from shoal.common.health import HEALTH_METHODS

    return [TokenCheck(token, open_methods=HEALTH_METHODS)] if token else []
