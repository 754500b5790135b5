"""`make demo`: a local cluster stores a 64 MiB file with (4, 6), loses two nodes, and still
returns the file byte for byte; then it runs a word count over a generated corpus on the
cluster's workers with live progress, and checks it against collections.Counter.

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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from examples.wordcount import generate_corpus, run_wordcount  # noqa: E402
from shoal.client import Client  # noqa: E402
from shoal.client.cli.local_cluster import LocalCluster  # noqa: E402

ROOT = Path(os.environ.get("SHOAL_DEMO_DIR", ".shoal-demo")).resolve()
OBJECT_MIB = 64
CORPUS_MIB = 24
CORPUS_OBJECTS = 48
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


def word_count() -> bool:
    """Run a map-reduce word count on the workers and compare it with collections.Counter."""
    print(f"\n--- word count: {CORPUS_MIB} MiB of generated text in {CORPUS_OBJECTS} objects ---")
    with Client(LocalCluster(ROOT).address) as client:
        client.create_bucket("books", 4, 6)
        expected = generate_corpus(
            client, "books", "text/", CORPUS_MIB * 1024 * 1024, CORPUS_OBJECTS, seed=7
        )
        started = time.monotonic()
        counts = run_wordcount(client, "books", "text/", 4)
        elapsed = time.monotonic() - started
    same = counts == expected
    print(f"\nword count finished in {elapsed:.1f}s; top words: {counts.most_common(5)}")
    print(f"equal to collections.Counter computed locally: {'YES' if same else 'NO'}")
    clusterctl("job", "list", "--all")
    return same


def main() -> int:
    started = time.monotonic()
    if (ROOT / "cluster.json").exists():
        clusterctl("down", check=False, quiet=True)
    shutil.rmtree(ROOT, ignore_errors=True)
    ROOT.mkdir(parents=True)
    try:
        clusterctl(
            "up", "--nodes", "6", "--k", "4", "--n", "6", "--heartbeat-timeout", "2",
            "--workers", "2",
        )  # fmt: skip
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
        if not word_count():
            return 1
    finally:
        clusterctl("down", check=False)
    print(f"\ndemo finished in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
