"""The PBFT replica: a deterministic, sans-IO state machine (Castro & Liskov, OSDI '99).

Theory of operation
===================

Shape. Like etcd-io/raft's RawNode, the replica does no I/O and reads no
clock. The node feeds it inputs -- `step(message, sender)` for a decoded peer
message, `tick()` for logical time (100 ms in production), `propose(txs,
timestamp_ms)` when it is primary and `wants_proposal()`, `executed(h, root)`
after applying committed block h, `note_pending(n)` with its mempool size and
`add_epoch` for membership changes -- and collects outputs with
`ready()`: journal records to persist (synced) *before* sending, fully signed
messages to send, certified blocks to apply in height order, stable
checkpoints and evidence. `advance(ready)` acknowledges it. Randomness (timer
jitter) comes from the injected `random.Random`, signatures from the injected
signer and verifier, so a run is a pure function of its inputs.

Heights are PBFT sequence numbers; a block is a batch. Block h's header
claims the state after height max(0, h - pipeline_depth) (types.py, "Chain
shape"), so the primary can have `pipeline_depth` heights in flight while
execution stays strictly in order.

Normal case (§4.2). The primary of view v (validators[v mod n] of the epoch
in force) sends PRE-PREPARE(v, h, block). A backup accepts it if it is in
view v, h is between the watermarks, the block is well formed
(`certificates.check_block`), its parent_hash is the hash of block h-1
(committed, or accepted in this view), its timestamp is not below the
parent's and its state claim equals this replica's own executed root; while
the parent or the state is not yet known, the pre-prepare waits in a bounded
buffer. Then it sends PREPARE. h is *prepared* with the pre-prepare and q-1
matching PREPAREs from others. A replica sends COMMIT for h only when h is
prepared in v *and* h-1 is committed with hash == parent_hash or is itself
prepared-and-linked in v with digest == parent_hash: what a replica commits
to is always a chain, which is what makes the hash chain survive view changes
(see `consensus.view_change`). q matching COMMITs make h committed-local; the
block leaves in `Ready.committed` with a `CommitCertificate` of those q
signatures once every lower height has.

Checkpoints (§4.3). After `executed(h, root)` with h a multiple of
checkpoint_interval, the replica signs CHECKPOINT(h, root). q matching ones
make it *stable*: the low watermark moves to h, the high one to h + window,
and logs, certificates and journal records at or below h are dropped.

View change (§4.4). A timer runs while there is work (pending transactions
the node told us about, accepted but uncommitted blocks, held pre-prepares)
and the lowest uncommitted height makes no progress (see "Progress timer").
On expiry the replica sends VIEW-CHANGE(v+1) with its stable checkpoint
proof and its prepared certificates, and stops voting in v. The timeout
doubles with every consecutive view change (capped) plus random jitter; a
commit brings it back to the base. f+1 VIEW-CHANGEs for higher views make a
replica join the smallest of them. The primary of the new view, with q
VIEW-CHANGEs, sends NEW-VIEW carrying them and the re-proposed blocks O,
derived deterministically (`view_change.derive_blocks`); every backup
re-derives O and rejects a NEW-VIEW whose O differs.

Progress timer. A replica suspects the primary only when the protocol shows
no progress by either of two measures:

- no *phase* of the lowest uncommitted height (committed + 1) for a timeout
  (`timeout_ticks`: base, back-off, jitter). Its phases are: the height
  below it committed (so it became the lowest), a valid pre-prepare for it
  accepted in this view, it became prepared in this view. Each phase thus
  gets a full timeout, so a height that takes longer than one timeout end
  to end but keeps moving is not thrown away;
- no commit for the *commit timeout*, learned: twice the longest of the
  last COMMIT_GAPS_KEPT gaps between commits (ticks in a view with work),
  at most `commit_timeout_factor_max` base timeouts. In a saturated
  pipeline the lowest height is already prepared when it becomes the
  lowest, votes queue behind the checks of the blocks above it, and the
  gap between commits is the pace of the slowest resource, which may
  exceed a timeout while everything is healthy (the run that prompted
  this: 16 nodes on 2 cores, ~7 s from pre-prepare to commit, a 2 s
  timeout). A gap counts from the last commit or from entering the current
  view, whichever is later: the ticks spent waiting for a primary that was
  then replaced are the timeout itself, not the chain's pace (counting them
  let every replaced primary double the commit timeout up to its cap: a
  30 s stall after two faulty primaries in a row in the long fault run).
  After a view change caused by a too-short timeout, the new view's first
  commit still takes as long as the pipeline needs, so the replica learns
  from it.

On a fast chain the gaps are short, the commit timeout is below the base
timeout, and a stop is noticed as before: one timeout after the last commit
or phase. Why this is safe against a faulty primary:

- Only the lowest height counts. Progress above it commits nothing, so a
  primary that pre-prepares (or lets prepare) heights above a withheld one
  restarts nothing.
- Phases are a one-way ladder: per (view, height) at most PRE_PREPARED then
  PREPARED, each once (`Slot.timer_phase`, cleared only by a view change,
  which restarts the timer anyway). A replica accepts at most one
  pre-prepare per (view, height), so a primary cannot renew the timer by
  pre-preparing again. The pre-prepare phase is the one a primary controls
  alone; it is kept because for big blocks it is the slow one (transfer
  and checks), and it buys one timeout, never more: once the correct
  replicas have accepted the pre-prepare, their PREPAREs alone (n - f >=
  q - 1 of them) prepare the height whatever the faulty ones do; if it
  reaches fewer and the faulty withhold their PREPAREs, the height never
  prepares, the replicas that accepted it time out one timeout after
  accepting it, those that never got it one timeout after the last commit.
- PREPARED needs q-1 PREPAREs from others; with a faulty primary at least
  f+1 of them are from correct replicas: progress the faulty ones cannot
  fake among themselves. Commit is final.
- So every height commits, or the view changes, within max(3 timeouts,
  commit timeout) of the previous commit. A faulty primary can slow the
  chain that far -- as any PBFT primary can slow it to just under its
  timeout -- and, by committing slowly, raise the commit timeout up to its
  cap, but never halt it. The cap also bounds how long a stop goes
  unnoticed after a slow stretch; the gaps forget it after
  COMMIT_GAPS_KEPT commits.
- A silent or crashed primary, or one that proposes nothing while there is
  work, makes no phase: it is replaced one timeout (or commit timeout)
  after the last commit.

The primary itself waits two timeouts for a phase (`_progress_overdue`): it
sees its own pre-prepare at once but the next phase only after a round
trip, and it has nothing to gain from leaving its own view early -- its
backups are the ones that replace it (PBFT §4.4 runs the timer at backups),
and it joins their VIEW-CHANGEs by the f+1 rule. The simulator scenarios
in tests/sim/test_progress_timer.py measure each of these rules: without
any one of them, correct replicas still suspected healthy primaries.

Epoch boundaries. Each (view, height) has exactly one primary, that of the
epoch in force at the height, and a NEW-VIEW's re-proposals are signed by its
sender, so O must lie within one epoch. Hence a replica pre-prepares or
accepts a height only in the epoch in force at committed + 1 (a pre-prepare
for the next epoch is held until the height below it commits): no prepared
certificate spans a boundary. Nor does a replica count PREPAREs or COMMITs for
a height whose epoch it may not know yet (above executed + pipeline_depth, past
a boundary where an epoch could still start): it waits until execution settles
it, so a certificate always names the epoch of its height. A primary whose O
would still span one (VIEW-CHANGEs with an older checkpoint) does not send
NEW-VIEW; once the checkpoint just below the boundary (epochs start after a
checkpoint height) is stable, each replica re-sends its VIEW-CHANGE for the
same view with it, which replaces the older one, and O starts in the new epoch.

Catch-up. A replica that learns it is behind (f+1 status announcements or
checkpoints above its height, a certificate above it, a NEW-VIEW whose
checkpoint it lacks, messages from f+1 peers above its window) sends
BlockRequests to peers in turn and applies the certified blocks it gets back
after checking each certificate against the epoch in force at that height.
A validator announces its height to each peer as the link comes up
(`peer_connected`) and every status interval after. Fetched blocks above the
heights whose epoch execution has settled wait (EPOCH_UNSETTLED) and commit
as execution settles them. A NEW-VIEW whose base it has not reached waits
too, checked once and retried after each commit.
A replica learns epochs only by executing the blocks that decide them, so a
certified block naming an epoch newer than any it knows, above the heights
whose epoch is already settled (executed + pipeline_depth, see `add_epoch`),
cannot be checked yet. Gossiped (or a status from a non-member), it is only
a *hint*: one BlockRequest for the next heights to the peer that sent it,
when idle and at most once per catchup_retry_ticks, never `catching_up` (an
unchecked claim must not stop proposals). Fetched, such blocks wait, at most
one response's worth, until execution has taught us their epoch; then they
are verified like any other and committed, or dropped.

Durability. Every vote is journaled before it leaves (`journal_codec`): a
restarted replica never signs two digests for one (view, height, phase), never
votes in a view below one it asked to leave, and still reports the prepared
certificates of every block it sent a COMMIT for.

Errors. Peer garbage is dropped and counted in `dropped` by reason; misuse of
this API raises `ReplicaUsageError`; broken invariants are assertions.
"""

from __future__ import annotations

import dataclasses
import enum
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from consensus import codec, journal_codec, merkle
from consensus.certificates import (
    NO_SIGNATURE,
    BlockLimits,
    Signer,
    check_block,
    is_stripped,
    may_strip,
    sign,
    signature_ok,
    state_height,
    strip,
    verify_certified_block,
    verify_checkpoint_proof,
    verify_prepared_certificate,
)
from consensus.crypto import ZERO_HASH, Verifier
from consensus.journal_codec import OwnCheckpoint
from consensus.types import (
    MAX_PREPARED_IN_VIEW_CHANGE,
    Block,
    BlockHeader,
    BlockRequest,
    BlockResponse,
    CertifiedBlock,
    Checkpoint,
    Commit,
    CommitCertificate,
    CommitSignature,
    Evidence,
    NewView,
    Prepare,
    PreparedCertificate,
    PrePrepare,
    StatusAnnouncement,
    ViewChange,
    VoteKind,
)
from consensus.validators import EpochSchedule, ValidatorSet
from consensus.view_change import base_height, derive_blocks

