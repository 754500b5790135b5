"""Uploads and downloads for `put` and `get`: progress bars and atomic file writes."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from shoal.client import Client, ObjectInfo
from shoal.common.errors import InvalidArgument
from shoal.common.units import MiB

PROGRESS_THRESHOLD = 4 * MiB
CHUNK_BYTES = 1 * MiB

Advance = Callable[[int], None]


def _ignore(_count: int) -> None:
    return None


def wants_progress(size: int | None) -> bool:
    """Progress bars are for transfers over PROGRESS_THRESHOLD with stderr on a terminal."""
    return size is not None and size > PROGRESS_THRESHOLD and sys.stderr.isatty()


@contextlib.contextmanager
def progress_bar(description: str, size: int | None) -> Iterator[Advance | None]:
    """Yield a callback advancing a progress bar on stderr, or None when no bar is wanted."""
    if not wants_progress(size):
        yield None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task(description, total=size)
        yield lambda count: progress.advance(task, count)


def _chunks(handle: BinaryIO, advance: Advance) -> Iterator[bytes]:
    while block := handle.read(CHUNK_BYTES):
        advance(len(block))
        yield block


def _regular_size(handle: BinaryIO) -> int | None:
    info = os.fstat(handle.fileno())
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def _open_source(source: str) -> AbstractContextManager[BinaryIO]:
    if source == "-":
        return contextlib.nullcontext(sys.stdin.buffer)
    return open(source, "rb")


def upload(
    client: Client, source: str, bucket: str, key: str, k: int | None, n: int | None
) -> ObjectInfo:
    """Put the file `source` ('-' for stdin) as bucket/key, with a progress bar if large."""
    with (
        _open_source(source) as handle,
        progress_bar(f"put {key}", _regular_size(handle)) as advance,
    ):
        data: BinaryIO | Iterable[bytes] = handle if advance is None else _chunks(handle, advance)
        return client.put(bucket, key, data, k=k, n=n)


def _write_pieces(pieces: Iterator[bytes], out: BinaryIO, advance: Advance) -> None:
    """Write every piece; on an early exit close the stream so its readahead stops first."""
    try:
        for piece in pieces:
            out.write(piece)
            advance(len(piece))
    finally:
        close: Callable[[], object] | None = getattr(pieces, "close", None)
        if close is not None:
            close()


def download_to_stdout(client: Client, bucket: str, key: str) -> None:
    """Stream bucket/key to stdout; a progress bar on stderr if it is a large transfer."""
    size = client.head(bucket, key).size if sys.stderr.isatty() else None
    out = sys.stdout.buffer
    with progress_bar(f"get {key}", size) as advance:
        _write_pieces(client.stream(bucket, key), out, advance or _ignore)
    out.flush()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def download_to_file(client: Client, bucket: str, key: str, destination: str) -> Path:
    """Write bucket/key to `destination` atomically (temp file + rename); returns the path.

    A destination that is a directory receives the key's last path component.
    """
    target = Path(destination)
    if target.is_dir():
        name = PurePosixPath(key).name
        if name in ("", ".", ".."):
            raise InvalidArgument(f"cannot name a file after key {key!r}: give a file path")
        target = target / name
    if not target.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, "no such directory", str(target.parent))
    size = client.head(bucket, key).size if sys.stderr.isatty() else None
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, progress_bar(f"get {key}", size) as advance:
            os.fchmod(out.fileno(), 0o666 & ~_umask())
            _write_pieces(client.stream(bucket, key), out, advance or _ignore)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target
