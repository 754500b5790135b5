"""A storage node's Prometheus metrics (the RPC metrics are in shoal.common.metrics).

shoal_node_shard_received_bytes_total{op}   put: shards stored by PutShard;
                                            rebuild: shard bytes read from peers to
                                            rebuild a shard here
shoal_node_shard_sent_bytes_total{op}       get: shard bytes streamed by GetShard
shoal_node_shards_written_total{op}         put, rebuild
shoal_node_shards_read_total                shards served by GetShard (verified)
shoal_node_shards_deleted_total
shoal_node_corrupt_shards_total{source}     read (found serving GetShard), scrub
shoal_node_scrub_verified_bytes_total       shard bytes the scrubber re-verified
shoal_node_scrub_passes_total               scrub passes finished
shoal_node_shards_stored                    shards in service (scrape time)
shoal_node_stored_bytes                     their bytes (scrape time)
shoal_node_capacity_bytes                   what this node may store
shoal_node_scrub_running                    1 during a scrub pass
shoal_node_written_cache_bytes              written shards whose pages are kept (when nodes
                                            drop written pages; see written_pages.py)
shoal_node_written_pages_dropped_total      written shard files whose pages were dropped
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shoal.common.metrics import register_collector
from shoal.storage_node.scrubber import Scrubber
from shoal.storage_node.shard_store import ShardStore

SHARD_RECEIVED_BYTES = Counter(
    "shoal_node_shard_received_bytes",
    "Shard bytes received: stored by PutShard (put) or read from peers to rebuild (rebuild)",
    ["op"],
)
SHARD_SENT_BYTES = Counter("shoal_node_shard_sent_bytes", "Shard bytes sent by GetShard", ["op"])
SHARDS_WRITTEN = Counter(
    "shoal_node_shards_written", "Shards stored, by PutShard (put) or RebuildShard", ["op"]
)
SHARDS_READ = Counter("shoal_node_shards_read", "Shards served whole by GetShard")
SHARDS_DELETED = Counter("shoal_node_shards_deleted", "Shards deleted at the coordinator's request")
CORRUPT_SHARDS = Counter(
    "shoal_node_corrupt_shards",
    "Shards found corrupt and quarantined, by who found them (read or scrub)",
    ["source"],
)
SCRUB_VERIFIED_BYTES = Counter(
    "shoal_node_scrub_verified_bytes", "Shard bytes re-verified by the scrubber"
)
SCRUB_PASSES = Counter("shoal_node_scrub_passes", "Scrub passes finished")
for _op in ("put", "rebuild"):
    SHARD_RECEIVED_BYTES.labels(_op)
    SHARDS_WRITTEN.labels(_op)
SHARD_SENT_BYTES.labels("get")
for _source in ("read", "scrub"):
    CORRUPT_SHARDS.labels(_source)


class NodeCollector(Collector):
    """The store's gauges, read at scrape time (plain ints the store keeps up to date)."""

    def __init__(self, store: ShardStore, scrubber: Scrubber | None = None) -> None:
        self.store = store
        self.scrubber = scrubber

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "shoal_node_shards_stored",
            "Shards in service on this node",
            value=self.store.shard_count,
        )
        yield GaugeMetricFamily(
            "shoal_node_stored_bytes",
            "Bytes of the shards in service on this node",
            value=self.store.used_bytes,
        )
        yield GaugeMetricFamily(
            "shoal_node_capacity_bytes",
            "Bytes this node may store",
            value=self.store.capacity_bytes,
        )
        running = self.scrubber.running if self.scrubber is not None else False
        yield GaugeMetricFamily(
            "shoal_node_scrub_running", "1 while a scrub pass runs", value=1 if running else 0
        )
        written = self.store.written_pages
        if written is not None:
            yield GaugeMetricFamily(
                "shoal_node_written_cache_bytes",
                "Bytes of recently written shards whose pages this node leaves cached",
                value=written.pending(),
            )
            yield CounterMetricFamily(
                "shoal_node_written_pages_dropped",
                "Written shard files whose pages were dropped from the page cache",
                value=written.dropped,
            )


_installed: list[Collector] = []


def install(store: ShardStore, scrubber: Scrubber | None = None) -> None:
    """Expose the scrape-time gauges of this node's store (and scrubber)."""
    register_collector(NodeCollector(store, scrubber), _installed)
