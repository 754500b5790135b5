"""CoordinatorConfig: every setting of `shoal-coordinator`, with its default, unit and env var."""

from __future__ import annotations

from dataclasses import dataclass

from shoal.common.config import setting
from shoal.common.erasure import MAX_SHARDS
from shoal.common.errors import ConfigError
from shoal.common.units import KiB, MiB

MAX_INLINE_BYTES = 64 * KiB


@dataclass(frozen=True)
class CoordinatorConfig:
    """Settings of the coordinator."""

    listen: str = setting("127.0.0.1:7000", "HOST:PORT to serve on (port 0 picks a free port)")
    data_dir: str = setting("", "directory holding the SQLite metadata database (required)")
    heartbeat_timeout: float = setting(
        10.0, "seconds without a heartbeat before a node is suspect", unit="seconds"
    )
    down_after: float = setting(
        30.0,
        "seconds without a heartbeat before a node is down (its shards stop counting)",
        unit="seconds",
    )
    repair_after: float = setting(
        900.0,
        "seconds a node must stay down before its shards are rebuilt elsewhere",
        unit="seconds",
    )
    repair_bandwidth: int = setting(
        64 * MiB, "bytes/s of shard reads repair may cause across the cluster", unit="bytes"
    )
    repair_concurrency: int = setting(4, "shards rebuilt at the same time")
    reconcile_interval: float = setting(
        600.0,
        "seconds between comparisons of node inventories with the manifests",
        unit="seconds",
    )
    orphan_grace: float = setting(
        900.0,
        "seconds an unreferenced shard is left alone before it is collected (covers "
        "uploads and repairs in flight)",
        unit="seconds",
    )
    default_k: int = setting(4, "default data shards per stripe for new buckets")
    default_n: int = setting(6, "default total shards per stripe for new buckets")
    stripe_bytes: int = setting(4 * MiB, "object bytes per stripe for new uploads", unit="bytes")
    inline_max_bytes: int = setting(
        16 * KiB,
        "objects up to this size are stored whole in the metadata database (one RPC, one "
        "commit; as durable as the manifests) instead of as stripes; 0 turns this off, "
        "64KiB at most",
        unit="bytes",
    )
    delete_grace: float = setting(
        30.0,
        "seconds before shards of deleted or replaced objects are removed, so reads in "
        "flight can finish",
        unit="seconds",
    )
    metadata_group_commit: int = setting(
        64,
        "most queued metadata calls (puts, deletes, lookups) committed by one SQLite "
        "transaction, so they share one fsync; 1 commits each call on its own",
    )
    upload_timeout: float = setting(
        3600.0,
        "seconds after which an uncommitted upload is aborted and its shards removed",
        unit="seconds",
    )
    job_policy: str = setting(
        "locality",
        "task placement for jobs that do not choose one",
        choices=("locality", "round-robin", "random", "weighted"),
    )
    lease_timeout: float = setting(
        10.0,
        "seconds without a worker heartbeat before its tasks go back to the queue",
        unit="seconds",
    )
    shutdown_grace: float = setting(
        5.0, "seconds in-flight RPCs get to finish on SIGTERM", unit="seconds"
    )
    ready_file: str = setting("", "write {pid, address} as JSON here once serving")
    metrics_listen: str = setting(
        "", "HOST:PORT to serve Prometheus metrics on (port 0 picks a free port); empty = off"
    )
    cluster_token_file: str = setting(
        "", "file holding the cluster token; when set, every RPC must carry it"
    )
    tls_cert: str = setting(
        "",
        "PEM certificate this daemon presents (TLS is on when tls_cert, tls_key and tls_ca "
        "are all set)",
    )
    tls_key: str = setting("", "PEM private key of tls_cert")
    tls_ca: str = setting(
        "", "PEM CA certificate: peers (daemons and clients) must present certificates it signed"
    )
    log_level: str = setting("INFO", "log level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    log_format: str = setting("text", "log line format", choices=("text", "json"))

    def validate(self) -> None:
        """Reject settings that cannot work, naming the key."""
        if not self.data_dir:
            raise ConfigError("missing required setting 'data_dir' (--data-dir or SHOAL_DATA_DIR)")
        if ":" not in self.listen:
            raise ConfigError(f"invalid value for 'listen': {self.listen!r} is not HOST:PORT")
        if self.heartbeat_timeout <= 0:
            raise ConfigError("invalid value for 'heartbeat_timeout': must be > 0")
        if self.down_after < self.heartbeat_timeout:
            raise ConfigError("invalid value for 'down_after': must be >= 'heartbeat_timeout'")
        if self.repair_after < 0 or self.reconcile_interval <= 0 or self.orphan_grace < 0:
            raise ConfigError(
                "invalid value for 'repair_after', 'reconcile_interval' or 'orphan_grace': "
                "must be >= 0 (reconcile_interval > 0)"
            )
        if self.repair_bandwidth <= 0 or self.repair_concurrency <= 0:
            raise ConfigError(
                "invalid value for 'repair_bandwidth' or 'repair_concurrency': must be > 0"
            )
        if not 1 <= self.default_k < self.default_n <= MAX_SHARDS:
            raise ConfigError(
                f"invalid values for 'default_k'/'default_n': need 1 <= k < n <= {MAX_SHARDS}"
            )
        if not 1 <= self.metadata_group_commit <= 4096:
            raise ConfigError("invalid value for 'metadata_group_commit': must be 1 to 4096")
        if not 0 <= self.inline_max_bytes <= MAX_INLINE_BYTES:
            raise ConfigError(
                "invalid value for 'inline_max_bytes': must be between 0 and 64KiB (a batch of "
                "256 inline objects must fit in one message)"
            )
        if not 4 * KiB <= self.stripe_bytes <= 256 * MiB:
            raise ConfigError("invalid value for 'stripe_bytes': must be between 4KiB and 256MiB")
