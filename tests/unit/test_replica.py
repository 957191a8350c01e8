"""The PBFT replica, rule by rule (Castro & Liskov, "Practical Byzantine Fault Tolerance", OSDI '99).

Each test drives 1..n real `Replica` objects through the tiny message pump in
`test_replica_harness` and names the paper section whose rule it checks.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest

from consensus import journal_codec, merkle
from consensus.certificates import (
    NO_SIGNATURE,
    sign,
    state_height,
    verify_commit_certificate,
)
from consensus.crypto import sha256
from consensus.replica import Ready, ReplicaUsageError
from consensus.types import (
    Block,
    BlockHeader,
    BlockRequest,
    BlockResponse,
    CertifiedBlock,
    Checkpoint,
    Commit,
    CommitCertificate,
    CommitSignature,
    NewView,
    Prepare,
    PrePrepare,
    StatusAnnouncement,
    ViewChange,
)
from consensus.view_change import base_height
from tests.unit.test_replica_harness import (
    CHAIN_ID,
    GENESIS_HASH,
    GENESIS_ROOT,
    Cluster,
    Key,
)


def make_block(
    c: Cluster, height: int, view: int, txs: tuple[bytes, ...], parent: bytes, proposer: bytes,
    state_root: bytes = GENESIS_ROOT, ts: int = 1000,
) -> Block:  # fmt: skip
    header = BlockHeader(
        chain_id=CHAIN_ID,
        height=height,
        view=view,
        epoch=c.vset.epoch,
        parent_hash=parent,
        tx_root=merkle.root(txs),
        tx_count=len(txs),
        state_height=state_height(height, c.config.pipeline_depth),
        state_root=state_root,
        proposer=proposer,
        timestamp_ms=ts,
        validator_set_hash=c.vset.hash(),
    )
    return Block(header=header, txs=txs)


def pre_prepare(key: Key, view: int, block: Block) -> PrePrepare:
    return sign(key, CHAIN_ID, PrePrepare(view, block.height, block, key.public, NO_SIGNATURE))


def sent(node: Any, kind: type) -> list[Any]:
    return [o.message for r in node.readies for o in r.messages if isinstance(o.message, kind)]


# -- normal case (§4.2) ----------------------------------------------------------------


def test_normal_case_commits_with_certificate_4_2() -> None:
    """§4.2: PRE-PREPARE, PREPARE, COMMIT; q COMMITs form the block's commit certificate."""
    c = Cluster(4)
    assert c.propose([b"tx1", b"tx2"])
    assert c.heights() == [1, 1, 1, 1]
    c.assert_agree()
    for node in c.nodes:
        cb = node.chain[0]
        assert cb.block.txs == (b"tx1", b"tx2")
        assert cb.block.header.tx_root == merkle.root([b"tx1", b"tx2"])
        cert = cb.certificate
        assert cert.epoch == 0 and cert.view == 0 and len(cert.signatures) == c.vset.quorum
        assert (
            verify_commit_certificate(cert, cb.block.hash(), 1, c.vset, CHAIN_ID, c.verifier)
            is None
        )
    # the primary sends no PREPARE; every replica sends one COMMIT
    assert not sent(c.nodes[0], Prepare)
    assert all(len(sent(n, Commit)) == 1 for n in c.nodes)


def test_single_validator_commits_alone_4_2() -> None:
    """§4.2 with n = 1: f = 0, q = 1, the primary's own votes commit."""
    c = Cluster(1)
    c.run_blocks(5)
    assert c.heights() == [5]


def test_commit_needs_a_quorum_of_commits_4_2() -> None:
    """§4.2 committed-local: q-1 COMMITs are not enough."""
    c = Cluster(4)
    # node 3 gets COMMITs only from nodes 0 and 1 (its own is the third: q = 3)
    c.cut = lambda s, d, m: isinstance(m, Commit) and d == 3 and s == 2
    c.propose([b"x"])
    assert c.nodes[3].height == 1
    c2 = Cluster(4)
    c2.cut = lambda s, d, m: isinstance(m, Commit) and d == 3 and s in (1, 2)
    c2.propose([b"x"])
    assert c2.nodes[3].height == 0 and c2.nodes[0].height == 1


def test_execution_strictly_in_height_order_4_2() -> None:
    """§4.2: blocks leave in Ready.committed in ascending heights even when commits finish out of order."""
    c = Cluster(4, pipeline_depth=3)
    held: list[tuple[int, bytes, object]] = []

    def cut(s: int, d: int, m: object) -> bool:
        if isinstance(m, Commit) and m.height == 1 and d == 3:
            held.append((d, c.nodes[s].node_id, m))
            return True
        return False

    c.cut = cut
    c.run_blocks(3)
    assert c.nodes[3].height == 0  # heights 2, 3 committed-local but wait for 1
    c.cut = lambda s, d, m: False
    c.queue.extend(held)
    c.pump()
    assert c.nodes[3].height == 3
    heights = [cb.block.height for r in c.nodes[3].readies for cb in r.committed]
    assert heights == [1, 2, 3]


def test_pipelining_depth_honoured() -> None:
    """DESIGN §3: at most pipeline_depth heights in flight; block h claims the state after h-depth."""
    c = Cluster(4, pipeline_depth=3)
    c.cut = lambda s, d, m: s != 0  # backups are silent: nothing commits
    primary = c.nodes[0]
    proposed = 0
    while primary.replica.wants_proposal():
        assert primary.replica.propose([b"t%d" % proposed], 1000)
        c.process(primary)
        proposed += 1
        assert proposed < 50
    assert proposed == 3
    c.pump()
    c.cut = lambda s, d, m: False
    for node in c.nodes[1:]:  # retransmission after the cut heals
        node.replica.note_pending(1)
    c.tick(c.config.retransmit_ticks)
    assert c.heights() == [3, 3, 3, 3]
    assert primary.replica.wants_proposal()
    c.propose([b"next"])
    assert c.nodes[1].chain[3].block.header.state_height == 1
    assert c.nodes[1].chain[3].block.header.state_root == c.nodes[1].roots[1]


def test_retransmitted_pre_prepare_goes_only_to_validators_without_it() -> None:
    """Retransmission: a PRE-PREPARE (it carries the block) is re-sent only to the
    validators whose PREPARE or COMMIT does not show they hold it; votes to everyone."""
    c = Cluster(4)
    # nodes 2 and 3 lose the PRE-PREPARE: node 1's PREPARE alone prepares nothing
    c.cut = lambda s, d, m: isinstance(m, PrePrepare) and d in (2, 3)
    assert c.propose([b"a", b"b"])
    assert c.heights() == [0, 0, 0, 0]
    primary, backup = c.nodes[0], c.nodes[1]
    assert backup.node_id in primary.replica.slots[1].prepares
    c.cut = lambda s, d, m: False
    for node in c.nodes:
        node.readies.clear()
    for node in c.nodes[1:]:  # backups with nothing prepared still count the work
        node.replica.note_pending(1)
    c.tick(c.config.retransmit_ticks)
    assert c.heights() == [1, 1, 1, 1]
    c.assert_agree()
    resent = [
        o.to for r in primary.readies for o in r.messages if isinstance(o.message, PrePrepare)
    ]
    assert sorted(resent) == sorted([c.nodes[2].node_id, c.nodes[3].node_id])
    # node 1's PREPARE went to everyone again (one broadcast, to = None)
    prepares = [o.to for r in backup.readies for o in r.messages if isinstance(o.message, Prepare)]
    assert prepares == [None]


