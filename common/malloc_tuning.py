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

A worker's task processes go one step further (`tune_task_process`): they run user code,
whose allocations are not shard buffers of a known size. A word count's mapper, for
instance, lowercases a 4 MiB text, and CPython's `str.lower` takes a scratch buffer of 12
bytes per character for it (48 MiB); by default that buffer, like every allocation over the
mmap threshold, is mapped and zero-filled by the kernel afresh on every call. So a task
process serves its allocations from the heap (`M_MMAP_MAX` = 0; glibc still maps one that
does not fit a thread's 64 MiB heap) and keeps freed memory for the next task. After each
task, `release_free_heap` hands the free heap back to the kernel when the process's resident
memory grew by more than `TASK_HEAP_KEEP` since it last looked and more than that is free,
so one large task does not leave the process holding its peak; `release_all_free_heap`
hands it all back when the process idles. On the bench's 256 MiB word count this took the
job from 11.0 s to 10.1 s (alternating runs, same corpus).
"""

from __future__ import annotations

import ctypes
import functools
import os

from shoal.common.units import MiB

ENV_VAR = "SHOAL_MALLOC_TUNING"

_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
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
# Free heap a task process keeps between tasks (see `release_free_heap`).
TASK_HEAP_KEEP = 128 * MiB
OPERATOR_SETTINGS = (
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_MMAP_MAX_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_ARENA_MAX",
    "GLIBC_TUNABLES",
)
_OFF = frozenset({"0", "false", "no", "off"})
_ON = frozenset({"1", "true", "yes", "on"})

_own_process = False
_tuned = False
_threshold = 0
_heap_only = False
_resident_when_checked = 0  # resident bytes when release_free_heap last looked


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """glibc, with the functions used here typed; None under another C library."""
    try:
        libc = ctypes.CDLL(None)
        if not hasattr(libc, "gnu_get_libc_version"):  # not glibc: another allocator
            return None
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
        if hasattr(libc, "mallinfo2"):
            libc.mallinfo2.argtypes = []
            libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return None
    return libc


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


def heap_only() -> bool:
    """True once this process serves every allocation from the heap (`tune_task_process`)."""
    return _heap_only


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
    libc = _libc()
    if libc is None:
        return False
    mallopt = libc.mallopt
    threshold = min(mmap_threshold, NODE_MMAP_THRESHOLD)
    _tuned = bool(
        mallopt(_M_ARENA_MAX, ARENA_MAX)
        and mallopt(_M_MMAP_THRESHOLD, threshold)
        and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    _threshold = threshold
    return _tuned


def tune_task_process() -> bool:
    """For a worker's task process, first thing: the node's tuning, and every allocation
    served from the heap, never mapped on its own (see the module docstring), unless
    SHOAL_MALLOC_TUNING=0 or the operator's settings say otherwise. Call
    `release_free_heap` after each task. True when tuned. Never call this from library
    code."""
    global _own_process, _heap_only, _resident_when_checked
    _own_process = True
    if _heap_only:
        return True
    if not keep_shard_buffers(NODE_MMAP_THRESHOLD) or _threshold != NODE_MMAP_THRESHOLD:
        return False
    libc = _libc()
    # Without mallinfo2 (glibc < 2.33) the free heap cannot be measured, so never released:
    # such a process keeps the node's tuning only.
    if libc is None or not hasattr(libc, "mallinfo2"):
        return False
    _heap_only = bool(libc.mallopt(_M_MMAP_MAX, 0))
    _resident_when_checked = resident_bytes()
    return _heap_only


def free_heap_bytes() -> int:
    """Bytes malloc holds free in this process (all arenas); 0 where glibc cannot say."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallinfo2"):  # mallinfo2 is glibc 2.33+
        return 0
    return int(libc.mallinfo2().fordblks)


def resident_bytes() -> int:
    """This process's resident memory (RSS) in bytes; 0 where /proc cannot say."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def release_free_heap(keep: int = TASK_HEAP_KEEP) -> bool:
    """In a task process (`tune_task_process`), after each task: when its resident memory grew
    by more than `keep` bytes since this last looked and more than `keep` bytes of heap are
    free, hand the free memory back to the kernel (`malloc_trim`), so one large task does not
    leave the process holding its peak for good. The resident memory decides first because
    it is cheap to read and because free chunks already handed back still count as free
    (a hole under a live allocation stays "free" after a trim). True when memory was
    released."""
    global _resident_when_checked
    libc = _libc()
    if not _heap_only or libc is None:
        return False
    resident = resident_bytes()
    if resident - _resident_when_checked <= keep:
        return False
    released = free_heap_bytes() > keep and bool(libc.malloc_trim(0))
    _resident_when_checked = resident_bytes() if released else resident
    return released


def release_all_free_heap() -> bool:
    """In a task process (`tune_task_process`) that is idle: hand every free page of the heap
    back to the kernel. True when memory was released."""
    global _resident_when_checked
    libc = _libc()
    if not _heap_only or libc is None:
        return False
    released = bool(libc.malloc_trim(0))
    _resident_when_checked = resident_bytes()
    return released
