"""Multipart uploads through the gateway: 100 MiB in 8 MiB parts composed without copying,
the multipart API and its errors, UploadPartCopy, GetObject partNumber, and parts whose
sizes do not line up with one stripe size."""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from shoal.client import Client
from shoal.s3.gateway import MULTIPART_BUCKET
from tests.s3.conftest import Gateway
from tests.s3.test_objects import code_of

MiB = 1024 * 1024


def _listed(etags: list[str]) -> list[dict[str, Any]]:
    return [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]


def _md5_of_md5s(parts: list[bytes]) -> str:
    digest = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    return f'"{digest}-{len(parts)}"'


def test_100_mib_in_8_mib_parts_reads_back_byte_identical(
    s3: Any, bucket: str, native: Client
) -> None:
    body = os.urandom(100 * MiB + 12345)
    config = TransferConfig(
        multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB, max_concurrency=4
    )
    s3.upload_fileobj(io.BytesIO(body), bucket, "big/object.bin", Config=config)
    head = s3.head_object(Bucket=bucket, Key="big/object.bin")
    assert head["ContentLength"] == len(body)
    parts = [body[i : i + 8 * MiB] for i in range(0, len(body), 8 * MiB)]
    assert head["ETag"] == _md5_of_md5s(parts)
    # Completion composed the parts' stripes (the native etag of a composed object ends with
    # the source count) rather than copying them, and left no part behind.
    info = native.head(bucket, "big/object.bin")
    assert info.etag.endswith(f"-{len(parts)}")
    assert info.stripe_count == -(-len(body) // MiB)
    out = io.BytesIO()
    s3.download_fileobj(bucket, "big/object.bin", out, Config=config)
    assert hashlib.sha256(out.getvalue()).digest() == hashlib.sha256(body).digest()
    ranged = s3.get_object(Bucket=bucket, Key="big/object.bin", Range="bytes=8388600-8388700")
    assert ranged["Body"].read() == body[8388600:8388701]
    third = s3.get_object(Bucket=bucket, Key="big/object.bin", PartNumber=3)
    assert third["PartsCount"] == len(parts)
    assert third["Body"].read() == parts[2]
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)
    assert not [i for i in native.list(MULTIPART_BUCKET, f"uploads/{bucket}/")]


def test_multipart_api_and_its_errors(s3: Any, bucket: str, native: Client) -> None:
    key = "mp/manual"
    upload = s3.create_multipart_upload(
        Bucket=bucket, Key=key, ContentType="text/x", Metadata={"m": "1"}
    )
    uid = upload["UploadId"]
    listed = s3.list_multipart_uploads(Bucket=bucket)
    assert [(u["Key"], u["UploadId"]) for u in listed["Uploads"]] == [(key, uid)]
    assert listed["Uploads"][0]["Initiator"]["DisplayName"] == "alice"
    p1, p2, p3 = os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(1234)
    etags = []
    for number, data in ((1, p1), (2, p2), (3, p3)):
        reply = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=number, Body=data)
        assert reply["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
        etags.append(reply["ETag"])
    parts = s3.list_parts(Bucket=bucket, Key=key, UploadId=uid)["Parts"]
    assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in parts] == [
        (1, len(p1), etags[0]), (2, len(p2), etags[1]), (3, len(p3), etags[2]),
    ]  # fmt: skip
    page = s3.list_parts(Bucket=bucket, Key=key, UploadId=uid, MaxParts=2)
    assert page["IsTruncated"]
    assert page["NextPartNumberMarker"] == 2
    for wrong, code in [
        ([{"PartNumber": 1, "ETag": etags[0]}, {"PartNumber": 2, "ETag": '"00"'}], "InvalidPart"),
        (
            [{"PartNumber": 2, "ETag": etags[1]}, {"PartNumber": 1, "ETag": etags[0]}],
            "InvalidPartOrder",
        ),
        (
            [{"PartNumber": 3, "ETag": etags[2]}, {"PartNumber": 1, "ETag": etags[0]}],
            "InvalidPartOrder",
        ),
        ([{"PartNumber": 9, "ETag": etags[0]}], "InvalidPart"),
    ]:
        with pytest.raises(ClientError) as refused:
            s3.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=uid, MultipartUpload={"Parts": wrong}
            )
        assert code_of(refused) == code, wrong
    small = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=4, Body=b"tiny")
    with pytest.raises(ClientError) as too_small:
        s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=uid,
            MultipartUpload={"Parts": [
                {"PartNumber": 3, "ETag": etags[2]}, {"PartNumber": 4, "ETag": small["ETag"]},
            ]},
        )  # fmt: skip
    assert code_of(too_small) == "EntityTooSmall"
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=uid,
        MultipartUpload={"Parts": _listed(etags)},
    )  # fmt: skip
    assert done["ETag"] == _md5_of_md5s([p1, p2, p3])
    got = s3.get_object(Bucket=bucket, Key=key)
    assert got["Body"].read() == p1 + p2 + p3
    assert got["ContentType"] == "text/x"
    assert got["Metadata"] == {"m": "1"}
    assert s3.get_object(Bucket=bucket, Key=key, PartNumber=2)["Body"].read() == p2
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)
    # The unlisted part 4 went with the upload.
    assert not [i for i in native.list(MULTIPART_BUCKET, f"parts/{uid}/")]
    with pytest.raises(ClientError) as gone:
        s3.list_parts(Bucket=bucket, Key=key, UploadId=uid)
    assert code_of(gone) == "NoSuchUpload"


