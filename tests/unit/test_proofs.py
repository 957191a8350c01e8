"""Proof bundles: genuine ones verify offline from genesis; every tamper is rejected with a reason."""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus.crypto import Domain, sha256
from consensus.types import Commit, signed_payload
from node import governance
from node.app import record_state_key
from node.proofs import (
    ProofError,
    build_record_bundle,
    build_tx_bundle,
    verify_bundle,
    verify_file,
)
from node.proofs import (
    record_state_key as proofs_state_key,
)
from tests.unit.proof_chain import CHAIN, MEMBERS, OUTSIDER, VALIDATORS, ProofChain, make_genesis

UNPROVEN = ("current", "receipt")  # the node's word, documented as not proven


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[ProofChain]:
    c = ProofChain(tmp_path / "chain")
    c.commit([c.tx(0, "put", "permit/1", "granted"), c.tx(1, "put", "other", "x")])
    c.commit([c.tx(0, "put", "permit/2", "pending")])
    c.advance(3)  # the state after block 2 is claimed by header 4 (depth 2)
    yield c
    c.close()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    c = ProofChain(tmp_path_factory.mktemp("bundles") / "chain")
    t = c.tx(0, "put", "permit/1", "granted")
    c.commit([t, c.tx(1, "put", "other", "x")])
    c.advance(3)
    out = {
        "record": build_record_bundle(c.store, c.app, "agency0", b"permit/1"),
        "absent": build_record_bundle(c.store, c.app, "agency0", b"nothing"),
        "tx": build_tx_bundle(c.store, c.app, sha256(t)),
        "genesis": c.genesis,
    }
    c.close()
    return out


def test_state_keys_agree() -> None:
    assert record_state_key("a", b"k") == proofs_state_key("a", b"k")


def test_genuine_record_bundle_verifies(chain: ProofChain) -> None:
    bundle = build_record_bundle(chain.store, chain.app, "agency0", b"permit/1")
    assert bundle["value"] == b"granted".hex() and bundle["height"] == 1
    assert bundle["version"] == 1 and not bundle["current"]["changed_after_proof"]
    what = verify_bundle(json.loads(json.dumps(bundle)), chain.genesis)
    assert "'permit/1'" in what and "'granted'" in what and "state after height 3" in what


def test_absence_and_transactions_verify(chain: ProofChain) -> None:
    absent = build_record_bundle(chain.store, chain.app, "agency0", b"never")
    assert absent["value"] is None
    assert "absent" in verify_bundle(absent, chain.genesis)
    h = sha256(chain.store.get_block(1).block.txs[1])
    tx = build_tx_bundle(chain.store, chain.app, h)
    assert f"transaction {h.hex()} is #1 of block 1" in verify_bundle(tx, chain.genesis)


def test_a_record_changed_after_the_certified_state_says_so(chain: ProofChain) -> None:
    chain.commit([chain.tx(0, "put", "permit/1", "revoked")])
    bundle = build_record_bundle(chain.store, chain.app, "agency0", b"permit/1")
    assert bundle["value"] == b"granted".hex()  # the certified state is older
    assert bundle["current"]["changed_after_proof"]
    assert bundle["current"]["value"] == b"revoked".hex()
    assert "changed after height" in verify_bundle(bundle, chain.genesis)
    chain.advance(2)
    bundle = build_record_bundle(chain.store, chain.app, "agency0", b"permit/1")
    assert bundle["value"] == b"revoked".hex() and bundle["version"] == 2
    verify_bundle(bundle, chain.genesis)


def reject(bundle: dict[str, Any], genesis: Any, match: str) -> None:
    with pytest.raises(ProofError, match=match):
        verify_bundle(bundle, genesis)