def test_batch_limits_enforced_by_primary_and_backups() -> None:
    """Batching: a block holds at most block_txs_max transactions and block_bytes_max bytes."""
    c = Cluster(4, block_txs_max=3, block_bytes_max=100)
    with pytest.raises(ReplicaUsageError):
        c.nodes[0].replica.propose([b"a", b"b", b"c", b"d"], 1)
    with pytest.raises(ReplicaUsageError):
        c.nodes[0].replica.propose([b"x" * 101], 1)
    assert c.propose([b"a", b"b", b"c"])
    # a (faulty) primary's oversized block is dropped by backups, counted
    big = make_block(
        c, 2, 0, (b"1", b"2", b"3", b"4"), c.nodes[1].chain[0].block.hash(), c.keys[0].public
    )
    c.nodes[1].replica.step(pre_prepare(c.keys[0], 0, big), c.keys[0].public)
    assert c.nodes[1].replica.dropped["block_too_many_txs"] == 1


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("chain_id", "other-chain", "wrong_chain"),
        ("tx_root", b"\x01" * 32, "bad_tx_root"),
        ("tx_count", 5, "bad_tx_count"),
        ("parent_hash", b"\x02" * 32, "bad_parent"),
        ("state_root", b"\x03" * 32, "bad_state_root"),
        ("state_height", 1, "bad_state_height"),
        ("validator_set_hash", b"\x04" * 32, "wrong_epoch"),
        ("view", 1, "bad_header"),
    ],
)
def test_pre_prepare_content_validated_4_2(field: str, value: object, reason: str) -> None:
    """§4.2: a backup accepts a PRE-PREPARE only if everything it carries checks out."""
    import dataclasses

    c = Cluster(4)
    block = make_block(c, 1, 0, (b"a",), GENESIS_HASH, c.keys[0].public)
    header = dataclasses.replace(block.header, **{field: value})
    bad = pre_prepare(c.keys[0], 0, Block(header, block.txs))
    c.nodes[1].replica.step(bad, c.keys[0].public)
    assert c.nodes[1].replica.dropped[reason] == 1
    assert not c.nodes[1].replica.has_ready()


def test_pre_prepare_from_non_primary_or_wrong_sender_dropped_4_2() -> None:
    c = Cluster(4)
    r = c.nodes[2].replica
    block = make_block(c, 1, 0, (b"a",), GENESIS_HASH, c.keys[1].public)
    r.step(pre_prepare(c.keys[1], 0, block), c.keys[1].public)
    assert r.dropped["not_primary"] == 1
    good = pre_prepare(c.keys[0], 0, make_block(c, 1, 0, (b"a",), GENESIS_HASH, c.keys[0].public))
    r.step(good, c.keys[1].public)
    assert r.dropped["sender_mismatch"] == 1
    forged = PrePrepare(0, 1, good.block, c.keys[0].public, b"\x00" * 64)
    r.step(forged, c.keys[0].public)
    assert r.dropped["bad_signature"] == 1
    assert not r.has_ready()


def test_out_of_order_pre_prepare_held_until_parent_known_4_2() -> None:
    """A pre-prepare whose parent has not arrived waits in the bounded hold buffer."""
    c = Cluster(4)
    b1 = make_block(c, 1, 0, (b"a",), GENESIS_HASH, c.keys[0].public)
    b2 = make_block(c, 2, 0, (b"b",), b1.hash(), c.keys[0].public)
    r = c.nodes[1].replica
    r.step(pre_prepare(c.keys[0], 0, b2), c.keys[0].public)
    assert len(r.held) == 1 and not r.has_ready()
    r.step(pre_prepare(c.keys[0], 0, b1), c.keys[0].public)
    assert not r.held
    prepares = [o.message for o in r.ready().messages if isinstance(o.message, Prepare)]
    assert [p.height for p in prepares] == [1, 2]


def test_commit_waits_for_linked_parent_4_2() -> None:
    """COMMIT for h only once h-1 is committed or prepared-and-linked with digest == parent_hash."""
    c = Cluster(4)
    # prepares for height 1 never reach node 3: height 2 prepares there but must not COMMIT
    c.cut = lambda s, d, m: isinstance(m, Prepare) and m.height == 1 and d == 3
    c.run_blocks(2)
    n3 = c.nodes[3]
    assert n3.replica.pcerts.keys() == {2}
    assert not [m for m in sent(n3, Commit) if m.height == 2 and m.view == 0] or n3.height >= 1
    # it still commits both from the others' COMMITs
    assert c.heights() == [2, 2, 2, 2]


# -- checkpoints (§4.3) ----------------------------------------------------------------------


def test_checkpoint_becomes_stable_and_logs_are_collected_4_3() -> None:
    """§4.3: q matching CHECKPOINTs make it stable; logs and journal records below are dropped."""
    c = Cluster(4, checkpoint_interval=4, pipeline_depth=2)
    c.run_blocks(10)
    for node in c.nodes:
        r = node.replica
        assert r.stable_checkpoint == (8, node.roots[8])
        stable = [s for ready in node.readies for s in ready.stable_checkpoints]
        assert stable == [(4, node.roots[4]), (8, node.roots[8])]
        assert all(h > 8 for h in r.pcerts)
        assert all(key[2] > 8 for key in r.votes)
        assert all(h > 8 for h in r.checkpoints)
        heights = [int.from_bytes(k[-8:], "big") for k in node.journal if k.startswith(b"vote/")]
        assert heights and min(heights) > 8
        assert not [
            k for k in node.journal if k.startswith(b"pc/") and int.from_bytes(k[3:], "big") <= 8
        ]


def test_messages_beyond_high_watermark_dropped_4_3() -> None:
    """§4.3: messages with heights above h + L are discarded (counted), not stored."""
    c = Cluster(4, checkpoint_interval=4)
    r = c.nodes[1].replica
    far = r.high_watermark + 1
    p = sign(c.keys[2], CHAIN_ID, Prepare(0, far, b"\x01" * 32, c.keys[2].public, NO_SIGNATURE))
    r.step(p, c.keys[2].public)
    assert r.dropped["above_window"] == 1 and far not in r.slots


