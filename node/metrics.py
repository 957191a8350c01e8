"""Prometheus metrics of one node (prefix `redwood_`), served on the metrics port.

A private CollectorRegistry per node (so tests can run several nodes in one
process) holding the node's own instruments plus the process collector.
Counters kept by layers that must not import prometheus (network stats,
replica counters) are read at scrape time by `_LayerCollector`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    make_asgi_app,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30)
WRITE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)


class NodeMetrics:
    def __init__(self, chain_id: str, node_id: str, version: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        lbl = ["chain_id"]
        self.chain_id = chain_id
        self.build_info = Gauge(
            "redwood_build_info", "Build and identity of this node (always 1).",
            ["version", "chain_id", "node_id"], registry=r,
        )  # fmt: skip
        self.build_info.labels(version, chain_id, node_id).set(1)
        self.height = Gauge("redwood_height", "Committed chain height.", lbl, registry=r)
        self.view = Gauge("redwood_view", "Current PBFT view.", lbl, registry=r)
        self.blocks = Counter("redwood_blocks_committed", "Blocks committed.", lbl, registry=r)
        self.txs = Counter(
            "redwood_transactions_committed", "Transactions committed (in blocks).", lbl, registry=r
        )
        self.block_interval = Histogram(
            "redwood_block_interval_seconds", "Time between consecutive committed blocks.",
            lbl, buckets=LATENCY_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.commit_latency = Histogram(
            "redwood_commit_latency_seconds",
            "Submit-to-commit latency of transactions submitted to this node.",
            lbl, buckets=LATENCY_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.write_latency = Histogram(
            "redwood_storage_write_seconds", "Latency of one block's atomic LevelDB write batch.",
            lbl, buckets=WRITE_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.mempool_size = Gauge(
            "redwood_mempool_size", "Transactions in the mempool.", lbl, registry=r
        )
        self.mempool_bytes = Gauge(
            "redwood_mempool_bytes", "Bytes in the mempool.", lbl, registry=r
        )
        self.syncing = Gauge("redwood_syncing", "1 while catching up with peers.", lbl, registry=r)
        self.evidence = Counter(
            "redwood_evidence_recorded",
            "Evidence of validator misbehaviour recorded.",
            lbl,
            registry=r,
        )
        self.validators = Gauge(
            "redwood_validators", "Validators in the current epoch.", lbl, registry=r
        )
        self.stable_checkpoint = Gauge(
            "redwood_stable_checkpoint_height",
            "Height of the last stable checkpoint.",
            lbl,
            registry=r,
        )
        self.peers = Gauge("redwood_peers_connected", "Connected peers.", lbl, registry=r)

    def add_layer(self, name: str, read: Callable[[], dict[str, Any]], help_text: str) -> None:
        """Export a layer's plain counters (e.g. network stats) at scrape time."""
        self.registry.register(_LayerCollector(name, read, help_text, self.chain_id))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _LayerCollector(Collector):
    """Turns {metric: value or {label: value}} into metric families at scrape time."""

    def __init__(
        self, prefix: str, read: Callable[[], dict[str, Any]], help_text: str, chain_id: str
    ) -> None:
        self.prefix = prefix
        self.read = read
        self.help_text = help_text
        self.chain_id = chain_id

    def collect(self) -> Iterable[Any]:
        for name, value in sorted(self.read().items()):
            full = f"redwood_{self.prefix}_{name}"
            is_counter = name.endswith("_total")
            if isinstance(value, dict):
                family: Any
                if is_counter:
                    family = CounterMetricFamily(
                        full[: -len("_total")], self.help_text, labels=["chain_id", "kind"]
                    )
                else:
                    family = GaugeMetricFamily(full, self.help_text, labels=["chain_id", "kind"])
                for label, v in sorted(value.items()):
                    family.add_metric([self.chain_id, str(label)], float(v))
                yield family
            elif is_counter:
                family = CounterMetricFamily(
                    full[: -len("_total")], self.help_text, labels=["chain_id"]
                )
                family.add_metric([self.chain_id], float(value))
                yield family
            else:
                family = GaugeMetricFamily(full, self.help_text, labels=["chain_id"])
                family.add_metric([self.chain_id], float(value))
                yield family


async def serve_metrics(
    metrics: NodeMetrics, host: str, port: int, *, task_status: Any = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve `GET /metrics` with Hypercorn on the node's Trio loop; started(bound port)."""
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    app = make_asgi_app(registry=metrics.registry)
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(partial(serve, app, config))
        task_status.started(int(urls[0].rsplit(":", 1)[1]))
