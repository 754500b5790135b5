"""Daemon config: defaults < TOML file < SHOAL_* env < flags, with errors naming key and source."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from shoal.common.config import env_name, load_config, read_toml, resolve, setting, to_toml
from shoal.common.errors import ConfigError
from shoal.common.units import KiB, MiB
from shoal.coordinator.config import CoordinatorConfig
from shoal.storage_node.config import NodeConfig

DATA = {"data_dir": "/srv/shoal"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SHOAL_* variable of the surrounding shell leaks into load_config."""
    for name in list(os.environ):
        if name.startswith("SHOAL_"):
            monkeypatch.delenv(name)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    env["COLUMNS"] = "200"
    return env


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# --- resolve: layers and precedence ---------------------------------------------------------


def test_defaults_apply_when_nothing_is_given() -> None:
    config = resolve(NodeConfig, file_values=DATA, file_name="f.toml")
    assert config.listen == "127.0.0.1:7100"
    assert config.heartbeat_interval == 1.0
    assert config.capacity == 0
    assert config.log_format == "text"


def test_precedence_defaults_file_env_flags() -> None:
    file_values = {
        "data_dir": "/file",
        "zone": "file-zone",
        "heartbeat_interval": "2s",
        "rpc_timeout": "20s",
    }
    env = {"SHOAL_ZONE": "env-zone", "SHOAL_HEARTBEAT_INTERVAL": "3s", "SHOAL_CAPACITY": "1GiB"}
    flags = {"heartbeat_interval": "4s", "zone": None, "capacity": None}
    config = resolve(NodeConfig, file_values=file_values, file_name="n.toml", env=env, flags=flags)
    assert config.data_dir == "/file"  # file only
    assert config.rpc_timeout == 20.0  # file only
    assert config.zone == "env-zone"  # env beats file; a None flag means "not given"
    assert config.capacity == 1024**3  # env only
    assert config.heartbeat_interval == 4.0  # flag beats env and file
    assert config.shutdown_grace == 5.0  # default


def test_env_without_file_and_flags() -> None:
    config = resolve(NodeConfig, env={"SHOAL_DATA_DIR": "/env", "SHOAL_LOG_LEVEL": "DEBUG"})
    assert config.data_dir == "/env"
    assert config.log_level == "DEBUG"


def test_dashed_toml_keys_are_accepted() -> None:
    config = resolve(
        NodeConfig, file_values={"data-dir": "/d", "heartbeat-interval": "250ms"}, file_name="f"
    )
    assert config.data_dir == "/d"
    assert config.heartbeat_interval == pytest.approx(0.25)


def test_unknown_toml_key_names_key_and_file() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'heartbeat_intervall' in /etc/node\.toml"):
        resolve(
            NodeConfig, file_values={**DATA, "heartbeat_intervall": 1}, file_name="/etc/node.toml"
        )


@pytest.mark.parametrize(
    ("layer", "key", "raw", "source"),
    [
        ("file", "heartbeat_interval", "abc", "node.toml"),
        ("file", "capacity", "12XB", "node.toml"),
        ("env", "heartbeat_interval", "abc", "environment variable SHOAL_HEARTBEAT_INTERVAL"),
        ("env", "capacity", "12XB", "environment variable SHOAL_CAPACITY"),
        ("flags", "capacity", "12XB", "flag --capacity"),
        ("flags", "rpc_timeout", "soon", "flag --rpc-timeout"),
        ("file", "log_level", "LOUD", "node.toml"),
        ("file", "listen", 7100, "node.toml"),
        ("file", "capacity", True, "node.toml"),
        ("file", "capacity", 1.5, "node.toml"),
        ("env", "log_format", "xml", "environment variable SHOAL_LOG_FORMAT"),
    ],
)
def test_invalid_value_names_key_and_source(layer: str, key: str, raw: object, source: str) -> None:
    file_values: dict[str, object] = dict(DATA)
    env: dict[str, str] = {}
    flags: dict[str, object] = {}
    if layer == "file":
        file_values[key] = raw
    elif layer == "env":
        env[env_name(key)] = str(raw)
    else:
        flags[key] = raw
    with pytest.raises(ConfigError) as info:
        resolve(NodeConfig, file_values=file_values, file_name="node.toml", env=env, flags=flags)
    message = str(info.value)
    assert f"'{key}'" in message
    assert source in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("cls", "key", "raw"),
    [(NodeConfig, "heartbeat_interval", True), (CoordinatorConfig, "default_k", 4.7)],
    ids=["bool-as-duration", "float-as-int"],
)
def test_wrongly_typed_toml_values_are_rejected(cls: type, key: str, raw: object) -> None:
    with pytest.raises(ConfigError, match=key):
        resolve(cls, file_values={**DATA, key: raw}, file_name="f.toml")


