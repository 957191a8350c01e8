"""The records registry: Redwood's built-in application.

Agencies publish records under their own namespace; every change is kept as
history by the store. A record's state key is
`b"rec/" + agency.encode() + b"\\x00" + key` (`record_state_key`).

Two entry points, one set of rules
----------------------------------
`check(tx_bytes, height)` runs at mempool entry, against the next height
(`height` is the committed head): every stateless rule, "never committed
before", and the Ed25519 signature. A transaction that passes is remembered in
a bounded *verified cache* (tx hash -> decoded transaction).

`execute(block)` runs on a committed block, strictly in height order. It is
deterministic: the same blocks on the same genesis give byte-identical writes,
receipts, meta and state roots on every node, whatever each node's cache
holds. For each transaction, in order: duplicates (earlier in this block, or
already committed) get `duplicate`; then every stateless rule is re-checked
(decoding is skipped for cached transactions: the cache maps the hash of the
exact bytes to their decoding, so it cannot differ); signatures of
transactions not in the cache are checked in one batch (optionally on a
thread pool, `node.verify_pool`). Rejected transactions stay in the block with
a non-zero receipt status; they change no state.

The node runs a third entry point, `verify_proposal(txs)`, on every proposed
block before the replica may vote for it, and drops a PRE-PREPARE carrying a
bad signature. A committed block therefore has only good signatures (its
commit certificate includes a correct validator's vote), so the node executes
committed blocks with `verify_signatures=False`: a node catching up on blocks
it never saw gossiped decodes and rules on them but checks no signature.
`bad_signature` receipts then occur only where execution verifies (the
default, as in tests and tools), never on a chain with at most f faulty
validators.

Rules (a transaction included at height h)
------------------------------------------
decodes canonically (`bad_encoding`); op is "put" or "delete", a delete has an
empty value (`bad_op`); the agency exists (`unknown_agency`); the sender is a
member of it (`not_a_member`: no agency writes another's namespace); record
key 1..256 bytes (`key_too_large`); value at most `record_value_bytes_max`
(`value_too_large`); h <= valid_until (`expired`) <= h + tx_ttl_blocks_max
(`ttl_too_long`); hash never committed (`duplicate`); signature by the sender
over (Domain.TX, chain id, signed_payload) (`bad_signature`).

Replay is impossible: a hash is committed at most once (the store's tx index),
and only within its validity window, so the tx index never needs pruning for
correctness.

Receipt status codes (`Code`): 0 applied, 1 bad_encoding, 2 bad_signature,
3 unknown_agency, 4 not_a_member, 5 bad_op, 6 key_too_large,
7 value_too_large, 8 expired, 9 ttl_too_long, 10 duplicate, 11 mempool_full
(API answers only, never in a receipt).

Governance
----------
Ops `gov.propose` and `gov.approve` (node/governance.py) change agencies,
member keys, validators and parameters; their state lives under `gov/` state
keys. Membership and parameters are read from the governance state committed
before the block (`self.gov`), so a change takes effect from the next block.
A rejected governance transaction gets receipt 12 `gov_rejected`.

State root
----------
The root of a sparse Merkle tree (storage/state_tree.py) over every state key
(records and `gov/` entries): leaf = (sha256(state key), `value_hash(height,
version, value)` of node/proofs.py); a deleted key leaves the tree. Root of
height 0 (genesis) is the empty tree's. Only the keys a block writes are
re-hashed. Tree nodes (the newest tree only, each under a key that an update
overwrites: storage/state_tree.py) and the root reference per height
(`smt/r/`) are meta entries of the block's own commit, so tree and blocks
never disagree, except the tree's top: its internal nodes of depths 0-3 (at
most 4,369, ~2 MB, though a full block rewrites ~2,400 of them) are held in
memory (`_top`) and written with the blocks at heights that are multiples
of `TREE_TOP_FLUSH_BLOCKS` (32), and at a clean stop (`write_tree_top`);
`smt/top` names the height whose top the store holds. They were most of the
bytes a block wrote, all of them rewritten at random keys, which LevelDB's
compactions carried. A start whose stored top is older than its head (the
process died) recomputes the top from the rest of the tree, which every
block writes (`state_tree.top_levels`), and checks its root against the
stored one. Proofs are built at the newest certified state height
(node/proofs.py): pipeline_depth below the newest block that is not a null
block, with at most pipeline_depth null blocks above that one. Its nodes
may have been overwritten since, so each committed height keeps a LevelDB
snapshot for `tree_snapshots_kept` = 2 x pipeline_depth +
`TREE_SNAPSHOTS_MARGIN` heights (12 with the default depth of 4; the margin
covers blocks that commit while a proof is built), with the top held then,
and a proof reads that height's tree from it (`prove_state`), or from a
snapshot of now when no block since has changed the root. Older heights, and heights from before
the process started whose root is not the newest one, answer 503
`proof_unavailable` (ask again: the certified height moves up within
pipeline_depth blocks). A leaf holds its state key (`names` of
`StateTree.update`), written when the key is created and deleted with it;
its value hash is read from the key's record (`_leaf_reader`), at the head or
in a height's snapshot, so a block that updates existing keys writes no
leaf. A store whose tree an older release wrote (per version before stop 25,
or with leaves holding value hashes, layouts position/1-2 of stops 25-26)
has its tree rebuilt from the current state the first time it is opened
(`_rebuild_tree`), checked against the stored root.
The application remembers the version and value hash of the keys the latest
blocks wrote (`CURRENT_CACHE_KEYS` per generation, two generations, filled
only after a block has committed): a block writing them then needs no
LevelDB read for their current versions, and hands the value hashes to the
tree as `known`, which spares the read of their leaves.
Meta written in the block's commit: `app/state_root` (latest), `app/root/<u64
BE height>` (every height, kept), `app/tx_count` (u64 BE running total of
applied transactions), and `proof/epoch/<u64 E>` (node/proofs.py) once the
header certifying a validator-set change has committed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

from consensus import codec
from consensus.codec import DecodeError
from consensus.crypto import SIGNATURE_BYTES, Domain, sha256, signing_bytes
from consensus.types import (
    MAX_RECORD_KEY_BYTES,
    MAX_TX_BYTES,
    MAX_TX_VALUE_BYTES,
    Block,
    CertifiedBlock,
    Transaction,
    signed_payload,
)
from node import governance
from node.genesis import Genesis
from node.governance import GOV_OPS, GovBlock, GovError, GovState
from node.proofs import VALUE_HASH_TAG, epoch_change_json, epoch_proof_key, value_hash
from node.txs import decode_tx
from node.verify_pool import VerifyItem, verify_serial
from storage import state_tree
from storage.store import RECOVERY_COMMAND, StateWrite, StoreError, prefix_end

log = logging.getLogger("redwood.app")

OPS = frozenset({"put", "delete"})
RECORD_PREFIX = b"rec/"
META_STATE_ROOT = b"app/state_root"
META_ROOT_PREFIX = b"app/root/"
META_TX_COUNT = b"app/tx_count"
VERIFIED_CACHE_TXS_MAX = 100_000
CURRENT_CACHE_KEYS = 65_536  # keys whose version and value hash are kept, per generation
VERIFIED_CACHE_BYTES_MAX = 64 * 1024 * 1024  # ~100,000 txs of 200-byte values
CACHE_ENTRY_OVERHEAD_BYTES = 400  # a decoded Transaction's objects, roughly
TX_MESSAGE_TAG = 1  # consensus.types registers Transaction as message 1
# heights whose tree stays readable for proofs: 2 x pipeline_depth + this (module docstring)
TREE_SNAPSHOTS_MARGIN = 4
TREE_LAYOUT_KEY = b"smt/layout"  # the tree's storage layout (storage/state_tree.py)
# the tree's top is written every TREE_TOP_FLUSH_BLOCKS only (since position/2), with
# TREE_TOP_KEY; a leaf holds its state key, written only when the key is created
TREE_LAYOUT = b"position/3"  # leaves by name: the state key (storage/state_tree.py)
# layouts of older releases, rebuilt once in this one (`_rebuild_tree`): nodes per version
# (None: no marker), then by position with leaves that held their value hash
TREE_LAYOUTS_REBUILT = (None, b"position/1", b"position/2")
TREE_TOP_KEY = b"smt/top"  # u64 BE: the height whose tree top (depths 0-3) the store holds
TREE_TOP_FLUSH_BLOCKS = 32  # the top is written with the blocks at multiples of this height
REPAIR_HINT = f"Run `{RECOVERY_COMMAND}` to drop its data and sync again."
TREE_REBUILD_KEYS = 25_000  # keys per part of a tree rebuild: bounds its memory
# how long `verify_checked` waits for another thread's check of the same transactions
# before checking them itself (that check takes milliseconds; this only bounds a stuck one)
CLAIM_WAIT_S = 10.0

_U64 = struct.Struct(">Q")
_sha256 = hashlib.sha256
_TX_FIELDS = len(codec.schema(Transaction))
# canonical tx bytes: fixarray(3) version tag fixarray(fields) ... bin8(64) signature
_TX_PREFIX = (
    bytes([0x90 | 3]) + codec.pack(codec.FORMAT_VERSION) + codec.pack(TX_MESSAGE_TAG)
    + bytes([0x90 | _TX_FIELDS])
)  # fmt: skip
_PAYLOAD_HEADER = bytes([0x90 | (_TX_FIELDS - 1)])
_SIG_HEADER = bytes([0xC4, SIGNATURE_BYTES])
_SIG_TAIL_BYTES = len(_SIG_HEADER) + SIGNATURE_BYTES


class Code(IntEnum):
    """Receipt status codes; `code_name` gives the API's string."""

    APPLIED = 0
    BAD_ENCODING = 1
    BAD_SIGNATURE = 2
    UNKNOWN_AGENCY = 3
    NOT_A_MEMBER = 4
    BAD_OP = 5
    KEY_TOO_LARGE = 6
    VALUE_TOO_LARGE = 7
    EXPIRED = 8
    TTL_TOO_LONG = 9
    DUPLICATE = 10
    MEMPOOL_FULL = 11
    GOV_REJECTED = 12


