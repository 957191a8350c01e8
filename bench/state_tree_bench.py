"""State tree cost per write and proof size (storage/state_tree.py).

Builds a tree of N records (default 1,000,000), then applies blocks of B
writes (default 4,000: half updates of random existing keys, half new keys)
the way the node does: `update` on the previous root, the node writes go to
the store, then `committed`. The first W blocks (default 20) warm the node
cache as a running node's is warm (its depth-4 slots fill as positions are
written: ~77% after 20 blocks, all after ~60); the next K blocks (default 5)
are measured. Figures are CPU time of this thread (a shared machine inflates
wall time, and LevelDB compacts in threads of its own), microseconds per write
for `update`, `committed` and their sum, median and best block over the K
blocks. LevelDB writes are not included (the store pays them in the block's
batch, with or without a tree).

Garbage collection runs as in the node (`--gc node`: automatic collection off,
young generations collected between blocks, untimed; `--gc auto` for Python's
default thresholds, which add ~1 us a write).

Reads go through a `get` like the node's (`ChainStore.get_meta`, a Python
method behind an error-translating decorator that adds the meta prefix), over
either a dict (`--get dict`: the tree's own cost) or a LevelDB opened with the
store's own options, `storage/store.py`'s `_DB_OPTIONS` (`--get leveldb`: with
the real cost of reading the nodes not in the cache; `--compression none`
turns LevelDB's block compression off to show what it costs). `--known`
passes each updated key's current value hash (`update(known=...)`), as the
node could if its store kept value hashes: no leaf read for an update. Then it
reports the proof size of random keys (inclusion and absence) and the time to
verify one.

    .venv/bin/python bench/state_tree_bench.py [--records N] [--block B]
        [--warmup W] [--blocks K] [--get dict|leveldb|both] [--cache-nodes C]
        [--compression store|none|snappy] [--known] [--impl path/to/state_tree.py]

`--impl` loads another version of the module (e.g. `git show
HEAD~3:storage/state_tree.py > /tmp/old_tree.py`) to compare on the same run.

Until stop 26 this bench did not load the compiled build (`import node`
first), so the table below is pure Python. Compiled, `--records 50000
--block 3000 --known`: update + committed 7.0 + 0.5 us a write from a
dict, 9.1 + 0.5 through LevelDB (2026-11-27, one run of 9 blocks).

Measured 2026-11-26 on the shared 2-core VM (load average 6-26 from other
guests; defaults: 1,000,000 records, blocks of 4,000, 20 warm-up blocks,
median of 5, gc as the node runs it), CPU us per write, update + committed =
total, median of 3 runs (each a median of 5 blocks):

                          dict                 leveldb (store: snappy)  leveldb, no compression
    before (dcc9417)      14.5 + 2.1 = 16.4    29.7 + 2.4 = 32.3        22.1 + 2.4 = 24.4
    after                 12.5 + 0.9 = 13.4    26.0 + 0.9 = 26.9
    after, --known        12.1 + 0.8 = 12.9    22.5 + 0.9 = 23.6        18.8 + 0.9 = 19.8

(before: 32,768 nodes in an LRU, ~22 MB; after: 57,344 slots, ~28 MB at
1,000,000 records.) With `--warmup 60` (a warmer cache, a bigger database; one
run each) through LevelDB: 38.4 before, 30.4 after, 23.5 with `--known`. Per write the update now reads ~0.7 leaves (~0.2 with
`--known`: only those a new key splits), ~0.45 depth-5 and ~0.2-0.35 depth-4
nodes. A read costs ~1 us from the dict but 8-15 us of CPU from LevelDB while
it takes the blocks' writes (memtable and level-0 files to search; a cold
compressed block to inflate: 8-10 us against ~2.5 us uncompressed when idle),
so through LevelDB reads are still ~40% of the cost. The rest is Python: the
SHA-256 and byte joins of the ~3 nodes a write rewrites (its depth-4 node, a
share of the depth-3 ones, its leaf) and the walk.
"""

from __future__ import annotations

import argparse
import functools
import gc
import hashlib
import importlib.util
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

META = b"a/"  # the store's meta prefix
LEAF_PREFIX = b"smt/k/"  # storage/state_tree.py: leaves by key hash


