"""Run a large simulator sweep outside pytest and print what it found.

    python -m tests.sim.sweep --seeds 10000 --start 0 [--jobs 2] [--n 4] [--verbose]

Each seed runs its own random fault profile (`SimOptions.from_seed`) to the
end of its liveness phase. Prints seeds run, violations (with the command
that replays each), wall time, and simulated seconds per wall second (1 tick
= 100 ms simulated). Exit status 1 if any seed failed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from collections import Counter
from dataclasses import dataclass

from tests.sim.cluster import Cluster, SimFailure, SimOptions


@dataclass(frozen=True, slots=True)
class SeedOutcome:
    seed: int
    failure_kind: str | None
    message: str
    simulated_ms: int
    events: int
    commits: int
    wall_s: float = 0.0
    n: int = 0


def run_one(seed: int, n: int | None = None) -> SeedOutcome:
    options = SimOptions.from_seed(seed, n=n)
    cluster = Cluster(options)
    started = time.monotonic()
    kind, message = None, ""
    try:
        cluster.run()
    except SimFailure as failure:
        kind, message = failure.kind, str(failure)
    commits = cluster.checker.stats["commits"]
    wall_s = time.monotonic() - started
    return SeedOutcome(
        seed, kind, message, cluster.now_ms, cluster.event_count, commits, wall_s, options.n
    )


def _run_one_star(args: tuple[int, int | None]) -> SeedOutcome:
    return run_one(*args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=1000, help="how many seeds")
    parser.add_argument("--start", type=int, default=0, help="first seed")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument(
        "--n", type=int, default=None, help="cluster size (default: 4, 7, 10 by seed)"
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="one line per seed")
    args = parser.parse_args(argv)
    seeds = [(s, args.n) for s in range(args.start, args.start + args.seeds)]
    started = time.monotonic()
    outcomes: list[SeedOutcome] = []
    if args.jobs > 1:
        with multiprocessing.Pool(args.jobs) as pool:
            for outcome in pool.imap_unordered(_run_one_star, seeds, chunksize=4):
                _report(outcome, args.verbose, outcomes)
    else:
        for seed in seeds:
            _report(_run_one_star(seed), args.verbose, outcomes)
    wall_s = time.monotonic() - started
    _summary(outcomes, wall_s)
    return 1 if any(o.failure_kind for o in outcomes) else 0


def _report(outcome: SeedOutcome, verbose: bool, outcomes: list[SeedOutcome]) -> None:
    outcomes.append(outcome)
    if outcome.failure_kind:
        print(f"FAIL {outcome.message}", flush=True)
    elif verbose:
        options = SimOptions.from_seed(outcome.seed)
        print(
            f"ok   seed {outcome.seed}: {outcome.wall_s:.2f} s wall, "
            f"{outcome.simulated_ms / 1000:.1f} s simulated, "
            f"{outcome.events} events, {outcome.commits} commits [{options.describe()}]",
            flush=True,
        )


def _summary(outcomes: list[SeedOutcome], wall_s: float) -> None:
    simulated_s = sum(o.simulated_ms for o in outcomes) / 1000
    kinds = Counter(o.failure_kind for o in outcomes if o.failure_kind)
    failed = sorted(o.seed for o in outcomes if o.failure_kind)
    print(f"seeds run:           {len(outcomes)}")
    print(f"violations:          {sum(kinds.values())} {dict(kinds) if kinds else ''}")
    if failed:
        print(f"failing seeds:       {failed[:50]}{' ...' if len(failed) > 50 else ''}")
    print(f"wall time:           {wall_s:.1f} s")
    passed = [o.wall_s for o in outcomes if not o.failure_kind]
    if passed:
        print(
            f"wall per passing seed: mean {sum(passed) / len(passed):.2f} s, max {max(passed):.2f} s"
        )
    print(f"simulated time:      {simulated_s:.0f} s ({simulated_s * 10:.0f} ticks)")
    print(f"simulated s / wall s: {simulated_s / max(wall_s, 1e-9):.1f}")
    print(f"events:              {sum(o.events for o in outcomes)}")
    print(f"commits checked:     {sum(o.commits for o in outcomes)}")
    for n in sorted({o.n for o in outcomes}):
        mine = [o for o in outcomes if o.n == n]
        sim_s = sum(o.simulated_ms for o in mine) / 1000
        wall = sum(o.wall_s for o in mine)
        print(
            f"  n={n:<3} {len(mine):>6} seeds, {sum(bool(o.failure_kind) for o in mine)} failed, "
            f"{wall / len(mine):.2f} s wall/seed, {sim_s / max(wall, 1e-9):.1f} simulated s/wall s"
        )


if __name__ == "__main__":
    sys.exit(main())