def test_range_error_names_its_source() -> None:
    with pytest.raises(ConfigError, match="SHOAL_HEARTBEAT_INTERVAL"):
        resolve(
            NodeConfig, file_values=DATA, file_name="f.toml", env={"SHOAL_HEARTBEAT_INTERVAL": "0"}
        )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("4MiB", 4 * MiB),
        ("4 mib", 4 * MiB),
        ("100GB", 100 * 1000**3),
        ("1024", 1024),
        (2048, 2048),
        ("1.5KiB", 1536),
    ],
)
def test_sizes_parse(raw: object, expected: int) -> None:
    config = resolve(NodeConfig, file_values={**DATA, "capacity": raw}, file_name="f")
    assert config.capacity == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("15m", 900.0),
        ("300ms", 0.3),
        ("2.5s", 2.5),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("7", 7.0),
        (3, 3.0),
        (0.5, 0.5),
    ],
)
def test_durations_parse(raw: object, expected: float) -> None:
    config = resolve(CoordinatorConfig, file_values={**DATA, "delete_grace": raw}, file_name="f")
    assert config.delete_grace == pytest.approx(expected)


def test_stripe_bytes_accepts_units() -> None:
    config = resolve(CoordinatorConfig, env={"SHOAL_DATA_DIR": "/d", "SHOAL_STRIPE_BYTES": "64KiB"})
    assert config.stripe_bytes == 64 * KiB


@dataclasses.dataclass(frozen=True)
class _Flags:
    """A config with a boolean (neither daemon has one yet)."""

    verbose: bool = setting(False, "talk more")


@dataclasses.dataclass(frozen=True)
class _WithSecret:
    token: str = setting("", "cluster secret", secret=True)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("YES", True),
        ("on", True),
        ("1", True),
        (True, True),
        ("false", False),
        ("No", False),
        ("off", False),
        ("0", False),
        (False, False),
    ],
)
def test_booleans_parse(raw: object, expected: bool) -> None:
    assert resolve(_Flags, file_values={"verbose": raw}, file_name="f").verbose is expected
    if isinstance(raw, str):
        assert resolve(_Flags, env={"SHOAL_VERBOSE": raw}).verbose is expected


def test_bad_boolean_names_key_and_source() -> None:
    with pytest.raises(ConfigError, match=r"'verbose' in environment variable SHOAL_VERBOSE"):
        resolve(_Flags, env={"SHOAL_VERBOSE": "maybe"})


def test_boolean_flag_is_tri_state() -> None:
    config, _ = load_config(_Flags, ["--verbose"], prog="t", description="t")
    assert config.verbose is True
    config, _ = load_config(_Flags, ["--no-verbose"], prog="t", description="t")
    assert config.verbose is False
    config, _ = load_config(_Flags, [], prog="t", description="t")
    assert config.verbose is False


@pytest.mark.parametrize("cls", [NodeConfig, CoordinatorConfig])
def test_missing_data_dir_is_rejected(cls: type) -> None:
    with pytest.raises(ConfigError, match="data_dir"):
        resolve(cls)


@pytest.mark.parametrize(
    ("cls", "values", "key"),
    [
        (NodeConfig, {"listen": "7100"}, "listen"),
        (NodeConfig, {"node_id": "bad id!"}, "node_id"),
        (NodeConfig, {"capacity": -1}, "capacity"),
        (NodeConfig, {"heartbeat_interval": 0}, "heartbeat_interval"),
        (CoordinatorConfig, {"default_k": 6, "default_n": 6}, "default_k"),
        (CoordinatorConfig, {"default_k": 4, "default_n": 300}, "default_n"),
        (CoordinatorConfig, {"stripe_bytes": "1KiB"}, "stripe_bytes"),
        (CoordinatorConfig, {"heartbeat_timeout": "0s"}, "heartbeat_timeout"),
    ],
)
def test_validate_rejects_unworkable_settings(
    cls: type, values: dict[str, object], key: str
) -> None:
    with pytest.raises(ConfigError, match=key):
        resolve(cls, file_values={**DATA, **values}, file_name="f.toml")


# --- load_config: files, env, flags ---------------------------------------------------------


def test_load_config_reads_file_env_and_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(
        tmp_path / "node.toml",
        'data_dir = "/from-file"\nzone = "file"\nheartbeat_interval = "2s"\ncapacity = "1MiB"\n',
    )
    monkeypatch.setenv("SHOAL_ZONE", "env")
    monkeypatch.setenv("SHOAL_HEARTBEAT_INTERVAL", "3s")
    config, args = load_config(
        NodeConfig, ["--config", path, "--heartbeat-interval", "300ms"], prog="n", description="d"
    )
    assert args.config == path
    assert config.data_dir == "/from-file"
    assert config.capacity == MiB
    assert config.zone == "env"
    assert config.heartbeat_interval == pytest.approx(0.3)


