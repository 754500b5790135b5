"""Who may tune glibc's malloc (common/malloc_tuning.py): Shoal's own programs by default, a
program that merely imports the client only when it opts in, nobody against the operator's
own settings. Each case runs in a fresh interpreter, so this test process keeps its allocator."""

from __future__ import annotations

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


def run(program: str, **env: str) -> list[Any]:
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
    result: list[Any] = json.loads(done.stdout.splitlines()[-1])
    return result


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
# (the scratch buffer of `str.lower` on a 4 MiB text), and whether the free heap goes back to
# the kernel after a large task.
TASK_PROCESS = """
import json, resource, sys
from shoal.common import malloc_tuning
heap_only = malloc_tuning.tune_task_process()

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()

buffer = b"x" * (48 << 20)
del buffer
before = faults()
buffer = b"y" * (48 << 20)
refaulted = faults() - before
del buffer
released_small = malloc_tuning.release_free_heap()
large = b"z" * (300 << 20)
above = b"a" * (1 << 20)  # from the heap above `large`, so freeing `large` leaves a hole
del large
held = rss()
released = malloc_tuning.release_free_heap()
print(json.dumps([heap_only, refaulted, released_small, released, held - rss()]))
"""
PAGES_48_MIB = (48 << 20) // 4096


def test_a_task_process_reuses_its_heap_and_gives_back_a_large_tasks_memory() -> None:
    heap_only, refaulted, released_small, released, given_back = run(TASK_PROCESS)
    assert heap_only is True
    assert refaulted < PAGES_48_MIB // 10  # the freed buffer's pages are used again
    assert released_small is False  # under TASK_HEAP_KEEP free: kept for the next task
    assert released is True
    assert given_back > 200 << 20


def test_an_untuned_task_process_maps_large_buffers_afresh() -> None:
    """The case the tuning is for, and proof that the check above can fail."""
    heap_only, refaulted, released_small, released, _ = run(TASK_PROCESS, SHOAL_MALLOC_TUNING="0")
    assert heap_only is False
    assert refaulted > PAGES_48_MIB * 9 // 10
    assert released_small is False
    assert released is False
