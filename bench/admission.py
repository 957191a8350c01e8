"""Admission cost per transaction: `Mempool.screen` + `admit` on a real LevelDB store.

What every node does for every transaction it receives (from a client or by
gossip) before the signature check and around it: hash, decode, rules,
"never committed" lookup, the signature item, then the mempool insert. The
signature check itself is timed separately (`verify`), so that changes to
the Python around it show up clearly.

Usage: ``python bench/admission.py [--txs 20000] [--batch 2000] [--runs 5]``
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.app import Application
from node.bench import load_average, offline_chain, sign_txs
from node.mempool import Mempool
from node.verify_pool import verify_serial
from storage.store import ChainStore


def once(tx_list: list[bytes], batch: int, genesis: object, verify: bool) -> float:
    """CPU microseconds (this process) per transaction of add_many over `tx_list` in batches of `batch`."""
    tmp = Path(tempfile.mkdtemp(prefix="redwood-admission-"))
    store = ChainStore.open(tmp / "chain", genesis_hash=genesis.hash())  # type: ignore[attr-defined]
    try:
        app = Application(store, genesis)  # type: ignore[arg-type]
        pool = Mempool(app, max_txs=len(tx_list) + 1, max_per_sender=len(tx_list) + 1)
        check = verify_serial if verify else (lambda items: [True] * len(items))
        started = time.process_time()
        for i in range(0, len(tx_list), batch):
            results = pool.add_many(tx_list[i : i + batch], 0, check)
            if any(hasattr(r, "code") for r in results):
                raise RuntimeError("a benchmark transaction was refused")
        return (time.process_time() - started) / len(tx_list) * 1e6
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--txs", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=2000)
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args()
    genesis, senders, _ = offline_chain(16)
    tx_list = sign_txs(senders, genesis.chain_id, a.txs, 10_000)
    print(f"load average before: {load_average()}")
    for verify in (False, True):
        times = [once(tx_list, a.batch, genesis, verify) for _ in range(a.runs)]
        what = "with Ed25519 verify" if verify else "without the signature check"
        print(
            f"admission {what}: median {statistics.median(times):.1f} us/tx "
            f"(min {min(times):.1f}, runs {', '.join(f'{t:.1f}' for t in times)})"
        )
    print(f"load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
