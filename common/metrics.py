"""Prometheus metrics shared by every daemon: the HTTP endpoint and the RPC interceptor.

Each daemon is its own process, so metrics live in prometheus-client's default registry (which
also carries the `process_*` and `python_*` collectors). `--metrics-listen HOST:PORT` turns the
endpoint on (`start_metrics_server`); empty, the default, leaves metrics off and installs no
interceptor.

`RpcMetrics` is a grpc.aio server interceptor. It is installed *outside* the token check (first
in the server's interceptor list): the token check still decides which handler runs, and a
refused call is recorded with PERMISSION_DENIED like any other. Per call it records

    shoal_rpc_requests_total{service, method, code}      one per finished call
    shoal_rpc_duration_seconds{service, method}          from handler start to its end
    shoal_rpc_received_bytes_total{service, method}      serialized request messages
    shoal_rpc_sent_bytes_total{service, method}          serialized response messages
    shoal_rpc_in_flight{service, method}                 calls being handled now

The code is OK when the handler returns (or the code it set with `context.set_code`), the
aborted code when it aborts (the `unary`/`streaming` decorators of common/rpc.py abort with the
code of a ShoalError), UNKNOWN for an unhandled exception, and CANCELLED (DEADLINE_EXCEEDED
when the deadline passed) when the call is cancelled under the handler. Role-specific metrics
live in each role's own `metrics` module.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
import grpc.aio
from prometheus_client import (
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.registry import Collector

from shoal.common.errors import ConfigError

log = logging.getLogger(__name__)

# No `*_created` series: they double the series count and Prometheus does not need them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Latency buckets from 1 ms (a metadata call) to a minute (a large shard stream or rebuild).
RPC_BUCKETS = (
    *(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)

RPC_REQUESTS = Counter(
    "shoal_rpc_requests",
    "gRPC calls handled, by service, method and final status code",
    ["service", "method", "code"],
)
RPC_DURATION = Histogram(
    "shoal_rpc_duration_seconds",
    "Time spent handling a gRPC call (whole stream for streaming calls)",
    ["service", "method"],
    buckets=RPC_BUCKETS,
)
RPC_RECEIVED_BYTES = Counter(
    "shoal_rpc_received_bytes",
    "Serialized request message bytes received, by service and method",
    ["service", "method"],
)
RPC_SENT_BYTES = Counter(
    "shoal_rpc_sent_bytes",
    "Serialized response message bytes sent, by service and method",
    ["service", "method"],
)
RPC_IN_FLIGHT = Gauge("shoal_rpc_in_flight", "gRPC calls being handled now", ["service", "method"])
DAEMON_INFO = Info("shoal_daemon", "Which Shoal daemon this is")

_servers: dict[str, WSGIServer] = {}
_servers_lock = threading.Lock()


def _parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.strip().rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"invalid value for 'metrics_listen': {listen!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def start_metrics_server(listen: str, role: str = "") -> str:
    """Serve the default registry over HTTP (`/metrics`, any path works) on `listen`
    (HOST:PORT; port 0 picks a free one) in a daemon thread; returns the bound "host:port".
    ConfigError if `listen` is malformed or cannot be bound."""
    host, port = _parse_listen(listen)
    try:
        server, _thread = start_http_server(port, addr=host)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {listen}: {exc.strerror or exc}") from None
    bound = f"[{host}]:{server.server_port}" if ":" in host else f"{host}:{server.server_port}"
    with _servers_lock:
        _servers[bound] = server
    if role:
        DAEMON_INFO.info({"role": role, "version": _version()})
    log.info("serving metrics", extra={"metrics_address": bound})
    return bound


def stop_metrics_server(address: str) -> None:
    """Stop an endpoint started by `start_metrics_server` (tests; daemons just exit)."""
    with _servers_lock:
        server = _servers.pop(address, None)
    if server is not None:
        server.shutdown()
        server.server_close()


def _version() -> str:
    try:
        return importlib.metadata.version("shoal")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def rpc_interceptors(metrics_address: str) -> list[grpc.aio.ServerInterceptor]:
    """[RpcMetrics()] when metrics are served (`metrics_address` set), else []; they go before
    the token check (`Transport.server(outer=...)`) so refused calls are recorded too."""
    return [RpcMetrics()] if metrics_address else []


def register_collector(collector: Collector, replace: list[Collector]) -> None:
    """Register a scrape-time collector in the default registry, first unregistering the one
    a previous call put in `replace` (a daemon's `serve` may run twice in one process)."""
    for old in replace:
        try:
            REGISTRY.unregister(old)
        except KeyError:
            pass
    replace[:] = [collector]
    REGISTRY.register(collector)


def _split(full_method: str) -> tuple[str, str]:
    """'/pkg.Service/Method' -> ('pkg.Service', 'Method')."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service or "unknown", method or "unknown"


def _status_name(code: Any) -> str:
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        for member in grpc.StatusCode:
            if member.value[0] == code:
                return member.name
    return grpc.StatusCode.UNKNOWN.name


class _Call:
    """The metric children of one method, and how one call of it ended."""

    __slots__ = ("duration", "in_flight", "method", "received", "sent", "service")

    def __init__(self, service: str, method: str) -> None:
        self.service, self.method = service, method
        self.duration = RPC_DURATION.labels(service, method)
        self.in_flight = RPC_IN_FLIGHT.labels(service, method)
        self.received = RPC_RECEIVED_BYTES.labels(service, method)
        self.sent = RPC_SENT_BYTES.labels(service, method)

    def start(self) -> float:
        self.in_flight.inc()
        return time.perf_counter()

    def finish(self, started: float, code: str) -> None:
        self.in_flight.dec()
        self.duration.observe(time.perf_counter() - started)
        RPC_REQUESTS.labels(self.service, self.method, code).inc()


def _context_code(context: Any) -> str:
    """The code of a call whose handler returned: what it set, else OK."""
    code = context.code()
    return "OK" if code is None else _status_name(code)


def _failure_code(context: Any, exc: BaseException) -> str:
    """The code of a call whose handler raised `exc`."""
    if isinstance(exc, grpc.aio.AbortError):
        code = context.code()
        return "UNKNOWN" if code is None else _status_name(code)
    if not isinstance(exc, Exception):
        # asyncio.CancelledError: the client cancelled, the deadline passed, or the server
        # is stopping.
        try:
            remaining = context.time_remaining()
        except Exception:
            remaining = None
        if remaining is not None and remaining <= 0:
            return "DEADLINE_EXCEEDED"
        return "CANCELLED"
    return "UNKNOWN"


def _counting(fn: Callable[[Any], Any] | None, counter: Any, *, serialize: bool) -> Any:
    """Wrap a (de)serializer so it counts the wire bytes it sees."""
    if serialize:
        if fn is None:

            def passthrough_out(message: Any) -> Any:
                counter.inc(len(message))
                return message

            return passthrough_out

        def serialize_counted(message: Any) -> Any:
            data = fn(message)
            counter.inc(len(data))
            return data

        return serialize_counted
    if fn is None:

        def passthrough_in(data: Any) -> Any:
            counter.inc(len(data))
            return data

        return passthrough_in

    def deserialize_counted(data: Any) -> Any:
        counter.inc(len(data))
        return fn(data)

    return deserialize_counted


def _wrap_behavior(behavior: Callable[..., Any], call: _Call) -> Callable[..., Any]:
    """A behavior of the same kind (coroutine, async generator, function, generator) that
    records the call around `behavior` (grpc.aio dispatches on that kind)."""
    if inspect.isasyncgenfunction(behavior):

        async def agen(request: Any, context: Any) -> AsyncIterator[Any]:
            started = call.start()
            try:
                async for item in behavior(request, context):
                    yield item
            except BaseException as exc:
                call.finish(started, _failure_code(context, exc))
                raise
            call.finish(started, _context_code(context))

        return agen
    if inspect.iscoroutinefunction(behavior):

        async def coro(request: Any, context: Any) -> Any:
            started = call.start()
            try:
                result = await behavior(request, context)
            except BaseException as exc:
                call.finish(started, _failure_code(context, exc))
                raise
            call.finish(started, _context_code(context))
            return result

        return coro
    if inspect.isgeneratorfunction(behavior):

        def gen(request: Any, context: Any) -> Iterator[Any]:
            started = call.start()
            try:
                yield from behavior(request, context)
            except BaseException as exc:
                call.finish(started, _failure_code(context, exc))
                raise
            call.finish(started, _context_code(context))

        return gen

    def func(request: Any, context: Any) -> Any:
        started = call.start()
        try:
            result = behavior(request, context)
        except BaseException as exc:
            call.finish(started, _failure_code(context, exc))
            raise
        call.finish(started, _context_code(context))
        return result

    return func


class RpcMetrics(grpc.aio.ServerInterceptor):
    """Records count, code, latency and message bytes of every call to a grpc.aio server."""

    def __init__(self) -> None:
        self._calls: dict[str, _Call] = {}

    def _call(self, full_method: str) -> _Call:
        call = self._calls.get(full_method)
        if call is None:
            call = self._calls[full_method] = _Call(*_split(full_method))
        return call

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        if handler is None:
            # Unknown method: grpc answers UNIMPLEMENTED. Not labelled by the name the
            # caller made up, so a scanner cannot blow up the label set.
            RPC_REQUESTS.labels("unknown", "unknown", "UNIMPLEMENTED").inc()
            return None
        return wrap_handler(handler, self._call(details.method))


def wrap_handler(
    handler: grpc.RpcMethodHandler[Any, Any], call: _Call
) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` with its behavior and (de)serializers recording into `call`."""
    deserializer = _counting(handler.request_deserializer, call.received, serialize=False)
    serializer = _counting(handler.response_serializer, call.sent, serialize=True)
    if handler.request_streaming and handler.response_streaming:
        assert handler.stream_stream is not None
        return grpc.stream_stream_rpc_method_handler(
            _wrap_behavior(handler.stream_stream, call), deserializer, serializer
        )
    if handler.request_streaming:
        assert handler.stream_unary is not None
        return grpc.stream_unary_rpc_method_handler(
            _wrap_behavior(handler.stream_unary, call), deserializer, serializer
        )
    if handler.response_streaming:
        assert handler.unary_stream is not None
        return grpc.unary_stream_rpc_method_handler(
            _wrap_behavior(handler.unary_stream, call), deserializer, serializer
        )
    assert handler.unary_unary is not None
    return grpc.unary_unary_rpc_method_handler(
        _wrap_behavior(handler.unary_unary, call), deserializer, serializer
    )


def serve_metrics(listen: str, role: str) -> str:
    """`start_metrics_server(listen, role)` when `listen` is set; "" (metrics off) otherwise."""
    return start_metrics_server(listen, role) if listen else ""


def ready_fields(metrics_address: str) -> dict[str, str]:
    """What a daemon adds to its ready file about metrics: {"metrics_address": ...} when on."""
    return {"metrics_address": metrics_address} if metrics_address else {}