_DUPLICATE = int(Code.DUPLICATE)  # receipts hold plain ints
_BAD_SIGNATURE = int(Code.BAD_SIGNATURE)


def code_name(status: int) -> str:
    """`2` -> `"bad_signature"`; unknown numbers -> `"status_<n>"`."""
    try:
        return Code(status).name.lower()
    except ValueError:
        return f"status_{status}"


@dataclass(frozen=True, slots=True)
class Checked:
    tx: Transaction
    tx_hash: bytes


@dataclass(frozen=True, slots=True)
class Rejected:
    code: str  # one of the `Code` names in lower case, e.g. "bad_signature"
    message: str

    @property
    def status(self) -> int:
        return int(Code[self.code.upper()])


@dataclass(frozen=True, slots=True)
class Executed:
    writes: list[StateWrite]
    tx_status: list[int]  # one `Code` per transaction of the block, in order
    meta: dict[bytes, bytes | None]  # None deletes (pruned state-tree nodes)
    state_root: bytes
    height: int = 0
    tx_hashes: tuple[bytes, ...] = ()  # of the block's transactions, in order
    applied: int = 0  # transactions with status 0
    gov: Any = None  # GovState after this block
    # validator-set epochs decided in this block: (epoch, first_height, node ids)
    new_epochs: tuple[tuple[int, int, tuple[bytes, ...]], ...] = ()
    tree_update: Any = None  # storage.state_tree.Update
    # the tree's top nodes this block changed (None: removed), held in memory unless
    # `top_written` (module docstring, "State root")
    top: dict[bytes, bytes | None] | None = None
    top_written: bool = False
    # current version, before this block, of every key it writes (what commit_block needs)
    versions: dict[bytes, int] | None = None
    # state key -> `pack_current(version, value hash or None if deleted)` after this block
    current: dict[bytes, bytes] | None = None


_VERSION_BYTES = 8


def pack_current(version: int, value_hash_: bytes | None) -> bytes:
    """A remembered key's entry: its version (u64 BE), then its value hash unless deleted."""
    packed = version.to_bytes(_VERSION_BYTES, "big")
    return packed if value_hash_ is None else packed + value_hash_


def tree_snapshots_kept(pipeline_depth: int) -> int:
    """Heights whose state tree stays readable for proofs (module docstring, "State root").

    Proofs are built at the newest certified state height: pipeline_depth below
    the newest block that is not a null block, with up to pipeline_depth null
    blocks above it; the margin covers blocks that commit while a proof is built.
    """
    return 2 * pipeline_depth + TREE_SNAPSHOTS_MARGIN


class Store(Protocol):
    """The part of `storage.store.ChainStore` the application uses."""

    def head_height(self) -> int: ...
    def has_tx(self, tx_hash: bytes) -> bool: ...
    def get_meta(self, key: bytes) -> bytes | None: ...
    def meta_keys(self, start: bytes, stop: bytes, limit: int = 1_000_000) -> list[bytes]: ...
    def meta_snapshot(self) -> Any: ...
    def write_meta(self, meta: Mapping[bytes, bytes | None]) -> None: ...
    def state_keys(self) -> Iterable[bytes]: ...
    def get_record(self, key: bytes) -> Any: ...
    def current_versions(self, keys: Iterable[bytes]) -> dict[bytes, int]: ...
    def commit_block(
        self,
        cb: CertifiedBlock,
        writes: Sequence[StateWrite],
        meta: Any = ...,
        tx_status: Sequence[int] | None = None,
        *,
        sync: bool = True,
        versions: Mapping[bytes, int] | None = None,
        tx_hashes: Sequence[bytes] | None = None,
        first_seen: Sequence[bool] | None = None,
    ) -> None: ...


