"""CPU time of one small socket read as a function of the size it asks for.

CPython's `socket.recv(n)` allocates n bytes before reading, then shrinks the
result to what arrived. When n plus the bytes object's header reaches
malloc's mmap threshold (the node fixes it at 256 KiB,
`node.service.tune_malloc`; glibc's default starts at 128 KiB), every read
maps and unmaps fresh pages, whatever arrives: ~15 us a read instead of
~2.5. Exactly 256 KiB, what the node asked for until stop 22, sits on the
boundary: slow in 5 of 7 fresh processes here. Each size is measured in a
fresh process, since what a read costs depends on the heap it finds. This is
why `NetConfig.read_chunk_bytes` asks for 64 KiB.

Usage: ``python bench/recv_chunk.py [--reads 20000] [--default-malloc]``
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CHUNKS = (16 * 1024, 64 * 1024, 128 * 1024, 256 * 1024 - 64, 256 * 1024, 1024 * 1024)


def measure(chunk: int, reads: int, message_bytes: int, default_malloc: bool) -> float:
    """CPU us of one send + recv(chunk) of `message_bytes` over a socket pair (this process)."""
    if not default_malloc:
        from node.service import tune_malloc

        tune_malloc()
    a, b = socket.socketpair()
    message = os.urandom(message_bytes)
    started = time.process_time()
    for _ in range(reads):
        a.send(message)
        b.recv(chunk)
    us = (time.process_time() - started) / reads * 1e6
    a.close()
    b.close()
    return us


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reads", type=int, default=20_000)
    ap.add_argument("--message-bytes", type=int, default=300)
    ap.add_argument("--default-malloc", action="store_true", help="skip the node's malloc tuning")
    ap.add_argument("--chunk", type=int, default=0, help=argparse.SUPPRESS)  # one size, here
    args = ap.parse_args()
    if args.chunk:
        print(measure(args.chunk, args.reads, args.message_bytes, args.default_malloc))
        return
    malloc = "default malloc" if args.default_malloc else "node malloc"
    for chunk in CHUNKS:
        command = [sys.executable, __file__, "--chunk", str(chunk), "--reads", str(args.reads)]
        command += ["--message-bytes", str(args.message_bytes)]
        if args.default_malloc:
            command.append("--default-malloc")
        us = float(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        print(f"{malloc}: recv({chunk:>7}) of {args.message_bytes} bytes: {us:6.2f} us CPU a read")


if __name__ == "__main__":
    main()
