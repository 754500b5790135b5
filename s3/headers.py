"""What of an S3 request's headers is stored with an object, and how it comes back.

Object metadata (ObjectInfo.metadata) holds the standard headers S3 round-trips
(Content-Type, Content-Encoding, ...), the user's `x-amz-meta-*` (names lower-cased, as S3
does), and the gateway's own entries under `s3:` names (HTTP header names cannot contain
':', so they never collide): the MD5 ETag, the part layout of multipart objects and the
checksums the client sent.
"""

from __future__ import annotations

from collections.abc import Mapping

from multidict import CIMultiDictProxy

from shoal.s3.errors import S3Error

STORED = (
    "content-type",
    "content-encoding",
    "content-disposition",
    "content-language",
    "cache-control",
    "expires",
    "x-amz-website-redirect-location",
)
USER_PREFIX = "x-amz-meta-"
MAX_USER_METADATA = 2048
DEFAULT_CONTENT_TYPE = "binary/octet-stream"
ETAG = "s3:etag"
PARTS = "s3:parts"
CHECKSUM_PREFIX = "s3:checksum-"
# GetObject query parameters that override response headers.
RESPONSE_OVERRIDES = {
    "response-content-type": "Content-Type",
    "response-content-language": "Content-Language",
    "response-expires": "Expires",
    "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
}


def from_request(headers: CIMultiDictProxy[str]) -> dict[str, str]:
    """The metadata to store from a PUT/POST/COPY(REPLACE) request's headers."""
    stored: dict[str, str] = {}
    user_bytes = 0
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith(USER_PREFIX):
            stored[lower] = value
            user_bytes += len(lower[len(USER_PREFIX) :].encode()) + len(value.encode())
        elif lower in STORED:
            stored[lower] = value
    encoding = stored.get("content-encoding")
    if encoding is not None:
        rest = [e.strip() for e in encoding.split(",") if e.strip().lower() != "aws-chunked"]
        if rest:
            stored["content-encoding"] = ", ".join(rest)
        else:
            del stored["content-encoding"]
    if user_bytes > MAX_USER_METADATA:
        raise S3Error(
            "MetadataTooLarge",
            f"Your metadata headers exceed the maximum allowed metadata size ({user_bytes} of "
            f"{MAX_USER_METADATA} bytes).",
        )
    return stored


def user_visible(metadata: Mapping[str, str]) -> dict[str, str]:
    """The stored entries that go back as response headers (no s3: internals)."""
    return {name: value for name, value in metadata.items() if not name.startswith("s3:")}


def response_headers(metadata: Mapping[str, str]) -> dict[str, str]:
    headers = user_visible(metadata)
    headers.setdefault("content-type", DEFAULT_CONTENT_TYPE)
    return headers


def etag_of(metadata: Mapping[str, str], native_etag: str) -> str:
    """The S3 ETag (quoted) of an object: the MD5 the gateway stored, else the native one
    (objects written with the Shoal SDK directly)."""
    return f'"{metadata.get(ETAG) or native_etag}"'


def encode_parts(sizes: list[int]) -> str:
    """Part sizes as runs, 'SIZExCOUNT,...': 10000 equal parts stay a few bytes."""
    runs: list[list[int]] = []
    for size in sizes:
        if runs and runs[-1][0] == size:
            runs[-1][1] += 1
        else:
            runs.append([size, 1])
    return ",".join(f"{size}x{count}" for size, count in runs)


def decode_parts(text: str) -> list[int]:
    sizes: list[int] = []
    for run in filter(None, text.split(",")):
        size, _, count = run.partition("x")
        sizes += [int(size)] * int(count or 1)
    return sizes


def part_range(metadata: Mapping[str, str], size: int, number: int) -> tuple[int, int, int]:
    """(offset, length, parts count) of part `number` (1-based); a single-part object has one
    part, the whole object. InvalidPartNumber-style InvalidRange beyond the last."""
    sizes = decode_parts(metadata.get(PARTS, "")) or [size]
    if not 1 <= number <= len(sizes):
        raise S3Error("InvalidRange", "The requested partnumber is not satisfiable")
    return sum(sizes[: number - 1]), sizes[number - 1], len(sizes)
