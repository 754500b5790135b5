"""Layering: which Shoal packages each package may import (AST scan, no imports executed).

shoal.common is the base (it may use the generated shoal.rpc stubs); the SDK and the two
daemons build on it and never on each other.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# source folder -> (its package, the shoal.* subpackages it may import)
LAYERS: dict[str, tuple[str, frozenset[str]]] = {
    "common": ("shoal.common", frozenset({"common", "rpc"})),
    "client": ("shoal.client", frozenset({"common", "rpc", "client"})),
    "storage_node": ("shoal.storage_node", frozenset({"common", "rpc", "storage_node"})),
    "coordinator": ("shoal.coordinator", frozenset({"common", "rpc", "coordinator"})),
    # The S3 gateway is a client of the cluster: it reaches it only through the SDK.
    "s3": ("shoal.s3", frozenset({"common", "rpc", "client", "s3"})),
}


def _module_name(folder: str, path: Path) -> str:
    package, _ = LAYERS[folder]
    parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def _imports(path: Path, module: str) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, at any depth."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                drop = node.level - 1 if is_package else node.level
                base = base[: len(base) - drop] if drop else base
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield node.lineno, target
            if node.module is None or node.level:
                for alias in node.names:  # `from . import x` may name a submodule
                    yield node.lineno, f"{target}.{alias.name}"
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, (ast.Name, ast.Attribute))
            and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


def _sources() -> Iterator[tuple[str, Path]]:
    for folder in LAYERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            if "__pycache__" not in path.parts:
                yield folder, path


def _violations(folder: str) -> list[str]:
    _, allowed = LAYERS[folder]
    found = []
    for source_folder, path in _sources():
        if source_folder != folder:
            continue
        module = _module_name(folder, path)
        for line, target in _imports(path, module):
            parts = target.split(".")
            if parts[0] == "shoal" and len(parts) > 1 and parts[1] not in allowed:
                found.append(f"{path.relative_to(REPO)}:{line} imports {target}")
    return found


def test_scan_sees_every_package_and_their_imports() -> None:
    files = list(_sources())
    assert {folder for folder, _ in files} == set(LAYERS)
    assert len(files) >= 30
    service = REPO / "storage_node" / "service.py"
    targets = {t for _, t in _imports(service, _module_name("storage_node", service))}
    assert "shoal.storage_node.shard_store" in targets
    assert "shoal.common.rpc" in targets


def test_relative_imports_resolve_to_absolute_names(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from . import names\nfrom ..coordinator import metadata\nfrom .errors import X\n"
        "import importlib\nimportlib.import_module('shoal.client')\n"
    )
    targets = [t for _, t in _imports(probe, "shoal.common.probe")]
    assert "shoal.common.names" in targets
    assert "shoal.coordinator.metadata" in targets
    assert "shoal.common.errors" in targets
    assert "shoal.client" in targets


@pytest.mark.parametrize(
    ("folder", "rule"),
    [
        ("common", "shoal.common imports no storage_node, coordinator or client"),
        ("client", "shoal.client imports neither daemon"),
        ("storage_node", "shoal.storage_node imports neither shoal.coordinator nor shoal.client"),
        ("coordinator", "shoal.coordinator imports neither shoal.storage_node nor shoal.client"),
        ("s3", "shoal.s3 imports no daemon: it uses the cluster through shoal.client"),
    ],
)
def test_layering(folder: str, rule: str) -> None:
    violations = _violations(folder)
    assert not violations, f"{rule}:\n" + "\n".join(violations)
