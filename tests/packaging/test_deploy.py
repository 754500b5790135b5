"""Deployment files cannot drift from the code: every command line, flag, setting and
environment variable used in deploy/ must exist in the daemons' real --help and configs."""

from __future__ import annotations

import dataclasses
import functools
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from shoal.common.config import env_name, resolve
from shoal.coordinator.config import CoordinatorConfig
from shoal.storage_node.config import NodeConfig
from shoal.worker.config import WorkerConfig

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROGRAMS = {
    "shoal-coordinator": ["-m", "shoal.coordinator"],
    "shoal-node": ["-m", "shoal.storage_node"],
    "shoal-worker": ["-m", "shoal.worker"],
    "clusterctl": ["-m", "shoal.client.cli"],
}


@functools.cache
def help_text(program: str, subcommand: str = "") -> str:
    args = [sys.executable, *PROGRAMS[program], *([subcommand] if subcommand else []), "--help"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def systemd_commands() -> list[list[str]]:
    commands = []
    for unit in sorted((DEPLOY / "systemd").glob("*.service")):
        for line in unit.read_text().splitlines():
            if line.startswith("ExecStart="):
                commands.append(shlex.split(line.removeprefix("ExecStart=")))
    return commands


def compose_commands() -> list[list[str]]:
    compose = yaml.safe_load((DEPLOY / "docker" / "compose.yaml").read_text())
    commands = []
    for service in compose["services"].values():
        commands.append([str(part) for part in service["command"]])
        test = service.get("healthcheck", {}).get("test", [])
        if test[:1] == ["CMD"] and test[1] in PROGRAMS:
            commands.append([str(part) for part in test[1:]])
    return commands


def kubernetes_documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "shoal.yaml").read_text()) if d]


def kubernetes_commands() -> list[list[str]]:
    commands = []
    for document in kubernetes_documents():
        template = document.get("spec", {}).get("template", {}).get("spec", {})
        for container in template.get("containers", []):
            commands.append([*container.get("command", []), *container.get("args", [])])
    return commands


ALL = (
    [("systemd", c) for c in systemd_commands()]
    + [("compose", c) for c in compose_commands()]
    + [("kubernetes", c) for c in kubernetes_commands()]
)


def test_deploy_files_have_commands_for_every_daemon() -> None:
    programs = {Path(command[0]).name for _where, command in ALL}
    assert {"shoal-coordinator", "shoal-node", "shoal-worker"} <= programs
    assert len(ALL) >= 12


@pytest.mark.parametrize(
    ("where", "command"), ALL, ids=[f"{w}-{i}" for i, (w, _c) in enumerate(ALL)]
)
def test_every_flag_exists_in_the_real_help(where: str, command: list[str]) -> None:
    program = Path(command[0]).name
    assert program in PROGRAMS, f"{where}: unknown program {command[0]!r}"
    subcommand = command[1] if program == "clusterctl" else ""
    text = help_text(program, subcommand)
    flags = {part.split("=", 1)[0] for part in command[1:] if part.startswith("--")}
    assert flags, f"{where}: {command} passes no flags"
    missing = sorted(
        flag for flag in flags if not re.search(rf"(^|[\s,[]){re.escape(flag)}\b", text)
    )
    assert not missing, f"{where}: {program} has no {missing} (per its --help)"


def _check_toml(cls: type[Any], text: str, name: str) -> None:
    values = tomllib.loads(text)
    values.setdefault("data_dir", "/tmp/x")
    resolve(cls, file_values=values, file_name=name)  # raises ConfigError on unknown keys


def test_example_config_files_use_real_settings() -> None:
    _check_toml(CoordinatorConfig, (DEPLOY / "coordinator.toml").read_text(), "coordinator.toml")
    _check_toml(NodeConfig, (DEPLOY / "node.toml").read_text(), "node.toml")
    config_maps = [d for d in kubernetes_documents() if d["kind"] == "ConfigMap"]
    assert config_maps
    for config_map in config_maps:
        _check_toml(
            CoordinatorConfig, config_map["data"]["coordinator.toml"], "ConfigMap coordinator.toml"
        )
        _check_toml(NodeConfig, config_map["data"]["node.toml"], "ConfigMap node.toml")


def test_environment_file_names_real_settings() -> None:
    known = {
        env_name(field.name)
        for cls in (CoordinatorConfig, NodeConfig, WorkerConfig)
        for field in dataclasses.fields(cls)
    }
    names = re.findall(
        r"^#?\s*(SHOAL_[A-Z_]+)=", (DEPLOY / "systemd" / "shoal.env").read_text(), re.M
    )
    assert names
    assert not sorted(set(names) - known)


def test_units_restart_on_failure_and_harden() -> None:
    for unit in sorted((DEPLOY / "systemd").glob("*.service")):
        text = unit.read_text()
        for required in ("Restart=on-failure", "EnvironmentFile=", "NoNewPrivileges=yes",
                         "ProtectSystem=strict", "KillSignal=SIGTERM"):  # fmt: skip
            assert required in text, f"{unit.name} lacks {required}"


def test_compose_runs_one_coordinator_six_nodes_two_workers_with_volumes_and_checks() -> None:
    compose = yaml.safe_load((DEPLOY / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    programs = [service["command"][0] for service in services.values()]
    assert programs.count("shoal-coordinator") == 1
    assert programs.count("shoal-node") == 6
    assert programs.count("shoal-worker") == 2
    assert all("healthcheck" in service for service in services.values())
    nodes = [s for s in services.values() if s["command"][0] in ("shoal-node", "shoal-coordinator")]
    assert all(service.get("volumes") for service in nodes)
