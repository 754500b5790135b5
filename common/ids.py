"""Identifiers: object version ids and node ids."""

from __future__ import annotations

import re
import uuid

_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def new_version_id() -> str:
    """A fresh object version (upload) id: 32 lowercase hex digits."""
    return uuid.uuid4().hex


def new_node_id() -> str:
    """A fresh node id for a node started without one."""
    return f"node-{uuid.uuid4().hex[:8]}"


def is_valid_node_id(value: str) -> bool:
    """Node ids are 1-64 characters of letters, digits, '.', '_' and '-'."""
    return bool(_NODE_ID.fullmatch(value))