def test_named_tampers_are_rejected_with_the_reason(bundles: dict[str, Any]) -> None:
    g = bundles["genesis"]
    b = bundles["record"]

    def changed(**fields: Any) -> dict[str, Any]:
        out = copy.deepcopy(b)
        out.update(fields)
        return out

    reject(changed(value=b"denied".hex()), g, "Merkle proof does not lead")
    reject(changed(key=b"permit/2".hex()), g, "Merkle proof does not lead")
    reject(changed(agency="agency1"), g, "Merkle proof does not lead")
    reject(changed(height=2), g, "Merkle proof does not lead")
    reject(changed(state_height=b["state_height"] + 1), g, "state_height")
    hdr = copy.deepcopy(b)
    hdr["header"]["state_root"] = "00" * 31 + "01"
    reject(hdr, g, "digest is not the header's hash")
    sig = copy.deepcopy(b)
    s0 = sig["certificate"]["signatures"][0]["signature"]
    sig["certificate"]["signatures"][0]["signature"] = ("0" if s0[0] != "0" else "1") + s0[1:]
    reject(sig, g, "bad COMMIT signature")
    short = copy.deepcopy(b)
    short["certificate"]["signatures"].pop()
    reject(short, g, "short of the quorum of 3")
    dup = copy.deepcopy(b)
    dup["certificate"]["signatures"][-1] = dup["certificate"]["signatures"][0]
    reject(dup, g, "duplicate signer")


def test_signatures_from_non_validators_are_rejected(bundles: dict[str, Any]) -> None:
    b = copy.deepcopy(bundles["record"])
    cert = b["certificate"]
    vote = Commit(
        cert["view"], cert["height"], bytes.fromhex(cert["digest"]), OUTSIDER.public, bytes(64)
    )
    sig = OUTSIDER.sign(Domain.COMMIT, CHAIN, signed_payload(vote))
    cert["signatures"][0] = {"replica": OUTSIDER.public.hex(), "signature": sig.hex()}
    reject(b, bundles["genesis"], "is not a validator of epoch 0")


def test_a_validator_set_not_derived_from_genesis_is_rejected(
    bundles: dict[str, Any], tmp_path: Path
) -> None:
    b = bundles["record"]
    other = make_genesis(validators=5)  # same chain id, another validator set
    reject(copy.deepcopy(b), other, "genesis_hash does not match")
    forged = copy.deepcopy(b)
    forged["genesis_hash"] = other.hash().hex()
    reject(forged, other, r"epoch 0 .* is in force|short of the quorum|claims epoch")
    fake_epoch = copy.deepcopy(b)
    fake_epoch["epochs"] = [
        {
            "epoch": 1, "first_height": 2, "validators": [OUTSIDER.public.hex()],
            "written_height": 1, "version": 1, "state_height": 1, "proof": b["proof"],
            "header": b["header"], "certificate": b["certificate"],
        }
    ]  # fmt: skip
    reject(fake_epoch, bundles["genesis"], r"epochs\[0\]")


def _leaves(doc: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(doc, dict):
        for k, v in doc.items():
            if not path and k in UNPROVEN:
                continue
            yield from _leaves(v, (*path, k))
    elif isinstance(doc, list):
        if doc:
            yield path, doc  # the list itself: drop an element
        for i, v in enumerate(doc):
            yield from _leaves(v, (*path, i))
    else:
        yield path, doc


def _mutate(value: Any, pos: int) -> Any:
    if isinstance(value, list):
        return value[:-1]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1 + pos % 3
    if value is None:
        return "00"
    assert isinstance(value, str)
    hexdigits = "0123456789abcdef"
    if value and all(c in hexdigits for c in value):
        i = pos % len(value)
        return (
            value[:i] + hexdigits[(hexdigits.index(value[i]) + 1 + pos % 15) % 16] + value[i + 1 :]
        )
    return value + "x"


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for p in path[:-1]:
        doc = doc[p]
    doc[path[-1]] = value


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    which=st.sampled_from(["record", "absent", "tx"]),
    choice=st.integers(0, 10**6),
    pos=st.integers(0, 10**6),
)
def test_every_single_field_tamper_is_rejected(
    bundles: dict[str, Any], which: str, choice: int, pos: int
) -> None:
    bundle = bundles[which]
    leaves = list(_leaves(bundle))
    path, value = leaves[choice % len(leaves)]
    tampered = copy.deepcopy(bundle)
    _set(tampered, path, _mutate(value, pos))
    _check_rejected(which, path, tampered, bundles["genesis"])


