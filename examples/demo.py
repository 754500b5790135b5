"""`make demo`: a local cluster stores a 64 MiB file with (4, 6), loses two nodes, and still
returns the file byte for byte.

Every step runs the real `clusterctl` and prints the command, so it doubles as a tour.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(os.environ.get("SHOAL_DEMO_DIR", ".shoal-demo")).resolve()
OBJECT_MIB = 64
STOPPED = ["node-2", "node-5"]


def clusterctl(
    *args: str, check: bool = True, quiet: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run clusterctl against the demo cluster, echoing the command."""
    command = [*args, "--data-dir", str(ROOT)]
    if not quiet:
        print(f"\n$ clusterctl {' '.join(args)}", flush=True)
    result = subprocess.run(
        [sys.executable, "-m", "shoal.client.cli", *command],
        text=True,
        capture_output=True,
        check=False,
    )
    if not quiet:
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
    if check and result.returncode != 0:
        raise SystemExit(
            f"demo: 'clusterctl {' '.join(args)}' failed with exit {result.returncode}"
        )
    return result


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def wait_for_status(predicate: str, want: object, timeout_s: float = 30.0) -> dict[str, object]:
    """Poll `clusterctl status --json` until status[predicate] == want."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = json.loads(clusterctl("status", "--json", check=False, quiet=True).stdout)
        value = status.get(predicate)
        if value == want or time.monotonic() > deadline:
            return status
        time.sleep(0.25)


def main() -> int:
    started = time.monotonic()
    if (ROOT / "cluster.json").exists():
        clusterctl("down", check=False, quiet=True)
    shutil.rmtree(ROOT, ignore_errors=True)
    ROOT.mkdir(parents=True)
    try:
        clusterctl("up", "--nodes", "6", "--k", "4", "--n", "6", "--heartbeat-timeout", "2")
        source = ROOT / "input.bin"
        with source.open("wb") as handle:
            for _ in range(OBJECT_MIB):
                handle.write(os.urandom(1 << 20))
        digest = sha256(source)[:16]
        print(f"\ncreated {source} ({OBJECT_MIB} MiB of random bytes, sha256 {digest}...)")
        clusterctl("mb", "demo", "--k", "4", "--n", "6")
        clusterctl("put", str(source), "demo/big.bin")
        clusterctl("stat", "demo/big.bin")
        for node in STOPPED:
            clusterctl("node", "stop", node)
        output = ROOT / "output.bin"
        clusterctl("get", "demo/big.bin", str(output))
        same = sha256(source) == sha256(output)
        verdict = "YES" if same else "NO"
        print(f"\nbyte-for-byte identical with {len(STOPPED)} of 6 nodes stopped: {verdict}")
        if not same:
            return 1
        print("\n(waiting for the coordinator to notice the stopped nodes)")
        wait_for_status("health", "DEGRADED")
        clusterctl("status", check=False)
        for node in STOPPED:
            clusterctl("node", "start", node)
        wait_for_status("health", "HEALTHY")
        clusterctl("status")
    finally:
        clusterctl("down", check=False)
    print(f"\ndemo finished in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
