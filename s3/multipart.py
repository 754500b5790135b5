"""Multipart uploads: parts are erasure-coded objects; completion composes them in place.

Layout in the internal bucket MULTIPART_BUCKET (ordinary objects, so they survive node
losses like any other, and are listed and cleaned like any other):

    uploads/<bucket>/<upload id>      empty object; metadata: key, owner, initiated, k, n and
                                      the headers to store with the final object
    parts/<upload id>/<part:05d>      one object per part; metadata: its MD5 and checksums

CompleteMultipartUpload checks the listed parts (InvalidPart, InvalidPartOrder,
EntityTooSmall), then asks the coordinator to compose them into the final object
(ComposeObject: the nodes hard-link the parts' shards; no byte is copied). Composition needs
every part but the last to be a whole number of stripes of one stripe size, so each part is
written with a stripe size chosen for that (`part_stripe_bytes`):

- the gateway's stripe size D when the part's size is a multiple of it (8 MiB parts with
  4 MiB stripes: boto3's and the AWS CLI's default) or is below the minimum part size (only a
  last part can be that small);
- otherwise (5 MiB or 10 MiB parts, say) the largest divisor of the part's size between D/4
  and D, so the part is a whole number of stripes;
- and once an upload's first part has chosen, its later parts use the same size (the last
  part, whatever its length, then matches).

When only the last part does not match (it was written first, or by a restarted gateway),
that one part is rewritten with the right stripe size before composing; when earlier parts
do not match (parts of different sizes), the object is written by copying the parts'
bytes through the SDK (bounded memory, slower). The final object stores its part sizes
(`s3:parts`), which GetObject's partNumber and the ETag's part count use.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from xml.etree import ElementTree

from aiohttp import web

from shoal.client import ObjectInfo
from shoal.common.errors import NotFound, ShoalError
from shoal.s3 import headers as meta
from shoal.s3 import xml
from shoal.s3.checksums import BodyDigests
from shoal.s3.errors import S3Error, from_shoal
from shoal.s3.gateway import (
    MULTIPART_BUCKET,
    Call,
    Gateway,
    check_key,
    empty_response,
    xml_response,
)
from shoal.s3.objects import open_copy_source, parse_range, stored_metadata

log = logging.getLogger(__name__)

MAX_PARTS = 10_000
MAX_HINTS = 10_000
KEEPALIVE_AFTER_S = 5.0
KEY = "s3:key"
OWNER = "s3:owner"
INITIATED = "s3:initiated"
REDUNDANCY = "s3:redundancy"


def record_key(bucket: str, upload_id: str) -> str:
    return f"uploads/{bucket}/{upload_id}"


def part_key(upload_id: str, number: int) -> str:
    return f"parts/{upload_id}/{number:05d}"


def part_stripe_bytes(size: int, default: int, min_part: int) -> int:
    """The stripe size for a part of `size` bytes with no earlier choice (see above)."""
    if size == 0 or size % default == 0 or size < min_part:
        return default
    low = max(4096, default // 4)
    for count in range(-(-size // default), size // low + 1):
        if size % count == 0:
            return size // count
    return default


def composable(parts: list[ObjectInfo]) -> str:
    """ "" when the parts compose as they are, "last" when only the last part's stripe size
    differs, "copy" when earlier parts do not line up."""
    filled = [p for p in parts if p.size > 0]
    if not filled:
        return ""
    stripe = filled[0].stripe_bytes
    for part in filled[:-1]:
        if part.stripe_bytes != stripe or part.size % stripe:
            return "copy"
    return "" if filled[-1].stripe_bytes == stripe else "last"


def _upload_id(call: Call) -> str:
    upload_id = call.query.get("uploadId", "")
    if len(upload_id) != 32 or not all(c in "0123456789abcdef" for c in upload_id):
        raise S3Error("NoSuchUpload", "The specified upload does not exist.")
    return upload_id


async def _record(gw: Gateway, call: Call) -> tuple[str, ObjectInfo]:
    """The upload a request names (NoSuchUpload unless it exists for this bucket and key)."""
    upload_id = _upload_id(call)
    try:
        info = await gw.client.head(MULTIPART_BUCKET, record_key(call.bucket, upload_id))
    except NotFound:
        raise S3Error(
            "NoSuchUpload",
            "The specified upload does not exist. The upload ID may be invalid, or the upload "
            "may have been aborted or completed.",
            resource=upload_id,
        ) from None
    if info.metadata.get(KEY) != call.key:
        raise S3Error("NoSuchUpload", "The specified upload does not exist.")
    return upload_id, info


def _redundancy(record: ObjectInfo) -> tuple[int, int]:
    k, _, n = record.metadata.get(REDUNDANCY, "4,6").partition(",")
    return int(k), int(n)


async def create(gw: Gateway, call: Call) -> web.StreamResponse:
    check_key(call.key)
    bucket = await gw.bucket(call.bucket, call.user)
    await gw.ensure_multipart_bucket(bucket.k, bucket.n)
    stored = meta.from_request(call.request.headers)
    stored.update(
        {
            KEY: call.key,
            OWNER: call.user.id,
            INITIATED: xml.iso_time(datetime.now(UTC)),
            REDUNDANCY: f"{bucket.k},{bucket.n}",
        }
    )
    upload_id = uuid.uuid4().hex
    await gw.client.put(MULTIPART_BUCKET, record_key(call.bucket, upload_id), b"", metadata=stored)
    return xml_response(
        "InitiateMultipartUploadResult",
        [("Bucket", call.bucket), ("Key", call.key), ("UploadId", upload_id)],
    )


def _part_number(call: Call) -> int:
    try:
        number = int(call.query.get("partNumber", ""))
    except ValueError:
        number = 0
    if not 1 <= number <= MAX_PARTS:
        raise S3Error(
            "InvalidArgument", f"Part number must be an integer between 1 and {MAX_PARTS}"
        )
    return number


def _stripe_for(gw: Gateway, upload_id: str, size: int) -> int:
    chosen = gw.part_stripes.get(upload_id)
    if chosen is None:
        chosen = part_stripe_bytes(size, gw.config.stripe_bytes, gw.config.min_part_size)
        if len(gw.part_stripes) >= MAX_HINTS:
            gw.part_stripes.pop(next(iter(gw.part_stripes)))
        gw.part_stripes[upload_id] = chosen
    return chosen


async def upload_part(gw: Gateway, call: Call) -> web.StreamResponse:
    await gw.bucket(call.bucket, call.user)
    number = _part_number(call)
    upload_id, record = await _record(gw, call)
    pieces, size, digests = gw.body(call)
    k, n = _redundancy(record)
    info = await gw.client.put(
        MULTIPART_BUCKET,
        part_key(upload_id, number),
        pieces,
        k=k,
        n=n,
        stripe_bytes=_stripe_for(gw, upload_id, size),
        metadata=lambda: stored_metadata({}, digests),
    )
    headers = {"ETag": meta.etag_of(info.metadata, info.etag)}
    headers.update(
        {f"x-amz-checksum-{alg.lower()}": v for alg, v in digests.checksum_values().items()}
    )
    return empty_response(200, headers)


async def upload_part_copy(gw: Gateway, call: Call) -> web.StreamResponse:
    await gw.bucket(call.bucket, call.user)
    number = _part_number(call)
    upload_id, record = await _record(gw, call)
    _bucket, _key, stream = await open_copy_source(gw, call)
    size = stream.info.size
    offset, length = 0, size
    wanted = call.header("x-amz-copy-source-range")
    if wanted:
        chosen = parse_range(wanted, size)
        if chosen is None or not wanted.startswith("bytes=") or wanted[6:7] == "-":
            raise S3Error("InvalidArgument", "The x-amz-copy-source-range value must be of the "
                          "form bytes=first-last where first and last are the zero-based "
                          "offsets of the first and last bytes to copy")  # fmt: skip
        offset, length = chosen
    if length > gw.config.max_object_size:
        raise S3Error("EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
    digests = BodyDigests()

    async def pieces() -> AsyncIterator[bytes]:
        if length:
            async for piece in stream.pieces(offset, length):
                digests.update(piece)
                yield piece

    k, n = _redundancy(record)
    info = await gw.client.put(
        MULTIPART_BUCKET,
        part_key(upload_id, number),
        pieces(),
        k=k,
        n=n,
        stripe_bytes=_stripe_for(gw, upload_id, length),
        metadata=lambda: stored_metadata({}, digests),
    )
    return xml_response(
        "CopyPartResult",
        [
            ("LastModified", xml.iso_time(info.created)),
            ("ETag", meta.etag_of(info.metadata, info.etag)),
        ],
    )


async def _parts(gw: Gateway, upload_id: str) -> dict[int, ObjectInfo]:
    found = {}
    async for info in gw.client.list(MULTIPART_BUCKET, f"parts/{upload_id}/"):
        tail = info.key.rsplit("/", 1)[-1]
        if tail.isdigit():
            found[int(tail)] = info
    return found


def _requested(document: ElementTree.Element) -> list[tuple[int, str]]:
    requested = []
    for part in xml.children(document, "Part"):
        try:
            number = int(xml.text(part, "PartNumber"))
        except ValueError:
            raise S3Error("MalformedXML", "PartNumber must be an integer") from None
        requested.append((number, xml.text(part, "ETag").strip().strip('"')))
    if not requested:
        raise S3Error("MalformedXML", "You must specify at least one part")
    return requested


def _check_parts(
    gw: Gateway, requested: list[tuple[int, str]], present: dict[int, ObjectInfo]
) -> list[ObjectInfo]:
    chosen = []
    previous = 0
    for number, etag in requested:
        if number <= previous:
            raise S3Error(
                "InvalidPartOrder",
                "The list of parts was not in ascending order. The parts list must be "
                "specified in order by part number.",
            )
        previous = number
        info = present.get(number)
        if info is None or meta.etag_of(info.metadata, info.etag).strip('"') != etag:
            raise S3Error(
                "InvalidPart",
                "One or more of the specified parts could not be found. The part may not have "
                "been uploaded, or the specified entity tag may not match the part's entity tag.",
                extra={"PartNumber": str(number), "ETag": etag},
            )
        chosen.append(info)
    for info in chosen[:-1]:
        if info.size < gw.config.min_part_size:
            raise S3Error(
                "EntityTooSmall",
                "Your proposed upload is smaller than the minimum allowed object size.",
                extra={"MinSizeAllowed": str(gw.config.min_part_size)},
            )
    return chosen


def multipart_etag(parts: list[ObjectInfo]) -> str:
    """S3's multipart ETag: MD5 of the parts' binary MD5s, then '-<count>'."""
    digest = hashlib.md5(usedforsecurity=False)
    for info in parts:
        digest.update(bytes.fromhex(info.metadata.get(meta.ETAG, "")))
    return f"{digest.hexdigest()}-{len(parts)}"


async def _realign_last(gw: Gateway, parts: list[ObjectInfo], record: ObjectInfo) -> ObjectInfo:
    """Rewrite the last part with the others' stripe size (copying that one part)."""
    last = parts[-1]
    stripe = next(p.stripe_bytes for p in parts if p.size > 0)
    stream = await gw.client.open(MULTIPART_BUCKET, last.key)
    k, n = _redundancy(record)
    return await gw.client.put(
        MULTIPART_BUCKET,
        last.key,
        stream.pieces(),
        k=k,
        n=n,
        stripe_bytes=stripe,
        metadata=dict(last.metadata),
    )