def _check_rejected(which: str, path: tuple[Any, ...], tampered: Any, genesis: Any) -> None:
    try:
        what = verify_bundle(tampered, genesis)
    except ProofError:
        return
    # An absence proof for one key is also one for every other key whose path ends
    # in the same empty slot: renaming the key of an absence bundle may yield a
    # true statement about the new key, never a false one.
    assert which == "absent" and path in (("agency",), ("key",)), (path, what)
    assert "is absent" in what


def test_every_field_is_covered_by_the_tamper_walk(bundles: dict[str, Any]) -> None:
    """Each leaf, mutated deterministically, is rejected (no field escapes the check)."""
    for which in ("record", "absent", "tx"):
        for path, value in _leaves(bundles[which]):
            tampered = copy.deepcopy(bundles[which])
            _set(tampered, path, _mutate(value, 7))
            _check_rejected(which, path, tampered, bundles["genesis"])


def test_unknown_fields_and_garbage_are_rejected(bundles: dict[str, Any]) -> None:
    b = copy.deepcopy(bundles["record"])
    b["extra"] = 1
    reject(b, bundles["genesis"], "unexpected field")
    for garbage in (None, [], "x", {"type": "nope"}, {"type": "redwood/record-proof/v1"}):
        with pytest.raises(ProofError):
            verify_bundle(garbage, bundles["genesis"])


def test_verify_file_and_its_speed(bundles: dict[str, Any], tmp_path: Path) -> None:
    gpath = tmp_path / "genesis.json"
    bundles["genesis"].save(gpath)
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundles["record"]))
    ok, what, _ = verify_file(str(path), str(gpath))
    assert ok, what
    times = []
    for _ in range(20):
        t = time.perf_counter()
        verify_bundle(bundles["record"], bundles["genesis"])
        times.append(time.perf_counter() - t)
    assert sorted(times)[10] < 0.010  # under 10 ms (median; about 1 ms on an idle machine)
    path.write_text("{not json")
    ok, what, _ = verify_file(str(path), str(gpath))
    assert not ok and "not JSON" in what
    ok, what, _ = verify_file(str(tmp_path / "missing.json"), str(gpath))
    assert not ok and "cannot read" in what


def test_member_keys_and_validators_used_here_are_distinct() -> None:
    assert len({k.public for k in (*MEMBERS, *VALIDATORS, OUTSIDER)}) == 10
    assert governance.epoch_key(1) != governance.epoch_key(2)


def test_cli_verify_exit_codes(
    bundles: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from node.cli import main

    gpath = tmp_path / "genesis.json"
    bundles["genesis"].save(gpath)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(bundles["tx"]))
    assert main(["verify", str(good), "--genesis", str(gpath)]) == 0
    assert capsys.readouterr().out.startswith("valid: transaction ")
    bad = copy.deepcopy(bundles["record"])
    bad["value"] = b"forged".hex()
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    assert main(["verify", str(path), "--genesis", str(gpath)]) == 1
    assert "invalid: bundle.proof: the Merkle proof does not lead" in capsys.readouterr().out


def test_cli_gov_actions_encode_canonically() -> None:
    from node.cli import CliError, gov_action

    action = gov_action("add-member", ["agency0", MEMBERS[1].public.hex()])
    assert governance.decode_action(action) == ("add_member", "agency0", MEMBERS[1].public)
    assert governance.decode_action(gov_action("set-param", ["proposal_ttl_blocks", "5"]))[2] == 5
    with pytest.raises(CliError, match="takes"):
        gov_action("remove-agency", [])
    with pytest.raises(CliError, match="cannot change"):
        gov_action("set-param", ["pipeline_depth", "3"])


class _View:
    """The part of the node the API's proof and governance routes read."""

    def __init__(self, chain: ProofChain) -> None:
        self.store = chain.store
        self.app = chain.app
        self.chain_id = CHAIN
        self.node_id = VALIDATORS[0].public


