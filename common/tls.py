"""Mutual TLS: the certificate, key and CA files of a daemon or client, checked when loaded.

A cluster runs with TLS when every daemon gets `--tls-cert`, `--tls-key` and `--tls-ca` (env
SHOAL_TLS_CERT, SHOAL_TLS_KEY, SHOAL_TLS_CA; the SDK reads the same variables). Servers then
accept only peers whose certificate is signed by the cluster CA (mutual TLS: a daemon presents
its own certificate when it dials another one, clients present a client certificate), and
clients check the server's certificate against the address they dial, so server certificates
carry the daemons' IP addresses (and host names) as subject alternative names.
`clusterctl certs init` creates such a CA and certificates for a small cluster.

`load_tls` reads and checks the three files once, at start, and names the setting of any file
that is missing, unreadable, not PEM, expired, not matching its key or not signed by the CA,
so a misconfiguration is one readable line instead of a failed handshake later.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from shoal.common.errors import ConfigError

if TYPE_CHECKING:
    from cryptography import x509

# Setting names as daemons spell them (flags --tls-cert ...); the SDK passes its own.
DAEMON_NAMES = ("tls_cert", "tls_key", "tls_ca")
PLAIN_HINT = (
    "if the cluster uses TLS, pass its CA and a client certificate (--tls-ca, --tls-cert, "
    "--tls-key or SHOAL_TLS_CA, SHOAL_TLS_CERT, SHOAL_TLS_KEY)"
)


@dataclass(frozen=True)
class TlsFiles:
    """A certificate chain, its private key and the CA bundle peers must be signed by (PEM)."""

    cert_path: str
    key_path: str
    ca_path: str
    cert: bytes = field(repr=False)
    key: bytes = field(repr=False)
    ca: bytes = field(repr=False)

    def server_credentials(self) -> grpc.ServerCredentials:
        """Server side: present `cert`, require a client certificate signed by `ca`."""
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)], root_certificates=self.ca, require_client_auth=True
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Client side: trust servers signed by `ca`, present `cert`."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )


def _read(path: str, name: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read '{name}' file {path}: {exc.strerror}") from None


def load_tls(
    cert: str, key: str, ca: str, *, names: tuple[str, str, str] = DAEMON_NAMES
) -> TlsFiles | None:
    """The TLS files at these paths, checked; None when all three are empty (TLS off).

    ConfigError (one line naming the setting, from `names`) when only some are given, or a
    file is unreadable, not PEM, expired or inconsistent with the others.
    """
    given = dict(zip(names, (cert, key, ca), strict=True))
    if not any(given.values()):
        return None
    missing = [name for name, path in given.items() if not path]
    if missing:
        have = [name for name, path in given.items() if path]
        raise ConfigError(
            f"incomplete TLS settings: {' and '.join(repr(m) for m in missing)} missing while "
            f"{' and '.join(repr(h) for h in have)} given (set all three or none)"
        )
    files = TlsFiles(
        cert, key, ca, _read(cert, names[0]), _read(key, names[1]), _read(ca, names[2])
    )
    _check(files, names)
    return files


def _check(files: TlsFiles, names: tuple[str, str, str]) -> None:
    """Parse the PEM files and check they fit together (imports cryptography lazily)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert_name, key_name, ca_name = names
    try:
        chain = x509.load_pem_x509_certificates(files.cert)
    except ValueError:
        raise ConfigError(
            f"'{cert_name}' file {files.cert_path} holds no PEM certificate"
        ) from None
    try:
        cas = x509.load_pem_x509_certificates(files.ca)
    except ValueError:
        raise ConfigError(f"'{ca_name}' file {files.ca_path} holds no PEM certificate") from None
    try:
        private_key = serialization.load_pem_private_key(files.key, password=None)
    except (ValueError, TypeError) as exc:
        reason = "it is encrypted" if isinstance(exc, TypeError) else "no PEM private key"
        raise ConfigError(f"'{key_name}' file {files.key_path} is unusable: {reason}") from None
    leaf = chain[0]
    if private_key.public_key() != leaf.public_key():
        raise ConfigError(
            f"'{key_name}' file {files.key_path} is not the key of the certificate in "
            f"{files.cert_path}"
        )
    now = datetime.datetime.now(datetime.UTC)
    for certificate, name, path in [
        *((c, cert_name, files.cert_path) for c in chain),
        *((c, ca_name, files.ca_path) for c in cas),
    ]:
        if certificate.not_valid_after_utc < now:
            raise ConfigError(
                f"'{name}' file {path}: certificate "
                f"{certificate.subject.rfc4514_string()} expired on "
                f"{certificate.not_valid_after_utc:%Y-%m-%d}"
            )
    issuer = chain[-1]
    if not any(_issued_by(issuer, ca) for ca in cas):
        raise ConfigError(
            f"'{cert_name}' file {files.cert_path} is not signed by the CA in "
            f"'{ca_name}' file {files.ca_path}"
        )


def _issued_by(certificate: x509.Certificate, ca: x509.Certificate) -> bool:
    from cryptography.exceptions import InvalidSignature

    if certificate == ca:
        return True
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def tls_failure(details: str, *, tls: bool) -> str:
    """Why a connection failed, when gRPC's error `details` look like a TLS mismatch between
    this side (`tls`: whether it dialled with TLS) and the server; "" when they do not."""
    text = details.lower()
    if "hostname verification" in text:
        return (
            "TLS: the server's certificate does not name the address dialled (issue it with "
            "--host for that address: clusterctl certs)"
        )
    if "wrong_version_number" in text:
        return "TLS handshake failed: the server does not use TLS (or is not a Shoal daemon)"
    if "certificate_verify_failed" in text:
        return "TLS: the server's certificate is not signed by the CA in the TLS CA file"
    if "handshake" in text:
        return "TLS handshake failed: " + details.rsplit("handshake failed", 1)[-1].strip(" :")
    if "socket closed" in text:
        if tls:
            return (
                "the server closed the connection during the TLS handshake: is this client's "
                "certificate signed by the cluster's CA?"
            )
        return f"the server closed the connection at once: {PLAIN_HINT}"
    return ""
