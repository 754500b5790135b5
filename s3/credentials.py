"""The gateway's users: a TOML credentials file with one `[[users]]` table per user.

    [[users]]
    access_key = "AKIAEXAMPLE0000001"
    secret_key = "..."                 # 16+ characters
    display_name = "alice"
    # id = "..."                       # optional canonical id; default: derived from the name

A user's canonical id (the S3 `Owner/ID`) defaults to the SHA-256 hex of "shoal:" + display
name, so it survives key rotation. Buckets record their owner's id; ListBuckets and listings
report it with the display name.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import string
import tomllib
from dataclasses import dataclass
from pathlib import Path

from shoal.common.errors import ConfigError

MIN_SECRET = 16
ACCESS_KEY_ALPHABET = string.ascii_uppercase + string.digits


@dataclass(frozen=True)
class User:
    access_key: str
    secret_key: str
    display_name: str
    id: str


def canonical_id(display_name: str) -> str:
    return hashlib.sha256(f"shoal:{display_name}".encode()).hexdigest()


class Credentials:
    """Users by access key and by canonical id."""

    def __init__(self, users: list[User]) -> None:
        self.by_key = {u.access_key: u for u in users}
        self.by_id = {u.id: u for u in users}

    def user(self, access_key: str) -> User | None:
        return self.by_key.get(access_key)

    def display_name(self, user_id: str) -> str:
        user = self.by_id.get(user_id)
        return user.display_name if user else user_id


def load(path: str) -> Credentials:
    """Read and validate a credentials file; ConfigError naming the problem."""
    try:
        with Path(path).open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"credentials file not found: {path}") from None
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise ConfigError(f"cannot read credentials file {path}: {exc}") from None
    entries = data.get("users")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"credentials file {path}: needs at least one [[users]] table")
    users: list[User] = []
    for number, entry in enumerate(entries, 1):
        where = f"credentials file {path}, user {number}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: not a table")
        unknown = set(entry) - {"access_key", "secret_key", "display_name", "id"}
        if unknown:
            raise ConfigError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
        access_key = entry.get("access_key")
        secret = entry.get("secret_key")
        name = entry.get("display_name")
        if not isinstance(access_key, str) or not 3 <= len(access_key) <= 128:
            raise ConfigError(f"{where}: access_key must be a string of 3-128 characters")
        if not isinstance(secret, str) or len(secret) < MIN_SECRET:
            raise ConfigError(f"{where}: secret_key must be at least {MIN_SECRET} characters")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: display_name must be a non-empty string")
        user_id = entry.get("id") or canonical_id(name)
        if not isinstance(user_id, str):
            raise ConfigError(f"{where}: id must be a string")
        users.append(User(access_key, secret, name, user_id))
    keys = [u.access_key for u in users]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"credentials file {path}: an access_key appears twice")
    if len({u.id for u in users}) != len(users):
        raise ConfigError(f"credentials file {path}: two users share a display_name or id")
    return Credentials(users)


def generate_user(display_name: str) -> User:
    """A new user with a random 20-character access key and 40-character secret."""
    access_key = "SH" + "".join(secrets.choice(ACCESS_KEY_ALPHABET) for _ in range(18))
    secret = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(40))
    return User(access_key, secret, display_name, canonical_id(display_name))


def write(path: str | os.PathLike[str], users: list[User]) -> None:
    """Write a credentials file readable only by its owner (0600)."""
    lines = []
    for user in users:
        lines += [
            "[[users]]",
            f"access_key = {json.dumps(user.access_key)}",
            f"secret_key = {json.dumps(user.secret_key)}",
            f"display_name = {json.dumps(user.display_name)}",
            "",
        ]
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines))
