"""The machine's pipeline ceiling: decode + rules + Ed25519 verify + execute + LevelDB commit.

One process runs `node.bench.measure_ceiling` (the exact per-transaction
work of a validator, in one thread, on a temporary store). With ``--procs P``
P processes run it at the same time over their own stores, which is what P
validators sharing this machine could at best do together. Also measured:
bare Ed25519 verification per second on one core.

Usage: ``python bench/pipeline.py [--txs 8000] [--procs 1,4] [--runs 3]``
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from consensus.crypto import verify_raw
from node.bench import load_average, measure_ceiling


def verify_rate(count: int = 5000) -> float:
    """Bare Ed25519 verifications per second in this thread."""
    from nacl.signing import SigningKey as NaclKey

    key = NaclKey.generate()
    message = os.urandom(250)
    signature = key.sign(message).signature
    public = bytes(key.verify_key)
    started = time.perf_counter()
    for _ in range(count):
        if not verify_raw(public, signature, message):
            raise RuntimeError("verification failed")
    return count / (time.perf_counter() - started)


def _one(txs: int) -> float:
    return float(measure_ceiling(txs)["txs_per_s"])


def together(procs: int, txs: int) -> tuple[float, list[float]]:
    """Sum of tx/s of `procs` processes running the pipeline at once."""
    with multiprocessing.get_context("spawn").Pool(procs) as pool:
        rates = pool.map(_one, [txs] * procs)
    return sum(rates), rates


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--txs", type=int, default=8000)
    p.add_argument("--procs", default="1,4", help="comma-separated process counts")
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args()
    print(f"load average before: {load_average()}")
    print(f"Ed25519 verify, one core: {verify_rate():,.0f}/s")
    for procs in (int(x) for x in a.procs.split(",")):
        totals = []
        for _ in range(a.runs):
            total, rates = together(procs, a.txs)
            totals.append(total)
            print(
                f"  {procs} process(es): {total:,.0f} tx/s together ({', '.join(f'{r:,.0f}' for r in rates)})"
            )
        print(
            f"{procs} process(es): median {statistics.median(totals):,.0f} tx/s over {a.runs} runs"
        )
    print(f"load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
