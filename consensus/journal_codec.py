"""The replica's durable journal: keys and record encodings.

Everything the replica must remember across a crash leaves it as
`Ready.persist` records (key -> value, None deletes), which the node writes
with a synced write *before* it sends that Ready's messages. At start the
node hands the records back (`Restored.journal`) and `load` rebuilds:

- ``v/entered``  ViewRecord: the highest view entered;
- ``v/changing`` ViewRecord: the highest view this replica sent a VIEW-CHANGE
  for (it never again signs a PREPARE/COMMIT in a lower view);
- ``vote/<kind><view><height>`` SignedVote: the digest it signed for that
  (view, height, phase); it never signs a different one (no equivocation);
- ``pc/<height>`` PreparedCertificate: what it must report in a VIEW-CHANGE
  for each height it sent a COMMIT for, so a committed block survives any
  number of crashes of the replicas that committed it;
- ``stable``: the stable checkpoint and its proof (q CHECKPOINTs);
- ``ck/<height>``: its own checkpoint at `height` (state root, block hash,
  timestamp), so it can anchor a NEW-VIEW at that height after a restart.

Integers in keys are 8-byte big-endian, so records sort by height.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from consensus import codec
from consensus.types import (
    Block,
    Checkpoint,
    PreparedCertificate,
    SignedVote,
    ViewRecord,
)

ENTERED_KEY = b"v/entered"
CHANGING_KEY = b"v/changing"
STABLE_KEY = b"stable"
VOTE_PREFIX = b"vote/"
PREPARED_PREFIX = b"pc/"
CHECKPOINT_PREFIX = b"ck/"


class JournalError(Exception):
    """The journal handed back at start is not one this replica wrote (corrupt disk?)."""


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def vote_key(kind: int, view: int, height: int) -> bytes:
    return VOTE_PREFIX + bytes([kind]) + _u64(view) + _u64(height)


def prepared_key(height: int) -> bytes:
    return PREPARED_PREFIX + _u64(height)


def checkpoint_key(height: int) -> bytes:
    return CHECKPOINT_PREFIX + _u64(height)


def encode_view(view: int) -> bytes:
    return codec.encode(ViewRecord(view))


def encode_vote(kind: int, view: int, height: int, digest: bytes) -> bytes:
    return codec.encode(SignedVote(kind, view, height, digest))


def encode_prepared(pc: PreparedCertificate) -> bytes:
    return codec.encode_body(pc)


# A ``pc/`` record whose block has committed holds the same transactions as the
# block record, which stays in the same store for as long as the journal does.
# The store rewrites such a record without them in the block's own commit batch
# (`elide_prepared`) and puts them back when the journal is read at start
# (`restore_prepared`), so the replica always gets the bytes it wrote, and the
# transactions are not carried through LevelDB's compactions twice until the
# stable checkpoint deletes the record. An elided record starts with this tag; a
# full one starts with a msgpack array header, never 0x00.
ELIDED_TAG = b"\x00redwood/pc-elided/v1\x00"


def elide_prepared(value: bytes, block: Block) -> bytes | None:
    """`value` (an `encode_prepared` record) without its block's transactions when it is
    the prepared certificate of exactly `block`; None when it is not (or is elided
    already, or does not decode): such a record is left as it is."""
    if value.startswith(ELIDED_TAG):
        return None
    try:
        pc = codec.decode_body(PreparedCertificate, value)
    except codec.DecodeError:
        return None
    pp = pc.pre_prepare
    if pp.height != block.height or pp.block.hash() != block.hash() or pp.block.txs != block.txs:
        return None
    stub = replace(pc, pre_prepare=replace(pp, block=Block(pp.block.header, ())))
    return ELIDED_TAG + codec.encode_body(stub)


def restore_prepared(value: bytes, block_at: Callable[[int], Block | None]) -> bytes:
    """The `encode_prepared` record that `elide_prepared` made `value` from, with the
    transactions of the committed block `block_at(height)`; `value` if it is not an
    elided record. JournalError when that block is missing or is another block."""
    if not value.startswith(ELIDED_TAG):
        return value
    try:
        stub = codec.decode_body(PreparedCertificate, value[len(ELIDED_TAG) :])
    except codec.DecodeError as exc:
        raise JournalError(f"an elided prepared certificate does not decode: {exc}") from None
    pp = stub.pre_prepare
    block = block_at(pp.height)
    if block is None or block.hash() != pp.block.hash() or pp.block.txs:
        raise JournalError(
            f"the prepared certificate of height {pp.height} refers to a committed block "
            "the store does not hold"
        )
    full = replace(stub, pre_prepare=replace(pp, block=Block(pp.block.header, block.txs)))
    return codec.encode_body(full)


def encode_stable(height: int, root: bytes, proof: tuple[Checkpoint, ...]) -> bytes:
    return codec.pack([height, root, [codec.encode(c) for c in proof]])


@dataclass(frozen=True, slots=True)
class OwnCheckpoint:
    state_root: bytes
    block_hash: bytes
    timestamp_ms: int


def encode_own_checkpoint(own: OwnCheckpoint) -> bytes:
    return codec.pack([own.state_root, own.block_hash, own.timestamp_ms])


@dataclass(slots=True)
class Loaded:
    entered_view: int = 0
    changing_view: int = 0
    votes: dict[tuple[int, int, int], bytes] = field(default_factory=dict)
    prepared: dict[int, PreparedCertificate] = field(default_factory=dict)
    stable: tuple[int, bytes, tuple[Checkpoint, ...]] | None = None
    own_checkpoints: dict[int, OwnCheckpoint] = field(default_factory=dict)


def load(journal: dict[bytes, bytes]) -> Loaded:
    """Rebuild the replica's durable memory; JournalError names the bad record."""
    out = Loaded()
    for key, value in journal.items():
        try:
            _load_one(out, key, value)
        except (codec.DecodeError, ValueError, TypeError, IndexError) as exc:
            raise JournalError(f"journal record {key!r} is unreadable: {exc}") from None
    return out


def _load_one(out: Loaded, key: bytes, value: bytes) -> None:
    if key == ENTERED_KEY:
        out.entered_view = codec.decode(value, ViewRecord).view
    elif key == CHANGING_KEY:
        out.changing_view = codec.decode(value, ViewRecord).view
    elif key.startswith(VOTE_PREFIX):
        vote = codec.decode(value, SignedVote)
        out.votes[(vote.kind, vote.view, vote.height)] = vote.digest
    elif key.startswith(PREPARED_PREFIX):
        pc = codec.decode_body(PreparedCertificate, value)
        out.prepared[pc.pre_prepare.height] = pc
    elif key == STABLE_KEY:
        height, root, proof = codec.unpack(value)
        checkpoints = tuple(codec.decode(c, Checkpoint) for c in proof)
        if type(height) is not int or type(root) is not bytes:
            raise ValueError("stable record has the wrong shape")
        out.stable = (height, root, checkpoints)
    elif key.startswith(CHECKPOINT_PREFIX):
        root, block_hash, ts = codec.unpack(value)
        height = int.from_bytes(key[len(CHECKPOINT_PREFIX) :], "big")
        out.own_checkpoints[height] = OwnCheckpoint(root, block_hash, ts)
    # unknown keys belong to a newer version of this module: ignore them
