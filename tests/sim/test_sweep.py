"""The simulator sweep: many seeds, each a random fault profile, against the real replica.

Default suite: `DEFAULT_SEEDS` seeds (n = 4, 7, 10 in turn). Any size:

    pytest tests/sim --sim-seeds N [--sim-seed-start S]

runs `test_replay` over seeds S..S+N-1 instead of the default seeds; a
failing seed's message carries the one-seed form of that command, which
replays it exactly. `python -m tests.sim.sweep` does the same outside pytest.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from tests.sim.byzantine import BEHAVIOURS, COLLUDE
from tests.sim.cluster import Cluster, SimFailure, SimOptions
from tests.sim.packet_simulator import PartitionMode, PartitionSymmetry

pytest.importorskip("consensus.replica", reason="the replica has not landed yet")

DEFAULT_SEEDS = 300
REAL_CRYPTO_SEEDS = (1, 2, 3, 4, 5, 6)


def _run(options: SimOptions) -> None:
    Cluster(options).run()


@pytest.mark.parametrize("seed", range(DEFAULT_SEEDS), ids=lambda s: f"seed={s}")
def test_seed(seed: int, request: pytest.FixtureRequest) -> None:
    """One seed's random fault profile keeps safety, and liveness once faults heal."""
    if request.config.getoption("--sim-seeds") is not None:
        pytest.skip("--sim-seeds given: test_replay runs the requested seeds instead")
    _run(SimOptions.from_seed(seed))


def test_replay(request: pytest.FixtureRequest) -> None:
    """`--sim-seeds N [--sim-seed-start S]`: run seeds S..S+N-1; report every failure."""
    count = request.config.getoption("--sim-seeds")
    if count is None:
        pytest.skip("give --sim-seeds N [--sim-seed-start S] to run a sweep or replay a seed")
    start = request.config.getoption("--sim-seed-start")
    failures: list[str] = []
    for seed in range(start, start + count):
        try:
            _run(SimOptions.from_seed(seed))
        except SimFailure as failure:
            failures.append(str(failure))
    assert not failures, f"{len(failures)} of {count} seeds failed:\n" + "\n".join(failures)


@pytest.mark.parametrize("seed", REAL_CRYPTO_SEEDS, ids=lambda s: f"seed={s}")
def test_seed_with_real_ed25519(seed: int) -> None:
    """A few seeds with PyNaCl signatures, so the fake verifier hides nothing."""
    _run(dataclasses.replace(SimOptions.from_seed(seed), real_crypto=True))


def test_default_seeds_cover_every_fault_class() -> None:
    """The default seeds turn on every fault the simulator has, at least a few times each."""
    seen: Counter[str] = Counter()
    for seed in range(DEFAULT_SEEDS):
        o = SimOptions.from_seed(seed)
        net = o.network
        assert net is not None
        seen[f"n={o.n}"] += 1
        seen["loss"] += net.packet_loss_probability > 0
        seen["duplication"] += net.packet_replay_probability > 0
        seen["clogging"] += net.path_clog_probability > 0
        seen["crashes"] += o.crash_probability > 0
        seen["clock_skew"] += o.clock_skew > 0.05
        seen["codec"] += o.use_codec
        seen["twins"] += bool(o.twins)
        seen["f_faulty"] += len(o.twins) + len(o.byzantine) == o.f
        seen[f"epoch/{o.epoch_change}"] += o.epoch_change is not None
        seen["observers"] += o.observers > 0
        seen["slow_links"] += net.one_way_delay_mean_ms >= 200
        if net.partition_mode is not PartitionMode.NONE:
            seen[f"partition/{net.partition_symmetry.value}"] += 1
        for _, behaviours in o.byzantine:
            for b in behaviours:
                seen[b] += 1
    wanted = [
        "n=4", "n=7", "n=10", "loss", "duplication", "clogging", "crashes", "clock_skew",
        "codec", "twins", "f_faulty", *BEHAVIOURS, COLLUDE, "epoch/rotate", "epoch/remove",
        "observers", "slow_links",
        *(f"partition/{s.value}" for s in PartitionSymmetry),
    ]  # fmt: skip
    assert {w: seen[w] for w in wanted if seen[w] < 5} == {}
