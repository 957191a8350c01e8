"""node.client against the real API server (Hypercorn on 127.0.0.1:0) over a FakeView.

The sync `Client` runs in a worker thread while the server runs on the test's
Trio loop; a committer task makes a block whenever the mempool holds txs.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio

from consensus.types import tx_hash
from node.api import serve_api
from node.client import AsyncClient, Client, ClientError, key_segment
from storage.store import ChainStore
from tests.unit.test_api import (
    ALICE,
    BOB,
    CHAIN_ID,
    GENESIS_HASH,
    NODE_KEY,
    WAIT_S,
    FakeView,
    make_tx,
)


@pytest.fixture
def view(tmp_path: Any) -> Any:
    store = ChainStore.open(tmp_path / "data", genesis_hash=GENESIS_HASH)
    yield FakeView(store)
    store.close()


async def committer(view: FakeView) -> None:
    """Commit the mempool as a block whenever it is non-empty."""
    while True:
        if view.mempool:
            view.commit()
        await view.changed.wait()


@pytest.fixture
async def node(view: FakeView) -> AsyncIterator[str]:
    """The API of `view` served on a free port, with blocks committed on demand."""
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_api, view, "127.0.0.1", 0)
        nursery.start_soon(committer, view)
        yield f"http://127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


async def in_thread(url: str, call: Callable[[Client], Any]) -> Any:
    def run() -> Any:
        with Client(url, timeout=WAIT_S) as client:
            return call(client)

    with trio.fail_after(WAIT_S):
        return await trio.to_thread.run_sync(run)


async def test_sync_client_round_trip(node: str, view: FakeView) -> None:
    def scenario(c: Client) -> dict[str, Any]:
        out: dict[str, Any] = {"health": c.health(), "ready": c.ready(), "status": c.status()}
        out["put1"] = c.put(ALICE, "agency0", "permit/7", "issued", wait=True)
        out["put2"] = c.put(ALICE, "agency0", "permit/7", b"\xffrevoked", wait=True)
        out["record"] = c.get_record("agency0", "permit/7")
        out["history"] = c.history("agency0", "permit/7")
        out["page"] = c.history("agency0", "permit/7", limit=1, before=2)
        out["delete"] = c.delete(ALICE, "agency0", "permit/7", wait=True)
        out["deleted"] = c.get_record("agency0", "permit/7")
        out["block1"] = c.get_block(1)
        out["latest"] = c.get_block()
        out["tx"] = c.get_tx(out["put1"]["tx_hash"])
        out["validators"], out["peers"], out["evidence"] = c.validators(), c.peers(), c.evidence()
        out["no_wait"] = c.put(ALICE, "agency0", "k", "v")
        return out

    out = await in_thread(node, scenario)
    assert out["health"] == {"status": "ok"} and out["ready"] == (True, "")
    assert out["status"]["chain_id"] == CHAIN_ID and out["status"]["height"] == 0
    assert out["put1"]["height"] == 1 and out["put1"]["status_code"] == 0
    assert out["put2"]["height"] == 2
    record = out["record"]
    assert record["value"] is None and record["value_hex"] == b"\xffrevoked".hex()
    assert record["version"] == 2 and record["key"] == "permit/7"
    assert [v["value"] for v in out["history"]["versions"]] == [None, "issued"]
    assert [v["version"] for v in out["page"]["versions"]] == [1]
    assert out["deleted"]["deleted"] is True and out["delete"]["height"] == 3
    assert out["block1"]["height"] == 1 and out["block1"]["tx_hashes"] == [out["put1"]["tx_hash"]]
    assert out["latest"]["height"] == 3
    assert out["tx"]["tx"]["value_text"] == "issued" and out["tx"]["height"] == 1
    assert out["validators"][0]["node_id"] == NODE_KEY.public.hex()
    assert isinstance(out["peers"], list) and isinstance(out["evidence"], list)
    assert out["no_wait"]["status"] == "accepted"
    # put() set valid_until from /status height + margin: the chain accepted it, and it is bounded
    tx = view.store.get_tx(bytes.fromhex(out["put1"]["tx_hash"]))
    from node import txs

    assert 0 < txs.decode_tx(tx.tx).valid_until <= 0 + 1000


async def test_sync_client_batch(node: str, view: FakeView) -> None:
    good = [make_tx(record_key=f"b{i}") for i in range(4)]
    results = await in_thread(node, lambda c: c.submit_batch([*good, make_tx(BOB)]))
    assert [r["accepted"] for r in results] == [True] * 4 + [False]
    assert results[4]["error"] == "not_a_member"
    assert [r["tx_hash"] for r in results[:4]] == [tx_hash(t).hex() for t in good]


@pytest.mark.parametrize(
    ("call", "status", "code"),
    [
        (lambda c: c.get_record("agency0", "missing"), 404, "not_found"),
        (lambda c: c.get_block(99), 404, "not_found"),
        (lambda c: c.get_tx("ab" * 32), 404, "not_found"),
        (lambda c: c.get_tx("xyz"), 400, "bad_hash"),
        (lambda c: c.put(BOB, "agency0", "k", "v"), 400, "not_a_member"),
        (lambda c: c.submit(b"garbage"), 400, "bad_encoding"),
        (lambda c: c.genesis(), 404, "not_found"),
    ],
)
async def test_sync_client_raises_client_error(
    node: str, call: Callable[[Client], Any], status: int, code: str
) -> None:
    def run(c: Client) -> ClientError:
        with pytest.raises(ClientError) as info:
            call(c)
        return info.value

    err = await in_thread(node, run)
    assert (err.status, err.code) == (status, code)
    assert err.message and code in str(err)


async def test_duplicate_and_not_ready(node: str, view: FakeView) -> None:
    tx = make_tx()

    def run(c: Client) -> tuple[Any, ClientError, Any]:
        first = c.submit(tx, wait=True, timeout=5)
        with pytest.raises(ClientError) as dup:
            c.submit(tx)
        again = c.submit(tx, wait=True)  # a retry after a lost answer finds the commit
        return first, dup.value, again

    first, dup, again = await in_thread(node, run)
    assert dup.status == 409 and dup.code == "duplicate"
    assert first == again and first["height"] == 1
    view.readiness_state = (False, "catching up")
    assert await in_thread(node, lambda c: c.ready()) == (False, "catching up")


async def test_wait_timeout_is_a_client_error(view: FakeView) -> None:
    async with trio.open_nursery() as nursery:  # no committer: nothing ever commits
        port = await nursery.start(serve_api, view, "127.0.0.1", 0)

        def run(c: Client) -> ClientError:
            with pytest.raises(ClientError) as info:
                c.submit(make_tx(), wait=True, timeout=0.05)
            return info.value

        err = await in_thread(f"http://127.0.0.1:{port}", run)
        assert (err.status, err.code) == (504, "timeout")
        nursery.cancel_scope.cancel()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_node_is_a_client_error() -> None:
    with (
        Client(f"http://127.0.0.1:{free_port()}", timeout=WAIT_S) as c,
        pytest.raises(ClientError) as info,
    ):
        c.status()
    assert info.value.status == 0 and info.value.code == "unreachable"
    assert "cannot reach" in str(info.value)


async def test_async_client_round_trip(node: str) -> None:
    with trio.fail_after(WAIT_S):
        async with AsyncClient(node, timeout=WAIT_S) as c:
            assert (await c.health())["status"] == "ok"
            assert await c.ready() == (True, "")
            loc = await c.put(ALICE, "agency0", "a/b", "one", wait=True)
            assert (await c.get_record("agency0", "a/b"))["value"] == "one"
            results = await c.submit_batch([make_tx(record_key="x")])
            assert results[0]["accepted"] is True
            deleted = await c.delete(ALICE, "agency0", "a/b", wait=True)
            assert deleted["height"] > loc["height"]
            history = await c.history("agency0", "a/b")
            assert [v["deleted"] for v in history["versions"]] == [True, False]
            assert (await c.get_block("latest"))["height"] == deleted["height"]
            assert (await c.get_tx(bytes.fromhex(loc["tx_hash"])))["height"] == loc["height"]
            assert len(await c.validators()) == 1
            with pytest.raises(ClientError) as info:
                await c.get_record("agency0", "nope")
            assert info.value.status == 404


@pytest.mark.parametrize(
    ("key", "segment"),
    [
        ("plain", "plain"),
        ("a/b c", "a%2Fb%20c"),
        (b"caf\xc3\xa9", "caf%C3%A9"),
        (b"\xff\x00", "hex:ff00"),
        ("hex:12", "hex:" + b"hex:12".hex()),  # never mistaken for a hex key
    ],
)
def test_key_segment(key: bytes | str, segment: str) -> None:
    assert key_segment(key) == segment


def test_block_height_argument_is_checked() -> None:
    with Client("http://127.0.0.1:1") as c:
        for bad in (-1, "first", 1.5):
            with pytest.raises(ValueError):
                c.get_block(bad)  # type: ignore[arg-type]
