"""Signing and checking PBFT messages and the certificates built from them.

Pure functions over `consensus.types`: each check returns `None` when the
object is valid, or a short reason (a `dropped` counter key) when it is not.
They never raise on peer input. The replica uses them for everything a peer
hands it; the node can use `verify_certified_block` to check a block served by
a peer or read back from disk.

Certificates (PBFT §4.2-4.4):

- a *commit certificate* is q COMMIT signatures for one (view, height, digest)
  from distinct validators of the epoch in force at that height;
- a *prepared certificate* is a PRE-PREPARE signed by the primary of its view
  and q-1 matching PREPAREs from distinct other validators;
- a *checkpoint proof* is q CHECKPOINTs for one (height, state root).

A block's `tx_root` is `merkle.root(block.txs)`: the leaves are the
transactions' canonical bytes (not their hashes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

from consensus import merkle
from consensus.crypto import SIGNATURE_BYTES, ZERO_HASH, Verifier
from consensus.types import (
    Block,
    BlockHeader,
    CertifiedBlock,
    Checkpoint,
    Commit,
    CommitCertificate,
    PreparedCertificate,
    PrePrepare,
    signed_payload,
)
from consensus.validators import ValidatorSet

T = TypeVar("T")
NO_SIGNATURE = bytes(SIGNATURE_BYTES)


class Signer(Protocol):
    """What the replica signs with (`consensus.crypto.SigningKey` or a test fake)."""

    @property
    def public(self) -> bytes: ...

    def sign(self, domain: str, chain_id: str, payload: bytes) -> bytes: ...


def sign(signer: Signer, chain_id: str, unsigned: T) -> T:
    """`unsigned` (its `signature` field a placeholder) with a real signature."""
    domain: str = unsigned.DOMAIN  # type: ignore[attr-defined]
    signature = signer.sign(domain, chain_id, signed_payload(unsigned))
    return dataclasses.replace(unsigned, signature=signature)  # type: ignore[type-var]


def signature_ok(verifier: Verifier, chain_id: str, msg: Any) -> bool:
    """True when `msg.signature` is `msg.replica`'s signature of `msg`."""
    try:
        payload = signed_payload(msg)
    except (TypeError, ValueError):
        return False
    return verifier.verify(msg.replica, msg.signature, msg.DOMAIN, chain_id, payload)


# -- blocks ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class BlockLimits:
    chain_id: str
    pipeline_depth: int
    block_txs_max: int
    block_bytes_max: int


def state_height(height: int, pipeline_depth: int) -> int:
    """The height whose resulting state block `height` claims (types.py, "Chain shape")."""
    return max(0, height - pipeline_depth)


def check_header(hd: BlockHeader, limits: BlockLimits, vset: ValidatorSet) -> str | None:
    """Everything about a header that needs no chain context. None = fine."""
    if hd.chain_id != limits.chain_id:
        return "wrong_chain"
    if hd.height < 1:
        return "bad_height"
    if hd.epoch != vset.epoch or hd.validator_set_hash != vset.hash():
        return "wrong_epoch"
    if hd.state_height != state_height(hd.height, limits.pipeline_depth):
        return "bad_state_height"
    if hd.tx_count > limits.block_txs_max:
        return "block_too_many_txs"
    return None


def check_block(block: Block, limits: BlockLimits, vset: ValidatorSet) -> str | None:
    """Everything about a block that needs no chain context. None = fine."""
    hd = block.header
    bad = check_header(hd, limits, vset)
    if bad is not None:
        return bad
    if hd.tx_count != len(block.txs):
        return "bad_tx_count"
    if len(block.txs) > limits.block_txs_max:
        return "block_too_many_txs"
    if sum(len(tx) for tx in block.txs) > limits.block_bytes_max:
        return "block_too_large"
    if hd.state_root == ZERO_HASH and block.txs:
        return "null_block_with_txs"
    if hd.tx_root != merkle.root(block.txs):
        return "bad_tx_root"
    return None


def is_stripped(block: Block) -> bool:
    """A header travelling without its transactions (see `strip`)."""
    return len(block.txs) != block.header.tx_count


def strip(block: Block) -> Block:
    """The block without its transactions: what VIEW-CHANGE and NEW-VIEW carry for
    heights the sender has committed (anyone behind fetches them with their
    certificate), so that view-change messages stay small under load."""
    return Block(block.header, ()) if block.txs else block


def may_strip(vset: ValidatorSet) -> bool:
    """Stripped certificates rest on their PREPAREs alone: q-1 of them must include a
    correct replica, which only prepares what the primary really proposed."""
    return vset.quorum - 1 >= vset.f + 1