VerifyMany = Callable[[Sequence[VerifyItem]], list[bool]]


def signed_payload_of(tx: Transaction, tx_bytes: bytes | None = None) -> bytes:
    """`signed_payload(tx)`, cut out of `tx_bytes` when they are `tx`'s canonical encoding.

    Canonical bytes are `[FORMAT_VERSION, tag, [sender, ..., value, signature]]`
    and the signed payload is `[sender, ..., value]`: the inner array's fields
    minus the trailing 64-byte signature (`c4 40` + 64 bytes) under a header
    one shorter. Slicing gives the same bytes as re-encoding, without
    re-encoding (a quarter of admission's Python time). Anything that does not
    look exactly like that falls back to `signed_payload`.
    """
    if (
        tx_bytes is not None
        and tx_bytes.startswith(_TX_PREFIX)
        and tx_bytes[-_SIG_TAIL_BYTES:-SIGNATURE_BYTES] == _SIG_HEADER
        and tx_bytes[-SIGNATURE_BYTES:] == tx.signature
    ):
        return _PAYLOAD_HEADER + tx_bytes[len(_TX_PREFIX) : -_SIG_TAIL_BYTES]
    return signed_payload(tx)


def record_state_key(agency: str, key: bytes) -> bytes:
    """The state key of record `key` in `agency`'s namespace."""
    return RECORD_PREFIX + agency.encode("utf-8") + b"\x00" + key


def root_meta_key(height: int) -> bytes:
    return META_ROOT_PREFIX + _U64.pack(height)


def genesis_state_root(genesis_hash: bytes) -> bytes:
    """The state root of height 0: the empty tree (genesis membership is not in the tree)."""
    return state_tree.EMPTY_ROOT


