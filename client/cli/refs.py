"""Parsing of BUCKET/KEY and BUCKET[/PREFIX] arguments."""

from __future__ import annotations

from shoal.client.cli.failures import UsageError


def parse_object_ref(text: str) -> tuple[str, str]:
    """Split 'BUCKET/KEY' into (bucket, key); UsageError if either part is missing."""
    bucket, slash, key = text.partition("/")
    if not slash or not bucket or not key:
        raise UsageError(f"expected BUCKET/KEY, got {text!r}")
    return bucket, key


def parse_listing_ref(text: str) -> tuple[str, str]:
    """Split 'BUCKET' or 'BUCKET/PREFIX' into (bucket, prefix)."""
    bucket, _, prefix = text.partition("/")
    if not bucket:
        raise UsageError(f"expected BUCKET or BUCKET/PREFIX, got {text!r}")
    return bucket, prefix