def null_header(
    limits: BlockLimits,
    vset: ValidatorSet,
    view: int,
    height: int,
    parent_hash: bytes,
    parent_timestamp_ms: int,
) -> BlockHeader:
    """The one possible null block at `height` in new view `view` (PBFT §4.4 "null request")."""
    return BlockHeader(
        chain_id=limits.chain_id,
        height=height,
        view=view,
        epoch=vset.epoch,
        parent_hash=parent_hash,
        tx_root=merkle.EMPTY_ROOT,
        tx_count=0,
        state_height=state_height(height, limits.pipeline_depth),
        state_root=ZERO_HASH,
        proposer=vset.primary(view),
        timestamp_ms=parent_timestamp_ms,
        validator_set_hash=vset.hash(),
    )


# -- certificates -------------------------------------------------------------------


def _distinct_valid(
    items: Iterable[T], vset: ValidatorSet, who: Callable[[T], bytes], valid: Callable[[T], bool]
) -> int:
    """How many items come from distinct members of `vset` and pass `valid`."""
    seen: set[bytes] = set()
    for item in items:
        node = who(item)
        if node in seen or node not in vset:
            continue
        if valid(item):
            seen.add(node)
    return len(seen)


def verify_commit_certificate(
    cert: CommitCertificate, digest: bytes, height: int, vset: ValidatorSet,
    chain_id: str, verifier: Verifier,
) -> str | None:  # fmt: skip
    """q valid COMMIT signatures for (cert.view, height, digest) under `vset` (PBFT §4.2)."""
    if cert.height != height or cert.digest != digest:
        return "certificate_mismatch"
    if cert.epoch != vset.epoch:
        return "certificate_wrong_epoch"
    if len(cert.signatures) > vset.n:
        return "certificate_too_many_signatures"

    def valid(sig: Any) -> bool:
        vote = Commit(cert.view, height, digest, sig.replica, sig.signature)
        return signature_ok(verifier, chain_id, vote)

    if _distinct_valid(cert.signatures, vset, lambda s: s.replica, valid) < vset.quorum:
        return "certificate_bad_signatures"
    return None


def verify_certified_block(
    cb: CertifiedBlock, limits: BlockLimits, vset: ValidatorSet, verifier: Verifier
) -> str | None:
    """A committed block as served by a peer: its content and its certificate."""
    bad = check_block(cb.block, limits, vset)
    if bad is not None:
        return bad
    return verify_commit_certificate(
        cb.certificate, cb.block.hash(), cb.block.height, vset, limits.chain_id, verifier
    )


def verify_prepared_certificate(
    pc: PreparedCertificate, limits: BlockLimits, vset: ValidatorSet, verifier: Verifier
) -> str | None:
    """P_m of PBFT §4.4: a signed PRE-PREPARE of the view's primary and q-1 matching PREPAREs.

    A stripped certificate (the block without its transactions, `strip`) has no
    checkable PRE-PREPARE signature; its q-1 PREPAREs from distinct backups stand
    for it (`may_strip`): two certificates for different digests at one (view,
    height) would need a correct backup to prepare both, as with full ones.
    """
    pp = pc.pre_prepare
    if pp.replica != vset.primary(pp.view) or pp.height != pp.block.height:
        return "prepared_bad_pre_prepare"
    if pp.block.header.view > pp.view:
        return "prepared_bad_pre_prepare"
    if len(pc.prepares) > vset.n:
        return "prepared_too_many_prepares"
    if is_stripped(pp.block):
        if pp.block.txs or not may_strip(vset):
            return "prepared_bad_pre_prepare"
        bad = check_header(pp.block.header, limits, vset)
        if bad is not None:
            return bad
    else:
        bad = check_block(pp.block, limits, vset)
        if bad is not None:
            return bad
        if not signature_ok(verifier, limits.chain_id, pp):
            return "prepared_bad_signature"
    digest = pp.digest

    def valid(p: Any) -> bool:
        return (
            p.view == pp.view
            and p.height == pp.height
            and p.digest == digest
            and p.replica != pp.replica
            and signature_ok(verifier, limits.chain_id, p)
        )

    if _distinct_valid(pc.prepares, vset, lambda p: p.replica, valid) < vset.quorum - 1:
        return "prepared_too_few_prepares"
    return None


def verify_checkpoint_proof(
    height: int, proof: tuple[Checkpoint, ...], vset: ValidatorSet, chain_id: str,
    verifier: Verifier,
) -> bytes | None:  # fmt: skip
    """The state root q matching CHECKPOINTs prove for `height`, or None (PBFT §4.3).

    Height 0 (genesis) needs no proof and yields ZERO_HASH as a placeholder.
    """
    if height == 0:
        return ZERO_HASH if not proof else None
    if not proof or len(proof) > vset.n:
        return None
    root = proof[0].state_root

    def valid(c: Checkpoint) -> bool:
        return c.height == height and c.state_root == root and signature_ok(verifier, chain_id, c)

    if _distinct_valid(proof, vset, lambda c: c.replica, valid) < vset.quorum:
        return None
    return root


def unsigned_pre_prepare(view: int, block: Block, replica: bytes) -> PrePrepare:
    return PrePrepare(view, block.height, block, replica, NO_SIGNATURE)
