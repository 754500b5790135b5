"""SigV4 (shoal.s3.sigv4) against the examples in the AWS S3 documentation ("Signature
Calculations for the Authorization Header" and "... Transferring Payload in Multiple Chunks",
"Authenticating Requests: Using Query Parameters"), and the aws-chunked body decoder."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime

import pytest

from shoal.s3 import sigv4
from shoal.s3.body import ChunkedBody
from shoal.s3.checksums import BodyDigests
from shoal.s3.errors import S3Error

ACCESS = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DATE = "20130524T000000Z"
SCOPE_DATE = "20130524"


def _headers(**values: str) -> dict[str, list[str]]:
    return {name.replace("_", "-"): [value] for name, value in values.items()}


def _credential(signed: str, signature: str = "") -> sigv4.Credential:
    return sigv4.Credential(
        ACCESS, SCOPE_DATE, "us-east-1", "s3", tuple(signed.split(";")), signature, DATE
    )


def _signature(
    method: str, path: str, query: list[tuple[str, str]], headers: dict[str, list[str]],
    signed: str, payload: str,
) -> str:  # fmt: skip
    request = sigv4.canonical_request(method, path, query, headers, signed.split(";"), payload)
    text = sigv4.string_to_sign(DATE, f"{SCOPE_DATE}/us-east-1/s3/aws4_request", request)
    return sigv4.sign(sigv4.signing_key(SECRET, SCOPE_DATE, "us-east-1"), text)


def test_get_object_with_range() -> None:
    headers = _headers(
        host="examplebucket.s3.amazonaws.com",
        range="bytes=0-9",
        x_amz_content_sha256=sigv4.EMPTY_SHA256,
        x_amz_date=DATE,
    )
    signed = "host;range;x-amz-content-sha256;x-amz-date"
    expected = "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    assert _signature("GET", "/test.txt", [], headers, signed, sigv4.EMPTY_SHA256) == expected
    verified = sigv4.verify(
        _credential(signed, expected), SECRET, method="GET", raw_path="/test.txt", query=[],
        headers=headers, payload_hash=sigv4.EMPTY_SHA256,
    )  # fmt: skip
    assert verified.signature == expected


def test_put_object_with_a_dollar_in_the_key() -> None:
    payload = hashlib.sha256(b"Welcome to Amazon S3.").hexdigest()
    assert payload == "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
    headers = _headers(
        date="Fri, 24 May 2013 00:00:00 GMT",
        host="examplebucket.s3.amazonaws.com",
        x_amz_content_sha256=payload,
        x_amz_date=DATE,
        x_amz_storage_class="REDUCED_REDUNDANCY",
    )
    signed = "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class"
    # The client sends the key percent-encoded; the canonical URI encodes '$' once.
    assert sigv4.canonical_uri("/test%24file.text") == "/test%24file.text"
    assert _signature("PUT", "/test%24file.text", [], headers, signed, payload) == (
        "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
    )


def test_get_bucket_lifecycle_and_list_objects() -> None:
    headers = _headers(
        host="examplebucket.s3.amazonaws.com",
        x_amz_content_sha256=sigv4.EMPTY_SHA256,
        x_amz_date=DATE,
    )
    signed = "host;x-amz-content-sha256;x-amz-date"
    assert _signature("GET", "/", [("lifecycle", "")], headers, signed, sigv4.EMPTY_SHA256) == (
        "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
    )
    query = [("max-keys", "2"), ("prefix", "J")]
    assert _signature("GET", "/", query, headers, signed, sigv4.EMPTY_SHA256) == (
        "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
    )


def test_presigned_get_url() -> None:
    query = {
        "X-Amz-Algorithm": sigv4.ALGORITHM,
        "X-Amz-Credential": f"{ACCESS}/{SCOPE_DATE}/us-east-1/s3/aws4_request",
        "X-Amz-Date": DATE,
        "X-Amz-Expires": "86400",
        "X-Amz-SignedHeaders": "host",
        "X-Amz-Signature": "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404",
    }
    credential = sigv4.parse_presigned(query)
    assert credential.presigned
    assert credential.expires_s == 86400
    sigv4.verify(
        credential, SECRET, method="GET", raw_path="/test.txt", query=list(query.items()),
        headers=_headers(host="examplebucket.s3.amazonaws.com"),
        payload_hash=sigv4.UNSIGNED_PAYLOAD,
    )  # fmt: skip
    sigv4.check_time(credential, datetime(2013, 5, 24, 12, tzinfo=UTC))
    with pytest.raises(S3Error) as expired:
        sigv4.check_time(credential, datetime(2013, 5, 26, tzinfo=UTC))
    assert expired.value.code == "AccessDenied"


def test_a_wrong_secret_or_tampered_header_does_not_match() -> None:
    headers = _headers(
        host="examplebucket.s3.amazonaws.com",
        range="bytes=0-9",
        x_amz_content_sha256=sigv4.EMPTY_SHA256,
        x_amz_date=DATE,
    )
    signed = "host;range;x-amz-content-sha256;x-amz-date"
    good = "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    for secret, changed in ((SECRET + "x", headers), (SECRET, {**headers, "range": ["bytes=0-8"]})):
        with pytest.raises(S3Error) as error:
            sigv4.verify(
                _credential(signed, good), secret, method="GET", raw_path="/test.txt",
                query=[], headers=changed, payload_hash=sigv4.EMPTY_SHA256,
            )  # fmt: skip
        assert error.value.code == "SignatureDoesNotMatch"
        assert "StringToSign" in error.value.extra


def test_authorization_header_parsing_and_skew() -> None:
    header = (
        f"AWS4-HMAC-SHA256 Credential={ACCESS}/{SCOPE_DATE}/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=abc"
    )
    credential = sigv4.parse_authorization(header, DATE)
    assert credential.signed_headers == ("host", "x-amz-date")
    assert credential.scope == f"{SCOPE_DATE}/us-east-1/s3/aws4_request"
    with pytest.raises(S3Error) as skewed:
        sigv4.check_time(credential, datetime(2013, 5, 24, 1, tzinfo=UTC))
    assert skewed.value.code == "RequestTimeTooSkewed"
    with pytest.raises(S3Error) as malformed:
        sigv4.parse_authorization("AWS4-HMAC-SHA256 Credential=x", DATE)
    assert malformed.value.code == "AuthorizationHeaderMalformed"


CHUNK_SIGNATURES = (
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
)
SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"


def _chunked_example() -> tuple[sigv4.Verified, bytes]:
    headers = _headers(
        content_encoding="aws-chunked",
        content_length="66824",
        host="s3.amazonaws.com",
        x_amz_content_sha256=sigv4.STREAMING_SIGNED,
        x_amz_date=DATE,
        x_amz_decoded_content_length="66560",
        x_amz_storage_class="REDUCED_REDUNDANCY",
    )
    signed = (
        "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
        "x-amz-decoded-content-length;x-amz-storage-class"
    )
    verified = sigv4.verify(
        _credential(signed, SEED), SECRET, method="PUT", raw_path="/examplebucket/chunkObject.txt",
        query=[], headers=headers, payload_hash=sigv4.STREAMING_SIGNED,
    )  # fmt: skip
    body = b""
    for size, signature in zip((65536, 1024, 0), CHUNK_SIGNATURES, strict=True):
        body += f"{size:x};chunk-signature={signature}\r\n".encode() + b"a" * size + b"\r\n"
    assert len(body) == 66824
    return verified, body


async def _decode(verified: sigv4.Verified | None, body: bytes, length: int) -> bytes:
    reader = asyncio.StreamReader()
    reader.feed_data(body)
    reader.feed_eof()
    digests = BodyDigests()
    return b"".join([p async for p in ChunkedBody(reader, digests, length, verified)])


async def test_chunked_upload_example_decodes_and_verifies() -> None:
    verified, body = _chunked_example()
    assert verified.signature == SEED
    assert await _decode(verified, body, 66560) == b"a" * 66560


async def test_a_tampered_chunk_is_refused() -> None:
    verified, body = _chunked_example()
    tampered = body.replace(b"a" * 10, b"b" * 10, 1)
    with pytest.raises(S3Error) as error:
        await _decode(verified, tampered, 66560)
    assert error.value.code == "SignatureDoesNotMatch"
    with pytest.raises(S3Error) as short:
        await _decode(verified, body, 70000)
    assert short.value.code == "IncompleteBody"


async def test_unsigned_chunks_with_a_trailing_checksum() -> None:
    import base64
    import zlib

    data = b"hello, trailer" * 1000
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    body = f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n"
    reader = asyncio.StreamReader()
    reader.feed_data(body + f"x-amz-checksum-crc32:{crc}\r\n\r\n".encode())
    reader.feed_eof()
    digests = BodyDigests()
    digests.add_checksum("CRC32")
    chunked = ChunkedBody(reader, digests, len(data), None, ("x-amz-checksum-crc32",))
    assert b"".join([p async for p in chunked]) == data
    bad = asyncio.StreamReader()
    bad.feed_data(body + b"x-amz-checksum-crc32:AAAAAA==\r\n\r\n")
    bad.feed_eof()
    digests = BodyDigests()
    digests.add_checksum("CRC32")
    with pytest.raises(S3Error) as error:
        _ = [p async for p in ChunkedBody(bad, digests, len(data), None, ("x-amz-checksum-crc32",))]
    assert error.value.code == "BadDigest"
