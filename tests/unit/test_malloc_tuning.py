"""Who may tune glibc's malloc (common/malloc_tuning.py): Shoal's own programs by default, a
program that merely imports the client only when it opts in, nobody against the operator's
own settings. Each case runs in a fresh interpreter, so this test process keeps its allocator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


def run(program: str, **env: str) -> list[bool]:
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
    result: list[bool] = json.loads(done.stdout.splitlines()[-1])
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
