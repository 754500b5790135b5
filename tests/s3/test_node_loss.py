"""Reads through the gateway still succeed, byte for byte, with n - k nodes stopped."""

from __future__ import annotations

import io
import os
from typing import Any

from boto3.s3.transfer import TransferConfig

from tests.s3.conftest import Gateway

MiB = 1024 * 1024


def test_reads_survive_n_minus_k_stopped_nodes(gateway: Gateway, s3: Any, bucket: str) -> None:
    small, large = os.urandom(3 * MiB + 1), os.urandom(20 * MiB + 7)
    s3.put_object(Bucket=bucket, Key="small", Body=small)
    config = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB)
    s3.upload_fileobj(io.BytesIO(large), bucket, "large", Config=config)
    stopped = ["node-2", "node-5"]  # n - k = 2 of the (4, 6) cluster's 6 nodes
    gateway.cluster.stop_nodes(stopped)
    try:
        assert s3.get_object(Bucket=bucket, Key="small")["Body"].read() == small
        out = io.BytesIO()
        s3.download_fileobj(bucket, "large", out, Config=config)
        assert out.getvalue() == large
        ranged = s3.get_object(Bucket=bucket, Key="large", Range="bytes=9000000-9000099")
        assert ranged["Body"].read() == large[9000000:9000100]
        listed = s3.list_objects_v2(Bucket=bucket)
        assert [o["Key"] for o in listed["Contents"]] == ["large", "small"]
    finally:
        gateway.cluster.start_nodes(stopped)
