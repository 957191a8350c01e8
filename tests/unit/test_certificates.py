"""Certificates, validator sets and the NEW-VIEW derivation (PBFT §4.2-4.4), as pure functions."""

from __future__ import annotations

import dataclasses

import pytest

from consensus import merkle
from consensus.certificates import (
    NO_SIGNATURE,
    BlockLimits,
    check_block,
    null_header,
    sign,
    state_height,
    verify_checkpoint_proof,
    verify_commit_certificate,
    verify_prepared_certificate,
)
from consensus.crypto import ZERO_HASH, sha256
from consensus.types import (
    Block,
    BlockHeader,
    Checkpoint,
    Commit,
    CommitCertificate,
    CommitSignature,
    Prepare,
    PreparedCertificate,
    PrePrepare,
    ViewChange,
)
from consensus.validators import EpochSchedule, ValidatorSet
from consensus.view_change import choose_prepared, derive_blocks
from tests.unit.test_replica_harness import CHAIN_ID, Key, Verifier

KEYS = [Key(i) for i in range(4)]
VSET = ValidatorSet(0, tuple(k.public for k in KEYS))
VERIFIER = Verifier([*KEYS, Key(99)])
LIMITS = BlockLimits(CHAIN_ID, pipeline_depth=2, block_txs_max=10, block_bytes_max=1000)
BASE = sha256(b"base")


def block(height: int, view: int, parent: bytes, txs: tuple[bytes, ...] = (b"t",)) -> Block:
    header = BlockHeader(
        chain_id=CHAIN_ID, height=height, view=view, epoch=0, parent_hash=parent,
        tx_root=merkle.root(txs), tx_count=len(txs), state_height=state_height(height, 2),
        state_root=sha256(b"root"), proposer=VSET.primary(view), timestamp_ms=5,
        validator_set_hash=VSET.hash(),
    )  # fmt: skip
    return Block(header, txs)


def certificate(b: Block, signers: list[Key], view: int = 0, epoch: int = 0) -> CommitCertificate:
    sigs = []
    for k in signers:
        c = sign(k, CHAIN_ID, Commit(view, b.height, b.hash(), k.public, NO_SIGNATURE))
        sigs.append(CommitSignature(k.public, c.signature))
    return CommitCertificate(view, b.height, b.hash(), epoch, tuple(sigs))


def prepared(b: Block, view: int, backups: list[int]) -> PreparedCertificate:
    primary = KEYS[view % 4]
    pp = sign(primary, CHAIN_ID, PrePrepare(view, b.height, b, primary.public, NO_SIGNATURE))
    prepares = tuple(
        sign(KEYS[i], CHAIN_ID, Prepare(view, b.height, b.hash(), KEYS[i].public, NO_SIGNATURE))
        for i in backups
    )
    return PreparedCertificate(pp, prepares)


# -- validator sets ---------------------------------------------------------------------


@pytest.mark.parametrize("n", range(1, 12))
def test_quorum_sizes_intersect_in_a_correct_replica_4_1(n: int) -> None:
    """§4.1: any two quora of size q share at least f+1 replicas, so one correct replica."""
    vs = ValidatorSet(0, tuple(Key(i).public for i in range(n)))
    assert vs.f == (n - 1) // 3 and vs.quorum == (n + vs.f) // 2 + 1
    assert 2 * vs.quorum - n >= vs.f + 1
    assert vs.quorum <= n - vs.f  # liveness: the correct replicas alone form a quorum


def test_primary_rotates_and_bad_sets_refused() -> None:
    assert [VSET.primary(v) for v in range(5)] == [KEYS[i % 4].public for i in range(5)]
    with pytest.raises(ValueError):
        ValidatorSet(0, (KEYS[0].public, KEYS[0].public))
    with pytest.raises(ValueError):
        ValidatorSet(0, (b"short",))
    assert VSET.hash() != ValidatorSet(1, VSET.validators).hash()


def test_epoch_schedule_picks_the_set_in_force() -> None:
    later = ValidatorSet(1, VSET.validators[:3])
    sched = EpochSchedule(((1, VSET), (65, later)))
    assert sched.at(0) is VSET and sched.at(64) is VSET and sched.at(65) is later
    with pytest.raises(ValueError):
        EpochSchedule(((2, VSET),))


# -- commit certificates (§4.2) -----------------------------------------------------------


