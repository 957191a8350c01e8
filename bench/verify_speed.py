"""CPU time of one Ed25519 signature check, as the node makes it, per PyNaCl build.

Every validator checks every transaction's signature (`consensus.crypto.verify_raw`,
PyNaCl's `crypto_sign_open` on a 200-byte record write's signing bytes), so the
check's speed bounds a node's throughput. PyNaCl's PyPI wheel and a PyNaCl built on
this machine from the same source release run the same libsodium code compiled
differently; this bench measures each interpreter it is given, in a fresh process,
so that two venvs can be compared on one machine at one time
(docs/operator-guide.md, section 2).

Usage::

    python bench/verify_speed.py [--python OTHER_VENV/bin/python ...] [--checks 3000]
        [--repeats 7]

It prints, per interpreter, the PyNaCl build (`node.bench.crypto_build`) and the
best and median CPU microseconds a check over `--repeats` passes of `--checks`
checks. Set up a source build to compare with (the dependencies only: the child
imports Redwood from this checkout, and an editable install of it in a second venv
would recompile the checkout's `node/_native/` under the first one)::

    python3 -m venv /tmp/nacl-src && /tmp/nacl-src/bin/pip install -q --no-binary pynacl \\
        pynacl msgpack trio httpx plyvel prometheus-client starlette hypercorn tomli-w
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(checks: int, repeats: int) -> dict[str, object]:
    """This interpreter's figures (run in the child process)."""
    sys.path.insert(0, str(ROOT))
    from consensus.crypto import Domain, SigningKey, signing_bytes, verify_raw
    from node.bench import crypto_build

    key = SigningKey.generate()
    public = key.public
    # what a transaction's check hashes: its domain, the chain id and ~250 bytes
    payloads = [os.urandom(250) for _ in range(checks)]
    messages = [signing_bytes(Domain.TX, "bench", p) for p in payloads]
    signatures = [key.sign(Domain.TX, "bench", p) for p in payloads]
    passes = []
    for _ in range(repeats):
        started = time.process_time()
        for m, s in zip(messages, signatures, strict=True):
            if not verify_raw(public, s, m):
                raise SystemExit("a genuine signature did not verify")
        passes.append((time.process_time() - started) / checks * 1e6)
    return {
        "python": sys.executable,
        "crypto": crypto_build(),
        "best_us": round(min(passes), 2),
        "median_us": round(statistics.median(passes), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", action="append", default=[], metavar="PATH",
                        help="another interpreter (venv) to measure; repeatable")  # fmt: skip
    parser.add_argument("--checks", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.checks < 1 or args.repeats < 1:
        parser.error("--checks and --repeats must be positive")
    if args.child:
        print(json.dumps(measure(args.checks, args.repeats)))
        return
    for python in [sys.executable, *args.python]:
        done = subprocess.run(
            [python, __file__, "--child", "--checks", str(args.checks),
             "--repeats", str(args.repeats)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            print(f"{python}: failed: {done.stderr.strip() or done.stdout.strip()}")
            continue
        r = json.loads(done.stdout)
        print(f"{r['python']}: {r['crypto']}: {r['best_us']} us a check "
              f"(median {r['median_us']} over {args.repeats} x {args.checks})")  # fmt: skip


if __name__ == "__main__":
    main()
