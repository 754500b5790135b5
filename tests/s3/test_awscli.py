"""The AWS CLI against the gateway: `aws s3 mb/cp/sync/ls`, configured the way the README
says (a config and a credentials file, --endpoint-url, path-style addressing)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.cluster import unique
from tests.s3.conftest import ALICE, Gateway

AWS = Path(sys.executable).with_name("aws")


@pytest.fixture(scope="module")
def aws_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("aws")
    (home / "config").write_text(
        "[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n"
    )
    (home / "credentials").write_text(
        f"[default]\naws_access_key_id = {ALICE.access_key}\n"
        f"aws_secret_access_key = {ALICE.secret_key}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_CONFIG_FILE=str(home / "config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "credentials"),
        AWS_MAX_ATTEMPTS="1",
    )
    return env


def aws(gateway: Gateway, env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [str(AWS), "--endpoint-url", gateway.endpoint, *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"aws {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_cp_sync_and_ls(gateway: Gateway, aws_env: dict[str, str], tmp_path: Path) -> None:
    bucket = unique("cli")
    aws(gateway, aws_env, "s3", "mb", f"s3://{bucket}")
    assert bucket in aws(gateway, aws_env, "s3", "ls")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20 * 1024 * 1024 + 3))  # over the CLI's 8 MiB threshold
    aws(gateway, aws_env, "s3", "cp", str(big), f"s3://{bucket}/big.bin")
    aws(gateway, aws_env, "s3", "cp", f"s3://{bucket}/big.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == big.read_bytes()
    tree = tmp_path / "tree"
    for name in ("a.txt", "sub/b.txt", "sub/deeper/c.txt", "with space.txt"):
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text(f"content of {name}\n")
    aws(gateway, aws_env, "s3", "sync", str(tree), f"s3://{bucket}/tree/")
    listing = aws(gateway, aws_env, "s3", "ls", f"s3://{bucket}/tree/")
    assert "PRE sub/" in listing
    assert "a.txt" in listing
    assert "with space.txt" in listing
    recursive = aws(gateway, aws_env, "s3", "ls", "--recursive", f"s3://{bucket}/")
    assert "tree/sub/deeper/c.txt" in recursive
    assert "big.bin" in recursive
    # A second sync has nothing to do; a changed file is uploaded again.
    assert aws(gateway, aws_env, "s3", "sync", str(tree), f"s3://{bucket}/tree/").strip() == ""
    (tree / "a.txt").write_text("changed, and longer than before\n")
    assert "upload:" in aws(gateway, aws_env, "s3", "sync", str(tree), f"s3://{bucket}/tree/")
    copy = tmp_path / "copy"
    aws(gateway, aws_env, "s3", "sync", f"s3://{bucket}/tree/", str(copy))
    for path in tree.rglob("*"):
        if path.is_file():
            assert (copy / path.relative_to(tree)).read_text() == path.read_text()
    aws(gateway, aws_env, "s3", "rb", "--force", f"s3://{bucket}")
    assert bucket not in aws(gateway, aws_env, "s3", "ls")
