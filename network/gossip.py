"""Gossip bookkeeping: the bounded seen-cache that makes flooding terminate.

A node relays a gossiped item to every connected peer except the one it came
from, and only the first time it sees it (keyed by SHA-256 of the channel and
payload). So each item crosses each link about once (at most once per
direction), reaches nodes that are not directly connected to its origin,
and is delivered to each node's `inbound` once. The cache forgets the oldest
items past its bound; an item that comes back after being forgotten is
delivered again, which the node must tolerate (transactions and blocks are
idempotent there: mempool and store reject duplicates).
"""

from __future__ import annotations

import hashlib


def gossip_id(channel: int, payload: bytes) -> bytes:
    """sha256(channel byte || payload), without copying the payload (batches run to MBs)."""
    h = hashlib.sha256(bytes((channel,)))
    h.update(payload)
    return h.digest()


class SeenCache:
    """Insertion-ordered set with a maximum size; the oldest entries go first."""

    __slots__ = ("_items", "max_items")

    def __init__(self, max_items: int) -> None:
        if max_items <= 0:
            raise ValueError("max_items must be positive")
        self.max_items = max_items
        self._items: dict[bytes, None] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: bytes) -> bool:
        return key in self._items

    def add(self, key: bytes) -> bool:
        """Remember `key`; True if it was new."""
        if key in self._items:
            return False
        self._items[key] = None
        if len(self._items) > self.max_items:
            del self._items[next(iter(self._items))]
        return True
