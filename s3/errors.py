"""S3 errors: each code with its HTTP status, and the mapping from Shoal's errors.

Handlers raise `S3Error(code, message)`; the app renders it as an S3 XML error document
(`<Error><Code>...`) with the code's status. `S3Error` is a `ShoalError`, so one raised while
the SDK consumes a request body (a bad digest found at the end of an upload) aborts the
upload and reaches the handler unwrapped.
"""

from __future__ import annotations

from shoal.common.errors import (
    AlreadyExists,
    BucketNotEmpty,
    ConnectionFailed,
    CorruptData,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ShoalError,
    Unavailable,
)

STATUS: dict[str, int] = {
    "AccessDenied": 403,
    "AuthorizationHeaderMalformed": 400,
    "AuthorizationQueryParametersError": 400,
    "BadDigest": 400,
    "BucketAlreadyExists": 409,
    "BucketAlreadyOwnedByYou": 409,
    "BucketNotEmpty": 409,
    "EntityTooLarge": 400,
    "EntityTooSmall": 400,
    "IncompleteBody": 400,
    "InternalError": 500,
    "InvalidAccessKeyId": 403,
    "InvalidArgument": 400,
    "InvalidBucketName": 400,
    "InvalidDigest": 400,
    "InvalidPart": 400,
    "InvalidPartOrder": 400,
    "InvalidRange": 416,
    "InvalidRequest": 400,
    "KeyTooLongError": 400,
    "MalformedXML": 400,
    "MetadataTooLarge": 400,
    "MethodNotAllowed": 405,
    "MissingContentLength": 411,
    "NoSuchBucket": 404,
    "NoSuchKey": 404,
    "NoSuchUpload": 404,
    "NoSuchVersion": 404,
    "NotImplemented": 501,
    "NotModified": 304,
    "PreconditionFailed": 412,
    "RequestTimeTooSkewed": 403,
    "ServiceUnavailable": 503,
    "SignatureDoesNotMatch": 403,
    "XAmzContentSHA256Mismatch": 400,
}


class S3Error(ShoalError):
    """An S3 error response: `code` (an S3 error code), its HTTP status and a message."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        resource: str = "",
        extra: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = STATUS.get(code, 400)
        self.message = message
        self.resource = resource
        self.extra = extra or {}
        self.headers = headers or {}


def from_shoal(error: ShoalError, *, bucket: str = "", key: str = "") -> S3Error:
    """The S3 error for an SDK error raised while serving bucket/key."""
    if isinstance(error, S3Error):
        return error
    message = str(error)
    if isinstance(error, NotFound):
        if message.startswith("bucket ") or not key:
            return S3Error("NoSuchBucket", "The specified bucket does not exist", resource=bucket)
        return S3Error("NoSuchKey", "The specified key does not exist.", resource=key)
    if isinstance(error, BucketNotEmpty):
        return S3Error("BucketNotEmpty", "The bucket you tried to delete is not empty")
    if isinstance(error, AlreadyExists):
        return S3Error("BucketAlreadyExists", message)
    if isinstance(error, InvalidArgument):
        return S3Error("InvalidArgument", message)
    if isinstance(error, (Unavailable, ConnectionFailed)):
        return S3Error("ServiceUnavailable", f"Please reduce your request rate. ({message})")
    if isinstance(error, (CorruptData, PermissionDenied)):
        return S3Error("InternalError", f"We encountered an internal error. ({message})")
    return S3Error("InternalError", f"We encountered an internal error. ({message})")
