"""The simulation: N replicas, a packet simulator, clients, faults and the checker.

Modelled on TigerBeetle's VOPR. One seed fixes everything: the fault profile
(`SimOptions.from_seed`), every random draw (one `random.Random` per concern,
all derived from the seed), hence the whole run. Time is simulated in
milliseconds; a replica ticks every ~100 ms of its own clock (clocks run at
different rates), the network delivers packets at their drawn times, and a
*fault tick* every 100 ms moves partitions and clogs, lets clients submit
transactions and may arm a crash.

A run has two phases: `fault_ms` of faults, then `heal()` (network whole,
every crashed node restarted, no new crashes; Byzantine nodes stay Byzantine)
after which every correct replica (of the final validator set) must commit
`liveness_blocks` blocks beyond the highest height any of them had at the
heal, within `liveness_bound_ms` (by default n + 2 view-change timeouts at
full back-off, plus 30 s). The state checker judges every send and commit on the
way. A failure raises `SimFailure`, whose message names the seed and the
command that replays it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from consensus import codec
from consensus.crypto import sha256
from consensus.types import CertifiedBlock, Evidence
from tests.sim.byzantine import BEHAVIOURS, COLLUDE, Byzantine, Collusion
from tests.sim.fake_crypto import make_keys
from tests.sim.packet_simulator import (
    NetworkOptions,
    PacketSimulator,
    PartitionMode,
    PartitionSymmetry,
)
from tests.sim.sim_node import GENESIS_STATE_ROOT, CrashPoint, Role, SimNode
from tests.sim.state_checker import StateChecker, Violation

CHAIN_ID = "redwood-sim"
TICK_MS = 100  # the node's nominal tick; 1 tick = 100 ms simulated
FAULT_TICK_MS = 100
EVIDENCE_MAX = 1_000
FIRST_BEHAVIOURS = 7  # how many of byzantine.BEHAVIOURS the first profile generator knew
# Profile generator versions: 1 = first; 2 = + bad_state_claim, forged_view_change;
# 3 = + colluding Byzantine nodes (at most f); 4 = + membership changes (epochs);
# 5 = + slow links (mean one-way delay 200-800 ms) on some seeds; 6 = + observers.
# Later features draw from their own random stream, so a seed's earlier draws
# never change.
PROFILE_GENERATION = 6
REPLAY_COMMAND = "pytest tests/sim/test_sweep.py::test_replay --sim-seed-start {seed} --sim-seeds 1"


@dataclass(frozen=True, slots=True)
class SimOptions:
    seed: int
    n: int = 4
    twins: tuple[int, ...] = ()  # validator indices whose key a second node also holds
    byzantine: tuple[tuple[int, frozenset[str]], ...] = ()  # (validator index, behaviours)
    network: NetworkOptions | None = None  # node_count is filled in by the cluster
    use_codec: bool = False  # every payload travels as bytes through consensus.codec
    real_crypto: bool = False
    fault_ms: int = 10_000
    liveness_bound_ms: int | None = None  # None: derived from the view-change timeouts
    liveness_blocks: int = 2
    crash_probability: float = 0.0  # per node per fault tick
    crash_points: tuple[CrashPoint, ...] = tuple(CrashPoint)  # where armed crashes strike
    down_ms_min: int = 200
    down_ms_max: int = 3_000
    clock_skew: float = 0.0  # tick period = TICK_MS * (1 ± skew), per node
    clients: int = 2
    txs_per_client_per_tick: int = 2
    pipeline_depth: int = 4
    checkpoint_interval: int = 16
    view_change_timeout_ticks: int = 20
    oversized: bool = False  # Byzantine nodes may send a >32 MiB message (slow: rare)
    # membership change decided when block `epoch_change_height` executes (as a governance
    # transaction would be): "rotate" the primary order, or "remove" one validator
    epoch_change: str | None = None
    epoch_change_height: int = 10
    observers: int = 0  # non-validator nodes that follow the chain from gossiped blocks
    trace: bool = False  # fingerprint every payload (determinism tests)

    @property
    def f(self) -> int:
        return (self.n - 1) // 3

    @staticmethod
    def from_seed(
        seed: int,
        *,
        n: int | None = None,
        faulty_max: int | None = None,
        generation: int = PROFILE_GENERATION,
    ) -> SimOptions:
        """A random fault profile: every fault class, at a random intensity.

        `generation` pins the generator's version: regression seeds found with an
        older generator keep replaying the profile they were found with.
        """
        return _random_options(seed, n=n, faulty_max=faulty_max, generation=generation)

    def describe(self) -> str:
        net = self.network
        parts = [
            f"seed={self.seed} n={self.n}",
            f"byzantine={[(i, sorted(b)) for i, b in self.byzantine]}" if self.byzantine else "",
            f"twins={list(self.twins)}" if self.twins else "",
            "codec" if self.use_codec else "",
            "ed25519" if self.real_crypto else "",
            f"crash_p={self.crash_probability:.3f}" if self.crash_probability else "",
            f"epoch={self.epoch_change}@{self.epoch_change_height}" if self.epoch_change else "",
            f"observers={self.observers}" if self.observers else "",
        ]
        if net is not None:
            parts.append(
                f"loss={net.packet_loss_probability:.2f} dup={net.packet_replay_probability:.2f} "
                f"delay={net.one_way_delay_mean_ms}ms partitions={net.partition_mode.value}/"
                f"{net.partition_symmetry.value} clog_p={net.path_clog_probability:.3f}"
            )
        return " ".join(p for p in parts if p)


def _random_options(
    seed: int, *, n: int | None, faulty_max: int | None, generation: int
) -> SimOptions:
    rng = random.Random(f"options/{seed}")
    n = n if n is not None else (4, 7, 10)[seed % 3]
    f = (n - 1) // 3
    faulty = rng.randint(0, f if faulty_max is None else faulty_max)
    indices = rng.sample(range(n), faulty)
    twins = tuple(sorted(i for i in indices if rng.random() < 0.25))
    # Behaviours added later draw from their own stream, so that existing seeds
    # (and the regression seeds that name them) keep their profiles.
    later = random.Random(f"options/later/{seed}")
    extra = BEHAVIOURS[FIRST_BEHAVIOURS:] if generation >= 2 else ()
    byzantine = tuple(
        (
            i,
            frozenset(b for b in BEHAVIOURS[:FIRST_BEHAVIOURS] if rng.random() < 0.5)
            | frozenset(b for b in extra if later.random() < 0.5),
        )
        for i in sorted(indices)
        if i not in twins
    )
    if generation >= 3 and byzantine and later.random() < 0.2:
        byzantine = tuple((i, b | {COLLUDE}) for i, b in byzantine)  # f colluders: harmless
    epoch_change = None
    if generation >= 4 and later.random() < 0.25:
        epoch_change = later.choice(("rotate", "remove"))
    epoch_change_height = later.randint(3, 30)
    network = NetworkOptions(
        node_count=0,
        one_way_delay_min_ms=rng.randint(1, 5),
        one_way_delay_mean_ms=rng.randint(5, 60),
        packet_loss_probability=rng.choice((0.0, 0.01, 0.05, 0.1, 0.2)),
        packet_replay_probability=rng.choice((0.0, 0.01, 0.05, 0.1)),
        partition_mode=rng.choice(list(PartitionMode)),
        partition_symmetry=rng.choice(list(PartitionSymmetry)),
        partition_probability=rng.uniform(0.0, 0.1),
        unpartition_probability=rng.uniform(0.05, 0.3),
        partition_stability_ms=rng.randint(200, 3_000),
        unpartition_stability_ms=rng.randint(200, 3_000),
        path_maximum_capacity=rng.choice((16, 64, 256)),
        path_clog_probability=rng.choice((0.0, 0.001, 0.005)),
        path_clog_duration_mean_ms=rng.randint(100, 2_000),
    )
    if generation >= 5 and later.random() < 0.1:  # slow links: delays of several ticks
        slow = later.randint(200, 800)
        network = dataclasses.replace(network, one_way_delay_mean_ms=slow)
    observers = later.randint(1, 2) if generation >= 6 and later.random() < 0.3 else 0
    return SimOptions(
        seed=seed,
        n=n,
        twins=twins,
        byzantine=byzantine,
        network=network,
        use_codec=rng.random() < 0.5,
        fault_ms=rng.randint(3_000, 10_000),
        crash_probability=rng.choice((0.0, 0.002, 0.01, 0.03)),
        clock_skew=rng.uniform(0.0, 0.3),
        pipeline_depth=rng.randint(1, 4),
        checkpoint_interval=rng.choice((4, 8, 16, 64)),
        view_change_timeout_ticks=rng.randint(5, 20),
        oversized=rng.random() < 0.1,
        epoch_change=epoch_change,
        epoch_change_height=epoch_change_height,
        observers=observers,
    )


class SimFailure(AssertionError):
    """A run broke an invariant (or the replica raised); the message replays it."""

    def __init__(self, options: SimOptions, kind: str, detail: str) -> None:
        self.options = options
        self.kind = kind
        self.seed = options.seed
        replay = REPLAY_COMMAND.format(seed=options.seed)
        super().__init__(
            f"simulation seed {options.seed} failed: {kind}: {detail}\n"
            f"  profile: {options.describe()}\n  replay: {replay}"
        )


@dataclass(slots=True)
class SimResult:
    options: SimOptions
    now_ms: int
    heights: dict[str, int]
    trace_digest: str
    events: int
    stats: Counter[str] = field(default_factory=Counter)

    @property
    def simulated_s(self) -> float:
        return self.now_ms / 1000


Factory = Callable[[SimNode], Any]


class Cluster:
    """One simulated cluster. `run()` does the whole two-phase run; tests may script instead."""

    def __init__(self, options: SimOptions, replica_factory: Factory | None = None) -> None:
        self.options = options
        self.seed = options.seed
        self.chain_id = CHAIN_ID
        self.epoch = 0
        seed = options.seed
        self.rng = random.Random(f"cluster/{seed}")
        self.genesis_hash = sha256(b"redwood-sim/genesis/%d" % seed)
        keys, self.verifier = make_keys(
            options.n + options.observers, seed, real=options.real_crypto
        )
        self.keys = keys
        self.validators: tuple[bytes, ...] = tuple(k.public for k in keys[: options.n])
        self.quorum = (options.n + options.f) // 2 + 1
        self._factory = replica_factory or _real_replica_factory
        # the journal's format is the real replica's (consensus.journal_codec)
        self.check_vote_durability = replica_factory is None
        self.checker = StateChecker(
            chain_id=CHAIN_ID,
            validators=self.validators,
            quorum=self.quorum,
            epoch=self.epoch,
            verifier=self.verifier,
            genesis_hash=self.genesis_hash,
            genesis_root=GENESIS_STATE_ROOT,
        )
        self.nodes = self._make_nodes(keys)
        self.correct_ids = frozenset(node.node_id for node in self.nodes if node.correct)
        self.epoch_plan = self._plan_epochs()
        for first, epoch, members in self.epoch_plan[1:]:
            self.checker.add_epoch(first, epoch, members)
        self.slots_of: dict[bytes, list[int]] = {}
        for node in self.nodes:
            self.slots_of.setdefault(node.node_id, []).append(node.slot)
        net = options.network or NetworkOptions(node_count=0)
        net = dataclasses.replace(net, node_count=len(self.nodes))
        self.network = PacketSimulator(net, random.Random(f"network/{seed}"))
        self.now_ms = 0
        self._events: list[tuple[int, int, str, int]] = []
        self._seq = 0
        self._trace = hashlib.sha256()
        self.event_count = 0
        self.tx_counter = 0
        self.auto_restart = options.crash_probability > 0
        self.crashes_enabled = options.crash_probability > 0
        self.healed_at_ms: int | None = None
        self.evidence: list[tuple[str, Evidence]] = []
        self.stats: Counter[str] = Counter()
        self.started = False

    def _make_nodes(self, keys: list[Any]) -> list[SimNode]:
        o = self.options
        byz = dict(o.byzantine)
        nodes: list[SimNode] = []
        collusion = None
        if any(COLLUDE in b for b in byz.values()):
            honest = sorted(k.public for i, k in enumerate(keys) if i not in byz)
            collusion = Collusion(frozenset(honest[len(honest) // 2 :]))
        plan = [(i, False) for i in range(o.n)] + [(i, True) for i in o.twins]
        plan += [(o.n + i, False) for i in range(o.observers)]
        for slot, (index, second) in enumerate(plan):
            key = keys[index]
            rng = random.Random(f"node/{o.seed}/{slot}")
            if index in o.twins:
                role = Role.TWIN
            elif index in byz:
                role = Role.BYZANTINE
            else:
                role = Role.CORRECT
            behaviour = None
            if role is Role.BYZANTINE:
                behaviour = Byzantine(
                    byz[index],
                    rng=random.Random(f"byzantine/{o.seed}/{slot}"),
                    key=key,
                    chain_id=CHAIN_ID,
                    validators=tuple(k.public for k in keys[: o.n]),
                    oversized=o.oversized,
                    collusion=collusion if COLLUDE in byz[index] else None,
                )
            offset = rng.randint(0, 50)
            node = SimNode(self, slot, key, role, behaviour, rng, offset)
            if second:
                node.name = f"twin{index}'"
            if index >= o.n:
                node.observer = True
                node.name = f"observer{slot}"
            node.tick_ms = max(10, round(TICK_MS * (1 + rng.uniform(-o.clock_skew, o.clock_skew))))
            nodes.append(node)
        return nodes

    # -- membership ------------------------------------------------------------------------

    def _plan_epochs(self) -> list[tuple[int, int, tuple[bytes, ...]]]:
        """[(first height, epoch, validators)]: genesis, then the scripted change if any."""
        o = self.options
        plan = [(1, self.epoch, self.validators)]
        if o.epoch_change is None:
            return plan
        interval = o.checkpoint_interval
        first = ((o.epoch_change_height + o.pipeline_depth) // interval + 1) * interval + 1
        if o.epoch_change == "rotate":
            members = self.validators[1:] + self.validators[:1]
        else:
            members = self._after_removal()
        plan.append((first, self.epoch + 1, members))
        return plan

    def _after_removal(self) -> tuple[bytes, ...]:
        """Drop a faulty validator if there is one, else the last one, if faults stay <= f."""
        faulty = [v for v in self.validators if v not in self.correct_ids]
        victim = faulty[-1] if faulty else self.validators[-1]
        members = tuple(v for v in self.validators if v != victim)
        n = len(members)
        if len(faulty) - (victim in faulty) > (n - 1) // 3:
            return self.validators[1:] + self.validators[:1]  # would exceed f: rotate instead
        return members

    def epochs_known_at(self, height: int) -> list[tuple[int, int, tuple[bytes, ...]]]:
        """The epochs a node that has executed `height` knows of."""
        o = self.options
        return [
            e for i, e in enumerate(self.epoch_plan) if i == 0 or height >= o.epoch_change_height
        ]

    def gossip_block(self, node: SimNode, cb: CertifiedBlock) -> None:
        """A correct validator's node spreads each block it committed to the observers."""
        if not self.options.observers or node.observer or not node.correct:
            return
        payload: Any = codec.encode(cb) if self.options.use_codec else cb
        for other in self.nodes:
            if other.observer:
                self.network.submit(self.now_ms, node.slot, other.slot, payload)

    def on_executed(self, node: SimNode, height: int) -> None:
        """The node executed block `height`: the scripted governance change takes effect."""
        if len(self.epoch_plan) > 1 and height == self.options.epoch_change_height:
            first, epoch, members = self.epoch_plan[1]
            node.replica.add_epoch(first, _validator_set(epoch, members))

    @property
    def final_validators(self) -> tuple[bytes, ...]:
        return self.epoch_plan[-1][2]

    # -- the replica ----------------------------------------------------------------------

    def make_replica(self, node: SimNode) -> Any:
        return self._factory(node)

    # -- events --------------------------------------------------------------------------

    def _schedule(self, at_ms: int, kind: str, slot: int = -1) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at_ms, self._seq, kind, slot))

    def start(self) -> None:
        assert not self.started
        self.started = True
        for node in self.nodes:
            self._guard(node.start)
            self._schedule(node.rng.randint(1, node.tick_ms), "tick", node.slot)
        self._schedule(FAULT_TICK_MS, "fault")

    def run_until(self, done: Callable[[], bool], until_ms: int) -> bool:
        """Process events in time order until `done()` or simulated time reaches `until_ms`."""
        if not self.started:
            self.start()
        while not done():
            t_net = self.network.next_delivery_ms()
            t_ev = self._events[0][0] if self._events else None
            nxt = min(t for t in (t_net, t_ev) if t is not None)
            if nxt > until_ms:
                self.now_ms = until_ms
                return False
            self.now_ms = self.checker.now_ms = nxt
            if t_ev is not None and t_ev <= nxt:
                _, _, kind, slot = heapq.heappop(self._events)
                self._guard(lambda k=kind, s=slot: self._on_event(k, s))
            else:
                packet = self.network.pop_due(nxt)
                if packet is not None:
                    self._guard(lambda p=packet: self._deliver(p))
            self.event_count += 1
        return True

    def run_for(self, duration_ms: int) -> None:
        self.run_until(lambda: False, self.now_ms + duration_ms)

    def _guard(self, action: Callable[[], None]) -> None:
        try:
            action()
        except Violation as v:
            raise SimFailure(self.options, v.kind, v.detail) from v
        except Exception as exc:
            detail = f"at t={self.now_ms} ms: {type(exc).__name__}: {exc}"
            raise SimFailure(self.options, "exception", detail) from exc

    def _on_event(self, kind: str, slot: int) -> None:
        if kind == "tick":
            node = self.nodes[slot]
            self._record(b"t", slot)
            node.tick()
            self._schedule(self.now_ms + node.tick_ms, "tick", slot)
        elif kind == "fault":
            self._fault_tick()
            self._schedule(self.now_ms + FAULT_TICK_MS, "fault")
        elif kind == "restart":
            self.restart(slot)

    def _deliver(self, packet: Any) -> None:
        node = self.nodes[packet.dst]
        if not node.up:
            self.stats["dropped_down"] += 1
            return
        self._record(b"d", packet.src, packet.dst, packet.payload)
        node.receive(packet.payload, self.nodes[packet.src].node_id)

    def _record(self, kind: bytes, *args: Any) -> None:
        t = self._trace
        t.update(b"%s%d" % (kind, self.now_ms))
        for a in args:
            if isinstance(a, int):
                t.update(b":%d" % a)
            elif isinstance(a, bytes | bytearray):
                t.update(b"%d" % len(a) + sha256(a[:4096]))
            elif self.options.trace:
                t.update(sha256(codec.encode(a)))
            else:
                t.update(type(a).__name__.encode())

    # -- faults and clients ---------------------------------------------------------------

    def _fault_tick(self) -> None:
        o = self.options
        self.network.fault_tick(self.now_ms)
        self._clients()
        if self.crashes_enabled:
            for node in self.nodes:
                if node.up and node.rng.random() < o.crash_probability:
                    self._arm_random_crash(node)

    def _arm_random_crash(self, node: SimNode) -> None:
        points = self.options.crash_points
        if node.rng.random() < 0.2 or not points:
            self._record(b"c", node.slot)
            node.crash()  # between events: nothing in flight inside the driver
        else:
            node.arm_crash(node.rng.choice(points))

    def _clients(self) -> None:
        o = self.options
        up = [node for node in self.nodes if node.up]
        if not up:
            return
        for client in range(o.clients):
            for _ in range(o.txs_per_client_per_tick):
                self.tx_counter += 1
                tx = b"tx-%d-%d" % (client, self.tx_counter)
                targets = [node for node in up if self.rng.random() < 0.7] or [self.rng.choice(up)]
                for node in targets:
                    node.submit(tx)

    def on_crash(self, node: SimNode) -> None:
        self._record(b"x", node.slot)
        if self.auto_restart:
            o = self.options
            down = node.rng.randint(o.down_ms_min, o.down_ms_max)
            self._schedule(self.now_ms + down, "restart", node.slot)

    def restart(self, slot: int) -> None:
        node = self.nodes[slot]
        if node.up:
            return
        self._record(b"r", slot)
        node.restarts += 1
        node.start()

    def crash(self, slot: int) -> None:
        """Scripted crash of a node between events."""
        node = self.nodes[slot]
        if node.up:
            self._guard(node.crash)

    def heal(self) -> None:
        """End all faults: network whole, crashed nodes restarted, no more crashes."""
        self.network.heal()
        self.crashes_enabled = False
        self.auto_restart = False
        for node in self.nodes:
            node.crash_armed = None
            if not node.up:
                self._guard(lambda s=node.slot: self.restart(s))
        self.healed_at_ms = self.now_ms

    # -- sending ---------------------------------------------------------------------------

    def send(self, node: SimNode, to: bytes | None, message: Any) -> None:
        """What a node's replica (or its block-request answerer) sends."""
        if node.byzantine is not None:
            for dst, payload in node.byzantine.outgoing(to, message):
                self._route(node, dst, payload)
            return
        if node.correct:
            r = node.replica
            if self.check_vote_durability and r is not None:
                durable_from = (r.view, r.stable_height, r.committed_height)
                self.checker.on_send(node.name, node.node_id, message, node.journal, durable_from)
            else:
                self.checker.on_send(node.name, node.node_id, message)
        self._route(node, to, message)

    def send_raw(self, node: SimNode, to: bytes | None, payload: Any) -> None:
        """Traffic a Byzantine node makes up (bytes or objects), unchecked."""
        self._route(node, to, payload)

    def _route(self, node: SimNode, to: bytes | None, payload: Any) -> None:
        if to is None:
            vset = getattr(node.replica, "vset", None)
            members = vset.validators if vset is not None else self.validators
            targets = [v for v in members if v != node.node_id]
        else:
            targets = [to]
        if self.options.use_codec and not isinstance(payload, bytes | bytearray):
            payload = codec.encode(payload)
        now = self.now_ms
        for peer in targets:
            for slot in self.slots_of.get(peer, ()):
                if slot != node.slot:
                    self.network.submit(now, node.slot, slot, payload)

    # -- observations ----------------------------------------------------------------------

    def on_commit(self, node: SimNode, cb: CertifiedBlock) -> None:
        self._record(b"k", node.slot, cb.block.header.height, cb.block.hash())

    def on_evidence(self, node: SimNode, evidence: Evidence) -> None:
        self.stats["evidence"] += 1
        if node.correct:
            self.checker.on_evidence(node.name, evidence, self.correct_ids)
        if len(self.evidence) < EVIDENCE_MAX:
            self.evidence.append((node.name, evidence))

    def correct_nodes(self) -> list[SimNode]:
        return [node for node in self.nodes if node.correct]

    def live_nodes(self) -> list[SimNode]:
        """Correct nodes that are validators of the last epoch: the ones liveness is owed to."""
        final = set(self.final_validators)
        return [n for n in self.nodes if n.correct and (n.node_id in final or n.observer)]

    def correct_height_min(self) -> int:
        return min(node.height for node in self.live_nodes())

    def correct_height_max(self) -> int:
        return max(node.height for node in self.live_nodes())

    # -- the whole run ------------------------------------------------------------------------

    def run(self) -> SimResult:
        o = self.options
        self.run_until(lambda: False, o.fault_ms)
        self.heal()
        self.check_liveness(o.liveness_blocks, o.liveness_bound_ms or self.liveness_bound_ms())
        return self.result()

    def liveness_bound_ms(self) -> int:
        """Generous: n + 2 of the longest view-change timeouts (full back-off, slowest
        clock) plus 30 s -- time for every primary in turn to fail once and for replicas
        that backed off during the faults to rejoin."""
        o = self.options
        backoff_max = getattr(self._config_defaults(), "view_change_backoff_max", 5)
        slowest_tick_ms = max(n.tick_ms for n in self.nodes)
        longest_ms = o.view_change_timeout_ticks * 2**backoff_max * slowest_tick_ms
        return (o.n + 2) * longest_ms + 30_000

    def _config_defaults(self) -> Any:
        try:
            from consensus.replica import ReplicaConfig
        except ImportError:
            return None
        return ReplicaConfig(chain_id=CHAIN_ID)

    def check_liveness(self, blocks: int, bound_ms: int) -> None:
        """Every correct replica commits `blocks` beyond today's best correct height in time."""
        target = self.correct_height_max() + blocks
        start = self.now_ms
        ok = self.run_until(lambda: self.correct_height_min() >= target, start + bound_ms)
        if not ok:
            heights = {node.name: node.height for node in self.nodes}
            views = {node.name: getattr(node.replica, "view", None) for node in self.nodes}
            detail = (
                f"at t={self.now_ms} ms: correct replicas did not all reach height {target} "
                f"within {bound_ms} ms of t={start} ms; heights {heights}, views {views}"
            )
            raise SimFailure(self.options, "liveness", detail)

    def result(self) -> SimResult:
        stats: Counter[str] = Counter(self.stats)
        stats.update({f"net_{k}": v for k, v in self.network.stats.items()})
        stats.update(self.checker.stats)
        for node in self.nodes:
            stats.update(node.stats)
        stats["signature_checks"] = getattr(self.verifier, "checks", 0)
        return SimResult(
            options=self.options,
            now_ms=self.now_ms,
            heights={node.name: node.height for node in self.nodes},
            trace_digest=self._trace.hexdigest(),
            events=self.event_count,
            stats=stats,
        )


def run_seed(seed: int, **overrides: Any) -> SimResult:
    """Run one seed's random profile (with `overrides` applied) to the end."""
    options = SimOptions.from_seed(seed)
    if overrides:
        options = dataclasses.replace(options, **overrides)
    return Cluster(options).run()


# -- the real replica ----------------------------------------------------------------------------


def _real_replica_factory(node: SimNode) -> Any:
    from tests.sim.adapter import make_replica

    return make_replica(node)


def _validator_set(epoch: int, members: tuple[bytes, ...]) -> Any:
    from consensus.replica import ValidatorSet

    return ValidatorSet(epoch=epoch, validators=members)
