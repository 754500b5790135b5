"""boto3 against the gateway: the issue's snippet, objects, metadata, ranges, conditions,
listings with delimiters and pagination, presigned URLs, copies and batch deletes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from shoal.client import AsyncClient, Client
from tests.harness.cluster import wait_for
from tests.s3.conftest import ALICE, Gateway, s3_client


def code_of(error: pytest.ExceptionInfo[ClientError]) -> str:
    return str(error.value.response["Error"]["Code"])


def test_the_issue_snippet_runs_unchanged(gateway: Gateway, tmp_path: Path) -> None:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=gateway.endpoint,
        aws_access_key_id=ALICE.access_key,
        aws_secret_access_key=ALICE.secret_key,
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket="my-bucket-name")
    (tmp_path / "test.txt").write_bytes(b"hello from boto3\n")
    with open(tmp_path / "test.txt", "rb") as f:
        s3.upload_fileobj(f, "my-bucket-name", "test.txt")
    got = s3.get_object(Bucket="my-bucket-name", Key="test.txt")
    assert got["Body"].read() == b"hello from boto3\n"
    digest = hashlib.md5(b"hello from boto3\n").hexdigest()
    assert got["ETag"] == f'"{digest}"'


def test_put_get_head_delete_with_metadata(s3: Any, bucket: str, native: Client) -> None:
    body = os.urandom(3 * 1024 * 1024 + 17)
    put = s3.put_object(
        Bucket=bucket, Key="dir/obj.bin", Body=body, ContentType="application/x-test",
        Metadata={"color": "blue", "Owner-Name": "alice"}, CacheControl="max-age=60",
        ContentDisposition='attachment; filename="obj.bin"', ContentLanguage="en",
        ContentEncoding="identity",
    )  # fmt: skip
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    head = s3.head_object(Bucket=bucket, Key="dir/obj.bin")
    assert head["ContentLength"] == len(body)
    assert head["ContentType"] == "application/x-test"
    assert head["Metadata"] == {"color": "blue", "owner-name": "alice"}
    assert head["CacheControl"] == "max-age=60"
    assert head["ContentDisposition"] == 'attachment; filename="obj.bin"'
    assert head["ContentLanguage"] == "en"
    assert head["ETag"] == put["ETag"]
    got = s3.get_object(Bucket=bucket, Key="dir/obj.bin")
    assert got["Body"].read() == body
    assert got["Metadata"] == head["Metadata"]
    # The metadata is stored atomically with the object in Shoal itself.
    info = native.head(bucket, "dir/obj.bin")
    assert info.metadata["x-amz-meta-color"] == "blue"
    assert info.metadata["content-type"] == "application/x-test"
    s3.delete_object(Bucket=bucket, Key="dir/obj.bin")
    with pytest.raises(ClientError) as missing:
        s3.get_object(Bucket=bucket, Key="dir/obj.bin")
    assert code_of(missing) == "NoSuchKey"
    s3.delete_object(Bucket=bucket, Key="dir/obj.bin")  # deleting twice is fine, as in S3
    empty = s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    assert s3.get_object(Bucket=bucket, Key="empty")["Body"].read() == b""
    assert empty["ETag"] == f'"{hashlib.md5(b"").hexdigest()}"'


def test_ranged_reads(s3: Any, bucket: str) -> None:
    body = os.urandom(2 * 1024 * 1024 + 5)
    s3.put_object(Bucket=bucket, Key="r", Body=body)
    for header, expected in [
        ("bytes=0-9", body[:10]),
        ("bytes=1048570-1048590", body[1048570:1048591]),
        ("bytes=2097000-", body[2097000:]),
        ("bytes=-100", body[-100:]),
        ("bytes=10-99999999", body[10:]),
    ]:
        got = s3.get_object(Bucket=bucket, Key="r", Range=header)
        assert got["Body"].read() == expected, header
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert got["ContentRange"].endswith(f"/{len(body)}")
    with pytest.raises(ClientError) as beyond:
        s3.get_object(Bucket=bucket, Key="r", Range=f"bytes={len(body)}-")
    assert code_of(beyond) == "InvalidRange"
    assert beyond.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416


def test_conditional_reads(s3: Any, bucket: str) -> None:
    put = s3.put_object(Bucket=bucket, Key="c", Body=b"conditional")
    etag = put["ETag"]
    modified = s3.head_object(Bucket=bucket, Key="c")["LastModified"]
    before, after = modified - timedelta(hours=1), modified + timedelta(hours=1)
    assert s3.get_object(Bucket=bucket, Key="c", IfMatch=etag)["Body"].read() == b"conditional"
    assert s3.get_object(Bucket=bucket, Key="c", IfNoneMatch='"other"')["Body"].read()
    assert s3.get_object(Bucket=bucket, Key="c", IfModifiedSince=before)["Body"].read()
    assert s3.get_object(Bucket=bucket, Key="c", IfUnmodifiedSince=after)["Body"].read()
    cases = [
        ({"IfMatch": '"0123"'}, "412", "PreconditionFailed"),
        ({"IfUnmodifiedSince": before}, "412", "PreconditionFailed"),
        ({"IfNoneMatch": etag}, "304", "304"),
        ({"IfModifiedSince": after}, "304", "304"),
        # If-Match holds, so If-Unmodified-Since is not evaluated (RFC 7232, as S3).
    ]
    for kwargs, status, code in cases:
        with pytest.raises(ClientError) as failed:
            s3.get_object(Bucket=bucket, Key="c", **kwargs)
        assert str(failed.value.response["ResponseMetadata"]["HTTPStatusCode"]) == status
        assert code_of(failed) in (code, status), kwargs
    assert s3.get_object(Bucket=bucket, Key="c", IfMatch=etag, IfUnmodifiedSince=before)
    with pytest.raises(ClientError) as head:
        s3.head_object(Bucket=bucket, Key="c", IfNoneMatch=etag)
    assert head.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304


async def _fill(address: str, bucket: str, keys: list[str]) -> None:
    async with AsyncClient(address) as client:
        slots = asyncio.Semaphore(16)

        async def put(key: str) -> None:
            async with slots:
                await client.put(bucket, key, b"" if key.startswith("logs/") else key.encode())

        await asyncio.gather(*(put(key) for key in keys))


def test_listing_with_delimiters_and_pagination(s3: Any, bucket: str, gateway: Gateway) -> None:
    keys = [f"logs/2026/{i:04d}.txt" for i in range(1100)]
    keys += [f"photos/{name}/{i}.jpg" for name in ("a", "b", "c") for i in range(3)]
    keys += ["readme.md", "zeta", "a b+c%d.txt"]
    asyncio.run(_fill(gateway.cluster.address, bucket, keys))
    paginator = s3.get_paginator("list_objects_v2")
    listed = [
        o["Key"] for page in paginator.paginate(Bucket=bucket) for o in page.get("Contents", [])
    ]
    assert listed == sorted(keys)
    pages = list(
        paginator.paginate(Bucket=bucket, Prefix="logs/", PaginationConfig={"PageSize": 500})
    )
    assert [p["KeyCount"] for p in pages] == [500, 500, 100]
    top = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["logs/", "photos/"]
    assert [o["Key"] for o in top["Contents"]] == ["a b+c%d.txt", "readme.md", "zeta"]
    photos = s3.list_objects_v2(Bucket=bucket, Prefix="photos/", Delimiter="/", MaxKeys=2)
    assert [p["Prefix"] for p in photos["CommonPrefixes"]] == ["photos/a/", "photos/b/"]
    assert photos["IsTruncated"]
    rest = s3.list_objects_v2(
        Bucket=bucket, Prefix="photos/", Delimiter="/",
        ContinuationToken=photos["NextContinuationToken"],
    )  # fmt: skip
    assert [p["Prefix"] for p in rest["CommonPrefixes"]] == ["photos/c/"]
    assert not rest["IsTruncated"]
    after = s3.list_objects_v2(Bucket=bucket, StartAfter="photos/c/2.jpg")
    assert [o["Key"] for o in after["Contents"]] == ["readme.md", "zeta"]
    v1 = list(s3.get_paginator("list_objects").paginate(Bucket=bucket, Delimiter="/"))
    assert [p["Prefix"] for page in v1 for p in page.get("CommonPrefixes", [])] == [
        "logs/",
        "photos/",
    ]
    v1_all = [
        o["Key"]
        for page in s3.get_paginator("list_objects").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
    ]
    assert v1_all == sorted(keys)
    owner = s3.list_objects(Bucket=bucket, MaxKeys=1)["Contents"][0]["Owner"]
    assert owner["DisplayName"] == "alice"


def test_list_object_versions_for_an_unversioned_bucket(s3: Any, bucket: str) -> None:
    for key in ("a", "b/c", "b/d"):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    listed = s3.list_object_versions(Bucket=bucket)
    assert [(v["Key"], v["VersionId"], v["IsLatest"]) for v in listed["Versions"]] == [
        ("a", "null", True), ("b/c", "null", True), ("b/d", "null", True),
    ]  # fmt: skip
    grouped = s3.list_object_versions(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in grouped["CommonPrefixes"]] == ["b/"]
    assert s3.get_bucket_versioning(Bucket=bucket).get("Status") is None
    # Version-aware batch delete, as cleanup tools issue it.
    deleted = s3.delete_objects(
        Bucket=bucket,
        Delete={
            "Objects": [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in listed["Versions"]]
        },
    )
    assert sorted((d["Key"], d["VersionId"]) for d in deleted["Deleted"]) == [
        ("a", "null"), ("b/c", "null"), ("b/d", "null"),
    ]  # fmt: skip
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    s3.delete_bucket(Bucket=bucket)


def test_delete_objects_reports_each_key(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="keep", Body=b"1")
    s3.put_object(Bucket=bucket, Key="gone", Body=b"2")
    reply = s3.delete_objects(
        Bucket=bucket,
        Delete={
            "Objects": [
                {"Key": "gone"},
                {"Key": "never-existed"},
                {"Key": "keep", "VersionId": "v7"},
            ]
        },
    )
    assert sorted(d["Key"] for d in reply["Deleted"]) == ["gone", "never-existed"]
    assert [(e["Key"], e["Code"]) for e in reply["Errors"]] == [("keep", "InvalidArgument")]
    quiet = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "x"}], "Quiet": True})
    assert "Deleted" not in quiet


def test_presigned_get_with_plain_urllib(s3: Any, bucket: str, gateway: Gateway) -> None:
    body = os.urandom(1500 * 1024)
    s3.put_object(Bucket=bucket, Key="shared/report.bin", Body=body)
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "shared/report.bin"}, ExpiresIn=300
    )
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.read() == body
    # boto3 presigns with Signature Version 2 by default; with s3v4 the URL is SigV4.
    assert "AWSAccessKeyId=" in url
    v4 = s3_client(gateway.endpoint, ALICE, signature_version="s3v4")
    v4_url = v4.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "shared/report.bin"}, ExpiresIn=300
    )
    assert "X-Amz-Signature=" in v4_url
    with urllib.request.urlopen(v4_url, timeout=30) as response:
        assert response.read() == body
    put_url = v4.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "uploaded"}, ExpiresIn=300
    )
    request = urllib.request.Request(put_url, data=b"via presigned put", method="PUT")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
    assert s3.get_object(Bucket=bucket, Key="uploaded")["Body"].read() == b"via presigned put"
    tampered = url.replace("shared/report.bin", "shared/other.bin")
    for bad in (tampered, v4_url.replace("shared/report.bin", "shared/other.bin")):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(bad, timeout=30)
        assert refused.value.code == 403
        assert b"<Code>SignatureDoesNotMatch</Code>" in refused.value.read()
    expired = v4.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "shared/report.bin"}, ExpiresIn=1
    )
    # The URL is good for 1 s of the gateway's clock: poll it (deadline-bounded) until it
    # is refused, then check how.
    refusals: list[urllib.error.HTTPError] = []

    def refused_now() -> bool:
        try:
            with urllib.request.urlopen(expired, timeout=30):
                return False
        except urllib.error.HTTPError as error:
            refusals.append(error)
            return True

    wait_for(refused_now, timeout_s=10, what="the presigned URL to expire")
    assert refusals[-1].code == 403
    assert b"<Code>AccessDenied</Code>" in refusals[-1].read()


def test_copy_object_and_replace_metadata(
    s3: Any, bucket: str, new_bucket: Callable[[], str]
) -> None:
    other = new_bucket()
    body = os.urandom(1024 * 1024 + 3)
    s3.put_object(Bucket=bucket, Key="src", Body=body, Metadata={"a": "1"}, ContentType="text/x")
    copied = s3.copy_object(Bucket=other, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    assert copied["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    head = s3.head_object(Bucket=other, Key="dst")
    assert head["Metadata"] == {"a": "1"}
    assert head["ContentType"] == "text/x"
    assert s3.get_object(Bucket=other, Key="dst")["Body"].read() == body
    s3.copy_object(
        Bucket=bucket, Key="src", CopySource=f"{bucket}/src", Metadata={"b": "2"},
        MetadataDirective="REPLACE", ContentType="text/y",
    )  # fmt: skip
    head = s3.head_object(Bucket=bucket, Key="src")
    assert head["Metadata"] == {"b": "2"}
    assert head["ContentType"] == "text/y"
    assert s3.get_object(Bucket=bucket, Key="src")["Body"].read() == body
    with pytest.raises(ClientError) as onto_itself:
        s3.copy_object(Bucket=bucket, Key="src", CopySource=f"{bucket}/src")
    assert code_of(onto_itself) == "InvalidRequest"
    with pytest.raises(ClientError) as condition:
        s3.copy_object(Bucket=bucket, Key="c2", CopySource=f"{bucket}/src", CopySourceIfMatch='"x"')
    assert code_of(condition) == "PreconditionFailed"


def test_checksums_current_sdks_send_are_verified(s3: Any, bucket: str) -> None:
    for algorithm in ("CRC32", "SHA1", "SHA256"):
        reply = s3.put_object(
            Bucket=bucket, Key=algorithm, Body=b"x" * 1000, ChecksumAlgorithm=algorithm
        )
        assert f"Checksum{algorithm}" in reply, algorithm
    # CRC32C needs botocore[crt] to compute; send the known value of the standard check input.
    crc32c = base64.b64encode(bytes.fromhex("e3069283")).decode()
    s3.put_object(Bucket=bucket, Key="crc32c", Body=b"123456789", ChecksumCRC32C=crc32c)
    with pytest.raises(ClientError) as wrong_crc32c:
        s3.put_object(Bucket=bucket, Key="crc32c", Body=b"123456780", ChecksumCRC32C=crc32c)
    assert code_of(wrong_crc32c) == "BadDigest"
    got = s3.get_object(Bucket=bucket, Key="SHA256", ChecksumMode="ENABLED")
    assert got["Body"].read() == b"x" * 1000
    assert got["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(b"x" * 1000).digest()).decode()
    with pytest.raises(ClientError) as mismatch:
        s3.put_object(Bucket=bucket, Key="bad", Body=b"abc", ChecksumCRC32="AAAAAA==")
    assert code_of(mismatch) == "BadDigest"
    with pytest.raises(ClientError) as md5:
        s3.put_object(
            Bucket=bucket, Key="bad", Body=b"abc", ContentMD5=base64.b64encode(b"0" * 16).decode()
        )
    assert code_of(md5) == "BadDigest"
    with pytest.raises(ClientError) as invalid:
        s3.put_object(Bucket=bucket, Key="bad", Body=b"abc", ContentMD5="not-base64!")
    assert code_of(invalid) == "InvalidDigest"
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="bad")  # nothing was committed


def test_buckets_have_owners(s3: Any, s3_bob: Any, bucket: str) -> None:
    listed = s3.list_buckets()
    assert listed["Owner"]["DisplayName"] == "alice"
    assert bucket in [b["Name"] for b in listed["Buckets"]]
    assert bucket not in [b["Name"] for b in s3_bob.list_buckets()["Buckets"]]
    assert all(not b["Name"].startswith("shoal-") for b in listed["Buckets"])
    s3.head_bucket(Bucket=bucket)
    assert s3.get_bucket_location(Bucket=bucket).get("LocationConstraint") in (None, "")
    acl = s3.get_bucket_acl(Bucket=bucket)
    assert acl["Owner"]["DisplayName"] == "alice"
    with pytest.raises(ClientError) as other:
        s3_bob.list_objects_v2(Bucket=bucket)
    assert code_of(other) == "AccessDenied"
    with pytest.raises(ClientError) as taken:
        s3_bob.create_bucket(Bucket=bucket)
    assert code_of(taken) == "BucketAlreadyExists"
    with pytest.raises(ClientError) as mine:
        s3.create_bucket(Bucket=bucket)
    assert code_of(mine) == "BucketAlreadyOwnedByYou"


def test_download_large_object_streams_back(s3: Any, bucket: str, tmp_path: Path) -> None:
    body = os.urandom(9 * 1024 * 1024 + 1)
    s3.upload_fileobj(io.BytesIO(body), bucket, "large", Config=None)
    out = tmp_path / "large"
    s3.download_file(bucket, "large", str(out))
    assert out.read_bytes() == body
    assert s3.head_object(Bucket=bucket, Key="large")["LastModified"] <= datetime.now(
        UTC
    ) + timedelta(seconds=5)