def test_abort_removes_the_parts(s3: Any, bucket: str, native: Client) -> None:
    uid = s3.create_multipart_upload(Bucket=bucket, Key="aborted")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="aborted", UploadId=uid, PartNumber=1, Body=b"x" * 1000)
    assert [i.key for i in native.list(MULTIPART_BUCKET, f"parts/{uid}/")]
    s3.abort_multipart_upload(Bucket=bucket, Key="aborted", UploadId=uid)
    assert not [i.key for i in native.list(MULTIPART_BUCKET, f"parts/{uid}/")]
    with pytest.raises(ClientError) as again:
        s3.abort_multipart_upload(Bucket=bucket, Key="aborted", UploadId=uid)
    assert code_of(again) == "NoSuchUpload"
    with pytest.raises(ClientError) as unknown:
        s3.upload_part(Bucket=bucket, Key="aborted", UploadId="0" * 32, PartNumber=1, Body=b"x")
    assert code_of(unknown) == "NoSuchUpload"


def test_upload_part_copy_and_unaligned_part_sizes(s3: Any, bucket: str, native: Client) -> None:
    source = os.urandom(7 * MiB + 99)
    s3.put_object(Bucket=bucket, Key="source", Body=source)
    uid = s3.create_multipart_upload(Bucket=bucket, Key="assembled")["UploadId"]
    # 5 MiB + 7 bytes is not a whole number of 1 MiB stripes, so part 1 picks its own stripe
    # size and the rest of the upload follows it.
    first = s3.upload_part_copy(
        Bucket=bucket, Key="assembled", UploadId=uid, PartNumber=1,
        CopySource={"Bucket": bucket, "Key": "source"}, CopySourceRange=f"bytes=0-{5 * MiB + 6}",
    )  # fmt: skip
    second = s3.upload_part(
        Bucket=bucket, Key="assembled", UploadId=uid, PartNumber=2, Body=b"tail"
    )
    s3.complete_multipart_upload(
        Bucket=bucket, Key="assembled", UploadId=uid,
        MultipartUpload={"Parts": [
            {"PartNumber": 1, "ETag": first["CopyPartResult"]["ETag"]},
            {"PartNumber": 2, "ETag": second["ETag"]},
        ]},
    )  # fmt: skip
    assert (
        s3.get_object(Bucket=bucket, Key="assembled")["Body"].read()
        == source[: 5 * MiB + 7] + b"tail"
    )
    # Parts of different sizes cannot share one stripe layout: completion copies instead.
    uid = s3.create_multipart_upload(Bucket=bucket, Key="mixed")["UploadId"]
    a, b, c = os.urandom(6 * MiB), os.urandom(5 * MiB + 1), os.urandom(10)
    etags = [
        s3.upload_part(Bucket=bucket, Key="mixed", UploadId=uid, PartNumber=n, Body=d)["ETag"]
        for n, d in ((1, a), (2, b), (3, c))
    ]
    s3.complete_multipart_upload(
        Bucket=bucket, Key="mixed", UploadId=uid,
        MultipartUpload={"Parts": _listed(etags)},
    )  # fmt: skip
    assert s3.get_object(Bucket=bucket, Key="mixed")["Body"].read() == a + b + c
    assert s3.get_object(Bucket=bucket, Key="mixed", PartNumber=2)["Body"].read() == b
    assert not [i for i in native.list(MULTIPART_BUCKET, f"parts/{uid}/")]


def test_uploads_survive_a_gateway_restart(
    gateway: Gateway, s3: Any, bucket: str, native: Client
) -> None:
    """Parts and upload records live in the cluster, so a restarted gateway completes the
    upload; without the restarted gateway's memory of part 1's stripe size, the last part
    (6 MiB + 6 bytes) is written with a stripe size of its own and realigned at completion."""
    uid = s3.create_multipart_upload(Bucket=bucket, Key="restarted")["UploadId"]
    first, last = os.urandom(8 * MiB), os.urandom(6 * MiB + 6)
    one = s3.upload_part(Bucket=bucket, Key="restarted", UploadId=uid, PartNumber=1, Body=first)
    assert gateway.cluster.stop_s3() == 0
    gateway.cluster.start_s3(credentials=str(gateway.credentials))
    two = s3.upload_part(Bucket=bucket, Key="restarted", UploadId=uid, PartNumber=2, Body=last)
    stripes = {i.key: i.stripe_bytes for i in native.list(MULTIPART_BUCKET, f"parts/{uid}/")}
    assert len(set(stripes.values())) == 2
    s3.complete_multipart_upload(
        Bucket=bucket, Key="restarted", UploadId=uid,
        MultipartUpload={"Parts": _listed([one["ETag"], two["ETag"]])},
    )  # fmt: skip
    assert s3.get_object(Bucket=bucket, Key="restarted")["Body"].read() == first + last
    assert native.head(bucket, "restarted").etag.endswith("-2")  # composed, not copied
