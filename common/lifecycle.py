"""Daemon entry point: uvloop, one shutdown event set by SIGTERM/SIGINT, and a ready file.

`run_daemon(serve)` runs `serve(shutdown)` on a uvloop event loop; `serve` starts its servers,
writes its ready file, waits for `shutdown`, then stops in order (refuse new RPCs and give
in-flight ones a grace period, stop background loops, close storage) and returns. The process
then exits 0, which tests assert after SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import uvloop

from shoal.common import logging as shoal_logging
from shoal.common import malloc_tuning
from shoal.common.config import load_config
from shoal.common.errors import ConfigError

log = logging.getLogger(__name__)
C = TypeVar("C")


def run_daemon(serve: Callable[[asyncio.Event], Awaitable[None]]) -> int:
    """Run `serve` until it returns; SIGTERM and SIGINT set the event it is given."""

    async def main() -> None:
        shutdown = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, shutdown.set)
        await serve(shutdown)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
    return 0


def write_ready_file(path: str, data: dict[str, Any]) -> None:
    """Atomically write `data` as JSON to `path` (temp file + rename), for launchers and tests,
    with this process's pid and its malloc tuning (`malloc_mmap_threshold`: 0 when untuned)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".ready-")
    with os.fdopen(fd, "w") as handle:
        tuning = {"malloc_mmap_threshold": malloc_tuning.tuned_threshold()}
        json.dump({"pid": os.getpid(), **tuning, **data}, handle)
    os.replace(tmp, target)


async def sleep_or_shutdown(shutdown: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; return True at once if shutdown is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(shutdown.wait(), timeout=seconds)
    return shutdown.is_set()


def daemon_main(
    config_cls: type[C],
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str,
    serve: Callable[[C, asyncio.Event], Awaitable[None]],
    mmap_threshold: int = malloc_tuning.CLIENT_MMAP_THRESHOLD,
) -> int:
    """The whole entry point of a daemon: load its config (flags, SHOAL_* env, TOML), set up
    logging, tune glibc's malloc to keep buffers up to `mmap_threshold` bytes (a daemon is
    Shoal's own process; SHOAL_MALLOC_TUNING=0 or the operator's MALLOC_* / GLIBC_TUNABLES
    settings turn it off, see `common.malloc_tuning`), run `serve(config, shutdown)` on
    uvloop, and turn a ConfigError raised while starting into one line on stderr with exit
    status 2."""
    config, _args = load_config(config_cls, argv, prog=prog, description=description)
    shoal_logging.configure(
        getattr(config, "log_level", "INFO"), getattr(config, "log_format", "text")
    )
    # Reported in the ready file; logged at debug level only, as a ConfigError must remain
    # the one line on stderr.
    tuned = malloc_tuning.tune_own_process(mmap_threshold)
    log.debug("malloc tuning", extra={"tuned": tuned, "mmap_threshold": mmap_threshold})
    try:
        return run_daemon(lambda shutdown: serve(config, shutdown))
    except ConfigError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
