"""Memory stays bounded by a few stripes: a 256 MiB put and get in a client process whose
peak RSS must stay under 200 MiB (the object alone would be 256 MiB)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from shoal.client import Client
from shoal.client.cli.local_cluster import LocalCluster

OBJECT_BYTES = 256 * 1024 * 1024
RSS_BOUND_MIB = 200

CHILD = textwrap.dedent(
    """
    import json, sys
    from shoal.client import Client

    def peak_rss_mib():
        # VmHWM: the peak RSS of this process's own memory since exec. (ru_maxrss would
        # also count the forked copy of the parent before exec, i.e. pytest's RSS.)
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM in /proc/self/status")

    address, bucket, src, dst = sys.argv[1:5]
    with Client(address) as client:
        info = client.put(bucket, "big", src)
        after_put = peak_rss_mib()
        client.download(bucket, "big", dst)
    print(json.dumps({"size": info.size, "after_put_mib": after_put, "peak_mib": peak_rss_mib()}))
    """
)



def test_256mib_put_and_get_keep_client_memory_bounded(
    make_cluster: Callable[..., LocalCluster], tmp_path: Path
) -> None:
    # A private cluster: this saturates both cores for seconds and must not disturb the
    # shared cluster's other tests.
    cluster = make_cluster(6)
    with Client(cluster.address) as client:
        client.create_bucket("memory", 4, 6)
        _put_and_download(client, "memory", tmp_path)


def _put_and_download(client: Client, bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    chunk = bytes(range(256)) * 4096  # 1 MiB pattern, varied per MiB below
    with src.open("wb") as handle:
        for i in range(OBJECT_BYTES // len(chunk)):
            handle.write(i.to_bytes(8, "little") + chunk[8:])
    dst = tmp_path / "back.bin"
    result = subprocess.run(
        [sys.executable, "-c", CHILD, client.address, bucket, str(src), str(dst)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["size"] == OBJECT_BYTES
    assert report["peak_mib"] < RSS_BOUND_MIB, f"client peak RSS {report['peak_mib']:.0f} MiB"
    with src.open("rb") as a, dst.open("rb") as b:
        while True:
            left, right = a.read(1 << 22), b.read(1 << 22)
            assert left == right, "downloaded bytes differ"
            if not left:
                break
    client.delete(bucket, "big")