def test_commit_certificate_needs_q_distinct_valid_signatures() -> None:
    b = block(1, 0, BASE)
    ok = certificate(b, KEYS[:3])
    assert verify_commit_certificate(ok, b.hash(), 1, VSET, CHAIN_ID, VERIFIER) is None
    short = certificate(b, KEYS[:2])
    assert verify_commit_certificate(short, b.hash(), 1, VSET, CHAIN_ID, VERIFIER) == (
        "certificate_bad_signatures"
    )
    dup = dataclasses.replace(ok, signatures=(ok.signatures[0],) * 3)
    assert verify_commit_certificate(dup, b.hash(), 1, VSET, CHAIN_ID, VERIFIER) is not None
    stranger = certificate(b, [KEYS[0], KEYS[1], Key(99)])
    assert verify_commit_certificate(stranger, b.hash(), 1, VSET, CHAIN_ID, VERIFIER) is not None
    other_chain = dataclasses.replace(
        ok,
        signatures=tuple(
            CommitSignature(k.public, k.sign("redwood/commit/v1", "other", b"x")) for k in KEYS[:3]
        ),
    )
    assert verify_commit_certificate(other_chain, b.hash(), 1, VSET, CHAIN_ID, VERIFIER) is not None


def test_commit_certificate_names_its_epoch_and_block() -> None:
    b = block(1, 0, BASE)
    cert = certificate(b, KEYS[:3], epoch=1)
    assert verify_commit_certificate(cert, b.hash(), 1, VSET, CHAIN_ID, VERIFIER) == (
        "certificate_wrong_epoch"
    )
    cert = certificate(b, KEYS[:3])
    assert verify_commit_certificate(cert, b"\x01" * 32, 1, VSET, CHAIN_ID, VERIFIER) == (
        "certificate_mismatch"
    )
    assert verify_commit_certificate(cert, b.hash(), 2, VSET, CHAIN_ID, VERIFIER) == (
        "certificate_mismatch"
    )


# -- checkpoint proofs (§4.3) and prepared certificates (§4.4) --------------------------------


def test_checkpoint_proof() -> None:
    root = sha256(b"state")
    proof = tuple(sign(k, CHAIN_ID, Checkpoint(8, root, k.public, NO_SIGNATURE)) for k in KEYS[:3])
    assert verify_checkpoint_proof(8, proof, VSET, CHAIN_ID, VERIFIER) == root
    assert verify_checkpoint_proof(16, proof, VSET, CHAIN_ID, VERIFIER) is None
    assert verify_checkpoint_proof(8, proof[:2], VSET, CHAIN_ID, VERIFIER) is None
    mixed = (
        *proof[:2],
        sign(KEYS[3], CHAIN_ID, Checkpoint(8, ZERO_HASH, KEYS[3].public, NO_SIGNATURE)),
    )
    assert verify_checkpoint_proof(8, mixed, VSET, CHAIN_ID, VERIFIER) is None
    assert verify_checkpoint_proof(0, (), VSET, CHAIN_ID, VERIFIER) == ZERO_HASH


def test_prepared_certificate_counts_backups_only() -> None:
    b = block(1, 0, BASE)
    assert verify_prepared_certificate(prepared(b, 0, [1, 2]), LIMITS, VSET, VERIFIER) is None
    assert verify_prepared_certificate(prepared(b, 0, [0, 1]), LIMITS, VSET, VERIFIER) == (
        "prepared_too_few_prepares"  # the primary's own PREPARE does not count
    )
    assert verify_prepared_certificate(prepared(b, 0, [1, 1]), LIMITS, VSET, VERIFIER) is not None
    wrong_primary = prepared(b, 0, [1, 2])
    pp = sign(KEYS[1], CHAIN_ID, PrePrepare(0, 1, b, KEYS[1].public, NO_SIGNATURE))
    assert (
        verify_prepared_certificate(
            dataclasses.replace(wrong_primary, pre_prepare=pp), LIMITS, VSET, VERIFIER
        )
        == "prepared_bad_pre_prepare"
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"chain_id": "x"}, "wrong_chain"),
        ({"epoch": 3}, "wrong_epoch"),
        ({"state_height": 7}, "bad_state_height"),
        ({"tx_count": 2}, "bad_tx_count"),
        ({"tx_root": ZERO_HASH}, "bad_tx_root"),
    ],
)
def test_check_block_reasons(change: dict[str, object], reason: str) -> None:
    b = block(3, 0, BASE)
    assert check_block(b, LIMITS, VSET) is None
    bad = Block(dataclasses.replace(b.header, **change), b.txs)  # type: ignore[arg-type]
    assert check_block(bad, LIMITS, VSET) == reason


