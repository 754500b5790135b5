"""WorkerConfig: every setting of `shoal-worker`, with its default, unit and env var."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from shoal.client.local_reads import parse_dirs
from shoal.common.config import setting
from shoal.common.errors import ConfigError, InvalidArgument


def _total_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


@dataclass(frozen=True)
class WorkerConfig:
    """Settings of a worker."""

    coordinator: str = setting("127.0.0.1:7000", "coordinator address HOST:PORT")
    slots: int = setting(os.cpu_count() or 1, "task processes (cpus offered); default: cores")
    memory: int = setting(
        _total_memory(), "bytes of memory tasks may declare in total", unit="bytes"
    )
    zone: str = setting("", "failure zone label; map tasks prefer workers in their data's zone")
    host_id: str = setting(
        socket.gethostname(), "host identity; equal to a storage node's id when they share a host"
    )
    worker_id: str = setting("", "worker id (default: <host-id>-w<pid>)")
    local_node_dirs: str = setting(
        "",
        "comma-separated data directories of the storage nodes on this host: tasks read "
        "those nodes' shards from the files directly (short-circuit reads, still verified "
        "against the manifest); empty = off",
    )
    rpc_timeout: float = setting(10.0, "timeout of calls to the coordinator", unit="seconds")
    shutdown_grace: float = setting(
        10.0, "seconds running tasks get to finish on SIGTERM", unit="seconds"
    )
    ready_file: str = setting("", "write {pid, worker_id} as JSON here once registered")
    health_listen: str = setting(
        "127.0.0.1:0",
        "HOST:PORT serving the gRPC health service (the worker serves no other RPC; port 0 "
        "picks a free port); empty = off",
    )
    metrics_listen: str = setting(
        "", "HOST:PORT to serve Prometheus metrics on (port 0 picks a free port); empty = off"
    )
    cluster_token_file: str = setting(
        "", "file holding the cluster token; when set, every RPC must carry it"
    )
    tls_cert: str = setting(
        "",
        "PEM client certificate this worker and its tasks present (TLS is on when tls_cert, "
        "tls_key and tls_ca are all set)",
    )
    tls_key: str = setting("", "PEM private key of tls_cert")
    tls_ca: str = setting(
        "", "PEM CA certificate the coordinator's and nodes' certificates are signed by"
    )
    log_level: str = setting("INFO", "log level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    log_format: str = setting("text", "log line format", choices=("text", "json"))

    def validate(self) -> None:
        """Reject settings that cannot work, naming the key."""
        if ":" not in self.coordinator:
            raise ConfigError(
                f"invalid value for 'coordinator': {self.coordinator!r} is not HOST:PORT"
            )
        if not 1 <= self.slots <= 1024:
            raise ConfigError("invalid value for 'slots': must be between 1 and 1024")
        if self.memory < 0:
            raise ConfigError("invalid value for 'memory': must be >= 0")
        try:
            paths = self.local_node_dir_list
        except InvalidArgument as exc:
            raise ConfigError(f"invalid value for 'local_node_dirs': {exc}") from None
        for path in paths:
            # A directory that does not exist yet is allowed (its node may start later: the
            # worker logs it); a path that is something else is a mistake.
            if os.path.exists(path) and not os.path.isdir(path):
                raise ConfigError(
                    f"invalid value for 'local_node_dirs': {path!r} is not a directory"
                )

    @property
    def local_node_dir_list(self) -> tuple[str, ...]:
        """`local_node_dirs` as a tuple of paths, parsed as the SDK parses them."""
        return tuple(str(path) for path in parse_dirs(self.local_node_dirs))
