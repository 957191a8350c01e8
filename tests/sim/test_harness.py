"""The simulator itself: fake crypto, the state checker, the driver and the cluster.

These run against `toy_replica` (a tiny normal-case-only replica) so that a
simulator bug can never hide behind, or be blamed on, the real replica.
"""

from __future__ import annotations

import dataclasses

import pytest

from consensus import codec
from consensus.crypto import Domain, Ed25519Verifier
from consensus.types import (
    Checkpoint,
    Commit,
    CommitCertificate,
    CommitSignature,
    Evidence,
    Prepare,
    signed_payload,
)
from tests.sim.cluster import Cluster, SimFailure, SimOptions, SimResult
from tests.sim.fake_crypto import FakeSigningKey, FakeVerifier, make_keys
from tests.sim.packet_simulator import NetworkOptions
from tests.sim.sim_node import CrashPoint
from tests.sim.state_checker import StateChecker, Violation
from tests.sim.toy_replica import toy_factory

CHAIN = "redwood-sim"


# -- fake crypto -------------------------------------------------------------------


def test_fake_signatures_verify_only_for_the_signer_the_domain_and_the_chain() -> None:
    keys, verifier = make_keys(3, seed=1)
    a, b = keys[0], keys[1]
    sig = a.sign(Domain.PREPARE, CHAIN, b"payload")
    assert len(sig) == 64 and len(a.public) == 32
    assert verifier.verify(a.public, sig, Domain.PREPARE, CHAIN, b"payload")
    assert not verifier.verify(b.public, sig, Domain.PREPARE, CHAIN, b"payload")
    assert not verifier.verify(a.public, sig, Domain.COMMIT, CHAIN, b"payload")
    assert not verifier.verify(a.public, sig, Domain.PREPARE, "other-chain", b"payload")
    assert not verifier.verify(a.public, sig, Domain.PREPARE, CHAIN, b"payload2")
    assert not verifier.verify(a.public, sig[:63], Domain.PREPARE, CHAIN, b"payload")


def test_a_key_outside_the_table_cannot_sign_for_the_cluster() -> None:
    _keys, verifier = make_keys(2, seed=2)
    outsider = FakeSigningKey(bytes(32))
    sig = outsider.sign(Domain.COMMIT, CHAIN, b"x")
    assert not verifier.verify(outsider.public, sig, Domain.COMMIT, CHAIN, b"x")


def test_real_keys_are_ed25519() -> None:
    keys, verifier = make_keys(2, seed=3, real=True)
    sig = keys[0].sign(Domain.COMMIT, CHAIN, b"x")
    assert isinstance(verifier, Ed25519Verifier)
    assert verifier.verify(keys[0].public, sig, Domain.COMMIT, CHAIN, b"x")
    assert make_keys(2, seed=3, real=True)[0][0].public == keys[0].public


# -- the state checker -------------------------------------------------------------


def _checker(n: int = 4) -> tuple[StateChecker, list[FakeSigningKey]]:
    keys, verifier = make_keys(n, seed=5)
    assert isinstance(verifier, FakeVerifier)
    checker = StateChecker(
        chain_id=CHAIN,
        validators=tuple(k.public for k in keys),
        quorum=3,
        epoch=0,
        verifier=verifier,
        genesis_hash=bytes(32),
        genesis_root=bytes(32),
    )
    return checker, keys  # type: ignore[return-value]


def _signed(key: FakeSigningKey, message: object) -> object:
    sig = key.sign(message.DOMAIN, CHAIN, signed_payload(message))  # type: ignore[attr-defined]
    return dataclasses.replace(message, signature=sig)  # type: ignore[type-var]


def _certified(keys: list[FakeSigningKey], digest_of: object = None, signers: int = 3) -> object:
    from consensus.types import Block, BlockHeader, CertifiedBlock

    header = BlockHeader(CHAIN, 1, 0, 0, bytes(32), bytes(32), 0, 0, bytes(32), keys[0].public,
                         0, bytes(32))  # fmt: skip
    block = Block(header=header, txs=())
    digest = block.hash()
    sigs = []
    for k in keys[:signers]:
        c = _signed(k, Commit(0, 1, digest, k.public, bytes(64)))
        sigs.append(CommitSignature(k.public, c.signature))  # type: ignore[attr-defined]
    cert = CommitCertificate(0, 1, digest, 0, tuple(sigs))
    return CertifiedBlock(block=block, certificate=cert)


def test_checker_accepts_a_good_certificate_and_rejects_short_or_forged_ones() -> None:
    checker, keys = _checker()
    good = _certified(keys)
    checker.on_commit("a", good, bytes(32))  # type: ignore[arg-type]
    checker2, _ = _checker()
    with pytest.raises(Violation, match=r"certificate: .*quorum"):
        checker2.on_commit("a", _certified(keys, signers=2), bytes(32))  # type: ignore[arg-type]
    cert = good.certificate  # type: ignore[attr-defined]
    forged = dataclasses.replace(
        good,  # type: ignore[type-var]
        certificate=dataclasses.replace(
            cert, signatures=(*cert.signatures[:2], CommitSignature(keys[3].public, bytes(64)))
        ),
    )
    with pytest.raises(Violation, match=r"certificate: .*bad signature"):
        _checker()[0].on_commit("a", forged, bytes(32))  # type: ignore[arg-type]
    twice = dataclasses.replace(
        good,  # type: ignore[type-var]
        certificate=dataclasses.replace(cert, signatures=(*cert.signatures, cert.signatures[0])),
    )
    with pytest.raises(Violation, match="signs twice"):
        _checker()[0].on_commit("a", twice, bytes(32))  # type: ignore[arg-type]


