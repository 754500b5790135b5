"""AWS Signature Version 4, as S3 uses it: header and presigned-URL forms, and the signed
chunks of `STREAMING-AWS4-HMAC-SHA256-PAYLOAD` uploads.

    canonical request = method \\n canonical URI \\n canonical query \\n canonical headers \\n
                        signed header names \\n payload hash
    string to sign    = AWS4-HMAC-SHA256 \\n amz date \\n scope \\n sha256(canonical request)
    signing key       = HMAC chain over "AWS4" + secret: date, region, "s3", "aws4_request"
    signature         = hex(HMAC(signing key, string to sign))

S3 specifics: the canonical URI is the path URI-encoded once (slashes kept, nothing
normalised); the payload hash is the `x-amz-content-sha256` header (a hex SHA-256,
`UNSIGNED-PAYLOAD`, or a `STREAMING-*` marker) and `UNSIGNED-PAYLOAD` for presigned URLs.
A streaming upload's seed signature is the request's; each chunk is then signed with
`AWS4-HMAC-SHA256-PAYLOAD`, chaining the previous chunk's signature.

Everything here is pure (no I/O) so the AWS documented examples are its unit tests.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote_to_bytes

from shoal.s3.errors import S3Error

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
STREAMING = (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_SKEW_S = 15 * 60
MAX_PRESIGN_EXPIRES_S = 7 * 24 * 3600
SERVICE = "s3"
_UNRESERVED = "-_.~"


def uri_encode(value: str | bytes, *, keep_slash: bool = False) -> str:
    """AWS URI encoding: every byte but A-Z a-z 0-9 - _ . ~ (and '/' when kept) as %XX."""
    return quote(value, safe=_UNRESERVED + ("/" if keep_slash else ""))


def canonical_uri(raw_path: str) -> str:
    """The canonical URI of a request path as received (percent-encoded): decoded once, then
    encoded the AWS way, so `%2F`, `+` and spaces come out as the client signed them."""
    return uri_encode(unquote_to_bytes(raw_path or "/"), keep_slash=True)


def canonical_query(pairs: Iterable[tuple[str, str]], *, exclude: str = "") -> str:
    """Sorted `name=value` pairs of decoded query parameters, each side AWS URI-encoded."""
    encoded = sorted(
        (uri_encode(name), uri_encode(value)) for name, value in pairs if name != exclude
    )
    return "&".join(f"{name}={value}" for name, value in encoded)


def _trim(value: str) -> str:
    return " ".join(value.split())


def canonical_headers(headers: Mapping[str, Sequence[str]], signed: Sequence[str]) -> str:
    """`name:value\\n` for each signed header (values of repeated headers joined by ',')."""
    lines = []
    for name in signed:
        values = headers.get(name)
        if values is None:
            raise S3Error(
                "AccessDenied",
                f"There were headers present in the request which were not "
                f"signed, or a signed header is missing: {name}",
            )
        lines.append(f"{name}:{','.join(_trim(v) for v in values)}\n")
    return "".join(lines)


def canonical_request(
    method: str,
    raw_path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, Sequence[str]],
    signed: Sequence[str],
    payload_hash: str,
    *,
    exclude_query: str = "",
) -> str:
    return "\n".join(
        [
            method,
            canonical_uri(raw_path),
            canonical_query(query, exclude=exclude_query),
            canonical_headers(headers, signed),
            ";".join(signed),
            payload_hash,
        ]
    )


def signing_key(secret: str, date: str, region: str, service: str = SERVICE) -> bytes:
    key = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def string_to_sign(amz_date: str, scope: str, request: str) -> str:
    digest = hashlib.sha256(request.encode()).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def sign(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def chunk_string_to_sign(amz_date: str, scope: str, previous: str, chunk_sha256: str) -> str:
    """What signs one chunk of a STREAMING-AWS4-HMAC-SHA256-PAYLOAD upload."""
    return (
        f"AWS4-HMAC-SHA256-PAYLOAD\n{amz_date}\n{scope}\n{previous}\n{EMPTY_SHA256}\n{chunk_sha256}"
    )


def trailer_string_to_sign(amz_date: str, scope: str, previous: str, trailer: bytes) -> str:
    """What signs the trailing headers of a STREAMING-...-PAYLOAD-TRAILER upload."""
    digest = hashlib.sha256(trailer).hexdigest()
    return f"AWS4-HMAC-SHA256-TRAILER\n{amz_date}\n{scope}\n{previous}\n{digest}"


@dataclass(frozen=True)
class Credential:
    """The parsed request credentials (header or query form)."""

    access_key: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    amz_date: str
    presigned: bool = False
    expires_s: int = 0

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


def _credential_parts(value: str, error: str) -> tuple[str, str, str, str]:
    parts = value.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not parts[0]:
        raise S3Error(error, f"the Credential is mal-formed; expecting \"<YOUR-AKID>/YYYYMMDD/"
                      f"REGION/SERVICE/aws4_request\", got {value!r}")  # fmt: skip
    return parts[0], parts[1], parts[2], parts[3]


def parse_authorization(header: str, amz_date: str) -> Credential:
    """Parse `AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`."""
    algorithm, _, rest = header.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise S3Error(
            "InvalidRequest" if algorithm.startswith("AWS") else "AuthorizationHeaderMalformed",
            "Please use AWS4-HMAC-SHA256 (Signature Version 4).",
        )
    fields: dict[str, str] = {}
    for item in rest.split(","):
        name, sep, value = item.strip().partition("=")
        if sep:
            fields[name] = value
    if not {"Credential", "SignedHeaders", "Signature"} <= set(fields):
        raise S3Error(
            "AuthorizationHeaderMalformed",
            "The authorization header is malformed; it needs Credential, SignedHeaders and "
            "Signature.",
        )
    if not amz_date:
        raise S3Error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date")
    access_key, date, region, service = _credential_parts(
        fields["Credential"], "AuthorizationHeaderMalformed"
    )
    return Credential(
        access_key,
        date,
        region,
        service,
        tuple(fields["SignedHeaders"].split(";")),
        fields["Signature"],
        amz_date,
    )


def parse_presigned(query: Mapping[str, str]) -> Credential:
    """Parse the X-Amz-* query parameters of a presigned URL."""
    needed = ("X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Signature")
    missing = [name for name in needed if name not in query]
    if query.get("X-Amz-Algorithm") != ALGORITHM or missing:
        raise S3Error(
            "AuthorizationQueryParametersError",
            "Query-string authentication version 4 requires the X-Amz-Algorithm, "
            "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and "
            "X-Amz-Expires parameters.",
        )
    access_key, date, region, service = _credential_parts(
        query["X-Amz-Credential"], "AuthorizationQueryParametersError"
    )
    try:
        expires = int(query.get("X-Amz-Expires", "604800"))
    except ValueError:
        expires = -1
    if not 0 < expires <= MAX_PRESIGN_EXPIRES_S:
        raise S3Error(
            "AuthorizationQueryParametersError",
            "X-Amz-Expires must be between 1 and 604800 seconds",
        )
    return Credential(
        access_key,
        date,
        region,
        service,
        tuple(query["X-Amz-SignedHeaders"].split(";")),
        query["X-Amz-Signature"],
        query["X-Amz-Date"],
        presigned=True,
        expires_s=expires,
    )


def parse_amz_date(value: str) -> datetime:
    try:
        return datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise S3Error("AccessDenied", f"invalid x-amz-date {value!r}") from None


def check_time(credential: Credential, now: datetime) -> None:
    """Reject requests signed too far from `now`, and expired presigned URLs."""
    signed_at = parse_amz_date(credential.amz_date)
    if credential.amz_date[:8] != credential.date:
        raise S3Error("SignatureDoesNotMatch", "the credential date does not match x-amz-date")
    age = (now - signed_at).total_seconds()
    if credential.presigned:
        if age > credential.expires_s:
            raise S3Error("AccessDenied", "Request has expired")
        if age < -MAX_SKEW_S:
            raise S3Error("AccessDenied", "Request is not valid yet")
    elif abs(age) > MAX_SKEW_S:
        raise S3Error(
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
        )


@dataclass(frozen=True)
class Verified:
    """A request whose signature checked out: what later chunk signatures chain from."""

    key: bytes
    scope: str
    amz_date: str
    signature: str


def verify(
    credential: Credential,
    secret: str,
    *,
    method: str,
    raw_path: str,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, Sequence[str]],
    payload_hash: str,
) -> Verified:
    """Check the request signature; SignatureDoesNotMatch with the expected string to sign."""
    if "host" not in credential.signed_headers:
        raise S3Error("AccessDenied", "the host header must be signed")
    request = canonical_request(
        method,
        raw_path,
        query,
        headers,
        credential.signed_headers,
        payload_hash,
        exclude_query="X-Amz-Signature" if credential.presigned else "",
    )
    text = string_to_sign(credential.amz_date, credential.scope, request)
    key = signing_key(secret, credential.date, credential.region, credential.service)
    expected = sign(key, text)
    if not hmac.compare_digest(expected, credential.signature):
        raise S3Error(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. "
            "Check your key and signing method.",
            extra={"StringToSign": text, "CanonicalRequest": request},
        )
    return Verified(key, credential.scope, credential.amz_date, expected)
