"""A worker's Prometheus metrics.

shoal_worker_tasks_total{outcome}           succeeded, error (the task raised), failed
                                            (the task could not run), died (its process
                                            died), cancelled (stopped by the coordinator)
shoal_worker_task_duration_seconds{outcome} time in a slot, per task attempt
shoal_worker_slots                          task slots (processes)
shoal_worker_slots_busy                     slots running a task now (scrape time)
shoal_worker_tasks_running                  attempts leased and not finished (scrape time)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shoal.common.metrics import register_collector

OUTCOMES = ("succeeded", "error", "failed", "died", "cancelled")
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

TASKS = Counter("shoal_worker_tasks", "Task attempts this worker ran, by outcome", ["outcome"])
TASK_DURATION = Histogram(
    "shoal_worker_task_duration_seconds",
    "Time a task attempt ran in its slot, by outcome",
    ["outcome"],
    buckets=TASK_BUCKETS,
)
for _outcome in OUTCOMES:
    TASKS.labels(_outcome)


def outcome_of(reply: dict[str, object], *, cancelled: bool, died: bool) -> str:
    """The outcome label of a finished attempt from its slot's reply."""
    if cancelled:
        return "cancelled"
    if died:
        return "died"
    if reply.get("ok"):
        return "succeeded"
    return "error" if reply.get("user_error") else "failed"


def record_task(outcome: str, seconds: float) -> None:
    TASKS.labels(outcome).inc()
    TASK_DURATION.labels(outcome).observe(max(seconds, 0.0))


class WorkerCollector(Collector):
    """Slot gauges, read at scrape time through callables over the worker's state."""

    def __init__(self, slots: int, busy: Callable[[], int], running: Callable[[], int]) -> None:
        self.slots, self.busy, self.running = slots, busy, running

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily("shoal_worker_slots", "Task slots", value=self.slots)
        yield GaugeMetricFamily(
            "shoal_worker_slots_busy", "Slots running a task now", value=self.busy()
        )
        yield GaugeMetricFamily(
            "shoal_worker_tasks_running",
            "Task attempts leased to this worker and not finished",
            value=self.running(),
        )


_installed: list[Collector] = []


def install(slots: int, busy: Callable[[], int], running: Callable[[], int]) -> None:
    """Expose the slot gauges of this worker."""
    register_collector(WorkerCollector(slots, busy, running), _installed)
