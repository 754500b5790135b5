"""GatewayConfig: every setting of `shoal-s3`, with its default, unit and env var."""

from __future__ import annotations

from dataclasses import dataclass

from shoal.common.config import setting
from shoal.common.errors import ConfigError
from shoal.common.units import GiB, MiB


@dataclass(frozen=True)
class GatewayConfig:
    """Settings of the S3 gateway."""

    listen: str = setting("127.0.0.1:9000", "HOST:PORT to serve S3 on (port 0 picks a free port)")
    coordinator: str = setting("127.0.0.1:7000", "coordinator address HOST:PORT")
    credentials: str = setting(
        "",
        "TOML file of the users' access keys, secrets and display names (required)",
        secret=False,
    )
    region: str = setting("us-east-1", "region reported by GetBucketLocation")
    domain: str = setting(
        "",
        "base domain for virtual-hosted-style requests (BUCKET.DOMAIN); empty: path style only",
    )
    stripe_bytes: int = setting(
        4 * MiB,
        "stripe size multipart parts are aligned to (the cluster's --stripe-bytes)",
        unit="bytes",
    )
    max_object_size: int = setting(
        5 * GiB, "largest single PUT or part, as S3 (EntityTooLarge above)", unit="bytes"
    )
    min_part_size: int = setting(
        5 * MiB,
        "smallest part but the last at CompleteMultipartUpload (EntityTooSmall)",
        unit="bytes",
    )
    rpc_timeout: float = setting(30.0, "timeout of calls to the coordinator", unit="seconds")
    shutdown_grace: float = setting(
        10.0, "seconds in-flight requests get to finish on SIGTERM", unit="seconds"
    )
    ready_file: str = setting("", "write {pid, address} as JSON here once serving")
    metrics_listen: str = setting(
        "", "HOST:PORT to serve Prometheus metrics on (port 0 picks a free port); empty = off"
    )
    cluster_token_file: str = setting(
        "", "file holding the cluster token, when the cluster requires one"
    )
    tls_cert: str = setting(
        "", "PEM client certificate for a cluster with mutual TLS (with tls_key and tls_ca)"
    )
    tls_key: str = setting("", "PEM private key of tls_cert")
    tls_ca: str = setting("", "PEM CA certificate the cluster's certificates are signed by")
    log_level: str = setting("INFO", "log level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    log_format: str = setting("text", "log line format", choices=("text", "json"))

    def validate(self) -> None:
        """Reject settings that cannot work, naming the key."""
        if not self.credentials:
            raise ConfigError(
                "missing required setting 'credentials' (--credentials or SHOAL_CREDENTIALS)"
            )
        for name in ("listen", "coordinator"):
            if ":" not in getattr(self, name):
                raise ConfigError(f"invalid value for '{name}': not HOST:PORT")
        if not 4096 <= self.stripe_bytes <= 64 * MiB:
            raise ConfigError("invalid value for 'stripe_bytes': must be 4KiB..64MiB")
        if self.max_object_size <= 0 or self.min_part_size <= 0:
            raise ConfigError("invalid value for 'max_object_size' or 'min_part_size': must be > 0")
