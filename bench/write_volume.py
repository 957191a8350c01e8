"""What a validator writes to LevelDB per transaction, by key prefix: bytes and keys.

Applies blocks of the bench workload (signed 200-byte puts over 50,000
record keys, as `redwood bench` sends them) through a real `Application`
and `ChainStore`, the way a validator commits them, and counts every put
and delete of the store's write batches by key prefix (tree nodes by their
`a/smt/?` meta prefix). The consensus journal is not in these batches (the
node writes it separately, about one block's bytes per block).

Usage: ``python bench/write_volume.py [--blocks 30] [--block-txs 4000]``
"""

from __future__ import annotations

import argparse
import collections
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node import bench
from node.app import Application
from storage.store import ChainStore


class _CountingBatch:
    def __init__(self, batch: Any, sizes: collections.Counter, keys: collections.Counter) -> None:
        self._batch, self._sizes, self._keys = batch, sizes, keys

    @staticmethod
    def _kind(key: bytes) -> str:
        return (key[:7] if key.startswith(b"a/smt/") else key[:2]).decode(errors="replace")

    def put(self, key: bytes, value: bytes) -> None:
        kind = self._kind(key)
        self._sizes[kind] += len(key) + len(value)
        self._keys[kind] += 1
        self._batch.put(key, value)

    def delete(self, key: bytes) -> None:
        kind = "delete " + self._kind(key)
        self._sizes[kind] += len(key)
        self._keys[kind] += 1
        self._batch.delete(key)

    def __enter__(self) -> _CountingBatch:
        self._batch.__enter__()
        return self

    def __exit__(self, *exc: object) -> Any:
        return self._batch.__exit__(*exc)


class _CountingDb:
    def __init__(self, db: Any, sizes: collections.Counter, keys: collections.Counter) -> None:
        self._db, self._sizes, self._keys = db, sizes, keys

    def write_batch(self, **kwargs: Any) -> _CountingBatch:
        return _CountingBatch(self._db.write_batch(**kwargs), self._sizes, self._keys)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=30)
    ap.add_argument("--block-txs", type=int, default=4000)
    args = ap.parse_args()
    genesis, senders, validator = bench.offline_chain()
    count = args.blocks * args.block_txs
    print(f"signing {count} transactions...", file=sys.stderr)
    txs = bench.sign_txs(senders, genesis.chain_id, count, 10_000)
    tmp = Path(tempfile.mkdtemp(prefix="redwood-writes-"))
    sizes: collections.Counter = collections.Counter()
    keys: collections.Counter = collections.Counter()
    try:
        store = ChainStore.open(tmp / "db", genesis_hash=genesis.hash())
        try:
            app = Application(store, genesis)
            builder = bench.ChainBuilder(store, app, genesis, [validator])
            store._db = _CountingDb(store._db, sizes, keys)  # type: ignore[assignment]
            for i in range(0, count, args.block_txs):
                chunk = txs[i : i + args.block_txs]
                for raw in chunk:
                    if not hasattr(app.check(raw, store.head_height()), "tx"):
                        raise SystemExit("a bench transaction was refused")
                app.apply(builder.next_block(chunk, i + 1))
        finally:
            store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.blocks} blocks of {args.block_txs} txs; per transaction:")
    for kind, size in sizes.most_common():
        print(f"  {kind:16} {size / count:8.1f} bytes  {keys[kind] / count:6.3f} keys")
    print(
        f"  {'total':16} {sum(sizes.values()) / count:8.1f} bytes  "
        f"{sum(keys.values()) / count:6.3f} keys"
    )


if __name__ == "__main__":
    main()