class Application:
    """The records registry over a `ChainStore`. See the module docstring."""

    def __init__(
        self,
        store: Store,
        genesis: Genesis,
        *,
        verify_many: VerifyMany = verify_serial,
        verified_cache_txs_max: int = VERIFIED_CACHE_TXS_MAX,
        verified_cache_bytes_max: int = VERIFIED_CACHE_BYTES_MAX,
    ) -> None:
        self.store = store
        self.genesis = genesis
        self.chain_id = genesis.chain_id
        self.genesis_root = genesis_state_root(genesis.hash())
        # the tree's top nodes (depths 0-3) changed since the store last got them (None:
        # removed); replaced, never mutated, by each block that changes it, so a proof's
        # reader can keep the one of its height (module docstring, "State root")
        self._top: dict[bytes, bytes | None] = {}
        self._live = _TopOver(store, self._top)
        self.tree_top_flush_blocks = TREE_TOP_FLUSH_BLOCKS
        self.tree = _tree_over(self._live)
        # held by `apply` from a block's commit until the top and snapshot match it, and by
        # a proof taking a snapshot of now
        self._tree_lock = threading.Lock()
        self.gov = self._load_gov()
        self._verify_many = verify_many
        self._cache_txs_max = verified_cache_txs_max
        self._cache_bytes_max = verified_cache_bytes_max
        self._verified: OrderedDict[bytes, Transaction] = OrderedDict()
        self._verified_bytes = 0
        # tx hash -> the event a `verify_checked` call sets once its check of it is done
        self._claimed: dict[bytes, threading.Event] = {}
        self._lock = threading.Lock()  # check() and execute() may run on different threads
        self.signatures_checked = 0
        self.signatures_skipped = 0
        # CPU time (of the threads that ran it) spent maintaining the state tree: the
        # per-block update with its key and value hashes, pruning and `committed`
        self.state_tree_cpu_s = 0.0
        # heights whose tree stays readable for proofs (module docstring)
        self.tree_snapshots_kept = tree_snapshots_kept(genesis.params.pipeline_depth)
        # height -> a LevelDB snapshot taken right after it committed (`prove_state`)
        self._snapshots: dict[int, Any] = {}
        # state key -> `pack_current(version, value hash or None)` at the store's head;
        # only `apply` writes it, after the commit; two generations (module docstring).
        # One bytes an entry, not a tuple, an int and a hash: 113 bytes with its dict
        # slot, not 200 (~11 MB over two full generations; measured with tracemalloc)
        self._current: dict[bytes, bytes] = {}
        self._current_old: dict[bytes, bytes] = {}
        layout = store.get_meta(TREE_LAYOUT_KEY)
        if layout != TREE_LAYOUT and layout not in TREE_LAYOUTS_REBUILT:
            raise StoreError(
                f"the state tree is stored in a layout this node does not know ({layout!r}); "
                "a newer Redwood wrote it"
            )
        # a new store gets the marker with its first block (which writes the top), one
        # in an older layout is rebuilt now, and one whose top was lost is recomputed now
        self._layout_unmarked = layout != TREE_LAYOUT
        head = store.head_height()
        if layout != TREE_LAYOUT and head > 0:
            self._rebuild_tree(layout)
        elif layout == TREE_LAYOUT:
            top = store.get_meta(TREE_TOP_KEY)
            if top is None or _U64.unpack(top)[0] != head:
                self._recompute_top(head, None if top is None else _U64.unpack(top)[0])

    # -- admission ---------------------------------------------------------------

    def check(self, tx_bytes: bytes, height: int) -> Checked | Rejected:
        """Is `tx_bytes` acceptable for the block after committed height `height`?"""
        result = self.precheck(tx_bytes, height)
        if isinstance(result, Rejected) or result.tx_hash in self._verified:
            return result
        if not self.verify_checked([result], [self.signature_item(result.tx, tx_bytes)])[0]:
            return Rejected("bad_signature", "signature does not verify for the sender's key")
        return result

    def precheck(
        self, tx_bytes: bytes, height: int, tx_hash: bytes | None = None
    ) -> Checked | Rejected:
        """Every rule of `check` except the signature (the caller batches those).
        `tx_hash`, when the caller has it, must be `sha256(tx_bytes)`."""
        try:
            tx = decode_tx(tx_bytes)
        except DecodeError as exc:
            return Rejected(*_bad_encoding(tx_bytes, exc))
        problem = self._violation(tx, height + 1)
        if problem is not None:
            return Rejected(problem[0].name.lower(), problem[1])
        h = sha256(tx_bytes) if tx_hash is None else tx_hash
        if self.store.has_tx(h):
            return Rejected("duplicate", "transaction already committed")
        return Checked(tx, h)

    def signature_item(self, tx: Transaction, tx_bytes: bytes | None = None) -> VerifyItem:
        """What `verify_pool` checks for this transaction's signature.

        `tx_bytes`, the canonical bytes `tx` was decoded from, lets the signed
        payload be cut out of them instead of re-encoding `tx` (`signed_payload_of`).
        """
        message = signing_bytes(Domain.TX, self.chain_id, signed_payload_of(tx, tx_bytes))
        return (tx.sender, tx.signature, message)

    def verify_signatures(self, items: Sequence[VerifyItem]) -> list[bool]:
        """Check a batch of `signature_item`s with this application's verifier."""
        return self._verify_many(items)

    def verify_checked(self, checked: Sequence[Checked], items: Sequence[VerifyItem]) -> list[bool]:
        """Check the signatures of `checked` (`items[k]` is `checked[k]`'s `signature_item`),
        at most once per transaction on this node, and cache the good ones (`remember`).

        Admission (each gossip or API batch) and `verify_proposal` run on different
        threads and often hold the same transactions at the same time: a PRE-PREPARE
        arrives while the gossip of its transactions is being checked. Each hash not
        yet in the verified cache is claimed by the first call that sees it; a later
        call waits for that one (at most `CLAIM_WAIT_S`) and takes its answer from the
        cache. A hash names the exact bytes, so both calls would get the same answer;
        a hash the other call found bad (never cached) is checked again here. A call
        waits only after its own check is done and its claims are released, so two
        calls never wait for each other.
        """
        if len(checked) != len(items):
            raise ValueError("one signature item per checked transaction is required")
        results = [False] * len(items)
        done = threading.Event()
        mine: list[int] = []
        waiting: dict[int, threading.Event] = {}
        with self._lock:
            for k, c in enumerate(checked):
                h = c.tx_hash
                if h in self._verified:
                    results[k] = True
                    continue
                other = self._claimed.get(h)
                if other is None:
                    self._claimed[h] = done
                    mine.append(k)
                else:
                    waiting[k] = other
        try:
            self._check_and_remember(checked, items, mine, results)
        finally:
            with self._lock:
                for k in mine:
                    h = checked[k].tx_hash
                    if self._claimed.get(h) is done:
                        del self._claimed[h]
            done.set()
        if waiting:
            for event in {id(e): e for e in waiting.values()}.values():
                event.wait(CLAIM_WAIT_S)
            again: list[int] = []
            with self._lock:
                for k in waiting:
                    if checked[k].tx_hash in self._verified:
                        results[k] = True
                    else:
                        again.append(k)
            self._check_and_remember(checked, items, again, results)
        return results

    def _check_and_remember(
        self,
        checked: Sequence[Checked],
        items: Sequence[VerifyItem],
        indexes: list[int],
        results: list[bool],
    ) -> None:
        if not indexes:
            return
        oks = self._verify_many([items[k] for k in indexes])
        if len(oks) != len(indexes):
            raise ValueError("verify_many must answer every item")
        self.signatures_checked += len(indexes)
        for k, ok in zip(indexes, oks, strict=True):
            results[k] = ok
            if ok:
                self.remember(checked[k])

    def remember(self, checked: Checked) -> None:
        """Record that `checked`'s signature verified (bounded; oldest forgotten first)."""
        size = _cache_size(checked.tx)
        with self._lock:
            if checked.tx_hash in self._verified:
                return
            self._verified[checked.tx_hash] = checked.tx
            self._verified_bytes += size
            while self._verified and (
                len(self._verified) > self._cache_txs_max
                or self._verified_bytes > self._cache_bytes_max
            ):
                _, old = self._verified.popitem(last=False)
                self._verified_bytes -= _cache_size(old)

    def is_verified(self, tx_hash: bytes) -> bool:
        """Whether the transaction with this hash is in the verified cache."""
        return tx_hash in self._verified

    def forget(self, tx_hashes: Sequence[bytes]) -> None:
        with self._lock:
            for h in tx_hashes:
                old = self._verified.pop(h, None)
                if old is not None:
                    self._verified_bytes -= _cache_size(old)

    @property
    def verified_cache_size(self) -> int:
        return len(self._verified)

    # -- execution ---------------------------------------------------------------

    def verify_proposal(self, raws: Sequence[bytes]) -> int | None:
        """Index of the first transaction of a proposed block whose signature does not
        verify, or None when every decodable one verifies.

        A validator calls this before it lets the block's PRE-PREPARE reach the
        replica, so it never votes for a block carrying a bad signature. Since a
        commit certificate holds q votes, at least one from a correct validator,
        every committed block's signatures are then known to be good, and a
        node executing it (live or catching up) need not check them again
        (`execute(..., verify_signatures=False)`). Transactions already in the
        verified cache are not checked again; the ones checked here join it, so
        the later gossip of the same transaction and the execution skip them, and
        the ones an admission batch is checking at this moment are waited for, not
        checked twice (`verify_checked`).
        Undecodable transactions are left to execution (`bad_encoding`, the
        same on every node).
        """
        hashes = [sha256(raw) for raw in raws]
        with self._lock:
            missing = [i for i, h in enumerate(hashes) if h not in self._verified]
        if not missing:
            return None
        checked: list[tuple[int, Checked]] = []
        for i in missing:
            try:
                checked.append((i, Checked(decode_tx(raws[i]), hashes[i])))
            except DecodeError:
                continue
        items = [self.signature_item(c.tx, raws[i]) for i, c in checked]
        results = self.verify_checked([c for _, c in checked], items) if items else []
        bad = None
        for (i, _c), ok in zip(checked, results, strict=True):
            if not ok and (bad is None or i < bad):
                bad = i
        return bad

    def execute(self, block: Block, *, verify_signatures: bool = True) -> Executed:
        """Receipts, state writes, meta and state root of `block` on top of the store's head.

        Deterministic; reads the store, writes nothing. `block` must be head + 1.
        With `verify_signatures` False, transactions not in the verified cache
        are decoded and ruled on but their signatures are taken as good: only
        for a block under a commit certificate of validators that each ran
        `verify_proposal` before voting (what the node does).
        """
        height = block.header.height
        head = self.store.head_height()
        if height != head + 1:
            raise ValueError(f"cannot execute block {height} on head {head}")
        prev_ref = self.root_ref_at(head)
        hashes = tuple(sha256(raw) for raw in block.txs)
        with self._lock:
            cached = [self._verified.get(h) for h in hashes]
        status, txs, unverified = self._screen(block.txs, hashes, cached, height)
        if unverified and verify_signatures:
            self._check_signatures(unverified, txs, status, block.txs)
        elif unverified:
            self.signatures_skipped += len(unverified)
        gb = GovBlock(
            self.gov, height, self.genesis.params.pipeline_depth,
            self.genesis.params.checkpoint_interval,
        )  # fmt: skip
        writes: list[StateWrite] = []
        for i, tx in enumerate(txs):
            if tx is None or status[i] != Code.APPLIED:
                continue
            if tx.op in GOV_OPS:
                before = dict(gb.writes)
                if not self._execute_gov(gb, tx):
                    status[i] = int(Code.GOV_REJECTED)
                    gb.writes = before
                    continue
                writes.extend(
                    StateWrite(k, v, i) for k, v in gb.writes.items() if before.get(k) != v
                )
            else:
                writes.append(
                    StateWrite(record_state_key(tx.agency, tx.key), _written_value(tx), i)
                )
        versions, known = self._current_of({w.key for w in writes})
        started = time.thread_time()
        update, current = self._update_tree(prev_ref, writes, height, versions, known)
        self.state_tree_cpu_s += time.thread_time() - started
        root = update.root_hash
        applied = status.count(Code.APPLIED)
        meta: dict[bytes, bytes | None] = {
            META_STATE_ROOT: root,
            root_meta_key(height): root,
            META_TX_COUNT: _U64.pack(self.tx_count() + applied),  # a store read: not timed
        }
        started = time.thread_time()
        for key in update.deleted:
            meta[key] = None
        meta.update(update.puts)
        meta[state_tree.root_key(height)] = state_tree.encode_root(update.root)
        top = self._split_top(update, meta)
        written = self._layout_unmarked or height % self.tree_top_flush_blocks == 0
        if written:
            meta.update(self._top)
            meta.update(top)
            meta[TREE_TOP_KEY] = _U64.pack(height)
            meta[TREE_LAYOUT_KEY] = TREE_LAYOUT
        elif not top and not self._top:  # nothing held: the stored top is this height's too
            meta[TREE_TOP_KEY] = _U64.pack(height)
        self.state_tree_cpu_s += time.thread_time() - started
        return Executed(
            writes, status, meta, root, height, hashes, applied,
            gb.state, tuple(gb.new_epochs), update, top, written, versions, current,
        )  # fmt: skip

    @staticmethod
    def _split_top(
        update: state_tree.Update, meta: dict[bytes, bytes | None]
    ) -> dict[bytes, bytes | None]:
        """Take the tree's top nodes out of a block's `meta`: node -> bytes, or None if removed.

        The update lists every internal node of depth < 5 it wrote or removed in `nodes`."""
        top: dict[bytes, bytes | None] = {}
        nodes = update.nodes
        for i in range(0, len(nodes), 2):
            key = nodes[i]
            if state_tree.is_top(key):
                top[key] = meta.pop(key, None)
        return top

    def _current_of(self, keys: set[bytes]) -> tuple[dict[bytes, int], dict[bytes, bytes]]:
        """Current versions of `keys` (remembered, or read), and the value hashes remembered."""
        versions: dict[bytes, int] = {}
        known: dict[bytes, bytes] = {}
        missing: list[bytes] = []
        new, old = self._current, self._current_old
        for key in keys:
            entry = new.get(key) or old.get(key)
            if entry is None:
                missing.append(key)
                continue
            versions[key] = int.from_bytes(entry[:_VERSION_BYTES], "big")
            if len(entry) > _VERSION_BYTES:
                known[key] = entry[_VERSION_BYTES:]
        if missing:
            versions.update(self.store.current_versions(missing))
        return versions, known

    def _remember_current(self, current: Mapping[bytes, bytes]) -> None:
        """After a commit: the committed versions and value hashes of the block's keys."""
        new = self._current
        new.update(current)
        if len(new) >= CURRENT_CACHE_KEYS:
            self._current_old, self._current = new, {}

    def _execute_gov(self, gb: GovBlock, tx: Transaction) -> bool:
        """Apply one governance transaction to `gb`; False if it is rejected."""
        try:
            if tx.op == governance.OP_PROPOSE:
                gb.propose(tx.agency, tx.value)
            else:
                pid = governance.decode_approval(tx.value)
                gb.approve(tx.agency, gb.proposals.get(pid) or self.proposal(pid))
        except GovError:
            return False
        return True

    def _update_tree(
        self,
        prev: state_tree.NodeRef | None,
        writes: Sequence[StateWrite],
        height: int,
        versions: Mapping[bytes, int],
        known: Mapping[bytes, bytes],
    ) -> tuple[state_tree.Update, dict[bytes, bytes]]:
        """The tree after `writes` (last write of a key wins; versions counted as the store
        does, from `versions`, the current version of each key before the block), and
        each written key's version and value hash after the block. `known`: value
        hashes the keys are believed to hold before the block (the tree checks them)."""
        last: dict[bytes, bytes | None] = {}
        for w in writes:
            last[w.key] = w.value
        counts: dict[bytes, int] = {}
        if len(last) != len(writes):  # a key written twice: counted (else once each)
            for w in writes:
                counts[w.key] = counts.get(w.key, 0) + 1
        changes: dict[bytes, bytes | None] = {}
        known_by_hash: dict[bytes, bytes] = {}
        names: dict[bytes, bytes] = {}  # what a created key's leaf holds: its state key
        current: dict[bytes, bytes] = {}
        # node/proofs.py `value_hash`, with the part every write of the block shares joined once
        tagged = VALUE_HASH_TAG + _U64.pack(height)
        for key, value in last.items():
            kh = _sha256(key).digest()  # state_tree.key_hash
            old = known.get(key)
            if old is not None:
                known_by_hash[kh] = old
            version = versions[key] + (counts[key] if counts else 1)
            packed = version.to_bytes(_VERSION_BYTES, "big")
            if value is None:
                changes[kh] = None
                current[key] = packed  # pack_current(version, None)
            else:
                vh = _sha256(b"".join((tagged, packed, value))).digest()
                changes[kh] = vh
                names[kh] = key
                current[key] = packed + vh  # pack_current(version, vh)
        update = self.tree.update(prev, changes, height, known=known_by_hash, names=names)
        return update, current

    def _rebuild_tree(self, layout: bytes | None) -> None:
        """Store the tree in this release's layout, from the current state (a store whose
        tree an older release wrote: per version, or with leaves that held value hashes).

        The new tree's root must be the head's stored state root before the old
        layout's keys are deleted; an interrupted rebuild starts again at the next
        opening (the layout marker is written last)."""
        store = self.store
        head = store.head_height()
        log.warning(
            "the state tree is stored in an older layout (%s): rebuilding it, once, from "
            "the current state at height %d",
            "per version" if layout is None else layout.decode("ascii", "replace"), head,
        )  # fmt: skip
        started = time.monotonic()
        self._delete_meta_prefixes((state_tree.INTERNAL_PREFIX, state_tree.LEAF_PREFIX))
        # streamed in parts of TREE_REBUILD_KEYS keys, in state key order (so at random
        # places in the tree): memory is bounded by a part, not by the state's size
        root: state_tree.NodeRef | None = None
        count = 0
        changes: dict[bytes, bytes | None] = {}
        names: dict[bytes, bytes] = {}
        for skey in store.state_keys():
            rv = store.get_record(skey)
            if rv is not None and rv.value is not None:
                khash = state_tree.key_hash(skey)
                changes[khash] = value_hash(rv.height, rv.version, rv.value)
                names[khash] = skey
            if len(changes) >= TREE_REBUILD_KEYS:
                root = self._rebuild_part(root, changes, names, head)
                count += len(changes)
                changes, names = {}, {}
        if changes:
            root = self._rebuild_part(root, changes, names, head)
            count += len(changes)
        got = state_tree.EMPTY_ROOT if root is None else root.hash
        expected = store.get_meta(META_STATE_ROOT)
        if got != expected:
            raise StoreError(
                f"rebuilding the state tree from the current state gave root {got.hex()}, "
                f"but the store's state root at height {head} is "
                f"{expected.hex() if expected else None}: the store is damaged. Run "
                "`redwood repair --home DIR` to drop its data and sync again."
            )
        store.write_meta(
            {
                state_tree.root_key(head): state_tree.encode_root(root),
                TREE_TOP_KEY: _U64.pack(head),
                TREE_LAYOUT_KEY: TREE_LAYOUT,
            }
        )
        self._layout_unmarked = False
        self._delete_meta_prefixes(state_tree.LEGACY_PREFIXES)
        log.warning("state tree rebuilt: %d keys in %.1f s", count, time.monotonic() - started)

    def _rebuild_part(
        self,
        root: state_tree.NodeRef | None,
        changes: dict[bytes, bytes | None],
        names: dict[bytes, bytes],
        head: int,
    ) -> state_tree.NodeRef | None:
        """Add one part of the state to the tree being rebuilt, and write it."""
        update = self.tree.update(root, changes, head, names=names)
        meta: dict[bytes, bytes | None] = dict.fromkeys(update.deleted)
        meta.update(update.puts)
        self.store.write_meta(meta)
        self.tree.committed(update)
        return update.root

    def _recompute_top(self, head: int, stored: int | None) -> None:
        """Recompute and store the tree's top: the process that wrote the store stopped
        without writing the top it held (a crash, a kill), so the stored one is older.

        The rest of the tree is written with each block, so the top follows from it
        (`state_tree.top_levels`); its root must be the head's stored one."""
        store = self.store
        log.warning(
            "the state tree's top levels were last written at height %s, the store's head is "
            "%d (the node did not stop cleanly): recomputing them",
            stored, head,
        )  # fmt: skip
        started = time.monotonic()
        expected = self.root_ref_at(head)
        try:
            nodes, root = state_tree.top_levels(
                store.get_meta, store.meta_keys, head, _leaf_reader(store)
            )
        except state_tree.TreeError as exc:
            raise StoreError(f"the state tree is damaged: {exc}. {REPAIR_HINT}") from None
        if (None if root is None else (root.hash, root.is_leaf)) != (
            None if expected is None else (expected.hash, expected.is_leaf)
        ):
            got = None if root is None else root.hash.hex()
            raise StoreError(
                f"the state tree's top recomputed at height {head} has root {got}, but the "
                f"stored root is {None if expected is None else expected.hash.hex()}: the "
                f"store is damaged. {REPAIR_HINT}"
            )
        lo, hi = (
            state_tree.INTERNAL_PREFIX,
            state_tree.INTERNAL_PREFIX + bytes((state_tree.TOP_DEPTHS,)),
        )
        meta: dict[bytes, bytes | None] = dict.fromkeys(store.meta_keys(lo, hi))
        meta.update(nodes)
        meta[TREE_TOP_KEY] = _U64.pack(head)
        store.write_meta(meta)
        log.warning(
            "state tree top recomputed: %d nodes in %.2f s", len(nodes), time.monotonic() - started
        )

    def _set_top(self, top: dict[bytes, bytes | None]) -> None:
        self._top = top
        self._live.top = top

    def write_tree_top(self) -> None:
        """Write the tree's top held in memory (a clean stop), so that the next start has
        nothing to recompute. Call it when no block is being applied."""
        with self._tree_lock:
            if self._top:
                meta = dict(self._top)
                meta[TREE_TOP_KEY] = _U64.pack(self.store.head_height())
                self.store.write_meta(meta)
                self._set_top({})

    def _delete_meta_prefixes(self, prefixes: Sequence[bytes]) -> None:
        for prefix in prefixes:
            while keys := self.store.meta_keys(prefix, prefix_end(prefix), 10_000):
                self.store.write_meta(dict.fromkeys(keys))

    def apply_many(
        self, cbs: Sequence[CertifiedBlock], *, verify_signatures: bool = True
    ) -> list[Executed]:
        """`apply` each block in order; only the last write is synced.

        Each block is still its own atomic batch, so a crash leaves a whole
        prefix of them; the synced last write makes all of them durable (the
        LevelDB log is written in order). Blocks lost to a crash before that
        are committed blocks the node fetches again.
        """
        last = len(cbs) - 1
        return [
            self.apply(cb, verify_signatures=verify_signatures, sync=i == last)
            for i, cb in enumerate(cbs)
        ]

    def apply(
        self, cb: CertifiedBlock, *, verify_signatures: bool = True, sync: bool = True
    ) -> Executed:
        """Execute a committed block and commit it with its effects in one (synced) batch."""
        executed = self.execute(cb.block, verify_signatures=verify_signatures)
        self._add_epoch_proofs(cb, executed.meta)
        status = executed.tx_status
        height = cb.block.header.height
        # made before the commit: nothing may fail between the commit and holding its top
        # (a clean stop would write a top that misses this block's changes)
        if executed.top_written:
            top: dict[bytes, bytes | None] = {}
        else:
            top = {**self._top, **executed.top} if executed.top else self._top
        with self._tree_lock:
            self.store.commit_block(
                cb, executed.writes, executed.meta, status, sync=sync, versions=executed.versions,
                tx_hashes=executed.tx_hashes, first_seen=[s != _DUPLICATE for s in status],
            )  # fmt: skip
            self._set_top(top)
            # the tree of this height, for proofs while later blocks overwrite its nodes
            self._snapshots[height] = _TopOver(self.store.meta_snapshot(), top)
        self._snapshots.pop(height - self.tree_snapshots_kept, None)
        self.forget(executed.tx_hashes)
        if executed.current:
            self._remember_current(executed.current)
        if executed.tree_update is not None:
            started = time.thread_time()
            self.tree.committed(executed.tree_update)
            self.state_tree_cpu_s += time.thread_time() - started
        self._layout_unmarked = False
        if executed.gov is not None:
            self.gov = executed.gov
        return executed

    def _add_epoch_proofs(self, cb: CertifiedBlock, meta: dict[bytes, bytes | None]) -> None:
        """When `cb`'s header certifies a state holding a pending epoch record, keep its proof.

        The proof (node/proofs.py `epoch_change_json`) needs an old tree version,
        so it is made once, now, and kept in meta for every later bundle.
        """
        header = cb.block.header
        if header.is_null or not self.gov.epochs:
            return
        for epoch, first, ids in self.gov.epochs:
            if header.height >= first:
                continue  # too late: this header is signed by the new set
            if self.store.get_meta(epoch_proof_key(epoch)) is not None:
                continue
            rv = self.store.get_record(governance.epoch_key(epoch))
            if rv is None or rv.height > header.state_height:
                continue
            try:
                proof = self.prove_state(
                    header.state_height, state_tree.key_hash(governance.epoch_key(epoch))
                )
            except state_tree.TreeError:
                continue  # that height's tree is gone (a restart): a later header carries it
            doc = epoch_change_json(
                epoch, first, ids, rv.height, rv.version, proof, header, cb.certificate
            )
            meta[epoch_proof_key(epoch)] = json.dumps(doc, sort_keys=True).encode()

    def _screen(
        self,
        raws: Sequence[bytes],
        hashes: Sequence[bytes],
        cached: Sequence[Transaction | None],
        height: int,
    ) -> tuple[list[int], list[Transaction | None], list[int]]:
        """Every rule but unverified signatures: (status, decoded txs, indexes to verify)."""
        status = [int(Code.APPLIED)] * len(raws)
        txs: list[Transaction | None] = [None] * len(raws)
        unverified: list[int] = []
        seen: set[bytes] = set()
        has_tx = self.store.has_tx
        for i, raw in enumerate(raws):
            h = hashes[i]
            if h in seen or has_tx(h):
                status[i] = _DUPLICATE
                continue
            seen.add(h)
            tx = cached[i]
            if tx is None:
                try:
                    tx = decode_tx(raw)
                except DecodeError as exc:
                    status[i] = int(Code[_bad_encoding(raw, exc)[0].upper()])
                    continue
                unverified.append(i)
            problem = self._violation(tx, height)
            if problem is not None:
                status[i] = int(problem[0])
                continue
            txs[i] = tx
        self.signatures_skipped += sum(1 for tx in cached if tx is not None)
        return status, txs, [i for i in unverified if status[i] == Code.APPLIED]

    def _check_signatures(
        self,
        indexes: list[int],
        txs: list[Transaction | None],
        status: list[int],
        raws: Sequence[bytes],
    ) -> None:
        items = []
        for i in indexes:
            tx = txs[i]
            assert tx is not None
            items.append(self.signature_item(tx, raws[i]))
        results = self._verify_many(items)
        assert len(results) == len(items), "verify_many must answer every item"
        self.signatures_checked += len(items)
        for i, ok in zip(indexes, results, strict=True):
            if not ok:
                status[i] = _BAD_SIGNATURE

    def _violation(self, tx: Transaction, height: int) -> tuple[Code, str] | None:
        """The first stateless rule `tx` breaks if included at `height`, or None."""
        gov = self.gov
        if tx.op not in OPS and tx.op not in GOV_OPS:
            return (
                Code.BAD_OP,
                f"unknown op {tx.op!r} (expected put, delete, gov.propose, gov.approve)",
            )
        if tx.op == "delete" and tx.value:
            return Code.BAD_OP, "a delete carries no value"
        agency = gov.agency(tx.agency)
        if agency is None:
            return Code.UNKNOWN_AGENCY, f"no agency {tx.agency!r}"
        if gov.agency_of_member(tx.sender) != tx.agency:
            return Code.NOT_A_MEMBER, f"sender is not a member of agency {tx.agency!r}"
        if tx.op in GOV_OPS:
            try:
                if tx.op == governance.OP_PROPOSE:
                    governance.decode_action(tx.value)
                else:
                    governance.decode_approval(tx.value)
            except GovError as exc:
                return Code.BAD_OP, str(exc)
        if not 1 <= len(tx.key) <= MAX_RECORD_KEY_BYTES:
            return Code.KEY_TOO_LARGE, f"record key must be 1 to {MAX_RECORD_KEY_BYTES} bytes"
        value_max, ttl_max = gov.params.record_value_bytes_max, gov.params.tx_ttl_blocks_max
        if len(tx.value) > value_max:
            return (Code.VALUE_TOO_LARGE, f"value of {len(tx.value)} bytes exceeds {value_max}")
        if tx.valid_until < height:
            return Code.EXPIRED, f"valid until height {tx.valid_until}, now {height}"
        if tx.valid_until > height + ttl_max:
            return (
                Code.TTL_TOO_LONG,
                f"valid_until {tx.valid_until} is more than {ttl_max} blocks after {height}",
            )
        return None

    # -- state -------------------------------------------------------------------

    def state_root(self) -> bytes:
        """The state root after the store's head."""
        return self._current_root(self.store.head_height())

    def state_root_at(self, height: int) -> bytes | None:
        """The state root after `height` (None if that height is not executed here)."""
        if height == 0:
            return self.genesis_root
        return self.store.get_meta(root_meta_key(height))

    def tx_count(self) -> int:
        """Applied transactions committed so far."""
        raw = self.store.get_meta(META_TX_COUNT)
        return 0 if raw is None else _U64.unpack(raw)[0]

    def root_ref_at(self, height: int) -> state_tree.NodeRef | None:
        """The state tree's root reference after `height` (None: the empty tree)."""
        if height == 0:
            return None
        raw = self.store.get_meta(state_tree.root_key(height))
        if raw is None:
            raise StoreError(f"no state tree root for height {height} (pruned or not executed)")
        return state_tree.decode_root(raw)

    def prove_state(self, height: int, khash: bytes) -> state_tree.Proof:
        """Merkle proof of `khash` (value or absence) in the state after `height`.

        The store holds the newest tree only (by position), so the tree of an older
        height is read from the LevelDB snapshot taken when that height committed
        (kept `tree_snapshots_kept` heights), or from a snapshot of now when no
        block since has changed the root. TreeError when neither is possible (a
        height older than that, or one from before this process started)."""
        snap = self._snapshots.get(height)
        if snap is None:
            with self._tree_lock:
                snap = _TopOver(self.store.meta_snapshot(), self._top)
            if height != 0 and snap.get_meta(META_STATE_ROOT) != self.state_root_at(height):
                raise state_tree.TreeError(
                    f"the state tree of height {height} is no longer stored here"
                )
        raw = snap.get_meta(state_tree.root_key(height)) if height else None
        if height and raw is None:
            raise state_tree.TreeError(f"no state tree root for height {height}")
        root = None if raw is None else state_tree.decode_root(raw)
        return _tree_over(snap, cache_nodes_max=1).prove(root, khash)

    def proposal(self, pid: int) -> governance.Proposal | None:
        rv = self.store.get_record(governance.proposal_key(pid))
        if rv is None or rv.value is None:
            return None
        return governance.Proposal.decode(rv.value)

    def proposals(self, limit: int = 100) -> list[governance.Proposal]:
        """The newest proposals first, at most `limit`."""
        out = []
        for pid in range(self.gov.next_id - 1, 0, -1):
            p = self.proposal(pid)
            if p is not None:
                out.append(p)
            if len(out) >= limit:
                break
        return out

    def epochs(self) -> list[tuple[int, Any]]:
        """(first height, consensus ValidatorSet) of every epoch, genesis first (for the replica)."""
        from consensus.validators import ValidatorSet

        out: list[tuple[int, Any]] = [(1, ValidatorSet(0, self.genesis.node_ids()))]
        for epoch, first, ids in self.gov.epochs:
            out.append((first, ValidatorSet(epoch, ids)))
        return out

    def _load_gov(self) -> GovState:
        """Governance state committed in the store (genesis overlaid with `gov/` entries)."""
        state = GovState.from_genesis(self.genesis)
        get = self.store.get_record
        raw = {k: get(k) for k in (
            governance.KEY_AGENCIES, governance.KEY_VALIDATORS, governance.KEY_PARAMS,
            governance.KEY_NEXT_ID,
        )}  # fmt: skip
        changes: dict[str, Any] = {}
        if raw[governance.KEY_AGENCIES] is not None:
            changes["agencies"] = GovState.decode_agencies(raw[governance.KEY_AGENCIES].value)
        if raw[governance.KEY_VALIDATORS] is not None:
            changes["validators"] = GovState.decode_validators(raw[governance.KEY_VALIDATORS].value)
        if raw[governance.KEY_PARAMS] is not None:
            changes["params"] = GovState.decode_params(raw[governance.KEY_PARAMS].value)
        if raw[governance.KEY_NEXT_ID] is not None:
            changes["next_id"] = _U64.unpack(raw[governance.KEY_NEXT_ID].value)[0]
        epochs = []
        e = 1
        while (rv := get(governance.epoch_key(e))) is not None and rv.value is not None:
            epochs.append(governance.decode_epoch(rv.value))
            e += 1
        if epochs:
            changes["epochs"] = tuple(epochs)
        return dataclasses.replace(state, **changes) if changes else state

    def _current_root(self, head: int) -> bytes:
        if head == 0:
            return self.genesis_root
        root = self.store.get_meta(META_STATE_ROOT)
        if root is None:
            raise StoreError(
                f"store has blocks up to {head} but no application state root; "
                "it was not written by this application"
            )
        return root


