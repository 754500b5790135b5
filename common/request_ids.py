"""Request ids: one id per SDK operation, sent with every RPC it makes, logged by every daemon
that handles it, and printed by the CLI on errors, so one failed `put` can be followed through
the coordinator's and the nodes' logs.

- The SDK opens a `request_scope()` per public operation; the client interceptors put the id
  in the `x-shoal-request-id` metadata of every call made inside it (a call outside any scope
  gets a fresh id of its own).
- Daemons run each handler with the caller's id in `REQUEST_ID` (the server interceptor), so
  log lines about the request carry `request_id=...` (`RequestIdFilter`), and calls a daemon
  makes on the request's behalf (coordinator to nodes, node to node) carry the same id.
- `ShoalError.request_id` holds the id of the operation that failed.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import grpc
import grpc.aio

from shoal.common.errors import ShoalError

METADATA_KEY = "x-shoal-request-id"
MAX_LENGTH = 64

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("shoal_request_id", default="")


def new_request_id() -> str:
    """A fresh id: 16 hex characters."""
    return secrets.token_hex(8)


def current() -> str:
    """The id of the request being made or handled here ("" outside any)."""
    return REQUEST_ID.get()


@contextlib.contextmanager
def request_scope(request_id: str = "") -> Iterator[str]:
    """Run the block as one request: reuse the current id if there is one (an operation
    inside another keeps the outer id), else `request_id` or a fresh one."""
    existing = REQUEST_ID.get()
    if existing:
        yield existing
        return
    token = REQUEST_ID.set(request_id or new_request_id())
    try:
        yield REQUEST_ID.get()
    finally:
        REQUEST_ID.reset(token)


A = TypeVar("A", bound=Callable[..., Awaitable[Any]])


def operation(method: A) -> A:
    """Decorate an SDK coroutine method: it runs as one request, and a ShoalError it raises
    carries that request's id."""

    @functools.wraps(method)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        with request_scope() as request_id:
            try:
                return await method(*args, **kwargs)
            except ShoalError as error:
                if not error.request_id:
                    error.request_id = request_id
                raise

    return wrapper  # type: ignore[return-value]


def _sanitized(value: str) -> str:
    """Ids come from the network: keep them short and printable."""
    value = value[:MAX_LENGTH]
    return value if value.isascii() and value.isprintable() and " " not in value else ""


# Client side -------------------------------------------------------------------------------


def _with_request_id(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    if metadata.get(METADATA_KEY) is None:
        metadata.add(METADATA_KEY, REQUEST_ID.get() or new_request_id())
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(_with_request_id(client_call_details), request)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(_with_request_id(client_call_details), request)


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(_with_request_id(client_call_details), request_iterator)


class _StreamStream(grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(_with_request_id(client_call_details), request_iterator)


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """Interceptors that send the current request id with every call on a channel."""
    return [_UnaryUnary(), _UnaryStream(), _StreamUnary(), _StreamStream()]


# Server side -------------------------------------------------------------------------------


def _caller_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == METADATA_KEY:
            return _sanitized(value if isinstance(value, str) else value.decode(errors="replace"))
    return ""


def _with_caller_id(behaviour: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a handler behaviour (coroutine or async generator function) so it runs with the
    caller's request id (or a fresh one) in `REQUEST_ID`."""
    if inspect.isasyncgenfunction(behaviour):

        async def steps(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            # An async generator runs each step in its consumer's context, so the id is set
            # around each step rather than once.
            request_id = _caller_id(context) or new_request_id()
            iterator = behaviour(request, context).__aiter__()
            while True:
                token = REQUEST_ID.set(request_id)
                try:
                    item = await iterator.__anext__()
                except StopAsyncIteration:
                    return
                finally:
                    REQUEST_ID.reset(token)
                yield item

        return steps
    if inspect.iscoroutinefunction(behaviour):

        async def run(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            token = REQUEST_ID.set(_caller_id(context) or new_request_id())
            try:
                return await behaviour(request, context)
            finally:
                REQUEST_ID.reset(token)

        return run
    return behaviour  # a synchronous handler: none of Shoal's


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Runs each handler with the caller's request id in `REQUEST_ID`."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        wrap = {
            kind: _with_caller_id(behaviour)
            for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
            if (behaviour := getattr(handler, kind)) is not None
        }
        return handler._replace(**wrap)  # type: ignore[attr-defined,no-any-return]


# Logging -----------------------------------------------------------------------------------


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to log records made while a request is being made or handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = REQUEST_ID.get()
        if request_id and not hasattr(record, "request_id"):
            record.request_id = request_id
        return True
