"""One config object per daemon, built from defaults < TOML file < SHOAL_* env vars < flags.

A daemon declares a frozen dataclass whose fields are made with `setting(...)`; `load_config`
derives the command line (`--help` lists every setting with its env var and default), reads the
TOML file given by `--config` (or SHOAL_CONFIG), then the environment, then the flags, converts
and validates each value, and names the offending key and its source in a one-line
`ConfigError` when something is wrong. `--print-config` prints the effective config as TOML.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from shoal.common.errors import ConfigError
from shoal.common.units import parse_duration, parse_size

ENV_PREFIX = "SHOAL_"
T = TypeVar("T")


def setting(
    default: Any, help: str, *, unit: str = "", choices: Sequence[str] = (), secret: bool = False
) -> Any:
    """Declare a config field. `unit` is "bytes" or "seconds" to accept '4MiB' or '15m'."""
    return dataclasses.field(
        default=default,
        metadata={"help": help, "unit": unit, "choices": tuple(choices), "secret": secret},
    )


def env_name(field_name: str) -> str:
    """The environment variable of a setting: SHOAL_<FIELD_NAME>."""
    return ENV_PREFIX + field_name.upper()


def _flag(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _convert(field: dataclasses.Field[Any], kind: Any, raw: Any) -> Any:
    unit = field.metadata.get("unit", "")
    choices = field.metadata.get("choices", ())
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"not a boolean: {raw!r} (use true or false)")
    if isinstance(raw, bool):
        raise ValueError(f"not a number: {raw!r}")
    if kind is int:
        if isinstance(raw, float) and not raw.is_integer():
            raise ValueError(f"not a whole number: {raw!r}")
        if unit == "bytes":
            return parse_size(int(raw) if isinstance(raw, float) else raw)
        return int(raw)
    if kind is float:
        if unit == "seconds":
            return parse_duration(raw)
        return float(raw)
    if kind is str:
        if not isinstance(raw, str):
            raise ValueError(f"not a string: {raw!r}")
        if choices and raw not in choices:
            raise ValueError(f"{raw!r} is not one of: {', '.join(choices)}")
        return raw
    raise TypeError(f"unsupported setting type {kind!r}")


def build_parser(cls: type[Any], prog: str, description: str) -> argparse.ArgumentParser:
    """The argparse parser for a config dataclass (flags default to None = 'not given')."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--config", metavar="FILE", help="TOML file with settings (env SHOAL_CONFIG)"
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the effective config as TOML and exit"
    )
    hints = get_type_hints(cls)
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        text = f"{field.metadata['help']} (env {env_name(field.name)}; default: {field.default!r})"
        if kind is bool:
            parser.add_argument(
                _flag(field.name),
                dest=field.name,
                default=None,
                action=argparse.BooleanOptionalAction,
                help=text,
            )
        else:
            metavar = {"bytes": "BYTES", "seconds": "SECONDS"}.get(
                field.metadata.get("unit", ""), field.name.upper()
            )
            parser.add_argument(
                _flag(field.name), dest=field.name, default=None, metavar=metavar, help=text
            )
    return parser


def resolve(
    cls: type[T],
    *,
    file_values: Mapping[str, Any] | None = None,
    file_name: str = "",
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> T:
    """Merge the layers into a validated instance of `cls`; ConfigError names key and source."""
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {name: f.default for name, f in fields.items()}
    sources: dict[str, str] = {}

    def apply(name: str, raw: Any, source: str) -> None:
        sources[name] = source
        try:
            values[name] = _convert(fields[name], hints[name], raw)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"invalid value for '{name}' in {source}: {exc}") from None

    for key, raw in (file_values or {}).items():
        name = key.replace("-", "_")
        if name not in fields:
            raise ConfigError(f"unknown key '{key}' in {file_name}")
        apply(name, raw, file_name)
    for name in fields:
        var = env_name(name)
        if env is not None and var in env:
            apply(name, env[var], f"environment variable {var}")
    for name, raw in (flags or {}).items():
        if raw is not None:
            apply(name, raw, f"flag {_flag(name)}")
    instance = cls(**values)
    validate = getattr(instance, "validate", None)
    if validate is not None:
        try:
            validate()
        except ConfigError as exc:
            named = [n for n in re.findall(r"'(\w+)'", str(exc)) if n in sources]
            if named:
                where = ", ".join(f"'{n}' from {sources[n]}" for n in named)
                raise ConfigError(f"{exc} ({where})") from None
            raise
    return instance


def read_toml(path: str) -> dict[str, Any]:
    """Read a TOML config file; ConfigError if it is missing or malformed."""
    try:
        with Path(path).open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None


def to_toml(config: Any) -> str:
    """Render a config instance as TOML, secrets redacted."""
    lines = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.metadata.get("secret") and value:
            value = "<redacted>"
        if isinstance(value, bool):
            rendered = "true" if value else "false"
        elif isinstance(value, (int, float)):
            rendered = repr(value)
        else:
            rendered = '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
        lines.append(f"{field.name} = {rendered}")
    return "\n".join(lines) + "\n"


def load_config(
    cls: type[T],
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str,
    extra_args: Callable[[argparse.ArgumentParser], None] | None = None,
) -> tuple[T, argparse.Namespace]:
    """Parse flags, read TOML and env, and return (config, parsed args).

    Prints the config and exits 0 for --print-config; prints a one-line error and exits 2 for
    a ConfigError.
    """
    parser = build_parser(cls, prog, description)
    if extra_args is not None:
        extra_args(parser)
    args = parser.parse_args(argv)
    flag_values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    config_path = args.config or os.environ.get(ENV_PREFIX + "CONFIG")
    try:
        file_values = read_toml(config_path) if config_path else {}
        config = resolve(
            cls,
            file_values=file_values,
            file_name=config_path or "",
            env=os.environ,
            flags=flag_values,
        )
    except ConfigError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.print_config:
        sys.stdout.write(to_toml(config))
        raise SystemExit(0)
    return config, args
