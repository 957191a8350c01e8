"""The protocol's data: transactions, blocks, PBFT messages, certificates, evidence.

Field names follow the PBFT paper (Castro & Liskov, OSDI '99): *view*, the
sequence number is the block *height*, *digest* is a block hash, *replica* is
the sender's node id (its Ed25519 public key).

All types are frozen, slotted dataclasses with a wire kind per field (see
`consensus.codec`). Signed types end in a `signature` field; the signature
covers the domain tag of the type, the chain id and the canonical encoding of
every other field (`signed_payload`).

Chain shape
-----------
Heights start at 1; height 0 is genesis. Block h's header carries
`parent_hash` (hash of block h-1's header; the replica checks the link before
it commits) and the state root *after* height `state_height` =
max(0, h - pipeline_depth): with `pipeline_depth` heights in flight, that is
the newest state every correct replica has executed when h is proposed. So the
state after height s is certified by the commit certificate of block
s + pipeline_depth. Null blocks (filling gaps after a view change) carry no
state claim: `state_root` is ZERO_HASH.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from consensus import codec
from consensus.codec import (
    HASH,
    PUBKEY,
    SIGNATURE,
    U64,
    Bytes,
    ListOf,
    Str,
    Struct,
    message,
    wire,
)
from consensus.crypto import ZERO_HASH, Domain, sha256

MAX_CHAIN_ID_CHARS = 64
MAX_AGENCY_CHARS = 64
MAX_OP_CHARS = 32
MAX_RECORD_KEY_BYTES = 256
MAX_TX_VALUE_BYTES = 1024 * 1024  # hard wire limit; genesis sets a lower app limit
MAX_TX_BYTES = MAX_TX_VALUE_BYTES + 4096
MAX_BLOCK_TXS = 100_000
MAX_VALIDATORS = 256
MAX_CHECKPOINT_PROOF = MAX_VALIDATORS
MAX_PREPARED_IN_VIEW_CHANGE = 1024
MAX_CERTIFIED_BLOCKS_IN_RESPONSE = 1024
MAX_EVIDENCE_VOTES = 2


def signed_payload(obj: Any) -> bytes:
    """Canonical bytes of every field but the trailing `signature`."""
    raw = codec.to_raw(obj)
    assert codec.schema(type(obj))[-1][0] == "signature"
    return codec.pack(raw[:-1])


# -- transactions ------------------------------------------------------------


@message(1)
@dataclass(frozen=True, slots=True)
class Transaction:
    """A client's signed request. Consensus never looks inside one.

    `op` names what the application does ("put", "delete", governance ops);
    `agency` is the namespace; `nonce` makes otherwise equal requests
    distinct; `valid_until` is the last height at which the transaction may
    be included (the replay rule lives in the application: a transaction
    hash is committed at most once, and only before it expires).
    """

    sender: bytes = wire(PUBKEY)
    nonce: int = wire(U64)
    valid_until: int = wire(U64)
    op: str = wire(Str(MAX_OP_CHARS))
    agency: str = wire(Str(MAX_AGENCY_CHARS))
    key: bytes = wire(Bytes(max_len=MAX_RECORD_KEY_BYTES))
    value: bytes = wire(Bytes(max_len=MAX_TX_VALUE_BYTES))
    signature: bytes = wire(SIGNATURE)

    DOMAIN = Domain.TX


def tx_hash(tx_bytes: bytes) -> bytes:
    """A transaction's identity: SHA-256 of its canonical encoding."""
    return sha256(tx_bytes)


# -- blocks ------------------------------------------------------------------


@message(2)
@dataclass(frozen=True, slots=True)
class BlockHeader:
    chain_id: str = wire(Str(MAX_CHAIN_ID_CHARS))
    height: int = wire(U64)
    view: int = wire(U64)
    epoch: int = wire(U64)
    parent_hash: bytes = wire(HASH)
    tx_root: bytes = wire(HASH)
    tx_count: int = wire(U64)
    state_height: int = wire(U64)
    state_root: bytes = wire(HASH)
    proposer: bytes = wire(PUBKEY)
    timestamp_ms: int = wire(U64)
    validator_set_hash: bytes = wire(HASH)

    def hash(self) -> bytes:
        return sha256(codec.encode_body(self))

    @property
    def is_null(self) -> bool:
        return self.tx_count == 0 and self.state_root == ZERO_HASH


