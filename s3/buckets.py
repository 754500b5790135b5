"""Bucket operations: ListBuckets, CreateBucket, DeleteBucket, HeadBucket, and the bucket
subresources clients probe (location, versioning, acl).

Each bucket records its owner (the creating user's canonical id); only its owner sees and
uses it. A bucket created with the Shoal SDK directly has no owner and is open to every
gateway user. CreateBucket takes the redundancy from the `x-shoal-redundancy: K,N` header,
else the cluster default.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re

from aiohttp import web

from shoal.common.errors import AlreadyExists, BucketNotEmpty, NotFound, ShoalError
from shoal.s3 import multipart, xml
from shoal.s3.errors import S3Error
from shoal.s3.gateway import (
    HIDDEN_BUCKETS,
    Call,
    Gateway,
    acl_document,
    empty_response,
    xml_response,
)

REDUNDANCY_HEADER = "x-shoal-redundancy"
_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def check_bucket_name(name: str) -> None:
    """S3's bucket naming rules; InvalidBucketName otherwise."""
    problem = ""
    if not _NAME.fullmatch(name):
        problem = "use 3-63 characters of a-z, 0-9, '.' and '-', starting and ending with a " \
            "letter or digit"  # fmt: skip
    elif ".." in name or ".-" in name or "-." in name:
        problem = "no two adjacent periods, and no period next to a hyphen"
    elif name.startswith(_RESERVED_PREFIXES) or name.endswith(_RESERVED_SUFFIXES):
        problem = "reserved prefix or suffix"
    else:
        with contextlib.suppress(ValueError):
            ipaddress.IPv4Address(name)
            problem = "must not be formatted as an IP address"
    if problem:
        raise S3Error(
            "InvalidBucketName", f"The specified bucket is not valid: {problem}", resource=name
        )


def _redundancy(call: Call) -> tuple[int | None, int | None]:
    value = call.header(REDUNDANCY_HEADER)
    if not value:
        return None, None
    try:
        k_text, n_text = value.split(",")
        return int(k_text), int(n_text)
    except ValueError:
        raise S3Error(
            "InvalidArgument", f"{REDUNDANCY_HEADER} must be 'K,N' (for example 4,6)"
        ) from None


async def list_buckets(gw: Gateway, call: Call) -> web.StreamResponse:
    listed = await gw.buckets(fresh=True)
    mine = [
        b
        for name, b in sorted(listed.items())
        if name not in HIDDEN_BUCKETS and b.owner in ("", call.user.id)
    ]
    entries: list[xml.Node] = [
        ("Bucket", [("Name", b.name), ("CreationDate", xml.iso_time(b.created))]) for b in mine
    ]
    return xml_response(
        "ListAllMyBucketsResult",
        [
            ("Owner", [("ID", call.user.id), ("DisplayName", call.user.display_name)]),
            ("Buckets", entries),
        ],
    )


async def create_bucket(gw: Gateway, call: Call) -> web.StreamResponse:
    check_bucket_name(call.bucket)
    body = await gw.read_small(call)
    if body.strip():
        config = xml.parse(body, "CreateBucketConfiguration")
        xml.text(config, "LocationConstraint", "")
    k, n = _redundancy(call)
    if call.bucket in HIDDEN_BUCKETS:
        raise S3Error("BucketAlreadyExists", "The requested bucket name is not available.")
    try:
        await gw.client.create_bucket(call.bucket, k, n, owner=call.user.id)
    except AlreadyExists:
        existing = (await gw.buckets(fresh=True)).get(call.bucket)
        if existing is not None and existing.owner in ("", call.user.id):
            raise S3Error(
                "BucketAlreadyOwnedByYou",
                "Your previous request to create the named bucket succeeded and you already "
                "own it.",
                resource=call.bucket,
            ) from None
        raise S3Error(
            "BucketAlreadyExists",
            "The requested bucket name is not available. Please select a different name.",
            resource=call.bucket,
        ) from None
    gw.forget_buckets()
    return empty_response(200, {"Location": f"/{call.bucket}"})


async def delete_bucket(gw: Gateway, call: Call) -> web.StreamResponse:
    await gw.bucket(call.bucket, call.user)
    try:
        await gw.client.delete_bucket(call.bucket)
    except BucketNotEmpty:
        raise S3Error(
            "BucketNotEmpty", "The bucket you tried to delete is not empty", resource=call.bucket
        ) from None
    except NotFound:
        raise S3Error(
            "NoSuchBucket", "The specified bucket does not exist", resource=call.bucket
        ) from None
    gw.forget_buckets()
    with contextlib.suppress(ShoalError):
        await multipart.abort_all(gw, call.bucket)
    return empty_response(204)


async def head_bucket(gw: Gateway, call: Call) -> web.StreamResponse:
    await gw.bucket(call.bucket, call.user)
    return empty_response(200, {"x-amz-bucket-region": gw.config.region})


async def get_location(gw: Gateway, call: Call) -> web.StreamResponse:
    await gw.bucket(call.bucket, call.user)
    region = "" if gw.config.region == "us-east-1" else gw.config.region
    return web.Response(
        body=xml.document("LocationConstraint", []).replace(
            b"></LocationConstraint>", f">{xml.escape(region)}</LocationConstraint>".encode()
        ),
        content_type="application/xml",
    )


async def get_versioning(gw: Gateway, call: Call) -> web.StreamResponse:
    """Versioning is never enabled: an empty configuration, as S3 answers for such buckets."""
    await gw.bucket(call.bucket, call.user)
    return xml_response("VersioningConfiguration", [])


async def get_acl(gw: Gateway, call: Call) -> web.StreamResponse:
    bucket = await gw.bucket(call.bucket, call.user)
    return acl_document(gw.owner(bucket))