async def test_api_serves_bundles_that_verify_and_clear_errors(chain: ProofChain) -> None:
    import httpx

    from node.api import build_app

    app = build_app(_View(chain))  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://n") as c:
        r = await c.get("/records/agency0/permit%2F1?proof=1")
        assert r.status_code == 200
        assert "'granted'" in verify_bundle(r.json(), chain.genesis)
        r = await c.get("/records/agency0/nothing?proof=1")  # absence: 200 with a proof
        assert r.status_code == 200 and r.json()["value"] is None
        verify_bundle(r.json(), chain.genesis)
        h = sha256(chain.store.get_block(2).block.txs[0]).hex()
        r = await c.get(f"/txs/{h}?proof=1")
        assert r.status_code == 200 and verify_bundle(r.json(), chain.genesis)
        r = await c.get(f"/txs/{'00' * 32}?proof=1")
        assert r.status_code == 404 and r.json()["error"] == "not_found"
        r = await c.get("/records/agency0/permit%2F1?proof=maybe")
        assert r.status_code == 400 and r.json()["error"] == "bad_proof"
        r = await c.get("/gov/proposals")
        assert r.status_code == 200 and r.json()["proposals"] == []
        assert [a["id"] for a in r.json()["agencies"]] == ["agency0", "agency1", "agency2"]
        r = await c.get("/gov/proposals/1")
        assert r.status_code == 404
        r = await c.get("/gov/proposals/x1")
        assert r.status_code == 400


async def test_api_says_when_no_state_is_certified_yet(tmp_path: Path) -> None:
    import httpx

    from node.api import build_app

    fresh = ProofChain(tmp_path / "fresh")
    try:
        app = build_app(_View(fresh))  # type: ignore[arg-type]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://n") as c:
            r = await c.get("/records/agency0/k?proof=1")
        assert r.status_code == 503 and r.json()["error"] == "proof_unavailable"
    finally:
        fresh.close()


def _rewrite_meta(chain: ProofChain, entries: dict[bytes, bytes | None]) -> None:
    """Put or delete meta entries behind the store's back (what an older store left)."""
    db = chain.store._db
    for key, value in entries.items():
        if value is None:
            db.delete(b"a/" + key)
        else:
            db.put(b"a/" + key, value)


def _tree_keys(chain: ProofChain, *, held: bool = True) -> set[bytes]:
    """The tree's stored node keys, with the top the application holds over them."""
    from storage import state_tree
    from storage.store import prefix_end

    out: set[bytes] = set()
    for prefix in (state_tree.INTERNAL_PREFIX, state_tree.LEAF_PREFIX):
        out.update(chain.store.meta_keys(prefix, prefix_end(prefix)))
    if held:
        for key, raw in chain.app._top.items():
            if raw is None:
                out.discard(key)
            else:
                out.add(key)
    return out


def _put_and_prove(chain: ProofChain, key: str, value: str) -> None:
    """Commit a put of agency0's `key`, certify it, and check its bundle offline."""
    chain.commit([chain.tx(0, "put", key, value)])
    chain.advance(4)
    bundle = build_record_bundle(chain.store, chain.app, "agency0", key.encode())
    assert bytes.fromhex(bundle["value"]) == value.encode()
    verify_bundle(bundle, chain.genesis)


def _fresh_tree_keys(chain: ProofChain) -> set[bytes]:
    """The node keys of a tree built at once from the store's current state."""
    from node.proofs import value_hash
    from storage import state_tree

    changes: dict[bytes, bytes | None] = {}
    for skey in chain.store.state_keys():
        rv = chain.store.get_record(skey)
        if rv is not None and rv.value is not None:
            changes[state_tree.key_hash(skey)] = value_hash(rv.height, rv.version, rv.value)
    db: dict[bytes, bytes] = {}
    up = state_tree.StateTree(db.get).update(None, changes, 1)
    assert up.root_hash == chain.app.state_root()
    return set(up.puts)


def test_the_store_holds_the_live_tree_and_nothing_else(chain: ProofChain) -> None:
    """Updates overwrite nodes in place and delete what the tree left: no versions pile up."""
    from storage import state_tree

    for round_ in range(6):
        chain.commit([chain.tx(0, "put", f"w/{i}", f"v{round_}") for i in range(40)])
        chain.commit([chain.tx(0, "delete", f"w/{i}") for i in range(round_, 40, 7)])
        assert _tree_keys(chain) == _fresh_tree_keys(chain)
    chain.app.write_tree_top()  # what a node does at a clean stop
    assert not chain.app._top
    assert _tree_keys(chain, held=False) == _fresh_tree_keys(chain)
    for prefix in state_tree.LEGACY_PREFIXES:
        assert chain.store.meta_keys(prefix, prefix + b"\xff") == []


