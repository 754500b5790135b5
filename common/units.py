"""Size and duration units: constants, parsing of human strings, and formatting."""

from __future__ import annotations

import re
from decimal import Decimal

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": KiB,
    "mib": MiB,
    "gib": GiB,
    "tib": TiB,
}
_DURATION_UNITS = {"": 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NUMBER_UNIT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str | int) -> int:
    """Parse '4MiB', '100GB', '1024' into bytes. Raises ValueError with the accepted forms."""
    if isinstance(text, int):
        return text
    match = _NUMBER_UNIT.match(text)
    unit = match.group(2).lower() if match else None
    if not match or unit not in _SIZE_UNITS:
        raise ValueError(
            f"not a size: {text!r} (use bytes or a unit: KiB, MiB, GiB, TiB, KB, MB, GB)"
        )
    number = match.group(1)
    if "." in number:
        return int(Decimal(number) * _SIZE_UNITS[unit])
    return int(number) * _SIZE_UNITS[unit]


def parse_duration(text: str | float | int) -> float:
    """Parse '15m', '2.5s', '300ms', '1h' or a plain number of seconds into seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    match = _NUMBER_UNIT.match(text)
    unit = match.group(2).lower() if match else None
    if not match or unit not in _DURATION_UNITS:
        raise ValueError(f"not a duration: {text!r} (use seconds or a unit: ms, s, m, h, d)")
    return float(match.group(1)) * _DURATION_UNITS[unit]


def format_bytes(count: float) -> str:
    """Format a byte count with a binary unit: '1.5 GiB'."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """Format seconds compactly: '45s', '4m12s', '2h05m', '3d04h'."""
    total = int(max(seconds, 0))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