def test_checkpoint_with_bad_signature_or_stranger_dropped_4_3() -> None:
    c = Cluster(4, checkpoint_interval=4)
    r = c.nodes[1].replica
    stranger = Key(99)
    cp = sign(stranger, CHAIN_ID, Checkpoint(4, b"\x01" * 32, stranger.public, NO_SIGNATURE))
    r.step(cp, stranger.public)
    forged = Checkpoint(4, b"\x01" * 32, c.keys[2].public, b"\x00" * 64)
    r.step(forged, c.keys[2].public)
    assert r.dropped["not_validator"] == 1 and r.dropped["bad_signature"] == 1


def test_second_checkpoint_root_from_one_validator_counted_not_counted_twice_4_3() -> None:
    """A validator signing two roots for one checkpoint height: the first vote stands."""
    c = Cluster(4, checkpoint_interval=4)
    r = c.nodes[1].replica
    k = c.keys[2]
    first = sign(k, CHAIN_ID, Checkpoint(4, b"\x01" * 32, k.public, NO_SIGNATURE))
    second = sign(k, CHAIN_ID, Checkpoint(4, b"\x02" * 32, k.public, NO_SIGNATURE))
    unsigned = Checkpoint(4, b"\x03" * 32, k.public, b"\x00" * 64)
    for cp in (first, first, second, unsigned):
        r.step(cp, k.public)
    assert r.dropped["duplicate"] == 2 and r.dropped["conflicting_checkpoint"] == 1
    assert r.checkpoints[4] == {k.public: first}


# -- view change (§4.4) -------------------------------------------------------------------


def _silence_primary_and_tick(
    c: Cluster, primary: int = 0, limit: int = 400, also: Any = lambda m: False
) -> None:
    """Cut the primary off (and view-0 COMMITs, so nothing commits in the old view)."""

    def cut(s: int, d: int, m: object) -> bool:
        old = getattr(m, "view", None) == 0
        return s == primary or d == primary or (old and (isinstance(m, Commit) or also(m)))

    c.cut = cut
    for node in c.nodes:
        node.replica.note_pending(1)
    for _ in range(limit):
        if all(
            n.replica.view >= 1 and not n.replica.in_view_change
            for i, n in enumerate(c.nodes)
            if i != primary
        ):
            return
        c.tick()
    raise AssertionError("no view change")


def test_view_change_on_silent_primary_reproposes_prepared_block_4_4() -> None:
    """§4.4: a prepared block survives the view change with its exact digest."""
    c = Cluster(4)
    c.cut = lambda s, d, m: isinstance(m, Commit)
    c.propose([b"keep-me"])
    assert c.heights() == [0, 0, 0, 0]
    digest = c.nodes[1].replica.pcerts[1].pre_prepare.digest
    _silence_primary_and_tick(c)
    for n in c.nodes[1:]:
        assert n.height == 1
        assert n.chain[0].block.hash() == digest
        assert n.chain[0].certificate.view == 1
        assert (
            n.replica.view_change_reasons["progress_timeout"]
            + n.replica.view_change_reasons["joined_f_plus_1"]
            >= 1
        )
    c.assert_agree()
    new_views = sent(c.nodes[1], NewView)
    assert new_views and new_views[0].pre_prepares[0].digest == digest


def test_null_fill_for_gaps_and_unlinked_blocks_4_4() -> None:
    """§4.4: heights with no prepared certificate, and blocks above them, become null blocks."""
    c = Cluster(4)
    # height 1 never prepares anywhere; height 2 prepares; nothing commits
    c.cut = lambda s, d, m: isinstance(m, Commit) or (isinstance(m, Prepare) and m.height == 1)
    c.propose([b"one"])
    c.propose([b"two"])
    assert {h for n in c.nodes[1:] for h in n.replica.pcerts} == {2}
    _silence_primary_and_tick(c, also=lambda m: isinstance(m, Prepare) and m.height == 1)
    for n in c.nodes[1:]:
        assert n.height == 2
        b1, b2 = n.chain[0].block, n.chain[1].block
        assert b1.header.is_null and b2.header.is_null
        assert b1.header.parent_hash == GENESIS_HASH and b2.header.parent_hash == b1.hash()
        assert b1.header.proposer == c.keys[1].public and b1.header.timestamp_ms == 0
        assert b1.header.tx_root == merkle.EMPTY_ROOT
    c.assert_agree()
    # the new primary builds on the null blocks
    c.cut = lambda s, d, m: s == 0 or d == 0
    node1 = c.nodes[1]
    assert node1.replica.propose([b"three"], 5)
    c.process(node1)
    c.pump()
    assert [n.height for n in c.nodes[1:]] == [3, 3, 3]


def test_new_view_with_forged_o_rejected_4_4() -> None:
    """§4.4: backups re-derive O from the VIEW-CHANGEs and reject a NEW-VIEW that differs."""
    c = Cluster(4)
    c.cut = lambda s, d, m: isinstance(m, Commit)
    c.propose([b"prepared"])
    vcs: dict[bytes, ViewChange] = {}

    def cut(s: int, d: int, m: object) -> bool:
        if isinstance(m, ViewChange):
            vcs[m.replica] = m
        return s == 0 or d == 0 or isinstance(m, NewView) or (s == 1 and d != 1)

    c.cut = cut
    for node in c.nodes:
        node.replica.note_pending(1)
    for _ in range(200):
        c.tick()
        if len([v for v in vcs.values() if v.new_view == 1]) >= 3:
            break
    chosen = tuple(v for v in vcs.values() if v.new_view == 1)[:3]
    # the new primary (node 1) drops the prepared block: O says "null" at height 1
    from consensus.certificates import null_header

    null = Block(null_header(c.config.limits, c.vset, 1, 1, GENESIS_HASH, 0), ())
    forged = sign(
        c.keys[1],
        CHAIN_ID,
        NewView(1, chosen, (pre_prepare(c.keys[1], 1, null),), c.keys[1].public, NO_SIGNATURE),
    )
    r2 = c.nodes[2].replica
    r2.step(forged, c.keys[1].public)
    assert r2.dropped["bad_new_view"] == 1
    assert r2.view == 0 and r2.changing_view == 2  # moves on to the next view
    # and a NEW-VIEW with too few VIEW-CHANGEs is refused too
    short = sign(c.keys[1], CHAIN_ID, NewView(1, chosen[:2], (), c.keys[1].public, NO_SIGNATURE))
    c.nodes[3].replica.step(short, c.keys[1].public)
    assert c.nodes[3].replica.dropped["bad_new_view"] == 1


def test_f_plus_one_view_changes_make_a_replica_join_4_5_2() -> None:
    """§4.5.2: a replica that receives f+1 VIEW-CHANGEs for higher views joins the smallest."""
    c = Cluster(4)
    r3 = c.nodes[3].replica
    for i in (1, 2):
        vc = sign(c.keys[i], CHAIN_ID, ViewChange(1, 0, (), (), c.keys[i].public, NO_SIGNATURE))
        r3.step(vc, c.keys[i].public)
        if i == 1:
            assert not r3.in_view_change  # f = 1: one is not enough
    assert r3.in_view_change and r3.changing_view == 1
    assert r3.view_change_reasons["joined_f_plus_1"] == 1


