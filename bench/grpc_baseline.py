"""A minimal grpc.aio streaming servicer: what Python gRPC moves on this machine, Shoal aside.

    python -m bench.grpc_baseline --serve READY_FILE     (the server, run as a subprocess)

The server (its own process, on uvloop like Shoal's daemons) has three raw-bytes methods, no
protobuf, no disk, no checksum: `Upload` consumes a client stream of 1 MiB messages (what a
PutShard does on the wire), `Download` streams back N bytes in 1 MiB messages (a GetShard),
and `Echo` answers a unary 4 KiB request with 4 KiB (a small op). `measure` drives it from
this process with grpc.aio on a private event loop thread, like the SDK does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from bench.common import MIB, percentile

SERVICE = "bench.Baseline"
CHUNK = MIB
OPTIONS = [
    ("grpc.max_send_message_length", 64 * MIB),
    ("grpc.max_receive_message_length", 64 * MIB),
]
READY_TIMEOUT_S = 20.0


def _identity(data: bytes) -> bytes:
    return data


async def _upload(requests: AsyncIterator[bytes], context: Any) -> bytes:
    total = 0
    async for message in requests:
        total += len(message)
    return total.to_bytes(8, "little")


async def _download(request: bytes, context: Any) -> AsyncIterator[bytes]:
    remaining = int.from_bytes(request[:8], "little")
    chunk = bytes(CHUNK)
    while remaining > 0:
        piece = chunk if remaining >= CHUNK else chunk[:remaining]
        remaining -= len(piece)
        yield piece


async def _echo(request: bytes, context: Any) -> bytes:
    return request


async def serve(ready_file: Path) -> None:
    server = grpc.aio.server(options=OPTIONS)
    handlers = {
        "Upload": grpc.stream_unary_rpc_method_handler(
            _upload, request_deserializer=_identity, response_serializer=_identity
        ),
        "Download": grpc.unary_stream_rpc_method_handler(
            _download, request_deserializer=_identity, response_serializer=_identity
        ),
        "Echo": grpc.unary_unary_rpc_method_handler(
            _echo, request_deserializer=_identity, response_serializer=_identity
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    tmp = ready_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"address": f"127.0.0.1:{port}"}))
    tmp.replace(ready_file)
    await server.wait_for_termination()


@dataclass(frozen=True)
class GrpcFigures:
    """What the minimal servicer measured."""

    upload_mib_s: float
    download_mib_s: float
    echo_p50_ms: float
    echo_p99_ms: float
    echo_ops_1: float
    echo_ops_8: float


async def _drive(address: str, size: int, runs: int, seconds: float) -> GrpcFigures:
    async with grpc.aio.insecure_channel(address, options=OPTIONS) as channel:
        upload = channel.stream_unary(
            f"/{SERVICE}/Upload", request_serializer=_identity, response_deserializer=_identity
        )
        download = channel.unary_stream(
            f"/{SERVICE}/Download", request_serializer=_identity, response_deserializer=_identity
        )
        echo = channel.unary_unary(
            f"/{SERVICE}/Echo", request_serializer=_identity, response_deserializer=_identity
        )
        payload = os.urandom(size)

        async def messages() -> AsyncIterator[bytes]:
            view = memoryview(payload)
            for offset in range(0, size, CHUNK):
                yield bytes(view[offset : offset + CHUNK])

        async def one_upload() -> float:
            t0 = time.perf_counter()
            reply = await upload(messages())
            if int.from_bytes(reply, "little") != size:
                raise RuntimeError("gRPC baseline: upload lost bytes")
            return time.perf_counter() - t0

        async def one_download() -> float:
            t0 = time.perf_counter()
            got = b"".join([m async for m in download(size.to_bytes(8, "little"))])
            if len(got) != size:
                raise RuntimeError("gRPC baseline: download lost bytes")
            return time.perf_counter() - t0

        await one_upload()
        await one_download()
        up = statistics.median([await one_upload() for _ in range(runs)])
        down = statistics.median([await one_download() for _ in range(runs)])
        small = os.urandom(4096)

        async def echo_loop(deadline: float, out: list[float]) -> None:
            while (t0 := time.perf_counter()) < deadline:
                await echo(small)
                out.append(time.perf_counter() - t0)

        one: list[float] = []
        began = time.perf_counter()
        await echo_loop(began + seconds, one)
        ops_1 = len(one) / (time.perf_counter() - began)
        eight: list[list[float]] = [[] for _ in range(8)]
        began = time.perf_counter()
        await asyncio.gather(*(echo_loop(began + seconds, out) for out in eight))
        ops_8 = sum(map(len, eight)) / (time.perf_counter() - began)
    mib = size / MIB
    return GrpcFigures(
        upload_mib_s=mib / up,
        download_mib_s=mib / down,
        echo_p50_ms=percentile(one, 50) * 1000,
        echo_p99_ms=percentile(one, 99) * 1000,
        echo_ops_1=ops_1,
        echo_ops_8=ops_8,
    )


def measure(size: int = 64 * MIB, runs: int = 3, seconds: float = 2.0) -> GrpcFigures:
    """Start the minimal servicer in a subprocess and measure it from this process."""
    with tempfile.TemporaryDirectory(prefix="shoal-bench-grpc-") as scratch:
        ready = Path(scratch) / "ready.json"
        server = subprocess.Popen(
            [sys.executable, "-m", "bench.grpc_baseline", "--serve", str(ready)],
            stdin=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not ready.exists():
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the gRPC baseline server did not start")
                time.sleep(0.02)
            address = json.loads(ready.read_text())["address"]
            return asyncio.run(_drive(address, size, runs, seconds))
        finally:
            server.terminate()
            server.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Minimal grpc.aio streaming servicer baseline.")
    parser.add_argument("--serve", type=Path, metavar="READY_FILE", help="run the server")
    args = parser.parse_args(argv)
    if args.serve:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve(args.serve))
        return 0
    print(json.dumps(measure().__dict__, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
