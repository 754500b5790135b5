"""The coordinator's node registry: liveness changes reach the maintenance loop whichever
call noticed them."""

from __future__ import annotations

import time

from shoal.coordinator.membership import DOWN, UP, Membership


def test_a_heartbeat_that_brings_a_node_back_is_still_reported_as_a_change() -> None:
    membership = Membership(heartbeat_timeout_s=10.0, down_after_s=30.0, repair_after_s=900.0)
    record = membership.upsert("node-1", "127.0.0.1:1", "", 1 << 30)
    assert membership.take_changes() == []

    record.last_heartbeat = time.monotonic() - 60.0  # silent for longer than down_after
    membership.refresh()
    assert record.liveness == DOWN
    assert membership.take_changes() == [(record, UP)]

    # The heartbeat's own refresh() flips the node up; the maintenance loop, which
    # reconciles nodes back from down, learns of it from take_changes().
    membership.heartbeat("node-1", 1 << 30, 0, 0)
    assert record.liveness == UP
    assert membership.refresh() == []
    assert membership.take_changes() == [(record, DOWN)]
    assert membership.take_changes() == []
