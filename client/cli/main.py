"""`clusterctl`: the operator command line (argument parsing and error handling).

Exit status: 0 success; 1 a Shoal or OS error (one line on stderr); 2 a usage error; 130
interrupted. `status` exits 0/1/2 for HEALTHY/DEGRADED/UNAVAILABLE and 2 if the coordinator
cannot be reached (`status --watch` runs until Ctrl-C and exits 130). `job watch` exits 0 when
the job succeeded, 1 when it failed or was cancelled. `--debug` adds tracebacks.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from shoal.client.cli import (
    cmd_certs,
    cmd_durability,
    cmd_health,
    cmd_jobs,
    cmd_local,
    cmd_objects,
    cmd_ops,
    cmd_status,
)
from shoal.client.cli.failures import NoCoordinator, UsageError, describe
from shoal.common import malloc_tuning
from shoal.common.errors import ConnectionFailed, ShoalError, Unavailable

PROG = "clusterctl"
TLS_FLAGS = [
    ("--tls-ca", "PEM file of the cluster CA"),
    ("--tls-cert", "PEM client certificate signed by the cluster CA"),
    ("--tls-key", "PEM key of --tls-cert"),
]
Handler = Callable[[argparse.Namespace], int]


def _options(*, remote: bool, suppress: bool) -> argparse.ArgumentParser:
    """Options accepted both before and after the subcommand.

    Subcommand copies default to SUPPRESS so they never overwrite a value given before it.
    """
    default = argparse.SUPPRESS if suppress else None
    parser = argparse.ArgumentParser(add_help=False)
    if remote:
        parser.add_argument(
            "--coordinator",
            metavar="ADDR",
            default=default,
            help="coordinator HOST:PORT (default: SHOAL_COORDINATOR, else the local cluster)",
        )
    if remote:
        parser.add_argument(
            "--token-file",
            metavar="FILE",
            default=default,
            help="file with the cluster token (default: SHOAL_TOKEN or SHOAL_TOKEN_FILE)",
        )
        for flag, what in TLS_FLAGS:
            parser.add_argument(
                flag,
                metavar="FILE",
                default=default,
                help=f"{what}, for a cluster with TLS "
                f"(default: SHOAL_{flag[2:].replace('-', '_').upper()})",
            )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        default=default,
        help="local cluster directory (default: SHOAL_CLUSTER_DIR, else ./.shoal)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="show tracebacks on errors",
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The clusterctl argument parser."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        parents=[_options(remote=True, suppress=False)],
        description="Operate a Shoal cluster: local daemons, status, repair, nodes, jobs, buckets "
        "and objects.",
        # Abbreviations here would make a subcommand's own option ambiguous (`up --tls` against
        # the global --tls-ca/--tls-cert/--tls-key); subcommands still accept them.
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    local = _options(remote=False, suppress=True)
    remote = _options(remote=True, suppress=True)
    cmd_local.register(sub, local)
    cmd_certs.register(sub, local)
    node = sub.add_parser(
        "node", help="drain or remove a node (any cluster); stop or start one (local cluster)"
    )
    actions = node.add_subparsers(dest="action", metavar="ACTION", required=True)
    cmd_ops.register_node(actions, remote)
    cmd_local.register_node(actions, local)
    worker = sub.add_parser("worker", help="stop or start a worker (local cluster)")
    cmd_local.register_worker(
        worker.add_subparsers(dest="action", metavar="ACTION", required=True), local
    )
    cmd_status.register(sub, remote)
    cmd_ops.register(sub, remote)
    cmd_jobs.register(sub, remote)
    cmd_objects.register(sub, remote)
    cmd_durability.register(sub, remote)
    cmd_health.register(sub, remote)
    return parser


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def _failure_exit(args: argparse.Namespace, exc: BaseException) -> int:
    if isinstance(exc, (ConnectionFailed, Unavailable, NoCoordinator)):
        return int(getattr(args, "unreachable_exit", 1))
    return 1


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the exit-time flush stays quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Run clusterctl with `argv` (default: sys.argv[1:]); returns the exit status."""
    args = build_parser().parse_args(argv)
    malloc_tuning.tune_own_process()  # Shoal's own tool (a library user must opt in)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 1
    except UsageError as exc:
        _error(describe(exc))
        return 2
    except (ShoalError, OSError) as exc:
        if args.debug:
            traceback.print_exc()
        request = getattr(exc, "request_id", "")
        _error(describe(exc) + (f" (request id {request})" if request else ""))
        return _failure_exit(args, exc)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
