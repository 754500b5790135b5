"""Network partition: a storage node cut off by the network (its process keeps running, its
disk keeps its shards) is seen down, repaired around, and cleaned up when it comes back.

One node runs in its own network namespace joined to the host by a veth pair on a private
/30 (10.231.X.1 <-> 10.231.X.2; both ends exist only on this machine). Every other daemon binds
the host end of the link, so all daemons and the client reach each other through it. Cutting
the namespace side of the link partitions exactly that node. Needs root and `ip netns`;
skipped otherwise.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
import uuid
from pathlib import Path

import pytest

from shoal.client import Client
from tests.harness.cluster import REPAIR_SETTINGS, wait_for
from tests.harness.faults import (
    Daemon,
    Ledger,
    Readers,
    VethLink,
    Writers,
    fully_repaired,
    isolated_namespace,
    list_all,
    netns_unavailable,
    node_states,
    payload,
    put_and_record,
    shards_on_disk,
    try_status,
    verify_ledger,
    wait_no_garbage,
    wait_node_state,
)

STRIPE = REPAIR_SETTINGS.stripe_bytes
NODES = 7  # (4, 6) with one node partitioned still leaves 6 for full repair
ISOLATED = f"node-{NODES}"
GET_BOUND_S = 10.0  # the README's bound for a get to succeed around or fail on missing shards


def coordinator_flags(listen: str) -> list[str]:
    s = REPAIR_SETTINGS
    flags = {
        "--listen": listen,
        "--heartbeat-timeout": s.heartbeat_timeout_s,
        "--down-after": s.down_after_s,
        "--repair-after": s.repair_after_s,
        "--reconcile-interval": s.reconcile_interval_s,
        "--orphan-grace": s.orphan_grace_s,
        "--upload-timeout": s.upload_timeout_s,
        "--delete-grace": s.delete_grace_s,
        "--stripe-bytes": s.stripe_bytes,
        "--repair-bandwidth": s.repair_bandwidth,
    }
    return [part for flag, value in flags.items() for part in (flag, str(value))]


def node_flags(name: str, listen: str, coordinator: str) -> list[str]:
    return [
        "--listen", listen,
        "--coordinator", coordinator,
        "--node-id", name,
        "--heartbeat-interval", str(REPAIR_SETTINGS.heartbeat_interval_s),
    ]  # fmt: skip


def start_daemons(root: Path, link: VethLink, daemons: dict[str, Daemon]) -> str:
    """Coordinator and nodes 1..6 on the host end of the link, node 7 inside the namespace.
    Fills `daemons` as they start (so the caller can stop them); returns the coordinator
    address."""
    coordinator = Daemon(
        "coordinator",
        "shoal.coordinator",
        root / "coordinator",
        coordinator_flags(f"{link.host_ip}:0"),
        prefix=[],
    )
    daemons["coordinator"] = coordinator
    address = coordinator.wait_ready()
    for i in range(1, NODES + 1):
        name = f"node-{i}"
        inside = name == ISOLATED
        ip = link.ns_ip if inside else link.host_ip
        daemons[name] = Daemon(
            name,
            "shoal.storage_node",
            root / "nodes" / name,
            node_flags(name, f"{ip}:0", address),
            prefix=link.prefix() if inside else [],
        )
    for name, daemon in daemons.items():
        if name != "coordinator":
            daemon.wait_ready()
    assert daemons[ISOLATED].address.startswith(link.ns_ip + ":")
    return address


def stop_all(daemons: dict[str, Daemon]) -> dict[str, int | None]:
    codes = {n: d.stop(signal.SIGTERM) for n, d in daemons.items() if n != "coordinator"}
    if "coordinator" in daemons:
        codes["coordinator"] = daemons["coordinator"].stop(signal.SIGTERM)
    return codes


def test_partitioned_node_is_repaired_around_and_cleaned_up(tmp_path: Path) -> None:
    reason = netns_unavailable()
    if reason:
        pytest.skip(f"network partition test needs network namespaces: {reason}")
    with isolated_namespace() as link:
        daemons: dict[str, Daemon] = {}
        try:
            address = start_daemons(tmp_path, link, daemons)
            data_dirs = {n: d.data_dir for n, d in daemons.items() if n != "coordinator"}
            run_partition_scenario(address, link, data_dirs)
            codes = stop_all(daemons)
            assert all(code == 0 for code in codes.values()), f"unclean exits: {codes}"
        finally:
            stop_all(daemons)


def run_partition_scenario(address: str, link: VethLink, data_dirs: dict[str, Path]) -> None:
    sizes = {f"obj-{i}": STRIPE * (i % 3) + 1000 * i + 1 for i in range(10)}
    objects = {key: payload(i, size) for i, (key, size) in enumerate(sizes.items())}
    ledger = Ledger()
    with Client(address) as client:
        wait_for(
            lambda: list(node_states(client.status()).values()) == ["up"] * NODES,
            what="all nodes up",
        )
        client.create_bucket("part", 4, 6)
        for i, (key, size) in enumerate(sizes.items()):
            assert put_and_record(client, ledger, "part", key, i, size)
        held = len(shards_on_disk(data_dirs)[ISOLATED])
        assert held > 0, "the isolated node should hold shards before the partition"
        # Traffic keeps flowing through the partition: a writer and a reader check that no
        # acknowledged put is lost and no read returns wrong bytes.
        writers = Writers(
            address,
            "part",
            ledger,
            count=1,
            seed=3,
            sizes=(1000, 2 * STRIPE),
            overwrite_p=0.2,
            delete_p=0.1,
        )
        readers = Readers(address, "part", ledger, count=1, seed=3, ranged_p=0.3)
        writers.start()
        readers.start()
        wait_for(lambda: ledger.acked_count() >= 2, what="background puts")
        try:
            timings = partition_and_heal(client, ledger, link, data_dirs, objects, held)
        finally:
            writers.join()
            readers.join()
        assert not readers.stats.wrong, readers.stats.wrong[:5]
        _gets, _verified, lost, problems = verify_ledger(client, ledger, "part")
        assert lost == 0, problems[:5]
        assert not problems, problems[:5]
        wait_no_garbage(data_dirs, client, "part", timeout_s=30)
        print(
            f"partition: held={held} shards; {timings}; background puts acked={ledger.acks} "
            f"failed={ledger.failures}, reads verified={readers.stats.gets} "
            f"transient={readers.stats.transient}"
        )


def plant_orphan(data_dir: Path) -> Path:
    """Copy a shard file on a node under the id of an upload nobody knows, older than the
    orphan grace, as a crashed upload would leave it; returns its path."""
    source = next((data_dir / "shards").glob("*/*"))
    version = uuid.uuid4().hex
    target = data_dir / "shards" / version[:2] / f"{version}.0.0"
    shutil.copyfile(source, target)
    old = time.time() - 10 * REPAIR_SETTINGS.orphan_grace_s
    os.utime(target, (old, old))
    return target


def partition_and_heal(
    client: Client,
    ledger: Ledger,
    link: VethLink,
    data_dirs: dict[str, Path],
    objects: dict[str, bytes],
    held: int,
) -> str:
    link.cut()
    cut_at = time.monotonic()
    # Before the coordinator notices, reads still go to the silent node first: they must
    # route around it within a bounded time, never hang on it.
    for key, data in objects.items():
        started = time.monotonic()
        assert client.get("part", key) == data, f"{key} while partitioned"
        elapsed = time.monotonic() - started
        assert elapsed < GET_BOUND_S, f"get of {key} took {elapsed:.1f}s behind a partition"
    wait_node_state(client, ISOLATED, "down", timeout_s=20)
    down_at = time.monotonic()
    # The partitioned node must not hold up the rest of the cluster: an orphan shard planted
    # on a healthy node is still collected by reconciliation while the partition lasts.
    orphan = plant_orphan(data_dirs["node-1"])
    wait_for(
        lambda: not orphan.exists(),
        timeout_s=20,
        what=f"reconciliation to collect an orphan on node-1 while {ISOLATED} is partitioned",
    )
    assert node_states(client.status())[ISOLATED] == "down"
    wait_for(
        lambda: fully_repaired(try_status(client)),
        timeout_s=40,
        what="repair of every stripe to 6 shards on the other nodes",
    )
    assert node_states(client.status())[ISOLATED] == "down"
    # Its process and disk are untouched: it still has every shard it had.
    assert len(shards_on_disk(data_dirs)[ISOLATED]) >= held
    repaired_at = time.monotonic()

    link.restore()
    wait_node_state(client, ISOLATED, "up", timeout_s=30)
    up_at = time.monotonic()
    # Every shard it held was rebuilt elsewhere while it was away: reconciliation must leave
    # it only shards the manifests place on it, none of the old ones.
    old = {info.version_id for info in list_all(client, "part").values() if info.key in objects}

    def stale() -> set[str]:
        return {s for s in shards_on_disk(data_dirs)[ISOLATED] if s.split(".")[0] in old}

    wait_for(lambda: not stale(), timeout_s=30, what=f"{ISOLATED}'s stale shards collected")
    clean_at = time.monotonic()

    # It takes writes and serves reads again.
    assert put_and_record(client, ledger, "part", "after", 99, 2 * STRIPE)
    assert client.get("part", "after") == payload(99, 2 * STRIPE)
    for key, data in objects.items():
        assert client.get("part", key) == data, key
    return (
        f"down {down_at - cut_at:.1f}s after the cut, repaired {repaired_at - down_at:.1f}s "
        f"later, up {up_at - repaired_at:.1f}s after restore, clean {clean_at - up_at:.1f}s later"
    )
