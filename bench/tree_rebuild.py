"""The one-time rebuild of the state tree when a node opens a store of an older layout.

Writes `--records` records (200-byte values, over four agencies) straight into a
fresh `ChainStore`, with the tree as stop 26 stored it (layout ``position/2``:
leaves holding key hash and value hash), then times `Application`'s opening,
which rebuilds the tree in this release's layout from the records and checks
its root (node/app.py `_rebuild_tree`). Prints the wall time, the CPU time and
the peak RSS of the opening, `--runs` times, each on a copy of one store and in
a process of its own.

Usage: ``python bench/tree_rebuild.py [--records 1000000] [--runs 3]``
(building the store takes about a minute per million records).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import node  # noqa: F401  # first: `node` loads the compiled build (node/native.py)
from node import app as app_module
from node import bench, native
from node.app import Application, record_state_key
from node.proofs import value_hash
from storage import state_tree
from storage.store import ChainStore, StateWrite

BLOCK_RECORDS = 100_000
VALUE_BYTES = 200


def build(path: Path, records: int) -> tuple[object, int]:
    """A store of `records` records and the position/2 tree over them; (genesis, head)."""
    genesis, _senders, validator = bench.offline_chain()
    store = ChainStore.open(path, genesis_hash=genesis.hash())
    try:
        app = Application(store, genesis)
        builder = bench.ChainBuilder(store, app, genesis, [validator])
        # the tree as stop 26 stored it (leaves of key hash + value hash), block by block
        tree = state_tree.StateTree(store.get_meta, keys=lambda lo, hi: store.meta_keys(lo, hi, 16))
        root = None
        stamp = genesis.genesis_time_ms
        for lo in range(0, records, BLOCK_RECORDS):
            stamp += 500
            cb = builder.next_block([], stamp)
            height = cb.block.height
            writes = []
            changes: dict[bytes, bytes | None] = {}
            for i in range(lo, min(records, lo + BLOCK_RECORDS)):
                key = record_state_key(f"agency{i % 4}", b"r/%d" % i)
                value = (b"%d:" % i + b"v" * VALUE_BYTES)[:VALUE_BYTES]
                writes.append(StateWrite(key, value, 0))
                changes[state_tree.key_hash(key)] = value_hash(height, 1, value)
            update = tree.update(root, changes, height)
            root = update.root
            meta: dict[bytes, bytes | None] = dict.fromkeys(update.deleted)
            meta.update(update.puts)
            meta[state_tree.root_key(height)] = state_tree.encode_root(root)
            meta[app_module.root_meta_key(height)] = update.root_hash
            meta[app_module.META_STATE_ROOT] = update.root_hash
            store.commit_block(cb, writes, meta, sync=False)
            tree.committed(update)
        head = store.head_height()
        store.write_meta(
            {
                app_module.TREE_LAYOUT_KEY: b"position/2",
                app_module.TREE_TOP_KEY: head.to_bytes(8, "big"),
            }
        )
    finally:
        store.close()
    return genesis, head


def open_once(path: Path, genesis_file: Path) -> None:
    """Open the store at `path` (this process does nothing else) and print the figures."""
    from node.genesis import Genesis

    genesis = Genesis.load(genesis_file)
    store = ChainStore.open(path, genesis_hash=genesis.hash())
    try:
        rss0 = _status_mb("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM (the peak survives the exec from the building parent)
        wall, cpu = time.monotonic(), time.process_time()
        app = Application(store, genesis)
        wall, cpu = time.monotonic() - wall, time.process_time() - cpu
        rss1 = _status_mb("VmHWM")
        if store.get_meta(app_module.TREE_LAYOUT_KEY) != app_module.TREE_LAYOUT:
            raise SystemExit("the store was not marked with the new layout")
        if app.state_root() != store.get_meta(app_module.META_STATE_ROOT):
            raise SystemExit("the rebuilt root is not the stored one")
    finally:
        store.close()
    print(f"{wall:.2f} s wall, {cpu:.2f} s CPU, peak RSS {rss1:.0f} MB "
          f"(+{rss1 - rss0:.0f} MB while opening)", flush=True)  # fmt: skip


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        kib = bench.status_kib(f.read(), field)
    if kib is None:
        raise RuntimeError(f"no {field} in /proc/self/status")
    return kib / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--open", type=Path, help=argparse.SUPPRESS)  # one run, in its own process
    ap.add_argument("--genesis", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.records < 1 or args.runs < 1:
        ap.error("--records and --runs must be at least 1")
    if args.open:
        open_once(args.open, args.genesis)
        return
    print(f"build: {native.MODE}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="redwood-rebuild-"))
    try:
        t = time.monotonic()
        genesis, head = build(tmp / "template", args.records)
        print(f"head {head}", end=", ", flush=True)
        genesis.save(tmp / "genesis.json")  # type: ignore[attr-defined]
        print(f"store of {args.records} records in {time.monotonic() - t:.0f} s", flush=True)
        for run in range(1, args.runs + 1):
            path = tmp / f"run{run}"
            shutil.copytree(tmp / "template", path)
            print(f"run {run}/{args.runs}: rebuilt {args.records} records in ", end="", flush=True)
            cmd = [
                sys.executable,
                __file__,
                "--open",
                str(path),
                "--genesis",
                str(tmp / "genesis.json"),
            ]
            subprocess.run(cmd, check=True)
            shutil.rmtree(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