def test_the_snapshot_window_follows_the_pipeline_depth() -> None:
    """Proofs are built pipeline_depth below the newest non-null block, which may have
    pipeline_depth null blocks above it: the window covers both, plus the margin."""
    from node import app as app_module

    assert app_module.tree_snapshots_kept(4) == 12
    assert app_module.tree_snapshots_kept(1) == 2 + app_module.TREE_SNAPSHOTS_MARGIN
    assert app_module.tree_snapshots_kept(64) == 132


def test_older_heights_are_provable_within_the_window_only(chain: ProofChain) -> None:
    """Each committed height keeps a snapshot for `tree_snapshots_kept` heights; after a
    restart, only heights whose root is still the newest are provable."""
    from node import app as app_module
    from storage import state_tree

    chain.app.tree_snapshots_kept = 4
    start = chain.store.head_height()
    for i in range(7):
        chain.commit([chain.tx(0, "put", "permit/1", f"v{i}")])
    head = chain.store.head_height()
    khash = state_tree.key_hash(record_state_key("agency0", b"permit/1"))
    for h in range(head - 3, head + 1):  # in the window: each height's own tree
        proof = chain.app.prove_state(h, khash)
        assert state_tree.verify(chain.app.state_root_at(h), khash, proof.leaf[1], proof)
    with pytest.raises(state_tree.TreeError, match="no longer stored"):
        chain.app.prove_state(head - 4, khash)
    restarted = app_module.Application(chain.store, chain.genesis)
    proof = restarted.prove_state(head, khash)
    assert state_tree.verify(restarted.state_root_at(head), khash, proof.leaf[1], proof)
    with pytest.raises(state_tree.TreeError, match="no longer stored"):
        restarted.prove_state(start + 1, khash)
    chain.app = restarted
    chain.advance(5)  # empty blocks: the certified height's root is the newest one
    verify_bundle(
        build_record_bundle(chain.store, chain.app, "agency0", b"permit/1"), chain.genesis
    )


def test_a_record_bundle_whose_tree_nodes_are_gone_is_unavailable(chain: ProofChain) -> None:
    """A proof whose tree cannot be read (here: its root node deleted behind the store's
    back) gets 503 `proof_unavailable` (ask again), not a server error."""
    from node import app as app_module
    from node.proofs import ProofUnavailable

    chain.commit([chain.tx(0, "put", f"gone/{i}", "x") for i in range(5)])
    chain.advance(5)
    chain.app.write_tree_top()  # a clean stop: the next start reads the top as stored
    db = chain.store._db
    for key in list(db.iterator(prefix=b"a/smt/n/\x00", include_value=False)):
        db.delete(key)  # the stored root node
    fresh = app_module.Application(chain.store, chain.genesis)
    with pytest.raises(ProofUnavailable, match="no longer stored"):
        build_record_bundle(chain.store, fresh, "agency0", b"gone/1")


def _to_legacy_layout(chain: ProofChain) -> set[bytes]:
    """Make the store look written by a release that stored the tree per version: no
    layout marker, no nodes by position, some per-version keys. Returns those keys."""
    from node import app as app_module
    from storage import state_tree

    chain.app.write_tree_top()  # that release held nothing in memory
    legacy = {
        b"smt/i/\x00" + b"\x01" * 8: b"node",
        b"smt/l/" + b"\x02" * 40: b"leaf",
        b"smt/s/" + b"\x00" * 8: b"list",
        b"smt/u/" + b"\x00" * 8: b"list",
    }
    entries: dict[bytes, bytes | None] = {k: None for k in _tree_keys(chain)}
    entries[app_module.TREE_LAYOUT_KEY] = None
    entries[app_module.TREE_TOP_KEY] = None
    entries.update(legacy)
    _rewrite_meta(chain, entries)
    assert _tree_keys(chain) == set()
    assert all(key.startswith(state_tree.LEGACY_PREFIXES) for key in legacy)
    return set(legacy)