def test_view_change_timeout_backs_off_exponentially_4_5_2() -> None:
    """§4.5.2: each consecutive view change waits longer (capped), with jitter from the rng."""
    c = Cluster(4, view_change_timeout_ticks=10)
    c.cut = lambda s, d, m: not isinstance(m, ViewChange)  # no NEW-VIEW ever arrives
    for node in c.nodes:
        node.replica.note_pending(1)
    r = c.nodes[1].replica
    starts = []
    for t in range(1, 600):
        before = r.changing_view
        c.tick()
        if r.changing_view != before:
            starts.append(t)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(gaps) >= 3 and gaps[1] > gaps[0] and gaps[2] > gaps[1], starts


def test_new_view_timer_waits_for_a_quorum_of_view_changes_4_5_2() -> None:
    """§4.5.2: alone in a view change, a replica does not race on to ever higher views."""
    c = Cluster(4, view_change_timeout_ticks=10)
    c.cut = lambda s, d, m: True
    r = c.nodes[1].replica
    r.note_pending(1)
    for _ in range(500):
        r.tick()
    assert r.in_view_change and r.changing_view == 1


# -- journal and restart ---------------------------------------------------------------


def test_restart_refuses_conflicting_vote_from_journal() -> None:
    """DESIGN §3: after a crash the journal makes the replica refuse a conflicting PREPARE."""
    c = Cluster(4)
    c.cut = lambda s, d, m: isinstance(m, (Commit, Prepare))
    c.propose([b"first"])
    assert any(k.startswith(b"vote/") for k in c.nodes[1].journal)
    c.restart(1)
    r = c.nodes[1].replica
    other = make_block(c, 1, 0, (b"second",), GENESIS_HASH, c.keys[0].public)
    r.step(pre_prepare(c.keys[0], 0, other), c.keys[0].public)
    assert r.dropped["refused_conflicting_vote"] == 1
    assert not any(
        isinstance(o.message, Prepare) for o in (r.ready().messages if r.has_ready() else ())
    )


def test_restart_never_votes_below_a_view_it_asked_to_leave() -> None:
    c = Cluster(4)
    c.cut = lambda s, d, m: True
    r = c.nodes[2].replica
    r.note_pending(1)
    while not r.in_view_change:
        r.tick()
    c.process(c.nodes[2])
    c.restart(2)
    r = c.nodes[2].replica
    assert r.in_view_change and r.changing_view == 1 and r.view == 0
    block = make_block(c, 1, 0, (b"late",), GENESIS_HASH, c.keys[0].public)
    r.step(pre_prepare(c.keys[0], 0, block), c.keys[0].public)
    assert not any(
        isinstance(o.message, Prepare) for o in (r.ready().messages if r.has_ready() else ())
    )


def test_restart_keeps_prepared_certificates_for_view_change() -> None:
    """A replica that sent COMMIT still reports the prepared certificate after a crash."""
    c = Cluster(4)
    c.cut = lambda s, d, m: isinstance(m, Commit) and d != s
    c.propose([b"x"])
    c.restart(3)
    r = c.nodes[3].replica
    assert 1 in r.pcerts
    digest = r.pcerts[1].pre_prepare.digest
    assert r.slots[1].blocks[digest].txs == (b"x",)  # still able to deliver it by digest


# -- catch-up ----------------------------------------------------------------------------


def test_catch_up_after_missing_1000_blocks_verifies_certificates() -> None:
    """DESIGN §3 catch-up: a replica 1,000 blocks behind fetches certified blocks and rejoins."""
    c = Cluster(4, checkpoint_interval=16, pipeline_depth=4)
    c.nodes[3].up = False
    c.run_blocks(1000, txs_per_block=1)
    assert c.heights()[:3] == [1000] * 3 and c.nodes[3].height == 0
    c.nodes[3].up = True
    checks_before = c.verifier.checks
    for _ in range(100):
        c.tick()
        if c.nodes[3].height == 1000:
            break
    assert c.nodes[3].height == 1000
    assert not c.nodes[3].replica.catching_up
    assert c.verifier.checks - checks_before >= 1000 * c.vset.quorum
    c.assert_agree()
    c.run_blocks(3)
    assert c.heights() == [1003] * 4


def test_forged_certificate_rejected_in_catch_up() -> None:
    """A certified block whose signatures do not check is never applied."""
    c = Cluster(4)
    c.run_blocks(1)
    good = c.nodes[0].chain[0]
    fresh = Cluster(4)
    r = fresh.nodes[3].replica
    cert = good.certificate
    variants = {
        "certificate_bad_signatures": CommitCertificate(
            cert.view,
            1,
            cert.digest,
            0,
            tuple(CommitSignature(s.replica, b"\x00" * 64) for s in cert.signatures),
        ),
        "certificate_bad_signatures#dup": CommitCertificate(
            cert.view, 1, cert.digest, 0, (cert.signatures[0],) * 3
        ),
        "certificate_wrong_epoch": CommitCertificate(cert.view, 1, cert.digest, 7, cert.signatures),
        "certificate_mismatch": CommitCertificate(cert.view, 1, b"\x09" * 32, 0, cert.signatures),
    }
    for reason, bad in variants.items():
        r.step(BlockResponse((CertifiedBlock(good.block, bad),)), c.keys[0].public)
        assert r.dropped[reason.split("#")[0]] >= 1, reason
    assert r.committed_height == 0
    tampered = Block(good.block.header, (b"other",))
    r.step(BlockResponse((CertifiedBlock(tampered, cert),)), c.keys[0].public)
    assert r.committed_height == 0
    r.step(BlockResponse((good,)), c.keys[0].public)
    assert r.committed_height == 1


# -- evidence, bounds, garbage ------------------------------------------------------------


def test_equivocation_yields_evidence_once() -> None:
    """DESIGN §3: two signed PREPAREs from one validator for one (view, height) are evidence."""
    c = Cluster(4)
    r = c.nodes[1].replica
    k = c.keys[2]
    a = sign(k, CHAIN_ID, Prepare(0, 1, b"\x01" * 32, k.public, NO_SIGNATURE))
    b = sign(k, CHAIN_ID, Prepare(0, 1, b"\x02" * 32, k.public, NO_SIGNATURE))
    for m in (a, b, b, a):
        r.step(m, k.public)
    ready = r.ready()
    assert len(ready.evidence) == 1 and len(r.evidence) == 1
    ev = ready.evidence[0]
    assert ev.replica == k.public and ev.view == 0 and ev.height == 1
    r.advance(ready)