class _TopOver:
    """A store, or a snapshot of one, read with the tree's top held in memory over it
    (`Application._top`: None for a node removed since the store last got the top)."""

    __slots__ = ("reader", "top")

    def __init__(self, reader: Any, top: dict[bytes, bytes | None]) -> None:
        self.reader = reader
        self.top = top

    def get_meta(self, key: bytes) -> bytes | None:
        top = self.top
        if key in top:
            return top[key]
        value: bytes | None = self.reader.get_meta(key)
        return value

    def meta_keys(self, start: bytes, stop: bytes, limit: int = 1_000_000) -> list[bytes]:
        keys: list[bytes] = self.reader.meta_keys(start, stop, limit)
        return keys

    def get_record(self, key: bytes) -> Any:
        return self.reader.get_record(key)


def _tree_over(reader: Any, cache_nodes_max: int = state_tree.NODE_CACHE_MAX) -> Any:
    """A state tree reading through `reader`'s `get_meta`, `meta_keys` and `get_record`
    (a store or a snapshot of one); a leaf's slot holds one key, a few to spare for a
    damaged store."""
    return state_tree.StateTree(
        reader.get_meta,
        cache_nodes_max=cache_nodes_max,
        keys=lambda lo, hi: reader.meta_keys(lo, hi, 16),
        leaf=_leaf_reader(reader),
    )


