"""Object operations: PutObject, GetObject, HeadObject, DeleteObject, DeleteObjects,
CopyObject, GetObjectAcl.

PutObject streams the request body into the SDK's put (decoded and hashed on the way), so
the gateway holds a few stripes at a time whatever the size; the MD5 ETag and the client's
checksums are stored with the object when the put commits, and a digest that does not match
aborts the put instead. GetObject opens one version and streams the requested range out
through an aiohttp StreamResponse (writes wait for the client, so memory stays bounded).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from urllib.parse import unquote

from aiohttp import web

from shoal.client import AsyncObjectStream, ObjectInfo
from shoal.common.errors import NotFound, ShoalError
from shoal.s3 import headers as meta
from shoal.s3 import xml
from shoal.s3.checksums import BodyDigests
from shoal.s3.errors import S3Error, from_shoal
from shoal.s3.gateway import (
    Call,
    Gateway,
    acl_document,
    check_key,
    empty_response,
    xml_response,
)

MAX_DELETE = 1000
DELETE_CONCURRENCY = 16
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def stored_metadata(base: Mapping[str, str], digests: BodyDigests) -> dict[str, str]:
    """What a put commits with the object: request metadata plus the digests just computed."""
    stored = dict(base)
    stored[meta.ETAG] = digests.etag
    for algorithm, value in digests.checksum_values().items():
        stored[meta.CHECKSUM_PREFIX + algorithm.lower()] = value
    return stored


def checksum_headers(metadata: Mapping[str, str]) -> dict[str, str]:
    return {
        f"x-amz-checksum-{name.removeprefix(meta.CHECKSUM_PREFIX)}": value
        for name, value in metadata.items()
        if name.startswith(meta.CHECKSUM_PREFIX)
    }


def _check_version(call: Call) -> None:
    version = call.query.get("versionId")
    if version is not None and version != "null":
        raise S3Error("InvalidArgument", "Invalid version id specified")


async def put_object(gw: Gateway, call: Call) -> web.StreamResponse:
    check_key(call.key)
    await gw.bucket(call.bucket, call.user)
    base = meta.from_request(call.request.headers)
    pieces, _size, digests = gw.body(call)
    info = await gw.client.put(
        call.bucket, call.key, pieces, metadata=lambda: stored_metadata(base, digests)
    )
    headers = {"ETag": meta.etag_of(info.metadata, info.etag), "x-amz-version-id": "null"}
    headers.update(checksum_headers(info.metadata))
    return empty_response(200, headers)


# Conditions and ranges -----------------------------------------------------------------------


def _http_date(value: str) -> datetime | None:
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


def _etag_matches(header: str, etag: str) -> bool:
    candidates = [c.strip() for c in header.split(",")]
    bare = etag.strip('"')
    return any(c == "*" or c.removeprefix("W/").strip('"') == bare for c in candidates)


def _precondition(condition: str) -> S3Error:
    return S3Error(
        "PreconditionFailed",
        "At least one of the pre-conditions you specified did not hold",
        extra={"Condition": condition},
    )


def check_conditions(
    headers: Mapping[str, str], etag: str, modified: datetime, prefix: str = ""
) -> None:
    """If-Match / If-Unmodified-Since (412) and If-None-Match / If-Modified-Since (304), in
    RFC 7232 order: a present If-Match overrides If-Unmodified-Since, a present If-None-Match
    overrides If-Modified-Since. `prefix` is "x-amz-copy-source-" for CopyObject's sources,
    where every failure is 412."""
    modified = modified.replace(microsecond=0)
    if_match = headers.get(f"{prefix}If-Match")
    if if_match is not None:
        if not _etag_matches(if_match, etag):
            raise _precondition("If-Match")
    else:
        since = _http_date(headers.get(f"{prefix}If-Unmodified-Since", ""))
        if since is not None and modified > since:
            raise _precondition("If-Unmodified-Since")
    if_none = headers.get(f"{prefix}If-None-Match")
    if if_none is not None:
        not_modified = _etag_matches(if_none, etag)
        condition = "If-None-Match"
    else:
        since = _http_date(headers.get(f"{prefix}If-Modified-Since", ""))
        not_modified = since is not None and modified <= since
        condition = "If-Modified-Since"
    if not_modified:
        if prefix:
            raise _precondition(condition)
        raise S3Error("NotModified", "Not Modified", headers={"ETag": etag})


def parse_range(value: str, size: int) -> tuple[int, int] | None:
    """(offset, length) of a single `bytes=` range; None when absent or not one S3 honours
    (it then serves the whole object); InvalidRange when unsatisfiable."""
    match = _RANGE.fullmatch(value.strip()) if value else None
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if not first and not last:
        return None
    if not first:
        length = min(int(last), size)
        if length == 0:
            raise _unsatisfiable(size)
        return size - length, length
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if last and int(last) < start:
        return None
    if start >= size:
        raise _unsatisfiable(size)
    return start, end - start + 1


def _unsatisfiable(size: int) -> S3Error:
    return S3Error(
        "InvalidRange",
        "The requested range is not satisfiable",
        extra={"ActualObjectSize": str(size)},
        headers={"Content-Range": f"bytes */{size}"},
    )


def object_headers(info: ObjectInfo) -> dict[str, str]:
    headers = meta.response_headers(info.metadata)
    headers.update(
        {
            "ETag": meta.etag_of(info.metadata, info.etag),
            "Last-Modified": xml.http_time(info.created),
            "Accept-Ranges": "bytes",
        }
    )
    if meta.PARTS in info.metadata:
        headers["x-amz-mp-parts-count"] = str(len(meta.decode_parts(info.metadata[meta.PARTS])))
    return headers


def _selection(call: Call, info: ObjectInfo) -> tuple[int, int, int, dict[str, str]]:
    """(status, offset, length, extra headers) of a GET/HEAD: partNumber, Range or all."""
    part = call.query.get("partNumber")
    if part is not None:
        try:
            number = int(part)
        except ValueError:
            raise S3Error("InvalidArgument", "Part number must be an integer") from None
        offset, length, count = meta.part_range(info.metadata, info.size, number)
        extra = {"x-amz-mp-parts-count": str(count)}
        if count == 1 and meta.PARTS not in info.metadata:
            return 200, 0, info.size, extra
        extra["Content-Range"] = f"bytes {offset}-{offset + length - 1}/{info.size}"
        return 206, offset, length, extra
    if call.header("Range") and info.size == 0:
        raise _unsatisfiable(0)
    chosen = parse_range(call.header("Range"), info.size)
    if chosen is None:
        return 200, 0, info.size, {}
    offset, length = chosen
    return (
        206,
        offset,
        length,
        {"Content-Range": f"bytes {offset}-{offset + length - 1}/{info.size}"},
    )


def _overrides(call: Call, headers: dict[str, str]) -> None:
    for param, header in meta.RESPONSE_OVERRIDES.items():
        if param in call.query:
            for name in [h for h in headers if h.lower() == header.lower()]:
                del headers[name]
            headers[header] = call.query[param]


async def get_object(gw: Gateway, call: Call) -> web.StreamResponse:
    _check_version(call)
    await gw.bucket(call.bucket, call.user)
    stream = await gw.client.open(call.bucket, call.key)
    info = stream.info
    headers = object_headers(info)
    check_conditions(call.request.headers, headers["ETag"], info.created)
    status, offset, length, extra = _selection(call, info)
    headers.update(extra)
    if call.header("x-amz-checksum-mode").upper() == "ENABLED" and status == 200:
        headers.update(checksum_headers(info.metadata))
    _overrides(call, headers)
    headers["x-amz-request-id"] = call.request_id
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = length
    await response.prepare(call.request)
    await _send(stream, response, offset, length)
    await response.write_eof()
    return response


async def _send(
    stream: AsyncObjectStream, response: web.StreamResponse, offset: int, length: int
) -> None:
    if length == 0:
        return
    async for piece in stream.pieces(offset, length):
        await response.write(piece)


async def head_object(gw: Gateway, call: Call) -> web.StreamResponse:
    _check_version(call)
    await gw.bucket(call.bucket, call.user)
    info = await gw.client.head(call.bucket, call.key)
    headers = object_headers(info)
    check_conditions(call.request.headers, headers["ETag"], info.created)
    status, _offset, length, extra = _selection(call, info)
    headers.update(extra)
    if call.header("x-amz-checksum-mode").upper() == "ENABLED":
        headers.update(checksum_headers(info.metadata))
    _overrides(call, headers)
    headers["x-amz-request-id"] = call.request_id
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = length
    await response.prepare(call.request)
    await response.write_eof()
    return response


async def delete_object(gw: Gateway, call: Call) -> web.StreamResponse:
    _check_version(call)
    await gw.bucket(call.bucket, call.user)
    try:
        await gw.client.delete(call.bucket, call.key)
    except NotFound as exc:
        if str(exc).startswith("bucket "):
            raise
    return empty_response(204)


async def delete_objects(gw: Gateway, call: Call) -> web.StreamResponse:
    await gw.bucket(call.bucket, call.user)
    document = xml.parse(await gw.read_small(call), "Delete")
    quiet = xml.text(document, "Quiet", "false").strip().lower() == "true"
    entries = [
        (xml.text(o, "Key"), xml.text(o, "VersionId", "")) for o in xml.children(document, "Object")
    ]
    if not entries or len(entries) > MAX_DELETE:
        raise S3Error("MalformedXML", f"A Delete request names 1 to {MAX_DELETE} objects")
    slots = asyncio.Semaphore(DELETE_CONCURRENCY)

    async def delete_one(key: str, version: str) -> xml.Node:
        if version and version != "null":
            return ("Error", [("Key", key), ("VersionId", version), ("Code", "InvalidArgument"),
                              ("Message", "Invalid version id specified")])  # fmt: skip
        try:
            check_key(key)
            async with slots:
                await gw.client.delete(call.bucket, key)
        except NotFound:
            pass
        except (S3Error, ShoalError) as exc:
            error = from_shoal(exc, bucket=call.bucket, key=key)
            return ("Error", [("Key", key), ("Code", error.code), ("Message", error.message)])
        done: list[xml.Node] = [("Key", key)]
        if version:
            done.append(("VersionId", version))
        return ("Deleted", done)

    results = await asyncio.gather(*(delete_one(k, v) for k, v in entries))
    shown = [r for r in results if not quiet or r[0] == "Error"]
    return xml_response("DeleteResult", shown)


async def get_acl(gw: Gateway, call: Call) -> web.StreamResponse:
    bucket = await gw.bucket(call.bucket, call.user)
    await gw.client.head(call.bucket, call.key)
    return acl_document(gw.owner(bucket))


# Copy ------------------------------------------------------------------------------------------


async def open_copy_source(gw: Gateway, call: Call) -> tuple[str, str, AsyncObjectStream]:
    """The object x-amz-copy-source names (bucket/key[?versionId=null]), opened, with the
    x-amz-copy-source-if-* conditions checked."""
    source = call.header("x-amz-copy-source")
    path, _, query = source.partition("?")
    path = unquote(path).lstrip("/")
    bucket, _, key = path.partition("/")
    if not bucket or not key:
        raise S3Error("InvalidArgument", "Copy Source must mention the source bucket and key: "
                      "sourcebucket/sourcekey")  # fmt: skip
    if query.startswith("versionId=") and query != "versionId=null":
        raise S3Error("InvalidArgument", "Invalid version id specified")
    await gw.bucket(bucket, call.user)
    try:
        stream = await gw.client.open(bucket, key)
    except NotFound as exc:
        raise from_shoal(exc, bucket=bucket, key=key) from None
    info = stream.info
    check_conditions(
        call.request.headers,
        meta.etag_of(info.metadata, info.etag),
        info.created,
        prefix="x-amz-copy-source-",
    )
    return bucket, key, stream


async def copy_object(gw: Gateway, call: Call) -> web.StreamResponse:
    check_key(call.key)
    await gw.bucket(call.bucket, call.user)
    source_bucket, source_key, stream = await open_copy_source(gw, call)
    directive = call.header("x-amz-metadata-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise S3Error("InvalidArgument", "Unknown metadata directive.")
    if directive == "COPY":
        if (source_bucket, source_key) == (call.bucket, call.key):
            raise S3Error(
                "InvalidRequest",
                "This copy request is illegal because it is trying to copy an object to itself "
                "without changing the object's metadata, storage class, website redirect "
                "location or encryption attributes.",
            )
        base = meta.user_visible(stream.info.metadata)
    else:
        base = meta.from_request(call.request.headers)
    digests = BodyDigests()

    async def pieces() -> AsyncIterator[bytes]:
        async for piece in stream.pieces():
            digests.update(piece)
            yield piece

    info = await gw.client.put(
        call.bucket, call.key, pieces(), metadata=lambda: stored_metadata(base, digests)
    )
    etag = meta.etag_of(info.metadata, info.etag)
    return xml_response(
        "CopyObjectResult", [("LastModified", xml.iso_time(info.created)), ("ETag", etag)]
    )
