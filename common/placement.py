"""Placement: which nodes hold the shards of a stripe. A pure function, no I/O.

Rules (the recovery rule depends on them):
- The `n` shards of a stripe go to `n` *distinct* nodes, so losing one node loses at most one
  shard of any stripe.
- When nodes carry zones, shards spread across zones as evenly as possible: a node of a zone
  with fewer shards of this stripe always wins over one of a busier zone.
- Within those rules nodes are ranked by weighted rendezvous (highest random weight) hashing
  keyed by the stripe: each (stripe, node) pair gets a pseudo-random score scaled by the node's
  free capacity (`-weight / ln(u)`, the standard weighted-HRW form), so emptier nodes get
  proportionally more shards, and adding or removing a node moves only the stripes whose
  top-`n` contained it.

The ranking beyond the first `n` gives handoff nodes, used when a write to a placed node fails.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import xxhash


@dataclass(frozen=True)
class Candidate:
    """A live node that may receive shards."""

    node_id: str
    zone: str = ""
    free_bytes: int = 1


def _score(stripe_key: str, candidate: Candidate) -> float:
    digest = xxhash.xxh3_64_intdigest(f"{stripe_key}\x00{candidate.node_id}".encode())
    unit = (digest + 1) / (2**64 + 1)  # in (0, 1), never 0 or 1
    weight = max(candidate.free_bytes, 1)
    return -weight / math.log(unit)


def rank(stripe_key: str, candidates: Iterable[Candidate]) -> list[Candidate]:
    """All candidates, best first, by weighted rendezvous score (ties broken by node id)."""
    return sorted(candidates, key=lambda c: (-_score(stripe_key, c), c.node_id))


def place(
    stripe_key: str,
    candidates: Sequence[Candidate],
    count: int,
    *,
    exclude: Iterable[str] = (),
    occupied_zones: Iterable[str] = (),
) -> list[Candidate]:
    """Choose up to `count` distinct nodes for a stripe, zone-spread, best ranked first.

    Args:
        stripe_key: identifies the stripe (for example "<version_id>.<stripe_index>").
        candidates: live nodes; duplicates by node id are ignored.
        count: how many nodes to choose; fewer are returned when fewer are eligible.
        exclude: node ids that must not be chosen (they already hold a shard of the stripe).
        occupied_zones: zones already holding shards of the stripe (one entry per shard), so
            repair and handoffs keep the spread.
    """
    excluded = set(exclude)
    unique: dict[str, Candidate] = {}
    for candidate in candidates:
        if candidate.node_id not in excluded:
            unique.setdefault(candidate.node_id, candidate)
    ranked = rank(stripe_key, unique.values())
    zone_load: Counter[str] = Counter(occupied_zones)
    chosen: list[Candidate] = []
    while ranked and len(chosen) < count:
        # The first-ranked node among those in the least-loaded zones.
        least = min(zone_load[c.zone] for c in ranked)
        pick = next(c for c in ranked if zone_load[c.zone] == least)
        ranked.remove(pick)
        zone_load[pick.zone] += 1
        chosen.append(pick)
    return chosen