async def _finish(gw: Gateway, call: Call, upload_id: str, record: ObjectInfo) -> ObjectInfo:
    """Check the parts and make the final object; then drop the upload's leftovers."""
    document = xml.parse(await gw.read_small(call), "CompleteMultipartUpload")
    chosen = _check_parts(gw, _requested(document), await _parts(gw, upload_id))
    stored = meta.user_visible(record.metadata)
    stored[meta.ETAG] = multipart_etag(chosen)
    stored[meta.PARTS] = meta.encode_parts([p.size for p in chosen])
    layout = composable(chosen)
    if layout == "last":
        chosen[-1] = await _realign_last(gw, chosen, record)
        layout = composable(chosen)
    if layout == "":
        sources = [(MULTIPART_BUCKET, p.key, p.version_id) for p in chosen]
        info = await gw.client.compose(call.bucket, call.key, sources, metadata=stored)
    else:
        log.info(
            "multipart parts do not line up with one stripe size; copying them",
            extra={"upload_id": upload_id, "parts": len(chosen)},
        )
        info = await gw.client.put(
            call.bucket, call.key, _concatenated(gw, chosen), metadata=stored
        )
    await _cleanup(gw, call.bucket, upload_id)
    return info


async def _concatenated(gw: Gateway, parts: list[ObjectInfo]) -> AsyncIterator[bytes]:
    for part in parts:
        if part.size:
            stream = await gw.client.open(MULTIPART_BUCKET, part.key)
            async for piece in stream.pieces():
                yield piece


