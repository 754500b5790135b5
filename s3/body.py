"""Request bodies as async iterators of bytes, decoded and verified on the way through.

A plain body is read in pieces of at most PIECE_BYTES. An `aws-chunked` body
(`x-amz-content-sha256: STREAMING-...`) is a sequence of `<hex size>[;chunk-signature=<sig>]
CRLF <data> CRLF` chunks ending with a zero-size chunk, optionally followed by trailing
headers (`x-amz-checksum-crc32:...`, `x-amz-trailer-signature:...`) and a blank line. Signed
chunks are verified as they arrive (each signature chains the previous one); chunk data is
hashed and yielded in pieces, so memory stays bounded by PIECE_BYTES whatever the chunk size.

The digests (`BodyDigests`) are checked when the body ends, before the iterator finishes:
the error is raised inside the SDK's put, which then aborts the upload, so an object whose
bytes do not match what the client declared is never committed.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from typing import Protocol

from shoal.s3 import sigv4
from shoal.s3.checksums import ALGORITHMS, BodyDigests
from shoal.s3.errors import S3Error

PIECE_BYTES = 1024 * 1024
MAX_CHUNK_HEADER = 4096
MAX_TRAILER_LINES = 16


class ByteReader(Protocol):
    """What aiohttp's and asyncio's StreamReader both offer."""

    async def readline(self) -> bytes: ...
    async def readexactly(self, n: int) -> bytes: ...
    async def read(self, n: int = -1) -> bytes: ...


async def _read_exactly(reader: ByteReader, size: int) -> bytes:
    try:
        return await reader.readexactly(size)
    except Exception as exc:  # IncompleteReadError (asyncio) or EofStream/ClientError (aiohttp)
        raise S3Error(
            "IncompleteBody", "You did not provide the number of bytes specified"
        ) from exc


async def plain_body(reader: ByteReader, length: int, digests: BodyDigests) -> AsyncIterator[bytes]:
    """`length` bytes of an unencoded body."""
    remaining = length
    while remaining > 0:
        piece = await reader.read(min(PIECE_BYTES, remaining))
        if not piece:
            raise S3Error("IncompleteBody", "You did not provide the number of bytes specified")
        remaining -= len(piece)
        digests.update(piece)
        yield piece
    digests.verify()


class ChunkedBody:
    """Decoder of one aws-chunked body.

    Args:
        reader: the raw request body.
        digests: updated with the decoded data; verified at the end.
        decoded_length: x-amz-decoded-content-length (the payload's real size).
        signing: the verified request signature when chunks are signed, else None.
        trailer: names announced in x-amz-trailer (lower case).
    """

    def __init__(
        self,
        reader: ByteReader,
        digests: BodyDigests,
        decoded_length: int,
        signing: sigv4.Verified | None,
        trailer: tuple[str, ...] = (),
    ) -> None:
        self.reader = reader
        self.digests = digests
        self.decoded_length = decoded_length
        self.signing = signing
        self.trailer = trailer
        self.previous = signing.signature if signing else ""

    async def _header(self) -> tuple[int, str]:
        line = await self.reader.readline()
        if not line.endswith(b"\r\n") or len(line) > MAX_CHUNK_HEADER:
            raise S3Error("IncompleteBody", "malformed aws-chunked chunk header")
        size_text, _, extension = line[:-2].decode("latin-1").partition(";")
        try:
            size = int(size_text, 16)
        except ValueError:
            raise S3Error("IncompleteBody", "malformed aws-chunked chunk size") from None
        signature = ""
        if extension:
            name, _, signature = extension.partition("=")
            if name.strip() != "chunk-signature":
                raise S3Error("IncompleteBody", "malformed aws-chunked chunk extension")
        if self.signing is not None and not signature:
            raise S3Error("SignatureDoesNotMatch", "a signed chunk is missing its signature")
        return size, signature.strip()

    def _check_chunk(self, signature: str, chunk_sha256: str) -> None:
        assert self.signing is not None
        text = sigv4.chunk_string_to_sign(
            self.signing.amz_date, self.signing.scope, self.previous, chunk_sha256
        )
        expected = sigv4.sign(self.signing.key, text)
        if not hmac.compare_digest(expected, signature):
            raise S3Error(
                "SignatureDoesNotMatch",
                "The chunk signature we calculated does not match the signature you provided.",
            )
        self.previous = expected

    async def __aiter__(self) -> AsyncIterator[bytes]:
        total = 0
        while True:
            size, signature = await self._header()
            chunk_hash = hashlib.sha256() if self.signing is not None else None
            remaining = size
            while remaining:
                piece = await _read_exactly(self.reader, min(PIECE_BYTES, remaining))
                remaining -= len(piece)
                total += len(piece)
                if total > self.decoded_length:
                    raise S3Error("IncompleteBody", "the chunks carry more bytes than declared")
                if chunk_hash is not None:
                    chunk_hash.update(piece)
                self.digests.update(piece)
                yield piece
            if chunk_hash is not None:
                self._check_chunk(signature, chunk_hash.hexdigest())
            if size == 0:
                break
            if await _read_exactly(self.reader, 2) != b"\r\n":
                raise S3Error("IncompleteBody", "malformed aws-chunked chunk end")
        await self._trailer()
        if total != self.decoded_length:
            raise S3Error(
                "IncompleteBody",
                f"You did not provide the number of bytes specified: {total} of "
                f"{self.decoded_length}",
            )
        self.digests.verify()

    async def _trailer(self) -> None:
        """Read the trailing headers (if any) up to the final blank line."""
        canonical = b""
        for _ in range(MAX_TRAILER_LINES):
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                return
            name, sep, value = line.decode("latin-1").strip().partition(":")
            name = name.strip().lower()
            if not sep:
                raise S3Error("IncompleteBody", "malformed aws-chunked trailer")
            value = value.strip()
            if name == "x-amz-trailer-signature":
                if self.signing is not None:
                    text = sigv4.trailer_string_to_sign(
                        self.signing.amz_date, self.signing.scope, self.previous, canonical
                    )
                    if not hmac.compare_digest(sigv4.sign(self.signing.key, text), value):
                        raise S3Error(
                            "SignatureDoesNotMatch",
                            "The trailer signature we calculated does not match.",
                        )
                continue
            canonical += f"{name}:{value}\n".encode()
            if name.startswith("x-amz-checksum-"):
                algorithm = name.removeprefix("x-amz-checksum-").upper()
                if algorithm not in ALGORITHMS or algorithm not in self.digests.checksums:
                    raise S3Error(
                        "InvalidRequest",
                        f"trailer {name} was not announced in x-amz-trailer before the body",
                    )
                self.digests.expect_checksum(algorithm, value)
        raise S3Error("IncompleteBody", "too many aws-chunked trailer lines")
