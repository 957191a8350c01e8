"""The consensus driver: the one Trio task that owns the replica.

Everything that touches the replica goes through this task, so the replica
needs no locks (DESIGN.md §2). Inputs arrive on one bounded channel (peer
messages, ticks, "the mempool has something" pokes); after each batch of
inputs the driver runs the replica's Ready cycle:

1. persist the journal records, synced, *before* any vote leaves (a vote that
   is sent but not remembered could be contradicted after a crash);
2. send the messages;
3. hand committed blocks, in height order, to the apply task;
4. advance.

Then, if this replica is the primary and the mempool is not empty, it
proposes the next batch. With nothing to propose it may propose an empty
block, at most one per `empty_block_interval_s`: always while the newest
block with transactions has no committed successor `pipeline_depth` heights
up (whose header certifies its state root: without it, a quiet chain could
never prove its newest records), and all the time with `propose_empty_blocks`.

The apply task executes each committed block and writes it (one atomic
LevelDB batch per block; blocks that queued up together are executed in one
worker-thread call and only the last write is synced) while the driver keeps
running consensus for the next heights;
it hands each result back as an `Applied` input (in a queue of its own that
the driver empties before its next events, so the apply task never waits on
the driver while the driver waits for room in the apply queue), and only
then does the driver tell the replica the new state root (`executed`). The
apply queue is bounded in blocks (`APPLY_QUEUE_MAX`) and in bytes
(`APPLY_QUEUE_BYTES_MAX`, counted from a block's hand-over until its result
is back, so the batch in the worker thread counts too), so execution that
falls behind slows consensus instead of growing memory. Block h's header
claims the state of h - pipeline_depth, so the pipeline keeps moving while
up to pipeline_depth blocks are being applied.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from consensus import codec
from consensus.types import BlockRequest, BlockResponse, CertifiedBlock, StatusAnnouncement

log = logging.getLogger("redwood.driver")

EVENTS_QUEUE_MAX = 4096
EVENTS_PER_CYCLE_MAX = 512
APPLY_QUEUE_MAX = 64  # committed blocks waiting for execution
# ... and their bytes, with those being executed: at most this much, or one block of any
# size when nothing else is there. In count only, 64 full blocks (1.5 MB each) queued and
# a batch of 32 in the worker thread were ~144 MB; ~20 full blocks fill the batches
APPLY_QUEUE_BYTES_MAX = 32 * 1024 * 1024
APPLY_BLOCK_OVERHEAD_BYTES = 1024  # a block's header, certificate and objects, roughly
APPLY_BATCH_BLOCKS_MAX = 32  # blocks executed in one worker-thread call
APPLY_BATCH_TXS_MAX = 8000  # ... unless they hold this many transactions already


@dataclass(frozen=True, slots=True)
class PeerMessage:
    sender: bytes
    message: Any


@dataclass(frozen=True, slots=True)
class Tick:
    pass


@dataclass(frozen=True, slots=True)
class PeerConnected:
    """The network established a link to `peer`."""

    peer: bytes


@dataclass(frozen=True, slots=True)
class Applied:
    """The apply task executed and stored block `height`."""

    height: int
    state_root: bytes
    result: Any


@dataclass(frozen=True, slots=True)
class Poke:
    """The mempool gained transactions: maybe propose."""


@dataclass(frozen=True, slots=True)
class AppliedReady:
    """The apply task left results in the driver's `_applied` queue."""


TICK = Tick()
POKE = Poke()
APPLIED = AppliedReady()