def test_checker_reports_two_correct_replicas_committing_different_blocks() -> None:
    checker, keys = _checker()
    one = _certified(keys)
    header = one.block.header  # type: ignore[attr-defined]
    other_block = dataclasses.replace(one.block, header=dataclasses.replace(header, timestamp_ms=1))  # type: ignore[attr-defined]
    digest = other_block.hash()
    sigs = tuple(
        CommitSignature(k.public, _signed(k, Commit(0, 1, digest, k.public, bytes(64))).signature)  # type: ignore[attr-defined]
        for k in keys[:3]
    )
    other = dataclasses.replace(
        one,  # type: ignore[type-var]
        block=other_block,
        certificate=CommitCertificate(0, 1, digest, 0, sigs),
    )
    checker.on_commit("a", one, bytes(32))  # type: ignore[arg-type]
    checker.on_commit("b", one, bytes(32))  # type: ignore[arg-type]
    with pytest.raises(Violation, match=r"agreement: .*height 1: c committed"):
        checker.on_commit("c", other, bytes(32))  # type: ignore[arg-type]


def test_checker_reports_a_correct_replica_signing_two_digests_for_one_vote() -> None:
    checker, keys = _checker()
    k = keys[1]
    p1 = _signed(k, Prepare(3, 7, b"\x01" * 32, k.public, bytes(64)))
    p2 = _signed(k, Prepare(3, 7, b"\x02" * 32, k.public, bytes(64)))
    checker.on_send("b", k.public, p1)
    checker.on_send("b", k.public, p1)  # a retransmission is fine
    checker.on_send("b", k.public, _signed(k, Prepare(4, 7, b"\x02" * 32, k.public, bytes(64))))
    checker.on_send("b", k.public, _signed(k, Commit(3, 7, b"\x02" * 32, k.public, bytes(64))))
    with pytest.raises(Violation, match=r"equivocation: .*correct replica b signed PREPARE"):
        checker.on_send("b", k.public, p2)


def test_checker_reports_diverging_checkpoints() -> None:
    checker, keys = _checker()
    a, b = keys[0], keys[1]
    checker.on_send("a", a.public, _signed(a, Checkpoint(8, b"\x01" * 32, a.public, bytes(64))))
    with pytest.raises(Violation, match="checkpoint"):
        checker.on_send("b", b.public, _signed(b, Checkpoint(8, b"\x02" * 32, b.public, bytes(64))))


def test_checker_reports_a_block_that_does_not_extend_the_chain() -> None:
    checker, keys = _checker()
    cb = _certified(keys)
    with pytest.raises(Violation, match=r"chain: .*height 1 on head 1"):
        checker.check_link("a", 1, bytes(32), cb)  # type: ignore[arg-type]
    with pytest.raises(Violation, match="parent"):
        checker.check_link("a", 0, b"\x09" * 32, cb)  # type: ignore[arg-type]


# -- the cluster, with the toy replica -----------------------------------------------


def _toy(seed: int, **kw: object) -> Cluster:
    careless = bool(kw.pop("careless", False))
    options = dataclasses.replace(SimOptions(seed=seed, n=4, fault_ms=3_000), **kw)  # type: ignore[arg-type]
    return Cluster(options, toy_factory(careless=careless))


def test_toy_cluster_commits_the_same_chain_everywhere() -> None:
    result = _toy(1).run()
    heights = set(result.heights.values())
    assert len(heights) == 1 and heights.pop() >= 20
    assert result.stats["commits"] == 4 * result.heights["correct0"]


def test_codec_mode_sends_bytes_and_ends_in_the_same_state() -> None:
    a = _toy(2).run()
    b = _toy(2, use_codec=True).run()
    assert a.heights == b.heights


def test_same_seed_same_trace_and_another_seed_another_trace() -> None:
    net = NetworkOptions(node_count=0, packet_loss_probability=0.05, packet_replay_probability=0.05)

    def run(seed: int) -> SimResult:
        cluster = _toy(seed, network=net, trace=True)
        cluster.run_for(3_000)
        return cluster.result()

    one, two, three = run(3), run(3), run(4)
    assert one.trace_digest == two.trace_digest and one.events == two.events
    assert one.trace_digest != three.trace_digest


def test_undecodable_bytes_are_counted_and_dropped() -> None:
    cluster = _toy(5, use_codec=True)
    cluster.start()
    node = cluster.nodes[1]
    node.receive(b"\xc1garbage", cluster.nodes[0].node_id)
    node.receive(codec.encode(Checkpoint(1, bytes(32), bytes(32), bytes(64)))[:-3], bytes(32))
    assert node.stats["dropped_undecodable"] == 2


