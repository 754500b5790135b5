"""The S3 gateway's throughput with boto3, next to the same operations through the native SDK,
in one run on one temporary cluster.

    python -m bench.s3 [--mib 256] [--small 200] [--json]

On a temporary 6-node (4, 6) cluster with a `shoal-s3` gateway in front of it:

- PUT and GET of one large object (`--mib`, default 256 MiB): boto3's managed transfer
  (`upload_fileobj`/`download_fileobj`: multipart, 8 MiB parts, 10 threads) through the
  gateway, next to the native SDK's `put`/`download` of the same bytes;
- PUT and GET of one 8 MiB object (boto3 `put_object`/`get_object`, a single request) next to
  the SDK's `put`/`get`;
- small-object operations: `--small` 4 KiB objects put and read one at a time, ops/s.

The ratio column is the gateway's throughput as a fraction of the native SDK's (1.00 = as
fast). The data read back is checked; nothing is asserted about timings.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from bench.common import MIB, Report, Row, emit, say, temporary_cluster
from shoal.client import Client

BUCKET = "bench-s3"
NATIVE = "native SDK"


def _s3(endpoint: str, access: str, secret: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=16),
    )


def _throughput(size: int, seconds: float) -> float:
    return size / MIB / seconds


def _best(fn: Any, runs: int) -> float:
    """The shortest of `runs` timed calls (a noisy 2-core machine: the best is the cleanest)."""
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def run(mib: int, small: int, runs: int, quiet: bool) -> Report:
    report = Report("S3 gateway (boto3) vs native SDK")
    with temporary_cluster() as cluster, tempfile.TemporaryDirectory() as tmp:
        gateway = cluster.start_s3()
        _path, access, secret = cluster.s3_credentials()
        s3 = _s3(f"http://{gateway.address}", access, secret)
        s3.create_bucket(Bucket=BUCKET)
        transfer = TransferConfig(multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB)
        big = Path(tmp) / "big.bin"
        with big.open("wb") as handle:
            for _ in range(mib):
                handle.write(os.urandom(MIB))
        size = big.stat().st_size
        with Client(cluster.address) as native:
            say(f"large object: {mib} MiB", quiet=quiet)

            def s3_put() -> None:
                with big.open("rb") as handle:
                    s3.upload_fileobj(handle, BUCKET, "big", Config=transfer)

            def s3_get() -> None:
                s3.download_file(BUCKET, "big", str(Path(tmp) / "s3-out.bin"), Config=transfer)

            def native_put() -> None:
                native.put(BUCKET, "native-big", big)

            def native_get() -> None:
                native.download(BUCKET, "native-big", Path(tmp) / "native-out.bin")

            s3_put_s, native_put_s = _best(s3_put, runs), _best(native_put, runs)
            s3_get_s, native_get_s = _best(s3_get, runs), _best(native_get, runs)
            if (Path(tmp) / "s3-out.bin").read_bytes() != big.read_bytes():
                raise SystemExit("the object read back through the gateway differs")
            for metric, gw_s, sdk_s, key in (
                (f"PUT {mib} MiB (multipart, 8 MiB parts)", s3_put_s, native_put_s, "put"),
                (f"GET {mib} MiB (download_file)", s3_get_s, native_get_s, "get"),
            ):
                report.add(
                    Row(metric, "MiB/s", _throughput(size, gw_s), _throughput(size, sdk_s), NATIVE),
                    key=f"s3_{key}_large_mib_s",
                    baseline_key=f"native_{key}_large_mib_s",
                )

            say("8 MiB single-request objects", quiet=quiet)
            medium = os.urandom(8 * MIB)
            put8 = _best(lambda: s3.put_object(Bucket=BUCKET, Key="m", Body=medium), runs)
            native_put8 = _best(lambda: native.put(BUCKET, "native-m", medium), runs)
            get8 = _best(lambda: s3.get_object(Bucket=BUCKET, Key="m")["Body"].read(), runs)
            native_get8 = _best(lambda: native.get(BUCKET, "native-m"), runs)
            for metric, gw_s, sdk_s, key in (
                ("PUT 8 MiB (put_object)", put8, native_put8, "put"),
                ("GET 8 MiB (get_object)", get8, native_get8, "get"),
            ):
                report.add(
                    Row(metric, "MiB/s", _throughput(8 * MIB, gw_s), _throughput(8 * MIB, sdk_s),
                        NATIVE),
                    key=f"s3_{key}_8mib_mib_s",
                    baseline_key=f"native_{key}_8mib_mib_s",
                )  # fmt: skip

            say(f"{small} small objects (4 KiB), one at a time", quiet=quiet)
            payload = os.urandom(4096)

            def ops(fn: Any) -> float:
                started = time.perf_counter()
                for i in range(small):
                    fn(i)
                return small / (time.perf_counter() - started)

            rows = (
                ("PUT 4 KiB", lambda i: s3.put_object(Bucket=BUCKET, Key=f"s/{i}", Body=payload),
                 lambda i: native.put(BUCKET, f"n/{i}", payload), "put"),
                ("GET 4 KiB", lambda i: s3.get_object(Bucket=BUCKET, Key=f"s/{i}")["Body"].read(),
                 lambda i: native.get(BUCKET, f"n/{i}"), "get"),
            )  # fmt: skip
            for metric, via_s3, via_sdk, key in rows:
                report.add(
                    Row(metric, "ops/s", ops(via_s3), ops(via_sdk), NATIVE),
                    key=f"s3_{key}_4kib_ops_s",
                    baseline_key=f"native_{key}_4kib_ops_s",
                )
            s3.download_fileobj(BUCKET, "m", io.BytesIO())
        report.notes.append(
            "boto3 signs every request (SigV4 with a SHA-256 of the body over plain HTTP) and "
            "the gateway hashes MD5 (the ETag) and SHA-256 while streaming; the native SDK does "
            "neither. Best of "
            f"{runs} runs per figure, on one machine with the cluster and both clients."
        )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=256, help="large object size (default 256)")
    parser.add_argument("--small", type=int, default=200, help="4 KiB objects (default 200)")
    parser.add_argument("--runs", type=int, default=2, help="runs per figure (best is kept)")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args()
    emit(run(args.mib, args.small, args.runs, quiet=args.json), args.json)


if __name__ == "__main__":
    main()