def test_check_block_size_limits() -> None:
    many = tuple(b"%d" % i for i in range(11))
    assert check_block(block(1, 0, BASE, many), LIMITS, VSET) == "block_too_many_txs"
    assert check_block(block(1, 0, BASE, (b"x" * 1001,)), LIMITS, VSET) == "block_too_large"


# -- NEW-VIEW derivation (§4.4) -----------------------------------------------------------------


def vc(replica: int, new_view: int, certs: tuple[PreparedCertificate, ...]) -> ViewChange:
    k = KEYS[replica]
    return sign(k, CHAIN_ID, ViewChange(new_view, 0, (), certs, k.public, NO_SIGNATURE))


def test_derive_keeps_highest_view_certificate_per_height_4_4() -> None:
    b1_old = block(1, 0, BASE, (b"old",))
    b1_new = block(1, 1, BASE, (b"new",))
    vcs = [vc(0, 2, (prepared(b1_old, 0, [1, 2]),)), vc(1, 2, (prepared(b1_new, 1, [2, 3]),))]
    assert choose_prepared(vcs, 0)[1].block == b1_new
    out = derive_blocks(vcs, 2, BASE, 0, LIMITS, lambda h: VSET)
    assert out == [b1_new]


def test_derive_null_fills_gaps_and_everything_unlinked_above_4_4() -> None:
    b1 = block(1, 0, BASE)
    b2 = block(2, 0, b1.hash())
    b3 = block(3, 0, b2.hash())
    # height 1 prepared nowhere in V; 2 and 3 prepared
    vcs = [vc(1, 1, (prepared(b2, 0, [1, 2]), prepared(b3, 0, [1, 2]))), vc(2, 1, ()), vc(3, 1, ())]
    out = derive_blocks(vcs, 1, BASE, 7, LIMITS, lambda h: VSET)
    assert [x.header.is_null for x in out] == [True, True, True]
    n1 = out[0].header
    assert n1 == null_header(LIMITS, VSET, 1, 1, BASE, 7)
    assert n1.proposer == VSET.primary(1) and n1.timestamp_ms == 7 and n1.state_root == ZERO_HASH
    assert out[1].header.parent_hash == out[0].hash() and out[2].header.parent_hash == out[1].hash()


def test_derive_keeps_a_linked_chain_from_the_base_4_4() -> None:
    b1 = block(1, 0, BASE)
    b2 = block(2, 0, b1.hash())
    stray = block(1, 0, sha256(b"elsewhere"))
    vcs = [vc(1, 1, (prepared(b1, 0, [1, 2]), prepared(b2, 0, [1, 2])))]
    assert derive_blocks(vcs, 1, BASE, 0, LIMITS, lambda h: VSET) == [b1, b2]
    vcs = [vc(1, 1, (prepared(stray, 0, [1, 2]),))]
    assert derive_blocks(vcs, 1, BASE, 0, LIMITS, lambda h: VSET)[0].header.is_null


def test_stripped_prepared_certificate_rests_on_its_prepares_4_4() -> None:
    """A certificate without transactions is valid only with q-1 PREPAREs (>= f+1 backups)."""
    from consensus.certificates import may_strip, strip

    b = block(1, 0, BASE, (b"a", b"b"))
    full = prepared(b, 0, [1, 2])
    stripped = dataclasses.replace(
        full, pre_prepare=dataclasses.replace(full.pre_prepare, block=strip(b))
    )
    assert stripped.pre_prepare.block.txs == () and stripped.pre_prepare.digest == b.hash()
    assert verify_prepared_certificate(stripped, LIMITS, VSET, VERIFIER) is None
    short = dataclasses.replace(stripped, prepares=stripped.prepares[:1])
    assert verify_prepared_certificate(short, LIMITS, VSET, VERIFIER) == "prepared_too_few_prepares"
    partial = dataclasses.replace(
        stripped,
        pre_prepare=dataclasses.replace(stripped.pre_prepare, block=Block(b.header, (b"a",))),
    )
    assert verify_prepared_certificate(partial, LIMITS, VSET, VERIFIER) is not None
    solo = ValidatorSet(0, (KEYS[0].public,))
    assert not may_strip(solo) and may_strip(VSET)