async def _cleanup(gw: Gateway, bucket: str, upload_id: str) -> None:
    """Delete whatever is left of an upload: unlisted parts, then its record."""
    for info in (await _parts(gw, upload_id)).values():
        with contextlib.suppress(NotFound):
            await gw.client.delete(MULTIPART_BUCKET, info.key)
    with contextlib.suppress(NotFound):
        await gw.client.delete(MULTIPART_BUCKET, record_key(bucket, upload_id))
    gw.part_stripes.pop(upload_id, None)


def _result(call: Call, info: ObjectInfo) -> bytes:
    return xml.document(
        "CompleteMultipartUploadResult",
        [
            ("Location", f"/{call.bucket}/{call.key}"),
            ("Bucket", call.bucket),
            ("Key", call.key),
            ("ETag", meta.etag_of(info.metadata, info.etag)),
        ],
    )


async def complete(gw: Gateway, call: Call) -> web.StreamResponse:
    """Complete an upload. A completion still running after KEEPALIVE_AFTER_S (a copy) sends
    200 at once and whitespace every few seconds, then the result or an error document in
    the body, as S3 does, so clients do not time out."""
    await gw.bucket(call.bucket, call.user)
    upload_id, record = await _record(gw, call)
    task = asyncio.ensure_future(_finish(gw, call, upload_id, record))
    done, _pending = await asyncio.wait({task}, timeout=KEEPALIVE_AFTER_S)
    if done:
        return web.Response(body=_result(call, task.result()), content_type="application/xml")
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/xml"})
    await response.prepare(call.request)
    await response.write(xml.DECLARATION.encode())
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=KEEPALIVE_AFTER_S)
            if not task.done():
                await response.write(b" ")
    except BaseException:
        task.cancel()
        raise
    try:
        body = _result(call, task.result())
    except (S3Error, ShoalError) as exc:
        error = from_shoal(exc, bucket=call.bucket, key=call.key)
        body = xml.error_document(error.code, error.message, request_id=call.request_id)
    await response.write(body.removeprefix(xml.DECLARATION.encode()))
    await response.write_eof()
    return response


