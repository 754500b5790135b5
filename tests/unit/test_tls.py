"""TLS files: `clusterctl certs` output (chains, SANs, key modes, refusals), `load_tls`
checks, the daemons' --tls-* settings, the SDK's TLS arguments and the error hints."""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from shoal.client.async_client import client_transport
from shoal.client.cli import certs
from shoal.client.cli.main import main as clusterctl
from shoal.common.config import resolve
from shoal.common.errors import ConfigError, InvalidArgument
from shoal.common.tls import TlsFiles, load_tls, tls_failure
from shoal.common.transport import Transport
from shoal.coordinator.config import CoordinatorConfig
from shoal.storage_node.config import NodeConfig
from shoal.worker.config import WorkerConfig


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SHOAL_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tls") / "certs"
    certs.init_cluster(root, nodes=2, workers=1, hosts=["10.0.0.7", "shoal.example.com"])
    return root


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def names_of(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} | set(
        san.get_values_for_type(x509.DNSName)
    )


def usages(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def files(root: Path, name: str) -> tuple[str, str, str]:
    return str(root / f"{name}.pem"), str(root / f"{name}-key.pem"), str(root / "ca.pem")


def test_init_writes_a_ca_and_one_pair_per_daemon(tls_dir: Path) -> None:
    expected = {"ca.pem", "ca-key.pem"}
    for name in ("coordinator", "node-1", "node-2", "worker-1", "client"):
        expected |= {f"{name}.pem", f"{name}-key.pem"}
    assert {p.name for p in tls_dir.iterdir()} == expected
    for path in tls_dir.iterdir():
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o600 if path.name.endswith("-key.pem") else 0o644), path.name


def test_every_certificate_is_signed_by_the_ca(tls_dir: Path) -> None:
    ca = load(tls_dir / "ca.pem")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for path in tls_dir.glob("*.pem"):
        if path.name.startswith("ca") or path.name.endswith("-key.pem"):
            continue
        cert = load(path)
        cert.verify_directly_issued_by(ca)  # raises if not
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        # And the key file belongs to it (load_tls checks the whole set).
        assert load_tls(*files(tls_dir, path.stem)) is not None


def test_server_certificates_name_local_and_given_hosts(tls_dir: Path) -> None:
    wanted = {"127.0.0.1", "::1", "localhost", "10.0.0.7", "shoal.example.com"}
    for name in ("coordinator", "node-1", "node-2"):
        cert = load(tls_dir / f"{name}.pem")
        assert names_of(cert) == wanted
        assert usages(cert) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    san = load(tls_dir / "node-1.pem").extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert ipaddress.ip_address("10.0.0.7") in san.value.get_values_for_type(x509.IPAddress)
    for name in ("worker-1", "client"):
        cert = load(tls_dir / f"{name}.pem")
        assert names_of(cert) == set()
        assert usages(cert) == {ExtendedKeyUsageOID.CLIENT_AUTH}


def test_init_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    certs.init_cluster(tmp_path, nodes=1, workers=0)
    before = (tmp_path / "ca.pem").read_bytes()
    with pytest.raises(InvalidArgument, match=r"already holds a CA.*--force"):
        certs.init_cluster(tmp_path, nodes=1, workers=0)
    assert (tmp_path / "ca.pem").read_bytes() == before
    certs.init_cluster(tmp_path, nodes=1, workers=0, force=True)
    assert (tmp_path / "ca.pem").read_bytes() != before
    assert stat.S_IMODE((tmp_path / "ca-key.pem").stat().st_mode) == 0o600


def test_issue_adds_a_certificate_with_the_existing_ca(tls_dir: Path, tmp_path: Path) -> None:
    issued = certs.issue(tls_dir, "node-9", server=True, hosts=["10.0.0.9"])
    try:
        load(issued.cert).verify_directly_issued_by(load(tls_dir / "ca.pem"))
        assert "10.0.0.9" in names_of(load(issued.cert))
        assert stat.S_IMODE(issued.key.stat().st_mode) == 0o600
    finally:
        issued.cert.unlink()
        issued.key.unlink()
    with pytest.raises(InvalidArgument, match="no CA in"):
        certs.issue(tmp_path, "node-1", server=True)


@pytest.mark.parametrize("host", ["", "bad host", "a..b", "x" * 64 + ".com"])
def test_hosts_must_be_names_or_addresses(host: str) -> None:
    with pytest.raises(InvalidArgument, match="--host"):
        certs.check_host(host)


def test_hosts_are_normalized() -> None:
    assert certs.check_host("[::1]") == "::1"
    assert certs.check_host("Node-1.Example.COM") == "node-1.example.com"
    assert certs.check_host(" 10.0.0.1 ") == "10.0.0.1"


