"""Crash safety: kill -9 of the coordinator or a node in the middle of writes never loses an
acknowledged object, never exposes a partly written one, and leaves no garbage behind; writes
accepted with a node down are repaired to full redundancy as soon as capacity exists."""

from __future__ import annotations

import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator

from shoal.client import Client, ShoalError
from shoal.client.cli.local_cluster import LocalCluster
from shoal.common.names import parse_shard_id
from tests.harness.cluster import REPAIR_SETTINGS, wait_for
from tests.harness.faults import (
    ACKED,
    Ledger,
    Writers,
    cluster_data_dirs,
    digest,
    fully_repaired,
    list_all,
    node_states,
    payload,
    shards_on_disk,
    try_status,
    wait_no_garbage,
    wait_node_state,
)

STRIPE = REPAIR_SETTINGS.stripe_bytes


def assert_no_garbage(cluster: LocalCluster, client: Client, bucket: str) -> None:
    wait_no_garbage(cluster_data_dirs(cluster), client, bucket)


def test_coordinator_kill9_during_concurrent_puts(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    cluster = make_cluster(6, REPAIR_SETTINGS)
    ledger = Ledger()
    with Client(cluster.address) as client:
        client.create_bucket("crash", 4, 6)
        writers = Writers(
            cluster.address, "crash", ledger, count=4, seed=1, sizes=(STRIPE // 2, 3 * STRIPE)
        ).start()
        try:
            wait_for(lambda: ledger.acked_count() >= 6, timeout_s=60, what="first puts")
            wait_for(lambda: ledger.inflight >= 3, timeout_s=10, what="puts in flight")
            inflight_at_kill = ledger.inflight
            cluster.stop_coordinator(signal.SIGKILL)
            acked_at_kill = ledger.acked_count()
            cluster.start_coordinator()
            wait_for(
                lambda: ledger.acked_count() >= acked_at_kill + 6,
                timeout_s=60,
                what="puts to succeed again after the restart",
            )
        finally:
            writers.join()
        assert ledger.failures > 0, "the kill should have failed the puts in flight"

        listed = list_all(client, "crash")
        acked = {
            key: next(a for a in attempts if a.state == ACKED)
            for key, attempts in ledger.attempts.items()
            if any(a.state == ACKED for a in attempts)
        }
        missing = sorted(set(acked) - set(listed))
        assert not missing, f"acknowledged puts not listed after the crash: {missing}"
        for key, attempt in acked.items():
            assert listed[key].version_id == attempt.version_id, key
            data = client.get("crash", key)
            assert data == payload(attempt.seed, attempt.size), f"{key} differs"
        in_doubt = 0
        for key, info in listed.items():
            # Keys are unique: a listed key was put exactly once. If that put raised (its
            # commit raced the kill) the object must still be complete, never a part.
            (attempt,) = ledger.attempts[key]
            assert info.size == attempt.size, f"{key}: listed size {info.size} != {attempt.size}"
            if attempt.state != ACKED:
                in_doubt += 1
                assert digest(client.get("crash", key)) == attempt.digest, key
        print(
            f"coordinator kill -9: puts in flight at kill={inflight_at_kill} acked={len(acked)} "
            f"failed={ledger.failures} listed_unacked={in_doubt} "
            f"errors={dict(Counter(e.split(':')[0] for e in ledger.errors))}"
        )
        assert_no_garbage(cluster, client, "crash")


def stripes_source(
    stripes: int, seed: int, pause_before: int, paused: threading.Event, resume: threading.Event
) -> Iterator[bytes]:
    """A put source that stops before stripe `pause_before` until `resume` is set, so a fault
    can be injected while the earlier stripes are still being written."""
    data = payload(seed, stripes * STRIPE)
    for index in range(stripes):
        if index == pause_before:
            paused.set()
            assert resume.wait(60), "the test never resumed the put"
        yield data[index * STRIPE : (index + 1) * STRIPE]


def background_put(
    client: Client, bucket: str, key: str, source: Iterator[bytes]
) -> tuple[threading.Thread, list[object]]:
    """Run a put in a thread; the list receives its ObjectInfo or ShoalError."""
    result: list[object] = []

    def put() -> None:
        try:
            result.append(client.put(bucket, key, source))
        except ShoalError as exc:
            result.append(exc)

    thread = threading.Thread(target=put, daemon=True)
    thread.start()
    return thread, result


def put_with_kill_midway(
    cluster: LocalCluster,
    client: Client,
    key: str,
    seed: int,
    pause_before: int,
    victims: list[str],
) -> object:
    """Put a 12-stripe object and SIGKILL `victims` once `pause_before` stripes have been handed
    to the client (some still being written); returns the ObjectInfo or ShoalError."""
    paused, resume = threading.Event(), threading.Event()
    source = stripes_source(12, seed, pause_before, paused, resume)
    thread, result = background_put(client, "nodekill", key, source)
    assert paused.wait(60), "the put never reached the injection point"
    cluster.stop_nodes(victims, signal.SIGKILL)
    resume.set()
    thread.join(120)
    assert not thread.is_alive(), "the put hung after nodes were killed"
    (outcome,) = result
    return outcome


def check_bucket(client: Client) -> None:
    for name, info in list_all(client, "nodekill").items():
        seed = 100 + int(name.split("-")[1])
        assert client.get("nodekill", name) == payload(seed, info.size), name


def test_node_kill9_during_put(make_cluster: Callable[..., LocalCluster]) -> None:
    """7 nodes (one handoff per stripe): SIGKILL a node while a 12-stripe put is mid-way; the
    put succeeds on the handoff or fails cleanly, and repair restores full redundancy. A last
    round kills three nodes, leaving fewer live nodes than the write quorum: the put must fail
    and leave nothing behind."""
    cluster = make_cluster(7, REPAIR_SETTINGS)
    outcomes = []
    with Client(cluster.address) as client:
        client.create_bucket("nodekill", 4, 6)
        for round_, (victim, pause_before) in enumerate(
            [("node-3", 2), ("node-5", 6), ("node-1", 10)]
        ):
            key, seed = f"big-{round_}", 100 + round_
            outcome = put_with_kill_midway(cluster, client, key, seed, pause_before, [victim])
            listed = list_all(client, "nodekill")
            if isinstance(outcome, ShoalError):
                outcomes.append(f"{key}: failed ({type(outcome).__name__})")
                assert key not in listed, f"a failed put must not be listed: {outcome}"
            else:
                outcomes.append(f"{key}: ok")
                assert key in listed
                assert client.get("nodekill", key) == payload(seed, 12 * STRIPE)
            wait_node_state(client, victim, "down")
            wait_for(
                lambda: fully_repaired(try_status(client)),
                timeout_s=60,
                what="repair of every stripe to margin 2 without the killed node",
            )
            status = client.status()
            assert set(status["stripes_by_margin"]) == {"2"}, status["stripes_by_margin"]
            check_bucket(client)
            cluster.start_node(victim)
            wait_node_state(client, victim, "up")

        victims = ["node-2", "node-4", "node-6"]
        outcome = put_with_kill_midway(cluster, client, "big-3", 103, 5, victims)
        assert isinstance(outcome, ShoalError), "4 live nodes cannot meet a write quorum of 5"
        outcomes.append(f"big-3: failed ({type(outcome).__name__})")
        assert "big-3" not in list_all(client, "nodekill")
        cluster.start_nodes(victims)
        wait_for(
            lambda: set(node_states(client.status()).values()) == {"up"},
            timeout_s=30,
            what="killed nodes back up",
        )
        print("node kill -9 during put:", "; ".join(outcomes))
        check_bucket(client)
        assert_no_garbage(cluster, client, "nodekill")
        wait_for(lambda: fully_repaired(try_status(client)), timeout_s=60, what="full redundancy")


def test_degraded_writes_are_repaired_once_capacity_exists(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    """(4, 6) on 6 nodes with one down: puts are accepted at the write quorum of 5, show as
    degraded, and repair brings them to 6 shards as soon as a node is added."""
    cluster = make_cluster(6, REPAIR_SETTINGS)
    with Client(cluster.address) as client:
        client.create_bucket("degraded", 4, 6)
        before = {f"before-{i}": payload(i, STRIPE * i + 777) for i in range(1, 3)}
        for key, data in before.items():
            client.put("degraded", key, data)
        cluster.stop_node("node-6", signal.SIGKILL)
        wait_node_state(client, "node-6", "down")
        during = {f"during-{i}": payload(10 + i, STRIPE * i // 2 + 1) for i in range(1, 5)}
        for key, data in during.items():
            info = client.put("degraded", key, data)
            assert (info.k, info.n) == (4, 6)
        objects = {**before, **during}
        listed = list_all(client, "degraded")
        stripes = sum(info.stripe_count for info in listed.values())

        # The degraded stripes are recorded: every stripe has 5 healthy shards (margin 1).
        status = client.status()
        assert status["stripes_by_margin"] == {"1": stripes}, status["stripes_by_margin"]
        assert status["objects"]["degraded"] == len(objects)
        assert status["objects"]["unavailable"] == 0
        on_disk = shards_on_disk(cluster_data_dirs(cluster))
        for key in during:
            info = listed[key]
            for stripe in range(info.stripe_count):
                holders = {
                    node
                    for node, ids in on_disk.items()
                    for sid in ids
                    if parse_shard_id(sid)[:2] == (info.version_id, stripe)
                }
                assert len(holders) == 5, (key, stripe, holders)
                assert "node-6" not in holders, (key, stripe, holders)
        # Five live nodes all hold a shard of every stripe: repair has nowhere to put the sixth
        # and says so instead of doubling a shard up on a node.
        wait_for(lambda: client.repair_errors()[1] > 0, timeout_s=30, what="repair to try")
        errors, _total = client.repair_errors()
        assert all("no eligible node" in e.reason for e in errors), errors[0].reason
        for key, data in objects.items():
            assert client.get("degraded", key) == data, key

        cluster.add_node()
        wait_for(
            lambda: fully_repaired(try_status(client)),
            timeout_s=60,
            what="degraded stripes repaired onto the added node",
        )
        status = client.status()
        assert status["stripes_by_margin"] == {"2": stripes}
        for key, data in objects.items():
            assert client.get("degraded", key) == data, key

        # The stopped node returns: its stale shards (rebuilt on node-7) are collected.
        cluster.start_node("node-6")
        assert_no_garbage(cluster, client, "degraded")
        for key, data in objects.items():
            assert client.get("degraded", key) == data, key
        assert shards_on_disk(cluster_data_dirs(cluster))["node-7"], (
            "the added node must hold the rebuilt shards"
        )
