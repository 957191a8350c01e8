"""The view-change timer against slow heights, and against primaries that stall.

The replica's progress timer restarts when the lowest uncommitted height gets
a pre-prepare accepted, becomes prepared or commits (consensus/replica.py,
"Progress timer"). These scenarios pin down both sides of that rule on the
real replica, every step judged by the state checker:

- a healthy cluster whose heights take about two timeouts from pre-prepare
  to commit (one-way delays of 0.7 timeouts; the simulator's stand-in for
  machines too busy to go faster, as in a 16-node run on 2 cores) commits
  steadily without a single view change. Before the rule every replica
  started view changes over and over (~70-140 in a simulated minute);
- a crashed primary, one that proposes nothing, and faulty primaries that
  pre-prepare but never let the lowest height prepare are still replaced
  within a bound of a few timeouts.
"""

from __future__ import annotations

import heapq
import itertools
import statistics
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from consensus.types import NewView, PrePrepare, ViewChange
from tests.sim.cluster import TICK_MS, Cluster, SimOptions
from tests.sim.packet_simulator import NetworkOptions
from tests.sim.sim_node import SimNode

pytest.importorskip("consensus.replica", reason="the replica has not landed yet")

TIMEOUT_TICKS = 10  # a 1 s base timeout (ticks of 100 ms)
TIMEOUT_MAX_MS = (TIMEOUT_TICKS + TIMEOUT_TICKS // 2) * TICK_MS  # base + largest jitter
NEW_VIEW_MS = 1_000  # VIEW-CHANGEs and a NEW-VIEW on a fast network, with room to spare
SLOW_DELAY_MS = 700  # one-way: each phase < one timeout, a height ~2 timeouts
BOUND_MS = 60_000

SEND, NEVER = 0, None
Script = Callable[[Any, bytes], int | None]  # (message, destination) -> ms it is held, or NEVER


class ScriptedCluster(Cluster):
    """A cluster that records when each block commits, and lets a script decide when,
    if ever, each message of a faulty node leaves (`scripts`, by slot: a primary that
    withholds or delays its pre-prepares, a partner that sends no VIEW-CHANGE)."""

    def __init__(self, options: SimOptions) -> None:
        super().__init__(options)
        self.commit_ms: dict[tuple[int, int], int] = {}  # (slot, height) -> simulated ms
        self.last_commit_ms: dict[int, int] = {}  # view of the certificate -> simulated ms
        self.scripts: dict[int, Script] = {}
        # a busy CPU per node: each delivered message waits for the ones before it and then
        # takes cpu_ms(slot, message) to process (None: instant, the default simulator)
        self.cpu_ms: Callable[[int, Any], int] | None = None
        self._cpu_busy_until_ms: dict[int, int] = {}
        self._cpu_queue: list[tuple[int, int, Any]] = []  # (done ms, seq, packet)
        self._held: list[tuple[int, int, SimNode, bytes, Any]] = []  # (release ms, seq, ...)
        self._held_seq = 0

    def on_commit(self, node: SimNode, cb: Any) -> None:
        super().on_commit(node, cb)
        self.commit_ms[(node.slot, cb.block.header.height)] = self.now_ms
        self.last_commit_ms[cb.certificate.view] = self.now_ms

    def _route(self, node: SimNode, to: bytes | None, payload: Any) -> None:
        script = self.scripts.get(node.slot)
        if script is None:
            super()._route(node, to, payload)
            return
        targets = [to] if to is not None else [v for v in self.validators if v != node.node_id]
        for peer in targets:
            hold_ms = script(payload, peer)
            if hold_ms == SEND:
                super()._route(node, peer, payload)
            elif hold_ms is not NEVER:
                release_ms = self.now_ms + hold_ms
                self._held_seq += 1
                heapq.heappush(self._held, (release_ms, self._held_seq, node, peer, payload))
                self._schedule(release_ms, "release", node.slot)

    def _on_event(self, kind: str, slot: int) -> None:
        if kind == "release":
            while self._held and self._held[0][0] <= self.now_ms:
                _, _, node, peer, payload = heapq.heappop(self._held)
                if node.up:
                    super()._route(node, peer, payload)
        elif kind == "cpu":
            while self._cpu_queue and self._cpu_queue[0][0] <= self.now_ms:
                super()._deliver(heapq.heappop(self._cpu_queue)[2])
        else:
            super()._on_event(kind, slot)

    def _deliver(self, packet: Any) -> None:
        if self.cpu_ms is None:
            super()._deliver(packet)
            return
        start_ms = max(self.now_ms, self._cpu_busy_until_ms.get(packet.dst, 0))
        done_ms = start_ms + self.cpu_ms(packet.dst, packet.payload)
        self._cpu_busy_until_ms[packet.dst] = done_ms
        self._held_seq += 1
        heapq.heappush(self._cpu_queue, (done_ms, self._held_seq, packet))
        self._schedule(done_ms, "cpu", packet.dst)


def _cluster(
    n: int = 4, depth: int = 4, delay_ms: int = 10, faulty: tuple[int, ...] = ()
) -> ScriptedCluster:
    """`faulty`: validator indices that run the protocol but whose sends the test may
    script (`cluster.scripts`); the checker does not count them as correct."""
    network = NetworkOptions(
        node_count=0, one_way_delay_min_ms=delay_ms, one_way_delay_mean_ms=delay_ms + 20
    )
    options = SimOptions(
        seed=1,
        n=n,
        network=network,
        pipeline_depth=depth,
        view_change_timeout_ticks=TIMEOUT_TICKS,
        byzantine=tuple((i, frozenset[str]()) for i in faulty),
    )
    return ScriptedCluster(options)


def _view_changes(cluster: Cluster) -> Counter[str]:
    total: Counter[str] = Counter()
    for node in cluster.nodes:
        if node.up:
            total.update(node.replica.view_change_reasons)
    return total


def _until_height(cluster: Cluster, height: int) -> None:
    ok = cluster.run_until(
        lambda: cluster.correct_height_min() >= height, cluster.now_ms + BOUND_MS
    )
    assert ok, f"heights {[node.height for node in cluster.nodes]} did not all reach {height}"


def _ms_until_replaced(cluster: Cluster, backups: list[SimNode], old_view: int) -> int:
    """Simulated ms until every node in `backups` works in a view above `old_view`."""
    start = cluster.now_ms
    ok = cluster.run_until(
        lambda: all(b.replica.view > old_view and not b.replica.in_view_change for b in backups),
        start + BOUND_MS,
    )
    views = [(b.replica.view, b.replica.in_view_change) for b in backups]
    assert ok, f"the primary of view {old_view} was never replaced: {views}"
    return cluster.now_ms - start


# -- a slow but healthy pipeline ----------------------------------------------------------


@pytest.mark.parametrize(("n", "depth"), [(4, 1), (7, 1), (10, 1), (4, 4), (7, 4)])
def test_heights_slower_than_the_timeout_commit_without_view_changes(n: int, depth: int) -> None:
    """Pre-prepare to commit takes ~2 base timeouts (three one-way delays of 0.7 timeouts);
    every phase alone takes less than one. No replica may suspect the primary, and the
    chain commits at the rate the delays allow. The old timer (restarted only by
    commits) failed this with 64-143 view changes per simulated minute at these sizes."""
    cluster = _cluster(n=n, depth=depth, delay_ms=SLOW_DELAY_MS)
    cluster.run_for(60_000)
    assert _view_changes(cluster) == Counter()
    assert all(node.replica.view == 0 for node in cluster.nodes)
    # the chain moves at the pace of the network: one height per three delays per depth
    ideal = depth * 60_000 // (3 * (SLOW_DELAY_MS + 20))
    assert cluster.correct_height_min() >= ideal * 8 // 10, (ideal, cluster.correct_height_min())
    # ... and a height really does take longer than the largest timeout
    latencies = [
        cluster.commit_ms[(node.slot, h)] - node.chain[h - 1].block.header.timestamp_ms
        for node in cluster.nodes
        for h in range(2, node.height + 1)
    ]
    assert statistics.median(latencies) > TIMEOUT_MAX_MS
    restarts = Counter[str]()
    for node in cluster.nodes:
        restarts.update(node.replica.timer_restarts)
    assert restarts["pre_prepared"] > 0 and restarts["prepared"] > 0


def _busy_cpus(cluster: ScriptedCluster, block_check_ms: int, message_ms: int = 10) -> None:
    """Every node spends `block_check_ms` on each block it has not seen before (a
    pre-prepare's, or a NEW-VIEW's re-proposals) and `message_ms` on any other message,
    one message at a time in arrival order: votes wait behind the checks of blocks."""
    seen: set[tuple[int, bytes]] = set()

    def cost_ms(slot: int, message: Any) -> int:
        if isinstance(message, PrePrepare | NewView):
            pps = [message] if isinstance(message, PrePrepare) else list(message.pre_prepares)
            new = {(slot, pp.digest) for pp in pps} - seen
            seen.update(new)
            return message_ms + block_check_ms * len(new)
        return message_ms

    cluster.cpu_ms = cost_ms


@pytest.mark.parametrize("n", [4, 7])
def test_saturated_pipeline_learns_a_commit_timeout_and_settles(n: int) -> None:
    """Each node checks each block for 0.9 base timeouts, and PREPAREs and COMMITs queue
    behind those checks, so a height is prepared when it becomes the lowest and the gaps
    between commits run to several timeouts. The replicas may suspect the primary while
    they learn the pace (the first 20 s) but never afterwards, for 100 s. With phase
    restarts alone this thrashed: 104 view changes in 120 s for n = 4 (with a block check
    of 0.6 timeouts), and the old timer likewise."""
    cluster = _cluster(n=n, depth=4)
    _busy_cpus(cluster, block_check_ms=TIMEOUT_TICKS * TICK_MS * 9 // 10)
    cluster.run_for(20_000)
    learned = _view_changes(cluster)
    start_ms, start_height = cluster.now_ms, cluster.correct_height_min()
    cluster.run_for(100_000)
    assert _view_changes(cluster) == learned
    assert cluster.correct_height_min() >= start_height + 50
    commits_ms = sorted(ms for (slot, _), ms in cluster.commit_ms.items() if slot == 1)
    gaps_ms = [b - a for a, b in itertools.pairwise(t for t in commits_ms if t >= start_ms)]
    assert max(gaps_ms) > 2 * TIMEOUT_MAX_MS  # the pace really is slower than a timeout
    learners = [node for node in cluster.nodes if node.replica.commit_timeout_ticks > TIMEOUT_TICKS]
    assert len(learners) >= cluster.quorum


# -- primaries that stop, or stall ----------------------------------------------------------


@pytest.mark.parametrize("delay_ms", [10, SLOW_DELAY_MS])
def test_crashed_primary_is_replaced_within_a_timeout_of_the_last_commit(delay_ms: int) -> None:
    """Crash the primary. The heights it already pre-prepared may still commit (the
    backups are a quorum); one timeout -- or the commit timeout learned from recent
    gaps, if longer -- after the last commit, plus the VIEW-CHANGE / NEW-VIEW exchange,
    the backups work in the next view. On a fast network the gaps are short and
    nothing is learned: exactly one timeout, as before the progress timer."""
    cluster = _cluster(delay_ms=delay_ms)
    _until_height(cluster, 5)
    primary = next(node for node in cluster.nodes if node.replica.is_primary)
    view = primary.replica.view
    cluster.crash(primary.slot)
    backups = [node for node in cluster.correct_nodes() if node is not primary]
    _ms_until_replaced(cluster, backups, old_view=view)
    since_commit_ms = cluster.now_ms - cluster.last_commit_ms[view]
    learned_ms = max(node.replica.commit_timeout_ticks for node in backups) * TICK_MS
    exchange_ms = NEW_VIEW_MS + 3 * delay_ms  # VIEW-CHANGEs in, NEW-VIEW out, with jitter
    assert since_commit_ms <= max(TIMEOUT_MAX_MS, learned_ms) + exchange_ms, (
        since_commit_ms,
        learned_ms,
    )
    if delay_ms < 100:
        assert learned_ms < TIMEOUT_TICKS * TICK_MS
    cluster.restart(primary.slot)
    cluster.check_liveness(3, BOUND_MS)


def test_primary_that_proposes_nothing_is_replaced_in_one_timeout() -> None:
    """The primary stays up and votes, but sends no pre-prepare while clients wait."""
    cluster = _cluster(faulty=(0,))
    _until_height(cluster, 5)
    cluster.scripts[0] = lambda message, to: (
        NEVER if isinstance(message, PrePrepare) and message.view == 0 else SEND
    )
    cluster.run_until(lambda: False, cluster.now_ms + 300)  # blocks already sent land
    backups = cluster.correct_nodes()
    heights = [node.height for node in backups]
    elapsed_ms = _ms_until_replaced(cluster, backups, old_view=0)
    assert elapsed_ms <= TIMEOUT_MAX_MS + NEW_VIEW_MS, elapsed_ms
    reasons = _view_changes(cluster)
    assert reasons["progress_timeout"] >= 2, reasons
    cluster.check_liveness(3, BOUND_MS)
    assert min(node.height for node in backups) > max(heights)


@pytest.mark.parametrize("n", [4, 7])
def test_primary_that_pre_prepares_to_too_few_is_replaced(n: int) -> None:
    """A faulty primary sends each pre-prepare to only q-2 correct replicas (f of 3 for
    n = 4; f+1 of 5 for n = 7, where a second faulty validator sends no VIEW-CHANGE):
    with their own PREPAREs they are one short of a prepared certificate, so the lowest
    height never prepares. It also holds each one back as long as it dares, 0.9 base
    timeouts per height, so that a new pre-prepare lands just before each timer would
    expire. The ones reached restart their timers once, for the lowest height only, and
    must give up one timeout later; for n = 7 the f unreached ones cannot pull them into
    a view change (f+1 needed), so this checks that the later pre-prepares renew
    nothing: the primary is out within two timeouts of the last commit."""
    cluster = _cluster(n=n, faulty=(0, 1) if n == 7 else (0,))
    _until_height(cluster, 5)
    reach = {node.node_id for node in cluster.correct_nodes()[: cluster.quorum - 2]}
    first = cluster.nodes[0].replica.next_height
    stagger_ms = TIMEOUT_TICKS * TICK_MS * 9 // 10

    def script(message: Any, to: bytes) -> int | None:
        if isinstance(message, ViewChange):
            return NEVER  # it does not help to replace itself
        if not isinstance(message, PrePrepare) or message.view != 0:
            return SEND
        if to not in reach or message.height < first:
            return NEVER
        release_ms = attack_ms + (message.height - first + 1) * stagger_ms
        return max(SEND, release_ms - cluster.now_ms)

    attack_ms = cluster.now_ms
    cluster.scripts[0] = script
    if n == 7:
        cluster.scripts[1] = lambda message, to: NEVER if isinstance(message, ViewChange) else SEND
    backups = cluster.correct_nodes()
    reached = [node for node in backups if node.node_id in reach]
    before = [node.replica.timer_restarts["pre_prepared"] for node in reached]
    _ms_until_replaced(cluster, backups, old_view=0)
    after = [node.replica.timer_restarts["pre_prepared"] for node in reached]
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)
    since_commit_ms = cluster.now_ms - cluster.last_commit_ms[0]
    assert since_commit_ms <= 2 * TIMEOUT_MAX_MS + NEW_VIEW_MS, since_commit_ms
    cluster.check_liveness(3, BOUND_MS)


def test_primary_that_withholds_the_lowest_height_but_pre_prepares_higher_ones() -> None:
    """Pre-prepares for the heights above the lowest uncommitted one restart nothing:
    the backups hold them (their parent never came) and replace the primary one
    timeout after the last commit."""
    cluster = _cluster(depth=4, faulty=(0,))
    _until_height(cluster, 5)
    withheld = cluster.nodes[0].replica.next_height
    cluster.scripts[0] = lambda message, to: (
        NEVER if isinstance(message, PrePrepare) and message.height == withheld else SEND
    )
    backups = cluster.correct_nodes()
    ok = cluster.run_until(
        lambda: all(node.replica.held for node in backups), cluster.now_ms + 10_000
    )
    assert ok, "the primary pre-prepared nothing above the withheld height"
    elapsed_ms = _ms_until_replaced(cluster, backups, old_view=0)
    assert elapsed_ms <= TIMEOUT_MAX_MS + NEW_VIEW_MS, elapsed_ms
    assert all(node.height == withheld - 1 or node.replica.view > 0 for node in backups)
    cluster.check_liveness(3, BOUND_MS)