def test_memory_bounded_under_flood() -> None:
    """Every buffer keyed by peer input has a named maximum; the excess is dropped and counted."""
    c = Cluster(4)
    r = c.nodes[1].replica
    k = c.keys[2]
    for i in range(5000):
        p = Prepare(5 + i, 1, b"\x01" * 32, k.public, b"\x00" * 64)  # future views
        r.step(p, k.public)
    quota = c.config.future_messages_max // 4
    assert sum(len(v) for v in r.future.values()) == quota
    assert r.dropped["future_buffer_full"] == 5000 - quota
    for h in range(1, 5000):
        p = sign(k, CHAIN_ID, Prepare(0, h, b"\x01" * 32, k.public, NO_SIGNATURE))
        r.step(p, k.public)
    assert len(r.slots) <= c.config.window
    assert r.dropped["above_window"] == 4999 - r.high_watermark
    for i in range(3000):
        pp = pre_prepare(
            c.keys[0], 0, make_block(c, 2, 0, (b"%d" % i,), b"\x07" * 32, c.keys[0].public)
        )
        r.step(pp, c.keys[0].public)
    assert len(r.held) <= c.config.held_pre_prepares_max


def test_peer_garbage_dropped_never_raised() -> None:
    c = Cluster(4)
    r = c.nodes[1].replica
    r.step(object(), c.keys[0].public)
    r.step(b"bytes", c.keys[0].public)
    stranger = Key(42)
    p = sign(stranger, CHAIN_ID, Prepare(0, 1, b"\x01" * 32, stranger.public, NO_SIGNATURE))
    r.step(p, stranger.public)
    q = sign(c.keys[2], "other-chain", Prepare(0, 1, b"\x01" * 32, c.keys[2].public, NO_SIGNATURE))
    r.step(q, c.keys[2].public)
    r.step(Prepare(0, 1, b"\x01", c.keys[2].public, b""), c.keys[2].public)  # malformed fields
    assert r.dropped["unknown_type"] == 2
    assert r.dropped["not_validator"] == 1
    assert r.dropped["bad_signature"] >= 2


def test_observer_follows_without_voting() -> None:
    """An observer (no signer) commits the chain from COMMITs and sends no vote."""
    c = Cluster(4, observers=1)
    c.run_blocks(6)
    observer = c.nodes[4]
    assert observer.height == 6
    c.assert_agree()
    assert not [o for r in observer.readies for o in r.messages]
    assert not observer.replica.is_validator


def test_api_misuse_raises_named_error() -> None:
    c = Cluster(4)
    r = c.nodes[1].replica
    with pytest.raises(ReplicaUsageError):
        r.executed(1, b"\x00" * 32)  # nothing committed yet
    with pytest.raises(ReplicaUsageError):
        r.advance(Ready((), (), (), (), ()))
    with pytest.raises(ReplicaUsageError):
        r.note_pending(-1)
    with pytest.raises(ReplicaUsageError):
        r.add_epoch(3, c.vset)  # not after a checkpoint boundary


# -- membership ---------------------------------------------------------------------------


def test_epoch_change_at_checkpoint_boundary_and_certificates_name_it() -> None:
    """DESIGN §3 membership: a new set takes over after a checkpoint; certificates name the epoch."""
    from consensus.replica import ValidatorSet

    c = Cluster(4, checkpoint_interval=4, pipeline_depth=2)
    c.run_blocks(4)
    smaller = ValidatorSet(1, c.vset.validators[:3])
    with pytest.raises(ReplicaUsageError):
        c.nodes[0].replica.add_epoch(5, smaller)  # heights up to 4 + depth may be in flight
    for node in c.nodes:
        node.replica.add_epoch(9, smaller)
    c.epochs = (*c.epochs, (9, smaller))
    c.run_blocks(8)
    assert c.heights()[:3] == [12, 12, 12]
    c.assert_agree()
    chain = c.nodes[0].chain
    assert [cb.certificate.epoch for cb in chain] == [0] * 8 + [1] * 4
    assert chain[8].block.header.validator_set_hash == smaller.hash()
    assert all(len(cb.certificate.signatures) == smaller.quorum for cb in chain[8:])
    assert not [m for m in sent(c.nodes[3], Commit) if m.height >= 9]
    # a fresh replica verifies each certificate against the epoch in force at its height
    fresh = Cluster(4, checkpoint_interval=4, pipeline_depth=2)
    fresh.epochs = c.epochs
    fresh.restart(1)
    r = fresh.nodes[1].replica
    r.step(BlockResponse(tuple(chain[:12])), c.keys[0].public)
    fresh.process(fresh.nodes[1])
    assert r.committed_height == 12
    # one that never learns the epoch commits only heights whose epoch is settled
    # (an epoch could start at 5 until it has executed 3: 5 <= executed + pipeline_depth),
    # keeps the rest until execution settles them, then drops 9..12
    bare = Cluster(4, checkpoint_interval=4, pipeline_depth=2)
    unaware = bare.nodes[1]
    unaware.replica.step(BlockResponse(tuple(chain[:12])), c.keys[0].public)
    assert unaware.replica.committed_height == 4
    assert len(unaware.replica.waiting_blocks) == 8
    bare.process(unaware)
    assert unaware.replica.committed_height == 8 and not unaware.replica.waiting_blocks
    assert unaware.replica.dropped["wrong_epoch"] == 1


def test_whole_cluster_restart_resumes_from_journal_and_chain() -> None:
    """Every replica crashes at once; restarted from journal + chain they carry on without forking."""
    c = Cluster(4, checkpoint_interval=4, pipeline_depth=2)
    c.run_blocks(9)
    for i in range(4):
        c.restart(i)
    assert all(n.replica.committed_height == 9 for n in c.nodes)
    assert all(n.replica.stable_checkpoint[0] == 8 for n in c.nodes)
    c.run_blocks(5)
    assert c.heights() == [14] * 4
    c.assert_agree()


def test_observer_follows_gossiped_certified_blocks() -> None:
    """An observer that hears no votes follows the chain from gossiped certified blocks."""
    c = Cluster(4, observers=1)
    c.cut = lambda s, d, m: d == 4  # the observer hears nothing directly
    c.run_blocks(5)
    observer = c.nodes[4]
    assert observer.height == 0
    c.cut = lambda s, d, m: False
    observer.replica.step(c.nodes[0].chain[4], c.keys[0].public)  # gossip of block 5
    assert observer.replica.catching_up
    c.process(observer)
    c.pump()
    assert observer.height == 5
    c.assert_agree()


def test_messages_from_f_plus_1_peers_far_ahead_start_catch_up() -> None:
    """Messages above the window from f+1 peers are evidence of being behind."""
    c = Cluster(4, checkpoint_interval=4)
    r = c.nodes[3].replica
    far = r.high_watermark + 50
    for i in (0, 1):
        k = c.keys[i]
        r.step(sign(k, CHAIN_ID, Commit(0, far, b"\x01" * 32, k.public, NO_SIGNATURE)), k.public)
        assert r.catching_up == (i == 1)
    requests = [o for o in r.ready().messages if type(o.message).__name__ == "BlockRequest"]
    assert requests and requests[0].message.from_height == 1


def test_status_at_height_0_is_heard() -> None:
    """A fresh chain's validators announce height 0; that they were heard counts (readiness
    asks for f+1 peers' heights), so it is recorded, and starts no catch-up."""
    c = Cluster(4)
    c.tick(c.config.status_interval_ticks)
    for n in c.nodes:
        others = {k.public for k in c.keys} - {n.replica.node_id}
        assert n.replica.peer_heights == dict.fromkeys(others, 0)
        assert not n.replica.catching_up


