"""Argument types shared by clusterctl's commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def bounded_int(maximum: int) -> Callable[[str], int]:
    """An argparse type accepting whole numbers from 1 to `maximum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not 1 <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be between 1 and {maximum}, got {value}")
        return value

    return parse