__all__ = [
    "Outbound",
    "Ready",
    "Replica",
    "ReplicaConfig",
    "ReplicaUsageError",
    "Restored",
    "ValidatorSet",
]

BLOCKS_PER_HEIGHT_MAX = 4  # candidate blocks remembered per height (one per view tried)
HINTS_MAX = 64  # peers whose unverifiable claims of a higher height are remembered
EPOCH_UNKNOWN = "epoch_unknown"  # a certified block of an epoch we cannot know yet
# a certified block above the heights whose epoch execution has settled (`_epoch_settled`):
# checkable once execution catches up; kept like EPOCH_UNKNOWN, but not counted as dropped
EPOCH_UNSETTLED = "epoch_unsettled"
RECENT_HASHES_MAX = 4096  # committed (hash, timestamp) kept above the stable checkpoint
COMMIT_GAPS_KEPT = 8  # recent gaps between commits the commit timeout is learned from
COMMIT_GAP_FACTOR = 2  # the commit timeout allows twice the longest of them


class Rng(Protocol):
    """The part of `random.Random` the replica uses (timer jitter); injected for determinism."""

    def randrange(self, stop: int, /) -> int: ...


class ReplicaUsageError(Exception):
    """The caller (the node) used the replica's API wrongly. Never caused by peers."""