@pytest.mark.parametrize("point", list(CrashPoint))
def test_a_crash_at_each_driver_step_restarts_from_what_was_durable(point: CrashPoint) -> None:
    """The toy has no catch-up, so only the restart itself is judged here: the new
    replica starts at the durable height and with the durable journal."""
    cluster = _toy(6)
    cluster.run_for(1_000)
    backup = cluster.nodes[2]
    backup.arm_crash(point)
    assert cluster.run_until(lambda: not backup.up, 2_000)
    height, journal = backup.height, dict(backup.journal)
    cluster.run_for(300)
    cluster.restart(2)
    assert backup.replica.committed_height == height
    assert set(backup.replica.voted) == {int(k.split(b"/")[1]) for k in journal}
    cluster.run_for(1_000)  # the checker judges everything the restarted replica does


def test_checker_catches_a_replica_that_forgets_its_votes_across_a_crash() -> None:
    """The careless toy votes for whatever the primary says after a restart; the
    primary's twin proposes another block: the checker must see the double vote."""
    with pytest.raises(SimFailure, match=r"equivocation|agreement") as failure:
        for seed in range(20):
            cluster = _toy(seed, twins=(0,), careless=True)
            cluster.run_for(500)
            for node in cluster.nodes[1:4]:
                node.arm_crash(CrashPoint.AFTER_SEND)
            cluster.run_for(3_000)
    assert "replay: pytest tests/sim/test_sweep.py::test_replay" in str(failure.value)


def test_with_f_plus_1_twins_the_checker_reports_disagreement() -> None:
    """Twins of the primary and one backup, split across a partition: two quorums."""
    with pytest.raises(SimFailure, match="agreement"):
        for seed in range(20):
            cluster = _toy(seed, twins=(0, 1))
            # slots: 0..3 validators, 4 = twin of 0, 5 = twin of 1
            cluster.network.partition([{0, 1, 2}, {4, 5, 3}])
            cluster.run_for(3_000)


def _evidence(first: object, second: object, kind: int = 2) -> Evidence:
    return Evidence(
        kind=kind,
        replica=first.replica,  # type: ignore[attr-defined]
        view=first.view,  # type: ignore[attr-defined]
        height=first.height,  # type: ignore[attr-defined]
        first=codec.encode(first),
        second=codec.encode(second),
    )


def test_checker_accepts_true_evidence_and_reports_false_accusations() -> None:
    checker, keys = _checker()
    k = keys[3]
    p1 = _signed(k, Prepare(3, 7, b"\x01" * 32, k.public, bytes(64)))
    p2 = _signed(k, Prepare(3, 7, b"\x02" * 32, k.public, bytes(64)))
    faulty_only = frozenset(x.public for x in keys[:3])
    checker.on_evidence("a", _evidence(p1, p2), faulty_only)
    assert checker.stats["evidence_checked"] == 1
    with pytest.raises(Violation, match="accuses correct replica"):
        checker.on_evidence("a", _evidence(p1, p2), frozenset({k.public}))
    with pytest.raises(Violation, match="two equal votes"):
        checker.on_evidence("a", _evidence(p1, p1), faulty_only)
    unsigned = dataclasses.replace(p2, signature=bytes(64))  # type: ignore[type-var]
    with pytest.raises(Violation, match="does not prove"):
        checker.on_evidence("a", _evidence(p1, unsigned), faulty_only)
    with pytest.raises(Violation, match="undecodable"):
        checker.on_evidence("a", _evidence(p1, p2, kind=3), faulty_only)


def test_checker_reports_a_vote_sent_before_its_journal_record() -> None:
    from consensus import journal_codec

    checker, keys = _checker()
    k = keys[2]
    vote = _signed(k, Commit(4, 9, b"\x05" * 32, k.public, bytes(64)))
    record = {journal_codec.vote_key(3, 4, 9): journal_codec.encode_vote(3, 4, 9, b"\x05" * 32)}
    checker.on_send("c", k.public, vote, record, (4, 0, 8))
    checker.on_send("c", k.public, vote, {}, (5, 0, 8))  # an old view's record may be gone
    checker.on_send("c", k.public, vote, {}, (4, 9, 9))  # at or below the stable checkpoint
    with pytest.raises(Violation, match="vote_durable"):
        checker.on_send("c", k.public, vote, {}, (4, 0, 8))


def test_checker_reports_a_stable_checkpoint_with_another_root_and_time_going_back() -> None:
    checker, keys = _checker()
    checker.agreed_roots[8] = b"\x01" * 32
    checker.on_stable("a", 8, b"\x01" * 32)
    checker.on_stable("a", 16, b"\x03" * 32)  # not agreed yet: nothing to compare
    with pytest.raises(Violation, match="checkpoint"):
        checker.on_stable("b", 8, b"\x02" * 32)
    cb = _certified(keys)
    with pytest.raises(Violation, match="below its parent"):
        checker.check_link("a", 0, bytes(32), cb, head_timestamp_ms=5)  # type: ignore[arg-type]
