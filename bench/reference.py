"""In-process baselines: what this machine does without Shoal (no network, no RPC, no metadata).

- `codec_baselines`: zfec encode and decode of one stripe at (k, n) with the low-level
  `zfec.Encoder`/`zfec.Decoder` (and Shoal's `StripeCodec`, ISA-L's kernels on zfec's code,
  against them), xxh3-128 hashing, and fsynced shard-sized file writes (write, fsync, rename,
  fsync the directory: exactly what a node does before it acknowledges).
- `ReferenceStore`: the in-process ceiling of a put (encode each stripe and write its n shard
  files durably, in parallel, as n nodes would), a get (read and verify k shard files, decode
  when data shards are missing) and a rebuild (read k shards, decode, re-encode one, write it).
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import xxhash
import zfec

from bench.common import MIB, Report, Row, median_time
from shoal.client.cli.local_cluster import ClusterSettings
from shoal.common.erasure import StripeCodec

K, N = 4, 6
# The stripe size the bench's clusters use (their default), so baselines match what they do.
STRIPE = ClusterSettings().stripe_bytes


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(
    directory: Path, name: str, data: bytes | memoryview, drop_pages: bool = False
) -> None:
    """Write a file as a node writes a shard: temp file, fsync, rename, fsync the directory;
    with `drop_pages`, then drop the file's pages from the page cache as a node does past its
    written_cache window (storage_node.written_pages)."""
    tmp = directory / "incoming" / name
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        if drop_pages:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    os.replace(tmp, directory / "shards" / name)
    fsync_dir(directory / "shards")


class ReferenceStore:
    """What a put or get must do at the least, in one process: no network, no RPC, no metadata.

    put: per stripe (one at a time), encode with zfec, hash each shard (xxh3-128), write the n
    shard files durably, in parallel, into n directories on the same disk as the cluster.
    get: per stripe, read the first k available shards, verify their checksums, join (or
    decode when a data shard is missing).
    rebuild: per stripe, read k surviving shards, verify, decode, re-encode the lost shard,
    check its checksum and write it durably (what a repairing node does for one shard).
    With `drop_pages`, each shard file's pages are dropped from the page cache once durable.
    """

    def __init__(
        self,
        root: Path,
        k: int = K,
        n: int = N,
        stripe: int = STRIPE,
        *,
        drop_pages: bool = False,
    ) -> None:
        self.k, self.n, self.stripe = k, n, stripe
        self.drop_pages = drop_pages
        self.encoder = zfec.Encoder(k, n)
        self.decoder = zfec.Decoder(k, n)
        self.dirs = [root / f"disk-{i}" for i in range(n)]
        for directory in self.dirs:
            (directory / "incoming").mkdir(parents=True)
            (directory / "shards").mkdir()
        self.pool = ThreadPoolExecutor(max_workers=n * 8, thread_name_prefix="reference")
        self.manifests: dict[str, list[tuple[int, list[bytes]]]] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self.pool.shutdown()

    def encode(self, stripe: memoryview) -> list[bytes | memoryview]:
        length = -(-len(stripe) // self.k)
        blocks: list[bytes | memoryview] = []
        for i in range(self.k):
            block = stripe[i * length : (i + 1) * length]
            blocks.append(block if len(block) == length else bytes(block).ljust(length, b"\0"))
        return [*blocks, *self.encoder.encode(tuple(blocks), tuple(range(self.k, self.n)))]

    def put(self, key: str, data: bytes | memoryview) -> None:
        view = memoryview(data)
        self.put_stripes(
            key, (view[at : at + self.stripe] for at in range(0, max(len(view), 1), self.stripe))
        )

    def put_file(self, key: str, path: Path) -> None:
        """Put a file read stripe by stripe (bounded memory, like a streamed Shoal put)."""
        with path.open("rb") as handle:
            self.put_stripes(key, iter(lambda: memoryview(handle.read(self.stripe)), b""))

    def put_stripes(self, key: str, stripes: Iterable[memoryview]) -> None:
        manifest = []
        for number, piece in enumerate(stripes):
            shards = self.encode(piece)
            sums = [xxhash.xxh3_128_digest(shard) for shard in shards]
            writes = [
                self.pool.submit(
                    write_durably, self.dirs[i], f"{key}.{number}.{i}", shard, self.drop_pages
                )
                for i, shard in enumerate(shards)
            ]
            for write in writes:
                write.result()
            manifest.append((len(piece), sums))
        with self._lock:
            self.manifests[key] = manifest

    def _read_shards(
        self, key: str, number: int, chosen: list[int], sums: list[bytes]
    ) -> list[bytes]:
        shards = []
        for i in chosen:
            data = (self.dirs[i] / "shards" / f"{key}.{number}.{i}").read_bytes()
            if xxhash.xxh3_128_digest(data) != sums[i]:
                raise RuntimeError(f"reference store: shard {i} of {key} is corrupt")
            shards.append(data)
        return shards

    def get(self, key: str, lost: frozenset[int] = frozenset()) -> bytes:
        return b"".join(self.stripes(key, lost))

    def stripes(self, key: str, lost: frozenset[int] = frozenset()) -> Iterator[bytes]:
        """The object's stripes in order, read from the first k shards not in `lost`."""
        for number, (size, sums) in enumerate(self.manifests[key]):
            chosen = [i for i in range(self.n) if i not in lost][: self.k]
            shards = self._read_shards(key, number, chosen, sums)
            if chosen == list(range(self.k)):
                blocks = shards
            else:
                blocks = self.decoder.decode(tuple(shards), tuple(chosen))
            yield b"".join(blocks)[:size]

    def rebuild(self, key: str, lost: int) -> int:
        """Rebuild shard `lost` of every stripe of `key` from k others; returns bytes written."""
        written = 0
        for number, (_size, sums) in enumerate(self.manifests[key]):
            chosen = [i for i in range(self.n) if i != lost][: self.k]
            shards = self._read_shards(key, number, chosen, sums)
            blocks = self.decoder.decode(tuple(shards), tuple(chosen))
            stripe = memoryview(b"".join(blocks))
            shard = self.encode(stripe)[lost]
            if xxhash.xxh3_128_digest(shard) != sums[lost]:
                raise RuntimeError(f"reference store: rebuilt shard {lost} of {key} differs")
            write_durably(self.dirs[lost], f"{key}.{number}.{lost}", shard)
            written += len(shard)
        return written


