"""Node membership and liveness, held in memory (registrations and admin states are also
persisted).

Liveness comes from heartbeats: a node is `up` while they arrive, `suspect` after
`heartbeat_timeout` without one, and `down` after `down_after`. Suspect nodes still count as
holding healthy shards (a missed heartbeat is not a lost disk); down nodes do not, and after
`repair_after` their shards are rebuilt elsewhere.

Operators add an admin state: `active`, `draining` (serves reads, receives no new shards, its
shards are moved away) or `decommissioned` (removed; its shards count as lost).

The state shown to operators is `decommissioned`, else `draining` while the node is alive,
else the liveness state. Transitions are logged with their cause.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from shoal.common.placement import Candidate

log = logging.getLogger(__name__)

UP = "up"
SUSPECT = "suspect"
DOWN = "down"
ACTIVE = "active"
DRAINING = "draining"
DECOMMISSIONED = "decommissioned"


@dataclass
class NodeRecord:
    """What the coordinator knows of one node."""

    node_id: str
    address: str
    zone: str
    capacity_bytes: int
    admin_state: str = ACTIVE
    used_bytes: int = 0
    shard_count: int = 0
    last_heartbeat: float = field(default_factory=time.monotonic)
    liveness: str = UP
    scrub_running: bool = False
    scrub_bytes_done: int = 0
    scrub_bytes_total: int = 0
    corrupt_found: int = 0
    scrub_requested: bool = False

    @property
    def state(self) -> str:
        """The state operators see."""
        if self.admin_state == DECOMMISSIONED:
            return DECOMMISSIONED
        if self.admin_state == DRAINING and self.liveness != DOWN:
            return DRAINING
        return self.liveness


class Membership:
    """The registry of nodes and their liveness."""

    def __init__(
        self, heartbeat_timeout_s: float, down_after_s: float, repair_after_s: float
    ) -> None:
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.down_after_s = down_after_s
        self.repair_after_s = repair_after_s
        self.nodes: dict[str, NodeRecord] = {}
        # Liveness changes since the last take_changes(), whoever's refresh() saw them.
        self._changes: list[tuple[NodeRecord, str]] = []

    def load(
        self,
        node_id: str,
        address: str,
        zone: str,
        capacity: int,
        admin_state: str,
        last_seen_wall: float,
    ) -> None:
        """Restore a node from metadata after a coordinator restart, keeping how long ago it
        was last heard from (so down times and repair countdowns survive the restart)."""
        age = max(time.time() - last_seen_wall, 0.0) if last_seen_wall else 0.0
        record = NodeRecord(
            node_id, address, zone, capacity, admin_state, last_heartbeat=time.monotonic() - age
        )
        self.nodes[node_id] = record
        self.refresh()

    def upsert(self, node_id: str, address: str, zone: str, capacity_bytes: int) -> NodeRecord:
        """Add or refresh a node (registration counts as a heartbeat)."""
        record = self.nodes.get(node_id)
        if record is None:
            record = NodeRecord(node_id, address, zone, capacity_bytes)
            self.nodes[node_id] = record
            log.info("node joined", extra={"node_id": node_id, "cause": "registration"})
        else:
            record.address, record.zone, record.capacity_bytes = address, zone, capacity_bytes
        record.last_heartbeat = time.monotonic()
        self.refresh()
        return record

    def heartbeat(self, node_id: str, capacity: int, used: int, shards: int) -> NodeRecord | None:
        """Record a heartbeat; None if the node is unknown or decommissioned."""
        record = self.nodes.get(node_id)
        if record is None or record.admin_state == DECOMMISSIONED:
            return None
        record.capacity_bytes, record.used_bytes, record.shard_count = capacity, used, shards
        record.last_heartbeat = time.monotonic()
        self.refresh()
        return record

    def refresh(self) -> list[tuple[NodeRecord, str]]:
        """Recompute liveness from heartbeat ages; returns (node, previous liveness) changes."""
        now = time.monotonic()
        changed = []
        for record in self.nodes.values():
            age = now - record.last_heartbeat
            if age > self.down_after_s:
                liveness = DOWN
            elif age > self.heartbeat_timeout_s:
                liveness = SUSPECT
            else:
                liveness = UP
            if liveness != record.liveness:
                log.info(
                    "node state changed",
                    extra={
                        "node_id": record.node_id,
                        "from": record.liveness,
                        "to": liveness,
                        "cause": "heartbeat" if liveness == UP else "missed_heartbeats",
                        "heartbeat_age_s": round(age, 2),
                    },
                )
                changed.append((record, record.liveness))
                record.liveness = liveness
        self._changes.extend(changed)
        return changed

    def take_changes(self) -> list[tuple[NodeRecord, str]]:
        """The (node, previous liveness) changes seen by any refresh() since the last call,
        oldest first: a heartbeat that brings a node back from down flips it in its own
        refresh(), and the maintenance loop must still learn of it."""
        changes, self._changes = self._changes, []
        return changes

    def set_admin_state(self, node_id: str, admin_state: str) -> None:
        record = self.nodes[node_id]
        if record.admin_state != admin_state:
            log.info(
                "node state changed",
                extra={
                    "node_id": node_id,
                    "from": record.admin_state,
                    "to": admin_state,
                    "cause": "operator",
                },
            )
            record.admin_state = admin_state

    def placeable(self) -> list[NodeRecord]:
        """Nodes that may receive new shards: alive and active."""
        self.refresh()
        return [r for r in self.nodes.values() if r.liveness != DOWN and r.admin_state == ACTIVE]

    def readable_ids(self) -> set[str]:
        """Nodes whose shards count as healthy: not down, not decommissioned."""
        self.refresh()
        return {
            r.node_id
            for r in self.nodes.values()
            if r.liveness != DOWN and r.admin_state != DECOMMISSIONED
        }

    def counted_out_ids(self) -> set[str]:
        """Known nodes whose shards do not count as healthy (the complement of readable)."""
        return set(self.nodes) - self.readable_ids()

    def lost_ids(self) -> set[str]:
        """Nodes whose shards must be rebuilt elsewhere: down past repair_after, or removed."""
        self.refresh()
        return {
            r.node_id
            for r in self.nodes.values()
            if r.admin_state == DECOMMISSIONED
            or (r.liveness == DOWN and self.down_for(r) > self.repair_after_s)
        }

    def draining_ids(self) -> set[str]:
        return {r.node_id for r in self.nodes.values() if r.admin_state == DRAINING}

    def known_count(self) -> int:
        """Nodes that count toward `n` limits (not decommissioned)."""
        return sum(1 for r in self.nodes.values() if r.admin_state != DECOMMISSIONED)

    def candidates(self) -> list[Candidate]:
        """Placeable nodes as placement candidates weighted by free capacity."""
        return [
            Candidate(r.node_id, r.zone, max(r.capacity_bytes - r.used_bytes, 1))
            for r in self.placeable()
        ]

    def heartbeat_age(self, record: NodeRecord) -> float:
        return time.monotonic() - record.last_heartbeat

    def down_for(self, record: NodeRecord) -> float:
        """Seconds since a down node became down (`down_after` past its last heartbeat);
        0 when it is not down. Repair starts when this passes `repair_after`."""
        if record.liveness != DOWN:
            return 0.0
        return max(self.heartbeat_age(record) - self.down_after_s, 0.0)

    def repair_in(self, record: NodeRecord) -> float:
        """Seconds until repair of a down node's shards starts (0 once it has, or not down)."""
        if record.liveness != DOWN or record.admin_state == DECOMMISSIONED:
            return 0.0
        return max(self.repair_after_s - self.down_for(record), 0.0)