def test_a_store_with_the_per_version_tree_is_rebuilt_once(chain: ProofChain) -> None:
    from node import app as app_module

    for round_ in range(3):
        chain.commit([chain.tx(0, "put", f"old/{i}", f"v{round_}") for i in range(60)])
    chain.commit([chain.tx(0, "delete", f"old/{i}") for i in range(0, 60, 5)])
    chain.advance(4)
    before = _tree_keys(chain)
    legacy = _to_legacy_layout(chain)
    rebuilt = app_module.Application(chain.store, chain.genesis)
    assert chain.store.get_meta(app_module.TREE_LAYOUT_KEY) == app_module.TREE_LAYOUT
    assert _tree_keys(chain) == before
    assert all(chain.store.get_meta(k) is None for k in legacy)
    chain.app = rebuilt
    verify_bundle(build_record_bundle(chain.store, chain.app, "agency0", b"old/7"), chain.genesis)
    _put_and_prove(chain, "old/7", "after")
    again = app_module.Application(chain.store, chain.genesis)  # marked: nothing rebuilt
    assert _tree_keys(chain) == _fresh_tree_keys(chain)
    assert again.state_root() == chain.app.state_root()


def test_a_rebuild_that_disagrees_with_the_stored_root_refuses_the_store(
    chain: ProofChain,
) -> None:
    from node import app as app_module
    from storage.store import StoreError

    chain.commit([chain.tx(0, "put", f"old/{i}", "x") for i in range(20)])
    _to_legacy_layout(chain)
    _rewrite_meta(chain, {app_module.META_STATE_ROOT: b"\x07" * 32})  # damaged
    with pytest.raises(StoreError, match="store is damaged"):
        app_module.Application(chain.store, chain.genesis)
    assert chain.store.get_meta(app_module.TREE_LAYOUT_KEY) is None  # tried again next time


def test_a_tree_layout_this_node_does_not_know_is_refused(chain: ProofChain) -> None:
    from node import app as app_module
    from storage.store import StoreError

    chain.commit([chain.tx(0, "put", "k", "x")])
    _rewrite_meta(chain, {app_module.TREE_LAYOUT_KEY: b"hashed/9"})
    with pytest.raises(StoreError, match="layout this node does not know"):
        app_module.Application(chain.store, chain.genesis)


# -- the tree's top, held in memory between writes ------------------------------------


def _stored_top_height(chain: ProofChain) -> int | None:
    from node import app as app_module

    raw = chain.store.get_meta(app_module.TREE_TOP_KEY)
    return None if raw is None else int.from_bytes(raw, "big")


def test_the_tree_top_is_written_every_flush_interval(chain: ProofChain) -> None:
    """Between the heights that write it, the top lives in memory only; the store holds
    the one of the last such height, and a proof of any height in the window verifies."""
    from storage import state_tree

    chain.app.tree_top_flush_blocks = 4
    chain.commit([chain.tx(0, "put", f"t/{i}", "a") for i in range(30)])
    while chain.store.head_height() % 4:
        chain.advance(1)
    seen_held = False
    for round_ in range(9):
        chain.commit([chain.tx(0, "put", f"t/{i}", f"v{round_}") for i in range(round_, 30, 3)])
        head = chain.store.head_height()
        stored = _stored_top_height(chain)
        assert stored == head - head % 4
        if head % 4:
            assert chain.app._top and stored is not None and stored < head
            seen_held = True
            assert not any(chain.store.get_meta(k) == v for k, v in chain.app._top.items())
        else:
            assert chain.app._top == {}
        assert _tree_keys(chain) == _fresh_tree_keys(chain)
        khash = state_tree.key_hash(record_state_key("agency0", b"t/3"))
        for h in range(max(1, head - 3), head + 1):
            proof = chain.app.prove_state(h, khash)
            assert state_tree.verify(chain.app.state_root_at(h), khash, proof.leaf[1], proof)
    assert seen_held


