"""State tree cost per write and proof size (storage/state_tree.py).

Builds a tree of N records (default 1,000,000) in memory, then applies blocks
of B writes (default 4,000: half updates of existing keys, half new keys) and
reports microseconds per write (tree update + node encoding, no LevelDB; CPU
time of this process, median and best block, since a shared machine inflates
wall time), the proof size of random keys (inclusion and absence) and the time
to verify one.

    .venv/bin/python bench/state_tree_bench.py [--records N] [--block B] [--blocks K]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from storage.state_tree import StateTree, key_hash, verify


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--block", type=int, default=4000)
    ap.add_argument("--blocks", type=int, default=5)
    args = ap.parse_args()
    db: dict[bytes, bytes] = {}
    tree = StateTree(db.get)
    root = None
    t0 = time.perf_counter()
    chunk = 100_000
    version = 0
    for start in range(0, args.records, chunk):
        version += 1
        changes = {
            key_hash(b"rec/a\x00%d" % i): hashlib.sha256(b"%d" % i).digest()
            for i in range(start, min(args.records, start + chunk))
        }
        up = tree.update(root, changes, version)
        db.update(up.puts)
        root = up.root
    print(f"built {args.records} records in {time.perf_counter() - t0:.1f} s, {len(db)} nodes")
    gc.collect()
    gc.freeze()  # the node's long-lived objects are not the tree's cost
    per_write = []
    nxt = args.records
    for _ in range(args.blocks):
        version += 1
        half = args.block // 2
        changes = {
            key_hash(b"rec/a\x00%d" % (int.from_bytes(os.urandom(4), "big") % args.records)): (
                os.urandom(32)
            )
            for _ in range(half)
        }
        for i in range(nxt, nxt + args.block - half):
            changes[key_hash(b"rec/a\x00%d" % i)] = os.urandom(32)
        nxt += args.block - half
        t, w = time.process_time(), time.perf_counter()
        up = tree.update(root, changes, version)
        dt, wall = time.process_time() - t, time.perf_counter() - w
        db.update(up.puts)
        root = up.root
        per_write.append(dt / len(changes) * 1e6)
        print(
            f"block of {len(changes)} writes: {dt * 1e3:.1f} ms CPU ({wall * 1e3:.1f} ms wall), "
            f"{len(up.puts)} nodes written"
        )
    print(
        f"tree update: median {statistics.median(per_write):.2f} us/write CPU, "
        f"best block {min(per_write):.2f}"
    )
    assert root is not None
    sizes, vtimes = [], []
    for i in range(200):
        k = key_hash(b"rec/a\x00%d" % (i * 4999 % args.records))
        p = tree.prove(root, k)
        sizes.append(p.size_bytes())
        t = time.perf_counter()
        assert verify(root.hash, k, p.leaf[1] if p.leaf else None, p)
        vtimes.append(time.perf_counter() - t)
        a = tree.prove(root, key_hash(b"absent%d" % i))
        sizes.append(a.size_bytes())
    print(
        f"proof size: median {statistics.median(sizes):.0f} B, max {max(sizes)} B; "
        f"verify median {statistics.median(vtimes) * 1e6:.0f} us"
    )


if __name__ == "__main__":
    main()
