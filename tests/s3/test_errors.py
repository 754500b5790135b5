"""Every error the issue names comes back as an S3 XML error document with its status and
code: auth failures, bucket rules, digests, unknown operations; and raw aws-chunked uploads
(signed chunks, as the Java and Go SDKs send them) are accepted and verified."""

from __future__ import annotations

import hashlib
import http.client
import urllib.parse
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError

from shoal.s3 import sigv4
from shoal.s3.credentials import User
from tests.s3.conftest import ALICE, Gateway, s3_client
from tests.s3.test_objects import code_of


def test_wrong_keys_and_signatures(gateway: Gateway, bucket: str) -> None:
    unknown = s3_client(gateway.endpoint, User("AKIDNOBODY0000000000", "x" * 30, "x", "x"))
    with pytest.raises(ClientError) as no_key:
        unknown.list_buckets()
    assert code_of(no_key) == "InvalidAccessKeyId"
    assert no_key.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    wrong = s3_client(gateway.endpoint, User(ALICE.access_key, "wrong-secret-0123456789", "a", "a"))
    for call in (wrong.list_buckets, lambda: wrong.put_object(Bucket=bucket, Key="k", Body=b"x")):
        with pytest.raises(ClientError) as mismatch:
            call()
        assert code_of(mismatch) == "SignatureDoesNotMatch"
    status, body = _raw(gateway, "GET", f"/{bucket}")
    assert status == 403
    assert b"<Code>AccessDenied</Code>" in body


def _raw(
    gateway: Gateway,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    url = urllib.parse.urlsplit(gateway.endpoint)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _signed_headers(
    gateway: Gateway, method: str, path: str, payload: str, extra: dict[str, str]
) -> dict[str, str]:
    """Sign a raw request with shoal.s3.sigv4 (checked against AWS's own examples)."""
    host = urllib.parse.urlsplit(gateway.endpoint).netloc
    amz_date = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    headers = {"host": host, "x-amz-date": amz_date, "x-amz-content-sha256": payload, **extra}
    signed = sorted(headers)
    request = sigv4.canonical_request(
        method, path, [], {k: [v] for k, v in headers.items()}, signed, payload
    )
    scope = f"{amz_date[:8]}/us-east-1/s3/aws4_request"
    key = sigv4.signing_key(ALICE.secret_key, amz_date[:8], "us-east-1")
    signature = sigv4.sign(key, sigv4.string_to_sign(amz_date, scope, request))
    headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={ALICE.access_key}/{scope}, "
        f"SignedHeaders={';'.join(signed)}, Signature={signature}"
    )
    headers["_key"], headers["_scope"], headers["_seed"] = key.hex(), scope, signature
    return headers


def test_signed_chunked_upload(gateway: Gateway, s3: Any, bucket: str) -> None:
    data = [b"a" * 65536, b"b" * 70000, b"c" * 17]
    decoded = sum(len(d) for d in data)

    def encode(headers: dict[str, str], tamper: bool = False) -> bytes:
        key, scope, previous = (
            bytes.fromhex(headers.pop("_key")),
            headers.pop("_scope"),
            headers.pop("_seed"),
        )
        body = b""
        for chunk in [*data, b""]:
            text = sigv4.chunk_string_to_sign(
                headers["x-amz-date"], scope, previous, hashlib.sha256(chunk).hexdigest()
            )
            previous = sigv4.sign(key, text)
            sent = chunk.replace(b"b", b"B", 1) if tamper else chunk
            body += f"{len(chunk):x};chunk-signature={previous}\r\n".encode() + sent + b"\r\n"
        return body

    extra = {"content-encoding": "aws-chunked", "x-amz-decoded-content-length": str(decoded)}
    headers = _signed_headers(gateway, "PUT", f"/{bucket}/chunked", sigv4.STREAMING_SIGNED, extra)
    status, reply = _raw(gateway, "PUT", f"/{bucket}/chunked", encode(headers), headers)
    assert status == 200, reply
    got = s3.get_object(Bucket=bucket, Key="chunked")
    assert got["Body"].read() == b"".join(data)
    assert "ContentEncoding" not in got  # aws-chunked is transport, not stored
    headers = _signed_headers(gateway, "PUT", f"/{bucket}/tampered", sigv4.STREAMING_SIGNED, extra)
    status, reply = _raw(
        gateway, "PUT", f"/{bucket}/tampered", encode(headers, tamper=True), headers
    )
    assert status == 403
    assert b"<Code>SignatureDoesNotMatch</Code>" in reply
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="tampered")


