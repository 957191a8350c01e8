"""LevelDB's background CPU (compaction) per transaction as one validator's database grows.

Applies blocks of the bench workload (signed 200-byte puts over 50,000 record
keys, as `redwood bench` sends them) through a real `Application` and
`ChainStore`, the way a validator checks and commits them, in one process
with no network. Every `--every` blocks it prints the CPU per transaction of
the applying thread (decode, signature check, execution, state tree, the
LevelDB writes) and of all other threads (LevelDB's compaction thread), and
the process's RSS split; at the end the totals, the live bytes by key prefix
and LevelDB's own compaction table.

Ablations, for finding what the compactions carry (never for figures of the node):

- ``--drop-prefix b/``: writes under that prefix are kept in memory, not in
  LevelDB (reads and key listings of them still work); ``\\xNN`` escapes give other bytes, e.g.
  ``'a/smt/n/\\x00'`` for the tree's root node;
- ``--opt name=value``: a LevelDB option (`storage.store._DB_OPTIONS`);
- ``--top-every N``: write the state tree's top (depths 0-3, held in memory
  by node/app.py) with every Nth block instead of every 32nd; 1 is how
  stop 25 wrote it, with every block.

``--keys N`` writes over N record keys instead of 50,000: with more keys than the
application remembers (`CURRENT_CACHE_KEYS`, two generations) an update's leaf is
read from the store, and every first write of a key creates a leaf, most of them
splitting another key's slot.

Usage: ``python bench/compaction.py [--blocks 300] [--block-txs 3000] [--every 50] [--keys N]``
(signs all transactions first: ~20 s and ~1 GB of memory for 900,000).
"""

from __future__ import annotations

import argparse
import ast
import heapq
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import node  # noqa: F401  # first: `node` loads the compiled build (node/native.py)
import storage.store as store_module
from node import bench
from node.app import Application
from storage.store import ChainStore