async def abort(gw: Gateway, call: Call) -> web.StreamResponse:
    await gw.bucket(call.bucket, call.user)
    upload_id, _record_info = await _record(gw, call)
    await _cleanup(gw, call.bucket, upload_id)
    return empty_response(204)


async def abort_all(gw: Gateway, bucket: str) -> None:
    """Abort every upload of a bucket (it was deleted)."""
    async for info in gw.client.list(MULTIPART_BUCKET, f"uploads/{bucket}/"):
        await _cleanup(gw, bucket, info.key.rsplit("/", 1)[-1])


def _int(call: Call, name: str, default: int, high: int) -> int:
    try:
        value = int(call.query.get(name, str(default)))
    except ValueError:
        raise S3Error("InvalidArgument", f"{name} must be an integer") from None
    if value < 0:
        raise S3Error("InvalidArgument", f"{name} must be >= 0")
    return min(value, high)


def _initiator(gw: Gateway, record: ObjectInfo) -> list[xml.Node]:
    owner = record.metadata.get(OWNER, "")
    return [("ID", owner), ("DisplayName", gw.users.display_name(owner))]


async def list_parts(gw: Gateway, call: Call) -> web.StreamResponse:
    await gw.bucket(call.bucket, call.user)
    upload_id, record = await _record(gw, call)
    marker = _int(call, "part-number-marker", 0, MAX_PARTS)
    max_parts = _int(call, "max-parts", 1000, 1000)
    present = sorted((n, i) for n, i in (await _parts(gw, upload_id)).items() if n > marker)
    page = present[:max_parts]
    truncated = len(present) > max_parts
    children: list[xml.Node] = [
        ("Bucket", call.bucket),
        ("Key", call.key),
        ("UploadId", upload_id),
        ("Initiator", _initiator(gw, record)),
        ("Owner", _initiator(gw, record)),
        ("StorageClass", "STANDARD"),
        ("PartNumberMarker", marker),
        ("NextPartNumberMarker", page[-1][0] if page else marker),
        ("MaxParts", max_parts),
        ("IsTruncated", truncated),
    ]
    for number, info in page:
        children.append(
            (
                "Part",
                [
                    ("PartNumber", number),
                    ("LastModified", xml.iso_time(info.created)),
                    ("ETag", meta.etag_of(info.metadata, info.etag)),
                    ("Size", info.size),
                ],
            )
        )
    return xml_response("ListPartsResult", children)