class Driver:
    """Owns the replica; see the module docstring for the cycle."""

    def __init__(
        self,
        replica: Any,
        *,
        journal_write: Callable[[list[tuple[bytes, bytes | None]]], Awaitable[None]],
        send: Callable[[bytes | None, Any], None],
        apply_blocks: Callable[[list[CertifiedBlock]], Awaitable[list[tuple[bytes, Any]]]],
        on_applied: Callable[[Any], None] = lambda result: None,
        take_batch: Callable[[], list[bytes]],
        pending_count: Callable[[], int],
        on_evidence: Callable[[Any], None],
        on_stable_checkpoint: Callable[[int, bytes], None],
        pipeline_depth: int = 0,
        empty_block_interval_s: float = 1.0,
        propose_empty_blocks: bool = False,
        clock: Callable[[], float] = time.monotonic,
        txs_height: int = 0,
        apply_queue_bytes_max: int = APPLY_QUEUE_BYTES_MAX,
    ) -> None:
        if apply_queue_bytes_max < 1:
            raise ValueError("apply_queue_bytes_max must be positive")
        self.replica = replica
        self._depth = pipeline_depth
        self._empty_interval_s = empty_block_interval_s
        self._always_empty = propose_empty_blocks
        self._clock = clock
        self._last_block_at = clock()  # last proposal or commit seen
        # newest height known to hold transactions (0: none; the node passes its head at
        # start, which may not be certified yet)
        self._txs_height = txs_height
        self._journal_write = journal_write
        self._send = send
        self._apply_blocks = apply_blocks
        self._on_applied = on_applied
        self._apply_send, self._apply_recv = trio.open_memory_channel[CertifiedBlock](
            APPLY_QUEUE_MAX
        )
        self._apply_bytes_max = apply_queue_bytes_max
        self.apply_queue_blocks = 0  # handed to the apply task, result not back yet
        self.apply_queue_bytes = 0  # their `block_bytes`
        self.apply_queue_waits = 0  # hand-overs that waited for room (execution behind)
        self._apply_room = trio.Event()  # set (and replaced) whenever results come back
        # results of the apply task, handled before the next events (see `_apply_loop`)
        self._applied: deque[Applied] = deque()
        self._take_batch = take_batch
        self._pending_count = pending_count
        self._on_evidence = on_evidence
        self._on_stable_checkpoint = on_stable_checkpoint
        self.events_send, self._events = trio.open_memory_channel[Any](EVENTS_QUEUE_MAX)
        self.cycles = 0
        self.proposed_blocks = 0
        self.empty_blocks = 0

    def poke(self) -> None:
        """Non-blocking: ask the driver to consider proposing."""
        # a full queue means the driver is busy and will look at the mempool anyway
        with contextlib.suppress(trio.WouldBlock):
            self.events_send.send_nowait(POKE)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._apply_loop)
            await self._event_loop()

    async def _apply_loop(self) -> None:
        """Execute committed blocks in height order; what queued up meanwhile goes in one
        batch (catch-up, or execution behind agreement): one worker-thread trip and one
        synced write for the batch instead of one per block."""
        async for cb in self._apply_recv:
            batch, txs = [cb], len(cb.block.txs)
            while len(batch) < APPLY_BATCH_BLOCKS_MAX and txs < APPLY_BATCH_TXS_MAX:
                try:
                    more = self._apply_recv.receive_nowait()
                except trio.WouldBlock:
                    break
                batch.append(more)
                txs += len(more.block.txs)
            try:
                results = await self._apply_blocks(batch)
                self._applied.extend(
                    Applied(done.block.header.height, root, result)
                    for done, (root, result) in zip(batch, results, strict=True)
                )
            finally:
                self.apply_queue_blocks -= len(batch)
                self.apply_queue_bytes -= sum(map(block_bytes, batch))
                self._apply_room.set()
                self._apply_room = trio.Event()
            # wake the event loop; a full channel wakes it anyway. Never a blocking send:
            # the driver may be waiting for room in the apply queue, not reading events
            with contextlib.suppress(trio.WouldBlock):
                self.events_send.send_nowait(APPLIED)

    async def _hand_to_apply(self, cb: CertifiedBlock) -> None:
        """Queue `cb` for execution; waits while the queue is full in blocks or bytes."""
        size = block_bytes(cb)
        if self.apply_queue_bytes and self.apply_queue_bytes + size > self._apply_bytes_max:
            self.apply_queue_waits += 1
            while self.apply_queue_bytes and self.apply_queue_bytes + size > self._apply_bytes_max:
                await self._apply_room.wait()
        self.apply_queue_blocks += 1
        self.apply_queue_bytes += size
        try:
            await self._apply_send.send(cb)  # waits only when execution is far behind
        except BaseException:
            self.apply_queue_blocks -= 1
            self.apply_queue_bytes -= size
            raise

    async def _event_loop(self) -> None:
        while True:
            first = await self._events.receive()
            self._take_applied()
            self._handle(first)
            for _ in range(EVENTS_PER_CYCLE_MAX):
                try:
                    event = self._events.receive_nowait()
                except trio.WouldBlock:
                    break
                self._handle(event)
            self._take_applied()
            await self._cycle()

    def _take_applied(self) -> None:
        applied = self._applied
        while applied:
            self._handle(applied.popleft())

    def _handle(self, event: Any) -> None:
        if isinstance(event, PeerMessage):
            self.replica.step(event.message, event.sender)
        elif isinstance(event, Applied):
            self.replica.executed(event.height, event.state_root)
            self._on_applied(event.result)
        elif isinstance(event, PeerConnected):
            self.replica.peer_connected(event.peer)
        elif isinstance(event, Tick):
            self.replica.tick()
            note = getattr(self.replica, "note_pending", None)
            if note is not None:
                note(self._pending_count())
        # Poke: nothing to hand the replica; _cycle considers proposing. AppliedReady:
        # its results were taken before this event

    async def _cycle(self) -> None:
        self.cycles += 1
        while True:
            await self._drain_ready()
            if not self._maybe_propose():
                break

    async def _drain_ready(self) -> None:
        while self.replica.has_ready():
            ready = self.replica.ready()
            if ready.persist:
                await self._journal_write(list(ready.persist))
            for out in ready.messages:
                self._send(out.to, out.message)
            for cb in ready.committed:
                if cb.block.txs:
                    self._txs_height = max(self._txs_height, cb.block.height)
                self._last_block_at = self._clock()
                await self._hand_to_apply(cb)
            for height, root in ready.stable_checkpoints:
                self._on_stable_checkpoint(height, root)
            for ev in ready.evidence:
                self._on_evidence(ev)
            self.replica.advance(ready)

    def _maybe_propose(self) -> bool:
        if not self.replica.wants_proposal():
            return False
        batch = self._take_batch()
        if not batch and not self._empty_block_due():
            return False
        height = self.replica.next_height
        proposed = bool(self.replica.propose(batch, math.floor(time.time() * 1000)))
        if proposed:
            self.proposed_blocks += 1
            self._last_block_at = self._clock()
            if batch:
                self._txs_height = max(self._txs_height, height)
            else:
                self.empty_blocks += 1
        return proposed

    def _empty_block_due(self) -> bool:
        """An empty block now: paced, and needed to certify the newest state (or asked for)."""
        if self._clock() - self._last_block_at < self._empty_interval_s:
            return False
        unsealed = (
            self._txs_height > 0 and self.replica.next_height <= self._txs_height + self._depth
        )
        return unsealed or self._always_empty


def block_bytes(cb: Any) -> int:
    """What a committed block costs in the apply queue: its transactions' bytes and a bit."""
    return sum(map(len, cb.block.txs)) + APPLY_BLOCK_OVERHEAD_BYTES


def is_sync_message(message: Any) -> bool:
    return isinstance(message, BlockRequest | BlockResponse | StatusAnnouncement)


def encode(message: Any) -> bytes:
    return codec.encode(message)