def test_a_new_link_is_greeted_with_our_height_and_a_restarted_node_starts_catching_up() -> None:
    """`peer_connected`: a validator tells the peer its height at once (observers announce
    nothing); a node far behind that hears it from f+1 peers fetches without waiting for
    the periodic status."""
    c = Cluster(4, observers=1, checkpoint_interval=4)
    c.run_blocks(3)
    late = c.nodes[3].replica
    late.ready()
    for i in (0, 1, 4):
        c.nodes[i].replica.ready()
        c.nodes[i].replica.peer_connected(c.link_id(3))
    greetings = [
        (i, o.to, o.message)
        for i in (0, 1, 4)
        for o in c.nodes[i].replica.ready().messages
        if isinstance(o.message, StatusAnnouncement)
    ]
    assert [(i, to) for i, to, _ in greetings] == [(0, c.link_id(3)), (1, c.link_id(3))]
    fresh = Cluster(4, checkpoint_interval=4).nodes[3].replica  # at height 0, never ticked
    fresh.ready()
    for _, _, sa in greetings:
        fresh.step(sa, sa.replica)
    assert fresh.catching_up and fresh.ticks == 0
    requests = [o.message for o in fresh.ready().messages if isinstance(o.message, BlockRequest)]
    assert requests and requests[0].from_height == 1


def test_a_pending_new_view_is_checked_once_not_on_every_commit_of_the_catch_up() -> None:
    """A replica far behind keeps a NEW-VIEW whose base it has not reached and retries it
    on each commit; its q VIEW-CHANGEs are checked once. Re-checking them on every commit
    (whole blocks and hundreds of signatures each time) made a re-syncing validator of the
    long fault run crawl at ~15 blocks/s while the cluster changed views."""
    c = Cluster(7, checkpoint_interval=4, pipeline_depth=2)
    c.cut = lambda s, d, m: s == 6 or d == 6
    for _ in range(12):
        c.run_blocks(1)  # (its step budget is per block: 7 nodes send many messages)
    c.cut = lambda s, d, m: s in (0, 6) or d in (0, 6)  # the primary falls silent too
    for node in c.nodes:
        node.replica.note_pending(1)
    for _ in range(400):
        if all(n.replica.view == 1 and not n.replica.in_view_change for n in c.nodes[1:6]):
            break
        c.tick()
    c.cut = lambda s, d, m: True  # the test now delivers to node 6 by hand
    nv = sent(c.nodes[1], NewView)[0]
    assert base_height(nv.view_changes) >= 8
    late = c.nodes[6].replica
    assert late.committed_height == 0
    late.step(nv, nv.replica)
    assert late.pending_new_view is nv and late.catching_up
    chain = c.nodes[1].chain
    before = c.verifier.checks
    for cb in chain:
        late.step(BlockResponse((cb,)), c.keys[1].public)
        assert late.committed_height == cb.block.height
        c.process(c.nodes[6])  # execute it (sends are cut)
    certificate_checks = sum(len(cb.certificate.signatures) for cb in chain)
    assert c.verifier.checks - before <= certificate_checks
    assert late.pending_new_view is None and late.view == nv.view  # adopted once reached


def test_an_epoch_is_settled_only_up_to_executed_plus_pipeline_depth() -> None:
    """The heights whose votes a replica counts: none past a boundary where an epoch could
    still start (`add_epoch` takes first heights above executed + pipeline_depth)."""
    c = Cluster(4, checkpoint_interval=4, pipeline_depth=2)
    r = c.nodes[0].replica
    assert r.executed_height == 0
    assert [h for h in range(1, 12) if r._epoch_settled(h)] == [1, 2, 3, 4]
    c.run_blocks(3)
    assert r.executed_height == 3  # 3 + 2 reaches the start 5: heights 5-8 settle
    assert [h for h in range(1, 12) if r._epoch_settled(h)] == list(range(1, 9))


def test_a_restarted_replica_signs_its_unstable_checkpoints_again_and_they_stabilize() -> None:
    """Every CHECKPOINT lost (to crashes), then every replica restarted: the own
    checkpoints are in the journal but the signed messages were not; they are signed
    again on restart and retransmitted, so the checkpoint becomes stable (a view change
    at an epoch boundary waits for exactly that; simulator seed 41226 stalled forever)."""
    c = Cluster(4, checkpoint_interval=4, pipeline_depth=2)
    c.cut = lambda s, d, m: isinstance(m, Checkpoint)
    c.run_blocks(4)
    assert [n.replica.stable_height for n in c.nodes] == [0, 0, 0, 0]
    assert all(4 in n.replica.own_checkpoints for n in c.nodes)
    for i in range(4):
        c.restart(i)
    c.cut = lambda s, d, m: False
    for node in c.nodes:
        assert node.replica.checkpoints[4][node.key.public].state_root == (
            node.replica.own_checkpoints[4].state_root
        )
        node.replica.note_pending(1)  # work pending: the retransmission timer runs
    c.tick(2 * c.config.retransmit_ticks)
    assert [n.replica.stable_height for n in c.nodes] == [4, 4, 4, 4]


def test_a_checkpoint_lost_to_a_crash_before_it_was_journaled_is_made_on_restart() -> None:
    c = Cluster(4, checkpoint_interval=4, pipeline_depth=2)
    c.cut = lambda s, d, m: isinstance(m, Checkpoint)
    c.run_blocks(4)
    node = c.nodes[1]
    key = next(k for k in node.journal if node.replica.own_checkpoints.get(4) is not None
               and k == journal_codec.checkpoint_key(4))  # fmt: skip
    del node.journal[key]  # as if the node crashed before writing it
    c.restart(1)
    r = node.replica
    assert 4 in r.own_checkpoints and node.key.public in r.checkpoints[4]


def test_view_change_carries_committed_blocks_stripped_and_laggards_fetch_them_4_4() -> None:
    """VIEW-CHANGE/NEW-VIEW carry headers only for heights the sender committed: small
    under load; a replica that lacks such a block fetches it with its certificate."""
    c = Cluster(4)
    c.cut = lambda s, d, m: isinstance(m, Commit) and d == 3
    c.propose([b"one", b"uno"])
    assert c.heights() == [1, 1, 1, 0]
    c.cut = lambda s, d, m: isinstance(m, Commit)
    c.propose([b"two"])
    _silence_primary_and_tick(c)
    c.cut = lambda s, d, m: s == 0 or d == 0
    c.tick(3 * c.config.catchup_retry_ticks)
    assert [n.height for n in c.nodes[1:]] == [2, 2, 2]
    c.assert_agree()
    assert c.nodes[3].chain[0].block.txs == (b"one", b"uno")
    vc1 = next(v for v in sent(c.nodes[1], ViewChange) if v.new_view == 1)
    certs = {pc.pre_prepare.height: pc.pre_prepare.block for pc in vc1.prepared}
    assert certs[1].txs == () and certs[1].header.tx_count == 2  # committed: header only
    assert certs[2].txs == (b"two",)  # not committed: the whole block
    nv = sent(c.nodes[1], NewView)[0]
    assert [pp.block.txs for pp in nv.pre_prepares] == [(), (b"two",)]