async def list_uploads(gw: Gateway, call: Call) -> web.StreamResponse:
    bucket = await gw.bucket(call.bucket, call.user)
    await gw.ensure_multipart_bucket(bucket.k, bucket.n)
    prefix, delimiter = call.query.get("prefix", ""), call.query.get("delimiter", "")
    key_marker = call.query.get("key-marker", "")
    id_marker = call.query.get("upload-id-marker", "")
    max_uploads = _int(call, "max-uploads", 1000, 1000)
    uploads = []
    async for info in gw.client.list(MULTIPART_BUCKET, f"uploads/{call.bucket}/"):
        key = info.metadata.get(KEY, "")
        if key.startswith(prefix):
            initiated = info.metadata.get(INITIATED, xml.iso_time(info.created))
            uploads.append((key, initiated, info.key.rsplit("/", 1)[-1], info))
    uploads.sort()
    if key_marker:
        uploads = [
            u for u in uploads
            if u[0] > key_marker or (u[0] == key_marker and id_marker and u[2] > id_marker)
        ]  # fmt: skip
    entries: list[xml.Node] = []
    prefixes: list[str] = []
    last_key, last_id = "", ""
    truncated = False
    for key, initiated, upload_id, info in uploads:
        index = key.find(delimiter, len(prefix)) if delimiter else -1
        if index >= 0:
            common = key[: index + len(delimiter)]
            if common in prefixes:
                continue
            if len(entries) + len(prefixes) == max_uploads:
                truncated = True
                break
            prefixes.append(common)
            last_key, last_id = key, upload_id
            continue
        if len(entries) + len(prefixes) == max_uploads:
            truncated = True
            break
        entries.append(
            (
                "Upload",
                [
                    ("Key", key),
                    ("UploadId", upload_id),
                    ("Initiator", _initiator(gw, info)),
                    ("Owner", _initiator(gw, info)),
                    ("StorageClass", "STANDARD"),
                    ("Initiated", initiated),
                ],
            )
        )
        last_key, last_id = key, upload_id
    children: list[xml.Node] = [
        ("Bucket", call.bucket),
        ("KeyMarker", key_marker),
        ("UploadIdMarker", id_marker),
        ("NextKeyMarker", last_key if truncated else None),
        ("NextUploadIdMarker", last_id if truncated else None),
        ("Delimiter", delimiter or None),
        ("Prefix", prefix),
        ("MaxUploads", max_uploads),
        ("IsTruncated", truncated),
        *entries,
        *(("CommonPrefixes", [("Prefix", p)]) for p in prefixes),
    ]
    return xml_response("ListMultipartUploadsResult", children)