def test_a_start_after_an_unclean_stop_recomputes_the_top(
    chain: ProofChain, caplog: pytest.LogCaptureFixture
) -> None:
    from node import app as app_module

    for round_ in range(3):
        chain.commit([chain.tx(0, "put", f"u/{i}", f"v{round_}") for i in range(50)])
    chain.commit([chain.tx(0, "delete", f"u/{i}") for i in range(0, 50, 4)])
    head = chain.store.head_height()
    assert chain.app._top and _stored_top_height(chain) != head  # held, then a crash
    with caplog.at_level(logging.WARNING, logger="redwood.app"):
        restarted = app_module.Application(chain.store, chain.genesis)
    assert "recomputing them" in caplog.text and "recomputed" in caplog.text
    assert _stored_top_height(chain) == head
    assert restarted.state_root() == chain.app.state_root()
    chain.app = restarted
    assert _tree_keys(chain, held=False) == _fresh_tree_keys(chain)
    _put_and_prove(chain, "u/1", "after")
    caplog.clear()
    chain.app.write_tree_top()
    with caplog.at_level(logging.WARNING, logger="redwood.app"):
        app_module.Application(chain.store, chain.genesis)  # after a clean stop: nothing to do
    assert "recomput" not in caplog.text
    # blocks that change no state hold nothing, so a kill after them loses nothing
    chain.advance(3)
    assert chain.app._top == {} and _stored_top_height(chain) == chain.store.head_height()
    with caplog.at_level(logging.WARNING, logger="redwood.app"):
        app_module.Application(chain.store, chain.genesis)
    assert "recomput" not in caplog.text


def test_a_top_that_disagrees_with_the_stored_root_refuses_the_store(chain: ProofChain) -> None:
    from node import app as app_module
    from storage.store import StoreError

    chain.commit([chain.tx(0, "put", f"d/{i}", "x") for i in range(40)])
    chain.commit([chain.tx(0, "put", f"d/{i}", "y") for i in range(10)])
    chain.commit([chain.tx(0, "put", "e", "x"), chain.tx(0, "delete", "e")])
    chain.commit([chain.tx(0, "put", "e", "y")])
    assert _stored_top_height(chain) != chain.store.head_height()
    db = chain.store._db
    # a leaf's value hash changed: its key's record reads as the version before
    d0 = b"s/" + record_state_key("agency0", b"d/0")
    db.put(d0, (1).to_bytes(8, "big"))
    with pytest.raises(StoreError, match=r"store is damaged.*redwood repair"):
        app_module.Application(chain.store, chain.genesis)
    db.put(d0, (2).to_bytes(8, "big"))
    # a leaf whose key reads as deleted (version 2 of "e" is its delete)
    e = b"s/" + record_state_key("agency0", b"e")
    db.put(e, (2).to_bytes(8, "big"))
    with pytest.raises(StoreError, match=r"state tree is damaged.*key without a value"):
        app_module.Application(chain.store, chain.genesis)
    db.put(e, (3).to_bytes(8, "big"))
    leaf = next(k for k in _tree_keys(chain, held=False) if k.startswith(b"smt/k/"))
    _rewrite_meta(chain, {leaf: record_state_key("agency0", b"d/1")})  # holds another key
    with pytest.raises(StoreError, match=r"state tree is damaged.*holds another key"):
        app_module.Application(chain.store, chain.genesis)


