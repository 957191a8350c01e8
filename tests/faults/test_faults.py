"""Fault tests on real `redwood start` processes: nothing acknowledged is lost (docs/faults.md).

`test_faults_short` (default suite, about 5 minutes): 4 validators under a
write/read load; every kind of fault once, in an order and with targets drawn
from the seed; then one validator turns Byzantine (equivocates as primary,
votes for conflicting blocks, replays old messages). The checker then reads
every honest node: same blocks and state roots at every height, every
acknowledged write present with its value, no honest validator's signature on
two digests, the Byzantine equivocation present as evidence.

`test_faults_long` (`--faults-long`): 7 validators + 2 observers, one of the
validators Byzantine from the start, `--faults-minutes` (30) of random faults
under load; prints the figures (faults by kind, writes acknowledged and lost,
divergent heights, longest stall after a heal).
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults import netns
from tests.faults.checker import check, summary
from tests.faults.harness import FaultCluster, remove_leftover_mounts
from tests.faults.scenarios import CATCH_UP_S, DISK_MB, KINDS, RECOVERY_S, Runner, wait_for
from tests.faults.workload import Workload

DEFAULT_SEED = 1


def _option(config: pytest.Config, name: str, env: str, default: object) -> object:
    value = config.getoption(name, default=None)
    if value is None:
        value = os.environ.get(env)
    return default if value is None else value


@pytest.fixture
def settings(request: pytest.FixtureRequest) -> dict[str, object]:
    cfg = request.config
    return {
        "seed": int(_option(cfg, "--faults-seed", "REDWOOD_FAULTS_SEED", DEFAULT_SEED)),  # type: ignore[arg-type]
        "mode": str(_option(cfg, "--faults-mode", "REDWOOD_FAULTS_MODE", "auto")),
        "long": bool(cfg.getoption("--faults-long", default=False))
        or os.environ.get("REDWOOD_FAULTS_LONG") == "1",
        "minutes": float(_option(cfg, "--faults-minutes", "REDWOOD_FAULTS_MINUTES", 30.0)),  # type: ignore[arg-type]
    }


@contextlib.contextmanager
def _cluster(
    root: Path, validators: int, observers: int, settings: dict[str, object], mode: str = ""
) -> Iterator[FaultCluster]:
    remove_leftover_mounts()
    if os.geteuid() == 0:
        netns.remove_leftovers()
    cluster = FaultCluster(
        root, validators, observers, mode or str(settings["mode"]), int(settings["seed"])
    )  # type: ignore[arg-type]
    try:
        yield cluster
    finally:
        cluster.close()


def _report(
    cluster: FaultCluster, runner: Runner, workload: Workload, verdict: object, mode: str
) -> str:
    st = runner.stats
    kind, stall = st.longest_stall
    lines = [
        f"mode: {mode}",
        f"seed: {cluster.seed}",
        f"faults injected: {dict(sorted(st.injected.items()))}",
        f"faults skipped: {st.skipped or 'none'}",
        f"damaged-node outcomes: {st.outcomes or 'none'}",
        f"writes acknowledged: {workload.counts['acked']} "
        f"(unknown outcome: {sum(v for k, v in workload.counts.items() if k.startswith('unknown'))}, "
        f"rejected: {workload.counts['rejected']})",
        f"writes lost: {verdict.lost_writes}",  # type: ignore[attr-defined]
        f"heights checked: {verdict.heights_checked}, divergent: {verdict.divergent_heights}",  # type: ignore[attr-defined]
        f"reader checks: {workload.counts['reads']} reads, {workload.counts['compares']} block compares",
        f"evidence (replica prefix -> entries over honest nodes): "
        f"{ {k[:16]: v for k, v in verdict.evidence_against.items()} }",  # type: ignore[attr-defined]
        f"longest stall after a heal: {stall:.1f} s ({kind})",
        f"stalls: {[(k, round(s, 1)) for k, s in st.stalls]}",
    ]
    text = "\n".join(lines)
    cluster.note("REPORT\n" + text)
    return text


def _finish(
    cluster: FaultCluster, runner: Runner, workload: Workload, mode: str, byz: int | None
) -> None:
    """Stop faults and load, check recovery, readiness and the data; fail with every violation."""
    cluster.set_blocked(set())
    cluster.unshape()
    for n in cluster.nodes:
        if n.paused:
            cluster.resume(n.index)
    runner.measure_recovery("end of faults")
    everyone = [n.index for n in cluster.nodes]
    _, took = wait_for(
        "every node ready", lambda: all(cluster.is_ready(i) for i in everyone), RECOVERY_S
    )
    if took > RECOVERY_S:
        not_ready = runner.not_ready(everyone)
        runner.violation(f"not /ready {RECOVERY_S:.0f} s after the faults stopped: {not_ready}")
    workload.stop()
    honest = runner.honest()
    wait_for(
        "honest nodes at the same height",
        lambda: set(runner.heights(honest).values()) == {max(runner.heights(honest).values())},
        CATCH_UP_S,
    )
    byz_ids = {cluster.nodes[byz].node_id} if byz is not None else set()
    verdict = check(cluster, workload.acked, honest, byz_ids)
    if byz is not None and not any(k in byz_ids for k in verdict.evidence_against):
        runner.violation(
            "the Byzantine validator's equivocation appears as evidence on no honest node"
        )
    text = _report(cluster, runner, workload, verdict, mode)
    print("\n" + text)
    problems = runner.stats.violations + workload.violations + verdict.violations
    assert not problems, (
        f"{len(problems)} violations (log: {cluster.root / 'faults.log'}):\n"
        + summary(type(verdict)(violations=problems))
        + "\n"
        + text
    )


def test_faults_short(tmp_path: Path, settings: dict[str, object]) -> None:
    seed = int(settings["seed"])  # type: ignore[arg-type]
    rng = random.Random(seed)
    with _cluster(tmp_path, 4, 0, settings) as cluster:
        mode = cluster.create()
        print(f"\nfault tests: mode {mode}, seed {seed}")
        runner = Runner(
            cluster, Workload(cluster, writers=4, readers=1, seed=seed), rng, hold_s=5.0
        )
        disk = rng.choice(range(4))
        runner.disk_reason = cluster.mount_tmpfs(disk, DISK_MB)
        runner.disk_node = None if runner.disk_reason else disk
        for n in cluster.nodes:
            cluster.start(n.index)
        ok, _ = wait_for("cluster ready", lambda: all(cluster.is_ready(i) for i in range(4)), 60)
        assert ok, "cluster not ready: " + "\n".join(n.log_tail(5) for n in cluster.nodes)
        workload = runner.w
        workload.start()
        ok, _ = wait_for("first acknowledgement", lambda: workload.counts["acked"] > 0, 30)
        assert ok, f"no write acknowledged: {dict(workload.counts)}"
        kinds = list(KINDS)
        rng.shuffle(kinds)
        for kind in kinds:
            runner.run(kind)
        byz = rng.choice(runner.honest_validators())
        equivocations = runner.byzantine_phase(byz, seconds=8.0)
        print(f"byzantine {cluster.nodes[byz].name}: {equivocations} equivocations")
        if equivocations == 0:
            runner.violation(
                f"{cluster.nodes[byz].name} never became primary: no equivocation tested"
            )
        _finish(cluster, runner, workload, mode, byz)


def test_faults_shaping_through_proxy(tmp_path: Path, settings: dict[str, object]) -> None:
    """Latency, loss and one-way blocking through the TCP proxy, for hosts whose kernel lacks
    netem: the namespace run above skips latency and loss there."""
    if os.geteuid() != 0 or settings["mode"] == "proxy":
        pytest.skip("test_faults_short already ran in proxy mode")
    seed = int(settings["seed"])  # type: ignore[arg-type]
    rng = random.Random(seed + 1)
    with _cluster(tmp_path, 4, 0, settings, mode="proxy") as cluster:
        mode = cluster.create()
        print(f"\nfault tests (shaping): mode {mode}, seed {seed}")
        runner = Runner(
            cluster, Workload(cluster, writers=4, readers=1, seed=seed), rng, hold_s=5.0
        )
        for n in cluster.nodes:
            cluster.start(n.index)
        ok, _ = wait_for("cluster ready", lambda: all(cluster.is_ready(i) for i in range(4)), 60)
        assert ok, "cluster not ready: " + "\n".join(n.log_tail(5) for n in cluster.nodes)
        runner.w.start()
        for kind in ("latency", "loss", "one_way", "isolate_primary"):
            runner.run(kind)
        _finish(cluster, runner, runner.w, mode, None)


def test_faults_long(tmp_path: Path, settings: dict[str, object]) -> None:
    if not settings["long"]:
        pytest.skip("long fault run: pass --faults-long (pytest tests/faults --faults-long)")
    seed = int(settings["seed"])  # type: ignore[arg-type]
    rng = random.Random(seed)
    validators, observers = 7, 2
    with _cluster(tmp_path, validators, observers, settings) as cluster:
        mode = cluster.create()
        print(f"\nfault tests (long): mode {mode}, seed {seed}, {settings['minutes']} minutes")
        runner = Runner(
            cluster, Workload(cluster, writers=6, readers=2, seed=seed), rng, hold_s=6.0
        )
        disk = rng.choice(range(validators - 1))
        runner.disk_reason = cluster.mount_tmpfs(disk, DISK_MB)
        runner.disk_node = None if runner.disk_reason else disk
        byz = validators - 1
        for n in cluster.nodes:
            cluster.start(n.index, byzantine=n.index == byz)
        total = validators + observers
        ok, _ = wait_for(
            "cluster ready", lambda: all(cluster.is_ready(i) for i in range(total)), 90
        )
        assert ok, "cluster not ready: " + "\n".join(n.log_tail(5) for n in cluster.nodes)
        runner.w.start()
        deadline = time.monotonic() + 60 * float(settings["minutes"])  # type: ignore[arg-type]
        while time.monotonic() < deadline:
            runner.run(rng.choice(KINDS))
            if rng.random() < 0.1:
                runner.rotate_to(byz)
        _finish(cluster, runner, runner.w, mode, byz)
