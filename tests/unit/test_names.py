"""Name validation: bucket names, object keys, shard ids, node ids."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.common.errors import InvalidArgument
from shoal.common.ids import is_valid_node_id, new_node_id, new_version_id
from shoal.common.names import (
    MAX_KEY_BYTES,
    check_bucket_name,
    check_key,
    parse_shard_id,
    shard_id,
)

VERSION = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    "name",
    ["abc", "a1b", "my-bucket", "logs.2024.01", "0-9", "a" * 63, "a-b.c-d", "123"],
)
def test_valid_bucket_names(name: str) -> None:
    check_bucket_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "ab",
        "a" * 64,
        "Abc",
        "abC",
        "-abc",
        "abc-",
        ".abc",
        "abc.",
        "a..b",
        "a_b",
        "a b",
        "ab/c",
        "ab\x00c",
        "bücket",
        "abc\t",
    ],
)
def test_invalid_bucket_names(name: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid bucket name"):
        check_bucket_name(name)


def test_bucket_name_with_trailing_newline_is_rejected() -> None:
    with pytest.raises(InvalidArgument):
        check_bucket_name("abc\n")


@pytest.mark.parametrize("value", [None, 123, b"abc"])
def test_non_string_bucket_name_is_rejected(value: object) -> None:
    with pytest.raises(InvalidArgument):
        check_bucket_name(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "key",
    [
        "k",
        "a/b/c.txt",
        " leading space",
        "ünïcödé/κλειδί/键",
        "emoji-🦈",
        "x" * MAX_KEY_BYTES,
        "é" * (MAX_KEY_BYTES // 2),  # 2 bytes each: exactly 1024 bytes
        "€" * 341 + "a",  # 3 * 341 + 1 = 1024 bytes
        "🦈" * (MAX_KEY_BYTES // 4),  # 4 bytes each
        "../../etc/passwd",  # keys are opaque, never paths
    ],
)
def test_valid_keys(key: str) -> None:
    assert len(key.encode()) <= MAX_KEY_BYTES
    check_key(key)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "non-empty"),
        ("\x00", "NUL"),
        ("a\x00b", "NUL"),
        ("x" * (MAX_KEY_BYTES + 1), "1025 bytes"),
        ("é" * 513, "1026 bytes"),  # 513 characters, 1026 bytes
        ("€" * 342, "1026 bytes"),  # 342 characters, 1026 bytes
        ("🦈" * 257, "1028 bytes"),
        ("\ud800", "UTF-8"),  # lone surrogate cannot be encoded
    ],
)
def test_invalid_keys(key: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        check_key(key)


@pytest.mark.parametrize("value", [None, b"key", 5])
def test_non_string_key_is_rejected(value: object) -> None:
    with pytest.raises(InvalidArgument):
        check_key(value)  # type: ignore[arg-type]


@given(st.text(min_size=1, max_size=1100))
def test_key_rule_is_byte_length_and_nul(key: str) -> None:
    try:
        encoded: bytes | None = key.encode("utf-8")
    except UnicodeEncodeError:
        encoded = None
    valid = encoded is not None and len(encoded) <= MAX_KEY_BYTES and "\x00" not in key
    if valid:
        check_key(key)
    else:
        with pytest.raises(InvalidArgument):
            check_key(key)


@given(
    version=st.builds("{:032x}".format, st.integers(0, 2**128 - 1)),
    stripe=st.integers(min_value=0, max_value=2**40),
    index=st.integers(min_value=0, max_value=255),
)
def test_shard_id_round_trip(version: str, stripe: int, index: int) -> None:
    value = shard_id(version, stripe, index)
    assert value == f"{version}.{stripe}.{index}"
    assert parse_shard_id(value) == (version, stripe, index)


def test_shard_id_of_fresh_version_parses() -> None:
    version = new_version_id()
    assert len(version) == 32
    assert parse_shard_id(shard_id(version, 3, 5)) == (version, 3, 5)


@pytest.mark.parametrize(
    "value",
    [
        "",
        VERSION,
        f"{VERSION}.1",
        f"{VERSION}.1.2.3",
        f"{VERSION.upper()}.1.2",
        f"{VERSION[:-1]}.1.2",
        f"{VERSION}0.1.2",
        f"{VERSION}.-1.2",
        f"{VERSION}.1.x",
        f"{VERSION}..2",
        f"../{VERSION}.1.2",
        f"{VERSION}.1.2/../../x",
        f"{VERSION[:30]}/..1.2",
        f"{VERSION}.1.2 ",
        f" {VERSION}.1.2",
    ],
)
def test_malformed_shard_ids_are_rejected(value: str) -> None:
    with pytest.raises(InvalidArgument, match="malformed shard id"):
        parse_shard_id(value)


def test_shard_id_with_trailing_newline_is_rejected() -> None:
    with pytest.raises(InvalidArgument):
        parse_shard_id(f"{VERSION}.1.2\n")


@pytest.mark.parametrize("value", [f"{VERSION}.01.2", f"{VERSION}.1.002"])
def test_non_canonical_shard_ids_are_rejected(value: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_shard_id(value)


@pytest.mark.parametrize("value", ["node-1", "a", "N.1_x-y", "a" * 64, new_node_id()])
def test_valid_node_ids(value: str) -> None:
    assert is_valid_node_id(value)


@pytest.mark.parametrize("value", ["", "-a", ".a", "a" * 65, "a b", "a/b", "nöde"])
def test_invalid_node_ids(value: str) -> None:
    assert not is_valid_node_id(value)


def test_node_id_with_trailing_newline_is_invalid() -> None:
    assert not is_valid_node_id("node-1\n")
