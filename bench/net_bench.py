"""Network throughput between two nodes over loopback: messages/s and MB/s.

Two `Network` instances in one process (one Trio loop, so one core does the
sending, encryption, decryption and receiving) exchange N messages of a
fixed size on the consensus channel, A -> B, with B draining `inbound`.
Modes:

- ``aead``: production framing (ChaCha20-Poly1305, batched frames);
- ``plain``: the same with a pass-through frame codec. That codec is defined
  HERE, in the benchmark, and injected through `Network(frame_cipher=...)`;
  `NetConfig` has no way to turn encryption off;
- ``aead-unbatched``: one message per frame (frame_batch_bytes below two
  messages), to show what batching buys.

Usage: ``python bench/net_bench.py [--messages 200000] [--size 200] [--runs 3]``
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from consensus.crypto import SigningKey
from network import Channel, NetConfig, Network, PeerAddress
from network.frames import AeadCipher

CHAIN = "redwood-bench"


class PlaintextCipher:
    """Benchmark only: frames pass through unsealed (no tag, no counters)."""

    overhead = 0

    def __init__(self, send_key: bytes, recv_key: bytes) -> None:
        pass

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        return plaintext

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        return sealed


BASE = NetConfig(
    peer_msgs_per_s=1e12,
    peer_msgs_burst=1e12,
    peer_bytes_per_s=1e15,
    peer_bytes_burst=1e15,
    inbound_queue_max=8192,
)


async def one_run(messages: int, size: int, cipher: type, config: NetConfig) -> float:
    """Seconds from the first send to the last message received."""
    key_a, key_b = SigningKey(b"\x01" * 32), SigningKey(b"\x02" * 32)
    ids = [key_a.public, key_b.public]
    async with trio.open_nursery() as nursery:
        b = Network(key_b, CHAIN, config, [], ids, frame_cipher=cipher)
        port = await nursery.start(b.run)
        a = Network(
            key_a, CHAIN, config, [PeerAddress(key_b.public, "127.0.0.1", port)], ids,
            frame_cipher=cipher,
        )  # fmt: skip
        nursery.start_soon(a.run)
        with trio.fail_after(10):
            while not (a.is_connected(b.node_id) and b.is_connected(a.node_id)):
                await trio.sleep(0.01)
        payload = bytes(size)
        done = trio.Event()

        async def receive() -> None:
            received = 0
            while received < messages:
                await b.inbound.receive()
                received += 1
                while received < messages:  # drain what is queued without a checkpoint each
                    try:
                        b.inbound.receive_nowait()
                    except trio.WouldBlock:
                        break
                    received += 1
            done.set()

        nursery.start_soon(receive)
        started = time.perf_counter()
        for i in range(messages):
            while not a.send(b.node_id, Channel.CONSENSUS, payload):
                await trio.sleep(0)  # queue full: let the writer drain it
            if i % 1000 == 999:
                await trio.sleep(0)
        with trio.fail_after(300):
            await done.wait()
        elapsed = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    return elapsed


MODES = {
    "aead": (AeadCipher, BASE),
    "plain": (PlaintextCipher, BASE),
    "aead-unbatched": (AeadCipher, dataclasses.replace(BASE, frame_batch_bytes=1)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--modes", default="aead,plain,aead-unbatched")
    args = parser.parse_args()
    print(f"{args.messages} messages of {args.size} bytes, A -> B over 127.0.0.1, one process")
    for mode in args.modes.split(","):
        cipher, config = MODES[mode]
        count = args.messages if mode != "aead-unbatched" else max(1, args.messages // 10)
        rates = []
        for run in range(args.runs):
            elapsed = trio.run(one_run, count, args.size, cipher, config)
            rate = count / elapsed
            rates.append(rate)
            print(
                f"  {mode:15s} run {run + 1}: {rate:10,.0f} msg/s  "
                f"{rate * args.size / 1e6:7.2f} MB/s  ({count} msgs in {elapsed:.2f} s)"
            )
        median = statistics.median(rates)
        print(f"{mode:17s} median: {median:10,.0f} msg/s  {median * args.size / 1e6:7.2f} MB/s")


if __name__ == "__main__":
    main()
