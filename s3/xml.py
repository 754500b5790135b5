"""S3 XML documents: a tiny builder for responses and a namespace-agnostic parser for request
bodies (CreateBucketConfiguration, Delete, CompleteMultipartUpload).

Responses are built as nested `(tag, children)` values: a child is a string (text), an int,
a bool ("true"/"false"), None (omitted element), or a list of `(tag, value)` pairs. Text is
escaped; nothing else is interpreted.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from email.utils import format_datetime

from shoal.s3.errors import S3Error

NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'
# Request bodies parsed in memory (Delete of 1000 keys, Complete of 10000 parts) stay below.
MAX_XML_BYTES = 4 * 1024 * 1024

Value = str | int | bool | None | Sequence["Node"]
Node = tuple[str, Value]

_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\r": "&#13;", "\n": "&#10;"}
)


def escape(text: str) -> str:
    """XML-escape text, including CR and LF so keys containing them round-trip."""
    return text.translate(_ESCAPES)


def _render(tag: str, value: Value, out: list[str]) -> None:
    if value is None:
        return
    if isinstance(value, bool):
        out.append(f"<{tag}>{'true' if value else 'false'}</{tag}>")
    elif isinstance(value, (int, str)):
        out.append(f"<{tag}>{escape(str(value))}</{tag}>")
    else:
        out.append(f"<{tag}>")
        for child_tag, child in value:
            _render(child_tag, child, out)
        out.append(f"</{tag}>")


def document(root: str, children: Sequence[Node], *, namespace: bool = True) -> bytes:
    """A whole XML document `<root xmlns=...>children</root>`."""
    out = [DECLARATION, f'<{root} xmlns="{NAMESPACE}">' if namespace else f"<{root}>"]
    for tag, value in children:
        _render(tag, value, out)
    out.append(f"</{root}>")
    return "".join(out).encode()


def error_document(
    code: str, message: str, *, resource: str = "", request_id: str = "", extra: Iterable[Node] = ()
) -> bytes:
    """An S3 error document."""
    children: list[Node] = [("Code", code), ("Message", message)]
    if resource:
        children.append(("Resource", resource))
    children.extend(extra)
    children.append(("RequestId", request_id))
    return document("Error", children, namespace=False)


def iso_time(when: datetime) -> str:
    """S3's timestamp in XML: 2009-10-12T17:50:30.000Z."""
    utc = when.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def http_time(when: datetime) -> str:
    """An HTTP date (Last-Modified): Wed, 12 Oct 2009 17:50:00 GMT."""
    return format_datetime(when.astimezone(UTC).replace(microsecond=0), usegmt=True)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse(body: bytes, root: str) -> ET.Element:
    """Parse a request body whose root element is `root` (any namespace); MalformedXML else."""
    if len(body) > MAX_XML_BYTES:
        raise S3Error("MalformedXML", "The XML you provided was too large.")
    try:
        element = ET.fromstring(body)
    except ET.ParseError:
        raise S3Error(
            "MalformedXML",
            "The XML you provided was not well-formed or did not validate against our "
            "published schema",
        ) from None
    if _local(element.tag) != root:
        raise S3Error("MalformedXML", f"Expected a {root} document, got {_local(element.tag)}")
    return element


def children(element: ET.Element, tag: str) -> list[ET.Element]:
    """Direct children named `tag` (any namespace)."""
    return [child for child in element if _local(child.tag) == tag]


def text(element: ET.Element, tag: str, default: str | None = None) -> str:
    """Text of the first child named `tag`; MalformedXML when absent and no default."""
    found = children(element, tag)
    if not found:
        if default is None:
            raise S3Error("MalformedXML", f"Missing element {tag}")
        return default
    return found[0].text or ""
