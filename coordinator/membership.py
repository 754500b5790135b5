"""Node membership and liveness, held in memory (registrations are also persisted).

A node is `up` while heartbeats arrive, `suspect` once it has missed about half the
heartbeat timeout, and `down` past `heartbeat_timeout`. Heartbeat times are monotonic and live
only in memory: after a coordinator restart every known node starts a fresh timeout window, and
nodes that really are down become `down` one timeout later.
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


@dataclass
class NodeRecord:
    """What the coordinator knows of one node."""

    node_id: str
    address: str
    zone: str
    capacity_bytes: int
    used_bytes: int = 0
    shard_count: int = 0
    last_heartbeat: float = field(default_factory=time.monotonic)
    state: str = UP
    state_since: float = field(default_factory=time.monotonic)


class Membership:
    """The registry of nodes and their liveness."""

    def __init__(self, heartbeat_timeout_s: float) -> None:
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.nodes: dict[str, NodeRecord] = {}

    def upsert(self, node_id: str, address: str, zone: str, capacity_bytes: int) -> NodeRecord:
        """Add or refresh a node (registration counts as a heartbeat)."""
        record = self.nodes.get(node_id)
        if record is None:
            record = NodeRecord(node_id, address, zone, capacity_bytes)
            self.nodes[node_id] = record
        else:
            record.address, record.zone, record.capacity_bytes = address, zone, capacity_bytes
        self.heartbeat(node_id, capacity_bytes, record.used_bytes, record.shard_count)
        return record

    def heartbeat(self, node_id: str, capacity: int, used: int, shards: int) -> bool:
        """Record a heartbeat; False if the node is unknown."""
        record = self.nodes.get(node_id)
        if record is None:
            return False
        record.capacity_bytes, record.used_bytes, record.shard_count = capacity, used, shards
        record.last_heartbeat = time.monotonic()
        self.refresh()
        return True

    def refresh(self) -> None:
        """Recompute every node's state from heartbeat ages, logging transitions."""
        now = time.monotonic()
        for record in self.nodes.values():
            age = now - record.last_heartbeat
            if age > self.heartbeat_timeout_s:
                state = DOWN
            elif age > self.heartbeat_timeout_s / 2:
                state = SUSPECT
            else:
                state = UP
            if state != record.state:
                log.info(
                    "node state changed",
                    extra={
                        "node_id": record.node_id,
                        "from": record.state,
                        "to": state,
                        "heartbeat_age_s": round(age, 2),
                    },
                )
                if not (record.state == SUSPECT and state == UP):
                    record.state_since = now
                record.state = state

    def live(self) -> list[NodeRecord]:
        """Nodes that may receive new shards (up or suspect)."""
        self.refresh()
        return [r for r in self.nodes.values() if r.state != DOWN]

    def up_ids(self) -> set[str]:
        """Ids of nodes whose shards count as healthy."""
        self.refresh()
        return {r.node_id for r in self.nodes.values() if r.state != DOWN}

    def candidates(self) -> list[Candidate]:
        """Live nodes as placement candidates weighted by free capacity."""
        return [
            Candidate(r.node_id, r.zone, max(r.capacity_bytes - r.used_bytes, 1))
            for r in self.live()
        ]

    def heartbeat_age(self, record: NodeRecord) -> float:
        return time.monotonic() - record.last_heartbeat

    def down_for(self, record: NodeRecord) -> float:
        """Seconds the node has been down (0 when it is not)."""
        return self.heartbeat_age(record) if record.state == DOWN else 0.0
