"""Scripted fault scenarios against the real replica, each judged by the state checker.

Every scenario runs on a healthy simulated network (small random delays)
unless it says otherwise, scripts one fault, and then requires every correct
replica to make progress within a bound. Every step is checked for safety.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import subprocess
import sys

import pytest

from tests.sim.byzantine import COLLUDE
from tests.sim.cluster import Cluster, SimFailure, SimOptions
from tests.sim.packet_simulator import NetworkOptions
from tests.sim.sim_node import CrashPoint

pytest.importorskip("consensus.replica", reason="the replica has not landed yet")

BOUND_MS = 60_000
ROOT = pathlib.Path(__file__).resolve().parents[2]


def _cluster(seed: int = 1, n: int = 4, **kw: object) -> Cluster:
    options = SimOptions(seed=seed, n=n, network=NetworkOptions(node_count=0))
    return Cluster(dataclasses.replace(options, **kw))  # type: ignore[arg-type]


def _primary_slot(cluster: Cluster) -> int:
    primaries = [n.slot for n in cluster.nodes if n.up and n.correct and n.replica.is_primary]
    assert primaries, "no correct replica thinks it is primary"
    return primaries[0]


def _until_height(cluster: Cluster, height: int, bound_ms: int = BOUND_MS) -> None:
    ok = cluster.run_until(
        lambda: cluster.correct_height_min() >= height, cluster.now_ms + bound_ms
    )
    assert ok, f"heights {[n.height for n in cluster.nodes]} did not all reach {height}"


def test_normal_case_commits_the_same_chain_everywhere() -> None:
    cluster = _cluster()
    _until_height(cluster, 20)
    assert cluster.checker.stats["commits"] >= 4 * 20


@pytest.mark.parametrize("n", [4, 7, 10])
def test_primary_crash_leads_to_a_view_change_and_progress(n: int) -> None:
    cluster = _cluster(n=n)
    _until_height(cluster, 5)
    primary = _primary_slot(cluster)
    view = cluster.nodes[primary].replica.view
    cluster.crash(primary)
    others = [node for node in cluster.correct_nodes() if node.slot != primary]
    target = max(node.height for node in others) + 5
    ok = cluster.run_until(
        lambda: min(node.height for node in others) >= target, cluster.now_ms + BOUND_MS
    )
    assert ok, f"no progress without the primary: {[node.height for node in others]}"
    assert all(node.replica.view > view for node in others)
    cluster.restart(primary)
    cluster.check_liveness(3, BOUND_MS)  # the old primary catches up and follows


def test_equivocating_primary_cannot_split_the_correct_replicas() -> None:
    behaviours = frozenset({"equivocate", "conflicting_votes"})
    cluster = _cluster(byzantine=((0, behaviours),))
    cluster.run_for(5_000)
    cluster.heal()
    cluster.check_liveness(5, BOUND_MS)
    assert cluster.nodes[0].byzantine is not None
    assert cluster.nodes[0].byzantine.alt_digest, "the primary never equivocated"


def test_partitioned_primary_is_replaced_and_catches_up_after_the_heal() -> None:
    cluster = _cluster()
    _until_height(cluster, 5)
    primary = _primary_slot(cluster)
    rest = {node.slot for node in cluster.nodes} - {primary}
    cluster.network.partition([{primary}, rest])
    others = [cluster.nodes[s] for s in rest]
    target = max(node.height for node in others) + 5
    ok = cluster.run_until(
        lambda: min(node.height for node in others) >= target, cluster.now_ms + BOUND_MS
    )
    assert ok, "the majority side made no progress"
    cluster.heal()
    cluster.check_liveness(3, BOUND_MS)


@pytest.mark.parametrize("n", [4, 7, 10])
def test_f_replicas_down_the_rest_make_progress(n: int) -> None:
    cluster = _cluster(n=n)
    _until_height(cluster, 3)
    f = (n - 1) // 3
    down = [node.slot for node in cluster.nodes if not node.replica.is_primary][:f]
    for slot in down:
        cluster.crash(slot)
    up = [node for node in cluster.correct_nodes() if node.slot not in down]
    target = max(node.height for node in up) + 10
    ok = cluster.run_until(
        lambda: min(node.height for node in up) >= target, cluster.now_ms + BOUND_MS
    )
    assert ok, f"{n - f} of {n} replicas made no progress"


def test_f_replicas_down_including_the_primary() -> None:
    cluster = _cluster(n=7)
    _until_height(cluster, 3)
    primary = _primary_slot(cluster)
    down = [primary, (primary + 1) % 7]
    for slot in down:
        cluster.crash(slot)
    up = [node for node in cluster.correct_nodes() if node.slot not in down]
    target = max(node.height for node in up) + 5
    ok = cluster.run_until(
        lambda: min(node.height for node in up) >= target, cluster.now_ms + BOUND_MS
    )
    assert ok, "no progress with f replicas (one the primary) down"


def test_restart_during_view_change() -> None:
    """Crash the primary; once backups are changing view, crash and restart one of them."""
    cluster = _cluster(n=4)
    _until_height(cluster, 5)
    primary = _primary_slot(cluster)
    cluster.crash(primary)
    backups = [node for node in cluster.correct_nodes() if node.slot != primary]
    changing = cluster.run_until(
        lambda: any(node.up and node.replica.in_view_change for node in backups),
        cluster.now_ms + BOUND_MS,
    )
    assert changing, "the backups never started a view change"
    victim = next(node for node in backups if node.replica.in_view_change)
    cluster.crash(victim.slot)
    cluster.run_for(500)
    cluster.restart(victim.slot)
    cluster.restart(primary)
    cluster.check_liveness(5, BOUND_MS)


def test_catch_up_of_a_replica_that_missed_1000_blocks() -> None:
    cluster = _cluster(n=4, clients=4, txs_per_client_per_tick=4)
    cluster.start()
    lagger = next(node for node in cluster.nodes if not node.replica.is_primary)
    cluster.crash(lagger.slot)
    others = [node for node in cluster.correct_nodes() if node is not lagger]
    ok = cluster.run_until(lambda: min(node.height for node in others) >= 1000, 600_000)
    assert ok, f"the cluster did not reach 1,000 blocks: {[node.height for node in others]}"
    assert lagger.height == 0
    cluster.restart(lagger.slot)
    target = max(node.height for node in others)
    ok = cluster.run_until(lambda: lagger.height >= target, cluster.now_ms + BOUND_MS)
    assert ok, f"the lagger reached only {lagger.height} of {target}"
    cluster.check_liveness(3, BOUND_MS)


@pytest.mark.parametrize("point", list(CrashPoint), ids=lambda p: p.value)
def test_crash_storm_at_one_driver_step(point: CrashPoint) -> None:
    """Every replica crashes often, always at the same step of the driver loop
    (losing unsynced journal writes, unsent messages, unapplied blocks):
    never unsafe, and live once the crashes stop."""
    for seed in range(3):
        cluster = _cluster(seed=seed, n=4, crash_probability=0.05, crash_points=(point,))
        cluster.run_for(6_000)
        assert sum(node.stats["crashes"] for node in cluster.nodes) >= 5
        cluster.heal()
        cluster.check_liveness(3, BOUND_MS)


@pytest.mark.parametrize(
    ("n", "change", "byzantine"),
    [(4, "rotate", ()), (4, "remove", ()), (7, "remove", ((6, frozenset({"equivocate"})),))],
)
def test_membership_change_at_a_checkpoint_boundary(
    n: int, change: str, byzantine: tuple[tuple[int, frozenset[str]], ...]
) -> None:
    """Governance changes the validator set when block 10 executes; certificates above
    the epoch's first height are checked against the new set; a replica that was down
    across the change catches up through it."""
    cluster = _cluster(
        n=n, epoch_change=change, epoch_change_height=10, checkpoint_interval=8, byzantine=byzantine
    )
    first = cluster.epoch_plan[1][0]
    assert first == 17
    late = cluster.live_nodes()[-1]
    _until_height(cluster, 5)
    cluster.crash(late.slot)
    others = [node for node in cluster.live_nodes() if node is not late]
    ok = cluster.run_until(lambda: min(node.height for node in others) >= first + 10, 120_000)
    assert ok, f"no progress across the epoch change: {[node.height for node in others]}"
    cluster.restart(late.slot)
    cluster.check_liveness(5, BOUND_MS)
    signers = {s.replica for s in others[0].chain[first + 2].certificate.signatures}
    assert signers <= set(cluster.final_validators)
    assert others[0].chain[first].certificate.epoch == 1


def test_same_seed_gives_the_same_trace_with_the_real_replica() -> None:
    def run(seed: int) -> tuple[str, int, dict[str, int]]:
        options = dataclasses.replace(SimOptions.from_seed(seed, n=4), trace=True)
        cluster = Cluster(options)
        with contextlib.suppress(SimFailure):  # a failing seed must replay identically too
            cluster.run()
        result = cluster.result()
        return result.trace_digest, result.events, result.heights

    first = run(7)
    assert first == run(7)
    assert first[0] != run(8)[0]


def test_a_seed_replays_identically_in_another_process_with_another_hash_seed() -> None:
    """The replay command runs in a fresh process, where PYTHONHASHSEED (set and
    frozenset order of bytes) differs: the run must not depend on it."""
    code = (
        "import contextlib, dataclasses\n"
        "from tests.sim.cluster import Cluster, SimFailure, SimOptions\n"
        "o = dataclasses.replace(SimOptions.from_seed(13, n=4), trace=True)\n"
        "c = Cluster(o)\n"
        "with contextlib.suppress(SimFailure):\n"
        "    c.run_for(6_000)\n"
        "print(c.result().trace_digest, c.event_count)\n"
    )
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=120, check=True,
        )  # fmt: skip
        digests.add(out.stdout.strip())
    assert len(digests) == 1, f"traces differ between processes: {digests}"


def test_the_checker_reports_disagreement_with_f_plus_1_twins() -> None:
    """f+1 validators run twice (Twins), split so that each side holds a quorum:
    the protocol cannot stay safe, and the checker must say so for some seed."""
    found = []
    for seed in range(30):
        cluster = _cluster(seed=seed, n=4, twins=(0, 1))
        # slots 0..3 hold validators 0..3; slot 4 is validator 0's twin, slot 5 validator 1's
        cluster.network.partition([{0, 1, 2}, {4, 5, 3}])
        try:
            cluster.run_for(5_000)
        except SimFailure as failure:
            found.append((seed, failure.kind))
            if failure.kind == "agreement":
                break
    assert found and found[-1][1] == "agreement", f"no agreement violation found: {found}"


@pytest.mark.parametrize("n", [4, 7])
def test_the_checker_reports_disagreement_with_f_plus_1_colluding_byzantine(n: int) -> None:
    """f+1 colluders (a primary that sends each half of the correct replicas its own
    block, all colluders voting for both): agreement breaks, the checker says so."""
    colluders = tuple((i, frozenset({COLLUDE})) for i in range((n - 1) // 3 + 1))
    for seed in range(10):
        cluster = _cluster(seed=seed, n=n, byzantine=colluders)
        with pytest.raises(SimFailure, match="agreement"):
            cluster.run_for(5_000)


@pytest.mark.parametrize("n", [4, 7, 10])
def test_f_colluding_byzantine_keep_the_checker_quiet(n: int) -> None:
    colluders = tuple((i, frozenset({COLLUDE})) for i in range((n - 1) // 3))
    for seed in range(3):
        cluster = _cluster(seed=seed, n=n, byzantine=colluders)
        cluster.run_for(5_000)
        cluster.heal()
        cluster.check_liveness(3, BOUND_MS)


def test_f_twins_keep_the_checker_quiet() -> None:
    """The same split with one twin (f = 1) stays safe."""
    for seed in range(5):
        cluster = _cluster(seed=seed, n=4, twins=(0,))
        cluster.network.partition([{0, 1, 2}, {4, 3}])
        cluster.run_for(5_000)
        cluster.heal()
        cluster.check_liveness(3, BOUND_MS)


def test_observers_follow_the_chain_from_gossiped_blocks_and_catch_up() -> None:
    """Two non-validators (replicas without a key) follow every committed block;
    one is down for a while and catches up by asking validators."""
    cluster = _cluster(n=4, observers=2)
    observers = [node for node in cluster.nodes if node.observer]
    _until_height(cluster, 5)
    assert len(observers) == 2 and not any(node.replica.is_validator for node in observers)
    cluster.crash(observers[1].slot)
    cluster.run_for(5_000)
    cluster.restart(observers[1].slot)
    cluster.check_liveness(5, BOUND_MS)
    assert all(node.height >= 10 for node in observers)


def test_observer_down_across_a_membership_change_catches_up() -> None:
    """An observer that was down while the validator set changed only hears gossiped
    blocks of the new epoch, which it cannot check yet: it must still fetch the
    blocks in between (and learn the change by executing them)."""
    cluster = _cluster(
        n=4, observers=1, epoch_change="rotate", epoch_change_height=6, checkpoint_interval=4
    )
    observer = next(node for node in cluster.nodes if node.observer)
    _until_height(cluster, 2)
    cluster.crash(observer.slot)
    first = cluster.epoch_plan[1][0]
    validators = [node for node in cluster.nodes if not node.observer]
    ok = cluster.run_until(
        lambda: min(node.height for node in validators) >= first + 20, cluster.now_ms + BOUND_MS
    )
    assert ok
    cluster.restart(observer.slot)
    cluster.check_liveness(3, BOUND_MS)
