"""The checksums S3 clients send with uploads, computed while the body streams through.

`Content-MD5` (base64 MD5) and `x-amz-checksum-<alg>` (base64 of CRC32, CRC32C, CRC64NVME,
SHA-1 or SHA-256) are verified once the whole body has passed; a mismatch is `BadDigest`, a
malformed value `InvalidDigest`. CRC32, SHA-1 and SHA-256 use zlib/hashlib (C, releasing the
GIL on large buffers); CRC32C and CRC64NVME have no stdlib implementation and use table-driven
Python here, which is slow (a few MB/s): they are only computed when a client chooses them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from typing import Protocol

from shoal.s3.errors import S3Error

ALGORITHMS = ("CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256")


def _table(poly: int, bits: int) -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc & ((1 << bits) - 1))
    return table


_CRC32C_TABLE = _table(0x82F63B78, 32)
_CRC64NVME_TABLE = _table(0x9A6C9329AC4BC9B5, 64)


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...


class _Crc:
    """A reflected CRC with a 256-entry table (CRC32C: 32 bits, CRC64NVME: 64 bits)."""

    def __init__(self, table: list[int], bits: int) -> None:
        self._table = table
        self._bits = bits
        self._mask = (1 << bits) - 1
        self._crc = self._mask

    def update(self, data: bytes) -> None:
        crc, table = self._crc, self._table
        for byte in data:
            crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
        self._crc = crc

    def digest(self) -> bytes:
        return (self._crc ^ self._mask).to_bytes(self._bits // 8, "big")


class _Crc32:
    def __init__(self) -> None:
        self._crc = 0

    def update(self, data: bytes) -> None:
        self._crc = zlib.crc32(data, self._crc)

    def digest(self) -> bytes:
        return self._crc.to_bytes(4, "big")


def new_hasher(algorithm: str) -> Hasher:
    """A hasher for an x-amz-checksum algorithm name (upper case)."""
    if algorithm == "CRC32":
        return _Crc32()
    if algorithm == "CRC32C":
        return _Crc(_CRC32C_TABLE, 32)
    if algorithm == "CRC64NVME":
        return _Crc(_CRC64NVME_TABLE, 64)
    if algorithm == "SHA1":
        return hashlib.sha1(usedforsecurity=False)
    if algorithm == "SHA256":
        return hashlib.sha256()
    raise S3Error("InvalidRequest", f"unsupported checksum algorithm {algorithm!r}")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def decode_b64(value: str, size: int, what: str) -> bytes:
    """Decode a base64 digest of `size` bytes; InvalidDigest when it is not one."""
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != size:
        raise S3Error("InvalidDigest", f"The {what} you specified is not valid.")
    return raw


DIGEST_SIZES = {"CRC32": 4, "CRC32C": 4, "CRC64NVME": 8, "SHA1": 20, "SHA256": 32}


class BodyDigests:
    """MD5 (always: it is the S3 ETag), plus whatever the request asks to verify."""

    def __init__(self) -> None:
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha256: Hasher | None = None
        self.expected_sha256 = ""
        self.expected_md5: bytes | None = None
        self.checksums: dict[str, Hasher] = {}
        self.expected_checksums: dict[str, bytes] = {}
        self.size = 0

    def expect_sha256(self, hex_digest: str) -> None:
        self.sha256 = hashlib.sha256()
        self.expected_sha256 = hex_digest.lower()

    def expect_content_md5(self, value: str) -> None:
        self.expected_md5 = decode_b64(value, 16, "Content-MD5")

    def add_checksum(self, algorithm: str) -> None:
        if algorithm not in self.checksums:
            self.checksums[algorithm] = new_hasher(algorithm)

    def expect_checksum(self, algorithm: str, value: str) -> None:
        self.add_checksum(algorithm)
        self.expected_checksums[algorithm] = decode_b64(
            value, DIGEST_SIZES[algorithm], f"x-amz-checksum-{algorithm.lower()}"
        )

    def update(self, data: bytes) -> None:
        self.size += len(data)
        self.md5.update(data)
        if self.sha256 is not None:
            self.sha256.update(data)
        for hasher in self.checksums.values():
            hasher.update(data)

    def verify(self) -> None:
        """Raise the S3 error for the first expectation the body did not meet."""
        if self.sha256 is not None and self.sha256.digest().hex() != self.expected_sha256:
            raise S3Error(
                "XAmzContentSHA256Mismatch",
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            )
        if self.expected_md5 is not None and self.md5.digest() != self.expected_md5:
            raise S3Error(
                "BadDigest", "The Content-MD5 you specified did not match what we received."
            )
        for algorithm, expected in self.expected_checksums.items():
            if self.checksums[algorithm].digest() != expected:
                raise S3Error(
                    "BadDigest",
                    f"The {algorithm} you specified did not match the calculated checksum.",
                )

    @property
    def etag(self) -> str:
        return self.md5.hexdigest()

    def checksum_values(self) -> dict[str, str]:
        """Base64 value of every checksum computed (for x-amz-checksum-* response headers)."""
        return {alg: b64(h.digest()) for alg, h in self.checksums.items()}