@pytest.mark.parametrize("layout", [b"position/1", b"position/2"])
def test_a_store_whose_leaves_hold_value_hashes_is_rebuilt_once(
    chain: ProofChain, caplog: pytest.LogCaptureFixture, layout: bytes
) -> None:
    """position/1 (stop 25) and position/2 (stop 26) stored each leaf as its key hash and
    value hash, rewritten with every value; since position/3 a leaf holds its state key."""
    from node import app as app_module
    from node.proofs import value_hash
    from storage import state_tree

    chain.commit([chain.tx(0, "put", f"p/{i}", "x") for i in range(40)])
    chain.commit([chain.tx(0, "put", f"p/{i}", "y") for i in range(0, 40, 3)])
    chain.app.write_tree_top()
    old: dict[bytes, bytes | None] = {app_module.TREE_LAYOUT_KEY: layout}
    for skey in chain.store.state_keys():
        rv = chain.store.get_record(skey)
        khash = state_tree.key_hash(skey)
        leaf = state_tree.LEAF_PREFIX + khash
        assert (chain.store.get_meta(leaf) is not None) == (rv.value is not None)
        assert chain.store.get_meta(leaf) in (None, skey)
        if rv.value is not None:
            old[leaf] = khash + value_hash(rv.height, rv.version, rv.value)
    assert len(old) > 41  # the 40 records, the gov/ entries and the layout marker
    _rewrite_meta(chain, old)
    with caplog.at_level(logging.WARNING, logger="redwood.app"):
        chain.app = app_module.Application(chain.store, chain.genesis)
    assert f"older layout ({layout.decode()})" in caplog.text
    assert f"state tree rebuilt: {len(old) - 1} keys" in caplog.text
    assert chain.store.get_meta(app_module.TREE_LAYOUT_KEY) == app_module.TREE_LAYOUT
    for skey in chain.store.state_keys():
        got = chain.store.get_meta(state_tree.LEAF_PREFIX + state_tree.key_hash(skey))
        assert got in (None, skey)
    assert _tree_keys(chain, held=False) == _fresh_tree_keys(chain)
    _put_and_prove(chain, "p/1", "z")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="redwood.app"):
        app_module.Application(chain.store, chain.genesis)
    assert "rebuild" not in caplog.text


def test_leaves_are_written_when_keys_are_created_and_deleted_only(chain: ProofChain) -> None:
    """A block that gives existing keys new values writes no leaf; proofs of every height
    in the window still verify, their leaves read from the records of that height."""
    from node import app as app_module
    from storage import state_tree

    first = chain.commit([chain.tx(0, "put", f"n/{i}", "v0") for i in range(30)])
    assert sum(k.startswith(state_tree.LEAF_PREFIX) for k in first.meta) == 30
    for round_ in range(1, 4):
        block = chain.commit([chain.tx(0, "put", f"n/{i}", f"v{round_}") for i in range(30)])
        assert block.applied == 30
        assert not [k for k in block.meta if k.startswith(state_tree.LEAF_PREFIX)]
    block = chain.commit(
        [
            chain.tx(0, "put", "n/new", "a"),
            chain.tx(0, "delete", "n/3"),
            chain.tx(0, "put", "n/4", "b"),
        ]
    )
    leaves = {k: v for k, v in block.meta.items() if k.startswith(state_tree.LEAF_PREFIX)}
    assert leaves == {
        state_tree.LEAF_PREFIX + state_tree.key_hash(record_state_key("agency0", b"n/new")):
            record_state_key("agency0", b"n/new"),
        state_tree.LEAF_PREFIX + state_tree.key_hash(record_state_key("agency0", b"n/3")): None,
    }  # fmt: skip
    assert _tree_keys(chain) == _fresh_tree_keys(chain)
    khash = state_tree.key_hash(record_state_key("agency0", b"n/5"))
    head = chain.store.head_height()
    for h in range(head - 3, head + 1):  # the value of n/5 differs at each of these heights
        proof = chain.app.prove_state(h, khash)
        assert state_tree.verify(chain.app.state_root_at(h), khash, proof.leaf[1], proof)
    restarted = app_module.Application(chain.store, chain.genesis)
    assert restarted.state_root() == chain.app.state_root()


def test_a_key_written_twice_in_a_block_holds_its_last_version(chain: ProofChain) -> None:
    """The root counts every write of a key in a block (its version), as the records do."""
    chain.commit([chain.tx(0, "put", "twice", "a"), chain.tx(0, "put", "twice", "b")])
    chain.commit([chain.tx(0, "delete", "twice"), chain.tx(0, "put", "twice", "c")])
    assert chain.store.get_record(record_state_key("agency0", b"twice")).version == 4
    _fresh_tree_keys(chain)  # asserts the app's root is the one of the stored records
    chain.advance(4)
    bundle = build_record_bundle(chain.store, chain.app, "agency0", b"twice")
    assert bytes.fromhex(bundle["value"]) == b"c" and bundle["version"] == 4
    verify_bundle(bundle, chain.genesis)