@message(3)
@dataclass(frozen=True, slots=True)
class Block:
    """A header and the canonical bytes of its transactions, in order."""

    header: BlockHeader = wire(Struct(BlockHeader))  # noqa: RUF009
    txs: tuple[bytes, ...] = wire(ListOf(Bytes(max_len=MAX_TX_BYTES), MAX_BLOCK_TXS))

    def hash(self) -> bytes:
        return self.header.hash()

    @property
    def height(self) -> int:
        return self.header.height


# -- PBFT messages -------------------------------------------------------------


@message(10)
@dataclass(frozen=True, slots=True)
class PrePrepare:
    """<PRE-PREPARE, v, n, d> with the block itself (PBFT §4.2)."""

    view: int = wire(U64)
    height: int = wire(U64)
    block: Block = wire(Struct(Block))  # noqa: RUF009
    replica: bytes = wire(PUBKEY)
    signature: bytes = wire(SIGNATURE)

    DOMAIN = Domain.PRE_PREPARE

    @property
    def digest(self) -> bytes:
        return self.block.hash()


@message(11)
@dataclass(frozen=True, slots=True)
class Prepare:
    """<PREPARE, v, n, d, i> (PBFT §4.2)."""

    view: int = wire(U64)
    height: int = wire(U64)
    digest: bytes = wire(HASH)
    replica: bytes = wire(PUBKEY)
    signature: bytes = wire(SIGNATURE)

    DOMAIN = Domain.PREPARE


@message(12)
@dataclass(frozen=True, slots=True)
class Commit:
    """<COMMIT, v, n, d, i> (PBFT §4.2). q of them form a commit certificate."""

    view: int = wire(U64)
    height: int = wire(U64)
    digest: bytes = wire(HASH)
    replica: bytes = wire(PUBKEY)
    signature: bytes = wire(SIGNATURE)

    DOMAIN = Domain.COMMIT


@message(13)
@dataclass(frozen=True, slots=True)
class Checkpoint:
    """<CHECKPOINT, n, d, i> (PBFT §4.3): d is the state root after height n."""

    height: int = wire(U64)
    state_root: bytes = wire(HASH)
    replica: bytes = wire(PUBKEY)
    signature: bytes = wire(SIGNATURE)

    DOMAIN = Domain.CHECKPOINT


@dataclass(frozen=True, slots=True)
class PreparedCertificate:
    """P_m of PBFT §4.4: a pre-prepare and q-1 matching prepares from others."""

    pre_prepare: PrePrepare = wire(Struct(PrePrepare))  # noqa: RUF009
    prepares: tuple[Prepare, ...] = wire(ListOf(Struct(Prepare), MAX_VALIDATORS))


@message(14)
@dataclass(frozen=True, slots=True)
class ViewChange:
    """<VIEW-CHANGE, v+1, n, C, P, i> (PBFT §4.4).

    `stable_height` is n, `checkpoint_proof` is C (q checkpoints for n, empty
    when n is genesis), `prepared` is P for heights above n.
    """

    new_view: int = wire(U64)
    stable_height: int = wire(U64)
    checkpoint_proof: tuple[Checkpoint, ...] = wire(
        ListOf(Struct(Checkpoint), MAX_CHECKPOINT_PROOF)
    )
    prepared: tuple[PreparedCertificate, ...] = wire(
        ListOf(Struct(PreparedCertificate), MAX_PREPARED_IN_VIEW_CHANGE)
    )
    replica: bytes = wire(PUBKEY)
    signature: bytes = wire(SIGNATURE)

    DOMAIN = Domain.VIEW_CHANGE


