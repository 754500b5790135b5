"""Facts about the machine the tests run on."""

from __future__ import annotations

import os


def glibc() -> bool:
    """True when the C library is glibc (malloc tuning applies to glibc only)."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (AttributeError, ValueError, OSError):  # no confstr, or a libc without the name
        return False
