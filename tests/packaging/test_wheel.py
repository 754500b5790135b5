"""The wheel: every module under its mapped `shoal.*` name, typing markers, entry points, and
an install that imports from site-packages rather than the source tree."""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


# source folder -> package path inside the wheel (from [tool.setuptools.package-dir])
def _mapping() -> dict[str, str]:
    """Source folder -> wheel folder, from pyproject's package-dir (top-level packages)."""
    package_dir = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    folders = {folder: name.replace(".", "/") for name, folder in package_dir.items()}
    # Sub-packages (client/cli, proto/shoal/rpc/v1) are covered by their parent's rglob.
    return {
        f: t
        for f, t in folders.items()
        if not any(f.startswith(o + "/") for o in folders if o != f)
    }


MAPPING = _mapping()


@dataclass(frozen=True)
class Built:
    wheel: Path
    names: frozenset[str]
    site: Path
    workdir: Path


def _source_modules() -> dict[str, str]:
    """Wheel path -> source path of every .py file that must ship."""
    expected = {}
    for folder, target in MAPPING.items():
        root = REPO / folder
        for path in sorted(root.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            relative = path.relative_to(root).as_posix()
            expected[f"{target}/{relative}"] = path.relative_to(REPO).as_posix()
    return expected


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    workdir = tmp_path_factory.mktemp("wheel")
    outdir = workdir / "dist"
    # Build from a clean copy of the sources: setuptools reuses build/lib, so a build in the
    # repo could ship modules that no longer exist.
    source = workdir / "src"
    shutil.copytree(
        REPO, source,
        ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                      ".pytest_cache", ".mypy_cache", ".ruff_cache", ".shoal*"),
    )  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(outdir)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, f"wheel build failed:\n{result.stdout}\n{result.stderr}"
    wheels = sorted(outdir.glob("shoal-*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as archive:
        names = frozenset(archive.namelist())

    site = workdir / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-compile",
            "--quiet",
            "--disable-pip-version-check",
            "--no-index",
            "--target",
            str(site),
            str(wheels[0]),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert install.returncode == 0, f"pip install failed:\n{install.stdout}\n{install.stderr}"
    return Built(wheels[0], names, site, workdir)


def test_every_module_ships_under_its_mapped_name(built: Built) -> None:
    expected = _source_modules()
    assert len(expected) >= 30
    missing = sorted(
        f"{source} -> {target}" for target, source in expected.items() if target not in built.names
    )
    assert not missing, "modules missing from the wheel:\n" + "\n".join(missing)
    shipped_py = {n for n in built.names if n.endswith(".py")}
    extra = sorted(shipped_py - set(expected))
    assert not extra, (
        "the wheel has modules with no source file (stale build/lib? delete build/lib):\n"
        + "\n".join(extra)
    )


def test_only_the_shoal_package_is_top_level(built: Built) -> None:
    tops = {n.split("/", 1)[0] for n in built.names}
    name, version = built.wheel.name.split("-")[:2]
    assert tops == {"shoal", f"{name}-{version}.dist-info"}
    for folder in ("client", "common", "storage_node", "coordinator", "proto", "tests"):
        assert not any(n.startswith(f"{folder}/") for n in built.names), folder
    # shoal is a namespace package: no shoal/__init__.py to shadow other shoal.* installs.
    assert "shoal/__init__.py" not in built.names


def test_typing_markers_and_stub_files_ship(built: Built) -> None:
    assert "shoal/client/py.typed" in built.names
    assert "shoal/common/py.typed" in built.names
    for stub in sorted((REPO / "proto/shoal/rpc/v1").glob("*.pyi")):
        assert f"shoal/rpc/v1/{stub.name}" in built.names
    for proto in sorted((REPO / "proto/shoal/rpc/v1").glob("*.proto")):
        assert f"shoal/rpc/v1/{proto.name}" in built.names
    assert "shoal/rpc/generate.py" not in built.names


def _entry_points(built: Built) -> dict[str, str]:
    with zipfile.ZipFile(built.wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")]
        text = archive.read(name).decode()
    parser = configparser.ConfigParser()
    parser.read_string(text)
    return dict(parser["console_scripts"])


def test_entry_points_declare_the_commands(built: Built) -> None:
    scripts = _entry_points(built)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert scripts == pyproject["project"]["scripts"]
    assert set(scripts) == {
        "shoal-coordinator",
        "shoal-node",
        "shoal-worker",
        "shoal-s3",
        "clusterctl",
    }


def test_entry_point_targets_ship_in_the_wheel(built: Built) -> None:
    for command, target in _entry_points(built).items():
        module, _, function = target.partition(":")
        assert function, command
        path = module.replace(".", "/") + ".py"
        assert path in built.names, f"{command}: {path} is not in the wheel"


def _run_installed(built: Built, code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "SHOAL_"))}
    env["PYTHONPATH"] = str(built.site)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=built.workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_installed_wheel_imports_from_site(built: Built) -> None:
    modules = [
        "shoal.client",
        "shoal.client.cli",
        "shoal.client.cli.main",
        "shoal.common.config",
        "shoal.coordinator.main",
        "shoal.storage_node.main",
        "shoal.s3.main",
        "shoal.rpc.v1.storage_pb2",
        "shoal.rpc.v1.coordinator_pb2_grpc",
    ]
    code = (
        "import importlib, json, sys\n"
        f"mods = {modules!r}\n"
        "print(json.dumps({m: importlib.import_module(m).__file__ for m in mods}))\n"
    )
    result = _run_installed(built, code)
    assert result.returncode == 0, result.stderr
    files = json.loads(result.stdout)
    site = built.site.resolve()
    for module, file in files.items():
        location = Path(file).resolve()
        assert location.is_relative_to(site), f"{module} loaded from {location}, not {site}"
        assert not location.is_relative_to(REPO), f"{module} loaded from the repo"


def test_installed_daemon_runs_print_config(built: Built) -> None:
    result = _run_installed(
        built,
        "import sys; from shoal.storage_node.main import main; "
        "sys.exit(main(['--data-dir', '/srv/x', '--print-config']))",
    )
    assert result.returncode == 0, result.stderr
    assert tomllib.loads(result.stdout)["data_dir"] == "/srv/x"
