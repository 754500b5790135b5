"""Chaos soak: writers (puts, overwrites, deletes) and readers (whole and ranged gets) run
while nodes are SIGKILLed and restarted (sometimes with their disk wiped, as after a drive
replacement), shard files are bit-flipped (sometimes truncated or deleted), scrubs are
triggered and the coordinator is restarted once (SIGTERM or SIGKILL, sometimes together with
a node crash). No acknowledged object may be lost and no read may ever return wrong bytes.

Fault budget (so every fault is one the design promises to survive): at most n - k = 2 nodes
are down at once, and a new fault (kill, wiped disk or damaged shard) is injected only when
every stripe would still keep k healthy shards: the smallest stripe margin the coordinator
reports, minus killed nodes it does not yet see as down, minus wiped disks not yet repaired,
minus one while any damaged shard is outstanding (at most one per stripe until repair has
caught up), must stay >= 1 before the injection. Otherwise the loop waits for repair to
catch up.

`SHOAL_CHAOS_SECONDS` sets the duration (default 45), `SHOAL_CHAOS_SEED` the seed (printed).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from shoal.client import Client, ShoalError
from shoal.client.cli.local_cluster import LocalCluster, log_tail
from shoal.common.names import parse_shard_id
from tests.harness.cluster import REPAIR_SETTINGS, wait_for
from tests.harness.faults import (
    ACKED,
    DELETED,
    Ledger,
    Readers,
    Writers,
    cluster_data_dirs,
    count_log_lines,
    fully_repaired,
    min_margin,
    node_states,
    try_status,
    verify_ledger,
    wait_no_garbage,
)

STRIPE = REPAIR_SETTINGS.stripe_bytes
CHAOS_SECONDS = float(os.environ.get("SHOAL_CHAOS_SECONDS", "45"))
MAX_DOWN = 2  # n - k for (4, 6)
# A quarantined shard is reported within a second; wait this long before trusting a status
# that shows no damage.
REPORT_LAG_S = 2.0


# A deleted shard is noticed by reconciliation (every 2 s, for manifest rows older than 5 s).
DELETE_LAG_S = 9.0


@dataclass
class Damage:
    """A shard file that was bit-flipped, truncated or deleted."""

    kind: str
    path: Path
    bad: bytes | None  # what the file holds now (None: deleted)
    cleared_at: float = 0.0  # when the damaged file was taken out of service

    @property
    def lag(self) -> float:
        """How long after clearing the coordinator may still be unaware of the damage."""
        return DELETE_LAG_S if self.bad is None else REPORT_LAG_S


@dataclass
class Chaos:
    cluster: LocalCluster
    control: Client
    rng: random.Random
    down: dict[str, float] = field(default_factory=dict)  # node -> restart due (monotonic)
    damage: dict[tuple[str, int], Damage] = field(default_factory=dict)  # by stripe
    wipes: list[float] = field(default_factory=list)  # when each wiped node came back
    kills: int = 0
    wiped: int = 0
    corruptions: int = 0
    coordinator_restarts: int = 0
    scrubs: int = 0
    gated: int = 0  # faults not injected because the budget was spent
    last_scrub: float = 0.0

    # Budget ------------------------------------------------------------------------------

    def budget(self, status: dict[str, Any] | None) -> int:
        """How many more shards of the worst stripe may fail before it drops below k."""
        if status is None:
            return 0
        states = node_states(status)
        unseen_kills = sum(1 for name in self.down if states.get(name) != "down")
        return min_margin(status) - unseen_kills - len(self.wipes) - (1 if self.damage else 0)

    def settle_damage(self, status: dict[str, Any] | None) -> None:
        """Forget damaged shards that were taken out of service and then repaired."""
        now = time.monotonic()
        for stripe, damage in list(self.damage.items()):
            if not damage.cleared_at:
                try:
                    still_bad = damage.path.read_bytes() == damage.bad
                except FileNotFoundError:
                    still_bad = False
                if not still_bad:
                    damage.cleared_at = now
            elif fully_repaired(status) and now - damage.cleared_at > damage.lag:
                del self.damage[stripe]
        if fully_repaired(status):
            self.wipes = [t for t in self.wipes if now - t <= DELETE_LAG_S]

    # Faults ------------------------------------------------------------------------------

    def kill(self) -> None:
        alive = sorted(set(self.cluster.nodes) - set(self.down))
        victim = self.rng.choice(alive)
        self.cluster.stop_node(victim, signal.SIGKILL)
        # Sometimes back before it is even seen down, sometimes after its shards were rebuilt.
        self.down[victim] = time.monotonic() + self.rng.uniform(1.0, 10.0)
        self.kills += 1

    def wipe(self) -> None:
        """A crash that loses the disk: SIGKILL a node, delete every shard it had, start it
        again empty (a replaced drive). Its shards count as lost until repaired."""
        victim = self.rng.choice(sorted(set(self.cluster.nodes) - set(self.down)))
        self.cluster.stop_node(victim, signal.SIGKILL)
        shutil.rmtree(Path(self.cluster.node(victim).data_dir) / "shards")
        self.cluster.start_node(victim)
        self.wipes.append(time.monotonic())
        self.kills += 1
        self.wiped += 1

    def restart_due(self, force: bool = False) -> None:
        due = [n for n, t in self.down.items() if force or time.monotonic() >= t]
        if due:
            self.cluster.start_nodes(sorted(due))
            for name in due:
                del self.down[name]

    def corrupt(self) -> None:
        """Damage a random shard file on a running node (at most one per stripe): mostly a
        flipped bit, sometimes a truncated or deleted file."""
        node = self.rng.choice(sorted(set(self.cluster.nodes) - set(self.down)))
        files = sorted((Path(self.cluster.node(node).data_dir) / "shards").glob("*/*"))
        self.rng.shuffle(files)
        kind = self.rng.choices(["flip", "truncate", "delete"], [7, 2, 1])[0]
        for path in files[:20]:
            stripe = parse_shard_id(path.name)[:2]
            if stripe in self.damage:
                continue
            damage = damage_file(path, kind, self.rng)
            if damage is not None:
                self.damage[stripe] = damage
                self.corruptions += 1
                return

    def scrub(self) -> None:
        try:
            self.control.scrub()
            self.scrubs += 1
        except ShoalError:
            pass
        self.last_scrub = time.monotonic()

    def restart_coordinator(self) -> None:
        """Stop the coordinator (SIGTERM or SIGKILL), and sometimes crash a node while it is
        away (a correlated failure), then start it again."""
        status = try_status(self.control)
        self.cluster.stop_coordinator(self.rng.choice([signal.SIGTERM, signal.SIGKILL]))
        if len(self.down) < MAX_DOWN and self.budget(status) >= 1 and self.rng.random() < 0.5:
            self.kill()
        self.cluster.start_coordinator()
        self.coordinator_restarts += 1

    def step(self) -> None:
        """One round: restart nodes whose downtime is over, then maybe inject one fault."""
        self.restart_due()
        status = try_status(self.control)
        self.settle_damage(status)
        action = self.rng.choices(["kill", "corrupt", "wipe", "scrub", "none"], [4, 3, 1, 1, 2])[0]
        budget = self.budget(status)
        if action in ("kill", "corrupt", "wipe") and budget < 1:
            self.gated += 1
        elif action == "kill" and len(self.down) < MAX_DOWN:
            self.kill()
        elif action == "wipe":
            self.wipe()
        elif action == "corrupt":
            self.corrupt()
        if action == "scrub" or time.monotonic() - self.last_scrub > 5.0:
            self.scrub()


def damage_file(path: Path, kind: str, rng: random.Random) -> Damage | None:
    """Damage a shard file in place (never creating it); None if it vanished meanwhile or
    holds no data."""
    try:
        with path.open("r+b") as handle:
            data = bytearray(handle.read())
            if len(data) <= 32:  # header only: nothing to damage that a read would need
                return None
            if kind == "delete":
                path.unlink()
                return Damage(kind, path, None, cleared_at=time.monotonic())
            if kind == "truncate":
                handle.truncate(rng.randrange(len(data)))
                handle.seek(0)
                return Damage(kind, path, handle.read())
            # Mostly the data, sometimes the 32-byte header's magic, format, length or checksum
            # (bytes 6-7 are reserved: a flip there changes nothing a read relies on).
            if rng.random() < 0.2:
                offset = rng.choice([*range(6), *range(8, 32)])
            else:
                offset = rng.randrange(32, len(data))
            data[offset] ^= 1 << rng.randrange(8)
            handle.seek(offset)
            handle.write(bytes([data[offset]]))
            return Damage(kind, path, bytes(data))
    except FileNotFoundError:
        return None


def not_up_report(cluster: LocalCluster, client: Client) -> str:
    """For a failed wait: each node the coordinator does not show up, whether its process
    runs, and the end of its log (a rare CI failure left nothing else to go on)."""
    states = node_states(client.status())
    lines = []
    for name, daemon in sorted(cluster.nodes.items()):
        state = states.get(name, "unknown to the coordinator")
        if state != "up":
            running = "running" if cluster.running(daemon) else "not running"
            lines.append(f"{name}: {state}, process {running}; last log lines:")
            lines.append(log_tail(Path(daemon.data_dir) / "daemon.log", 20))
    coordinator = cluster.coordinator
    if lines and coordinator is not None:
        lines.append("coordinator: last log lines:")
        lines.append(log_tail(Path(coordinator.data_dir) / "daemon.log", 30))
    return "\n".join(lines) or f"node states now: {states}"


def heal(chaos: Chaos, cluster: LocalCluster, client: Client) -> None:
    """Start every node, let scrub find every remaining damaged shard, repair catch up."""
    chaos.restart_due(force=True)
    try:
        wait_for(
            lambda: set(node_states(client.status()).values()) == {"up"},
            timeout_s=30,
            what="every node up",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{not_up_report(cluster, client)}") from None
    client.scrub()

    def damage_cleared() -> bool:
        chaos.settle_damage(None)
        return all(damage.cleared_at for damage in chaos.damage.values())

    wait_for(damage_cleared, timeout_s=60, what="scrub to quarantine every damaged shard")
    # The coordinator learns of damage within its lag: only a status taken after that may
    # count as repaired.
    deadline = max(
        [time.monotonic() + REPORT_LAG_S]
        + [d.cleared_at + d.lag for d in chaos.damage.values()]
        + [t + DELETE_LAG_S for t in chaos.wipes]
    )

    def repaired() -> bool:
        return time.monotonic() > deadline and fully_repaired(try_status(client))

    wait_for(repaired, timeout_s=120, what="repair of every stripe to n healthy shards")


@pytest.mark.timeout(int(CHAOS_SECONDS * 2 + 300))
def test_chaos_soak_loses_nothing(make_cluster: Callable[..., LocalCluster]) -> None:
    seed = int(os.environ.get("SHOAL_CHAOS_SEED", str(random.randrange(2**32))))
    print(f"\nchaos seed={seed} seconds={CHAOS_SECONDS:g} (rerun: SHOAL_CHAOS_SEED={seed})")
    rng = random.Random(seed)
    cluster = make_cluster(8, REPAIR_SETTINGS)
    ledger = Ledger()
    with Client(cluster.address, rpc_timeout_s=10.0) as client:
        client.create_bucket("chaos", 4, 6)
        chaos = Chaos(cluster, client, rng)
        writers = Writers(
            cluster.address,
            "chaos",
            ledger,
            count=2,
            seed=seed,
            sizes=(1000, 3 * STRIPE),
            overwrite_p=0.15,
            delete_p=0.05,
            empty_p=0.03,
            pace_s=0.2,
        ).start()
        readers = Readers(
            cluster.address, "chaos", ledger, count=2, seed=seed, ranged_p=0.3
        ).start()
        try:
            started = time.monotonic()
            coordinator_at = started + CHAOS_SECONDS * rng.uniform(0.35, 0.65)
            while time.monotonic() - started < CHAOS_SECONDS:
                if not chaos.coordinator_restarts and time.monotonic() >= coordinator_at:
                    chaos.restart_coordinator()
                chaos.step()
                time.sleep(rng.uniform(0.3, 1.0))  # pacing of the chaos, not synchronisation
        finally:
            writers.join()
            readers.join()
        assert chaos.coordinator_restarts == 1
        heal(chaos, cluster, client)
        gets, verified, lost, problems = verify_ledger(client, ledger, "chaos")
        stats = readers.stats
        repairs = count_log_lines(
            Path(cluster.coordinator.data_dir if cluster.coordinator else ".") / "daemon.log",
            "shard rebuilt",
        )
        puts = sum(
            1
            for attempts in ledger.attempts.values()
            for a in attempts
            if a.state == ACKED and a.digest != DELETED
        )
        print(
            f"chaos details: put_attempts={sum(map(len, ledger.attempts.values()))} "
            f"put_or_delete_failures={ledger.failures} transient_get_errors={stats.transient} "
            f"{stats.transient_kinds} scrubs={chaos.scrubs} wiped_disks={chaos.wiped} "
            f"gated={chaos.gated}"
        )
        print(
            f"chaos: puts={puts} gets={stats.gets + gets} kills={chaos.kills} "
            f"corruptions={chaos.corruptions} coordinator_restarts={chaos.coordinator_restarts} "
            f"repairs={repairs} bytes_verified={stats.bytes_verified + verified} lost: {lost}"
        )
        assert not stats.wrong, f"reads returned wrong bytes (seed {seed}): {stats.wrong[:5]}"
        assert lost == 0, f"lost {lost} acknowledged objects (seed {seed}): {problems[:5]}"
        assert not problems, problems[:5]
        assert puts > 0
        assert stats.gets > 0
        wait_no_garbage(cluster_data_dirs(cluster), client, "chaos")
