"""The mempool: checked transactions waiting for a block, bounded, fair across senders.

Life of a transaction
---------------------
`add` (or `add_many`) runs the application's `check` once — decoding, rules,
"never committed", signature — and keeps the bytes as *pending*. `take` hands
pending transactions to the primary's proposal and marks them *reserved*: they
are not offered again while the proposal is in flight. `committed(hashes)`
(after a block is applied) drops them for good; `requeue()` (after a view
change, when in-flight proposals may be lost) makes every reserved
transaction pending again, ahead of newer ones. `evict_expired(height)` drops
what can no longer be included (and its entry in the application's verified
cache).

Fairness: `take` goes round-robin across senders, FIFO within a sender, and
the rotation carries over from one `take` to the next, so a sender with ten
thousand queued transactions cannot starve one with a single transaction.

Bounds: total transactions (`max_txs`), total bytes (`max_bytes`), and
transactions per sender (`max_per_sender`, pending + reserved). When any is
reached `add` answers `mempool_full` (the API answers 429). Every operation is
O(1) or amortised O(1) per transaction: removals of pending transactions are
lazy (marked gone, skipped by `take`) and a sender's queue or the expiry heap
is compacted once its dead entries outnumber its live ones.

The mempool knows nothing about the network (the node gossips) and is owned by
one thread (the event loop); it takes no locks. `screen` / `admit` split
`add_many` so that the signatures in between can be checked off the loop
(`verify`, which touches only the `Screened` batch and the application's
locked verified cache).
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from consensus.crypto import sha256
from node.app import Application, Checked, Rejected
from node.verify_pool import VerifyItem

MEMPOOL_TXS_MAX = 50_000
MEMPOOL_BYTES_MAX = 128 * 1024 * 1024
MEMPOOL_PER_SENDER_MAX = 10_000
ADD_MANY_TXS_MAX = 10_000
TAKE_SKIPS_MAX = 64  # senders whose next tx does not fit before `take` gives up
COMPACT_DEAD_MIN = 64  # dead entries tolerated in a queue or heap before compaction


@dataclass(frozen=True, slots=True)
class Added:
    tx_hash: bytes


class _State(Enum):
    PENDING = 1
    RESERVED = 2
    GONE = 3


@dataclass(slots=True, eq=False)
class _Entry:
    tx_bytes: bytes
    tx_hash: bytes
    sender: bytes
    valid_until: int
    seq: int
    state: _State = _State.PENDING


@dataclass(slots=True)
class Screened:
    """`screen`'s output: answers so far, and what still needs a signature check."""

    height: int
    results: list[Added | Rejected | None]
    checked: list[tuple[int, Checked, bytes]] = field(default_factory=list)  # index, checked, bytes
    items: list[VerifyItem] = field(default_factory=list)  # signatures to verify, same order
    unverified: list[Checked] = field(default_factory=list)  # whose `items` they are, same order
    # positions in `checked` whose signature the application verified already (no item)
    preverified: set[int] = field(default_factory=set)


