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
    """Atomically write `data` as JSON to `path` (temp file + rename), for launchers and tests."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".ready-")
    with os.fdopen(fd, "w") as handle:
        json.dump({"pid": os.getpid(), **data}, handle)
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
) -> int:
    """The whole entry point of a daemon: load its config (flags, SHOAL_* env, TOML), set up
    logging, run `serve(config, shutdown)` on uvloop, and turn a ConfigError raised while
    starting into one line on stderr with exit status 2."""
    config, _args = load_config(config_cls, argv, prog=prog, description=description)
    shoal_logging.configure(
        getattr(config, "log_level", "INFO"), getattr(config, "log_format", "text")
    )
    try:
        return run_daemon(lambda shutdown: serve(config, shutdown))
    except ConfigError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