def thread_cpu() -> dict[str, float]:
    """CPU seconds of each thread of this process, by thread id."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        out[tid] = (int(fields[11]) + int(fields[12])) / tick
    return out


def rss_mb() -> dict[str, int]:
    with open("/proc/self/status") as f:
        return {
            k: int(v.split()[0]) // 1024
            for k, v in (line.split(":", 1) for line in f)
            if k in ("RssAnon", "RssFile", "VmHWM")
        }


class _Dropping:
    """A write batch that keeps puts under `prefixes` in `memory` instead of LevelDB."""

    def __init__(self, batch: Any, prefixes: tuple[bytes, ...], memory: dict) -> None:
        self._batch, self._prefixes, self._memory = batch, prefixes, memory

    def put(self, key: bytes, value: bytes) -> None:
        if key.startswith(self._prefixes):
            self._memory[key] = value
        else:
            self._batch.put(key, value)

    def delete(self, key: bytes) -> None:
        self._memory.pop(key, None)
        self._batch.delete(key)

    def __enter__(self) -> _Dropping:
        self._batch.__enter__()
        return self

    def __exit__(self, *exc: object) -> Any:
        return self._batch.__exit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batch, name)


class _DroppingDb:
    def __init__(self, db: Any, prefixes: tuple[bytes, ...]) -> None:
        self.db, self._prefixes, self._memory = db, prefixes, {}

    def write_batch(self, **kwargs: Any) -> _Dropping:
        return _Dropping(self.db.write_batch(**kwargs), self._prefixes, self._memory)

    def get(self, key: bytes, *args: Any, **kwargs: Any) -> Any:
        if key in self._memory:
            return self._memory[key]
        return self.db.get(key, *args, **kwargs)

    def iterator(self, *, start: bytes, stop: bytes, include_value: bool = True) -> Any:
        """Keys in [start, stop) from LevelDB and memory (the state tree lists leaves)."""
        if include_value:
            raise NotImplementedError("only key listings see the dropped writes")
        kept = sorted(k for k in self._memory if start <= k < stop)
        return _Listing(self.db.iterator(start=start, stop=stop, include_value=False), kept)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


class _Listing:
    """A plyvel key iterator merged with sorted keys held in memory."""

    def __init__(self, it: Any, kept: list[bytes]) -> None:
        self._it, self._kept = it, kept

    def __enter__(self) -> Any:
        self._it.__enter__()
        return heapq.merge(self._it, self._kept)

    def __exit__(self, *exc: object) -> Any:
        return self._it.__exit__(*exc)


def _prefix_bytes(text: str) -> bytes:
    """A prefix given on the command line, with ``\\xNN`` escapes for non-text bytes."""
    return text.encode("latin-1").decode("unicode_escape").encode("latin-1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=300)
    ap.add_argument("--block-txs", type=int, default=3000)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--drop-prefix", action="append", default=[], metavar="PREFIX")
    ap.add_argument("--opt", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--top-every", type=int, default=None, metavar="N")
    ap.add_argument("--keys", type=int, default=bench.BENCH_KEYS, metavar="N")
    args = ap.parse_args()
    if args.keys < 1:
        ap.error("--keys must be at least 1")
    for opt in args.opt:
        name, _, value = opt.partition("=")
        store_module._DB_OPTIONS[name] = ast.literal_eval(value)

    genesis, senders, validator = bench.offline_chain()
    count = args.blocks * args.block_txs
    from node import native

    print(f"build: {native.MODE}", file=sys.stderr)
    print(f"signing {count} transactions...", file=sys.stderr)
    txs = bench.sign_txs(senders, genesis.chain_id, count, 10_000, keys=args.keys)
    tmp = Path(tempfile.mkdtemp(prefix="redwood-compaction-"))
    main_tid = str(threading.get_native_id())
    try:
        store = ChainStore.open(tmp / "db", genesis_hash=genesis.hash())
        try:
            app = Application(store, genesis)
            if args.top_every is not None:
                app.tree_top_flush_blocks = args.top_every
            print(f"tree top written every {app.tree_top_flush_blocks} blocks", file=sys.stderr)
            builder = bench.ChainBuilder(store, app, genesis, [validator])
            db = store._db
            if args.drop_prefix:
                store._db = _DroppingDb(db, tuple(_prefix_bytes(p) for p in args.drop_prefix))  # type: ignore[assignment]
            first = last = thread_cpu()
            started = last_wall = time.monotonic()
            for b, i in enumerate(range(0, count, args.block_txs), 1):
                chunk = txs[i : i + args.block_txs]
                for raw in chunk:
                    if not hasattr(app.check(raw, store.head_height()), "tx"):
                        raise SystemExit("a bench transaction was refused")
                app.apply(builder.next_block(chunk, i + 1))
                if b % args.every == 0:
                    now, wall = thread_cpu(), time.monotonic()
                    n = args.every * args.block_txs
                    own = now.get(main_tid, 0) - last.get(main_tid, 0)
                    rest = sum(v - last.get(t, 0) for t, v in now.items() if t != main_tid)
                    print(
                        f"blocks {b:5d}  applying {own / n * 1e6:6.1f} us/tx  "
                        f"background {rest / n * 1e6:6.1f} us/tx  "
                        f"wall {(wall - last_wall) / n * 1e6:6.1f} us/tx  MB {rss_mb()}",
                        flush=True,
                    )
                    last, last_wall = now, wall
            now = thread_cpu()
            own = now.get(main_tid, 0) - first.get(main_tid, 0)
            rest = sum(v - first.get(t, 0) for t, v in now.items() if t != main_tid)
            print(
                f"tree {app.state_tree_cpu_s / count * 1e6:.1f} us/tx "
                f"total ({count} txs): applying {own / count * 1e6:.1f} us/tx, background "
                f"{rest / count * 1e6:.1f} us/tx, wall "
                f"{(time.monotonic() - started) / count * 1e6:.1f} us/tx"
            )
            sizes: dict[bytes, int] = {}
            for key, value in db.iterator():
                kind = key[:7] if key.startswith(b"a/smt/") else key[:2]
                sizes[kind] = sizes.get(kind, 0) + len(key) + len(value)
            print(
                "live MB by prefix:",
                {k.decode(errors="replace"): round(v / 1e6, 1) for k, v in sorted(sizes.items())},
            )
            print(db.get_property(b"leveldb.stats").decode())
        finally:
            store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