class Mempool:
    """See the module docstring."""

    def __init__(
        self,
        app: Application,
        max_txs: int = MEMPOOL_TXS_MAX,
        max_bytes: int = MEMPOOL_BYTES_MAX,
        max_per_sender: int = MEMPOOL_PER_SENDER_MAX,
    ) -> None:
        if min(max_txs, max_bytes, max_per_sender) < 1:
            raise ValueError("mempool bounds must be positive")
        self.app = app
        self.max_txs = max_txs
        self.max_bytes = max_bytes
        self.max_per_sender = max_per_sender
        self._entries: dict[bytes, _Entry] = {}  # pending and reserved
        self._queues: dict[bytes, deque[_Entry]] = {}  # sender -> pending (and dead) entries
        self._dead: dict[bytes, int] = {}  # sender -> GONE entries still in its queue
        self._ring: deque[bytes] = deque()  # each sender of `_queues` exactly once
        self._reserved: dict[bytes, _Entry] = {}  # in take order
        self._per_sender: dict[bytes, int] = {}
        self._expiry: list[tuple[int, int, _Entry]] = []  # heap of (valid_until, seq, entry)
        self._bytes = 0
        self._seq = 0
        # counters (exported as metrics by the node)
        self.received = 0
        self.accepted = 0
        self.rejected: Counter[str] = Counter()
        self.evicted = 0
        self.taken = 0
        self.requeued = 0
        self.removed_committed = 0

    # -- admission ---------------------------------------------------------------

    def add(self, tx_bytes: bytes, height: int) -> Added | Rejected:
        """Check and keep one transaction; `height` is the committed head."""
        self.received += 1
        h = sha256(tx_bytes)
        early = self._refuse_early(h, len(tx_bytes))
        if early is not None:
            return self._reject(early)
        result = self.app.check(tx_bytes, height)
        if isinstance(result, Rejected):
            return self._reject(result)
        return self._insert(result, tx_bytes)

    def add_many(
        self,
        txs: Sequence[bytes],
        height: int,
        verify_many: Callable[[Sequence[VerifyItem]], list[bool]] | None = None,
    ) -> list[Added | Rejected]:
        """`add` for a batch whose signatures are checked together (one answer per tx)."""
        screened = self.screen(txs, height)
        return self.admit(screened, self.verify(screened, verify_many))

    def verify(
        self,
        screened: Screened,
        verify_many: Callable[[Sequence[VerifyItem]], list[bool]] | None = None,
    ) -> list[bool]:
        """The signature results `admit` takes for `screened` (the node runs this off the
        event loop). By default through the application's `verify_checked`, so a
        transaction that a proposal check or another batch is checking at the same
        moment is not checked twice; good ones join the verified cache."""
        if not screened.items:
            return []
        if verify_many is None:
            return self.app.verify_checked(screened.unverified, screened.items)
        oks = verify_many(screened.items)
        self.app.signatures_checked += len(screened.items)
        for checked, ok in zip(screened.unverified, oks, strict=True):
            if ok:
                self.app.remember(checked)
        return oks

    def screen(self, txs: Sequence[bytes], height: int) -> Screened:
        """First half of `add_many`: every check but signatures. Changes nothing but counters."""
        if len(txs) > ADD_MANY_TXS_MAX:
            raise ValueError(f"batch of {len(txs)} exceeds {ADD_MANY_TXS_MAX} transactions")
        screened = Screened(height, [None] * len(txs))
        batch: set[bytes] = set()
        batch_bytes = 0
        for i, tx_bytes in enumerate(txs):
            self.received += 1
            h = sha256(tx_bytes)
            problem = self._refuse_early(h, len(tx_bytes), len(batch), batch_bytes)
            if problem is None and h in batch:
                problem = Rejected("duplicate", "repeated in this batch")
            if problem is None:
                result = self.app.precheck(tx_bytes, height, h)
                if isinstance(result, Rejected):
                    problem = result
                else:
                    batch.add(h)
                    batch_bytes += len(tx_bytes)
                    if self.app.is_verified(h):  # e.g. checked in a proposal before its gossip
                        screened.preverified.add(len(screened.checked))
                    else:
                        screened.items.append(self.app.signature_item(result.tx, tx_bytes))
                        screened.unverified.append(result)
                    screened.checked.append((i, result, tx_bytes))
            if problem is not None:
                screened.results[i] = self._reject(problem)
        return screened

    def admit(self, screened: Screened, signatures_ok: Sequence[bool]) -> list[Added | Rejected]:
        """Second half of `add_many`: keep what verified (bounds re-checked now)."""
        if len(signatures_ok) != len(screened.items):
            raise ValueError("one signature result per screened signature item is required")
        results = screened.results
        # `screen` looked each hash up at `screened.height`: only a commit since can change that
        moved = self.app.store.head_height() != screened.height
        oks = iter(signatures_ok)
        committed: list[bytes] = []
        for position, (i, checked, tx_bytes) in enumerate(screened.checked):
            if position not in screened.preverified and not next(oks):
                bad = Rejected("bad_signature", "signature does not verify for the sender's key")
                results[i] = self._reject(bad)
                continue
            early = self._refuse_early(checked.tx_hash, len(tx_bytes))
            if early is None and moved and self.app.store.has_tx(checked.tx_hash):
                # committed while its signature was being checked off the loop
                early = Rejected("duplicate", "transaction already committed")
                committed.append(checked.tx_hash)
            results[i] = self._reject(early) if early else self._insert(checked, tx_bytes)
        if committed:
            # the block's apply forgot these hashes before the check above cached them:
            # nothing will ask for them again, so they would hold the verified cache's
            # room (a decoded transaction each) until its bound pushed them out
            self.app.forget(committed)
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    def _refuse_early(
        self, h: bytes, size: int, more_txs: int = 0, more_bytes: int = 0
    ) -> Rejected | None:
        """Checks that need no decoding: already here, or no room (counting `more_*` on the way)."""
        if h in self._entries:
            return Rejected("duplicate", "already in the mempool")
        if len(self._entries) + more_txs >= self.max_txs:
            return Rejected("mempool_full", f"mempool holds {self.max_txs} transactions")
        if self._bytes + more_bytes + size > self.max_bytes:
            return Rejected(
                "mempool_full", f"mempool holds {self._bytes} of {self.max_bytes} bytes"
            )
        return None

    def _insert(self, checked: Checked, tx_bytes: bytes) -> Added | Rejected:
        sender = checked.tx.sender
        count = self._per_sender.get(sender, 0)
        if count >= self.max_per_sender:
            return self._reject(
                Rejected("mempool_full", f"sender has {count} transactions waiting (the limit)")
            )
        self._seq += 1
        entry = _Entry(tx_bytes, checked.tx_hash, sender, checked.tx.valid_until, self._seq)
        self._entries[entry.tx_hash] = entry
        self._per_sender[sender] = count + 1
        self._bytes += len(tx_bytes)
        self._enqueue_back(entry)
        heapq.heappush(self._expiry, (entry.valid_until, entry.seq, entry))
        self.accepted += 1
        return Added(entry.tx_hash)

    def _reject(self, rejected: Rejected) -> Rejected:
        self.rejected[rejected.code] += 1
        return rejected

    # -- proposals ---------------------------------------------------------------

    def take(self, max_txs: int, max_bytes: int) -> list[bytes]:
        """Up to `max_txs` pending transactions totalling at most `max_bytes`, fairly.

        They become reserved: not offered again until `requeue()`.
        """
        out: list[bytes] = []
        total = 0
        skips = 0
        ring, queues = self._ring, self._queues
        while ring and len(out) < max_txs and skips < min(TAKE_SKIPS_MAX, len(ring)):
            sender = ring.popleft()
            queue = queues[sender]
            while queue and queue[0].state is _State.GONE:
                queue.popleft()
                self._dead[sender] -= 1
            if not queue:
                del queues[sender]
                self._dead.pop(sender, None)
                continue
            entry = queue[0]
            if total + len(entry.tx_bytes) > max_bytes:
                ring.append(sender)
                skips += 1
                continue
            queue.popleft()
            entry.state = _State.RESERVED
            self._reserved[entry.tx_hash] = entry
            out.append(entry.tx_bytes)
            total += len(entry.tx_bytes)
            ring.append(sender)  # an emptied queue is dropped on its next turn
        self.taken += len(out)
        return out

    def committed(self, tx_hashes: Sequence[bytes]) -> int:
        """Drop transactions that a committed block holds; returns how many were here."""
        removed = 0
        for h in tx_hashes:
            entry = self._entries.get(h)
            if entry is not None:
                self._remove(entry)
                removed += 1
        self.removed_committed += removed
        return removed

    def requeue(self) -> int:
        """Make every reserved transaction pending again, ahead of newer ones (after a view change)."""
        reserved = list(self._reserved.values())
        self._reserved.clear()
        for entry in reversed(reserved):
            entry.state = _State.PENDING
            self._enqueue_front(entry)
        self.requeued += len(reserved)
        return len(reserved)

    def evict_expired(self, height: int) -> list[bytes]:
        """Drop what cannot be included after committed height `height` (valid_until <= height);
        returns their hashes. Their signatures leave the verified cache too: no block can
        hold them any more, so nothing would ask for them again."""
        evicted: list[bytes] = []
        # `_remove` may rebuild the heap: always read it afresh
        while self._expiry and self._expiry[0][0] <= height:
            _, _, entry = heapq.heappop(self._expiry)
            if entry.state is not _State.GONE:
                self._remove(entry)
                evicted.append(entry.tx_hash)
        if evicted:
            self.app.forget(evicted)
        self.evicted += len(evicted)
        return evicted

    # -- removal and queues ------------------------------------------------------

    def _remove(self, entry: _Entry) -> None:
        del self._entries[entry.tx_hash]
        sender = entry.sender
        left = self._per_sender[sender] - 1
        if left:
            self._per_sender[sender] = left
        else:
            del self._per_sender[sender]
        self._bytes -= len(entry.tx_bytes)
        was, entry.state = entry.state, _State.GONE
        if was is _State.RESERVED:
            del self._reserved[entry.tx_hash]
        elif was is _State.PENDING:
            self._dead[sender] += 1
            self._maybe_compact_queue(sender)
        if len(self._expiry) > 2 * len(self._entries) + COMPACT_DEAD_MIN:
            self._expiry = [(e.valid_until, e.seq, e) for e in self._entries.values()]
            heapq.heapify(self._expiry)

    def _maybe_compact_queue(self, sender: bytes) -> None:
        dead = self._dead[sender]
        queue = self._queues[sender]
        if dead >= COMPACT_DEAD_MIN and 2 * dead > len(queue):
            live = deque(e for e in queue if e.state is _State.PENDING)
            self._queues[sender] = live
            self._dead[sender] = 0

    def _enqueue_back(self, entry: _Entry) -> None:
        queue = self._queues.get(entry.sender)
        if queue is None:
            queue = self._queues[entry.sender] = deque()
            self._dead[entry.sender] = 0
            self._ring.append(entry.sender)
        queue.append(entry)

    def _enqueue_front(self, entry: _Entry) -> None:
        queue = self._queues.get(entry.sender)
        if queue is None:
            queue = self._queues[entry.sender] = deque()
            self._dead[entry.sender] = 0
            self._ring.append(entry.sender)
        queue.appendleft(entry)

    # -- views -------------------------------------------------------------------

    def __contains__(self, tx_hash: bytes) -> bool:
        return tx_hash in self._entries

    def get(self, tx_hash: bytes) -> bytes | None:
        entry = self._entries.get(tx_hash)
        return None if entry is None else entry.tx_bytes

    @property
    def size(self) -> int:
        """Transactions held, pending and reserved."""
        return len(self._entries)

    @property
    def pending(self) -> int:
        """Transactions `take` can still offer."""
        return len(self._entries) - len(self._reserved)

    @property
    def reserved(self) -> int:
        return len(self._reserved)

    def stats(self) -> dict[str, object]:
        return {
            "size": self.size,
            "bytes": self._bytes,
            "pending": self.pending,
            "reserved": self.reserved,
            "senders": len(self._per_sender),
            "received": self.received,
            "accepted": self.accepted,
            "rejected": dict(self.rejected),
            "evicted": self.evicted,
            "taken": self.taken,
            "requeued": self.requeued,
            "removed_committed": self.removed_committed,
        }

    # last: a property named `bytes` shadows the builtin in the class body below it
    @property
    def bytes(self) -> int:
        """Bytes of the transactions held, pending and reserved."""
        return self._bytes
