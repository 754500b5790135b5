"""gRPC plumbing shared by every role: channel options, error mapping, servicer decorators.

Error contract: a servicer raises a `ShoalError`; the `unary`/`streaming` decorators abort the
call with the matching status code, the message as details, and the error class name in the
`shoal-error` trailer. `to_shoal_error` turns a `grpc.aio.AioRpcError` back into that class on
the client side (falling back on the status code), so users only ever see `ShoalError`s.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio

from shoal.common.auth import client_interceptors
from shoal.common.errors import (
    ERROR_CLASSES,
    AlreadyExists,
    BucketNotEmpty,
    ConnectionFailed,
    CorruptData,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ShoalError,
    Unavailable,
)
from shoal.common.units import MiB

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
ERROR_TRAILER = "shoal-error"
# Shards are streamed in messages of this size; 1 MiB keeps well under gRPC's 4 MiB default.
STREAM_CHUNK_BYTES = 1 * MiB
MAX_MESSAGE_BYTES = 64 * MiB
T = TypeVar("T")
# Objects per PutInlineMany or LocateMany call (the coordinator refuses more).
MAX_OBJECTS_PER_CALL = 256


def batches(items: Sequence[T], size: int = MAX_OBJECTS_PER_CALL) -> Iterator[Sequence[T]]:
    """`items` in consecutive slices of at most `size`."""
    for first in range(0, len(items), size):
        yield items[first : first + size]


CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # A node that was down and came back must be reachable again within a second, not after
    # gRPC's default exponential backoff (up to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # Each channel gets its own subchannels: otherwise a fresh channel to a restarted node
    # would share the old one's subchannel and its backoff.
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.enable_retries", 0),
]
SERVER_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
]

_CODE_OF: list[tuple[type[ShoalError], grpc.StatusCode]] = [
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (BucketNotEmpty, grpc.StatusCode.FAILED_PRECONDITION),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (CorruptData, grpc.StatusCode.DATA_LOSS),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
]


def insecure_channel(address: str, token: str = "") -> grpc.aio.Channel:
    """A plaintext channel to `address` with Shoal's options (message sizes, fast reconnect);
    every call on it carries the cluster token when one is given. Shoal's own code dials
    through `shoal.common.transport.Transport`, which adds TLS when configured."""
    return grpc.aio.insecure_channel(
        address, options=CHANNEL_OPTIONS, interceptors=client_interceptors(token)
    )


def status_code_for(error: ShoalError) -> grpc.StatusCode:
    """The gRPC status code a ShoalError travels as."""
    for cls, code in _CODE_OF:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], error: ShoalError) -> None:
    """Abort the current RPC carrying `error` (never returns)."""
    await context.abort(
        status_code_for(error),
        str(error),
        trailing_metadata=((ERROR_TRAILER, type(error).__name__),),
    )


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
G = TypeVar("G", bound=Callable[..., AsyncIterator[Any]])


def unary(method: F) -> F:
    """Decorate a servicer coroutine so ShoalErrors become typed gRPC errors."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await method(self, request, context)
        except ShoalError as error:
            await abort_with(context, error)
        except Exception:
            log.exception("unhandled error in %s", method.__name__)
            raise

    return wrapper  # type: ignore[return-value]


def streaming(method: G) -> G:
    """Like `unary`, for servicer methods that are async generators."""

    @functools.wraps(method)
    async def wrapper(
        self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        try:
            async for item in method(self, request, context):
                yield item
        except ShoalError as error:
            await abort_with(context, error)
        except Exception:
            log.exception("unhandled error in %s", method.__name__)
            raise

    return wrapper  # type: ignore[return-value]


def _trailer(error: grpc.aio.AioRpcError) -> str | None:
    try:
        metadata = error.trailing_metadata() or ()
    except Exception:  # trailers can be unavailable on transport failures
        return None
    for key, value in metadata:
        if key == ERROR_TRAILER:
            return value if isinstance(value, str) else value.decode()
    return None


def to_shoal_error(error: grpc.aio.AioRpcError, peer: str = "") -> ShoalError:
    """Translate a gRPC error into the ShoalError it carries (or the best match)."""
    details = error.details() or error.code().name.lower()
    name = _trailer(error)
    if name and name in ERROR_CLASSES:
        return ERROR_CLASSES[name](details)
    code = error.code()
    where = f" {peer}" if peer else ""
    if code == grpc.StatusCode.UNAVAILABLE:
        return ConnectionFailed(f"cannot reach{where}: {details}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Unavailable(f"timed out waiting for{where or ' the server'}")
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        return PermissionDenied(details)
    if code == grpc.StatusCode.DATA_LOSS:
        return CorruptData(details)
    for cls, mapped in _CODE_OF:
        if mapped == code:
            return cls(details)
    return ShoalError(f"{code.name.lower()}{where}: {details}")