class Phase(enum.IntEnum):
    """How far a height got in the current view, as far as the progress timer cares."""

    NONE = 0
    PRE_PREPARED = 1  # a valid pre-prepare accepted
    PREPARED = 2  # and q-1 matching PREPAREs from others


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    chain_id: str
    pipeline_depth: int = 4  # heights in flight; also the state-claim lag (types.py)
    checkpoint_interval: int = 64
    block_txs_max: int = 4000
    block_bytes_max: int = 1536 * 1024
    view_change_timeout_ticks: int = 20  # node ticks every 100 ms
    view_change_backoff_max: int = 5  # timeout doubles per consecutive view change, 2**5 at most
    commit_timeout_factor_max: int = 8  # learned commit timeout <= this many base timeouts
    retransmit_ticks: int = 10  # re-send own votes for stuck heights this often
    status_interval_ticks: int = 10  # StatusAnnouncement to all this often
    catchup_retry_ticks: int = 10  # re-ask another peer when a BlockRequest went unanswered
    catchup_blocks_max: int = 64  # heights asked for in one BlockRequest
    future_messages_max: int = 1024  # buffered messages for future views, over all peers
    held_pre_prepares_max: int = 64  # pre-prepares waiting for their parent or state
    evidence_max: int = 64

    def __post_init__(self) -> None:
        if not isinstance(self.chain_id, str) or not self.chain_id:
            raise ValueError("chain_id must be a non-empty string")
        if not 1 <= self.pipeline_depth <= self.checkpoint_interval:
            raise ValueError("need 1 <= pipeline_depth <= checkpoint_interval")
        for name in (
            "block_txs_max", "block_bytes_max", "view_change_timeout_ticks",
            "commit_timeout_factor_max",
            "retransmit_ticks", "status_interval_ticks", "catchup_retry_ticks",
            "catchup_blocks_max", "future_messages_max", "held_pre_prepares_max", "evidence_max",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.view_change_backoff_max < 0:
            raise ValueError("view_change_backoff_max must be >= 0")

    @property
    def window(self) -> int:
        """High watermark - low watermark (PBFT's L), in heights."""
        return 2 * self.checkpoint_interval

    @property
    def limits(self) -> BlockLimits:
        return BlockLimits(
            self.chain_id, self.pipeline_depth, self.block_txs_max, self.block_bytes_max
        )


@dataclass(frozen=True, slots=True)
class Restored:
    """What the node read from disk at start."""

    committed_height: int  # 0 = genesis only
    committed_hash: bytes  # hash of the header at committed_height (genesis hash at 0)
    committed_timestamp_ms: int
    state_roots: dict[int, bytes]  # state root after each of the last pipeline_depth+1 heights
    journal: dict[bytes, bytes]  # everything the replica asked to persist, as stored
    epochs: tuple[tuple[int, ValidatorSet], ...]  # (first height, set), ascending


@dataclass(frozen=True, slots=True)
class Outbound:
    to: bytes | None  # None = every validator of the current epoch except self
    message: object  # a registered wire message (codec.encode works on it)


@dataclass(frozen=True, slots=True)
class Ready:
    persist: tuple[tuple[bytes, bytes | None], ...]  # sync BEFORE sending
    messages: tuple[Outbound, ...]
    committed: tuple[CertifiedBlock, ...]  # strictly ascending heights, each certified
    stable_checkpoints: tuple[tuple[int, bytes], ...]  # (height, state_root)
    evidence: tuple[Evidence, ...]


@dataclass(slots=True)
class Slot:
    """Everything known about one height above the committed height."""

    pre_prepare: PrePrepare | None = None  # accepted in the current view
    digest: bytes = b""  # pre_prepare's block hash (computed once)
    prepares: dict[bytes, Prepare] = field(default_factory=dict)  # current view, by replica
    commits: dict[bytes, Commit] = field(default_factory=dict)  # newest view per replica
    blocks: dict[bytes, Block] = field(default_factory=dict)  # digest -> block
    prepared: bool = False  # in the current view
    linked: bool = False  # prepared in the current view and its parent chain is too
    committed: CertifiedBlock | None = None  # committed-local, waiting for lower heights
    sent: list[Any] = field(default_factory=list)  # own signed messages (retransmission)
    timer_phase: Phase = Phase.NONE  # highest phase that restarted the timer, this view

    def new_view(self) -> None:
        self.pre_prepare = None
        self.digest = b""
        self.prepares = {}
        self.prepared = False
        self.linked = False
        self.sent = []
        self.timer_phase = Phase.NONE


class Replica:
    """One PBFT replica (validator, or observer when `signer` is None)."""

    def __init__(
        self,
        config: ReplicaConfig,
        restored: Restored,
        signer: Signer | None,
        verifier: Verifier,
        rng: Rng,
    ) -> None:
        if not isinstance(config, ReplicaConfig) or not isinstance(restored, Restored):
            raise ReplicaUsageError("Replica(config: ReplicaConfig, restored: Restored, ...)")
        self.config = config
        self.limits = config.limits
        self.signer = signer
        self.node_id: bytes | None = signer.public if signer is not None else None
        self.verifier = verifier
        self.rng = rng
        try:
            self.schedule = EpochSchedule(tuple(restored.epochs))
        except ValueError as exc:
            raise ReplicaUsageError(f"bad epochs: {exc}") from None
        self.dropped: Counter[str] = Counter()
        self.view_change_reasons: Counter[str] = Counter()
        self.timer_restarts: Counter[str] = Counter()  # by phase of the lowest height
        self.evidence: list[Evidence] = []
        self._evidence_keys: set[tuple[int, bytes, int, int]] = set()
        self._out_persist: list[tuple[bytes, bytes | None]] = []
        self._out_messages: list[Outbound] = []
        self._out_committed: list[CertifiedBlock] = []
        self._out_stable: list[tuple[int, bytes]] = []
        self._out_evidence: list[Evidence] = []
        self._last_ready: Ready | None = None
        self._handler_map = self._handlers()
        self._restore(restored)

    # -- restore -----------------------------------------------------------------------

    def _restore(self, r: Restored) -> None:
        if r.committed_height not in r.state_roots:
            raise ReplicaUsageError("Restored.state_roots must hold the committed height's root")
        self.committed_height = r.committed_height
        self.committed_hash = r.committed_hash
        self.committed_timestamp_ms = r.committed_timestamp_ms
        self.executed_height = r.committed_height
        self.state_roots: dict[int, bytes] = dict(r.state_roots)
        self.recent: dict[int, tuple[bytes, int]] = {
            r.committed_height: (r.committed_hash, r.committed_timestamp_ms)
        }
        try:
            loaded = journal_codec.load(r.journal)
        except journal_codec.JournalError as exc:
            raise ReplicaUsageError(str(exc)) from None
        self.view = loaded.entered_view
        self.changing_view = max(loaded.changing_view, self.view)
        self.in_view_change = self.changing_view > self.view
        self.votes: dict[tuple[int, int, int], bytes] = dict(loaded.votes)
        self.stable_height, self.stable_root = 0, ZERO_HASH
        self.stable_proof: tuple[Checkpoint, ...] = ()
        if loaded.stable is not None:
            self.stable_height, self.stable_root, self.stable_proof = loaded.stable
        self.pcerts: dict[int, PreparedCertificate] = {
            h: pc for h, pc in loaded.prepared.items() if h > self.stable_height
        }
        self.own_checkpoints: dict[int, OwnCheckpoint] = dict(loaded.own_checkpoints)
        if self.committed_height == 0 and 0 not in self.own_checkpoints:
            anchor = OwnCheckpoint(r.state_roots[0], r.committed_hash, r.committed_timestamp_ms)
            self.own_checkpoints[0] = anchor
            self._persist(
                journal_codec.checkpoint_key(0), journal_codec.encode_own_checkpoint(anchor)
            )
        for h, own in self.own_checkpoints.items():
            self.recent.setdefault(h, (own.block_hash, own.timestamp_ms))
        self._init_volatile()
        self._restore_checkpoints()
        if self.in_view_change:
            self._send_view_change()

    def _restore_checkpoints(self) -> None:
        """Own checkpoints survive in the journal, their signed messages do not: sign those
        not stable yet again, so they are counted and retransmitted. A crash between
        executing a checkpoint height and journaling its checkpoint lost it: make it now.
        Without this, a checkpoint whose messages were lost to crashes never became
        stable, and a view change waiting for it at an epoch boundary never ended."""
        h = self.committed_height
        interval = self.config.checkpoint_interval
        root = self.state_roots.get(h)
        if h > self.stable_height and h % interval == 0 and h not in self.own_checkpoints and root:
            self._make_checkpoint(h, root)
        if self.node_id is None:
            return
        for h, own in sorted(self.own_checkpoints.items()):
            votes = self.checkpoints.setdefault(h, {}) if h > self.stable_height else None
            if votes is None or self.node_id in votes or self.node_id not in self.schedule.at(h):
                continue
            votes[self.node_id] = self._sign(
                Checkpoint(h, own.state_root, self.node_id, NO_SIGNATURE)
            )

    def _init_volatile(self) -> None:
        """What a replica forgets in a crash: logs, buffers, timers (all bounded)."""
        self.slots: dict[int, Slot] = {}
        self.held: list[PrePrepare] = []
        self.future: dict[bytes, list[Any]] = {}
        self.checkpoints: dict[int, dict[bytes, Checkpoint]] = {}
        self.vc_messages: dict[bytes, ViewChange] = {}  # newest valid one per validator
        self.pending_new_view: NewView | None = None
        # the pending NEW-VIEW, the validator set and the schedule it was checked under: it is
        # retried on every commit while we catch up to its base, and re-checking its q
        # VIEW-CHANGEs (hundreds of signatures, whole blocks) each time made catch-up crawl
        self._pending_checked: tuple[NewView, ValidatorSet, EpochSchedule] | None = None
        self.last_new_view: NewView | None = None  # ours, as primary of the current view
        self.helped: set[bytes] = set()  # peers sent last_new_view in this view (<= n)
        self.peer_heights: dict[bytes, int] = {}
        self.pending_txs = 0
        self.ticks = 0
        self.last_commit_tick = 0
        self.consecutive_view_changes = 0
        self.progress_ticks = 0  # ticks with work pending and no commit (retransmission)
        self.timer_ticks = 0  # ticks counted towards the view-change timeout
        self.phase_mark = 0  # timer_ticks when the lowest height last reached a phase
        self.gap_ticks = 0  # ticks in a view with work since the last commit
        self.commit_gaps: deque[int] = deque(maxlen=COMMIT_GAPS_KEPT)
        self.commit_timeout_ticks = 0  # learned from commit_gaps (see "Progress timer")
        self.timeout_ticks = self._draw_timeout()
        self.catchup_target = max(self.stable_height, self.committed_height)
        self.catchup_last_tick = -(10**9)
        self.catchup_rotation = 0
        self.catchup_needs_room = False  # a request waits for execution to catch up
        self.hints: dict[bytes, int] = {}  # peer -> height it claimed, unverifiable (<= HINTS_MAX)
        self.waiting_blocks: list[CertifiedBlock] = []  # consecutive, epoch not known yet
        for h, pc in self.pcerts.items():  # journaled blocks stay available to commit by digest
            if self.committed_height < h <= self.accept_limit:
                self._remember_block(self._slot(h), pc.pre_prepare.block)

    # -- read-only state ---------------------------------------------------------------

    @property
    def vset(self) -> ValidatorSet:
        """The validator set in force for the next height to commit."""
        return self.schedule.at(self.committed_height + 1)

    @property
    def primary(self) -> bytes:
        return self.vset.primary(self.view)

    @property
    def is_primary(self) -> bool:
        return self.node_id is not None and self.primary == self.node_id

    @property
    def is_validator(self) -> bool:
        return self.node_id is not None and self.node_id in self.vset

    @property
    def catching_up(self) -> bool:
        return self.catchup_target > self.committed_height

    @property
    def stable_checkpoint(self) -> tuple[int, bytes]:
        return self.stable_height, self.stable_root

    @property
    def accept_limit(self) -> int:
        """The highest height whose messages are kept.

        PBFT's H = h + L, except that a replica which fetched blocks by catch-up
        counts its own last checkpoint height as h until the cluster's next
        checkpoint becomes stable for it too (it has no proof for the old one).
        """
        interval = self.config.checkpoint_interval
        floor = self.committed_height - self.committed_height % interval
        return max(self.stable_height, floor) + self.config.window

    @property
    def high_watermark(self) -> int:
        return self.stable_height + self.config.window

    @property
    def inflight_heights(self) -> int:
        """Heights above the committed one with an accepted pre-prepare in this view."""
        return sum(1 for s in self.slots.values() if s.pre_prepare is not None)

    @property
    def counters(self) -> dict[str, int]:
        out = {f"dropped/{k}": v for k, v in self.dropped.items()}
        out.update({f"view_change/{k}": v for k, v in self.view_change_reasons.items()})
        out.update({f"timer_restart/{k}": v for k, v in self.timer_restarts.items()})
        return out

    # -- outputs -------------------------------------------------------------------------

    def has_ready(self) -> bool:
        return bool(
            self._out_persist
            or self._out_messages
            or self._out_committed
            or self._out_stable
            or self._out_evidence
        )

    def ready(self) -> Ready:
        self._last_ready = Ready(
            persist=tuple(self._out_persist),
            messages=tuple(self._out_messages),
            committed=tuple(self._out_committed),
            stable_checkpoints=tuple(self._out_stable),
            evidence=tuple(self._out_evidence),
        )
        return self._last_ready

    def advance(self, ready: Ready) -> None:
        if ready is not self._last_ready:
            raise ReplicaUsageError("advance() takes the Ready most recently returned by ready()")
        del self._out_persist[: len(ready.persist)]
        del self._out_messages[: len(ready.messages)]
        del self._out_committed[: len(ready.committed)]
        del self._out_stable[: len(ready.stable_checkpoints)]
        del self._out_evidence[: len(ready.evidence)]
        self._last_ready = None

    def _persist(self, key: bytes, value: bytes | None) -> None:
        self._out_persist.append((key, value))

    def _send(self, to: bytes | None, message: object) -> None:
        self._out_messages.append(Outbound(to, message))

    def _broadcast(self, message: object, height: int | None = None) -> None:
        """To every validator of the current epoch, and of `height`'s epoch if different."""
        self._send(None, message)
        if height is None:
            return
        other = self.schedule.at(height)
        current = self.vset
        if other is not current:
            for node in other.validators:
                if node not in current and node != self.node_id:
                    self._send(node, message)

    def _drop(self, reason: str) -> None:
        self.dropped[reason] += 1

    # -- inputs: the node ------------------------------------------------------------------

    def note_pending(self, count: int) -> None:
        """The node's mempool size: transactions some primary should be proposing."""
        if type(count) is not int or count < 0:
            raise ReplicaUsageError("note_pending(count) takes an int >= 0")
        self.pending_txs = count

    def add_epoch(self, first_height: int, vset: ValidatorSet) -> None:
        """Membership change: `vset` is in force from `first_height` on."""
        if not isinstance(vset, ValidatorSet) or type(first_height) is not int:
            raise ReplicaUsageError("add_epoch(first_height: int, vset: ValidatorSet)")
        if (first_height - 1) % self.config.checkpoint_interval != 0:
            raise ReplicaUsageError("an epoch must start just after a checkpoint boundary")
        if first_height <= self.executed_height + self.config.pipeline_depth:
            raise ReplicaUsageError(
                "an epoch must start above executed height + pipeline_depth "
                "(heights below may already be in flight)"
            )
        last_first, last_set = self.schedule.last
        if first_height <= last_first or vset.epoch <= last_set.epoch:
            raise ReplicaUsageError("epochs must ascend in first height and epoch number")
        self.schedule = self.schedule.with_epoch(first_height, vset)

    def executed(self, height: int, state_root: bytes) -> None:
        """The node applied committed block `height`; `state_root` is the state after it."""
        if height != self.executed_height + 1 or height > self.committed_height:
            raise ReplicaUsageError(
                f"executed({height}) out of order: executed {self.executed_height}, "
                f"committed {self.committed_height}"
            )
        if not isinstance(state_root, bytes) or len(state_root) != len(ZERO_HASH):
            raise ReplicaUsageError("state_root must be a 32-byte hash")
        self.executed_height = height
        self.state_roots[height] = state_root
        keep_from = height - self.config.pipeline_depth - 1
        for h in [h for h in self.state_roots if h < keep_from]:
            del self.state_roots[h]
        if height % self.config.checkpoint_interval == 0:
            self._make_checkpoint(height, state_root)
        self._settle(height + self.config.pipeline_depth)
        self._retry_held()
        self._retry_waiting_blocks()
        if self.catchup_needs_room:
            self._continue_catch_up()
        self._try_new_view()

    # -- inputs: peers -----------------------------------------------------------------------

    def step(self, message: object, sender: bytes) -> None:
        """A decoded message from authenticated peer `sender`. Garbage is dropped and counted."""
        handler = self._handler_map.get(type(message))
        if handler is None:
            self._drop("unknown_type")
            return
        try:
            handler(message, sender)
        except (TypeError, ValueError, AttributeError, codec.EncodeError):
            self._drop("malformed")

    def _handlers(self) -> dict[type, Callable[[Any, bytes], None]]:
        return {
            PrePrepare: self.on_pre_prepare,
            Prepare: self.on_prepare,
            Commit: self.on_commit,
            Checkpoint: self.on_checkpoint,
            ViewChange: self.on_view_change,
            NewView: self.on_new_view,
            BlockResponse: self.on_block_response,
            CertifiedBlock: self.on_certified_block,
            StatusAnnouncement: self.on_status,
        }

    def tick(self) -> None:
        self.ticks += 1
        cfg = self.config
        if self.ticks % cfg.status_interval_ticks == 0 and self.is_validator:
            assert self.node_id is not None
            self._broadcast(StatusAnnouncement(self.committed_height, self.view, self.node_id))
        if self.ticks - self.catchup_last_tick >= cfg.catchup_retry_ticks:
            if self.catching_up:
                self._continue_catch_up()
            elif self._stuck():
                self._probe_ahead()
            if self.catchup_last_tick != self.ticks:
                self._probe_hinted()
        if not self.is_validator:
            return
        if not (self.in_view_change or self._has_work()):
            self.progress_ticks = 0
            return
        self.progress_ticks += 1
        if self.progress_ticks % cfg.retransmit_ticks == 0:
            self._retransmit()
        if self.in_view_change and not self._view_change_quorum():
            # PBFT §4.5.2: the NEW-VIEW timer starts only once q replicas want this
            # view; otherwise one replica would race ahead alone, view after view.
            self.timer_ticks = 0
            return
        self.timer_ticks += 1
        next_view = max(self.view, self.changing_view) + 1
        if self.in_view_change:
            if self.timer_ticks >= self.timeout_ticks:
                self._start_view_change(next_view, "new_view_timeout")
            return
        self.gap_ticks += 1
        if self._progress_overdue():
            self._start_view_change(next_view, "progress_timeout")

    def _progress_overdue(self) -> bool:
        """No phase of the lowest uncommitted height for a timeout, and no commit for the
        commit timeout (module docstring, "Progress timer").

        A primary sees its own pre-prepare at once but the next phase only a round trip
        later, and suspecting itself only serves to find a view the others left it behind
        in (it would join their VIEW-CHANGEs anyway): it waits two timeouts for a phase,
        so it never leaves a healthy view before its backups do."""
        phase_timeout = self.timeout_ticks * (2 if self.is_primary else 1)
        if self.timer_ticks - self.phase_mark < phase_timeout:
            return False
        return self.timer_ticks >= max(self.timeout_ticks, self.commit_timeout_ticks)

    def _view_change_quorum(self) -> bool:
        """q replicas asked for this view or a later one (the latter will not come back)."""
        w = self.changing_view
        return sum(1 for vc in self.vc_messages.values() if vc.new_view >= w) >= self.vset.quorum

    def _has_work(self) -> bool:
        if self.pending_txs > 0 or self.held:
            return True
        return any(s.pre_prepare is not None or s.committed for s in self.slots.values())

    def _draw_timeout(self) -> int:
        cfg = self.config
        backoff = min(self.consecutive_view_changes, cfg.view_change_backoff_max)
        base = cfg.view_change_timeout_ticks << backoff
        return base + self.rng.randrange(cfg.view_change_timeout_ticks // 2 + 1)

    def _reset_timer(self) -> None:
        self.progress_ticks = 0
        self.timer_ticks = 0
        self.phase_mark = 0
        self.timeout_ticks = self._draw_timeout()

    def _learn_commit_gap(self) -> None:
        """A commit: remember how long it took (ticks in a view with work) and let the
        commit timeout allow twice the longest recent gap, capped."""
        self.commit_gaps.append(self.gap_ticks)
        self.gap_ticks = 0
        cfg = self.config
        cap = cfg.view_change_timeout_ticks * cfg.commit_timeout_factor_max
        self.commit_timeout_ticks = min(cap, COMMIT_GAP_FACTOR * max(self.commit_gaps))

    def _observe_phase(self, h: int, phase: Phase) -> None:
        """Height h reached `phase` in this view: if h is the lowest uncommitted height and
        had not got that far yet, the phase timeout starts again from now (module
        docstring, "Progress timer"). The commit timeout still counts from the last commit;
        the back-off, the jitter drawn and the retransmission count stay."""
        if h != self.committed_height + 1 or self.in_view_change:
            return
        slot = self.slots.get(h)
        if slot is None or phase <= slot.timer_phase:
            return
        slot.timer_phase = phase
        self.phase_mark = self.timer_ticks
        self.timer_restarts[phase.name.lower()] += 1

    def _retransmit(self) -> None:
        """Re-send own signed votes for the lowest stuck heights (lossy links)."""
        if self.in_view_change:
            own = self.vc_messages.get(self.node_id or b"")
            if own is not None:
                self._broadcast(own)
        else:
            # The large messages (a PRE-PREPARE carries its block, a NEW-VIEW its
            # re-proposals) go only to validators not known to hold them yet: under
            # load most heights outlast a retransmission period, and re-sending every
            # in-flight block to everyone tripled the primary's traffic and made
            # each backup decode and hash every block again. Votes are small and a
            # peer's own vote says nothing about whether it has ours: to everyone.
            if self.last_new_view is not None:
                self._send_missing(self.last_new_view, None, self._in_current_view())
            top = self.committed_height + self.config.pipeline_depth
            for h in range(self.committed_height + 1, top + 1):
                slot = self.slots.get(h)
                if slot is not None:
                    for message in slot.sent:
                        if isinstance(message, PrePrepare):
                            self._send_missing(message, h, self._holders(slot, message.view))
                        else:
                            self._broadcast(message, h)
        # checkpoints too while changing views: a NEW-VIEW may wait for one (epoch boundary)
        for h, votes in sorted(self.checkpoints.items()):  # not yet stable: above the low mark
            own_checkpoint = votes.get(self.node_id or b"")
            if own_checkpoint is not None:
                self._broadcast(own_checkpoint, h)

    @staticmethod
    def _holders(slot: Slot, view: int) -> set[bytes]:
        """Validators whose PREPARE or COMMIT of `view` at `slot` shows they hold its PRE-PREPARE."""
        holders = set(slot.prepares)  # current view only
        holders.update(r for r, c in slot.commits.items() if c.view == view)
        return holders

    def _in_current_view(self) -> set[bytes]:
        """Validators with a PREPARE or COMMIT of the current view: they had its NEW-VIEW."""
        seen: set[bytes] = set()
        for slot in self.slots.values():
            seen |= self._holders(slot, self.view)
        return seen

    def _send_missing(self, message: object, height: int | None, have: set[bytes]) -> None:
        """`_broadcast`, but only to the validators not in `have`, one by one."""
        targets = set(self.vset.validators)
        if height is not None:
            targets.update(self.schedule.at(height).validators)
        targets -= have
        targets.discard(self.node_id)
        for node in sorted(targets):
            self._send(node, message)

    # -- windows, buffers, evidence ---------------------------------------------------------

    def _in_window(self, height: int, sender: bytes) -> bool:
        """Heights above the committed height and at most the high watermark (PBFT §4.2)."""
        if height <= self.committed_height:
            self._drop("below_window")
            return False
        if height > self.accept_limit:
            self._drop("above_window")
            self._note_peer_height(sender, height - self.config.window)
            return False
        return True

    def _slot(self, height: int) -> Slot:
        slot = self.slots.get(height)
        if slot is None:
            assert self.committed_height < height <= self.accept_limit
            slot = self.slots[height] = Slot()
        return slot

    def _buffer_future(self, message: Any, sender: bytes) -> None:
        """Keep a message for a view this replica has not entered yet (bounded per peer)."""
        if sender not in self.vset:
            self._drop("not_validator")
            return
        quota = max(1, self.config.future_messages_max // self.vset.n)
        queue = self.future.setdefault(sender, [])
        if len(queue) >= quota:
            self._drop("future_buffer_full")
            return
        queue.append(message)

    def _replay_future(self) -> None:
        """Deliver buffered messages for the view just entered; forget older ones."""
        waiting, self.future = self.future, {}
        for sender, messages in waiting.items():
            for message in messages:
                if message.view == self.view:
                    self.step(message, sender)
                elif message.view > self.view:
                    self._buffer_future(message, sender)

    def _add_evidence(self, kind: VoteKind, first: Any, second: Any) -> None:
        """Two signed votes of one validator for one (view, height, phase) (DESIGN §3)."""
        key = (int(kind), first.replica, first.view, first.height)
        if key in self._evidence_keys:
            self._drop("duplicate_evidence")
            return
        if len(self.evidence) >= self.config.evidence_max:
            self._drop("evidence_full")
            return
        ev = Evidence(
            kind=int(kind),
            replica=first.replica,
            view=first.view,
            height=first.height,
            first=codec.encode(first),
            second=codec.encode(second),
        )
        self._evidence_keys.add(key)
        self.evidence.append(ev)
        self._out_evidence.append(ev)

    def _conflict(self, kind: VoteKind, old: Any, new: Any) -> None:
        """`new` has the same (replica, view, height) as the accepted `old`."""
        if _digest_of(old) == _digest_of(new):
            self._drop("duplicate")
            return
        if not signature_ok(self.verifier, self.config.chain_id, new):
            self._drop("bad_signature")
            return
        self._add_evidence(kind, old, new)
        self._drop("equivocation")

    # -- signing, with the journal's promise ------------------------------------------------

    def _may_sign(self, kind: VoteKind, view: int, height: int, digest: bytes) -> bool:
        """Never two digests for one (view, height, phase); never vote in a view we left."""
        if self.signer is None:
            return False
        if view < self.changing_view or view != self.view:
            return False
        old = self.votes.get((int(kind), view, height))
        if old is not None and old != digest:
            self._drop("refused_conflicting_vote")
            return False
        return True

    def _record_vote(self, kind: VoteKind, view: int, height: int, digest: bytes) -> None:
        key = (int(kind), view, height)
        if key not in self.votes:
            self.votes[key] = digest
            self._persist(
                journal_codec.vote_key(*key), journal_codec.encode_vote(*key, digest=digest)
            )

    def _sign(self, unsigned: Any) -> Any:
        assert self.signer is not None
        return sign(self.signer, self.config.chain_id, unsigned)

    # -- normal case: proposing (PBFT §4.2) ------------------------------------------------

    @property
    def next_height(self) -> int:
        """The height the next proposal would take (above every accepted pre-prepare)."""
        return self._next_height()

    def _next_height(self) -> int:
        h = self.committed_height + 1
        while (slot := self.slots.get(h)) is not None and (
            slot.pre_prepare is not None or slot.committed is not None
        ):
            h += 1
        return h

    def _parent(self, height: int) -> tuple[bytes, int] | None:
        """(hash, timestamp) of the block at height-1 this view builds on, if known."""
        if height - 1 == self.committed_height:
            return self.committed_hash, self.committed_timestamp_ms
        slot = self.slots.get(height - 1)
        if slot is None:
            return None
        if slot.committed is not None:
            cb = slot.committed
            return cb.certificate.digest, cb.block.header.timestamp_ms
        if slot.pre_prepare is not None:
            return slot.digest, slot.pre_prepare.block.header.timestamp_ms
        return None

    def _in_current_epoch(self, height: int) -> bool:
        """`height` is in the epoch in force at committed + 1. A replica pre-prepares and
        accepts nothing else, so no prepared certificate spans an epoch boundary and
        neither does a view change (see "Epoch boundaries")."""
        return self.schedule.at(height).epoch == self.vset.epoch

    def wants_proposal(self) -> bool:
        """True when this replica is primary and may propose the next height now."""
        if self.node_id is None or self.in_view_change or self.catching_up:
            return False
        h = self._next_height()
        if h > self.high_watermark or self.schedule.at(h).primary(self.view) != self.node_id:
            return False
        if not self._in_current_epoch(h):
            return False  # a new epoch starts only once its first height minus 1 committed
        if state_height(h, self.config.pipeline_depth) > self.executed_height:
            return False
        if self._parent(h) is None:
            return False
        return (int(VoteKind.PRE_PREPARE), self.view, h) not in self.votes

    def propose(self, txs: Sequence[bytes], timestamp_ms: int) -> bool:
        """Propose a block of `txs` at the next height. True if a pre-prepare went out."""
        batch = tuple(txs)
        if any(not isinstance(tx, bytes) for tx in batch):
            raise ReplicaUsageError("propose() takes a sequence of bytes")
        if type(timestamp_ms) is not int or timestamp_ms < 0:
            raise ReplicaUsageError("timestamp_ms must be an int >= 0")
        if len(batch) > self.config.block_txs_max:
            raise ReplicaUsageError(f"more than block_txs_max={self.config.block_txs_max} txs")
        if sum(len(tx) for tx in batch) > self.config.block_bytes_max:
            raise ReplicaUsageError(f"more than block_bytes_max={self.config.block_bytes_max}")
        if not self.wants_proposal():
            return False
        assert self.node_id is not None
        h = self._next_height()
        parent = self._parent(h)
        assert parent is not None
        vset = self.schedule.at(h)
        sh = state_height(h, self.config.pipeline_depth)
        header = BlockHeader(
            chain_id=self.config.chain_id,
            height=h,
            view=self.view,
            epoch=vset.epoch,
            parent_hash=parent[0],
            tx_root=merkle.root(batch),
            tx_count=len(batch),
            state_height=sh,
            state_root=self.state_roots[sh],
            proposer=self.node_id,
            timestamp_ms=max(timestamp_ms, parent[1]),
            validator_set_hash=vset.hash(),
        )
        block = Block(header=header, txs=batch)
        pp = self._sign(PrePrepare(self.view, h, block, self.node_id, NO_SIGNATURE))
        self._record_vote(VoteKind.PRE_PREPARE, self.view, h, pp.digest)
        self._broadcast(pp, h)
        self._accept_pre_prepare(pp, sent=True)
        return True

    # -- normal case: pre-prepare, prepare, commit (PBFT §4.2) ------------------------------

    def on_pre_prepare(self, pp: PrePrepare, sender: bytes) -> None:
        if sender != pp.replica:
            self._drop("sender_mismatch")
            return
        if pp.view < self.view:
            self._drop("stale_view")
            return
        if pp.view > self.view:
            self._buffer_future(pp, sender)
            return
        if self.in_view_change:
            self._drop("in_view_change")
            return
        if not self._in_window(pp.height, sender):
            return
        if pp.replica != self.schedule.at(pp.height).primary(pp.view):
            self._drop("not_primary")
            return
        slot = self._slot(pp.height)
        if slot.pre_prepare is not None:
            self._conflict(VoteKind.PRE_PREPARE, slot.pre_prepare, pp)
            return
        if any(held.height == pp.height for held in self.held):
            self._drop("duplicate")
            return
        bad = self._check_proposal(pp)
        if bad is not None:
            self._drop(bad)
            return
        if not signature_ok(self.verifier, self.config.chain_id, pp):
            self._drop("bad_signature")
            return
        self._consider_pre_prepare(pp)

    def _check_proposal(self, pp: PrePrepare) -> str | None:
        """Context-free checks of a normal-case proposal."""
        hd = pp.block.header
        if hd.height != pp.height or hd.view != pp.view or hd.proposer != pp.replica:
            return "bad_header"
        if hd.state_root == ZERO_HASH:
            return "null_block_outside_new_view"
        return check_block(pp.block, self.limits, self.schedule.at(pp.height))

    def _consider_pre_prepare(self, pp: PrePrepare) -> None:
        """Accept `pp` if its parent and state claim check out; hold it while unknown."""
        h, hd = pp.height, pp.block.header
        parent = self._parent(h)
        sh = hd.state_height
        if parent is None or sh > self.executed_height or not self._in_current_epoch(h):
            self._hold(pp)
            return
        if hd.parent_hash != parent[0]:
            self._drop("bad_parent")
            return
        if hd.timestamp_ms < parent[1]:
            self._drop("bad_timestamp")
            return
        root = self.state_roots.get(sh)
        if root is None:
            self._drop("state_unknown")
            return
        if hd.state_root != root:
            self._drop("bad_state_root")
            return
        self._accept_pre_prepare(pp)

    def _hold(self, pp: PrePrepare) -> None:
        if len(self.held) >= self.config.held_pre_prepares_max:
            self._drop("held_full")
            return
        self.held.append(pp)

    def _retry_held(self) -> None:
        waiting, self.held = self.held, []
        for pp in waiting:
            if pp.view != self.view or self.in_view_change or pp.height <= self.committed_height:
                continue
            slot = self.slots.get(pp.height)
            if slot is not None and slot.pre_prepare is not None:
                continue
            self._consider_pre_prepare(pp)

    def _accept_pre_prepare(self, pp: PrePrepare, sent: bool = False) -> None:
        h = pp.height
        slot = self._slot(h)
        slot.pre_prepare = pp
        slot.digest = pp.digest
        self._remember_block(slot, pp.block)
        if sent:
            slot.sent.append(pp)
        self._observe_phase(h, Phase.PRE_PREPARED)
        if self.node_id is not None and self.node_id != pp.replica:
            self._send_prepare(h, pp)
        self._check_prepared(h)
        self._check_committed(h)
        if any(held.height == h + 1 for held in self.held):
            self._retry_held()

    def _remember_block(self, slot: Slot, block: Block) -> None:
        if is_stripped(block):
            return  # a header only: the block comes by catch-up once committed
        digest = block.hash()
        if digest in slot.blocks:
            return
        if len(slot.blocks) >= BLOCKS_PER_HEIGHT_MAX:
            del slot.blocks[next(iter(slot.blocks))]
        slot.blocks[digest] = block

    def _send_prepare(self, h: int, pp: PrePrepare) -> None:
        assert self.node_id is not None
        if self.node_id not in self.schedule.at(h):
            return
        digest = self.slots[h].digest
        if not self._may_sign(VoteKind.PREPARE, pp.view, h, digest):
            return
        prepare = self._sign(Prepare(pp.view, h, digest, self.node_id, NO_SIGNATURE))
        self._record_vote(VoteKind.PREPARE, pp.view, h, digest)
        slot = self._slot(h)
        slot.prepares[self.node_id] = prepare
        slot.sent.append(prepare)
        self._broadcast(prepare, h)

    def on_prepare(self, p: Prepare, sender: bytes) -> None:
        if not self._vote_admissible(p, sender):
            return
        slot = self._slot(p.height)
        old = slot.prepares.get(p.replica)
        if old is not None:
            self._conflict(VoteKind.PREPARE, old, p)
            return
        if not signature_ok(self.verifier, self.config.chain_id, p):
            self._drop("bad_signature")
            return
        slot.prepares[p.replica] = p
        self._check_prepared(p.height)

    def _vote_admissible(self, vote: Prepare | Commit, sender: bytes) -> bool:
        """Common filters of PREPARE and COMMIT: sender, view, window, membership."""
        if sender != vote.replica:
            self._drop("sender_mismatch")
            return False
        if isinstance(vote, Prepare):
            if vote.view < self.view:
                self._drop("stale_view")
                return False
            if vote.view > self.view:
                self._buffer_future(vote, sender)
                return False
        if not self._in_window(vote.height, sender):
            return False
        if vote.replica not in self.schedule.at(vote.height):
            self._drop("not_validator")
            return False
        return True

    def _settle(self, start: int) -> None:
        """Execution just settled the epoch of the heights from `start` (if an epoch could
        start there) to the next boundary: count the votes held back for them."""
        interval = self.config.checkpoint_interval
        if (start - 1) % interval != 0:
            return  # no epoch can start here (heights a known epoch settled earlier are
            # checked again too: cheap, and their held-back votes are counted then at latest)
        for h in range(start, start + interval):
            if h in self.slots:
                self._check_prepared(h)
                self._check_committed(h)

    def _epoch_settled(self, h: int) -> bool:
        """Whether the epoch in force at `h` is known for good: an epoch not known yet can
        only start just after a checkpoint boundary, above executed + pipeline_depth and
        above the last known epoch's first height (`add_epoch`), so `h` is settled once
        the last such start at or below it is not above both. A replica behind in
        execution must not count votes for an unsettled height: the set and quorum may
        be another epoch's."""
        interval = self.config.checkpoint_interval
        last_start = (h - 1) // interval * interval + 1
        known = max(self.executed_height + self.config.pipeline_depth, self.schedule.last[0])
        return last_start <= known

    def _check_prepared(self, h: int) -> None:
        """prepared(m, v, n, i): the pre-prepare and q-1 matching PREPAREs from others."""
        slot = self.slots.get(h)
        if slot is None or slot.pre_prepare is None or slot.prepared:
            return
        if not self._epoch_settled(h):
            return  # checked again when execution settles it (`executed`)
        pp = slot.pre_prepare
        need = self.schedule.at(h).quorum - 1
        matching = [
            p for r, p in slot.prepares.items() if p.digest == slot.digest and r != pp.replica
        ]
        if len(matching) < need:
            return
        vset = self.schedule.at(h)
        matching.sort(key=lambda p: vset.index(p.replica) or 0)
        slot.prepared = True
        self.pcerts[h] = PreparedCertificate(pp, tuple(matching[:need]))
        self._observe_phase(h, Phase.PREPARED)
        self._try_commit(h)

    def _linked(self, h: int) -> bool:
        """h-1 is committed with hash == parent_hash, or prepared-and-linked with that digest."""
        slot = self.slots[h]
        assert slot.pre_prepare is not None
        parent_hash = slot.pre_prepare.block.header.parent_hash
        if h - 1 == self.committed_height:
            return parent_hash == self.committed_hash
        below = self.slots.get(h - 1)
        if below is None:
            return False
        if below.committed is not None:
            return below.committed.certificate.digest == parent_hash
        return below.linked and below.pre_prepare is not None and below.digest == parent_hash

    def _try_commit(self, h: int) -> None:
        """Send COMMIT for h, and for the prepared heights above it that now link."""
        while True:
            slot = self.slots.get(h)
            if slot is None or not slot.prepared or slot.linked or not self._linked(h):
                return
            slot.linked = True
            pp = slot.pre_prepare
            assert pp is not None
            if self.node_id is not None and self.node_id in self.schedule.at(h):
                self._send_commit(h, pp)
            self._check_committed(h)
            h += 1

    def _send_commit(self, h: int, pp: PrePrepare) -> None:
        assert self.node_id is not None
        digest = self.slots[h].digest
        if not self._may_sign(VoteKind.COMMIT, pp.view, h, digest):
            return
        pc = self.pcerts.get(h)
        if pc is not None:  # persisted before the COMMIT leaves (journal_codec)
            self._persist(journal_codec.prepared_key(h), journal_codec.encode_prepared(pc))
        commit = self._sign(Commit(pp.view, h, digest, self.node_id, NO_SIGNATURE))
        self._record_vote(VoteKind.COMMIT, pp.view, h, digest)
        slot = self._slot(h)
        slot.commits[self.node_id] = commit
        slot.sent.append(commit)
        self._broadcast(commit, h)

    def on_commit(self, c: Commit, sender: bytes) -> None:
        """COMMITs count in any view: q for one (view, digest) commit h (PBFT §4.2)."""
        if not self._vote_admissible(c, sender):
            return
        slot = self._slot(c.height)
        old = slot.commits.get(c.replica)
        if old is not None and old.view == c.view:
            self._conflict(VoteKind.COMMIT, old, c)
            return
        if old is not None and old.view > c.view:
            self._drop("stale_view")
            return
        if not signature_ok(self.verifier, self.config.chain_id, c):
            self._drop("bad_signature")
            return
        slot.commits[c.replica] = c
        self._check_committed(c.height)

    def _check_committed(self, h: int) -> None:
        """committed-local: q matching COMMITs and the block they name."""
        slot = self.slots.get(h)
        if slot is None or slot.committed is not None:
            return
        if not self._epoch_settled(h):
            return  # a certificate would name an epoch that may yet change (`executed`)
        vset = self.schedule.at(h)
        groups: Counter[tuple[int, bytes]] = Counter(
            (c.view, c.digest) for c in slot.commits.values()
        )
        for (view, digest), count in groups.items():
            if count < vset.quorum:
                continue
            block = slot.blocks.get(digest) or self._future_block(view, h, digest)
            if block is None:
                self._behind(h)  # a quorum committed a block we never saw: fetch it
                continue
            signers = sorted(
                (c for c in slot.commits.values() if c.view == view and c.digest == digest),
                key=lambda c: vset.index(c.replica) or 0,
            )[: vset.quorum]
            cert = CommitCertificate(
                view=view,
                height=h,
                digest=digest,
                epoch=vset.epoch,
                signatures=tuple(CommitSignature(c.replica, c.signature) for c in signers),
            )
            slot.committed = CertifiedBlock(block=block, certificate=cert)
            self._deliver()
            if any(held.height == h + 1 for held in self.held):
                self._retry_held()
            return

    def _future_block(self, view: int, h: int, digest: bytes) -> Block | None:
        """A block named by q COMMITs of a view not entered yet, from a buffered pre-prepare."""
        primary = self.schedule.at(h).primary(view)
        for message in self.future.get(primary, []):
            if (
                isinstance(message, PrePrepare)
                and message.view == view
                and message.height == h
                and message.digest == digest
                and not is_stripped(message.block)
                and signature_ok(self.verifier, self.config.chain_id, message)
            ):
                return message.block
        return None

    def _deliver(self) -> None:
        """Hand committed-local blocks to the node, strictly in height order."""
        while (slot := self.slots.get(self.committed_height + 1)) is not None:
            cb = slot.committed
            if cb is None:
                return
            if cb.block.header.parent_hash != self.committed_hash:
                # q COMMITs for a block that does not link: more than f faulty validators
                self._drop("unlinked_commit")
                slot.committed = None
                return
            self._commit_block(cb)

    def _commit_block(self, cb: CertifiedBlock) -> None:
        h = cb.block.height
        assert h == self.committed_height + 1
        hd = cb.block.header
        self.committed_height = h
        self.committed_hash = cb.certificate.digest  # == hd.hash(): checked when certified
        self.committed_timestamp_ms = hd.timestamp_ms
        self.recent[h] = (self.committed_hash, hd.timestamp_ms)
        if len(self.recent) > RECENT_HASHES_MAX:
            del self.recent[min(self.recent)]
        self._out_committed.append(cb)
        self.slots.pop(h, None)
        pc = self.pcerts.get(h)
        if pc is not None and pc.pre_prepare.block.txs:
            # kept until the next stable checkpoint for VIEW-CHANGEs, which carry a committed
            # height's certificate stripped anyway (`_reported`): drop its transactions now
            # (with blocks of thousands, a checkpoint interval of them was tens of MB)
            self.pcerts[h] = self._reported(pc)
        self.consecutive_view_changes = 0
        self.last_commit_tick = self.ticks
        self._learn_commit_gap()
        self._reset_timer()
        self._try_commit(h + 1)
        self._retry_held()
        if self.pending_new_view is not None:
            nv, self.pending_new_view = self.pending_new_view, None
            self.on_new_view(nv, nv.replica)
        self._try_new_view()

    # -- checkpoints (PBFT §4.3) ----------------------------------------------------------

    def _make_checkpoint(self, height: int, root: bytes) -> None:
        block_hash, ts = self.recent[height]
        own = OwnCheckpoint(root, block_hash, ts)
        self.own_checkpoints[height] = own
        self._persist(
            journal_codec.checkpoint_key(height), journal_codec.encode_own_checkpoint(own)
        )
        if self.node_id is not None and self.node_id in self.schedule.at(height):
            c = self._sign(Checkpoint(height, root, self.node_id, NO_SIGNATURE))
            self.checkpoints.setdefault(height, {})[self.node_id] = c
            self._broadcast(c, height)
        self._check_stable(height)

    def on_checkpoint(self, c: Checkpoint, sender: bytes) -> None:
        if sender != c.replica:
            self._drop("sender_mismatch")
            return
        h = c.height
        if h % self.config.checkpoint_interval != 0 or h <= self.stable_height:
            self._drop("stale_checkpoint")
            return
        if h > self.accept_limit + self.config.window:
            self._drop("above_window")
            self._note_peer_height(sender, h)
            return
        if c.replica not in self.schedule.at(h):
            self._drop("not_validator")
            return
        votes = self.checkpoints.setdefault(h, {})
        old = votes.get(c.replica)
        if old is not None:
            # two roots signed for one height: a faulty validator (or a non-deterministic
            # execution). Counted, first kept; not `Evidence` (no VoteKind for checkpoints)
            conflict = old.state_root != c.state_root and signature_ok(
                self.verifier, self.config.chain_id, c
            )
            self._drop("conflicting_checkpoint" if conflict else "duplicate")
            return
        if not signature_ok(self.verifier, self.config.chain_id, c):
            self._drop("bad_signature")
            return
        votes[c.replica] = c
        self._check_stable(h)
        matching = Counter(v.state_root for v in votes.values())
        if h > self.executed_height and max(matching.values()) > self.schedule.at(h).f:
            self._behind(h)

    def _check_stable(self, h: int) -> None:
        own = self.own_checkpoints.get(h)
        if own is None or h <= self.stable_height:
            return
        vset = self.schedule.at(h)
        votes = [c for c in self.checkpoints.get(h, {}).values() if c.state_root == own.state_root]
        if len(votes) < vset.quorum:
            return
        votes.sort(key=lambda c: vset.index(c.replica) or 0)
        self._make_stable(h, own.state_root, tuple(votes[: vset.quorum]))
        mine = self.vc_messages.get(self.node_id or b"")
        if self.in_view_change and mine is not None and mine.stable_height < h:
            self._send_view_change()  # the higher base may keep O within one epoch
            self._try_new_view()

    def _make_stable(self, h: int, root: bytes, proof: tuple[Checkpoint, ...]) -> None:
        """Move the low watermark to h and garbage-collect below it."""
        previous = self.stable_height
        self.stable_height, self.stable_root, self.stable_proof = h, root, proof
        self._persist(journal_codec.STABLE_KEY, journal_codec.encode_stable(h, root, proof))
        self._out_stable.append((h, root))
        for k in [k for k in self.checkpoints if k <= h]:
            del self.checkpoints[k]
        for k in [k for k in self.pcerts if k <= h]:
            del self.pcerts[k]
            self._persist(journal_codec.prepared_key(k), None)
        for key in [key for key in self.votes if key[2] <= h]:
            del self.votes[key]
            self._persist(journal_codec.vote_key(*key), None)
        for k in [k for k in self.own_checkpoints if k < previous]:
            del self.own_checkpoints[k]
            self._persist(journal_codec.checkpoint_key(k), None)
        for k in [k for k in self.recent if k < previous]:
            del self.recent[k]

    # -- view change (PBFT §4.4) --------------------------------------------------------------

    def _start_view_change(self, new_view: int, reason: str) -> None:
        if new_view <= max(self.view, self.changing_view if self.in_view_change else 0):
            return
        self.view_change_reasons[reason] += 1
        self.in_view_change = True
        self.changing_view = new_view
        self.consecutive_view_changes += 1
        self._persist(journal_codec.CHANGING_KEY, journal_codec.encode_view(new_view))
        self._reset_timer()
        self.held = []
        self._send_view_change()
        self._try_new_view()

    def _send_view_change(self) -> None:
        if self.node_id is None or self.node_id not in self.vset:
            return
        top = self.stable_height + self.config.window  # what peers accept (_check_view_change)
        prepared = tuple(self._reported(self.pcerts[h]) for h in sorted(self.pcerts) if h <= top)
        vc = self._sign(
            ViewChange(
                new_view=self.changing_view,
                stable_height=self.stable_height,
                checkpoint_proof=self.stable_proof,
                prepared=prepared[:MAX_PREPARED_IN_VIEW_CHANGE],
                replica=self.node_id,
                signature=NO_SIGNATURE,
            )
        )
        self.vc_messages[self.node_id] = vc
        self._broadcast(vc)

    def _reported(self, pc: PreparedCertificate) -> PreparedCertificate:
        """A certificate as a VIEW-CHANGE carries it: stripped of its transactions when we
        have committed that height (peers that lack the block fetch it, certified)."""
        pp = pc.pre_prepare
        if pp.height > self.committed_height or not may_strip(self.schedule.at(pp.height)):
            return pc
        return dataclasses.replace(pc, pre_prepare=dataclasses.replace(pp, block=strip(pp.block)))

    def on_view_change(self, vc: ViewChange, sender: bytes) -> None:
        if sender != vc.replica:
            self._drop("sender_mismatch")
            return
        if vc.replica not in self.vset:
            self._drop("not_validator")
            return
        if vc.new_view <= self.view:
            self._drop("stale_view")
            nv = self.last_new_view
            if nv is not None and nv.view >= vc.new_view and sender not in self.helped:
                self.helped.add(sender)  # once per peer and view: no amplification
                self._send(sender, nv)  # help a replica left behind
            return
        old = self.vc_messages.get(vc.replica)
        if old is not None and (old.new_view, old.stable_height) >= (vc.new_view, vc.stable_height):
            self._drop("duplicate" if old == vc else "stale_view")
            return
        bad = self._check_view_change(vc)
        if bad is not None:
            self._drop(bad)
            return
        self.vc_messages[vc.replica] = vc
        self._join_higher_views()
        self._try_new_view()

    def _check_view_change(self, vc: ViewChange) -> str | None:
        """A VIEW-CHANGE's signature, checkpoint proof and prepared certificates."""
        cfg = self.config
        if vc.stable_height % cfg.checkpoint_interval != 0:
            return "bad_view_change"
        if not signature_ok(self.verifier, cfg.chain_id, vc):
            return "bad_signature"
        vset_at = self.schedule.at
        proof = verify_checkpoint_proof(
            vc.stable_height, vc.checkpoint_proof, vset_at(vc.stable_height), cfg.chain_id,
            self.verifier,
        )  # fmt: skip
        if proof is None:
            return "bad_checkpoint_proof"
        last = vc.stable_height
        for pc in vc.prepared:
            h = pc.pre_prepare.height
            if h <= last or h > vc.stable_height + cfg.window or pc.pre_prepare.view >= vc.new_view:
                return "bad_view_change"
            bad = verify_prepared_certificate(pc, self.limits, vset_at(h), self.verifier)
            if bad is not None:
                return bad
            last = h
        return None

    def _join_higher_views(self) -> None:
        """f+1 VIEW-CHANGEs for views above ours: join the smallest (PBFT §4.5.2)."""
        floor = max(self.view, self.changing_view if self.in_view_change else self.view)
        higher = sorted(vc.new_view for vc in self.vc_messages.values() if vc.new_view > floor)
        if len(higher) > self.vset.f:
            self._start_view_change(higher[0], "joined_f_plus_1")

    def _try_new_view(self) -> None:
        """As the primary of the view being changed to, send NEW-VIEW once q agree."""
        if not self.in_view_change or self.node_id is None:
            return
        w = self.changing_view
        vset = self.vset
        if vset.primary(w) != self.node_id:
            return
        vcs = [vc for vc in self.vc_messages.values() if vc.new_view == w]
        if len(vcs) < vset.quorum:
            return
        vcs.sort(key=lambda vc: (vc.replica != self.node_id, vset.index(vc.replica) or 0))
        chosen = tuple(vcs[: vset.quorum])
        blocks = self._derive(chosen, w)
        if blocks is None:
            return
        if any(self.schedule.at(b.height).primary(w) != self.node_id for b in blocks):
            # O would span an epoch boundary: wait for the stable checkpoint just below it
            # (our VIEW-CHANGE is re-sent with it, `_check_stable`)
            self._drop("new_view_spans_epochs")
            return
        pps = []
        for block in blocks:
            block = self._outgoing(block)
            pp = self._sign(PrePrepare(w, block.height, block, self.node_id, NO_SIGNATURE))
            pps.append(pp)
        nv = self._sign(NewView(w, chosen, tuple(pps), self.node_id, NO_SIGNATURE))
        self._broadcast(nv)
        self._enter_view(nv)

    def _outgoing(self, block: Block) -> Block:
        """A re-proposed block as O carries it: complete when we hold its transactions and
        have not committed it; stripped otherwise (backups fetch committed blocks)."""
        h = block.height
        slot = self.slots.get(h)
        if is_stripped(block) and slot is not None:
            block = slot.blocks.get(block.hash(), block)
        if h <= self.committed_height and may_strip(self.schedule.at(h)):
            block = strip(block)
        return block

    def _derive(self, vcs: Sequence[ViewChange], w: int) -> list[Block] | None:
        """O for new view w, or None when this replica lacks the base block (then catch up)."""
        base = base_height(vcs)
        if base > self.committed_height:
            self._behind(base)
            return None
        anchor = self.recent.get(base)
        if anchor is None:
            self._drop("new_view_base_unknown")
            return None
        return derive_blocks(vcs, w, anchor[0], anchor[1], self.limits, self.schedule.at)

    def on_new_view(self, nv: NewView, sender: bytes) -> None:
        if sender != nv.replica:
            self._drop("sender_mismatch")
            return
        if nv.view <= self.view or (self.in_view_change and nv.view < self.changing_view):
            self._drop("stale_view")  # never back to a view below one we asked to leave
            return
        vset = self.vset
        if nv.replica != vset.primary(nv.view):
            self._drop("not_primary")
            return
        checked, self._pending_checked = self._pending_checked, None
        if not (
            checked is not None
            and checked[0] is nv
            and checked[1] == vset
            and checked[2] is self.schedule
        ):
            if not signature_ok(self.verifier, self.config.chain_id, nv):
                self._drop("bad_signature")
                return
            bad = self._check_new_view_votes(nv, vset)
            if bad is not None:
                self._drop(bad)
                return
        base = base_height(nv.view_changes)
        top = max([base, *(pp.height for pp in nv.pre_prepares)])
        if top <= self.committed_height:
            # O lies entirely below our committed chain: nothing in it is ours to
            # adopt, and the q VIEW-CHANGEs alone establish the view.
            self._enter_view(nv)
            return
        if base > self.committed_height:
            self.pending_new_view = nv
            self._pending_checked = (nv, vset, self.schedule)
            self._behind(base)
            return
        blocks = self._derive(nv.view_changes, nv.view)
        if blocks is None:
            return
        if not self._same_blocks(nv, blocks):
            self._drop("bad_new_view")
            self._start_view_change(nv.view + 1, "bad_new_view")
            return
        self._adopt_checkpoint(nv.view_changes)
        self._enter_view(nv)

    def _check_new_view_votes(self, nv: NewView, vset: ValidatorSet) -> str | None:
        seen: set[bytes] = set()
        for vc in nv.view_changes:
            if vc.new_view != nv.view or vc.replica not in vset or vc.replica in seen:
                return "bad_new_view"
            if self.vc_messages.get(vc.replica) != vc:  # not already checked on receipt
                bad = self._check_view_change(vc)
                if bad is not None:
                    return bad
            seen.add(vc.replica)
        if len(seen) < vset.quorum:
            return "bad_new_view"
        return None

    def _same_blocks(self, nv: NewView, blocks: list[Block]) -> bool:
        """The NEW-VIEW's O is exactly what we derive, each signed by its primary."""
        if len(nv.pre_prepares) != len(blocks):
            return False
        for pp, block in zip(nv.pre_prepares, blocks, strict=True):
            if pp.view != nv.view or pp.replica != nv.replica or pp.height != block.height:
                return False
            if pp.replica != self.schedule.at(pp.height).primary(pp.view):
                return False  # one primary per (view, height): O never spans epochs
            if pp.block.header != block.header or not self._same_content(pp.block, block):
                return False
            if not signature_ok(self.verifier, self.config.chain_id, pp):
                return False
        return True

    def _same_content(self, sent: Block, derived: Block) -> bool:
        """Transactions of an O block (same header): stripped, or exactly the block's."""
        if is_stripped(sent):
            return not sent.txs and may_strip(self.schedule.at(sent.height))
        if not is_stripped(derived):
            return sent.txs == derived.txs
        return check_block(sent, self.limits, self.schedule.at(sent.height)) is None

    def _adopt_checkpoint(self, vcs: Sequence[ViewChange]) -> None:
        """Take a higher stable checkpoint proven in the NEW-VIEW if our state agrees."""
        best = max(vcs, key=lambda vc: vc.stable_height)
        h = best.stable_height
        own = self.own_checkpoints.get(h)
        if (
            h > self.stable_height
            and own is not None
            and best.checkpoint_proof
            and best.checkpoint_proof[0].state_root == own.state_root
        ):
            self._make_stable(h, own.state_root, best.checkpoint_proof)

    def _enter_view(self, nv: NewView) -> None:
        """Start view nv.view with the NEW-VIEW's pre-prepares (already verified)."""
        w = nv.view
        self.last_new_view = nv if nv.replica == self.node_id else None
        self.helped = set()
        self.view = w
        self.changing_view = w
        self.in_view_change = False
        self._persist(journal_codec.ENTERED_KEY, journal_codec.encode_view(w))
        self.gap_ticks = 0  # the wait for the old primary is not the chain's pace
        for key in [key for key in self.votes if key[1] < w]:
            del self.votes[key]
            self._persist(journal_codec.vote_key(*key), None)
        for slot in self.slots.values():
            slot.new_view()
        self.held = []
        self.vc_messages = {r: vc for r, vc in self.vc_messages.items() if vc.new_view > w}
        self._reset_timer()
        mine = nv.replica == self.node_id
        for pp in nv.pre_prepares:
            if mine:  # every signed vote is journaled, even one for a height we committed
                self._record_vote(VoteKind.PRE_PREPARE, w, pp.height, pp.digest)
            if pp.height <= self.committed_height:
                continue
            if pp.height > self.accept_limit:
                break
            self._accept_pre_prepare(pp, sent=mine)
        self._replay_future()

    # -- catch-up ---------------------------------------------------------------------------

    def _note_peer_height(self, peer: bytes, height: int) -> None:
        if peer not in self.vset:
            return
        # recorded even at 0: that a peer was heard from at all is what readiness asks
        self.peer_heights[peer] = max(height, self.peer_heights.get(peer, 0))
        heights = sorted(self.peer_heights.values(), reverse=True)
        f = self.vset.f
        if len(heights) <= f or heights[f] <= self.committed_height:
            return
        # f+1 peers (one of them correct) are ahead: far ahead, or ahead while we are stuck
        stuck = self.ticks - self.last_commit_tick >= self.config.catchup_retry_ticks
        if stuck or heights[f] > self.committed_height + self.config.pipeline_depth:
            self._behind(heights[f])

    def peer_connected(self, peer: bytes) -> None:
        """A link to `peer` came up: tell it our height now, not at the next status interval,
        so a node that has just (re)started learns at once how far behind it is."""
        if self.is_validator:
            assert self.node_id is not None
            self._send(peer, StatusAnnouncement(self.committed_height, self.view, self.node_id))

    def on_status(self, sa: StatusAnnouncement, sender: bytes) -> None:
        if sender != sa.replica:
            self._drop("sender_mismatch")
            return
        if sa.replica not in self.vset:
            self._drop("not_validator")
            self._hint(sender, sa.height)  # perhaps a validator of an epoch we do not know yet
            return
        self._note_peer_height(sa.replica, sa.height)

    def _behind(self, height: int) -> None:
        """Evidence that the cluster committed up to `height`: fetch what we miss."""
        if height <= self.catchup_target:
            return
        self.catchup_target = height
        if self.ticks - self.catchup_last_tick >= self.config.catchup_retry_ticks:
            self._send_block_request()

    def _stuck(self) -> bool:
        """Work is pending and nothing committed for a catch-up retry interval."""
        idle = self.ticks - self.last_commit_tick >= self.config.catchup_retry_ticks
        return idle and self._has_work()

    def _probe_ahead(self) -> None:
        """Stuck while some peer claims more: ask it (fewer than f+1 claims prove nothing,
        so this does not make us `catching_up`; what comes back is verified anyway)."""
        first = self.committed_height + 1
        ahead = sorted(p for p, h in self.peer_heights.items() if h >= first)
        if not ahead:
            return
        peer = ahead[self.catchup_rotation % len(ahead)]
        self.catchup_rotation += 1
        last = min(self.peer_heights[peer], first + self.config.catchup_blocks_max - 1)
        self.catchup_last_tick = self.ticks
        self._send(peer, BlockRequest(first, last))

    def _send_block_request(self) -> None:
        peers = [p for p in self.vset.validators if p != self.node_id]
        if not peers:
            return
        first = self.committed_height + 1
        ahead = [p for p in peers if self.peer_heights.get(p, 0) >= first] or peers
        peer = ahead[self.catchup_rotation % len(ahead)]
        self.catchup_rotation += 1
        most = self.config.catchup_blocks_max
        last = min(self.catchup_target, first + most - 1, self.executed_height + most)
        self.catchup_last_tick = self.ticks
        self._send(peer, BlockRequest(first, max(first, last)))

    def _continue_catch_up(self) -> None:
        """Ask for the next heights right away, once execution (which the node may run
        concurrently) has room for at least half a request; until then wait for it."""
        self.catchup_needs_room = False
        if not self.catching_up or self.waiting_blocks:
            return
        most = self.config.catchup_blocks_max
        room = self.executed_height + most - self.committed_height
        if room < max(1, most // 2):
            self.catchup_needs_room = True
            return
        self._send_block_request()

    def on_block_response(self, response: BlockResponse, sender: bytes) -> None:
        progressed = False
        blocks = tuple(response.blocks)
        for i, cb in enumerate(blocks):
            h = cb.block.height
            if h <= self.committed_height:
                continue
            bad = self._check_certified(cb)
            if bad in (EPOCH_UNKNOWN, EPOCH_UNSETTLED):
                self._wait_for_epoch(blocks[i:], counted=bad == EPOCH_UNKNOWN)
                break
            if bad is not None:
                self._drop(bad)
                progressed = progressed or bad == "catchup_ahead_of_execution"
                break
            self._commit_block(cb)
            progressed = True
        if progressed:
            self._continue_catch_up()

    def on_certified_block(self, cb: CertifiedBlock, sender: bytes) -> None:
        """A committed block gossiped by a peer (observers follow the chain this way)."""
        h = cb.block.height
        if h <= self.committed_height:
            self._drop("below_window")
            return
        if h == self.committed_height + 1:
            bad = self._check_certified(cb)
        elif self._epoch_unknown(cb):
            bad = EPOCH_UNKNOWN
        else:
            bad = verify_certified_block(cb, self.limits, self.schedule.at(h), self.verifier)
        if bad in (EPOCH_UNKNOWN, EPOCH_UNSETTLED):
            self._drop(bad)
            self._hint(sender, h)  # cannot check it yet: only ask for the heights below
            return
        if bad is not None:
            self._drop(bad)
            return
        if h == self.committed_height + 1:
            self._commit_block(cb)
            return
        self._behind(h)

    def _epoch_unknown(self, cb: CertifiedBlock) -> bool:
        """`cb` names an epoch newer than any we know, at a height whose epoch is not
        settled yet: a later `add_epoch` (first height > executed + pipeline_depth,
        after the last epoch's first height) could still make it checkable."""
        h = cb.block.height
        last_first, last_set = self.schedule.last
        epoch = cb.block.header.epoch
        return (
            h > self.executed_height + self.config.pipeline_depth
            and h > last_first
            and type(epoch) is int
            and epoch > last_set.epoch
            and cb.certificate.epoch == epoch
        )

    def _check_certified(self, cb: CertifiedBlock) -> str | None:
        """Why `cb` cannot be committed as the next height now (None: it can);
        EPOCH_UNKNOWN when it may become checkable once we learn a newer epoch."""
        h = cb.block.height
        if h != self.committed_height + 1:
            return "catchup_gap"
        if h > self.executed_height + self.config.catchup_blocks_max:
            return "catchup_ahead_of_execution"
        hd = cb.block.header
        if hd.parent_hash != self.committed_hash or hd.timestamp_ms < self.committed_timestamp_ms:
            return "catchup_bad_parent"
        root = self.state_roots.get(hd.state_height)
        if root is not None and hd.state_root not in (root, ZERO_HASH):
            return "catchup_bad_state_root"
        if self._epoch_unknown(cb):
            return EPOCH_UNKNOWN
        if not self._epoch_settled(h):
            # an older epoch's quorum, checked against a schedule that may still change,
            # could be short of the quorum in force (a validator added): wait for execution
            return EPOCH_UNSETTLED
        return verify_certified_block(cb, self.limits, self.schedule.at(h), self.verifier)

    def _wait_for_epoch(self, blocks: Sequence[CertifiedBlock], *, counted: bool) -> None:
        """Keep fetched blocks of a not-yet-known or not-yet-settled epoch (the next
        heights, consecutive, at most catchup_blocks_max: one response's worth, replacing
        any kept before); `counted`: count them as dropped (an epoch we do not know)."""
        first = self.committed_height + 1
        kept: list[CertifiedBlock] = []
        for cb in blocks[: self.config.catchup_blocks_max]:
            if cb.block.height != first + len(kept):
                break
            kept.append(cb)
        if counted:
            self.dropped[EPOCH_UNKNOWN] += len(kept)
        self.waiting_blocks = kept

    def _retry_waiting_blocks(self) -> None:
        """After an execution (which may have taught us an epoch): commit the waiting
        blocks that now check, in order; forget the rest at the first that fails."""
        waiting, self.waiting_blocks = self.waiting_blocks, []
        progressed = False
        for i, cb in enumerate(waiting):
            if cb.block.height <= self.committed_height:
                continue
            bad = self._check_certified(cb)
            if bad in (EPOCH_UNKNOWN, EPOCH_UNSETTLED, "catchup_ahead_of_execution"):
                self.waiting_blocks = waiting[i:]  # still unknown: wait for more executions
                return
            if bad is not None:
                self._drop(bad)
                return
            self._commit_block(cb)
            progressed = True
        if progressed:
            self._continue_catch_up()

    def _hint(self, peer: bytes, height: object) -> None:
        """Remember an unverifiable claim that `peer` has `height` (bounded, consumed on use)."""
        if type(height) is not int or height <= self.committed_height:
            return
        if peer not in self.hints and len(self.hints) >= HINTS_MAX:
            lowest = min(self.hints, key=lambda p: self.hints[p])
            if self.hints[lowest] >= height:
                return
            del self.hints[lowest]
        self.hints[peer] = max(height, self.hints.get(peer, 0))
        if self.ticks - self.catchup_last_tick >= self.config.catchup_retry_ticks:
            self._probe_hinted()

    def _probe_hinted(self) -> None:
        """Idle and not catching up: ask one peer that claimed more than we can check for
        the next heights. The claim is spent; the answer is verified like any other."""
        if self.catching_up or self.waiting_blocks:
            return
        if self.ticks - self.last_commit_tick < self.config.catchup_retry_ticks:
            return  # committing: the claim was no news, or will be checkable soon
        first = self.committed_height + 1
        for peer in [p for p, h in self.hints.items() if h < first]:
            del self.hints[peer]
        if not self.hints:
            return
        peers = sorted(self.hints)
        peer = peers[self.catchup_rotation % len(peers)]
        self.catchup_rotation += 1
        last = min(self.hints.pop(peer), first + self.config.catchup_blocks_max - 1)
        self.catchup_last_tick = self.ticks
        self._send(peer, BlockRequest(first, last))


def _digest_of(vote: Any) -> bytes:
    if isinstance(vote, PrePrepare):
        return vote.digest
    digest: bytes = vote.digest
    return digest
