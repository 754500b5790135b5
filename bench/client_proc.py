"""A client process that does nothing but client work, for peak-RSS and multi-client figures.

    python -m bench.client_proc ADDRESS BUCKET KEY SOURCE [--runs N] [--wait-go]

Puts the file SOURCE as BUCKET/KEY (the SDK streams it from disk stripe by stripe), then reads
it back with `Client.stream` (bounded memory), hashing what arrives with xxh3-128 instead of
keeping it, `--runs` times each. With `--wait-go` it prints `ready put` (then `ready get`) and
waits for a line on stdin before each phase, so several clients run each phase together. The
last line of stdout is one JSON document: wall-clock start and end of each phase, each put's
and get's seconds, the xxh3-128 of what was read, and this process's own peak RSS (VmHWM)
after the puts and at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import xxhash

from bench.common import vmhwm_mib
from shoal.client import Client


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address")
    parser.add_argument("bucket")
    parser.add_argument("key")
    parser.add_argument("source", type=Path)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--wait-go", action="store_true")
    args = parser.parse_args(argv)
    size = args.source.stat().st_size
    puts: list[float] = []
    gets: list[float] = []
    phases: dict[str, tuple[float, float]] = {}
    digest = ""

    def wait_go(phase: str) -> None:
        if args.wait_go:
            print(f"ready {phase}", flush=True)
            sys.stdin.readline()

    with Client(args.address) as client:
        wait_go("put")
        started = time.time()
        for _ in range(max(args.runs, 1)):
            t0 = time.perf_counter()
            info = client.put(args.bucket, args.key, args.source)
            puts.append(time.perf_counter() - t0)
            if info.size != size:
                raise SystemExit(f"put stored {info.size} bytes, the file has {size}")
        phases["put"] = (started, time.time())
        after_put = vmhwm_mib()
        wait_go("get")
        started = time.time()
        for _ in range(max(args.runs, 1)):
            hasher = xxhash.xxh3_128()
            t0 = time.perf_counter()
            for piece in client.stream(args.bucket, args.key):
                hasher.update(piece)
            gets.append(time.perf_counter() - t0)
            digest = hasher.hexdigest()
        phases["get"] = (started, time.time())
    report = {
        "size": size,
        "phases": phases,
        "put_s": puts,
        "get_s": gets,
        "digest": digest,
        "after_put_rss_mib": after_put,
        "peak_rss_mib": vmhwm_mib(),
    }
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
