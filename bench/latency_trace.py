"""Where a latency run's tail comes from: every transaction's path, split in two.

Runs `redwood bench latency` (same localnet, load and measurement) with the
bench driver's submit and block-stream hooks wrapped, so that each committed
transaction has its wall-clock submit time, the proposal timestamp of the
block that holds it (the primary's clock: the localnet shares one machine)
and the time node0's stream showed the commit. Prints, for the last run:

- submit -> proposal (admission, gossip to the primary, waiting for a block)
  and proposal -> commit seen (the three phases, execution, the stream),
  p50/p90/p99/max of each;
- the transactions slower than p99, by the node they were submitted to;
- the tail's clusters in time (transactions within 1 s of each other), with
  their wall-clock times, to set beside a node's LevelDB `LOG` (kept with
  `--keep`) or its metrics.

Usage: ``python bench/latency_trace.py --rate 1560 --duration 60 --runs 3
[--keep] [--out trace.json]`` (the JSON holds every transaction's times).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import node.bench as bench

CLUSTER_GAP_S = 1.0


def pct(values: list[float], q: float) -> float:
    """The bench's own percentile (q in 0..1), so a p99 here is the bench's p99."""
    return bench.percentile(values, q * 100) or 0.0


def install_hooks(
    sent: dict[str, tuple[float, str]], blocks: dict[int, tuple[float, int, list[str]]]
) -> None:
    post, on_block = bench.Driver._post, bench.Driver._on_block

    async def traced_post(self: Any, http: Any, batch: Any) -> None:
        now = time.time()
        for h in batch.hashes:
            sent[h] = (now, str(http.base_url))
        await post(self, http, batch)

    def traced_on_block(self: Any, text: str) -> None:
        doc = json.loads(text)
        blocks[int(doc["height"])] = (
            time.time(),
            int(doc["timestamp_ms"]),
            doc.get("tx_hashes") or [],
        )
        on_block(self, text)

    bench.Driver._post = traced_post  # type: ignore[method-assign]
    bench.Driver._on_block = traced_on_block  # type: ignore[method-assign]


def report(txs: list[tuple[float, str, int, float, float]], run_s: float) -> None:
    if not txs:
        print("no transactions traced")
        return
    last = [t for t in txs if t[0] > txs[-1][0] - run_s]
    total = [(t[4] - t[0]) * 1000 for t in last]
    parts = {
        "submit -> proposal": [(t[3] - t[0]) * 1000 for t in last],
        "proposal -> commit seen": [(t[4] - t[3]) * 1000 for t in last],
        "total": total,
    }
    print(f"last run: {len(last)} transactions")
    for name, values in parts.items():
        print(
            f"  {name:24} p50 {pct(values, 0.5):7.1f}  p90 {pct(values, 0.9):7.1f}  "
            f"p99 {pct(values, 0.99):7.1f}  max {max(values):7.1f} ms"
        )
    p99 = pct(total, 0.99)
    tail = [t for t in last if (t[4] - t[0]) * 1000 > p99]
    by_node = collections.Counter(t[1] for t in tail)
    print(f"  slower than p99 ({len(tail)} txs) by node submitted to: {dict(by_node)}")
    clusters: list[list[tuple[float, str, int, float, float]]] = []
    for t in sorted(tail):
        if clusters and t[0] - clusters[-1][-1][0] < CLUSTER_GAP_S:
            clusters[-1].append(t)
        else:
            clusters.append([t])
    for c in clusters:
        at = datetime.datetime.fromtimestamp(c[0][0]).strftime("%H:%M:%S.%f")[:-3]
        wait = pct([(t[3] - t[0]) * 1000 for t in c], 0.5)
        commit = pct([(t[4] - t[3]) * 1000 for t in c], 0.5)
        print(
            f"  tail cluster at {at}: {len(c)} txs over {c[-1][0] - c[0][0]:.2f} s, "
            f"median submit->proposal {wait:.0f} ms, proposal->commit {commit:.0f} ms"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the localnet (LevelDB LOGs)")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    sent: dict[str, tuple[float, str]] = {}
    blocks: dict[int, tuple[float, int, list[str]]] = {}
    install_hooks(sent, blocks)
    argv = ["latency", "--rate", str(a.rate), "--duration", str(a.duration), "--runs", str(a.runs)]
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    bench.run(p.parse_args(argv + (["--keep"] if a.keep else [])))
    txs = []
    for height, (seen, ts_ms, hashes) in sorted(blocks.items()):
        for h in hashes:
            if h in sent:
                txs.append((sent[h][0], sent[h][1], height, ts_ms / 1000, seen))
    txs.sort()
    report(txs, a.duration + 10)
    if a.out is not None:
        a.out.write_text(json.dumps({"txs": txs}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
