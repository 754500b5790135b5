"""A certificate authority and certificates for a small Shoal cluster (mutual TLS).

Files in the certificate directory, all PEM:

    ca.pem, ca-key.pem              the cluster CA (every daemon and client trusts it: --tls-ca)
    coordinator.pem, -key.pem       server + client certificate of the coordinator
    node-<i>.pem, -key.pem          server + client certificates of the storage nodes
    worker-<i>.pem, -key.pem        client certificates of the workers (they only dial)
    client.pem, client-key.pem      client certificate for clusterctl and SDK programs

Keys are ECDSA P-256 and written with mode 0600. gRPC checks a server's certificate against
the host part of the address it dials, and Shoal registers nodes as IP:port, so server
certificates name localhost, 127.0.0.1, ::1 and every `--host` given (IP addresses as IP
SANs, names as DNS SANs).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shoal.common.errors import InvalidArgument

# cryptography is imported where used: clusterctl loads this module for every command.
if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
CLIENT = "client"
COORDINATOR = "coordinator"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
CA_DAYS = 3650
DEFAULT_DAYS = 825
ORGANIZATION = "Shoal cluster"


@dataclass(frozen=True)
class Issued:
    """A certificate written to disk."""

    name: str
    cert: Path
    key: Path
    server: bool
    hosts: tuple[str, ...]


def cert_path(directory: str | os.PathLike[str], name: str) -> Path:
    return Path(directory) / f"{name}.pem"


def key_path(directory: str | os.PathLike[str], name: str) -> Path:
    return Path(directory) / f"{name}-key.pem"


def check_host(host: str) -> str:
    """A host name or IP address usable as a SAN; InvalidArgument otherwise."""
    text = host.strip().strip("[]")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    labels = text.rstrip(".").split(".")
    if not text or not all(
        label and len(label) <= 63 and all(c.isalnum() or c in "-_*" for c in label)
        for label in labels
    ):
        raise InvalidArgument(f"--host {host!r} is neither an IP address nor a host name")
    return text.lower()


def _san(hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    from cryptography import x509

    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _name(common_name: str) -> x509.Name:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write `data` with exactly `mode` (also over an existing file), atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _validity(days: int) -> tuple[datetime.datetime, datetime.datetime]:
    # Backdated a little so a peer whose clock is slightly behind accepts it at once.
    now = datetime.datetime.now(datetime.UTC)
    return now - datetime.timedelta(hours=1), now + datetime.timedelta(days=days)


def create_ca(directory: str | os.PathLike[str], *, days: int = CA_DAYS) -> tuple[Path, Path]:
    """Create the cluster CA (ca.pem, ca-key.pem) in `directory`; returns their paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    root = Path(directory)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("Shoal cluster CA")
    start, end = _validity(days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(root / CA_KEY, _key_bytes(key), 0o600)
    _write(root / CA_CERT, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return root / CA_CERT, root / CA_KEY


def _load_ca(
    directory: str | os.PathLike[str],
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    root = Path(directory)
    try:
        cert = x509.load_pem_x509_certificate((root / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((root / CA_KEY).read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise InvalidArgument(
            f"no CA in {root}: {exc.filename} is missing (create one with 'clusterctl certs init')"
        ) from None
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(f"cannot load the CA in {root}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidArgument(f"the CA key in {root / CA_KEY} is not an ECDSA key")
    return cert, key


def issue(
    directory: str | os.PathLike[str],
    name: str,
    *,
    server: bool,
    hosts: Iterable[str] = (),
    days: int = DEFAULT_DAYS,
) -> Issued:
    """Issue `name`.pem / `name`-key.pem signed by the CA in `directory`.

    A server certificate (coordinator, nodes) may also be used as a client certificate, since
    daemons dial each other; it names LOCAL_HOSTS and `hosts`. Client certificates name none.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    ca_cert, ca_key = _load_ca(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _validity(days)
    end = min(end, ca_cert.not_valid_after_utc)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    sans: tuple[str, ...] = ()
    if server:
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
        sans = tuple(dict.fromkeys([*LOCAL_HOSTS, *(check_host(h) for h in hosts)]))
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(_san(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    issued = Issued(name, cert_path(directory, name), key_path(directory, name), server, sans)
    _write(issued.key, _key_bytes(key), 0o600)
    _write(issued.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return issued


def cluster_names(nodes: int, workers: int) -> list[tuple[str, bool]]:
    """(name, is a server) of every certificate `init_cluster` writes."""
    return [
        (COORDINATOR, True),
        *((f"node-{i}", True) for i in range(1, nodes + 1)),
        *((f"worker-{i}", False) for i in range(1, workers + 1)),
        (CLIENT, False),
    ]


def init_cluster(
    directory: str | os.PathLike[str],
    *,
    nodes: int,
    workers: int,
    hosts: Iterable[str] = (),
    days: int = DEFAULT_DAYS,
    force: bool = False,
) -> list[Path]:
    """Create a CA and the certificates of a cluster; returns the files written.

    Refuses (InvalidArgument) when any file it would write exists, unless `force`.
    """
    hosts = [check_host(h) for h in hosts]
    names = cluster_names(nodes, workers)
    root = Path(directory)
    targets = [root / CA_CERT, root / CA_KEY]
    for name, _server in names:
        targets += [cert_path(root, name), key_path(root, name)]
    existing = [path for path in targets if path.exists()]
    if existing and not force:
        what = "a CA" if (root / CA_CERT).exists() or (root / CA_KEY).exists() else "certificates"
        raise InvalidArgument(
            f"{root} already holds {what} ({existing[0].name}); pass --force to replace it "
            "(every daemon and client then needs the new files)"
        )
    written = list(create_ca(root))
    for name, server in names:
        issued = issue(root, name, server=server, hosts=hosts, days=days)
        written += [issued.cert, issued.key]
    return written


def ensure_cluster_certs(
    directory: str | os.PathLike[str], names: Iterable[tuple[str, bool]]
) -> None:
    """Create the CA in `directory` if missing and issue every missing certificate in
    `names` (name, is a server); existing files are kept (the local cluster uses this)."""
    root = Path(directory)
    if not (root / CA_CERT).exists():
        create_ca(root)
    for name, server in names:
        if not cert_path(root, name).exists() or not key_path(root, name).exists():
            issue(root, name, server=server)
