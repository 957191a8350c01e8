"""Catch-up's apply path alone: certified blocks applied without signature checks.

Builds a chain of blocks of bench transactions on one store (as the live
validators did), then applies the same certified blocks to a fresh store in
batches of 4, `verify_signatures=False`, the way a catching-up node does
after fetching them: decode, rules, duplicate check, state tree, LevelDB.
Prints CPU (all threads, so LevelDB's compaction too) per transaction and
the wall-clock rate; `--profile` adds the top of a cProfile listing (which
roughly doubles the time, so its shares, not its totals, are the figure).

Usage: ``python bench/catchup_apply.py [--txs 100000] [--block-txs 4000] [--profile]``
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node import bench
from node.app import Application
from storage.store import ChainStore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--txs", type=int, default=100_000)
    ap.add_argument("--block-txs", type=int, default=4000)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    genesis, senders, validator = bench.offline_chain()
    print(f"signing {args.txs} transactions...", file=sys.stderr)
    txs = bench.sign_txs(senders, genesis.chain_id, args.txs, 10_000)
    tmp = Path(tempfile.mkdtemp(prefix="redwood-catchup-"))
    try:
        live = ChainStore.open(tmp / "live", genesis_hash=genesis.hash())
        fresh = ChainStore.open(tmp / "fresh", genesis_hash=genesis.hash())
        try:
            builder = bench.ChainBuilder(live, Application(live, genesis), genesis, [validator])
            blocks = []
            for i in range(0, len(txs), args.block_txs):
                cb = builder.next_block(txs[i : i + args.block_txs], i + 1)
                builder.app.apply(cb, verify_signatures=False)
                blocks.append(cb)
            app = Application(fresh, genesis)
            profiler = cProfile.Profile() if args.profile else None
            cpu, wall = time.process_time(), time.perf_counter()
            if profiler:
                profiler.enable()
            for i in range(0, len(blocks), 4):
                app.apply_many(blocks[i : i + 4], verify_signatures=False)
            if profiler:
                profiler.disable()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        finally:
            live.close()
            fresh.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"catch-up apply of {len(txs)} txs in {len(blocks)} blocks: "
        f"{cpu / len(txs) * 1e6:.1f} us CPU per tx, {len(txs) / wall:.0f} tx/s wall"
    )
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
