"""Pure parts of the S3 gateway: XML documents, checksums, part layouts, ranges, names."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from shoal.client import ObjectInfo
from shoal.s3 import headers, xml
from shoal.s3.buckets import check_bucket_name
from shoal.s3.checksums import BodyDigests, new_hasher
from shoal.s3.errors import S3Error
from shoal.s3.multipart import composable, part_stripe_bytes
from shoal.s3.objects import check_conditions, parse_range

MiB = 1024 * 1024


def test_documents_escape_text_and_omit_none() -> None:
    body = xml.document(
        "ListBucketResult",
        [
            ("Name", "b"),
            ("Prefix", 'a<b>&"c"'),
            ("Delimiter", None),
            ("IsTruncated", False),
            ("MaxKeys", 1000),
            ("Contents", [("Key", "x\ny"), ("Size", 3)]),
        ],
    )
    assert body == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name>'
        b"<Prefix>a&lt;b&gt;&amp;&quot;c&quot;</Prefix><IsTruncated>false</IsTruncated>"
        b"<MaxKeys>1000</MaxKeys><Contents><Key>x&#10;y</Key><Size>3</Size></Contents>"
        b"</ListBucketResult>"
    )
    parsed = xml.parse(body, "ListBucketResult")
    assert xml.text(xml.children(parsed, "Contents")[0], "Key") == "x\ny"


def test_error_documents_and_times() -> None:
    doc = xml.error_document(
        "NoSuchKey", "The specified key does not exist.", resource="k", request_id="R1"
    )
    assert doc.endswith(
        b"<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message>"
        b"<Resource>k</Resource><RequestId>R1</RequestId></Error>"
    )
    when = datetime(2026, 1, 2, 3, 4, 5, 678900, tzinfo=UTC)
    assert xml.iso_time(when) == "2026-01-02T03:04:05.678Z"
    assert xml.http_time(when) == "Fri, 02 Jan 2026 03:04:05 GMT"


def test_request_documents_are_checked() -> None:
    with pytest.raises(S3Error) as bad:
        xml.parse(b"<Delete><Object>", "Delete")
    assert bad.value.code == "MalformedXML"
    with pytest.raises(S3Error) as wrong_root:
        xml.parse(b"<Other/>", "Delete")
    assert wrong_root.value.code == "MalformedXML"
    namespaced = xml.parse(
        b'<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Quiet>true</Quiet>'
        b"<Object><Key>a</Key></Object></Delete>",
        "Delete",
    )
    assert xml.text(namespaced, "Quiet") == "true"
    assert [xml.text(o, "Key") for o in xml.children(namespaced, "Object")] == ["a"]


def test_checksums_match_the_standard_check_values() -> None:
    expected = {
        "CRC32": "cbf43926",
        "CRC32C": "e3069283",
        "CRC64NVME": "ae8b14860a799888",
    }
    for algorithm, digest in expected.items():
        hasher = new_hasher(algorithm)
        hasher.update(b"1234")
        hasher.update(b"56789")
        assert hasher.digest().hex() == digest, algorithm
    digests = BodyDigests()
    digests.expect_checksum("CRC32", base64.b64encode(bytes.fromhex("cbf43926")).decode())
    digests.update(b"123456789")
    digests.verify()
    with pytest.raises(S3Error) as invalid:
        BodyDigests().expect_content_md5("short")
    assert invalid.value.code == "InvalidDigest"


def test_part_stripe_sizes_keep_parts_whole_stripes() -> None:
    assert part_stripe_bytes(8 * MiB, 4 * MiB, 5 * MiB) == 4 * MiB
    assert part_stripe_bytes(3 * MiB + 1, 4 * MiB, 5 * MiB) == 4 * MiB  # only a last part
    for size in (5 * MiB, 10 * MiB, 5 * MiB + 7 * 1024, 6 * MiB + 6):
        stripe = part_stripe_bytes(size, 4 * MiB, 5 * MiB)
        assert size % stripe == 0, size
        assert MiB <= stripe <= 4 * MiB


def _info(size: int, stripe: int) -> ObjectInfo:
    return ObjectInfo("b", "k", size, "e", 4, 6, datetime.now(UTC), stripe_bytes=stripe)


def test_composable_layouts() -> None:
    assert composable([_info(8 * MiB, MiB), _info(8 * MiB, MiB), _info(5, MiB)]) == ""
    assert composable([_info(8 * MiB, MiB), _info(5, 2 * MiB)]) == "last"
    assert composable([_info(8 * MiB + 1, MiB), _info(5, MiB)]) == "copy"
    assert composable([_info(8 * MiB, MiB), _info(8 * MiB, 2 * MiB), _info(5, MiB)]) == "copy"
    assert composable([_info(0, MiB), _info(0, 2 * MiB)]) == ""


def test_part_boundaries_are_stored_compactly() -> None:
    sizes = [8 * MiB] * 9999 + [123]
    encoded = headers.encode_parts(sizes)
    assert encoded == f"{8 * MiB}x9999,123x1"
    assert headers.decode_parts(encoded) == sizes
    metadata = {headers.PARTS: encoded}
    assert headers.part_range(metadata, sum(sizes), 10000) == (9999 * 8 * MiB, 123, 10000)
    assert headers.part_range({}, 50, 1) == (0, 50, 1)
    with pytest.raises(S3Error):
        headers.part_range(metadata, sum(sizes), 10001)


def test_ranges() -> None:
    assert parse_range("bytes=0-9", 100) == (0, 10)
    assert parse_range("bytes=90-", 100) == (90, 10)
    assert parse_range("bytes=-10", 100) == (90, 10)
    assert parse_range("bytes=-500", 100) == (0, 100)
    assert parse_range("bytes=5-1000", 100) == (5, 95)
    assert parse_range("bytes=0-1,5-6", 100) is None  # multiple ranges: whole object, as S3
    assert parse_range("items=0-1", 100) is None
    with pytest.raises(S3Error) as unsatisfiable:
        parse_range("bytes=100-", 100)
    assert unsatisfiable.value.status == 416


def test_conditions_follow_rfc_7232_precedence() -> None:
    modified = datetime(2026, 1, 1, tzinfo=UTC)
    earlier, later = "Wed, 31 Dec 2025 00:00:00 GMT", "Fri, 02 Jan 2026 00:00:00 GMT"
    check_conditions({"If-Match": '"abc"', "If-Unmodified-Since": earlier}, '"abc"', modified)
    for condition, status in [
        ({"If-Match": '"zzz"'}, 412),
        ({"If-Unmodified-Since": earlier}, 412),
        ({"If-None-Match": "*"}, 304),
        ({"If-None-Match": '"abc"', "If-Modified-Since": earlier}, 304),
        ({"If-Modified-Since": later}, 304),
    ]:
        with pytest.raises(S3Error) as failed:
            check_conditions(condition, '"abc"', modified)
        assert failed.value.status == status, condition
    with pytest.raises(S3Error) as copy:
        check_conditions(
            {"x-amz-copy-source-If-None-Match": '"abc"'}, '"abc"', modified, "x-amz-copy-source-"
        )
    assert copy.value.status == 412


def test_bucket_names_follow_s3() -> None:
    for good in ("abc", "my-bucket-name", "a.b.c", "0123456789"):
        check_bucket_name(good)
    for bad in ("ab", "Abc", "a_b", "a..b", "a.-b", "10.0.0.1", "xn--abc", "abc-s3alias", "-ab"):
        with pytest.raises(S3Error) as error:
            check_bucket_name(bad)
        assert error.value.code == "InvalidBucketName", bad
