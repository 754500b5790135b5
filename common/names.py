"""Validation of user-supplied names: buckets, keys, shard ids."""

from __future__ import annotations

import re

from shoal.common.errors import InvalidArgument

MAX_KEY_BYTES = 1024
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_SHARD_ID = re.compile(r"([0-9a-f]{32})\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)")


def check_bucket_name(name: str) -> None:
    """Bucket names follow S3's rules: 3-63 chars of a-z, 0-9, '.', '-', alphanumeric ends."""
    if not isinstance(name, str) or not _BUCKET.fullmatch(name) or ".." in name:
        raise InvalidArgument(
            f"invalid bucket name {name!r}: use 3-63 characters of a-z, 0-9, '.' and '-', "
            "starting and ending with a letter or digit"
        )


def check_key(key: str) -> None:
    """Keys are non-empty UTF-8 strings of at most 1024 bytes without NUL."""
    if not isinstance(key, str) or not key:
        raise InvalidArgument("invalid key: keys must be non-empty strings")
    if "\x00" in key:
        raise InvalidArgument("invalid key: keys may not contain NUL characters")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument("invalid key: keys must be valid UTF-8") from exc
    if len(encoded) > MAX_KEY_BYTES:
        raise InvalidArgument(
            f"invalid key: {len(encoded)} bytes, at most {MAX_KEY_BYTES} bytes of UTF-8 allowed"
        )


def shard_id(version_id: str, stripe_index: int, shard_index: int) -> str:
    """The id a storage node files a shard under."""
    return f"{version_id}.{stripe_index}.{shard_index}"


def parse_shard_id(value: str) -> tuple[str, int, int]:
    """Split a shard id into (version_id, stripe, shard index); InvalidArgument if malformed."""
    match = _SHARD_ID.fullmatch(value)
    if not match:
        raise InvalidArgument(f"malformed shard id {value!r}")
    return match.group(1), int(match.group(2)), int(match.group(3))


MAX_METADATA_BYTES = 8 * 1024
MAX_METADATA_KEY_BYTES = 256


def check_metadata(metadata: object) -> dict[str, str]:
    """Object metadata is a str -> str mapping: keys of 1-256 bytes, at most MAX_METADATA_BYTES
    of UTF-8 in keys and values together, no NUL. Returns it as a plain dict."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) and not hasattr(metadata, "items"):
        raise InvalidArgument("metadata must be a mapping of strings to strings")
    checked: dict[str, str] = {}
    total = 0
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidArgument("metadata keys and values must be strings")
        if not key or "\x00" in key or "\x00" in value:
            raise InvalidArgument("metadata keys must be non-empty; no NUL characters allowed")
        try:
            key_bytes, value_bytes = len(key.encode()), len(value.encode())
        except UnicodeEncodeError:
            raise InvalidArgument("metadata must be valid UTF-8") from None
        if key_bytes > MAX_METADATA_KEY_BYTES:
            raise InvalidArgument(
                f"metadata key of {key_bytes} bytes: at most {MAX_METADATA_KEY_BYTES} allowed"
            )
        total += key_bytes + value_bytes
        checked[key] = value
    if total > MAX_METADATA_BYTES:
        raise InvalidArgument(
            f"metadata of {total} bytes: at most {MAX_METADATA_BYTES} bytes of keys and values "
            "allowed"
        )
    return checked