def test_clusterctl_certs_init(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "tls"
    argv = ["certs", "init", str(target), "--nodes", "2", "--workers", "0", "--host", "10.1.1.1"]
    assert clusterctl(argv) == 0
    out = capsys.readouterr().out
    assert f"wrote {target / 'ca-key.pem'} (0600)" in out
    assert f"wrote {target / 'node-2.pem'} (0644)" in out
    assert "10.1.1.1" in out
    assert clusterctl(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "already holds a CA" in err
    assert clusterctl([*argv, "--force"]) == 0
    assert clusterctl(["certs", "issue", str(target), "node-3", "--host", "10.1.1.3"]) == 0
    assert "10.1.1.3" in capsys.readouterr().out
    assert clusterctl(["certs", "issue", str(target), "node-3"]) == 1
    assert "already exists" in capsys.readouterr().err


def test_up_tls_is_not_taken_for_a_global_tls_flag() -> None:
    from shoal.client.cli.main import build_parser

    args = build_parser().parse_args(["up", "--tls", "--nodes", "3"])
    assert args.tls is True
    assert args.tls_ca is None
    args = build_parser().parse_args(["--tls-ca", "ca.pem", "ls"])
    assert args.tls_ca == "ca.pem"


def test_load_tls_off_when_nothing_is_given() -> None:
    assert load_tls("", "", "") is None


def test_load_tls_needs_all_three(tls_dir: Path) -> None:
    cert, _key, ca = files(tls_dir, "node-1")
    with pytest.raises(ConfigError, match="'tls_key' missing while 'tls_cert' and 'tls_ca'"):
        load_tls(cert, "", ca)


def test_load_tls_names_the_unreadable_file(tls_dir: Path, tmp_path: Path) -> None:
    cert, key, _ca = files(tls_dir, "node-1")
    with pytest.raises(ConfigError, match=r"cannot read 'tls_ca' file .*nope.pem"):
        load_tls(cert, key, str(tmp_path / "nope.pem"))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"'tls_cert' file .* holds no PEM certificate"):
        load_tls(str(garbage), key, str(tls_dir / "ca.pem"))
    with pytest.raises(ConfigError, match=r"'tls_key' file .* no PEM private key"):
        load_tls(cert, str(garbage), str(tls_dir / "ca.pem"))


def test_load_tls_rejects_a_key_of_another_certificate(tls_dir: Path) -> None:
    cert, _key, ca = files(tls_dir, "node-1")
    _cert2, key2, _ca = files(tls_dir, "node-2")
    with pytest.raises(ConfigError, match=r"'tls_key' file .* is not the key of the certificate"):
        load_tls(cert, key2, ca)


def test_load_tls_rejects_a_certificate_of_another_ca(tls_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    certs.init_cluster(other, nodes=1, workers=0)
    cert, key, _ca = files(other, "node-1")
    with pytest.raises(ConfigError, match=r"'tls_cert' file .* is not signed by the CA"):
        load_tls(cert, key, str(tls_dir / "ca.pem"))


def test_load_tls_rejects_an_expired_certificate(tls_dir: Path) -> None:
    issued = certs.issue(tls_dir, "expired", server=False, days=0)
    try:
        with pytest.raises(ConfigError, match=r"'tls_cert' file .* expired on"):
            load_tls(str(issued.cert), str(issued.key), str(tls_dir / "ca.pem"))
    finally:
        issued.cert.unlink()
        issued.key.unlink()


@pytest.mark.parametrize("config", [CoordinatorConfig, NodeConfig, WorkerConfig])
def test_daemons_take_tls_settings_from_flags_and_env(tls_dir: Path, config: type) -> None:
    cert, key, ca = files(tls_dir, "node-1")
    required = {} if config is WorkerConfig else {"data_dir": "/srv/shoal"}
    settings = resolve(
        config,
        file_values=required,
        env={"SHOAL_TLS_CERT": cert, "SHOAL_TLS_KEY": key},
        flags={"tls_ca": ca},
    )
    transport = Transport.from_config(settings)
    assert isinstance(transport.tls, TlsFiles)
    assert (transport.tls.cert_path, transport.tls.key_path, transport.tls.ca_path) == files(
        tls_dir, "node-1"
    )
    partial = resolve(config, file_values=required, flags={"tls_cert": cert})
    with pytest.raises(ConfigError, match="incomplete TLS settings"):
        Transport.from_config(partial)
    assert Transport.from_config(resolve(config, file_values=required)).tls is None


def test_sdk_tls_arguments_and_environment(
    tls_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key, ca = files(tls_dir, "client")
    assert client_transport(None, None, None, None).tls is None
    by_argument = client_transport("", cert, key, ca)
    assert by_argument.tls is not None
    assert by_argument.tls.cert_path == cert
    monkeypatch.setenv("SHOAL_TLS_CERT", cert)
    monkeypatch.setenv("SHOAL_TLS_KEY", key)
    monkeypatch.setenv("SHOAL_TLS_CA", ca)
    from_env = client_transport(None, None, None, None)
    assert from_env.tls is not None
    assert from_env.tls.ca_path == ca
    # "" turns TLS off even when the environment sets it.
    assert client_transport(None, "", "", "").tls is None
    monkeypatch.delenv("SHOAL_TLS_KEY")
    with pytest.raises(InvalidArgument, match="'SHOAL_TLS_KEY' missing"):
        client_transport(None, None, None, None)


@pytest.mark.parametrize(
    ("details", "tls", "fragment"),
    [
        ("ipv4:127.0.0.1:7000: Socket closed", False, "if the cluster uses TLS, pass"),
        ("ipv4:127.0.0.1:7000: Socket closed", True, "client's certificate signed"),
        (
            "Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: "
            "error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED",
            True,
            "not signed by the CA",
        ),
        ("SSL_ERROR_SSL: ... WRONG_VERSION_NUMBER", True, "does not use TLS"),
        ("UNAUTHENTICATED: Hostname Verification Check failed.", True, "does not name the"),
        ("Failed to connect to remote host: Connection refused", False, ""),
    ],
)
def test_connection_failures_that_look_like_tls_get_a_hint(
    details: str, tls: bool, fragment: str
) -> None:
    hint = tls_failure(details, tls=tls)
    if fragment:
        assert fragment in hint
    else:
        assert hint == ""
