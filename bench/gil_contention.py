"""What a GIL-releasing call costs when another Python thread wants the GIL.

plyvel releases the GIL around every `DB.get` and every `WriteBatch.put`
(its `_plyvel.pyx`: `with nogil:`), and PyNaCl (through cffi) around every
signature check. Alone, such a call costs what its C code costs. In a node,
the event loop, the apply worker and the verify threads all want the GIL, so
each release can hand it to another thread, and the caller waits to get it
back: futex calls and context switches, CPU that shows up as kernel time
(docs/performance.md "Re-measured at stop 17").

This measures the process CPU per call of `WriteBatch.put` and of a `get`
miss on a fresh LevelDB, alone and while another thread runs a fixed amount
of pure-Python work (a loop of additions, as the event loop would run): the
second is the CPU of both minus that of the Python work alone, per call, so
it counts the handovers whichever thread pays for them.

    .venv/bin/python bench/gil_contention.py [--calls N] [--runs R] [--loops L]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable

import plyvel


def python_work(loops: int) -> None:
    """Pure-Python work: holds the GIL except when the interpreter hands it over."""
    total = 0
    for i in range(loops):
        total += i & 7


def contention_cost(
    calls: int, fn: Callable[[int], None], loops: int
) -> tuple[float, float, float]:
    """Per call, in us: process CPU alone; the same beside `loops` of Python work; and
    the calling thread's wall time beside it.

    The second is the whole process's CPU for both minus the Python work's own
    CPU measured alone, per call: what the calls cost the machine, handovers of
    the GIL included, whichever thread paid for them. The third is how long the
    caller waited, mostly for the GIL to come back.
    """
    t0 = time.process_time()
    python_work(loops)
    work_alone = time.process_time() - t0
    t0 = time.process_time()
    for i in range(calls):
        fn(i)
    calls_alone = time.process_time() - t0
    worker = threading.Thread(target=python_work, args=(loops,))
    t0 = time.process_time()
    worker.start()
    wall0 = time.perf_counter()
    for i in range(calls):
        fn(i)
    wall = time.perf_counter() - wall0
    worker.join()
    both = time.process_time() - t0
    return calls_alone / calls * 1e6, (both - work_alone) / calls * 1e6, wall / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--loops", type=int, default=20_000_000)
    args = parser.parse_args()
    if min(args.calls, args.runs, args.loops) < 1:
        parser.error("--calls, --runs and --loops must be at least 1")
    results: dict[str, list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="redwood-gil-") as tmp:
        db = plyvel.DB(tmp, create_if_missing=True, bloom_filter_bits=10, compression=None)
        keys = [os.urandom(34) for _ in range(args.calls)]
        value = b"v" * 100
        batch = db.write_batch()

        def put(i: int) -> None:
            batch.put(keys[i], value)

        def get(i: int) -> None:
            db.get(keys[i])

        for _ in range(args.runs):
            for name, fn in (("WriteBatch.put", put), ("get (miss)", get)):
                results.setdefault(name, []).append(contention_cost(args.calls, fn, args.loops))
                batch.clear()
        db.close()
    print(
        f"{args.calls} calls, median of {args.runs} runs: process CPU per call, alone and "
        f"beside {args.loops:,} loops of Python work in another thread"
    )
    for name, runs in results.items():
        alone, beside, wall = (statistics.median(r[k] for r in runs) for k in range(3))
        print(
            f"  {name:16} {alone:6.2f} us alone  {beside:6.2f} us beside Python work "
            f"(the caller waits {wall:6.2f} us)"
        )


if __name__ == "__main__":
    main()