def test_committed_heights_keep_their_prepared_certificates_without_transactions() -> None:
    """Certificates stay until a stable checkpoint, but a committed height's is kept
    stripped (as VIEW-CHANGE would carry it): memory does not hold a window of blocks."""
    c = Cluster(4)
    c.cut = lambda s, d, m: isinstance(m, Commit) and d == 3
    c.propose([b"one", b"uno"])
    assert c.heights() == [1, 1, 1, 0]
    for node in c.nodes[1:3]:
        pc = node.replica.pcerts[1]
        assert pc.pre_prepare.block.txs == () and pc.pre_prepare.block.header.tx_count == 2
        assert pc.pre_prepare.digest == node.chain[0].block.hash()
    # not committed: the whole block stays, it may have to be re-proposed
    assert c.nodes[3].replica.pcerts[1].pre_prepare.block.txs == (b"one", b"uno")


# -- catch-up across a membership change ----------------------------------------------------


def _epoch_change_cluster(before: bool) -> tuple[Cluster, Any]:
    """n=4 + 1 observer; executing height 4 schedules a 3-validator epoch from height 9.
    The observer is down until the validators reach height 12."""
    from consensus.replica import ValidatorSet

    c = Cluster(4, observers=1, checkpoint_interval=4, pipeline_depth=2)
    c.add_epoch_before_executed = before
    smaller = ValidatorSet(1, c.vset.validators[:3])
    c.decisions[4] = (9, smaller)
    c.nodes[4].up = False
    c.run_blocks(12)
    assert c.heights()[:3] == [12, 12, 12] and c.nodes[4].height == 0
    c.nodes[4].up = True
    c.restart(4)  # knows the genesis epoch only
    return c, smaller


@pytest.mark.parametrize("before", [True, False], ids=["node_order", "sim_order"])
def test_observer_behind_a_membership_change_fetches_on_gossip_it_cannot_check(
    before: bool,
) -> None:
    """Gossip of a block of an unknown epoch cannot be verified, but it is a hint: the
    observer asks the sender for the heights it misses. The fetched blocks of the new
    epoch wait until executing the deciding block teaches it the epoch, then verify."""
    c, smaller = _epoch_change_cluster(before)
    observer = c.nodes[4]
    r = observer.replica
    c.cut = lambda s, d, m: d == 4 and not isinstance(m, BlockResponse)  # gossip only
    tip = c.nodes[0].chain[11]
    r.step(tip, c.keys[0].public)
    assert r.dropped["epoch_unknown"] == 1 and not r.catching_up
    assert r.hints == {c.keys[0].public: 12}
    c.tick(c.config.catchup_retry_ticks)  # idle for a retry interval: ask
    assert observer.height == 12
    c.assert_agree()
    assert r.schedule.at(12) == smaller
    assert r.dropped["wrong_epoch"] == 0 and not r.waiting_blocks and not r.hints
    requests = [o for rd in observer.readies for o in rd.messages]
    assert len(requests) == 1  # one BlockRequest: 1..8 committed, 9..12 waited, then verified
    assert (requests[0].to, requests[0].message.from_height) == (c.keys[0].public, 1)


def test_unverifiable_claims_cost_one_request_and_never_stop_progress() -> None:
    """A Byzantine peer's claims the replica cannot check (a block of an unknown epoch,
    a status from a non-member) never make it `catching_up`, and blocks it serves that
    wait for an epoch are verified before anything is applied."""
    c, _ = _epoch_change_cluster(True)
    observer = c.nodes[4]
    r = observer.replica
    c.cut = lambda s, d, m: d == 4 and not isinstance(m, BlockResponse)
    chain = c.nodes[0].chain
    liar = c.keys[3]
    forged = [
        CertifiedBlock(
            cb.block,
            CommitCertificate(
                cb.certificate.view,
                cb.block.height,
                cb.certificate.digest,
                1,
                tuple(CommitSignature(s.replica, b"\x01" * 64) for s in cb.certificate.signatures),
            ),
        )
        for cb in chain[8:12]
    ]
    r.step(StatusAnnouncement(10**9, 0, b"\x07" * 32), b"\x07" * 32)  # not a member: a hint
    assert not r.catching_up and r.hints[b"\x07" * 32] == 10**9
    # the liar serves 1..8 honestly, then 9..12 with forged signatures: 5.. wait until
    # execution settles their epoch (see test_epoch_change_at_checkpoint_boundary...),
    # then 5..8 commit and 9..12 fail
    r.step(BlockResponse((*chain[:8], *forged)), liar.public)
    assert r.committed_height == 4 and len(r.waiting_blocks) == 8
    c.process(observer)
    assert observer.height == 8 and not r.waiting_blocks
    assert r.dropped["certificate_bad_signatures"] == 1
    assert not r.catching_up
    # the next gossip now checks (the epoch is known): ordinary catch-up finishes the job
    r.step(chain[11], c.keys[0].public)
    assert r.catching_up
    c.tick(2 * c.config.catchup_retry_ticks)
    assert observer.height == 12
    c.assert_agree()
    # hints are bounded and spent when used
    for i in range(200):
        r.step(StatusAnnouncement(10**6 + i, 0, b"%032d" % i), b"%032d" % i)
    assert len(r.hints) <= 64


def test_a_validator_keeps_proposing_despite_unverifiable_claims() -> None:
    """Gossip of a far block naming an unknown epoch does not stop a validator."""
    c = Cluster(4)
    c.run_blocks(2)
    r = c.nodes[1].replica
    good = c.nodes[0].chain[1]
    header = dataclasses.replace(good.block.header, height=10**6, epoch=9)
    fake = CertifiedBlock(
        Block(header, good.block.txs),
        dataclasses.replace(good.certificate, height=10**6, epoch=9),
    )
    r.step(fake, c.keys[2].public)
    assert r.dropped["epoch_unknown"] == 1 and not r.catching_up
    c.run_blocks(3)
    assert c.heights() == [5] * 4


