"""glibc malloc tuning for processes that move shard bytes, and who may turn it on.

Every shard passes through several fresh buffers of its size (gRPC's receive buffer, the
protobuf arena, the bytes handed on). By default glibc serves those of 128 KiB and more with
mmap, or trims them off the heap when freed, so each one is zero-filled page by page by the
kernel again: those page faults were half the CPU of a node serving or storing shards (more
than half of its instructions), and a large share of the client's. `keep_shard_buffers` has
allocations up to an mmap threshold served from the heap, up to 128 MiB of free heap kept, and
at most 2 malloc arenas (glibc's default is 8 per core), so that buffers are reused instead and
memory kept by one thread serves the others rather than adding up.

Who decides: the allocator belongs to the process, and a client *library* must not change its
host program's allocator behind its back. So the tuning is

* ON in Shoal's own programs: the daemons (`shoal-node`, `shoal-coordinator`, `shoal-worker`,
  `shoal-s3`, through `common.lifecycle.daemon_main`), the worker's task slots, `clusterctl`
  and the bench. Each calls `tune_own_process` first thing;
* OFF in a user program that merely imports `shoal.client`; it opts in with
  `SHOAL_MALLOC_TUNING=1` in its environment (the client then tunes when it first reads or
  writes an object);
* OFF everywhere with `SHOAL_MALLOC_TUNING=0`, and whenever the operator set any of
  `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`, `MALLOC_ARENA_MAX` or `GLIBC_TUNABLES`
  (their own settings win, even over `SHOAL_MALLOC_TUNING=1`);
* a no-op off glibc (musl, macOS), where there is nothing to tune.
"""

from __future__ import annotations

import ctypes
import os

from shoal.common.units import MiB

ENV_VAR = "SHOAL_MALLOC_TUNING"

_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
# glibc's maximum: a storage node keeps buffers of any shard size.
NODE_MMAP_THRESHOLD = 32 * MiB
# A client keeps buffers up to a shard message at the default stripe size (1 MiB shards);
# stripes and whole objects are larger and go back to the kernel when freed, which keeps its
# peak memory where it was (1 GiB put from a file and streamed back: 137-139 MiB peak, against
# 154-182 MiB with the node's threshold).
CLIENT_MMAP_THRESHOLD = 2 * MiB
TRIM_THRESHOLD = 128 * MiB
ARENA_MAX = 2
OPERATOR_SETTINGS = (
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_ARENA_MAX",
    "GLIBC_TUNABLES",
)
_OFF = frozenset({"0", "false", "no", "off"})
_ON = frozenset({"1", "true", "yes", "on"})

_own_process = False
_tuned = False
_threshold = 0


def allowed() -> bool:
    """Whether this process may tune malloc now: never with SHOAL_MALLOC_TUNING=0 or the
    operator's own malloc settings; with SHOAL_MALLOC_TUNING=1; otherwise only in Shoal's own
    programs (after `tune_own_process`)."""
    choice = os.environ.get(ENV_VAR, "").strip().lower()
    if choice in _OFF or any(name in os.environ for name in OPERATOR_SETTINGS):
        return False
    return choice in _ON or _own_process


def is_tuned() -> bool:
    """True once malloc has been tuned in this process."""
    return _tuned


def tuned_threshold() -> int:
    """The mmap threshold malloc was tuned with in this process; 0 when it was not tuned."""
    return _threshold if _tuned else 0


def tune_own_process(mmap_threshold: int = CLIENT_MMAP_THRESHOLD) -> bool:
    """For Shoal's own programs only (daemons, clusterctl, bench), first thing: tune malloc now
    unless SHOAL_MALLOC_TUNING=0 or the operator's settings say otherwise (see the module
    docstring). True when tuned. Never call this from library code."""
    global _own_process
    _own_process = True
    return keep_shard_buffers(mmap_threshold)


def keep_shard_buffers(mmap_threshold: int = CLIENT_MMAP_THRESHOLD) -> bool:
    """Make glibc's malloc reuse freed buffers up to `mmap_threshold` bytes instead of handing
    them back to the kernel, when `allowed()`; once per process (the first tuning's threshold
    holds). True when tuned (now or before); False, changing nothing, when not allowed or off
    glibc.

    The client calls this when it starts reading or writing an object: a no-op in a user
    program unless it opted in with SHOAL_MALLOC_TUNING=1."""
    global _tuned, _threshold
    if _tuned:
        return True
    if not allowed():
        return False
    try:
        libc = ctypes.CDLL(None)
        if not hasattr(libc, "gnu_get_libc_version"):  # not glibc: another allocator
            return False
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    threshold = min(mmap_threshold, NODE_MMAP_THRESHOLD)
    _tuned = bool(
        mallopt(_M_ARENA_MAX, ARENA_MAX)
        and mallopt(_M_MMAP_THRESHOLD, threshold)
        and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    _threshold = threshold
    return _tuned