def codec_baselines(report: Report, runs: int, scratch: Path, stripe_bytes: int = STRIPE) -> None:
    """zfec, xxh3 and fsync on their own, at the stripe size Shoal uses."""
    stripe = os.urandom(stripe_bytes)
    store = ReferenceStore(scratch / "codec", stripe=stripe_bytes)
    try:
        shards = store.encode(memoryview(stripe))
        encode_s = median_time(lambda: store.encode(memoryview(stripe)), runs)
        survivors = (shards[0], shards[1], shards[4], shards[5])
        decoded = b"".join(store.decoder.decode(survivors, (0, 1, 4, 5)))
        if decoded[:stripe_bytes] != stripe:
            raise RuntimeError("zfec decode did not return the stripe")
        decode_s = median_time(lambda: store.decoder.decode(survivors, (0, 1, 4, 5)), runs)
        codec = StripeCodec(K, N)
        without_two = {i: shards[i] for i in (0, 1, 4, 5)}  # data shards 2 and 3 lost
        if codec.decode(without_two, stripe_bytes) != stripe:
            raise RuntimeError(f"StripeCodec ({codec.engine}) did not decode the stripe")
        codec_encode_s = median_time(lambda: codec.encode(memoryview(stripe)), runs)
        codec_decode_s = median_time(lambda: codec.decode_blocks(without_two, stripe_bytes), runs)
        hash_s = median_time(lambda: xxhash.xxh3_128_digest(stripe), runs * 4)
        shard_bytes = len(shards[0])
        shard = os.urandom(shard_bytes)
        counter = itertools.count()
        fsync_s = median_time(
            lambda: write_durably(store.dirs[0], f"fsync-{next(counter)}", shard), runs * 2
        )
    finally:
        store.close()
    mib = stripe_bytes / MIB
    label = f"{mib:g} MiB stripe at ({K}, {N})"
    shard_label = f"{shard_bytes / MIB:g} MiB"
    rows = [
        (f"zfec encode, {label}", mib / encode_s, "zfec.Encoder, 1 thread"),
        (f"zfec decode, {label}, 2 data shards lost", mib / decode_s, "zfec.Decoder, 1 thread"),
        ("xxh3-128 hash", mib / hash_s, "xxhash.xxh3_128_digest"),
        (
            f"fsynced {shard_label} shard file",
            shard_bytes / MIB / fsync_s,
            "write+fsync+rename+fsync dir",
        ),
    ]
    for metric, value, name in rows:
        report.add(Row(metric, "MiB/s", None, value, name))
    # What Shoal's codec computes zfec's code with (common/gf_kernels.py), against zfec's own.
    for step, shoal_s, zfec_s in (
        ("encode", codec_encode_s, encode_s),
        ("decode, 2 data shards lost", codec_decode_s, decode_s),
    ):
        report.add(
            Row(
                f"StripeCodec {step} ({codec.engine}), {label}",
                "MiB/s",
                mib / shoal_s,
                mib / zfec_s,
                f"zfec.{'Encoder' if step == 'encode' else 'Decoder'}, 1 thread",
            )
        )
    report.extra["fsync_shard_ms"] = fsync_s * 1000
    report.notes.append(f"one fsynced {shard_label} shard file: {fsync_s * 1000:.1f} ms")
