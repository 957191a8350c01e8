"""A seeded, simulated network between the simulator's endpoints.

Modelled on TigerBeetle's `packet_simulator.zig`. Every fault it injects is
drawn from the one `random.Random` it is given, so a seed replays exactly:

- *delay*: each packet takes `one_way_delay_min_ms` plus an exponential draw
  around `one_way_delay_mean_ms`; independent draws reorder packets;
- *loss* (`packet_loss_probability`) and *duplication*
  (`packet_replay_probability`: a second copy with its own delay);
- *partitions*: symmetric (both directions cut) or asymmetric (one side can
  still send to the other), chosen by `partition_mode`; they start and end
  at random but each holds for at least its `*_stability_ms`;
- *clogging*: a path (one direction between two endpoints) holds every
  packet until the clog clears, which releases them in a burst;
- *bounded paths*: at most `path_maximum_capacity` packets in flight per
  path; more are dropped and counted (like a full socket buffer).

Endpoints are small integers (the simulator's node slots); payloads are
opaque. Packets on a path that is cut when they arrive are lost. `heal()`
ends every fault for good, which is when the liveness checker starts its
clock.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from typing import Any


class PartitionMode(Enum):
    NONE = "none"
    UNIFORM_SIZE = "uniform_size"  # a random split of random size
    ISOLATE_SINGLE = "isolate_single"  # one endpoint cut off from the rest


class PartitionSymmetry(Enum):
    SYMMETRIC = "symmetric"
    ASYMMETRIC = "asymmetric"


@dataclass(frozen=True, slots=True)
class NetworkOptions:
    node_count: int
    one_way_delay_min_ms: int = 1
    one_way_delay_mean_ms: int = 15
    packet_loss_probability: float = 0.0
    packet_replay_probability: float = 0.0
    partition_mode: PartitionMode = PartitionMode.NONE
    partition_symmetry: PartitionSymmetry = PartitionSymmetry.SYMMETRIC
    partition_probability: float = 0.0  # per fault tick, while whole
    unpartition_probability: float = 0.0  # per fault tick, while partitioned
    partition_stability_ms: int = 1_000
    unpartition_stability_ms: int = 1_000
    path_maximum_capacity: int = 256
    path_clog_probability: float = 0.0  # per path per fault tick
    path_clog_duration_mean_ms: int = 500


@dataclass(slots=True)
class Packet:
    deliver_at_ms: int
    seq: int
    src: int
    dst: int
    payload: Any

    def __lt__(self, other: Packet) -> bool:
        return (self.deliver_at_ms, self.seq) < (other.deliver_at_ms, other.seq)


class PacketSimulator:
    """The network: `submit` packets, `pop_due` them at their delivery time."""

    def __init__(self, options: NetworkOptions, rng: random.Random) -> None:
        assert options.node_count >= 1
        self.options = options
        self._rng = rng
        self._queue: list[Packet] = []
        self._seq = 0
        self._in_flight: Counter[tuple[int, int]] = Counter()
        self._cut: set[tuple[int, int]] = set()  # (src, dst) paths that lose packets
        self._clogged_until_ms: dict[tuple[int, int], int] = {}
        self._partitioned = False
        self._stable_until_ms = 0
        self._healed = False
        self.stats: Counter[str] = Counter()

    # -- traffic ---------------------------------------------------------------

    def submit(self, now_ms: int, src: int, dst: int, payload: Any) -> None:
        self.stats["submitted"] += 1
        if not self._healed and self._chance(self.options.packet_loss_probability):
            self.stats["lost"] += 1
            return
        copies = 2 if self._chance(self.options.packet_replay_probability) else 1
        self.stats["duplicated"] += copies - 1
        for _ in range(copies):
            self._enqueue(now_ms, src, dst, payload)

    def _enqueue(self, now_ms: int, src: int, dst: int, payload: Any) -> None:
        path = (src, dst)
        if self._in_flight[path] >= self.options.path_maximum_capacity:
            self.stats["dropped_capacity"] += 1
            return
        at = now_ms + self._delay_ms()
        clogged_until = self._clogged_until_ms.get(path, 0)
        if clogged_until > at:
            self.stats["clogged"] += 1
            at = clogged_until + self._delay_ms()
        self._in_flight[path] += 1
        self._seq += 1
        heapq.heappush(self._queue, Packet(at, self._seq, src, dst, payload))

    def _delay_ms(self) -> int:
        o = self.options
        spread = max(0, o.one_way_delay_mean_ms - o.one_way_delay_min_ms)
        extra = int(self._rng.expovariate(1.0 / spread)) if spread else 0
        return o.one_way_delay_min_ms + min(extra, 20 * max(spread, 1))

    def next_delivery_ms(self) -> int | None:
        return self._queue[0].deliver_at_ms if self._queue else None

    def pop_due(self, now_ms: int) -> Packet | None:
        """The next packet due at or before `now_ms` that survives the cut paths, if any."""
        while self._queue and self._queue[0].deliver_at_ms <= now_ms:
            packet = heapq.heappop(self._queue)
            path = (packet.src, packet.dst)
            self._in_flight[path] -= 1
            if path in self._cut:
                self.stats["dropped_partition"] += 1
                continue
            self.stats["delivered"] += 1
            return packet
        return None

    @property
    def in_flight(self) -> int:
        return len(self._queue)

    # -- faults ------------------------------------------------------------------

    def fault_tick(self, now_ms: int) -> None:
        """Advance random partitions and clogs; called on every simulator fault tick."""
        if self._healed:
            return
        o = self.options
        if o.partition_mode is not PartitionMode.NONE and now_ms >= self._stable_until_ms:
            if not self._partitioned and self._chance(o.partition_probability):
                self._random_partition()
                self._stable_until_ms = now_ms + o.partition_stability_ms
            elif self._partitioned and self._chance(o.unpartition_probability):
                self.unpartition()
                self._stable_until_ms = now_ms + o.unpartition_stability_ms
        if o.path_clog_probability > 0:
            self._random_clogs(now_ms)

    def _random_partition(self) -> None:
        n = self.options.node_count
        if n < 2:
            return
        ends = list(range(n))
        if self.options.partition_mode is PartitionMode.ISOLATE_SINGLE:
            side = {self._rng.choice(ends)}
        else:
            self._rng.shuffle(ends)
            side = set(ends[: self._rng.randint(1, n - 1)])
        other = set(range(n)) - side
        asymmetric = self.options.partition_symmetry is PartitionSymmetry.ASYMMETRIC
        self.partition([side, other], asymmetric=asymmetric)
        self.stats["partitions"] += 1

    def _random_clogs(self, now_ms: int) -> None:
        o = self.options
        n = o.node_count
        for src in range(n):
            for dst in range(n):
                if src != dst and self._chance(o.path_clog_probability):
                    duration = int(self._rng.expovariate(1.0 / o.path_clog_duration_mean_ms))
                    self._clogged_until_ms[(src, dst)] = now_ms + duration
                    self.stats["clogs"] += 1

    def partition(self, groups: list[set[int]], *, asymmetric: bool = False) -> None:
        """Cut every path between different groups (only first->later ones if asymmetric).

        Endpoints in no group keep all their paths.
        """
        self._cut.clear()
        for i, a in enumerate(groups):
            for j, b in enumerate(groups):
                if i == j or (asymmetric and j < i):
                    continue
                self._cut.update((s, d) for s in a for d in b)
        self._partitioned = bool(self._cut)

    def cut(self, src: int, dst: int) -> None:
        """Cut one direction of one path (scripted scenarios)."""
        self._cut.add((src, dst))
        self._partitioned = True

    def unpartition(self) -> None:
        self._cut.clear()
        self._partitioned = False

    def is_cut(self, src: int, dst: int) -> bool:
        return (src, dst) in self._cut

    def heal(self) -> None:
        """End every fault for good: no cuts, no clogs, no loss, no new faults."""
        self.unpartition()
        self._clogged_until_ms.clear()
        self._healed = True

    @property
    def healed(self) -> bool:
        return self._healed

    def _chance(self, probability: float) -> bool:
        return probability > 0 and self._rng.random() < probability
