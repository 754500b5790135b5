"""Units: parse_size, parse_duration, format_bytes, format_duration."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.common.units import (
    GiB,
    KiB,
    MiB,
    TiB,
    format_bytes,
    format_duration,
    parse_duration,
    parse_size,
)


def test_constants() -> None:
    assert (KiB, MiB, GiB, TiB) == (2**10, 2**20, 2**30, 2**40)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("1024", 1024),
        ("1024b", 1024),
        ("1024B", 1024),
        ("4KiB", 4 * KiB),
        ("4kib", 4 * KiB),
        ("4MiB", 4 * MiB),
        ("2GiB", 2 * GiB),
        ("1TiB", TiB),
        ("1.5KiB", 1536),
        (".5MiB", MiB // 2),
        ("1k", 1000),
        ("1KB", 1000),
        ("100GB", 100 * 10**9),
        ("3m", 3 * 10**6),
        ("2MB", 2 * 10**6),
        ("1g", 10**9),
        ("1tb", 10**12),
        ("1t", 10**12),
        ("  7 MiB  ", 7 * MiB),
        (4096, 4096),
        (0, 0),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "abc",
        "12XB",
        "4 MiBs",
        "-1",
        "-4KiB",
        "1e3",
        "1,000",
        "4.MiB",
        "MiB",
        "4 Mi B",
        "0x10",
    ],
)
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a size") as info:
        parse_size(text)
    assert "KiB" in str(info.value)  # the message lists the accepted forms


@given(
    unit=st.sampled_from(
        [
            ("", 1),
            ("B", 1),
            ("KiB", KiB),
            ("MiB", MiB),
            ("GiB", GiB),
            ("TiB", TiB),
            ("KB", 1000),
            ("MB", 1000**2),
            ("GB", 1000**3),
        ]
    ),
    data=st.data(),
)
def test_parse_size_integers_with_units(unit: tuple[str, int], data: st.DataObject) -> None:
    suffix, factor = unit
    # Up to 8 PiB, where every byte count is exact.
    value = data.draw(st.integers(min_value=0, max_value=2**53 // factor), label="value")
    assert parse_size(f"{value}{suffix}") == value * factor


def test_parse_size_is_exact_for_large_integers() -> None:
    assert parse_size(str(2**53 + 1)) == 2**53 + 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0.0),
        ("10", 10.0),
        ("2.5", 2.5),
        ("300ms", 0.3),
        ("1500MS", 1.5),
        ("2.5s", 2.5),
        ("15m", 900.0),
        ("1h", 3600.0),
        ("1.5h", 5400.0),
        ("1d", 86400.0),
        (" 30 s ", 30.0),
        (5, 5.0),
        (0.25, 0.25),
    ],
)
def test_parse_duration(text: str | float, expected: float) -> None:
    result = parse_duration(text)
    assert isinstance(result, float)
    assert result == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "abc", "5w", "1y", "-1s", "1e3", "ms", "1 h 2 m", "15min"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (0, "0 B"),
        (1, "1 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (MiB, "1.0 MiB"),
        (int(1.5 * GiB), "1.5 GiB"),
        (3 * TiB, "3.0 TiB"),
        (2048 * TiB, "2048.0 TiB"),
        (512.4, "512 B"),
    ],
)
def test_format_bytes(count: float, expected: str) -> None:
    assert format_bytes(count) == expected


@given(st.integers(min_value=0, max_value=2**60))
def test_format_bytes_round_trips_within_rounding(count: int) -> None:
    text = format_bytes(count)
    number, unit = text.split(" ")
    parsed = parse_size(f"{number}{unit}")
    # One decimal of the chosen unit: within 0.05 unit (plus rounding of B to whole bytes).
    factor = {"B": 1, "KiB": KiB, "MiB": MiB, "GiB": GiB, "TiB": TiB}[unit]
    assert abs(parsed - count) <= 0.05 * factor + 1


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0s"),
        (45, "45s"),
        (59.9, "59s"),
        (60, "1m00s"),
        (252, "4m12s"),
        (3599, "59m59s"),
        (3600, "1h00m"),
        (7500, "2h05m"),
        (86399, "23h59m"),
        (86400, "1d00h"),
        (3 * 86400 + 4 * 3600 + 59, "3d04h"),
        (-5, "0s"),
    ],
)
def test_format_duration(seconds: float, expected: str) -> None:
    assert format_duration(seconds) == expected


@given(st.integers(min_value=0, max_value=10**8))
def test_format_duration_parses_back_to_a_lower_bound(seconds: int) -> None:
    text = format_duration(seconds)
    # Split '4m12s' / '2h05m' / '3d04h' into its two parts and add them up.
    total = 0.0
    number = ""
    for char in text:
        if char.isdigit():
            number += char
        else:
            total += parse_duration(number + char)
            number = ""
    assert total <= seconds
    # Only the unit below the last one shown is dropped.
    dropped = {"s": 1, "m": 60, "h": 3600}[text[-1]]
    assert seconds - total < dropped
