"""AWS Signature Version 2 (HMAC-SHA1), which boto3 still uses by default for presigned URLs
(`generate_presigned_url` without `signature_version="s3v4"`), and its header form.

    string to sign = method \\n Content-MD5 \\n Content-Type \\n Expires (or Date) \\n
                     x-amz-* headers (name:value\\n, sorted) + resource
    resource       = the path as sent (percent-encoded) + sorted S3 subresources
    signature      = base64(HMAC-SHA1(secret, string to sign))
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import datetime

from shoal.s3.errors import S3Error

# Query parameters that are part of the signed resource.
SUBRESOURCES = frozenset(
    {
        "acl", "cors", "delete", "lifecycle", "location", "logging", "notification",
        "partNumber", "policy", "requestPayment", "response-cache-control",
        "response-content-disposition", "response-content-encoding",
        "response-content-language", "response-content-type", "response-expires", "tagging",
        "torrent", "uploadId", "uploads", "versionId", "versioning", "versions", "website",
    }
)  # fmt: skip


def string_to_sign(
    method: str,
    raw_path: str,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, Sequence[str]],
    date_line: str,
) -> str:
    def first(name: str) -> str:
        values = headers.get(name)
        return values[0].strip() if values else ""

    amz = sorted(
        (name, ",".join(v.strip() for v in values))
        for name, values in headers.items()
        if name.startswith("x-amz-")
    )
    resource = raw_path or "/"
    signed = sorted((k, v) for k, v in query if k in SUBRESOURCES)
    if signed:
        resource += "?" + "&".join(f"{k}={v}" if v else k for k, v in signed)
    lines = [method, first("content-md5"), first("content-type"), date_line]
    return "\n".join(lines) + "\n" + "".join(f"{k}:{v}\n" for k, v in amz) + resource


def sign(secret: str, text: str) -> str:
    digest = hmac.new(secret.encode(), text.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def check(expected_text: str, secret: str, signature: str) -> None:
    if not hmac.compare_digest(sign(secret, expected_text), signature):
        raise S3Error(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. "
            "Check your key and signing method.",
            extra={"StringToSign": expected_text},
        )


def check_expires(expires: str, now: datetime) -> None:
    try:
        deadline = int(expires)
    except ValueError:
        raise S3Error("AccessDenied", "Invalid Expires value") from None
    if now.timestamp() > deadline:
        raise S3Error("AccessDenied", "Request has expired")


def parse_header(authorization: str) -> tuple[str, str]:
    """(access key, signature) of `AWS AKID:signature`."""
    _, _, rest = authorization.partition(" ")
    access_key, sep, signature = rest.strip().partition(":")
    if not sep or not access_key:
        raise S3Error("AccessDenied", "malformed AWS authorization header")
    return access_key, signature
