"""The gateway's shared state (`Gateway`) and one authenticated request (`Call`).

Handlers are `async def handler(gw, call) -> web.StreamResponse`; they reach the cluster only
through the async SDK (`gw.client`), raise `S3Error` (or let SDK errors through, which the
app maps to S3 codes), and build responses with the helpers here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from shoal.client import AsyncClient, BucketInfo
from shoal.common.errors import AlreadyExists
from shoal.common.jobspec import INTERNAL_BUCKET
from shoal.s3 import sigv4, xml
from shoal.s3.body import ChunkedBody, plain_body
from shoal.s3.checksums import ALGORITHMS, BodyDigests
from shoal.s3.config import GatewayConfig
from shoal.s3.credentials import Credentials, User
from shoal.s3.errors import S3Error

log = logging.getLogger(__name__)

# Multipart parts and upload records live as ordinary erasure-coded objects here.
MULTIPART_BUCKET = "shoal-s3-multipart"
HIDDEN_BUCKETS = frozenset({INTERNAL_BUCKET, MULTIPART_BUCKET})
BUCKET_CACHE_S = 2.0


@dataclass
class Call:
    """One authenticated request, parsed."""

    request: web.Request
    user: User
    bucket: str
    key: str
    query: dict[str, str]
    request_id: str
    signing: sigv4.Verified
    payload_hash: str

    def header(self, name: str, default: str = "") -> str:
        return self.request.headers.get(name, default)


class Gateway:
    """State shared by every request: config, SDK client, users, a short bucket cache."""

    def __init__(self, config: GatewayConfig, client: AsyncClient, users: Credentials) -> None:
        self.config = config
        self.client = client
        self.users = users
        self._buckets: dict[str, BucketInfo] = {}
        self._buckets_at = 0.0
        self._buckets_lock = asyncio.Lock()
        # Upload id -> stripe size its parts use (see multipart.part_stripe_bytes).
        self.part_stripes: dict[str, int] = {}
        self._multipart_ready = False

    # Buckets -------------------------------------------------------------------------------

    async def buckets(self, *, fresh: bool = False) -> dict[str, BucketInfo]:
        """Every bucket by name (cached for BUCKET_CACHE_S)."""
        async with self._buckets_lock:
            if fresh or time.monotonic() - self._buckets_at > BUCKET_CACHE_S:
                listed = await self.client.list_buckets()
                self._buckets = {b.name: b for b in listed}
                self._buckets_at = time.monotonic()
            return self._buckets

    def forget_buckets(self) -> None:
        self._buckets_at = 0.0

    async def bucket(self, name: str, user: User) -> BucketInfo:
        """The bucket a request names, if it exists and `user` may use it."""
        if name in HIDDEN_BUCKETS:
            raise S3Error("AccessDenied", "Access Denied", resource=name)
        found = (await self.buckets()).get(name)
        if found is None:
            found = (await self.buckets(fresh=True)).get(name)
        if found is None:
            raise S3Error("NoSuchBucket", "The specified bucket does not exist", resource=name)
        if found.owner and found.owner != user.id:
            raise S3Error("AccessDenied", "Access Denied", resource=name)
        return found

    def owner(self, bucket: BucketInfo) -> list[xml.Node]:
        """The S3 <Owner> children of a bucket (its objects are its owner's)."""
        owner_id = bucket.owner or "shoal"
        return [("ID", owner_id), ("DisplayName", self.users.display_name(owner_id))]

    async def ensure_multipart_bucket(self, k: int, n: int) -> None:
        """Create the internal bucket of parts once (with the redundancy of the first bucket
        that needs it; every part is written with its own upload's redundancy anyway)."""
        if self._multipart_ready:
            return
        with contextlib.suppress(AlreadyExists):
            await self.client.create_bucket(MULTIPART_BUCKET, k, n)
        self._multipart_ready = True

    # Bodies --------------------------------------------------------------------------------

    def body(
        self, call: Call, *, limit: int | None = None
    ) -> tuple[AsyncIterator[bytes], int, BodyDigests]:
        """The request body as decoded, verified pieces: (pieces, size, digests).

        Accepts plain bodies (signed SHA-256 or UNSIGNED-PAYLOAD) and aws-chunked ones
        (signed chunks, or unsigned with trailing checksums); checks Content-MD5 and
        x-amz-checksum-* headers once the body has passed.
        """
        limit = self.config.max_object_size if limit is None else limit
        digests = BodyDigests()
        for algorithm in ALGORITHMS:
            value = call.header(f"x-amz-checksum-{algorithm.lower()}")
            if value:
                digests.expect_checksum(algorithm, value)
        if call.header("Content-MD5"):
            digests.expect_content_md5(call.header("Content-MD5"))
        payload = call.payload_hash
        if payload in sigv4.STREAMING:
            size = _length(
                call.header("x-amz-decoded-content-length"), "x-amz-decoded-content-length"
            )
            _check_size(size, limit)
            trailer = tuple(
                t.strip().lower() for t in call.header("x-amz-trailer").split(",") if t.strip()
            )
            for name in trailer:
                algorithm = name.removeprefix("x-amz-checksum-").upper()
                if algorithm not in ALGORITHMS:
                    raise S3Error("InvalidRequest", f"unsupported trailer {name}")
                digests.add_checksum(algorithm)
            signing = call.signing if payload != sigv4.STREAMING_UNSIGNED_TRAILER else None
            chunked = ChunkedBody(call.request.content, digests, size, signing, trailer)
            return chunked.__aiter__(), size, digests
        if call.request.content_length is None:
            if call.request.method in ("PUT", "POST") and call.request.body_exists:
                raise S3Error(
                    "MissingContentLength", "You must provide the Content-Length HTTP header."
                )
            size = 0
        else:
            size = call.request.content_length
        _check_size(size, limit)
        if payload != sigv4.UNSIGNED_PAYLOAD:
            digests.expect_sha256(payload)
        return plain_body(call.request.content, size, digests), size, digests

    async def read_small(self, call: Call) -> bytes:
        """A small request body (an XML document), verified like any other."""
        pieces, _size, _digests = self.body(call, limit=xml.MAX_XML_BYTES)
        return b"".join([piece async for piece in pieces])


def _length(value: str, name: str) -> int:
    try:
        size = int(value)
    except ValueError:
        raise S3Error("MissingContentLength", f"You must provide the {name} header.") from None
    if size < 0:
        raise S3Error("InvalidArgument", f"invalid {name}")
    return size


def _check_size(size: int, limit: int) -> None:
    if size > limit:
        raise S3Error(
            "EntityTooLarge",
            f"Your proposed upload ({size} bytes) exceeds the maximum allowed size ({limit}).",
        )


# Responses ---------------------------------------------------------------------------------


def xml_response(root: str, children: list[xml.Node], *, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=xml.document(root, children), content_type="application/xml"
    )


def empty_response(status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, headers=headers)


def acl_document(owner: list[xml.Node]) -> web.Response:
    """The owner with FULL_CONTROL: the only ACL this gateway has."""
    grantee: list[xml.Node] = list(owner)
    return web.Response(
        body=xml.document(
            "AccessControlPolicy",
            [
                ("Owner", owner),
                (
                    "AccessControlList",
                    [("Grant", [("Grantee", grantee), ("Permission", "FULL_CONTROL")])],
                ),
            ],
        ).replace(
            b"<Grantee>",
            b'<Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            b'xsi:type="CanonicalUser">',
        ),
        content_type="application/xml",
    )


def check_key(key: str) -> None:
    """S3 keys: 1-1024 bytes of UTF-8 (KeyTooLongError above)."""
    if len(key.encode("utf-8", "surrogateescape")) > 1024:
        raise S3Error("KeyTooLongError", "Your key is too long")
    if not key:
        raise S3Error("InvalidArgument", "An object key is required")