def test_payload_hash_mismatch_is_refused(gateway: Gateway, bucket: str) -> None:
    declared = hashlib.sha256(b"what was signed").hexdigest()
    headers = _signed_headers(gateway, "PUT", f"/{bucket}/x", declared, {})
    for name in ("_key", "_scope", "_seed"):
        headers.pop(name)
    status, body = _raw(gateway, "PUT", f"/{bucket}/x", b"something else!", headers)
    assert status == 400
    assert b"<Code>XAmzContentSHA256Mismatch</Code>" in body


def test_bucket_errors(s3: Any, bucket: str) -> None:
    for name in ("ab", "UPPER", "has_underscore", "192.168.5.4", "a..b", "xn--bucket", "-start"):
        with pytest.raises(ClientError) as invalid:
            s3.create_bucket(Bucket=name)
        assert code_of(invalid) == "InvalidBucketName", name
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    with pytest.raises(ClientError) as not_empty:
        s3.delete_bucket(Bucket=bucket)
    assert code_of(not_empty) == "BucketNotEmpty"
    assert not_empty.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    with pytest.raises(ClientError) as missing:
        s3.list_objects_v2(Bucket="no-such-bucket-here")
    assert code_of(missing) == "NoSuchBucket"
    with pytest.raises(ClientError) as head_missing:
        s3.head_bucket(Bucket="no-such-bucket-here")
    assert head_missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as internal:
        s3.list_objects_v2(Bucket="shoal-jobs")
    assert code_of(internal) == "AccessDenied"
    s3.delete_object(Bucket=bucket, Key="k")
    s3.delete_bucket(Bucket=bucket)
    with pytest.raises(ClientError) as deleted:
        s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert code_of(deleted) == "NoSuchBucket"


def test_object_errors_and_unknown_operations(s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as too_large:
        s3.put_object(Bucket=bucket, Key="meta", Body=b"x", Metadata={"big": "v" * 2100})
    assert code_of(too_large) == "MetadataTooLarge"
    with pytest.raises(ClientError) as long_key:
        s3.put_object(Bucket=bucket, Key="k" * 1025, Body=b"x")
    assert code_of(long_key) == "KeyTooLongError"
    with pytest.raises(ClientError) as version:
        s3.get_object(Bucket=bucket, Key="k", VersionId="3HL4kqtJlcpXroDTDmJ")
    assert code_of(version) == "InvalidArgument"
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    for call in (
        lambda: s3.put_bucket_tagging(
            Bucket=bucket, Tagging={"TagSet": [{"Key": "a", "Value": "b"}]}
        ),
        lambda: s3.get_bucket_policy(Bucket=bucket),
        lambda: s3.get_object_tagging(Bucket=bucket, Key="k"),
        lambda: s3.get_bucket_lifecycle_configuration(Bucket=bucket),
    ):
        with pytest.raises(ClientError) as unsupported:
            call()
        assert code_of(unsupported) == "NotImplemented"
        assert unsupported.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501


def test_expect_100_continue_is_authenticated_first(gateway: Gateway, bucket: str) -> None:
    url = urllib.parse.urlsplit(gateway.endpoint)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        connection.putrequest("PUT", f"/{bucket}/expect")
        scope = "20260101/us-east-1/s3/aws4_request"
        for name, value in {
            "Content-Length": "1000000",
            "Expect": "100-continue",
            "Authorization": f"AWS4-HMAC-SHA256 Credential=AKIDNOBODY0000000000/{scope}, "
            "SignedHeaders=host, Signature=00",
            "x-amz-date": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
            "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
        }.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()  # answered without the body being sent
        assert response.status == 403
        assert b"InvalidAccessKeyId" in response.read()
    finally:
        connection.close()
