"""The simulated network injects exactly the faults it is asked for, reproducibly."""

from __future__ import annotations

import itertools
import random

from tests.sim.packet_simulator import (
    NetworkOptions,
    PacketSimulator,
    PartitionMode,
    PartitionSymmetry,
)


def _drain(net: PacketSimulator, until_ms: int = 10**9) -> list[tuple[int, int, int, object]]:
    out = []
    while (t := net.next_delivery_ms()) is not None and t <= until_ms:
        p = net.pop_due(t)
        if p is not None:
            out.append((p.deliver_at_ms, p.src, p.dst, p.payload))
    return out


def test_healthy_network_delivers_everything_after_at_least_the_minimum_delay() -> None:
    net = PacketSimulator(NetworkOptions(node_count=3, one_way_delay_min_ms=5), random.Random(1))
    for i in range(100):
        net.submit(0, 0, 1 + i % 2, i)
    got = _drain(net)
    assert sorted(p for *_, p in got) == list(range(100))
    assert min(t for t, *_ in got) >= 5


def test_random_delays_reorder_packets() -> None:
    net = PacketSimulator(NetworkOptions(node_count=2, one_way_delay_mean_ms=50), random.Random(2))
    for i in range(50):
        net.submit(0, 0, 1, i)
    order = [p for *_, p in _drain(net)]
    assert order != sorted(order)


def test_loss_and_duplication_rates_are_roughly_as_configured() -> None:
    opts = NetworkOptions(
        node_count=2,
        packet_loss_probability=0.2,
        packet_replay_probability=0.1,
        path_maximum_capacity=10_000,
    )
    net = PacketSimulator(opts, random.Random(3))
    for i in range(2000):
        net.submit(0, 0, 1, i)
    assert 300 < net.stats["lost"] < 500
    assert 100 < net.stats["duplicated"] < 220
    got = [p for *_, p in _drain(net)]
    assert len(got) == 2000 - net.stats["lost"] + net.stats["duplicated"]


def test_symmetric_partition_cuts_both_directions_and_heal_restores() -> None:
    net = PacketSimulator(NetworkOptions(node_count=4), random.Random(4))
    net.partition([{0, 1}, {2, 3}])
    for src, dst in [(0, 2), (2, 0), (0, 1), (3, 2)]:
        net.submit(0, src, dst, (src, dst))
    assert sorted(p for *_, p in _drain(net)) == [(0, 1), (3, 2)]
    net.heal()
    net.submit(100, 0, 2, "after")
    assert [p for *_, p in _drain(net)] == ["after"]


def test_asymmetric_partition_cuts_one_direction_only() -> None:
    net = PacketSimulator(NetworkOptions(node_count=2), random.Random(5))
    net.partition([{0}, {1}], asymmetric=True)
    net.submit(0, 0, 1, "lost")
    net.submit(0, 1, 0, "arrives")
    assert [p for *_, p in _drain(net)] == ["arrives"]


def test_packets_in_flight_when_a_path_is_cut_are_lost() -> None:
    net = PacketSimulator(NetworkOptions(node_count=2, one_way_delay_min_ms=10), random.Random(6))
    net.submit(0, 0, 1, "x")
    net.cut(0, 1)
    assert _drain(net) == []
    assert net.stats["dropped_partition"] == 1


def test_a_clogged_path_holds_packets_until_the_clog_clears() -> None:
    opts = NetworkOptions(node_count=2, path_clog_probability=1.0, path_clog_duration_mean_ms=1000)
    net = PacketSimulator(opts, random.Random(7))
    net.fault_tick(0)
    clogged_until = net._clogged_until_ms[(0, 1)]
    assert clogged_until > 50
    net.submit(0, 0, 1, "late")
    [(t, *_)] = _drain(net)
    assert t >= clogged_until


def test_path_capacity_bounds_packets_in_flight() -> None:
    net = PacketSimulator(NetworkOptions(node_count=2, path_maximum_capacity=8), random.Random(8))
    for i in range(20):
        net.submit(0, 0, 1, i)
    assert net.in_flight == 8
    assert net.stats["dropped_capacity"] == 12


def test_random_partitions_come_and_go_and_hold_for_their_stability_period() -> None:
    opts = NetworkOptions(
        node_count=5,
        partition_mode=PartitionMode.UNIFORM_SIZE,
        partition_symmetry=PartitionSymmetry.ASYMMETRIC,
        partition_probability=0.5,
        unpartition_probability=0.5,
        partition_stability_ms=300,
        unpartition_stability_ms=300,
    )
    net = PacketSimulator(opts, random.Random(9))
    changes = []
    state = False
    for t in range(0, 20_000, 100):
        net.fault_tick(t)
        cut = any(net.is_cut(s, d) for s in range(5) for d in range(5))
        if cut != state:
            changes.append(t)
            state = cut
    assert len(changes) >= 10
    assert all(b - a >= 300 for a, b in itertools.pairwise(changes))


def test_isolate_single_cuts_one_endpoint_from_all_others() -> None:
    opts = NetworkOptions(
        node_count=4, partition_mode=PartitionMode.ISOLATE_SINGLE, partition_probability=1.0
    )
    net = PacketSimulator(opts, random.Random(10))
    net.fault_tick(0)
    isolated = [e for e in range(4) if all(net.is_cut(e, d) for d in range(4) if d != e)]
    assert len(isolated) == 1
    others = [e for e in range(4) if e != isolated[0]]
    assert not any(net.is_cut(a, b) for a in others for b in others)


def test_same_seed_same_deliveries() -> None:
    def run(seed: int) -> list[tuple[int, int, int, object]]:
        opts = NetworkOptions(
            node_count=3, packet_loss_probability=0.1, packet_replay_probability=0.1
        )
        net = PacketSimulator(opts, random.Random(seed))
        for i in range(200):
            net.submit(i, i % 3, (i + 1) % 3, i)
        return _drain(net)

    assert run(11) == run(11)
    assert run(11) != run(12)
