"""CPU per thread of each running Redwood node, over a window: where py-spy cannot see.

Samples `/proc/PID/task/*/stat` of every `node.cli start` process twice,
`--window` seconds apart, and prints each thread's share of one core with
its kernel name. Native threads show too: LevelDB's background compaction
thread carries the name of the thread that first made it run (a Trio worker,
e.g. ``journal_write f``), and keeps its id for the node's life. Optionally
also the per-second rate of the node's counters (`--metrics`, read from the
`[metrics] listen` address in each node's config/node.toml).

Run it beside a bench: ``redwood bench throughput --duration 60 &`` then
``python bench/thread_cpu.py --match redwood-bench --delay 40 --window 20``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tomllib
import urllib.request
from pathlib import Path


def nodes(match: str) -> list[tuple[int, str]]:
    """(pid, home) of every running `node.cli start --home HOME` whose home contains `match`."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"node.cli" in argv and b"start" in argv and b"--home" in argv:
            home = argv[argv.index(b"--home") + 1].decode()
            if match in home:
                out.append((int(entry), home))
    return sorted(out)


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """Thread id -> (name, CPU seconds so far)."""
    tick = os.sysconf("SC_CLK_TCK")
    threads = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        threads[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return threads


def counters(home: str) -> dict[str, float]:
    config = tomllib.loads(Path(home, "config", "node.toml").read_text())
    url = f"http://{config['metrics']['listen']}/metrics"
    values = {}
    with urllib.request.urlopen(url, timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name, _, value = line.rpartition(" ")
            if "_total" in name:
                try:
                    values[name] = float(value)
                except ValueError:
                    continue
    return values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--match", default="", help="only nodes whose --home contains this")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds to wait after nodes appear")
    ap.add_argument("--window", type=float, default=20.0)
    ap.add_argument("--min-percent", type=float, default=0.3)
    ap.add_argument("--metrics", action="store_true", help="also counters' rates")
    args = ap.parse_args()
    deadline = time.monotonic() + 600
    while not nodes(args.match):
        if time.monotonic() > deadline:
            sys.exit("no node process found")
        time.sleep(0.5)
    time.sleep(args.delay)
    found = nodes(args.match)
    before = {pid: thread_cpu(pid) for pid, _ in found}
    metrics_before = {pid: counters(home) for pid, home in found} if args.metrics else {}
    started = time.monotonic()
    time.sleep(args.window)
    after = {pid: thread_cpu(pid) for pid, _ in found}
    metrics_after = {pid: counters(home) for pid, home in found} if args.metrics else {}
    elapsed = time.monotonic() - started
    for pid, home in found:
        total = 0.0
        print(f"{Path(home).name} (pid {pid})")
        for tid, (name, cpu) in sorted(after[pid].items()):
            share = 100 * (cpu - before[pid].get(tid, (name, 0.0))[1]) / elapsed
            total += share
            if share >= args.min_percent:
                main_mark = " (main)" if tid == pid else ""
                print(f"  {tid:>8} {name:16} {share:5.1f}%{main_mark}")
        print(f"  {'':>8} {'all threads':16} {total:5.1f}%")
        for name, value in sorted(metrics_after.get(pid, {}).items()):
            rate = (value - metrics_before[pid].get(name, 0.0)) / elapsed
            if rate:
                print(f"  {name} {rate:.0f}/s")


if __name__ == "__main__":
    main()