@message(15)
@dataclass(frozen=True, slots=True)
class NewView:
    """<NEW-VIEW, v+1, V, O> (PBFT §4.4): O is re-derived by every backup."""

    view: int = wire(U64)
    view_changes: tuple[ViewChange, ...] = wire(ListOf(Struct(ViewChange), MAX_VALIDATORS))
    pre_prepares: tuple[PrePrepare, ...] = wire(
        ListOf(Struct(PrePrepare), MAX_PREPARED_IN_VIEW_CHANGE)
    )
    replica: bytes = wire(PUBKEY)
    signature: bytes = wire(SIGNATURE)

    DOMAIN = Domain.NEW_VIEW


# -- certificates, catch-up, evidence ------------------------------------------


@dataclass(frozen=True, slots=True)
class CommitSignature:
    replica: bytes = wire(PUBKEY)
    signature: bytes = wire(SIGNATURE)


@message(20)
@dataclass(frozen=True, slots=True)
class CommitCertificate:
    """q COMMIT signatures for (view, height, digest), under validator-set `epoch`.

    Each signature is a `Commit` signature, so a certificate is checked by
    rebuilding each `Commit(view, height, digest, replica)` and verifying it.
    """

    view: int = wire(U64)
    height: int = wire(U64)
    digest: bytes = wire(HASH)
    epoch: int = wire(U64)
    signatures: tuple[CommitSignature, ...] = wire(ListOf(Struct(CommitSignature), MAX_VALIDATORS))


@message(21)
@dataclass(frozen=True, slots=True)
class CertifiedBlock:
    """A committed block with the certificate that commits it (catch-up, storage)."""

    block: Block = wire(Struct(Block))  # noqa: RUF009
    certificate: CommitCertificate = wire(Struct(CommitCertificate))  # noqa: RUF009


@message(22)
@dataclass(frozen=True, slots=True)
class BlockRequest:
    """Ask a peer for committed blocks `from_height`..`to_height` inclusive."""

    from_height: int = wire(U64)
    to_height: int = wire(U64)


@message(23)
@dataclass(frozen=True, slots=True)
class BlockResponse:
    blocks: tuple[CertifiedBlock, ...] = wire(
        ListOf(Struct(CertifiedBlock), MAX_CERTIFIED_BLOCKS_IN_RESPONSE)
    )


@message(24)
@dataclass(frozen=True, slots=True)
class StatusAnnouncement:
    """A replica's committed height and view, so that peers can tell they are behind."""

    height: int = wire(U64)
    view: int = wire(U64)
    replica: bytes = wire(PUBKEY)


class VoteKind(IntEnum):
    PRE_PREPARE = 1
    PREPARE = 2
    COMMIT = 3


@message(30)
@dataclass(frozen=True, slots=True)
class Evidence:
    """Two conflicting signed votes by one validator for one (view, height, phase).

    Each vote is the canonical encoding of a signed `PrePrepare` (header only
    matters), `Prepare` or `Commit`; anyone can re-check both signatures.
    """

    kind: int = wire(U64)
    replica: bytes = wire(PUBKEY)
    view: int = wire(U64)
    height: int = wire(U64)
    first: bytes = wire(Bytes(max_len=codec.MAX_MESSAGE_BYTES))
    second: bytes = wire(Bytes(max_len=codec.MAX_MESSAGE_BYTES))


# -- the replica's own durable record ------------------------------------------


@message(40)
@dataclass(frozen=True, slots=True)
class SignedVote:
    """Journal record: the last vote this replica signed for (view, height, phase).

    Written (synced) before the vote leaves; after a crash the replica refuses
    to sign a different digest for the same (view, height, phase).
    """

    kind: int = wire(U64)
    view: int = wire(U64)
    height: int = wire(U64)
    digest: bytes = wire(HASH)


@message(41)
@dataclass(frozen=True, slots=True)
class ViewRecord:
    """Journal record: the highest view this replica has entered or voted to change to."""

    view: int = wire(U64)


Message = PrePrepare | Prepare | Commit | Checkpoint | ViewChange | NewView
