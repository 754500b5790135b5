"""ListObjects (v1), ListObjectsV2 and ListObjectVersions over the SDK's ordered listing.

`scan` walks keys in order from a marker, rolling keys that contain the delimiter after the
prefix into common prefixes. After a common prefix it restarts the listing just past every
key that shares it (prefix + U+10FFFF), so a "directory" of a million keys costs one call,
not a million. Keys and common prefixes together count against max-keys. Continuation
tokens are the last key or prefix returned, base64url-encoded; resuming from a common prefix
skips the keys under it, so pages never repeat one.

Buckets are never versioned: ListObjectVersions lists every object once with VersionId
`null`, IsLatest true, as S3 answers for a bucket that never had versioning.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

from aiohttp import web

from shoal.client import ObjectInfo
from shoal.s3 import xml
from shoal.s3.errors import S3Error
from shoal.s3.gateway import Call, Gateway, xml_response
from shoal.s3.headers import etag_of

MAX_KEYS = 1000
AFTER_ALL = "\U0010ffff"


@dataclass
class Page:
    objects: list[ObjectInfo] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    truncated: bool = False
    last: str = ""


def _prefix_of(key: str, prefix: str, delimiter: str) -> str:
    """The common prefix `key` rolls into, or "" when it is listed itself."""
    if not delimiter:
        return ""
    index = key.find(delimiter, len(prefix))
    return key[: index + len(delimiter)] if index >= 0 else ""


async def scan(
    gw: Gateway, bucket: str, prefix: str, delimiter: str, marker: str, max_keys: int
) -> Page:
    """One page of a listing: keys after `marker` (exclusive)."""
    page = Page()
    if max_keys <= 0:
        return page
    start = marker
    if marker.startswith(prefix) and _prefix_of(marker, prefix, delimiter):
        start = _prefix_of(marker, prefix, delimiter) + AFTER_ALL
    count = 0
    while True:
        restart = ""
        listing = gw.client.list(bucket, prefix, start_after=start)
        async with contextlib.aclosing(listing) as entries:  # type: ignore[type-var]
            async for info in entries:
                common = _prefix_of(info.key, prefix, delimiter)
                if count == max_keys:
                    page.truncated = True
                    return page
                count += 1
                if common:
                    page.prefixes.append(common)
                    page.last = common
                    restart = common + AFTER_ALL
                    break
                page.objects.append(info)
                page.last = info.key
        if not restart:
            return page
        start = restart


def _max_keys(call: Call, name: str = "max-keys") -> int:
    text = call.query.get(name, str(MAX_KEYS))
    try:
        value = int(text)
    except ValueError:
        raise S3Error(
            "InvalidArgument", f"Provided {name} not an integer or within range"
        ) from None
    if value < 0:
        raise S3Error("InvalidArgument", f"{name} must be >= 0")
    return min(value, MAX_KEYS)


def _encoder(call: Call) -> tuple[str | None, Callable[[str], str]]:
    kind = call.query.get("encoding-type", "")
    if kind and kind != "url":
        raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request")

    def encode(value: str) -> str:
        return quote(value, safe="/") if kind else value

    return (kind or None), encode


def _entry(
    info: ObjectInfo, encode: Callable[[str], str], owner: list[xml.Node] | None
) -> list[xml.Node]:
    nodes: list[xml.Node] = [
        ("Key", encode(info.key)),
        ("LastModified", xml.iso_time(info.created)),
        ("ETag", etag_of(info.metadata, info.etag)),
        ("Size", info.size),
        ("StorageClass", "STANDARD"),
    ]
    if owner is not None:
        nodes.append(("Owner", owner))
    return nodes


def _common(page: Page, encode: Callable[[str], str]) -> list[xml.Node]:
    return [("CommonPrefixes", [("Prefix", encode(p))]) for p in page.prefixes]


async def list_v1(gw: Gateway, call: Call) -> web.StreamResponse:
    bucket = await gw.bucket(call.bucket, call.user)
    prefix, delimiter = call.query.get("prefix", ""), call.query.get("delimiter", "")
    marker, max_keys = call.query.get("marker", ""), _max_keys(call)
    kind, encode = _encoder(call)
    page = await scan(gw, call.bucket, prefix, delimiter, marker, max_keys)
    owner = gw.owner(bucket)
    children: list[xml.Node] = [
        ("Name", call.bucket),
        ("Prefix", encode(prefix)),
        ("Marker", encode(marker)),
        ("MaxKeys", max_keys),
        ("Delimiter", encode(delimiter) if delimiter else None),
        ("EncodingType", kind),
        ("IsTruncated", page.truncated),
        ("NextMarker", encode(page.last) if page.truncated and delimiter else None),
    ]
    children += [("Contents", _entry(o, encode, owner)) for o in page.objects]
    children += _common(page, encode)
    return xml_response("ListBucketResult", children)


def _token(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode("utf-8", "surrogateescape")).decode()


def _untoken(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode("utf-8", "surrogateescape")
    except (binascii.Error, ValueError):
        raise S3Error("InvalidArgument", "The continuation token provided is incorrect") from None


async def list_v2(gw: Gateway, call: Call) -> web.StreamResponse:
    bucket = await gw.bucket(call.bucket, call.user)
    prefix, delimiter = call.query.get("prefix", ""), call.query.get("delimiter", "")
    token = call.query.get("continuation-token")
    start_after = call.query.get("start-after", "")
    marker = _untoken(token) if token is not None else start_after
    max_keys = _max_keys(call)
    kind, encode = _encoder(call)
    page = await scan(gw, call.bucket, prefix, delimiter, marker, max_keys)
    owner = gw.owner(bucket) if call.query.get("fetch-owner") == "true" else None
    children: list[xml.Node] = [
        ("Name", call.bucket),
        ("Prefix", encode(prefix)),
        ("Delimiter", encode(delimiter) if delimiter else None),
        ("MaxKeys", max_keys),
        ("EncodingType", kind),
        ("KeyCount", len(page.objects) + len(page.prefixes)),
        ("IsTruncated", page.truncated),
        ("ContinuationToken", token),
        ("NextContinuationToken", _token(page.last) if page.truncated else None),
        ("StartAfter", encode(start_after) if start_after else None),
    ]
    children += [("Contents", _entry(o, encode, owner)) for o in page.objects]
    children += _common(page, encode)
    return xml_response("ListBucketResult", children)


async def list_versions(gw: Gateway, call: Call) -> web.StreamResponse:
    bucket = await gw.bucket(call.bucket, call.user)
    prefix, delimiter = call.query.get("prefix", ""), call.query.get("delimiter", "")
    key_marker = call.query.get("key-marker", "")
    version_marker = call.query.get("version-id-marker", "")
    if version_marker and not key_marker:
        raise S3Error(
            "InvalidArgument", "A version-id marker cannot be specified without a key marker."
        )
    max_keys = _max_keys(call)
    kind, encode = _encoder(call)
    page = await scan(gw, call.bucket, prefix, delimiter, key_marker, max_keys)
    owner = gw.owner(bucket)
    children: list[xml.Node] = [
        ("Name", call.bucket),
        ("Prefix", encode(prefix)),
        ("KeyMarker", encode(key_marker)),
        ("VersionIdMarker", version_marker),
        ("MaxKeys", max_keys),
        ("Delimiter", encode(delimiter) if delimiter else None),
        ("EncodingType", kind),
        ("IsTruncated", page.truncated),
        ("NextKeyMarker", encode(page.last) if page.truncated else None),
        ("NextVersionIdMarker", "null" if page.truncated else None),
    ]
    for info in page.objects:
        nodes = _entry(info, encode, owner)
        nodes[1:1] = [("VersionId", "null"), ("IsLatest", True)]
        children.append(("Version", nodes))
    children += _common(page, encode)
    return xml_response("ListVersionsResult", children)
