"""Governance: proposals, threshold, expiry, one approval per agency, members, validators, epochs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from consensus.crypto import SigningKey, sha256
from node import governance
from node.app import Application, Code
from node.governance import GovError, decode_action, encode_action, next_boundary
from node.proofs import ProofError, build_record_bundle, build_tx_bundle, verify_bundle
from node.txs import build
from tests.unit.proof_chain import CHAIN, VALIDATORS, ProofChain, make_genesis

NEWCOMER = SigningKey(b"\x66" * 32)


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[ProofChain]:
    c = ProofChain(tmp_path / "chain")
    yield c
    c.close()


def status_of(chain: ProofChain, tx: bytes) -> int:
    loc = chain.store.get_tx(sha256(tx))
    assert loc is not None
    return loc.status


def propose(chain: ProofChain, member: int, kind: str, *args: object) -> bytes:
    return chain.tx(member, "gov.propose", "gov", encode_action(kind, *args))


def approve(chain: ProofChain, member: int, pid: int) -> bytes:
    return chain.tx(member, "gov.approve", "gov", governance.approval_value(pid))


def newcomer_put(chain: ProofChain, agency: str = "agency0") -> bytes:
    chain.nonce += 1
    h = chain.store.head_height()
    return build(NEWCOMER, CHAIN, "put", agency, "k", "v", h + 50, chain.nonce)


def test_actions_round_trip_and_bad_ones_are_refused() -> None:
    raw = encode_action("add_validator", b"\x01" * 32, "agency0", "v5", "127.0.0.1:1")
    assert decode_action(raw)[0] == "add_validator"
    for bad in (
        ["nope"], ["add_agency", "Bad Id", "x"], ["add_member", "agency0", b"short"],
        ["set_param", "checkpoint_interval", 5], ["set_param", "tx_ttl_blocks_max", 0],
        ["remove_validator"],
    ):  # fmt: skip
        with pytest.raises(GovError):
            encode_action(*bad)
    assert next_boundary(5, 4) == 9 and next_boundary(8, 4) == 9 and next_boundary(9, 4) == 13


def test_a_member_added_by_vote_can_write_and_a_removed_one_cannot(chain: ProofChain) -> None:
    app = chain.app
    early = newcomer_put(chain)
    p = propose(chain, 0, "add_member", "agency0", NEWCOMER.public)
    chain.commit([early, p])
    assert status_of(chain, early) == Code.NOT_A_MEMBER
    assert status_of(chain, p) == Code.APPLIED
    assert app.proposal(1).status == "open"  # 1 of 3 agencies; 2/3 needed
    chain.commit([approve(chain, 1, 1)])
    assert app.proposal(1).status == "passed"
    assert app.proposal(1).approvals == ("agency0", "agency1")
    ok = newcomer_put(chain)
    assert not hasattr(app.check(ok, chain.store.head_height()), "code")
    chain.commit([ok])
    assert status_of(chain, ok) == Code.APPLIED
    chain.commit([propose(chain, 1, "remove_member", "agency0", NEWCOMER.public)])
    chain.commit([approve(chain, 2, 2)])
    assert app.proposal(2).status == "passed"
    late = newcomer_put(chain)
    assert app.check(late, chain.store.head_height()).code == "not_a_member"
    chain.commit([late])
    assert status_of(chain, late) == Code.NOT_A_MEMBER


def test_an_agency_approves_once_and_proposals_expire(tmp_path: Path) -> None:
    genesis = make_genesis()
    doc = genesis.to_dict()
    doc["params"]["proposal_ttl_blocks"] = 3
    from node.genesis import Genesis

    c = ProofChain(tmp_path / "c", Genesis.from_dict(doc))
    try:
        c.commit([propose(c, 0, "add_agency", "agency3", "Fourth")])
        again = approve(c, 0, 1)
        c.commit([again])
        assert status_of(c, again) == Code.GOV_REJECTED
        unknown = approve(c, 1, 99)
        c.commit([unknown])
        assert status_of(c, unknown) == Code.GOV_REJECTED
        c.advance(2)  # proposed at 1, expires after 1 + 3
        late = approve(c, 1, 1)
        c.commit([late])
        assert status_of(c, late) == Code.GOV_REJECTED
        assert c.app.proposal(1).to_json(c.store.head_height())["status"] == "expired"
        assert c.app.gov.agency("agency3") is None
    finally:
        c.close()


def test_parameters_change_by_vote(chain: ProofChain) -> None:
    chain.commit([propose(chain, 0, "set_param", "record_value_bytes_max", 4)])
    chain.commit([approve(chain, 2, 1)])
    assert chain.app.gov.params.record_value_bytes_max == 4
    big = chain.tx(0, "put", "k", "12345")
    assert chain.app.check(big, chain.store.head_height()).code == "value_too_large"


def test_validator_changes_make_epochs_that_verify_from_genesis(chain: ProofChain) -> None:
    fifth = VALIDATORS[4]
    chain.commit([propose(chain, 0, "add_validator", fifth.public, "agency1", "v4", "")])
    chain.commit([approve(chain, 1, 1)])  # passes at height 2
    (epoch,) = chain.app.gov.epochs
    assert epoch[0] == 1 and epoch[2][-1] == fifth.public
    assert epoch[1] == next_boundary(2 + 2 * 2, 4) == 9  # above height + 2 depth, at a boundary
    first = epoch[1]
    chain.advance(first - 1 - chain.store.head_height())
    assert chain.store.head_height() == first - 1
    chain.commit([chain.tx(2, "put", "after", "5 validators")])  # signed by epoch 1's quorum
    assert chain.store.head().certificate.epoch == 1
    assert len(chain.store.head().certificate.signatures) == 4  # quorum of 5
    # remove one of the genesis validators
    chain.commit([propose(chain, 0, "remove_validator", VALIDATORS[0].public)])
    chain.commit([approve(chain, 2, 2)])
    assert [e[0] for e in chain.app.gov.epochs] == [1, 2]
    second = chain.app.gov.epochs[1][1]
    chain.advance(second - chain.store.head_height())
    assert chain.store.head().certificate.epoch == 2
    assert VALIDATORS[0].public not in {
        s.replica for s in chain.store.head().certificate.signatures
    }
    put = chain.tx(1, "put", "late", "after both changes")
    chain.commit([put])
    chain.advance(3)
    bundle = json.loads(json.dumps(build_record_bundle(chain.store, chain.app, "agency1", b"late")))
    assert [e["epoch"] for e in bundle["epochs"]] == [1, 2]
    what = verify_bundle(bundle, chain.genesis)
    assert "2 epoch change(s) from genesis" in what and "epoch 2" in what
    tx_bundle = build_tx_bundle(chain.store, chain.app, sha256(put))
    verify_bundle(tx_bundle, chain.genesis)
    # without the epoch changes, the certificate is not the genesis set's
    stripped = dict(bundle, epochs=[])
    with pytest.raises(ProofError, match=r"epoch 0 .* is in force"):
        verify_bundle(stripped, chain.genesis)
    # an epoch change whose validators were altered does not verify
    forged = json.loads(json.dumps(bundle))
    forged["epochs"][0]["validators"][0] = VALIDATORS[5].public.hex()
    with pytest.raises(ProofError, match=r"epochs\[0\].proof"):
        verify_bundle(forged, chain.genesis)
    # a restarted application finds the same governance state and epochs
    again = Application(chain.store, chain.genesis)
    assert again.gov == chain.app.gov and again.epochs() == chain.app.epochs()


def test_removing_the_last_validator_or_a_busy_agency_fails_cleanly(chain: ProofChain) -> None:
    chain.commit([propose(chain, 0, "remove_agency", "agency1")])  # agency1 runs a validator
    chain.commit([approve(chain, 2, 1)])
    assert chain.app.proposal(1).status.startswith("failed: agency 'agency1' still runs")
    assert chain.app.gov.agency("agency1") is not None


def test_members_of_agencies_and_gov_state_are_under_the_state_root(chain: ProofChain) -> None:
    root_before = chain.app.state_root()
    chain.commit([propose(chain, 0, "add_agency", "agency3", "Fourth")])
    chain.commit([approve(chain, 1, 1)])
    assert chain.app.gov.agency("agency3") is not None
    assert chain.app.state_root() != root_before
    rv = chain.store.get_record(governance.KEY_AGENCIES)
    assert rv is not None and b"agency3" in rv.value