def test_load_config_finds_file_through_shoal_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = _write(tmp_path / "env.toml", 'data_dir = "/env-file"\n')
    flag_file = _write(tmp_path / "flag.toml", 'data_dir = "/flag-file"\n')
    monkeypatch.setenv("SHOAL_CONFIG", env_file)
    config, _ = load_config(CoordinatorConfig, [], prog="c", description="d")
    assert config.data_dir == "/env-file"
    config, _ = load_config(CoordinatorConfig, ["--config", flag_file], prog="c", description="d")
    assert config.data_dir == "/flag-file"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bogus = 1\n", "unknown key 'bogus'"),
        ("data_dir = \n", "cannot read config file"),
        (None, "config file not found"),
    ],
)
def test_load_config_file_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | None, expected: str
) -> None:
    path = tmp_path / "node.toml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(SystemExit) as info:
        load_config(
            NodeConfig,
            ["--data-dir", "/d", "--config", str(path)],
            prog="shoal-node",
            description="d",
        )
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("shoal-node: error: ")
    assert expected in err
    assert str(path) in err
    assert len(err.strip().splitlines()) == 1


def test_to_toml_round_trips_and_redacts_secrets() -> None:
    config = resolve(
        NodeConfig, file_values={**DATA, "capacity": "2GiB", "zone": 'r"1\\x'}, file_name="f"
    )
    parsed = tomllib.loads(to_toml(config))
    assert resolve(NodeConfig, file_values=parsed, file_name="printed") == config
    rendered = to_toml(resolve(_WithSecret, env={"SHOAL_TOKEN": "hunter2"}))
    assert "hunter2" not in rendered
    assert 'token = "<redacted>"' in rendered


def test_read_toml_parses_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.toml", 'listen = "0.0.0.0:1"\ndefault_k = 3\n')
    assert read_toml(path) == {"listen": "0.0.0.0:1", "default_k": 3}


# --- the real entry points, as subprocesses ------------------------------------------------


def test_node_print_config_prints_toml_and_exits_0(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "shoal.storage_node",
            "--data-dir",
            str(tmp_path),
            "--capacity",
            "4MiB",
            "--print-config",
        ],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    printed = tomllib.loads(result.stdout)
    assert printed["data_dir"] == str(tmp_path)
    assert printed["capacity"] == 4 * MiB
    assert set(printed) == {f.name for f in dataclasses.fields(NodeConfig)}
    # Nothing was started: no shard directories appeared.
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("module", "args", "key"),
    [
        ("shoal.storage_node", ["--heartbeat-interval", "abc"], "heartbeat_interval"),
        ("shoal.storage_node", ["--capacity", "12XB"], "capacity"),
        ("shoal.coordinator", ["--stripe-bytes", "lots"], "stripe_bytes"),
    ],
)
def test_bad_flag_value_exits_2_with_one_line(
    tmp_path: Path, module: str, args: list[str], key: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", module, "--data-dir", str(tmp_path), *args],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"'{key}'" in lines[0]
    assert f"flag --{key.replace('_', '-')}" in lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("module", "cls"),
    [("shoal.coordinator", CoordinatorConfig), ("shoal.storage_node", NodeConfig)],
)
def test_help_exits_0_and_lists_env_vars(module: str, cls: type) -> None:
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "SHOAL_CONFIG" in result.stdout
    for field in dataclasses.fields(cls):
        assert env_name(field.name) in result.stdout, field.name
        assert "--" + field.name.replace("_", "-") in result.stdout


def test_worker_local_node_dirs_are_directories_or_not_there_yet(tmp_path: Path) -> None:
    from shoal.worker.config import WorkerConfig

    (tmp_path / "node-1").mkdir()
    (tmp_path / "a-file").write_text("x")
    dirs = f"{tmp_path}/node-1, {tmp_path}/node-2,"  # node-2 may start later
    config = resolve(WorkerConfig, file_values={"local_node_dirs": dirs})
    assert config.local_node_dir_list == (f"{tmp_path}/node-1", f"{tmp_path}/node-2")
    home = resolve(WorkerConfig, file_values={"local_node_dirs": "~/node-3"})
    assert home.local_node_dir_list == (os.path.expanduser("~/node-3"),)
    with pytest.raises(ConfigError, match=r"local_node_dirs.*a-file.*not a directory"):
        resolve(WorkerConfig, file_values={"local_node_dirs": f"{tmp_path}/a-file"})
