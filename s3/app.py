"""The aiohttp application: authenticate, route by method, path and query, render errors.

Every request is authenticated with SigV4 (Authorization header or presigned query) before
anything else happens, including before `100 Continue` is sent to a client that asked for
it, so an unauthenticated upload is refused without its body being read. The operation is
chosen from the method, whether the path names a bucket and a key, and the subresource
query parameters, as S3 does; an operation Shoal does not implement answers `NotImplemented`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import unquote

from aiohttp import web
from aiohttp.http import HttpVersion11

from shoal.common.errors import ShoalError
from shoal.s3 import buckets, listing, multipart, objects, sigv2, sigv4, xml
from shoal.s3.credentials import User
from shoal.s3.errors import S3Error, from_shoal
from shoal.s3.gateway import Call, Gateway

log = logging.getLogger(__name__)

Handler = Callable[[Gateway, Call], Awaitable[web.StreamResponse]]
AUTH = "shoal.s3.auth"
GATEWAY = web.AppKey("gateway", Gateway)

# Subresources of buckets and objects that S3 has and this gateway does not.
UNSUPPORTED = frozenset(
    {
        "accelerate", "analytics", "attributes", "cors", "encryption", "intelligent-tiering",
        "inventory", "legal-hold", "lifecycle", "logging", "metadataConfiguration", "metrics",
        "notification", "object-lock", "ownershipControls", "policy", "policyStatus",
        "publicAccessBlock", "replication", "requestPayment", "restore", "retention", "select",
        "tagging", "torrent", "website",
    }
)  # fmt: skip


def parse_query(raw: str) -> list[tuple[str, str]]:
    """Decoded (name, value) pairs in order; '+' is a literal plus (clients send %20)."""
    pairs = []
    for item in raw.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        pairs.append((unquote(name), unquote(value)))
    return pairs


def _amz_date(request: web.Request) -> str:
    value = request.headers.get("x-amz-date", "")
    if value or "Date" not in request.headers:
        return value
    try:
        return (
            parsedate_to_datetime(request.headers["Date"])
            .astimezone(UTC)
            .strftime("%Y%m%dT%H%M%SZ")
        )
    except (TypeError, ValueError):
        return ""


def _user(gw: Gateway, access_key: str) -> User:
    user = gw.users.user(access_key)
    if user is None:
        raise S3Error(
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
            extra={"AWSAccessKeyId": access_key},
        )
    return user


def _sigv2(
    gw: Gateway,
    request: web.Request,
    raw_path: str,
    pairs: list[tuple[str, str]],
    headers: dict[str, list[str]],
) -> tuple[User, sigv4.Verified]:
    """Signature Version 2: presigned query (boto3's default for presigned URLs) or header."""
    query = dict(pairs)
    now = datetime.now(UTC)
    if "AWSAccessKeyId" in query:
        user = _user(gw, query["AWSAccessKeyId"])
        sigv2.check_expires(query.get("Expires", ""), now)
        date_line, signature = query.get("Expires", ""), query.get("Signature", "")
    else:
        access_key, signature = sigv2.parse_header(request.headers["Authorization"])
        user = _user(gw, access_key)
        amz_date = _amz_date(request)
        if amz_date:
            sigv4.check_time(sigv4.Credential("", amz_date[:8], "", "", (), "", amz_date), now)
        date_line = "" if "x-amz-date" in headers else request.headers.get("Date", "")
    text = sigv2.string_to_sign(request.method, raw_path, pairs, headers, date_line)
    sigv2.check(text, user.secret_key, signature)
    return user, sigv4.Verified(b"", "", "", "")


def authenticate(gw: Gateway, request: web.Request) -> tuple[Call, str]:
    """Check the request's signature; the Call (bucket and key still unset) and raw path."""
    raw_path, _, raw_query = request.raw_path.partition("?")
    pairs = parse_query(raw_query)
    query = dict(pairs)
    headers: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        headers.setdefault(name.lower(), []).append(value)
    authorization = request.headers.get("Authorization", "")
    payload = request.headers.get("x-amz-content-sha256", "")
    if authorization.startswith("AWS ") or (
        not authorization and "AWSAccessKeyId" in query and "Signature" in query
    ):
        if payload in (sigv4.STREAMING_SIGNED, sigv4.STREAMING_SIGNED_TRAILER):
            raise S3Error("InvalidRequest", "signed chunked uploads need Signature Version 4")
        user, verified = _sigv2(gw, request, raw_path, pairs, headers)
        call = Call(
            request, user, "", "", query, _request_id(request), verified,
            payload or sigv4.UNSIGNED_PAYLOAD,
        )  # fmt: skip
        return call, raw_path
    if authorization:
        credential = sigv4.parse_authorization(authorization, _amz_date(request))
        if not payload:
            raise S3Error(
                "InvalidRequest",
                "Missing required header for this request: x-amz-content-sha256",
            )
    elif "X-Amz-Algorithm" in query or "X-Amz-Credential" in query:
        credential = sigv4.parse_presigned(query)
        payload = payload or sigv4.UNSIGNED_PAYLOAD
    else:
        raise S3Error("AccessDenied", "Access Denied: anonymous requests are not allowed")
    user = _user(gw, credential.access_key)
    sigv4.check_time(credential, datetime.now(UTC))
    verified = sigv4.verify(
        credential,
        user.secret_key,
        method=request.method,
        raw_path=raw_path,
        query=pairs,
        headers=headers,
        payload_hash=payload,
    )
    call = Call(request, user, "", "", query, _request_id(request), verified, payload)
    return call, raw_path


def _request_id(request: web.Request) -> str:
    rid = request.get("shoal.s3.request_id")
    if not isinstance(rid, str):
        rid = uuid.uuid4().hex[:16].upper()
        request["shoal.s3.request_id"] = rid
    return rid


def _locate(gw: Gateway, request: web.Request, raw_path: str) -> tuple[str, str]:
    """(bucket, key) from the Host (virtual-hosted style) or the path (path style)."""
    path = unquote(raw_path, errors="surrogateescape")
    domain = gw.config.domain
    host = request.headers.get("Host", "").rsplit(":", 1)[0].lower()
    if domain and host.endswith("." + domain):
        return host[: -len(domain) - 1], path[1:]
    bucket, _, key = path[1:].partition("/")
    return bucket, key


def route(call: Call) -> Handler:
    """The handler of a request, S3's way: method x (service | bucket | object) x query."""
    method, query = call.request.method, call.query
    unsupported = UNSUPPORTED & set(query)
    if not call.bucket:
        if method == "GET":
            return buckets.list_buckets
        raise S3Error("MethodNotAllowed", "The specified method is not allowed here")
    if unsupported:
        raise S3Error(
            "NotImplemented",
            f"A header or query you provided implies functionality that is not implemented: "
            f"{', '.join(sorted(unsupported))}",
        )
    if not call.key:
        return _bucket_route(method, query)
    return _object_route(method, query, call)


def _bucket_route(method: str, query: dict[str, str]) -> Handler:
    table: dict[tuple[str, str], Handler] = {
        ("GET", "location"): buckets.get_location,
        ("GET", "versioning"): buckets.get_versioning,
        ("GET", "acl"): buckets.get_acl,
        ("GET", "uploads"): multipart.list_uploads,
        ("GET", "versions"): listing.list_versions,
        ("POST", "delete"): objects.delete_objects,
    }
    for (verb, name), handler in table.items():
        if method == verb and name in query:
            return handler
    plain: dict[str, Handler] = {
        "GET": listing.list_v2 if query.get("list-type") == "2" else listing.list_v1,
        "PUT": buckets.create_bucket,
        "DELETE": buckets.delete_bucket,
        "HEAD": buckets.head_bucket,
    }
    if method in plain and not (
        {"acl", "versioning", "uploads", "versions", "location"} & set(query)
    ):
        return plain[method]
    raise S3Error("NotImplemented", f"{method} on a bucket with {sorted(query)} is not implemented")


def _object_route(method: str, query: dict[str, str], call: Call) -> Handler:
    copy = bool(call.header("x-amz-copy-source"))
    if "uploadId" in query:
        handlers: dict[str, Handler] = {
            "PUT": multipart.upload_part_copy if copy else multipart.upload_part,
            "GET": multipart.list_parts,
            "DELETE": multipart.abort,
            "POST": multipart.complete,
        }
        if method in handlers:
            return handlers[method]
    elif method == "POST" and "uploads" in query:
        return multipart.create
    elif method == "GET" and "acl" in query:
        return objects.get_acl
    elif "acl" not in query:
        plain: dict[str, Handler] = {
            "PUT": objects.copy_object if copy else objects.put_object,
            "GET": objects.get_object,
            "HEAD": objects.head_object,
            "DELETE": objects.delete_object,
        }
        if method in plain:
            return plain[method]
    raise S3Error(
        "NotImplemented", f"{method} on an object with {sorted(query)} is not implemented"
    )


def error_response(request: web.Request, error: S3Error) -> web.Response:
    rid = _request_id(request)
    headers = {"x-amz-request-id": rid, **error.headers}
    if request.method == "HEAD" or error.status == 304:
        response = web.Response(status=error.status, headers=headers)
    else:
        extra = list(error.extra.items())
        body = xml.error_document(
            error.code, error.message, resource=error.resource, request_id=rid, extra=extra
        )
        response = web.Response(
            status=error.status, body=body, headers=headers, content_type="application/xml"
        )
    return response


def _leaf(exc: BaseException) -> BaseException:
    """The first ShoalError inside an exception group, else the exception itself."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _leaf(inner)
            if isinstance(found, ShoalError):
                return found
    return exc


async def handle(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    call: Call | None = None
    try:
        cached = request.get(AUTH)
        call, raw_path = cached if cached is not None else authenticate(gw, request)
        call.bucket, call.key = _locate(gw, request, raw_path)
        handler = route(call)
        response = await handler(gw, call)
    except Exception as exc:
        leaf = _leaf(exc)
        if isinstance(leaf, ShoalError):
            error = from_shoal(
                leaf, bucket=call.bucket if call else "", key=call.key if call else ""
            )
        else:
            log.exception("request failed: %s %s", request.method, request.path)
            error = S3Error("InternalError", "We encountered an internal error. Please try again.")
        if error.status >= 500:
            log.warning(
                "request failed",
                extra={"method": request.method, "path": request.path, "code": error.code,
                       "error": error.message},
            )  # fmt: skip
        if isinstance(leaf, S3Error) and leaf.code in ("SignatureDoesNotMatch",):
            log.info("signature mismatch", extra={"path": request.path})
        return error_response(request, error)
    if not response.prepared:
        response.headers.setdefault("x-amz-request-id", call.request_id)
    return response


async def expect_handler(request: web.Request) -> web.StreamResponse | None:
    """`Expect: 100-continue`: authenticate from the headers first, so a refused upload never
    sends its body; then let the client send it."""
    expect = request.headers.get("Expect", "")
    if expect.lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"Unknown Expect: {expect}")
    try:
        request[AUTH] = authenticate(request.app[GATEWAY], request)
    except S3Error as error:
        response = error_response(request, error)
        response.force_close()
        return response
    if request.version == HttpVersion11:
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0
    return None


@web.middleware
async def server_header(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    response = await handler(request)
    if not response.prepared:
        response.headers["Server"] = "Shoal"
    return response


def build_app(gw: Gateway) -> web.Application:
    app = web.Application(middlewares=[server_header])
    app[GATEWAY] = gw
    app.router.add_route("*", "/{tail:.*}", handle, expect_handler=expect_handler)
    return app
