"""One simulated node: the driver the real node runs, around one `Replica`.

It plays `node/`'s part exactly as `docs/interfaces.md` states it:

    persist (synced) -> send messages -> apply committed blocks in order
    (store the block, execute it, `replica.executed(h, root)`) -> advance

and a crash can strike between any two of those steps, or between two
committed blocks (each block commit is atomic, like `ChainStore.commit_block`).
What survives a crash is what had been made durable: the journal records of
Readys whose persist completed and the committed chain. The replica, the
mempool and everything else in memory is lost; `restart()` builds a new
replica from a `Restored` read from the durable part, as the node does at
start.

The node also owns a small mempool (fake transactions are arbitrary bytes),
a toy deterministic state (`root_h = sha256(root_{h-1} + block_hash_h)`) and
answers `BlockRequest`s from its committed chain; the replica never sees them.
"""

from __future__ import annotations

import enum
import random
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from consensus import codec
from consensus.crypto import sha256
from consensus.types import BlockRequest, BlockResponse, CertifiedBlock

if TYPE_CHECKING:
    from tests.sim.byzantine import Byzantine
    from tests.sim.cluster import Cluster

MEMPOOL_TXS_MAX = 4_000
PROPOSAL_TXS_MAX = 64
RESPONSE_BLOCKS_MAX = 64
RESPONSE_BYTES_MAX = 1024 * 1024
GENESIS_STATE_ROOT = sha256(b"redwood-sim/genesis-state")


class CrashPoint(enum.Enum):
    """Where in the driver loop a crash strikes (TigerBeetle's "crash between steps")."""

    BEFORE_PERSIST = "before_persist"  # the Ready's journal writes are lost (never synced)
    AFTER_PERSIST = "after_persist"  # synced, nothing sent
    DURING_SEND = "during_send"  # some of the messages sent
    AFTER_SEND = "after_send"  # sent, no block applied
    DURING_APPLY = "during_apply"  # some of the committed blocks applied
    BEFORE_ADVANCE = "before_advance"  # all applied, not acknowledged


class Role(enum.Enum):
    CORRECT = "correct"
    BYZANTINE = "byzantine"
    TWIN = "twin"


def toy_state_root(prev_root: bytes, block_hash: bytes) -> bytes:
    return sha256(prev_root + block_hash)


