"""Names and rules shared by the SDK, the coordinator and workers for jobs.

Map-reduce intermediates live as ordinary objects in the internal bucket: map task `i`
writes partition `p` to `<job>/map-<i>/part-<p>`; a reducer of partition `p` reads every map's
`part-<p>`. Reducer output goes to `<prefix>part-<p>.jsonl` in the user's bucket (one JSON
object per line: {"key": ..., "value": ...}), or to `<job>/out/part-<p>` in the internal
bucket when no output is given. Keys are partitioned by a stable hash (xxh3 of a canonical
encoding), never Python's per-process salted `hash`.
"""

from __future__ import annotations

import pickle
from typing import Any

import xxhash

INTERNAL_BUCKET = "shoal-jobs"
JOB_KINDS = ("submit", "map", "map_reduce")
POLICIES = ("locality", "round-robin", "random", "weighted")
MAX_PARTITIONS = 4096


def map_output_key(job_id: str, map_index: int, partition: int) -> str:
    return f"{job_id}/map-{map_index:06d}/part-{partition:05d}"


def map_output_prefix(job_id: str) -> str:
    return f"{job_id}/map-"


def internal_output_key(job_id: str, partition: int) -> str:
    return f"{job_id}/out/part-{partition:05d}"


def output_key(prefix: str, partition: int) -> str:
    return f"{prefix}part-{partition:05d}.jsonl"


def _canonical(key: Any) -> bytes:
    if isinstance(key, str):
        return b"s" + key.encode("utf-8", "surrogatepass")
    if isinstance(key, bytes):
        return b"b" + key
    if isinstance(key, bool):
        return b"o" + (b"1" if key else b"0")
    if isinstance(key, int):
        return b"i" + str(key).encode()
    if isinstance(key, float):
        return b"f" + repr(key).encode()
    if isinstance(key, tuple):
        return b"t" + b"\x00".join(_canonical(part) for part in key)
    return b"p" + pickle.dumps(key, protocol=4)


def partition_of(key: Any, partitions: int) -> int:
    """The reduce partition of a key: stable across processes, machines and runs."""
    return xxhash.xxh3_64_intdigest(_canonical(key)) % partitions
