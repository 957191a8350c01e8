"""A PRE-PREPARE's signatures are checked only while its height is still open
(node/service.py `Node._proposal_signatures_ok`): a node running behind commits
some heights from fetched blocks before their PRE-PREPAREs reach it; checking
those wasted its CPU and left their transactions in the verified cache for good."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from consensus.crypto import sha256
from node.app import Application
from node.service import Node
from tests.unit.test_app import NODE, FakeStore, make_block, make_genesis, tx


def _node(app: Application, committed_height: int) -> SimpleNamespace:
    return SimpleNamespace(
        replica=SimpleNamespace(view=0, committed_height=committed_height),
        app=app,
        store=app.store,
    )


def _pp(cb: Any) -> SimpleNamespace:
    header = cb.block.header
    return SimpleNamespace(replica=NODE.public, view=0, height=header.height, block=cb.block)


def _app() -> Application:
    genesis = make_genesis()
    return Application(FakeStore(genesis.hash()), genesis)


async def test_a_proposal_for_a_committed_height_is_not_checked() -> None:
    app = _app()
    cb = make_block(app.store, [tx(), tx()])
    app.apply(cb, verify_signatures=False)  # fetched and executed before its PRE-PREPARE
    checked = app.signatures_checked
    ok = await Node._proposal_signatures_ok(_node(app, 1), NODE.public, _pp(cb))  # type: ignore[arg-type]
    assert ok  # the replica drops it as below its window
    assert app.signatures_checked == checked
    assert app.verified_cache_size == 0


async def test_a_proposal_executed_while_it_was_checked_leaves_no_stale_entries() -> None:
    app = _app()
    cb = make_block(app.store, [tx(), tx()])
    real_verify = app.verify_proposal

    def verify_after_the_block_ran(raws: Any) -> Any:
        app.apply(cb, verify_signatures=False)  # the apply thread won the race
        return real_verify(raws)

    node = _node(app, 0)
    node.app = SimpleNamespace(verify_proposal=verify_after_the_block_ran, forget=app.forget)
    ok = await Node._proposal_signatures_ok(node, NODE.public, _pp(cb))  # type: ignore[arg-type]
    assert ok
    assert app.signatures_checked == 2  # checked: its height was open when it arrived
    assert not any(app.is_verified(sha256(raw)) for raw in cb.block.txs)


async def test_an_open_proposal_is_checked_and_cached_for_its_execution() -> None:
    app = _app()
    cb = make_block(app.store, [tx(), tx()])
    ok = await Node._proposal_signatures_ok(_node(app, 0), NODE.public, _pp(cb))  # type: ignore[arg-type]
    assert ok and app.signatures_checked == 2
    assert all(app.is_verified(sha256(raw)) for raw in cb.block.txs)
    app.apply(cb, verify_signatures=False)
    assert app.verified_cache_size == 0