def load_impl(path: str | None) -> ModuleType:
    if path is None:
        import node  # noqa: F401  # first: `node` loads the compiled build (node/native.py)
        from storage import state_tree

        return state_tree
    spec = importlib.util.spec_from_file_location("state_tree_impl", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def record_key(st: ModuleType, i: int) -> bytes:
    key: bytes = st.key_hash(b"rec/a\x00%d" % i)
    return key


def build(st: ModuleType, records: int) -> tuple[dict[bytes, bytes], Any, int]:
    """The tree of `records` keys in a dict (node key -> bytes, without the meta prefix)."""
    db: dict[bytes, bytes] = {}
    tree = st.StateTree(db.get)
    changes = {record_key(st, i): hashlib.sha256(b"%d" % i).digest() for i in range(records)}
    up = tree.update(None, changes, 1)  # one update from the empty tree: nothing is read
    db.update(up.puts)
    return db, up.root, 1


def store_errors(method: Callable[..., Any]) -> Callable[..., Any]:
    """Like storage/store.py's `_leveldb_errors`: every public read is wrapped."""

    @functools.wraps(method)
    def wrapper(*args: Any) -> Any:
        try:
            return method(*args)
        except OSError as exc:
            raise RuntimeError(f"store error: {exc}") from None

    return wrapper


class DictStore:
    """A dict behind a method call, like `ChainStore.get_meta` over LevelDB.

    `meta_keys` (the tree's look-up of a leaf by its slot's prefix) uses buckets by
    the first two bytes of the key hash: at 1,000,000 records ~15 keys each."""

    def __init__(self, nodes: dict[bytes, bytes], compression: str) -> None:
        self._db: dict[bytes, bytes] = {}
        self._buckets: dict[bytes, set[bytes]] = {}
        self.write(nodes)

    @store_errors
    def get_meta(self, key: bytes) -> bytes | None:
        return self._db.get(META + bytes(key))

    def meta_keys(self, lo: bytes, hi: bytes, limit: int) -> list[bytes]:
        n = len(LEAF_PREFIX) + 2
        if len(lo) >= n and lo.startswith(LEAF_PREFIX):
            pool: Any = self._buckets.get(lo[:n], ())
        else:
            pool = (k[len(META) :] for k in self._db)
        return sorted(k for k in pool if lo <= k < hi)[:limit]

    def write(self, puts: dict[bytes, bytes], deleted: Any = ()) -> None:
        n = len(LEAF_PREFIX) + 2
        for k in deleted:
            self._db.pop(META + k, None)
            if k.startswith(LEAF_PREFIX):
                self._buckets.get(k[:n], set()).discard(k)
        for k, v in puts.items():
            self._db[META + k] = v
            if k.startswith(LEAF_PREFIX):
                self._buckets.setdefault(k[:n], set()).add(k)

    def close(self) -> None:
        self._db.clear()


class LevelStore:
    """A LevelDB in a temporary directory, read like `ChainStore.get_meta`."""

    def __init__(self, nodes: dict[bytes, bytes], compression: str) -> None:
        import plyvel

        from storage import leveldb_reads
        from storage.store import _DB_OPTIONS  # the node's own options, not a copy

        leveldb_reads.prefer_pread()  # and its way of reading tables
        options: dict[str, Any] = dict(_DB_OPTIONS)
        if compression != "store":
            options["compression"] = None if compression == "none" else compression
        self._dir = tempfile.mkdtemp(prefix="state_tree_bench_")
        self._db = plyvel.DB(self._dir, create_if_missing=True, **options)
        self.write(nodes)
        self._db.compact_range()

    @store_errors
    def get_meta(self, key: bytes) -> bytes | None:
        value: bytes | None = self._db.get(META + bytes(key))
        return value

    def meta_keys(self, lo: bytes, hi: bytes, limit: int) -> list[bytes]:
        out = []
        with self._db.iterator(start=META + lo, stop=META + hi, include_value=False) as it:
            for key in it:
                out.append(key[len(META) :])
                if len(out) >= limit:
                    break
        return out

    def write(self, puts: dict[bytes, bytes], deleted: Any = ()) -> None:
        with self._db.write_batch() as wb:
            for k in deleted:
                wb.delete(META + k)
            for k, v in puts.items():
                wb.put(META + k, v)

    def close(self) -> None:
        self._db.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def run_blocks(
    st: ModuleType, store: Any, root: Any, version: int, args: argparse.Namespace
) -> Any:
    cache = {} if args.cache_nodes is None else {"cache_nodes_max": args.cache_nodes}
    tree = st.StateTree(store.get_meta, keys=lambda lo, hi: store.meta_keys(lo, hi, 16), **cache)
    rng = random.Random(7)
    nxt = args.records
    upd_us, com_us = [], []
    written: dict[bytes, bytes] = {}  # values written by the blocks (--known)
    for b in range(args.warmup + args.blocks):
        version += 1
        half = args.block // 2
        updated = [rng.randrange(args.records) for _ in range(half)]
        changes = {record_key(st, i): rng.randbytes(32) for i in updated}
        known = {}
        if args.known:  # what the store would tell the node: each updated key's value hash
            for i in updated:
                k = record_key(st, i)
                known[k] = written.get(k) or hashlib.sha256(b"%d" % i).digest()
            written.update(changes)
        for i in range(nxt, nxt + args.block - half):
            changes[record_key(st, i)] = rng.randbytes(32)
        nxt += args.block - half
        if args.gc == "node":
            gc.collect(1)  # the node's own young collection, between blocks (not timed)
        hint = {"known": known} if args.known else {}
        t0 = time.thread_time()
        up = tree.update(root, changes, version, **hint)
        t1 = time.thread_time()
        store.write(up.puts, up.deleted)
        t2 = time.thread_time()
        tree.committed(up)
        t3 = time.thread_time()
        root = up.root
        if b < args.warmup:
            continue
        upd_us.append((t1 - t0) / len(changes) * 1e6)
        com_us.append((t3 - t2) / len(changes) * 1e6)
        print(
            f"  block of {len(changes)} writes: update {(t1 - t0) * 1e3:.1f} ms, "
            f"committed {(t3 - t2) * 1e3:.1f} ms CPU, {len(up.puts)} nodes written"
        )
    tot = [u + c for u, c in zip(upd_us, com_us, strict=True)]
    med = statistics.median
    print(
        f"  per write (CPU, median of {len(tot)} blocks / best): update {med(upd_us):.2f} / "
        f"{min(upd_us):.2f} us, committed {med(com_us):.2f} / {min(com_us):.2f} us, "
        f"total {med(tot):.2f} / {min(tot):.2f} us"
    )
    return tree, root


def proofs(st: ModuleType, tree: Any, root: Any, records: int) -> None:
    sizes, vtimes = [], []
    for i in range(200):
        k = record_key(st, i * 4999 % records)
        p = tree.prove(root, k)
        sizes.append(p.size_bytes())
        t = time.perf_counter()
        assert st.verify(root.hash, k, p.leaf[1] if p.leaf else None, p)
        vtimes.append(time.perf_counter() - t)
        a = tree.prove(root, st.key_hash(b"absent%d" % i))
        sizes.append(a.size_bytes())
    print(
        f"proof size: median {statistics.median(sizes):.0f} B, max {max(sizes)} B; "
        f"verify median {statistics.median(vtimes) * 1e6:.0f} us"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--block", type=int, default=4000)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--get", choices=("dict", "leveldb", "both"), default="both")
    ap.add_argument(
        "--gc",
        choices=("node", "auto"),
        default="node",
        help="node: automatic collection off as `redwood start` runs; auto: Python's default",
    )
    ap.add_argument(
        "--compression",
        choices=("store", "none", "snappy"),
        default="store",
        help="LevelDB block compression: store (as storage/store.py opens it), none, snappy",
    )
    ap.add_argument(
        "--cache-nodes", type=int, default=None, help="StateTree cache_nodes_max (its default)"
    )
    ap.add_argument(
        "--known",
        action="store_true",
        help="pass each updated key's current value hash (update's `known`): no leaf read",
    )
    ap.add_argument("--impl", default=None, help="path of another state_tree.py to measure")
    args = ap.parse_args()
    st = load_impl(args.impl)
    print(f"implementation: {st.__file__}; load average {os.getloadavg()[0]:.2f}")
    t0 = time.perf_counter()
    nodes, root, version = build(st, args.records)
    print(f"built {args.records} records in {time.perf_counter() - t0:.1f} s, {len(nodes)} nodes")
    kinds: list[tuple[str, Callable[[dict[bytes, bytes], str], Any]]] = []
    if args.get in ("dict", "both"):
        kinds.append(("dict", DictStore))
    if args.get in ("leveldb", "both"):
        kinds.append(("leveldb", LevelStore))
    for name, make in kinds:
        store = make(nodes, args.compression)
        gc.collect()
        gc.freeze()  # as the node does with its start-up objects
        if args.gc == "node":
            gc.disable()
        print(f"get through {name} (gc {args.gc}):")
        tree, last = run_blocks(st, store, root, version, args)
        gc.enable()
        proofs(st, tree, last, args.records)
        store.close()
        gc.unfreeze()
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
