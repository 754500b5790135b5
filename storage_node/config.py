"""NodeConfig: every setting of `shoal-node`, with its default, unit and env var."""

from __future__ import annotations

from dataclasses import dataclass

from shoal.common.config import setting
from shoal.common.errors import ConfigError
from shoal.common.ids import is_valid_node_id
from shoal.common.units import MiB


@dataclass(frozen=True)
class NodeConfig:
    """Settings of a storage node."""

    listen: str = setting("127.0.0.1:7100", "HOST:PORT to serve on (port 0 picks a free port)")
    data_dir: str = setting("", "directory for shards and the node id (required)")
    coordinator: str = setting("127.0.0.1:7000", "coordinator address HOST:PORT")
    advertise: str = setting(
        "", "address peers use to reach this node (default: the listen address)"
    )
    node_id: str = setting("", "node id to use on first start (default: generated, then persisted)")
    zone: str = setting(
        "", "failure zone label (rack, room); shards of a stripe spread across zones"
    )
    capacity: int = setting(
        0, "bytes this node may store (0: the size of the data filesystem)", unit="bytes"
    )
    drop_written_pages: bool = setting(
        True,
        "drop the OS page cache of shards this node wrote once written_cache newer bytes "
        "were written after them (see docs/performance.md); off leaves every page to the kernel",
    )
    written_cache: int = setting(
        64 * MiB,
        "bytes of the most recently written shards whose pages stay cached when "
        "drop_written_pages is on (0: drop each shard's pages once it is durable)",
        unit="bytes",
    )
    heartbeat_interval: float = setting(
        1.0, "seconds between heartbeats to the coordinator", unit="seconds"
    )
    rpc_timeout: float = setting(10.0, "timeout of calls to the coordinator", unit="seconds")
    scrub_rate: int = setting(
        16 * MiB, "bytes/s the background scrubber may read to re-verify shards", unit="bytes"
    )
    scrub_interval: float = setting(
        7 * 86400.0,
        "seconds between background scrub passes (clusterctl scrub starts one now)",
        unit="seconds",
    )
    repair_timeout: float = setting(
        10.0, "timeout of each shard read from a peer while rebuilding", unit="seconds"
    )
    shutdown_grace: float = setting(
        5.0, "seconds in-flight RPCs get to finish on SIGTERM", unit="seconds"
    )
    ready_file: str = setting("", "write {pid, address, node_id} as JSON here once serving")
    metrics_listen: str = setting(
        "", "HOST:PORT to serve Prometheus metrics on (port 0 picks a free port); empty = off"
    )
    cluster_token_file: str = setting(
        "", "file holding the cluster token; when set, every RPC must carry it"
    )
    tls_cert: str = setting(
        "", "PEM certificate this daemon presents (TLS is on when tls_cert, tls_key and tls_ca "
        "are all set)"
    )
    tls_key: str = setting("", "PEM private key of tls_cert")
    tls_ca: str = setting(
        "", "PEM CA certificate: peers (daemons and clients) must present certificates it signed"
    )
    log_level: str = setting("INFO", "log level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    log_format: str = setting("text", "log line format", choices=("text", "json"))

    def written_cache_window(self) -> int | None:
        """The ShardStore's `written_cache`: the window, or None when pages are not dropped."""
        return self.written_cache if self.drop_written_pages else None

    def validate(self) -> None:
        """Reject settings that cannot work, naming the key."""
        if not self.data_dir:
            raise ConfigError("missing required setting 'data_dir' (--data-dir or SHOAL_DATA_DIR)")
        if ":" not in self.listen:
            raise ConfigError(f"invalid value for 'listen': {self.listen!r} is not HOST:PORT")
        if self.node_id and not is_valid_node_id(self.node_id):
            raise ConfigError(
                f"invalid value for 'node_id': {self.node_id!r} (letters, digits, . _ -)"
            )
        if self.capacity < 0:
            raise ConfigError("invalid value for 'capacity': must be >= 0")
        if self.written_cache < 0:
            raise ConfigError("invalid value for 'written_cache': must be >= 0")
        if self.heartbeat_interval <= 0:
            raise ConfigError("invalid value for 'heartbeat_interval': must be > 0")
        if self.scrub_rate <= 0 or self.scrub_interval <= 0:
            raise ConfigError("invalid value for 'scrub_rate' or 'scrub_interval': must be > 0")
