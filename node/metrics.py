"""Prometheus metrics of one node (prefix `redwood_`), served on the metrics port.

A private CollectorRegistry per node (so tests can run several nodes in one
process) holding three kinds of metric:

- instruments the node updates as things happen (`height`, `blocks`,
  `commit_latency`, ... and the `observe_*` methods below);
- values read at scrape time from layers that must not import prometheus:
  network `NetStats`, mempool and replica counters, readiness, database size
  (`bind_sources`; every read is defensive, a missing attribute is skipped,
  never a failed scrape);
- the process collector (CPU, memory, file descriptors).

Every metric has help text and is listed in docs/metrics.md (a test checks
both ways). Every series carries `chain_id`; label sets are bounded (reasons,
channels and phases come from code, validators from the epoch in force).
Scrapes run on the node's Trio thread, as does the replica, so reads see a
consistent state without locks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
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
PHASE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
WRITE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)
PHASES = ("prepare", "commit")
# Reasons known in advance are exported at 0 so that dashboards and alerts see a
# series before the first event; any other reason a layer reports appears when counted.
VIEW_CHANGE_REASONS = ("progress_timeout", "new_view_timeout", "joined_f_plus_1", "bad_new_view")
CHANNELS = ("consensus", "tx_gossip", "block_gossip", "sync")
PHASE_HEIGHTS_MAX = 1024  # heights whose phase start times are remembered
VALIDATORS_TRACKED_MAX = 256  # per-validator series (bounded by the epoch's validators)
LABEL_VALUES_MAX = 64  # distinct reasons exported per counter (the rest become "other")
DB_SIZE_CACHE_S = 10.0  # the data directory is walked at most this often
NODE_ID_LABEL_CHARS = 16
TIMER_PHASES = ("pre_prepared", "prepared")  # consensus.replica.Phase, lower-cased


class NodeMetrics:
    """The node's metrics: see the module docstring and docs/metrics.md."""

    def __init__(
        self,
        chain_id: str,
        node_id: str,
        version: str,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.chain_id = chain_id
        self._clock = clock
        ProcessCollector(registry=self.registry)
        self._make_instruments(node_id, version)
        self._phase_started: dict[tuple[str, int], float] = {}
        self._last_signed: dict[bytes, int] = {}
        self._sources = _SourcesCollector(chain_id, clock)
        self.registry.register(self._sources)

    def _make_instruments(self, node_id: str, version: str) -> None:
        r, lbl = self.registry, ["chain_id"]
        self.build_info = Gauge(
            "redwood_build_info", "Build and identity of this node (always 1).",
            ["version", "chain_id", "node_id"], registry=r,
        )  # fmt: skip
        self.build_info.labels(version, self.chain_id, node_id).set(1)
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
        self.phase_latency = Histogram(
            "redwood_phase_latency_seconds",
            "Time a height spends in a PBFT phase at this validator: prepare = pre-prepare "
            "accepted to prepared (own COMMIT sent), commit = prepared to committed.",
            ["chain_id", "phase"], buckets=PHASE_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.write_latency = Histogram(
            "redwood_storage_write_seconds",
            "Time to apply one committed block: execution and its atomic LevelDB write batch.",
            lbl, buckets=WRITE_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.mempool_size = Gauge(
            "redwood_mempool_size", "Transactions in the mempool.", lbl, registry=r
        )
        self.mempool_bytes = Gauge(
            "redwood_mempool_bytes", "Bytes in the mempool.", lbl, registry=r
        )
        self.syncing = Gauge("redwood_syncing", "1 while catching up with peers.", lbl, registry=r)
        self.sync_blocks = Counter(
            "redwood_sync_blocks_fetched",
            "Certified blocks received from peers in catch-up (block responses).",
            lbl, registry=r,
        )  # fmt: skip
        self.evidence = Counter(
            "redwood_evidence_recorded",
            "Evidence of validator misbehaviour (equivocation) recorded.",
            lbl, registry=r,
        )  # fmt: skip
        self.validators = Gauge(
            "redwood_validators", "Validators in the current epoch.", lbl, registry=r
        )
        self.validators_missing = Gauge(
            "redwood_validators_missing",
            "Validators of the epoch whose signature is not in the last commit certificate.",
            lbl, registry=r,
        )  # fmt: skip
        self.heights_since_signed = Gauge(
            "redwood_validator_heights_since_signed",
            "Committed heights since this validator's signature was last in a commit "
            "certificate seen by this node (grows without bound for a silent validator).",
            ["chain_id", "validator"], registry=r,
        )  # fmt: skip
        self.stable_checkpoint = Gauge(
            "redwood_stable_checkpoint_height",
            "Height of the last stable checkpoint.",
            lbl, registry=r,
        )  # fmt: skip
        self.peers = Gauge("redwood_peers_connected", "Connected peers.", lbl, registry=r)
        self.gc_pause = Histogram(
            "redwood_gc_pause_seconds",
            "Python garbage-collector pauses, wall time (every thread of the node stops; on a "
            "busy machine it includes time the OS gave other processes), by generation.",
            ["chain_id", "generation"], buckets=WRITE_BUCKETS_S, registry=r,
        )  # fmt: skip
        for metric in (
            self.height, self.view, self.blocks, self.txs, self.block_interval,
            self.commit_latency, self.write_latency, self.mempool_size, self.mempool_bytes,
            self.syncing, self.sync_blocks, self.evidence, self.validators,
            self.validators_missing, self.stable_checkpoint, self.peers,
        ):  # fmt: skip
            metric.labels(self.chain_id)  # a series at 0 from the start
        for phase in PHASES:
            self.phase_latency.labels(self.chain_id, phase)
        for generation in ("0", "1", "2"):
            self.gc_pause.labels(self.chain_id, generation)

    # -- sources read at scrape time ----------------------------------------------------

    def bind_sources(
        self,
        *,
        network_stats: Any = None,
        mempool: Any = None,
        replica: Callable[[], Any] | None = None,
        ready: Callable[[], bool] | None = None,
        db_path: Path | None = None,
        node_dropped: Mapping[str, int] | None = None,
    ) -> None:
        """Export layer state at scrape time; each argument left out exports nothing.

        network_stats: network.stats.NetStats; mempool: node.mempool.Mempool;
        replica: returns the current consensus.replica.Replica; ready: the node's
        readiness; db_path: the data directory (its size on disk); node_dropped:
        the node's own {reason: count} of dropped inbound messages.
        """
        s = self._sources
        s.network_stats = network_stats if network_stats is not None else s.network_stats
        s.mempool = mempool if mempool is not None else s.mempool
        s.replica = replica if replica is not None else s.replica
        s.ready = ready if ready is not None else s.ready
        s.db_path = db_path if db_path is not None else s.db_path
        s.node_dropped = node_dropped if node_dropped is not None else s.node_dropped

    def bind_signatures(
        self,
        verified: Callable[[], int],
        skipped: Callable[[], int],
        cached: Callable[[], int] | None = None,
    ) -> None:
        """Export `redwood_signatures_verified_total`, `redwood_signatures_skipped_total`
        and, given `cached`, the gauge `redwood_signatures_cached`."""

        def read() -> dict[str, Any]:
            out: dict[str, Any] = {"verified_total": verified(), "skipped_total": skipped()}
            if cached is not None:
                out["cached"] = cached()
            return out

        self.add_layer(
            "signatures",
            read,
            "Transaction signatures this node checked (admission and proposals) or took as "
            "checked (executing committed blocks, or cached from admission); cached: "
            "checked transactions held until their block executes or they expire.",
        )

    def bind_state_tree(self, cpu_seconds: Callable[[], float]) -> None:
        """Export `redwood_state_tree_cpu_seconds_total` (`Application.state_tree_cpu_s`)."""
        self.add_layer(
            "state_tree",
            lambda: {"cpu_seconds_total": cpu_seconds()},
            "CPU time spent maintaining the state tree: each executed block's update with "
            "its key and value hashes, pruning, and the node cache after the commit. Its "
            "LevelDB writes are not included (they go in the block's batch).",
        )

    def bind_apply_queue(self, driver: Any) -> None:
        """Export `redwood_apply_queue_blocks`, `redwood_apply_queue_bytes` and
        `redwood_apply_queue_waits_total` (node.driver.Driver's counters)."""
        self.add_layer(
            "apply_queue",
            lambda: {
                "blocks": driver.apply_queue_blocks,
                "bytes": driver.apply_queue_bytes,
                "waits_total": driver.apply_queue_waits,
            },
            "Committed blocks handed to execution whose result is not back yet, their "
            "bytes, and hand-overs that waited for room (execution behind agreement).",
        )

    def add_layer(self, name: str, read: Callable[[], dict[str, Any]], help_text: str) -> None:
        """Export a layer's plain counters as `redwood_<name>_<key>` at scrape time.

        Generic fallback for counters `bind_sources` does not know: keys ending in
        `_total` are counters, others gauges; a dict value gives a `kind` label.
        Names that `bind_sources` exports, and non-numeric values, are skipped.
        """
        self.registry.register(
            _LayerCollector(name, read, help_text, self.chain_id, _SourcesCollector.NAMES)
        )

    # -- events the node reports ----------------------------------------------------------

    def observe_sent(self, message: Any) -> None:
        """An own consensus message leaves: starts the phases of its height.

        PRE-PREPARE (primary) or PREPARE (backup) starts `prepare`; COMMIT ends it
        and starts `commit`. Retransmissions are ignored (first send counts).
        """
        kind = type(message).__name__
        height = getattr(message, "height", None)
        if type(height) is not int or kind not in ("PrePrepare", "Prepare", "Commit"):
            return
        now = self._clock()
        if kind == "Commit":
            if ("commit", height) in self._phase_started:
                return
            started = self._phase_started.get(("prepare", height))
            if started is not None:
                self.phase_latency.labels(self.chain_id, "prepare").observe(now - started)
            self._remember_phase("commit", height, now)
        elif ("prepare", height) not in self._phase_started:
            self._remember_phase("prepare", height, now)

    def _remember_phase(self, phase: str, height: int, now: float) -> None:
        if len(self._phase_started) >= PHASE_HEIGHTS_MAX:
            oldest = min(self._phase_started, key=lambda key: key[1])
            del self._phase_started[oldest]
        self._phase_started[(phase, height)] = now

    def observe_committed(self, cb: Any, validators: Sequence[bytes]) -> None:
        """A certified block is committed (call before applying it).

        Ends its `commit` phase and updates the validators missing from its
        certificate, given the validators of the epoch that certified it.
        """
        height = cb.certificate.height
        started = self._phase_started.pop(("commit", height), None)
        self._phase_started.pop(("prepare", height), None)
        if started is not None:
            self.phase_latency.labels(self.chain_id, "commit").observe(self._clock() - started)
        for key in [k for k in self._phase_started if k[1] <= height]:
            del self._phase_started[key]
        signers = {s.replica for s in cb.certificate.signatures}
        members = list(validators)[:VALIDATORS_TRACKED_MAX]
        self.validators_missing.labels(self.chain_id).set(sum(v not in signers for v in members))
        for v in members:
            if v in signers or v not in self._last_signed:
                self._last_signed[v] = height if v in signers else height - 1
            label = v.hex()[:NODE_ID_LABEL_CHARS]
            self.heights_since_signed.labels(self.chain_id, label).set(
                height - self._last_signed[v]
            )
        for gone in [v for v in self._last_signed if v not in members]:
            del self._last_signed[gone]
            self.heights_since_signed.remove(self.chain_id, gone.hex()[:NODE_ID_LABEL_CHARS])

    def observe_blocks_fetched(self, count: int) -> None:
        """A catch-up block response with `count` certified blocks arrived."""
        if count > 0:
            self.sync_blocks.labels(self.chain_id).inc(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)


# -- scrape-time collectors ---------------------------------------------------------------


def _label(value: Any) -> str:
    return str(value)[:LABEL_VALUES_MAX]


def _counts(counter: Any) -> list[tuple[Any, float]]:
    """(key, value) pairs of a Counter/dict, numeric values only, at most LABEL_VALUES_MAX."""
    if not isinstance(counter, Mapping):
        return []
    out = []
    for key, value in list(counter.items())[:LABEL_VALUES_MAX]:
        if isinstance(value, int | float) and not isinstance(value, bool):
            out.append((key, float(value)))
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def dir_size_bytes(path: Path) -> int:
    """Bytes of the regular files under `path` (0 if it does not exist); never raises."""
    total = 0
    stack = [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                        elif entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue  # a file removed by a compaction meanwhile
        except OSError:
            continue
    return total


@dataclass(frozen=True, slots=True)
class _Family:
    name: str  # without _total for counters
    help: str
    labels: tuple[str, ...]
    counter: bool

    def make(self, chain_id: str, rows: Iterable[tuple[tuple[str, ...], float]]) -> Any:
        cls = CounterMetricFamily if self.counter else GaugeMetricFamily
        family = cls(self.name, self.help, labels=("chain_id", *self.labels))
        for values, value in rows:
            family.add_metric([chain_id, *values], value)
        return family


_F = _Family
FAMILIES = {
    "view_changes": _F("redwood_view_changes", "View changes this replica started, by reason.",
                       ("reason",), True),
    "timer_restarts": _F("redwood_view_change_timer_restarts",
                         "Restarts of the view-change timer by the next height's progress, by phase.",
                         ("phase",), True),
    "commit_timeout": _F("redwood_commit_timeout_ticks",
                         "Learned commit timeout in replica ticks (0: none learned yet).", (), False),
    "consensus_dropped": _F("redwood_consensus_dropped_messages",
                            "Consensus messages the replica dropped, by reason.", ("reason",), True),
    "inflight": _F("redwood_inflight_heights",
                   "Heights above the committed height with an accepted pre-prepare.", (), False),
    "net_msgs_sent": _F("redwood_net_messages_sent", "Messages sent to peers, by channel.",
                        ("channel",), True),
    "net_msgs_received": _F("redwood_net_messages_received",
                            "Messages received from peers, by channel.", ("channel",), True),
    "net_bytes_sent": _F("redwood_net_bytes_sent", "Payload bytes sent to peers, by channel.",
                         ("channel",), True),
    "net_bytes_received": _F("redwood_net_bytes_received",
                             "Payload bytes received from peers, by channel.", ("channel",), True),
    "net_dropped": _F("redwood_net_dropped_messages",
                      "Messages the network layer dropped, by channel and reason.",
                      ("channel", "reason"), True),
    "handshakes": _F("redwood_handshake_failures",
                     "Peer connections that failed the authenticated handshake, by reason.",
                     ("reason",), True),
    "reconnects": _F("redwood_net_reconnects",
                     "Peers that connected again after their link had closed.", (), True),
    "mempool_received": _F("redwood_mempool_received",
                           "Transactions offered to the mempool (clients and gossip).", (), True),
    "mempool_rejected": _F("redwood_mempool_rejected",
                           "Transactions the mempool rejected, by reason (rejection code).",
                           ("reason",), True),
    "mempool_evicted": _F("redwood_mempool_evicted",
                          "Transactions evicted from the mempool (expired).", (), True),
    "node_dropped": _F("redwood_node_dropped_messages",
                       "Peer messages the node's inbound router dropped, by reason.",
                       ("reason",), True),
    "ready": _F("redwood_ready",
                "1 when the node is ready (in sync and connected to a quorum), else 0.", (), False),
    "db_size": _F("redwood_db_size_bytes", "Size on disk of the data directory.", (), False),
}  # fmt: skip


# (family key, label values or None to only announce the family, value)
_Row = tuple[str, tuple[str, ...] | None, float]


class _SourcesCollector(Collector):
    """Reads the sources bound by `NodeMetrics.bind_sources` at each scrape."""

    NAMES = frozenset(f.name + ("_total" if f.counter else "") for f in FAMILIES.values())

    def __init__(self, chain_id: str, clock: Callable[[], float]) -> None:
        self.chain_id = chain_id
        self.clock = clock
        self.network_stats: Any = None
        self.mempool: Any = None
        self.replica: Callable[[], Any] | None = None
        self.ready: Callable[[], bool] | None = None
        self.db_path: Path | None = None
        self.node_dropped: Mapping[str, int] | None = None
        self._db_size: tuple[float, int] | None = None

    def describe(self) -> Iterable[Any]:
        """Every family this collector may export (so names are registered up front)."""
        for family in FAMILIES.values():
            yield family.make(self.chain_id, ())

    def collect(self) -> Iterable[Any]:
        rows: dict[str, list[tuple[tuple[str, ...], float]]] = {}
        bound: set[str] = set()
        for read in (self._replica, self._network, self._mempool, self._node):
            try:
                for key, labels, value in read():
                    bound.add(key)
                    if labels is not None:
                        rows.setdefault(key, []).append((labels, value))
            except (AttributeError, TypeError, ValueError, RuntimeError):
                continue  # a layer changed shape: export what the others have
        for key, family in FAMILIES.items():
            if key in bound:
                yield family.make(self.chain_id, rows.get(key, ()))

    def _replica(self) -> Iterable[_Row]:
        replica = self.replica() if self.replica is not None else None
        if replica is None:
            return
        reasons = dict.fromkeys(VIEW_CHANGE_REASONS, 0.0)
        reasons.update(_counts(getattr(replica, "view_change_reasons", None)))
        for reason, value in reasons.items():
            yield "view_changes", (_label(reason),), value
        phases = dict.fromkeys(TIMER_PHASES, 0.0)
        phases.update(_counts(getattr(replica, "timer_restarts", None)))
        for phase, value in phases.items():
            yield "timer_restarts", (_label(phase),), value
        learned = _number(getattr(replica, "commit_timeout_ticks", None))
        if learned is not None:
            yield "commit_timeout", (), learned
        yield "consensus_dropped", None, 0.0
        for reason, value in _counts(getattr(replica, "dropped", None)):
            yield "consensus_dropped", (_label(reason),), value
        inflight = _number(getattr(replica, "inflight_heights", None))
        if inflight is None:
            committed = getattr(replica, "committed_height", 0)
            slots = getattr(replica, "slots", {})
            inflight = float(
                sum(
                    1
                    for h, slot in list(slots.items())
                    if h > committed and getattr(slot, "pre_prepare", None) is not None
                )
            )
        yield "inflight", (), inflight

    def _network(self) -> Iterable[_Row]:
        stats = self.network_stats
        if stats is None:
            return
        for key, attr in (
            ("net_msgs_sent", "messages_sent"),
            ("net_msgs_received", "messages_received"),
            ("net_bytes_sent", "bytes_sent"),
            ("net_bytes_received", "bytes_received"),
        ):
            per_channel = dict.fromkeys(CHANNELS, 0.0)
            per_channel.update(_counts(getattr(stats, attr, None)))
            for channel, value in per_channel.items():
                yield key, (_label(channel),), value
        yield "net_dropped", None, 0.0
        yield "handshakes", None, 0.0
        for key, value in _counts(getattr(stats, "dropped", None)):
            channel, reason = key if isinstance(key, tuple) and len(key) == 2 else ("", key)
            yield "net_dropped", (_label(channel), _label(reason)), value
        for reason, value in _counts(getattr(stats, "handshake_failures", None)):
            yield "handshakes", (_label(reason),), value
        reconnects = _number(getattr(stats, "reconnects", None))
        if reconnects is not None:
            yield "reconnects", (), reconnects

    def _mempool(self) -> Iterable[_Row]:
        m = self.mempool
        if m is None:
            return
        for key, attr in (("mempool_received", "received"), ("mempool_evicted", "evicted")):
            value = _number(getattr(m, attr, None))
            if value is not None:
                yield key, (), value
        yield "mempool_rejected", None, 0.0
        for reason, value in _counts(getattr(m, "rejected", None)):
            yield "mempool_rejected", (_label(reason),), value

    def _node(self) -> Iterable[_Row]:
        if self.node_dropped is not None:
            yield "node_dropped", None, 0.0
            for reason, value in _counts(self.node_dropped):
                yield "node_dropped", (_label(reason),), value
        if self.ready is not None:
            yield "ready", (), 1.0 if self.ready() else 0.0
        if self.db_path is not None:
            now = self.clock()
            if self._db_size is None or now - self._db_size[0] >= DB_SIZE_CACHE_S:
                self._db_size = (now, dir_size_bytes(self.db_path))
            yield "db_size", (), float(self._db_size[1])


class _LayerCollector(Collector):
    """Turns {metric: value or {label: value}} into metric families at scrape time."""

    def __init__(
        self,
        prefix: str,
        read: Callable[[], dict[str, Any]],
        help_text: str,
        chain_id: str,
        reserved: frozenset[str],
    ) -> None:
        self.prefix = prefix
        self.read = read
        self.help_text = help_text
        self.chain_id = chain_id
        self.reserved = reserved

    def collect(self) -> Iterable[Any]:
        try:
            items = sorted(self.read().items())
        except (AttributeError, TypeError, ValueError, RuntimeError):
            return
        for name, value in items:
            full = f"redwood_{self.prefix}_{name}"
            if full in self.reserved or f"{full}_total" in self.reserved:
                continue
            is_counter = name.endswith("_total")
            base = full[: -len("_total")] if is_counter else full
            cls = CounterMetricFamily if is_counter else GaugeMetricFamily
            if isinstance(value, Mapping):
                family = cls(base, self.help_text, labels=["chain_id", "kind"])
                for label, v in sorted(_counts(value), key=lambda kv: str(kv[0])):
                    family.add_metric([self.chain_id, _label(label)], v)
                yield family
            elif (number := _number(value)) is not None:
                family = cls(base, self.help_text, labels=["chain_id"])
                family.add_metric([self.chain_id], number)
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