def _leaf_reader(reader: Any) -> Callable[[bytes], bytes | None]:
    """The tree's leaves as `reader` (a store or a snapshot of one) holds them: a leaf
    stores its state key, and the key's current record gives the value hash.

    Returns a function of a leaf's storage key -> key hash + value hash (None: no leaf),
    TreeError for a leaf that names another key or a key without a value."""
    get_meta, get_record = reader.get_meta, reader.get_record
    skip = len(state_tree.LEAF_PREFIX)

    def leaf(key: bytes) -> bytes | None:
        name = get_meta(key)
        if name is None:
            return None
        name = bytes(name)
        khash = key[skip:]
        if _sha256(name).digest() != khash:
            raise state_tree.TreeError(
                f"state tree leaf {khash.hex()} holds another key (corrupt store)"
            )
        rv = get_record(name)
        if rv is None or rv.value is None:
            raise state_tree.TreeError(
                f"state tree leaf {khash.hex()} holds a key without a value (corrupt store)"
            )
        return khash + value_hash(rv.height, rv.version, rv.value)

    return leaf


def _written_value(tx: Transaction) -> bytes | None:
    return tx.value if tx.op == "put" else None


def _cache_size(tx: Transaction) -> int:
    return len(tx.key) + len(tx.value) + CACHE_ENTRY_OVERHEAD_BYTES


def _bad_encoding(tx_bytes: bytes, exc: DecodeError) -> tuple[str, str]:
    """Name the problem of undecodable bytes, refining the wire limits into app codes.

    The wire format bounds record keys and values, so a too-large key fails to
    decode at all; a client deserves `key_too_large` rather than `bad_encoding`.
    """
    try:
        raw = codec.unpack(tx_bytes, MAX_TX_BYTES)
    except DecodeError:
        return "bad_encoding", str(exc)
    envelope = [codec.FORMAT_VERSION, TX_MESSAGE_TAG]
    body = raw[2] if type(raw) is list and len(raw) == 3 and raw[:2] == envelope else None
    if type(body) is list and len(body) == len(codec.schema(Transaction)):
        key, value = body[5], body[6]
        if type(key) is bytes and len(key) > MAX_RECORD_KEY_BYTES:
            return "key_too_large", f"record key of {len(key)} bytes exceeds {MAX_RECORD_KEY_BYTES}"
        if type(value) is bytes and len(value) > MAX_TX_VALUE_BYTES:
            return "value_too_large", f"value of {len(value)} bytes exceeds {MAX_TX_VALUE_BYTES}"
    return "bad_encoding", str(exc)
