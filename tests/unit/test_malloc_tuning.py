"""Who may tune glibc's malloc (common/malloc_tuning.py): Shoal's own programs by default, a
program that merely imports the client only when it opts in, nobody against the operator's
own settings. Each case runs in a fresh interpreter, so this test process keeps its allocator."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shoal.common import malloc_tuning
from tests.harness.system import glibc

USER_PROGRAM = """
import json
import shoal.client
from shoal.common import malloc_tuning
# What ObjectReader and StripeWriter call when a get or a put starts:
called = malloc_tuning.keep_shard_buffers()
print(json.dumps([called, malloc_tuning.is_tuned()]))
"""
OWN_PROGRAM = """
import json
from shoal.common import malloc_tuning
called = malloc_tuning.tune_own_process(malloc_tuning.NODE_MMAP_THRESHOLD)
print(json.dumps([called, malloc_tuning.is_tuned()]))
"""
BENCH = """
import json
import bench
from shoal.common import malloc_tuning
print(json.dumps([malloc_tuning.allowed(), malloc_tuning.is_tuned()]))
"""


def run(program: str, **env: str) -> Any:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k != malloc_tuning.ENV_VAR and k not in malloc_tuning.OPERATOR_SETTINGS
    }
    done = subprocess.run(
        [sys.executable, "-c", program],
        cwd=Path(__file__).resolve().parents[2],  # where `bench` is importable
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


pytestmark = pytest.mark.skipif(not glibc(), reason="malloc tuning applies to glibc only")


def test_importing_the_client_leaves_the_allocator_alone() -> None:
    assert run(USER_PROGRAM) == [False, False]
    assert run(USER_PROGRAM, SHOAL_MALLOC_TUNING="0") == [False, False]


@pytest.mark.parametrize("value", ["1", "true", "on"])
def test_a_user_program_opts_in(value: str) -> None:
    assert run(USER_PROGRAM, SHOAL_MALLOC_TUNING=value) == [True, True]


def test_own_programs_tune_unless_turned_off() -> None:
    assert run(OWN_PROGRAM) == [True, True]
    assert run(BENCH) == [True, True]
    assert run(OWN_PROGRAM, SHOAL_MALLOC_TUNING="0") == [False, False]
    assert run(BENCH, SHOAL_MALLOC_TUNING="0") == [False, False]


@pytest.mark.parametrize("setting", malloc_tuning.OPERATOR_SETTINGS)
def test_the_operators_settings_win(setting: str) -> None:
    value = "glibc.malloc.arena_max=4" if setting == "GLIBC_TUNABLES" else "4"
    assert run(OWN_PROGRAM, **{setting: value}) == [False, False]
    assert run(USER_PROGRAM, SHOAL_MALLOC_TUNING="1", **{setting: value}) == [False, False]


# A task process: how many pages a second 48 MiB buffer faults in once the first is freed
# (the scratch buffer of `str.lower` on a 4 MiB text), whether the free heap goes back to the
# kernel after a large task, and whether the tasks after it still reuse their buffers (the
# large task's hole stays under a live allocation, so it still counts as free heap). Huge
# pages are turned off for the process, so a fault is one 4 KiB page whatever the host's THP.
TASK_PROCESS = """
import ctypes, json, resource, sys
ctypes.CDLL(None).prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE
from shoal.common import malloc_tuning
heap_only = malloc_tuning.tune_task_process()

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def a_task():
    buffer = b"y" * (48 << 20)
    del buffer

a_task()
before = faults()
a_task()
refaulted = faults() - before
released_small = malloc_tuning.release_free_heap()
large = b"z" * (300 << 20)
above = b"a" * (1 << 20)  # from the heap above `large`, so freeing `large` leaves a hole
del large
held = malloc_tuning.resident_bytes()
released = malloc_tuning.release_free_heap()
given_back = held - malloc_tuning.resident_bytes()
a_task()
released_after = malloc_tuning.release_free_heap()
before = faults()
a_task()
refaulted_after = faults() - before
released_again = malloc_tuning.release_free_heap()
idle_released = malloc_tuning.release_all_free_heap()
print(json.dumps({
    "heap_only": heap_only, "refaulted": refaulted, "released_small": released_small,
    "released": released, "given_back": given_back, "released_after": released_after,
    "refaulted_after": refaulted_after, "released_again": released_again,
    "idle_released": idle_released,
}))
"""
PAGES_48_MIB = (48 << 20) // 4096


def heap_only_possible() -> bool:
    """glibc 2.33+ (mallinfo2, which measures the free heap); older glibc keeps the node's
    tuning only."""
    return hasattr(ctypes.CDLL(None), "mallinfo2")


def test_a_task_process_reuses_its_heap_and_gives_back_a_large_tasks_memory() -> None:
    if not heap_only_possible():
        assert run(TASK_PROCESS)["heap_only"] is False
        return
    result = run(TASK_PROCESS)
    assert result["heap_only"] is True
    assert result["refaulted"] < PAGES_48_MIB // 10  # the freed buffer's pages are used again
    assert result["released_small"] is False  # under TASK_HEAP_KEEP free: kept
    assert result["released"] is True
    assert result["given_back"] > 200 << 20
    # The hole left by the large task is free heap for good, but it was handed back: later
    # tasks keep reusing their buffers instead of trimming after each one.
    assert result["released_after"] is False
    assert result["refaulted_after"] < PAGES_48_MIB // 10
    assert result["released_again"] is False
    assert result["idle_released"] is True


def test_an_untuned_task_process_maps_large_buffers_afresh() -> None:
    """The case the tuning is for, and proof that the checks above can fail."""
    result = run(TASK_PROCESS, SHOAL_MALLOC_TUNING="0")
    assert result["heap_only"] is False
    assert result["refaulted"] > PAGES_48_MIB * 9 // 10
    assert result["refaulted_after"] > PAGES_48_MIB * 9 // 10
    assert not any(result[k] for k in ("released_small", "released", "idle_released"))
