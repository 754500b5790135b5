"""deploy/ passes the checks an operator would run before installing it:

- `systemd-analyze verify` on each unit in deploy/systemd, with no warning about it, and a
  `systemd-analyze security` exposure rated OK;
- `kubernetes-validate --strict` on deploy/kubernetes/*.yaml (bundled schemas, offline), for
  the oldest Kubernetes the manifests need (1.27: gRPC probes are GA) and the newest the
  validator ships;

plus the contents the deployment issue asks for: restart on failure, hardening and an
environment file in the units; node and coordinator StatefulSets with volumes, a worker
Deployment, Services, a ConfigMap and a Secret for the token in the manifests.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
# The units run the daemons from /opt/shoal/bin (a virtual environment there); the test runs
# them from this environment's bin directory, which holds the same entry points.
INSTALL_BIN = "/opt/shoal/bin/"
BIN = Path(sys.executable).parent
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (package systemd)"
)
HARDENING = (
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectControlGroups=yes",
    "RestrictSUIDSGID=yes",
    "LockPersonality=yes",
    "CapabilityBoundingSet=",
    "SystemCallFilter=@system-service",
)
MAX_EXPOSURE = 2.0  # systemd-analyze security: up to 4.9 is "OK"; ours are about 1.3-1.8
TIMEOUT_S = 60


def unit_settings(unit: Path) -> dict[str, list[str]]:
    """Key -> values of the unit's [Service] section."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in unit.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def installed_copy(unit: Path, directory: Path) -> Path:
    """The unit with ExecStart pointing at this environment's entry points.

    `systemd-analyze verify` checks that each ExecStart program exists and is executable, so
    the copy runs the same daemon, with the same arguments, from the test's installation.
    """
    text = unit.read_text()
    assert f"ExecStart={INSTALL_BIN}" in text, f"{unit.name}: ExecStart is not in {INSTALL_BIN}"
    program = shlex.split(unit_settings(unit)["ExecStart"][0])[0].removeprefix(INSTALL_BIN)
    assert (BIN / program).is_file(), f"no {program} entry point in {BIN}"
    assert not re.search(r"\s", str(BIN)), f"{BIN} has whitespace; ExecStart would split it"
    copy = directory / unit.name
    copy.write_text(text.replace(INSTALL_BIN, f"{BIN}/"))
    return copy


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run(
        [
            SYSTEMD_ANALYZE,
            "verify",
            "--man=no",  # Documentation= is a URL, not a man page, and man may be absent
            "--generators=no",
            "--recursive-errors=no",  # only this unit, not the host's targets it orders after
            str(unit),
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def about(unit: Path, output: str) -> list[str]:
    """The lines of systemd-analyze's output that concern `unit`."""
    return [line for line in output.splitlines() if unit.name in line or str(unit) in line]


def test_there_is_a_unit_per_daemon() -> None:
    assert [u.name for u in UNITS] == [
        "shoal-coordinator.service",
        "shoal-node.service",
        "shoal-worker.service",
    ]


@needs_systemd_analyze
@pytest.mark.parametrize("unit", UNITS, ids=[u.stem for u in UNITS])
def test_systemd_analyze_verify_passes_without_warnings(unit: Path, tmp_path: Path) -> None:
    copy = installed_copy(unit, tmp_path)
    result = verify(copy)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert not about(copy, output), output


@needs_systemd_analyze
def test_verify_reports_what_this_test_looks_for(tmp_path: Path) -> None:
    """A misspelt setting only warns (exit 0): the test above must, and does, read the output."""
    copy = installed_copy(DEPLOY / "systemd" / "shoal-node.service", tmp_path)
    copy.write_text(copy.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict"))
    result = verify(copy)
    assert any("ProtectSytem" in line for line in about(copy, result.stdout + result.stderr))


@needs_systemd_analyze
@pytest.mark.parametrize("unit", UNITS, ids=[u.stem for u in UNITS])
def test_units_are_hardened_per_systemd_analyze_security(unit: Path, tmp_path: Path) -> None:
    copy = installed_copy(unit, tmp_path)
    assert SYSTEMD_ANALYZE is not None
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=yes", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    if "--offline" in result.stderr and "unrecognized" in result.stderr:
        pytest.skip("this systemd-analyze cannot analyse unit files offline (systemd < 250)")
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


@pytest.mark.parametrize("unit", UNITS, ids=[u.stem for u in UNITS])
def test_units_restart_harden_and_read_the_environment_file(unit: Path) -> None:
    settings = unit_settings(unit)
    assert settings["Restart"] == ["on-failure"]
    assert settings["EnvironmentFile"] == ["-/etc/shoal/shoal.env"]
    assert settings["User"] == ["shoal"]
    text = unit.read_text()
    missing = [option for option in HARDENING if f"\n{option}\n" not in text]
    assert not missing, f"{unit.name} lacks {missing}"
    # ProtectSystem=strict makes everything read-only but these: the daemon's own directory.
    command = shlex.split(settings["ExecStart"][0])
    if "--data-dir" in command:
        data_dir = command[command.index("--data-dir") + 1]
        assert settings["ReadWritePaths"] == [data_dir]
        assert settings["StateDirectory"] == [data_dir.removeprefix("/var/lib/")]
    else:  # the worker: its tasks' working directory
        assert settings["ReadWritePaths"] == settings["WorkingDirectory"]


# Kubernetes


def kubernetes_versions() -> list[str]:
    from kubernetes_validate.utils import all_versions  # type: ignore[import-untyped]

    shipped = all_versions()
    oldest = next((v for v in shipped if tuple(map(int, v.split(".")[:2])) >= (1, 27)), None)
    assert oldest is not None, f"kubernetes-validate ships no schemas for 1.27+: {shipped}"
    return sorted({oldest, shipped[-1]})


def documents() -> list[dict[str, Any]]:
    return [d for path in MANIFESTS for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("version", kubernetes_versions())
def test_kubernetes_validate_strict(version: str) -> None:
    program = BIN / "kubernetes-validate"
    assert program.is_file(), "kubernetes-validate is a dev dependency: pip install -e '.[dev]'"
    result = subprocess.run(
        [str(program), "--strict", "--kubernetes-version", version, *map(str, MANIFESTS)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    lines = output.splitlines()
    assert not [line for line in lines if not line.startswith("INFO ")], output
    passed = {m.group(1) for m in re.finditer(r"passed for resource (\S+) against", output)}
    expected = {f"{d['kind'].lower()}/{d['metadata']['name']}" for d in documents()}
    assert passed == expected, output


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents() if d["kind"] == kind}


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def flag(workload: dict[str, Any], name: str) -> str:
    args = [*container(workload).get("command", []), *container(workload).get("args", [])]
    assert name in args, f"{workload['metadata']['name']} has no {name}"
    value: str = args[args.index(name) + 1]
    return value


def mounted_at(workload: dict[str, Any], path: str) -> str:
    """The volume name mounted at the directory holding `path` (or at `path`)."""
    for mount in container(workload).get("volumeMounts", []):
        if path == mount["mountPath"] or path.startswith(mount["mountPath"].rstrip("/") + "/"):
            name: str = mount["name"]
            return name
    raise AssertionError(f"nothing mounted at {path} in {workload['metadata']['name']}")


def test_manifests_hold_what_the_deployment_needs() -> None:
    stateful, deployments = by_kind("StatefulSet"), by_kind("Deployment")
    services, config_maps, secrets = by_kind("Service"), by_kind("ConfigMap"), by_kind("Secret")
    programs = {name: container(w)["command"][0] for name, w in {**stateful, **deployments}.items()}
    assert sorted(programs.values()) == ["shoal-coordinator", "shoal-node", "shoal-worker"]
    coordinator = next(w for n, w in stateful.items() if programs[n] == "shoal-coordinator")
    nodes = next(w for n, w in stateful.items() if programs[n] == "shoal-node")
    worker = next(w for n, w in deployments.items() if programs[n] == "shoal-worker")

    assert coordinator["spec"]["replicas"] == 1
    assert nodes["spec"]["replicas"] >= 6  # the default (4, 6) needs 6 nodes
    for workload in (coordinator, nodes):  # data on a PersistentVolumeClaim per pod
        claims = {c["metadata"]["name"] for c in workload["spec"]["volumeClaimTemplates"]}
        assert mounted_at(workload, flag(workload, "--data-dir")) in claims
        assert workload["spec"]["serviceName"] in services
        security = workload["spec"]["template"]["spec"]["securityContext"]
        assert security["runAsNonRoot"] is True
        assert security["fsGroup"]  # makes the volume writable without root
    assert services[nodes["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"  # pod DNS

    # Settings from the ConfigMap, the token from the Secret, for every daemon.
    (config_map,) = config_maps.values()
    (secret,) = secrets.values()
    for workload in (coordinator, nodes, worker):
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        token = volumes[mounted_at(workload, flag(workload, "--cluster-token-file"))]
        assert token["secret"]["secretName"] == secret["metadata"]["name"]
        assert Path(flag(workload, "--cluster-token-file")).name in secret["stringData"]
    for workload in (coordinator, nodes):
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        config = flag(workload, "--config")
        source = volumes[mounted_at(workload, config)]["configMap"]["name"]
        assert source == config_map["metadata"]["name"]
        assert Path(config).name in config_map["data"]
    # Clients and nodes reach the coordinator through its Service.
    address = flag(nodes, "--coordinator")
    assert address == flag(worker, "--coordinator")
    host, port = address.rsplit(":", 1)
    service = services[host]
    assert int(port) in [p["port"] for p in service["spec"]["ports"]]
    assert service["spec"]["selector"] == coordinator["spec"]["selector"]["matchLabels"]