def test_catch_up_waits_for_concurrent_execution_instead_of_wasting_responses() -> None:
    """The node may execute committed blocks concurrently: a replica catching up asks for
    the next heights only once execution has room for half a request, then at once; and
    it commits fetched blocks only up to the heights whose epoch execution has settled,
    keeping the rest until it has (an epoch could start at 65 until 61 is executed)."""
    c = Cluster(4, checkpoint_interval=64, pipeline_depth=4)
    c.nodes[3].up = False
    c.run_blocks(200, txs_per_block=1)
    chain = c.nodes[0].chain
    r = Cluster(4, checkpoint_interval=64, pipeline_depth=4).nodes[3].replica
    peer = c.keys[0].public

    def requests() -> list[BlockRequest]:
        ready = r.ready()
        r.advance(ready)
        return [o.message for o in ready.messages if isinstance(o.message, BlockRequest)]

    r.step(chain[199], peer)  # gossip: certified, far ahead
    assert r.catching_up and [(q.from_height, q.to_height) for q in requests()] == [(1, 64)]
    r.step(BlockResponse(tuple(chain[:64])), peer)
    assert r.committed_height == 64 and r.executed_height == 0
    assert requests() == []  # no room: execution has not started
    r.step(BlockResponse(tuple(chain[64:128])), peer)  # unasked-for: dropped, not applied
    assert r.committed_height == 64 and r.dropped["catchup_ahead_of_execution"] == 1
    roots = [GENESIS_ROOT]

    def execute(upto: int) -> list[tuple[int, int]]:
        asked = []
        for h in range(r.executed_height + 1, upto + 1):
            roots.append(sha256(roots[-1] + chain[h - 1].block.hash()))
            r.executed(h, roots[-1])
            asked += [(q.from_height, q.to_height) for q in requests()]
        return asked

    assert execute(31) == []
    assert execute(32) == [(65, 96)]
    r.step(BlockResponse(tuple(chain[64:96])), peer)
    assert r.committed_height == 64 and len(r.waiting_blocks) == 32  # 65.. not settled
    assert r.dropped["epoch_unknown"] == 0  # waiting, not dropped
    assert execute(60) == [] and r.committed_height == 64
    execute(61)  # 61 + pipeline_depth reaches 65: no epoch can start there any more
    assert r.committed_height == 96 and not r.waiting_blocks


def test_a_new_epoch_starts_only_once_the_height_below_it_commits_4_4() -> None:
    """Each (view, height) has one primary, so no prepared certificate (and no view
    change) may span an epoch boundary: the first height of a new epoch is neither
    pre-prepared nor accepted until the height below it is committed."""
    from consensus.replica import ValidatorSet

    c = Cluster(4, checkpoint_interval=4, pipeline_depth=2)
    c.run_blocks(4)
    rotated = ValidatorSet(1, c.vset.validators)  # same primary order, a new epoch
    for node in c.nodes:
        node.replica.add_epoch(9, rotated)
    c.epochs = (*c.epochs, (9, rotated))
    c.run_blocks(3)
    assert c.heights() == [7, 7, 7, 7]
    c.cut = lambda s, d, m: isinstance(m, Commit)
    primary, backup = c.nodes[0], c.nodes[1]
    assert c.propose([b"eight"])
    assert all(n.replica.slots[8].pre_prepare is not None for n in c.nodes)
    # height 9 is of epoch 1, height 8 is not committed: the primary waits ...
    assert not primary.replica.wants_proposal()
    assert not primary.replica.propose([b"nine"], 2000)
    # ... and a backup holds such a pre-prepare instead of accepting it
    eight = backup.replica.slots[8].pre_prepare.block
    block = make_block(c, 9, 0, (b"nine",), eight.hash(), primary.node_id, backup.roots[7], 2000)
    header = dataclasses.replace(block.header, epoch=1, validator_set_hash=rotated.hash())
    pp = pre_prepare(c.keys[0], 0, Block(header=header, txs=block.txs))
    backup.replica.step(pp, primary.node_id)
    c.process(backup)
    assert backup.replica.held == [pp]
    assert backup.replica.slots.get(9) is None or backup.replica.slots[9].pre_prepare is None
    assert not [m for m in sent(backup, Prepare) if m.height == 9]
    # once 8 commits, the held pre-prepare is accepted and the new epoch goes on
    c.cut = lambda s, d, m: False
    for n in c.nodes:
        for m in sent(n, Commit):
            if m.height == 8:
                for other in c.nodes:
                    if other is not n:
                        other.replica.step(m, n.node_id)
                        c.process(other)
    c.pump()
    assert backup.height >= 8
    assert backup.replica.slots[9].pre_prepare == pp
    assert [m for m in sent(backup, Prepare) if m.height == 9]


def test_new_view_is_not_formed_across_an_epoch_boundary_4_4() -> None:
    """A NEW-VIEW whose re-proposals would span two epochs (VIEW-CHANGEs with a checkpoint
    below the boundary) is not sent; once the checkpoint just below the boundary is
    stable, the VIEW-CHANGEs are re-sent with it and O starts in the new epoch."""
    from consensus.replica import ValidatorSet
    from consensus.types import Checkpoint

    c = Cluster(4, checkpoint_interval=4, pipeline_depth=2)
    c.run_blocks(4)
    vals = c.vset.validators
    rotated = ValidatorSet(1, (*vals[1:], vals[0]))  # view v's primary differs per epoch
    for node in c.nodes:
        node.replica.add_epoch(9, rotated)
    c.epochs = (*c.epochs, (9, rotated))
    no_cp8 = lambda m: isinstance(m, Checkpoint) and m.height == 8  # noqa: E731
    c.cut = lambda s, d, m: no_cp8(m)
    c.run_blocks(4)
    assert c.heights() == [8, 8, 8, 8] and all(n.replica.stable_height == 4 for n in c.nodes)
    c.cut = lambda s, d, m: no_cp8(m) or isinstance(m, Commit)
    first = c.nodes[1]  # view 0's primary in epoch 1
    assert first.replica.propose([b"nine"], 2000)
    c.process(first)
    c.pump()
    assert all(9 in n.replica.pcerts for n in c.nodes)
    # the epoch-1 primary goes silent; checkpoint 8 is still not stable
    c.cut = lambda s, d, m: s == 1 or d == 1 or no_cp8(m) or isinstance(m, Commit)
    for node in c.nodes:
        node.replica.note_pending(1)
    new_primary = c.nodes[2]  # view 1's primary in epoch 1 (committed + 1 = 9)
    for _ in range(400):
        c.tick()
        if new_primary.replica.dropped["new_view_spans_epochs"]:
            break
    assert new_primary.replica.dropped["new_view_spans_epochs"] >= 1
    assert not sent(new_primary, NewView)  # O = 5..9 would span epochs 0 and 1
    # checkpoint 8 gets through: VIEW-CHANGEs are re-sent with it and O is just [9]
    c.cut = lambda s, d, m: s == 1 or d == 1
    for _ in range(400):
        if all(c.nodes[i].height == 9 for i in (0, 2, 3)):
            break
        c.tick()
    assert [c.nodes[i].height for i in (0, 2, 3)] == [9, 9, 9]
    new_views = sent(new_primary, NewView)  # one NEW-VIEW, perhaps re-sent
    assert new_views and all(nv == new_views[0] for nv in new_views)
    assert max(vc.stable_height for vc in new_views[0].view_changes) == 8
    assert [pp.height for pp in new_views[0].pre_prepares] == [9]
    assert all(c.nodes[i].chain[8].certificate.view == 1 for i in (0, 2, 3))
    c.assert_agree()
