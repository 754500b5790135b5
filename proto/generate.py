"""Regenerate the committed gRPC/protobuf stubs from proto/shoal/rpc/v1/*.proto.

Run with `make proto` (or `python proto/generate.py` inside the dev virtual environment).
The output is deterministic: running it twice leaves the tree unchanged, which is what
`make proto-check` and tests/packaging/test_proto_sync.py rely on.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
PACKAGE_DIR = PROTO_ROOT / "shoal" / "rpc" / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def generate(out_dir: Path) -> None:
    """Run protoc (grpcio-tools) with the mypy plugins into `out_dir`."""
    bin_dir = Path(sys.executable).parent
    sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in PACKAGE_DIR.glob("*.proto"))
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        *sources,
    ]
    subprocess.run(cmd, check=True, cwd=PROTO_ROOT)


def prune_empty_grpc(directory: Path) -> None:
    """Drop *_pb2_grpc.py(i) files of message-only protos: they define nothing."""
    for path in directory.glob("*_pb2_grpc.py"):
        proto = PROTO_ROOT / "shoal/rpc/v1" / path.name.replace("_pb2_grpc.py", ".proto")
        if "service " not in proto.read_text():
            path.unlink()
            stub = path.with_suffix(".pyi")
            if stub.exists():
                stub.unlink()


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(out)
        generated = out / "shoal" / "rpc" / "v1"
        prune_empty_grpc(generated)
        for old in PACKAGE_DIR.iterdir():
            if old.name.endswith(GENERATED_SUFFIXES):
                old.unlink()
        for new in sorted(generated.iterdir()):
            if new.name.endswith(GENERATED_SUFFIXES):
                shutil.copyfile(new, PACKAGE_DIR / new.name)
    for init in (PACKAGE_DIR / "__init__.py", PACKAGE_DIR.parent / "__init__.py"):
        if not init.exists():
            init.write_text('"""Generated gRPC stubs for the Shoal wire protocol."""\n')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
