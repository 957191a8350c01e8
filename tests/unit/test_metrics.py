"""NodeMetrics: every exposed metric documented (and vice versa), help text, labels,
scrape-time sources read defensively, phase timing, missing validators, the HTTP endpoint."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from network.stats import NetStats
from node.metrics import (
    LABEL_VALUES_MAX,
    VIEW_CHANGE_REASONS,
    NodeMetrics,
    dir_size_bytes,
    serve_metrics,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
CHAIN = "test-chain"
# label values that exist only once something happened (a reason, a validator)
EVENT_LABELLED = {
    "redwood_validator_heights_since_signed", "redwood_consensus_dropped_messages_total",
    "redwood_net_dropped_messages_total", "redwood_handshake_failures_total",
    "redwood_mempool_rejected_total",
}  # fmt: skip


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeSlot:
    pre_prepare: Any = None


@dataclass
class FakeReplica:
    view_change_reasons: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    committed_height: int = 10
    slots: dict[int, FakeSlot] = field(default_factory=dict)
    timer_restarts: Counter[str] = field(default_factory=Counter)
    commit_timeout_ticks: int = 0


@dataclass
class FakeMempool:
    received: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    evicted: int = 0


@dataclass(frozen=True)
class Sig:
    replica: bytes


@dataclass(frozen=True)
class Cert:
    height: int
    signatures: tuple[Sig, ...]


@dataclass(frozen=True)
class CB:
    certificate: Cert


@dataclass(frozen=True)
class Msg:
    height: int


class PrePrepare(Msg):
    pass


class Prepare(Msg):
    pass


class Commit(Msg):
    pass


def full_metrics(tmp_path: Path, clock: FakeClock | None = None) -> NodeMetrics:
    m = NodeMetrics(CHAIN, "ab" * 32, "1.2.3", clock=clock or FakeClock())
    m.bind_sources(
        network_stats=NetStats(),
        mempool=FakeMempool(),
        replica=lambda: FakeReplica(),
        ready=lambda: True,
        db_path=tmp_path,
        node_dropped={"undecodable": 1},
    )
    m.bind_signatures(lambda: 7, lambda: 5, lambda: 3)  # as the node binds them
    m.bind_state_tree(lambda: 1.25)
    m.bind_apply_queue(
        SimpleNamespace(apply_queue_blocks=1, apply_queue_bytes=2, apply_queue_waits=0)
    )
    return m


def scrape(m: NodeMetrics) -> dict[str, Any]:
    """family name (as exposed: counters with _total) -> parsed family.

    The `_created` series of counters and histograms (creation time, added by the
    client library) are parsed as families of their own; they are not listed.
    """
    out = {}
    for family in text_string_to_metric_families(m.render().decode()):
        if family.name.endswith("_created"):
            continue
        name = family.name + ("_total" if family.type == "counter" else "")
        out[name] = family
    return out


def value(m: NodeMetrics, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(m.render().decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def documented() -> set[str]:
    names = set()
    for line in DOC.read_text().splitlines():
        match = re.match(r"\|\s*`([a-z_]+)`\s*\|", line)
        if match:
            names.add(match.group(1))
    return names


def test_every_exposed_metric_is_documented_and_every_documented_one_exposed(
    tmp_path: Path,
) -> None:
    exposed = set(scrape(full_metrics(tmp_path)))
    docs = documented()
    assert len(docs) > 30
    assert exposed - docs == set(), "exposed but not in docs/metrics.md"
    assert docs - exposed == set(), "in docs/metrics.md but not exposed"


def test_every_metric_has_help_text_and_redwood_ones_a_chain_id(tmp_path: Path) -> None:
    families = scrape(full_metrics(tmp_path))
    for name, family in families.items():
        assert family.documentation.strip(), f"{name} has no help text"
        if name.startswith("redwood_"):
            if name not in EVENT_LABELLED:
                assert family.samples, f"{name} has no series at startup"
            for sample in family.samples:
                assert sample.labels.get("chain_id") == CHAIN, (name, sample.labels)


def test_issue_metric_names_are_present(tmp_path: Path) -> None:
    names = set(scrape(full_metrics(tmp_path)))
    for wanted in (
        "redwood_view_changes_total", "redwood_net_bytes_sent_total",
        "redwood_handshake_failures_total", "redwood_mempool_rejected_total",
        "redwood_validators_missing", "redwood_inflight_heights", "redwood_db_size_bytes",
        "redwood_sync_blocks_fetched_total", "redwood_phase_latency_seconds", "redwood_ready",
        "redwood_build_info", "redwood_storage_write_seconds", "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ):  # fmt: skip
        assert wanted in names, wanted


def test_network_stats_are_exported_by_channel_and_reason() -> None:
    m = NodeMetrics(CHAIN, "00", "v")
    stats = NetStats()
    stats.bytes_sent["consensus"] += 1234
    stats.messages_received["tx_gossip"] += 7
    stats.dropped[("tx_gossip", "inbound_full")] += 3
    stats.handshake_failures["wrong_chain"] += 2
    stats.reconnects = 5
    m.bind_sources(network_stats=stats)
    assert value(m, "redwood_net_bytes_sent_total", channel="consensus") == 1234
    assert value(m, "redwood_net_bytes_sent_total", channel="sync") == 0  # pre-initialised
    assert value(m, "redwood_net_messages_received_total", channel="tx_gossip") == 7
    assert (
        value(m, "redwood_net_dropped_messages_total", channel="tx_gossip", reason="inbound_full")
        == 3
    )
    assert value(m, "redwood_handshake_failures_total", reason="wrong_chain") == 2
    assert value(m, "redwood_net_reconnects_total") == 5
    stats.bytes_sent["consensus"] += 1  # read at scrape time, not at bind time
    assert value(m, "redwood_net_bytes_sent_total", channel="consensus") == 1235


def test_mempool_and_replica_counters_are_read_at_scrape_time() -> None:
    m = NodeMetrics(CHAIN, "00", "v")
    pool = FakeMempool(received=10, evicted=1)
    pool.rejected["bad_signature"] += 4
    replica = FakeReplica()
    replica.view_change_reasons["progress_timeout"] += 2
    replica.dropped["stale_view"] += 9
    replica.slots = {9: FakeSlot("pp"), 11: FakeSlot("pp"), 12: FakeSlot("pp"), 13: FakeSlot()}
    m.bind_sources(mempool=pool, replica=lambda: replica)
    assert value(m, "redwood_mempool_received_total") == 10
    assert value(m, "redwood_mempool_evicted_total") == 1
    assert value(m, "redwood_mempool_rejected_total", reason="bad_signature") == 4
    assert value(m, "redwood_view_changes_total", reason="progress_timeout") == 2
    for reason in VIEW_CHANGE_REASONS[1:]:
        assert value(m, "redwood_view_changes_total", reason=reason) == 0
    assert value(m, "redwood_consensus_dropped_messages_total", reason="stale_view") == 9
    assert value(m, "redwood_inflight_heights") == 2  # 11 and 12: above 10, pre-prepared
    replica.timer_restarts["prepared"] += 3
    replica.commit_timeout_ticks = 57
    assert value(m, "redwood_view_change_timer_restarts_total", phase="prepared") == 3
    assert value(m, "redwood_commit_timeout_ticks") == 57


def test_readiness_and_db_size(tmp_path: Path) -> None:
    clock = FakeClock()
    ready = [False]
    m = NodeMetrics(CHAIN, "00", "v", clock=clock)
    (tmp_path / "chain").mkdir()
    (tmp_path / "chain" / "000001.ldb").write_bytes(b"x" * 1000)
    m.bind_sources(ready=lambda: ready[0], db_path=tmp_path)
    assert value(m, "redwood_ready") == 0
    ready[0] = True
    assert value(m, "redwood_ready") == 1
    assert value(m, "redwood_db_size_bytes") == 1000
    (tmp_path / "chain" / "000002.ldb").write_bytes(b"y" * 500)
    assert value(m, "redwood_db_size_bytes") == 1000  # cached
    clock.now += 60
    assert value(m, "redwood_db_size_bytes") == 1500


def test_dir_size_of_a_missing_directory_is_zero(tmp_path: Path) -> None:
    assert dir_size_bytes(tmp_path / "nope") == 0


def test_sources_of_the_wrong_shape_never_break_a_scrape(tmp_path: Path) -> None:
    """Garbage from a layer is skipped; the other metrics are still exported."""
    m = NodeMetrics(CHAIN, "00", "v")
    stats = NetStats()
    stats.bytes_sent["consensus"] = "lots"  # type: ignore[assignment]
    stats.handshake_failures = None  # type: ignore[assignment]

    def broken_replica() -> Any:
        raise RuntimeError("dictionary changed size during iteration")

    m.bind_sources(network_stats=stats, mempool=object(), replica=broken_replica)
    families = scrape(m)
    assert value(m, "redwood_net_bytes_sent_total", channel="consensus") == 0
    assert "redwood_height" in families
    assert "redwood_view_changes_total" not in families


def test_label_values_are_bounded() -> None:
    m = NodeMetrics(CHAIN, "00", "v")
    stats = NetStats()
    for i in range(1000):
        stats.handshake_failures[f"reason{i}"] += 1
    m.bind_sources(network_stats=stats)
    family = scrape(m)["redwood_handshake_failures_total"]
    series = [s for s in family.samples if s.name.endswith("_total")]
    assert len(series) == LABEL_VALUES_MAX


def test_phase_latency_from_own_messages_and_commit() -> None:
    clock = FakeClock()
    m = NodeMetrics(CHAIN, "00", "v", clock=clock)
    m.observe_sent(Prepare(5))
    clock.now += 0.02
    m.observe_sent(Prepare(5))  # retransmission: does not restart the phase
    clock.now += 0.01
    m.observe_sent(Commit(5))
    clock.now += 0.2
    m.observe_sent(Commit(5))  # retransmission
    m.observe_committed(CB(Cert(5, (Sig(b"a"),))), [b"a"])
    prepare_sum = value(m, "redwood_phase_latency_seconds_sum", phase="prepare")
    commit_sum = value(m, "redwood_phase_latency_seconds_sum", phase="commit")
    assert prepare_sum is not None and abs(prepare_sum - 0.03) < 1e-9
    assert commit_sum is not None and abs(commit_sum - 0.2) < 1e-9
    assert value(m, "redwood_phase_latency_seconds_count", phase="commit") == 1


def test_phase_state_is_bounded_and_cleared_by_commits() -> None:
    m = NodeMetrics(CHAIN, "00", "v", clock=FakeClock())
    for h in range(1, 5000):
        m.observe_sent(PrePrepare(h))
    assert len(m._phase_started) <= 1024
    m.observe_committed(CB(Cert(6000, ())), [])
    assert m._phase_started == {}
    m.observe_sent(object())  # not a consensus message: ignored


def test_missing_validators_and_heights_since_signed() -> None:
    m = NodeMetrics(CHAIN, "00", "v")
    a, b, c, d = (bytes([i]) * 32 for i in range(1, 5))
    vals = [a, b, c, d]
    m.observe_committed(CB(Cert(1, (Sig(a), Sig(b), Sig(c)))), vals)
    assert value(m, "redwood_validators_missing") == 1
    for h in range(2, 12):
        m.observe_committed(CB(Cert(h, (Sig(a), Sig(b), Sig(c)))), vals)
    assert value(m, "redwood_validator_heights_since_signed", validator=d.hex()[:16]) == 11
    assert value(m, "redwood_validator_heights_since_signed", validator=a.hex()[:16]) == 0
    m.observe_committed(CB(Cert(12, (Sig(b), Sig(c), Sig(d)))), vals)
    assert value(m, "redwood_validator_heights_since_signed", validator=d.hex()[:16]) == 0
    assert value(m, "redwood_validator_heights_since_signed", validator=a.hex()[:16]) == 1
    m.observe_committed(CB(Cert(13, (Sig(b), Sig(c), Sig(d)))), [b, c, d])  # a left the set
    assert value(m, "redwood_validator_heights_since_signed", validator=a.hex()[:16]) is None
    assert value(m, "redwood_validators_missing") == 0


def test_blocks_fetched_counts_blocks_not_responses() -> None:
    m = NodeMetrics(CHAIN, "00", "v")
    m.observe_blocks_fetched(3)
    m.observe_blocks_fetched(0)
    m.observe_blocks_fetched(5)
    assert value(m, "redwood_sync_blocks_fetched_total") == 8


def test_state_tree_cpu_is_read_at_scrape_time() -> None:
    m = NodeMetrics(CHAIN, "00", "v")
    spent = [0.0]
    m.bind_state_tree(lambda: spent[0])
    assert value(m, "redwood_state_tree_cpu_seconds_total", chain_id=CHAIN) == 0.0
    spent[0] = 2.5
    assert value(m, "redwood_state_tree_cpu_seconds_total", chain_id=CHAIN) == 2.5


def test_signature_counters_and_the_cached_gauge_are_read_at_scrape_time() -> None:
    m = NodeMetrics(CHAIN, "00", "v")
    cache = [0]
    m.bind_signatures(lambda: 7, lambda: 5, lambda: cache[0])
    assert value(m, "redwood_signatures_verified_total", chain_id=CHAIN) == 7
    assert value(m, "redwood_signatures_skipped_total", chain_id=CHAIN) == 5
    assert value(m, "redwood_signatures_cached", chain_id=CHAIN) == 0
    cache[0] = 14_000
    assert value(m, "redwood_signatures_cached", chain_id=CHAIN) == 14_000
    bare = NodeMetrics(CHAIN, "00", "v")
    bare.bind_signatures(lambda: 1, lambda: 2)  # without a cache: no gauge
    assert value(bare, "redwood_signatures_cached", chain_id=CHAIN) is None


def test_add_layer_skips_bound_names_and_garbage() -> None:
    m = NodeMetrics(CHAIN, "00", "v")
    m.bind_sources(network_stats=NetStats())
    m.add_layer(
        "net",
        lambda: {
            "bytes_sent_total": {"consensus": 99},  # exported by bind_sources: skipped
            "frames_sent_total": 4,
            "weird": {"x": object()},
            "peers_table": object(),
        },
        "Network layer counter.",
    )
    assert value(m, "redwood_net_bytes_sent_total", channel="consensus") == 0
    assert value(m, "redwood_net_frames_sent_total") == 4
    assert "redwood_net_peers_table" not in scrape(m)


def test_two_nodes_in_one_process_have_separate_registries() -> None:
    one, two = NodeMetrics("a", "01", "v"), NodeMetrics("b", "02", "v")
    one.blocks.labels("a").inc(3)
    assert value(one, "redwood_blocks_committed_total") == 3
    assert value(two, "redwood_blocks_committed_total") == 0


async def test_metrics_endpoint_serves_the_registry_over_http() -> None:
    m = NodeMetrics(CHAIN, "00", "v")
    m.height.labels(CHAIN).set(42)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_metrics, m, "127.0.0.1", 0)
        with trio.fail_after(10):
            async with httpx.AsyncClient() as client:
                response = await client.get(f"http://127.0.0.1:{port}/metrics")
        assert response.status_code == 200
        assert 'redwood_height{chain_id="test-chain"} 42.0' in response.text
        nursery.cancel_scope.cancel()


def test_apply_queue_is_read_at_scrape_time() -> None:
    m = NodeMetrics(CHAIN, "00", "v")
    driver = SimpleNamespace(apply_queue_blocks=0, apply_queue_bytes=0, apply_queue_waits=0)
    m.bind_apply_queue(driver)
    assert value(m, "redwood_apply_queue_blocks", chain_id=CHAIN) == 0
    driver.apply_queue_blocks, driver.apply_queue_bytes, driver.apply_queue_waits = 3, 4_500_000, 7
    assert value(m, "redwood_apply_queue_blocks", chain_id=CHAIN) == 3
    assert value(m, "redwood_apply_queue_bytes", chain_id=CHAIN) == 4_500_000
    assert value(m, "redwood_apply_queue_waits_total", chain_id=CHAIN) == 7
