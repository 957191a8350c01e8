"""Checking many Ed25519 signatures at once, across a few threads.

PyNaCl calls libsodium through cffi, which releases the GIL for the duration
of each call, so verifying in a small thread pool uses every core. The node
calls `VerifyPool.verify_many` from a worker thread (`trio.to_thread.run_sync`)
so that the event loop never waits on signature checks; the call itself blocks
until every signature of the batch is checked.

An item is `(public_key, signature, message)` where `message` is the exact
signed bytes (`consensus.crypto.signing_bytes(...)`); the result is one bool
per item, in order. Malformed keys or signatures are simply `False`.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from consensus.crypto import verify_raw

VerifyItem = tuple[bytes, bytes, bytes]  # (public key, signature, signed message)

THREADS_MAX = 64
CHUNK_ITEMS_MIN = 64  # below this a batch is checked in the calling thread
BATCH_ITEMS_MAX = 200_000


def verify_serial(items: Sequence[VerifyItem]) -> list[bool]:
    """Check every item in the calling thread."""
    return [verify_raw(public, signature, message) for public, signature, message in items]


class VerifyPool:
    """A fixed pool of threads that checks batches of signatures."""

    def __init__(self, threads: int = 2) -> None:
        if not 1 <= threads <= THREADS_MAX:
            raise ValueError(f"threads must be 1..{THREADS_MAX}, got {threads}")
        self.threads = threads
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="verify")
        self.batches = 0
        self.signatures = 0

    def verify_many(self, items: Sequence[VerifyItem]) -> list[bool]:
        """One bool per item, in order. Blocks until the whole batch is checked."""
        if len(items) > BATCH_ITEMS_MAX:
            raise ValueError(f"batch of {len(items)} exceeds {BATCH_ITEMS_MAX} signatures")
        self.batches += 1
        self.signatures += len(items)
        if self.threads == 1 or len(items) < CHUNK_ITEMS_MIN:
            return verify_serial(items)
        size = -(-len(items) // self.threads)
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        results: list[bool] = []
        for part in self._executor.map(verify_serial, chunks):
            results.extend(part)
        return results

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> VerifyPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