class SimNode:
    """A node slot in the cluster (an endpoint of the packet simulator)."""

    def __init__(
        self,
        cluster: Cluster,
        slot: int,
        key: Any,
        role: Role,
        byzantine: Byzantine | None,
        rng: random.Random,
        clock_offset_ms: int,
    ) -> None:
        self.cluster = cluster
        self.slot = slot
        self.key = key
        self.node_id: bytes = key.public
        self.role = role
        self.byzantine = byzantine
        self.rng = rng
        self.clock_offset_ms = clock_offset_ms
        self.tick_ms = 100  # the cluster sets each node's own clock rate
        self.name = f"{role.value}{slot}"
        self.observer = False  # follows the chain, never signs
        # durable
        self.journal: dict[bytes, bytes] = {}
        self.chain: list[CertifiedBlock] = []
        self.roots: list[bytes] = [GENESIS_STATE_ROOT]
        # volatile
        self.replica: Any = None
        self.mempool: dict[bytes, None] = {}
        self.crash_armed: CrashPoint | None = None
        self.crash_after = 0  # messages sent / blocks applied before a DURING_* crash
        self.restarts = 0
        self.stats: Counter[str] = Counter()

    @property
    def correct(self) -> bool:
        return self.role is Role.CORRECT

    @property
    def up(self) -> bool:
        return self.replica is not None

    @property
    def height(self) -> int:
        return len(self.chain)

    def head_hash(self) -> bytes:
        return self.chain[-1].block.hash() if self.chain else self.cluster.genesis_hash

    # -- life cycle ------------------------------------------------------------------

    def start(self) -> None:
        assert self.replica is None
        self.replica = self.cluster.make_replica(self)
        self.stats["starts"] += 1
        self._after_input()

    def crash(self) -> None:
        """Lose everything in memory; the journal and chain stay as they were synced."""
        assert self.replica is not None
        self.replica = None
        self.mempool.clear()
        self.crash_armed = None
        self.stats["crashes"] += 1
        self.cluster.on_crash(self)

    def arm_crash(self, point: CrashPoint) -> None:
        """Crash at `point` of the next Ready this node processes."""
        self.crash_armed = point
        self.crash_after = self.rng.randrange(4)

    # -- inputs ------------------------------------------------------------------------

    def tick(self) -> None:
        if self.replica is None:
            return
        self.replica.tick()
        if self.byzantine is not None:
            for to, payload in self.byzantine.on_tick():
                self.cluster.send_raw(self, to, payload)
        self._after_input()

    def receive(self, payload: Any, sender: bytes) -> None:
        if self.replica is None:
            return
        message = payload
        if isinstance(payload, bytes | bytearray):
            try:
                message = codec.decode(payload)
            except codec.DecodeError:
                self.stats["dropped_undecodable"] += 1
                return
        if self.byzantine is not None:
            self.byzantine.remember(message)
        if isinstance(message, BlockRequest):
            self._answer(message, sender)
            return
        self.replica.step(message, sender)
        self._after_input()

    def submit(self, tx: bytes) -> None:
        """A client's transaction reaches this node's mempool."""
        if self.replica is None or len(self.mempool) >= MEMPOOL_TXS_MAX:
            return
        self.mempool[tx] = None

    def _answer(self, request: BlockRequest, sender: bytes) -> None:
        first = max(1, request.from_height)
        last = min(request.to_height, self.height, first + RESPONSE_BLOCKS_MAX - 1)
        blocks: list[CertifiedBlock] = []
        size = 0
        for h in range(first, last + 1):
            cb = self.chain[h - 1]
            size += len(cb.block.txs) * 16 + 512
            if blocks and size > RESPONSE_BYTES_MAX:
                break
            blocks.append(cb)
        self.stats["block_requests_answered"] += 1
        if self.byzantine is not None:
            response = self.byzantine.answer(request, blocks)
            self.cluster.send_raw(self, sender, response)
        else:
            self.cluster.send(self, sender, BlockResponse(blocks=tuple(blocks)))

    # -- the driver ----------------------------------------------------------------------

    def _after_input(self) -> None:
        self._propose()
        self._drain()

    def _propose(self) -> None:
        replica = self.replica
        while replica is not None and self.mempool and replica.wants_proposal():
            batch = list(self.mempool)[:PROPOSAL_TXS_MAX]
            for tx in batch:
                del self.mempool[tx]
            if not replica.propose(batch, self.cluster.now_ms + self.clock_offset_ms):
                break
            self.stats["proposals"] += 1
            self._drain()
            replica = self.replica
        note = getattr(replica, "note_pending", None)
        if note is not None:
            note(len(self.mempool))

    def _drain(self) -> None:
        while self.replica is not None and self.replica.has_ready():
            self._handle_ready(self.replica.ready())

    def _crash_at(self, point: CrashPoint) -> bool:
        if self.crash_armed is point:
            self.crash()
            return True
        return False

    def _handle_ready(self, ready: Any) -> None:
        if self._crash_at(CrashPoint.BEFORE_PERSIST):
            return
        for key, value in ready.persist:
            if value is None:
                self.journal.pop(key, None)
            else:
                self.journal[key] = value
        if self._crash_at(CrashPoint.AFTER_PERSIST):
            return
        for i, out in enumerate(ready.messages):
            if self.crash_armed is CrashPoint.DURING_SEND and i == self.crash_after:
                self.crash()
                return
            self.cluster.send(self, out.to, out.message)
        if self.crash_armed is CrashPoint.DURING_SEND:
            self.crash_armed = CrashPoint.AFTER_SEND
        if self._crash_at(CrashPoint.AFTER_SEND):
            return
        for i, cb in enumerate(ready.committed):
            if self.crash_armed is CrashPoint.DURING_APPLY and i == self.crash_after:
                self.crash()
                return
            self._apply(cb)
        if self.crash_armed is CrashPoint.DURING_APPLY:
            self.crash_armed = CrashPoint.BEFORE_ADVANCE
        if self._crash_at(CrashPoint.BEFORE_ADVANCE):
            return
        for ev in ready.evidence:
            self.cluster.on_evidence(self, ev)
        if self.correct:
            for height, root in getattr(ready, "stable_checkpoints", ()):
                self.cluster.checker.on_stable(self.name, height, root)
        self.replica.advance(ready)

    def _apply(self, cb: CertifiedBlock) -> None:
        """Commit one block atomically (store + toy state), then tell the replica."""
        checker = self.cluster.checker
        head_ts = self.chain[-1].block.header.timestamp_ms if self.chain else 0
        checker.check_link(self.name, self.height, self.head_hash(), cb, head_ts)
        block_hash = cb.block.hash()
        root = toy_state_root(self.roots[-1], block_hash)
        self.chain.append(cb)
        self.roots.append(root)
        for tx in cb.block.txs:
            self.mempool.pop(tx, None)
        if self.correct:
            checker.on_commit(self.name, cb, root)
        self.cluster.on_commit(self, cb)
        self.cluster.gossip_block(self, cb)
        self.replica.executed(cb.block.header.height, root)
        self.cluster.on_executed(self, cb.block.header.height)


Factory = Callable[[SimNode], Any]
