"""The HTTP API: every route, every malformed input, and the real Hypercorn server on the Trio loop.

The node behind the API is `FakeView`: a NodeView over a real ChainStore
(LevelDB in a temporary directory) with a toy mempool and real signatures,
so that what the API reads is what a node would have stored.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgpack
import pytest
import trio
from starlette.routing import Route

from consensus import codec
from consensus.crypto import Domain, SigningKey, sha256, verify
from consensus.types import (
    Block,
    BlockHeader,
    CertifiedBlock,
    Commit,
    CommitCertificate,
    CommitSignature,
    signed_payload,
    tx_hash,
)
from node import api, txs
from node.api import build_app, serve_api
from node.openapi import spec
from node.service import SubmitResult
from storage.store import ChainStore, StateWrite

CHAIN_ID = "redwood-test"
GENESIS_HASH = sha256(b"test genesis")
NODE_KEY = SigningKey(bytes(range(32)))
ALICE = SigningKey(bytes([1] * 32))  # member of agency0
BOB = SigningKey(bytes([2] * 32))  # member of agency1
MALLORY = SigningKey(bytes([3] * 32))  # member of nothing
WAIT_S = 10.0  # bound on every wait in these tests


def make_tx(
    key: SigningKey = ALICE,
    record_key: bytes | str = b"k",
    value: bytes | str = b"v",
    *,
    op: str = "put",
    agency: str = "agency0",
    valid_until: int = 1000,
    nonce: int | None = None,
) -> bytes:
    return txs.build(key, CHAIN_ID, op, agency, record_key, value, valid_until, nonce)


def make_certified(height: int, parent: bytes, tx_list: tuple[bytes, ...]) -> CertifiedBlock:
    header = BlockHeader(
        chain_id=CHAIN_ID,
        height=height,
        view=0,
        epoch=0,
        parent_hash=parent,
        tx_root=sha256(b"".join(tx_list)),
        tx_count=len(tx_list),
        state_height=0,
        state_root=sha256(b"state %d" % height),
        proposer=NODE_KEY.public,
        timestamp_ms=1000 * height,
        validator_set_hash=sha256(b"vset"),
    )
    block = Block(header, tx_list)
    unsigned = Commit(0, height, block.hash(), NODE_KEY.public, bytes(64))
    sig = NODE_KEY.sign(Domain.COMMIT, CHAIN_ID, signed_payload(unsigned))
    cert = CommitCertificate(0, height, block.hash(), 0, (CommitSignature(NODE_KEY.public, sig),))
    return CertifiedBlock(block, cert)


class FakeView:
    """A NodeView over a real ChainStore: checks like the application, commits on demand."""

    def __init__(self, store: ChainStore) -> None:
        self.chain_id = CHAIN_ID
        self.node_id = NODE_KEY.public
        self.store = store
        self.members = {ALICE.public: "agency0", BOB.public: "agency1"}
        self.mempool: dict[bytes, bytes] = {}
        self.mempool_max = 100
        self.readiness_state = (True, "")
        self.subscribers: list[trio.MemorySendChannel[CertifiedBlock]] = []
        self.submit_many_calls = 0
        self.changed = trio.Event()

    def status(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "node_id": self.node_id,
            "height": self.store.head_height(),
            "view": 0,
            "last_block_hash": self.store.head_hash(),
            "catching_up": False,
            "peers": 0,
            "validators": 1,
            "mempool_size": len(self.mempool),
        }

    def readiness(self) -> tuple[bool, str]:
        return self.readiness_state

    def check(self, tx_bytes: bytes) -> SubmitResult:
        h = tx_hash(tx_bytes)
        try:
            tx = txs.decode_tx(tx_bytes)
        except codec.DecodeError as exc:
            return SubmitResult(h, False, "bad_encoding", str(exc))
        if not verify(tx.sender, tx.signature, Domain.TX, CHAIN_ID, signed_payload(tx)):
            return SubmitResult(h, False, "bad_signature", "signature does not verify")
        if self.members.get(tx.sender) != tx.agency:
            return SubmitResult(h, False, "not_a_member", "sender is not a member")
        if tx.valid_until <= self.store.head_height():
            return SubmitResult(h, False, "expired", "valid_until has passed")
        if h in self.mempool or self.store.has_tx(h):
            return SubmitResult(h, False, "duplicate", "already known")
        if len(self.mempool) >= self.mempool_max:
            return SubmitResult(h, False, "mempool_full", "mempool is full")
        return SubmitResult(h, True)

    async def submit(self, tx_bytes: bytes) -> SubmitResult:
        await trio.lowlevel.checkpoint()
        result = self.check(tx_bytes)
        if result.accepted:
            self.mempool[result.tx_hash] = tx_bytes
            self._notify()
        return result

    async def submit_many(self, tx_list: list[bytes]) -> list[SubmitResult]:
        self.submit_many_calls += 1
        return [await self.submit(tx) for tx in tx_list]

    async def wait_committed(self, tx_hash_: bytes, timeout_s: float) -> Any:
        with trio.move_on_after(timeout_s):
            while (loc := self.store.get_tx(tx_hash_)) is None:
                await self.changed.wait()
            return loc
        return None

    def validators(self) -> list[dict[str, Any]]:
        return [{"node_id": NODE_KEY.public.hex(), "agency": "agency0", "name": "node0"}]

    def peers(self) -> list[dict[str, Any]]:
        return [{"node_id": bytes(32), "address": "127.0.0.1:1"}]

    def evidence(self) -> list[dict[str, Any]]:
        return [{"replica": NODE_KEY.public, "height": 3, "kind": "prepare"}]

    def subscribe_blocks(self) -> trio.MemoryReceiveChannel[CertifiedBlock]:
        send, receive = trio.open_memory_channel[CertifiedBlock](8)
        self.subscribers.append(send)
        return receive

    def _notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def commit(
        self, tx_list: list[bytes] | None = None, statuses: list[int] | None = None
    ) -> CertifiedBlock:
        """Commit the given txs (default: the whole mempool) as the next block."""
        if tx_list is None:
            tx_list = list(self.mempool.values())
        height = self.store.head_height() + 1
        cb = make_certified(height, self.store.head_hash(), tuple(tx_list))
        writes = []
        for i, raw in enumerate(tx_list):
            tx = txs.decode_tx(raw)
            value = tx.value if tx.op == "put" else None
            writes.append(StateWrite(api.state_key(tx.agency, tx.key), value, i))
            self.mempool.pop(tx_hash(raw), None)
        self.store.commit_block(cb, writes, tx_status=statuses)
        for send in list(self.subscribers):
            try:
                send.send_nowait(cb)
            except (trio.WouldBlock, trio.BrokenResourceError):
                send.close()
                self.subscribers.remove(send)
        self._notify()
        return cb


@pytest.fixture
def store(tmp_path: Any) -> Any:
    s = ChainStore.open(tmp_path / "data", genesis_hash=GENESIS_HASH)
    yield s
    s.close()


@pytest.fixture
def view(store: ChainStore) -> FakeView:
    return FakeView(store)


@pytest.fixture
async def client(view: FakeView) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(view, max_body_bytes=64 * 1024)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as c:
        yield c


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    return body


MSGPACK = {"content-type": "application/msgpack"}


# -- liveness, readiness, status ------------------------------------------------------------


async def test_health_is_ok(client: httpx.AsyncClient) -> None:
    r = await client.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


async def test_ready_follows_the_view(client: httpx.AsyncClient, view: FakeView) -> None:
    r = await client.get("/ready")
    assert r.status_code == 200 and r.json()["status"] == "ready"
    view.readiness_state = (False, "catching up: 3 of 90")
    body = assert_error(await client.get("/ready"), 503, "not_ready")
    assert body["message"] == "catching up: 3 of 90"


async def test_status_renders_bytes_as_hex(client: httpx.AsyncClient, view: FakeView) -> None:
    view.commit([make_tx()])
    body = (await client.get("/status")).json()
    for name in ("chain_id", "node_id", "height", "view", "last_block_hash", "catching_up"):
        assert name in body
    assert body["node_id"] == NODE_KEY.public.hex()
    assert body["height"] == 1
    assert body["last_block_hash"] == view.store.head_hash().hex()


# -- submitting one transaction -----------------------------------------------------------


async def test_submit_accepts_every_body_form(client: httpx.AsyncClient, view: FakeView) -> None:
    forms = [
        ("json form", lambda tx: {"json": txs.tx_to_json(txs.decode_tx(tx))}),
        ("tx hex", lambda tx: {"json": {"tx": tx.hex()}}),
        ("bare hex", lambda tx: {"json": tx.hex()}),
        ("msgpack", lambda tx: {"content": tx, "headers": MSGPACK}),
        (
            "octet-stream",
            lambda tx: {"content": tx, "headers": {"content-type": "application/octet-stream"}},
        ),
        ("no content type", lambda tx: {"content": json.dumps({"tx": tx.hex()}).encode()}),
    ]
    for i, (name, request) in enumerate(forms):
        tx = make_tx(record_key=f"form{i}")
        r = await client.post("/txs", **request(tx))
        assert r.status_code == 202, (name, r.text)
        assert r.json() == {"tx_hash": tx_hash(tx).hex(), "status": "accepted"}, name
        assert tx_hash(tx) in view.mempool, name


@pytest.mark.parametrize(
    ("tx", "status", "code"),
    [
        (lambda: make_tx(BOB), 400, "not_a_member"),
        (lambda: make_tx(MALLORY), 400, "not_a_member"),
        (lambda: make_tx(valid_until=0), 400, "expired"),
        (lambda: (t := make_tx())[:-1] + bytes([t[-1] ^ 1]), 400, "bad_signature"),
        (lambda: b"\x93\x01\x01\x90", 400, "bad_encoding"),
    ],
)
async def test_submit_rejections_carry_the_code(
    client: httpx.AsyncClient, tx: Any, status: int, code: str
) -> None:
    raw = tx()
    body = assert_error(await client.post("/txs", content=raw, headers=MSGPACK), status, code)
    assert body["tx_hash"] == tx_hash(raw).hex()


async def test_duplicate_is_409_and_full_mempool_is_429(
    client: httpx.AsyncClient, view: FakeView
) -> None:
    tx = make_tx()
    assert (await client.post("/txs", content=tx, headers=MSGPACK)).status_code == 202
    assert_error(await client.post("/txs", content=tx, headers=MSGPACK), 409, "duplicate")
    view.commit()
    assert_error(await client.post("/txs", content=tx, headers=MSGPACK), 409, "duplicate")
    view.mempool_max = 0
    r = await client.post("/txs", content=make_tx(nonce=5), headers=MSGPACK)
    assert_error(r, 429, "mempool_full")
    assert r.headers["retry-after"] == "1"


async def test_wait_commit_answers_with_the_location(
    client: httpx.AsyncClient, view: FakeView
) -> None:
    tx = make_tx()

    async def commit_when_pooled() -> None:
        while tx_hash(tx) not in view.mempool:
            await view.changed.wait()
        view.commit([make_tx(nonce=1), tx])

    with trio.fail_after(WAIT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(commit_when_pooled)
            r = await client.post("/txs?wait=commit&timeout=5", content=tx, headers=MSGPACK)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "tx_hash": tx_hash(tx).hex(),
        "height": 1,
        "index": 1,
        "status_code": 0,
        "receipt": "applied",
    }
    # a retry of a committed tx with wait=commit finds it instead of failing as a duplicate
    r = await client.post("/txs?wait=commit", content=tx, headers=MSGPACK)
    assert r.status_code == 200 and r.json()["height"] == 1


async def test_wait_commit_times_out_with_504(client: httpx.AsyncClient) -> None:
    tx = make_tx()
    with trio.fail_after(WAIT_S):
        r = await client.post("/txs?wait=commit&timeout=0.05", content=tx, headers=MSGPACK)
    body = assert_error(r, 504, "timeout")
    assert body["tx_hash"] == tx_hash(tx).hex()


@pytest.mark.parametrize(
    "query",
    ["wait=forever", "wait=commit&timeout=0", "wait=commit&timeout=121", "timeout=abc",
     "timeout=nan", "timeout=inf", "timeout=-1"],
)  # fmt: skip
async def test_bad_wait_parameters_are_400(client: httpx.AsyncClient, query: str) -> None:
    r = await client.post(f"/txs?{query}", content=make_tx(), headers=MSGPACK)
    assert_error(r, 400, "bad_request")


async def test_the_wait_bound_is_configurable(view: FakeView) -> None:
    app = build_app(view, wait_timeout_s_max=5)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://n") as c:
        r = await c.post("/txs?wait=commit&timeout=6", content=make_tx(), headers=MSGPACK)
        assert_error(r, 400, "bad_request")
    for bad in ({"wait_timeout_s_max": 0}, {"wait_timeout_s_max": 121}, {"max_body_bytes": 0}):
        with pytest.raises(ValueError):
            build_app(view, **bad)  # type: ignore[arg-type]


MALFORMED_SINGLE = [
    ("empty body", b"", MSGPACK, 400, "empty_body"),
    ("empty json body", b"", {"content-type": "application/json"}, 400, "empty_body"),
    ("invalid json", b"{not json", {}, 400, "invalid_json"),
    ("not utf-8", b'"\xff\xfe"', {}, 400, "invalid_json"),
    ("deep json", b"[" * 50_000, {}, 400, "invalid_json"),
    ("json number", b"5", {}, 400, "bad_request"),
    ("json list", b"[]", {}, 400, "bad_request"),
    ("json null", b"null", {}, 400, "bad_request"),
    ("tx not a string", b'{"tx": 5}', {}, 400, "bad_encoding"),
    ("tx bad hex", b'{"tx": "zz"}', {}, 400, "bad_encoding"),
    ("bare bad hex", b'"abc"', {}, 400, "bad_encoding"),
    ("empty hex", b'""', {}, 400, "bad_encoding"),
    ("json form missing fields", b'{"sender": "00"}', {}, 400, "bad_encoding"),
    ("json form wrong types", b'{"sender": 1, "nonce": "x"}', {}, 400, "bad_encoding"),
    ("msgpack garbage", b"\xc1\xc1\xc1", MSGPACK, 400, "bad_encoding"),
    ("text/plain", b"00", {"content-type": "text/plain"}, 415, "unsupported_media_type"),
    ("form", b"a=b", {"content-type": "application/x-www-form-urlencoded"}, 415,
     "unsupported_media_type"),
    ("bad content-length", b"00", {"content-length": "abc"}, 400, "bad_request"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [case[1:] for case in MALFORMED_SINGLE],
    ids=[case[0] for case in MALFORMED_SINGLE],
)
async def test_malformed_submissions_get_the_right_error(
    client: httpx.AsyncClient,
    view: FakeView,
    body: bytes,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    assert_error(await client.post("/txs", content=body, headers=headers), status, code)
    assert view.mempool == {}


async def test_huge_bodies_are_refused_while_streaming(client: httpx.AsyncClient) -> None:
    """64 KiB limit (the fixture's): a declared length or a chunked stream past it is 413."""
    big = b"\x00" * (65 * 1024)
    assert_error(await client.post("/txs", content=big, headers=MSGPACK), 413, "body_too_large")
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(1000):  # 16 MB if the server read it all
            sent += 1
            yield b"\x00" * 16384

    r = await client.post("/txs/batch", content=chunks(), headers=MSGPACK)
    assert_error(r, 413, "body_too_large")
    assert "content-length" not in r.request.headers


async def test_a_trickling_body_times_out_with_408(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "BODY_READ_S_MAX", 0.05)
    never = trio.Event()

    async def trickle() -> AsyncIterator[bytes]:
        yield b"["
        await never.wait()  # the rest never comes
        yield b"]"

    with trio.fail_after(WAIT_S):
        r = await client.post("/txs", content=trickle())
    assert_error(r, 408, "body_timeout")


async def test_random_bodies_never_crash(client: httpx.AsyncClient, view: FakeView) -> None:
    """Seeded fuzz: random bytes, JSON and msgpack to both submit routes get a 4xx, never a 500."""
    rng = random.Random(7)
    valid = make_tx()
    for i in range(150):
        kind = rng.choice(["bytes", "mutated", "json", "msgpack"])
        if kind == "bytes":
            body = rng.randbytes(rng.randrange(0, 300))
        elif kind == "mutated":
            raw = bytearray(valid)
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
            body = bytes(raw)
        elif kind == "json":
            body = json.dumps(
                rng.choice([[1, "a"], {"tx": []}, {"txs": {}}, "x" * 10, None])
            ).encode()
        else:
            body = msgpack.packb(rng.choice([{1: 2}, [1, b"x"], -5, 1.5, [b"\x00"]]))
        ctype = rng.choice(["application/json", "application/msgpack", "text/plain", ""])
        path = rng.choice(["/txs", "/txs/batch"])
        r = await client.post(path, content=body, headers={"content-type": ctype} if ctype else {})
        assert r.status_code < 500, (i, kind, body, r.text)
        assert "error" in r.json() or r.status_code in (200, 202)


# -- batches ------------------------------------------------------------------------------


async def test_batch_msgpack_reports_each_tx_in_order(
    client: httpx.AsyncClient, view: FakeView
) -> None:
    good = [make_tx(record_key=f"b{i}") for i in range(3)]
    bad = make_tx(BOB)
    body = codec.pack([good[0], bad, good[1], good[2]])
    r = await client.post("/txs/batch", content=body, headers=MSGPACK)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert (doc["accepted"], doc["rejected"]) == (3, 1)
    results = doc["results"]
    assert [x["tx_hash"] for x in results] == [
        tx_hash(t).hex() for t in (good[0], bad, good[1], good[2])
    ]
    assert [x["accepted"] for x in results] == [True, False, True, True]
    assert results[1]["error"] == "not_a_member" and "error" not in results[0]
    assert view.submit_many_calls == 1
    assert len(view.mempool) == 3


async def test_batch_json_reports_unparseable_items_individually(
    client: httpx.AsyncClient, view: FakeView
) -> None:
    tx1, tx2 = make_tx(record_key="j1"), make_tx(record_key="j2")
    items = [tx1.hex(), "not hex", {"tx": tx2.hex()}, 7]
    for body in (items, {"txs": items}):
        view.mempool.clear()
        r = await client.post("/txs/batch", json=body)
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert [x["accepted"] for x in results] == [True, False, True, False]
        assert results[1] == {
            "tx_hash": None,
            "accepted": False,
            "error": "bad_encoding",
            "message": results[1]["message"],
        }
        assert results[3]["error"] == "bad_request"
        assert set(view.mempool) == {tx_hash(tx1), tx_hash(tx2)}


MALFORMED_BATCH = [
    ("empty body", b"", MSGPACK, 400, "empty_body"),
    ("empty list", b"[]", {}, 400, "empty_batch"),
    ("empty msgpack list", b"\x90", MSGPACK, 400, "empty_batch"),
    ("json object", b'{"a": 1}', {}, 400, "bad_request"),
    ("txs not a list", b'{"txs": 5}', {}, 400, "bad_request"),
    ("invalid json", b"[1,", {}, 400, "invalid_json"),
    ("msgpack garbage", b"\xc1", MSGPACK, 400, "bad_encoding"),
    ("msgpack not a list", msgpack.packb(b"x"), MSGPACK, 400, "bad_encoding"),
    ("msgpack list of ints", msgpack.packb([1, 2]), MSGPACK, 400, "bad_encoding"),
    ("msgpack map", msgpack.packb({b"a": b"b"}), MSGPACK, 400, "bad_encoding"),
    ("msgpack truncated", msgpack.packb([b"abc"])[:-1], MSGPACK, 400, "bad_encoding"),
    ("text/plain", b"[]", {"content-type": "text/plain"}, 415, "unsupported_media_type"),
]


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [case[1:] for case in MALFORMED_BATCH],
    ids=[case[0] for case in MALFORMED_BATCH],
)
async def test_malformed_batches_get_the_right_error(
    client: httpx.AsyncClient,
    view: FakeView,
    body: bytes,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    assert_error(await client.post("/txs/batch", content=body, headers=headers), status, code)
    assert view.submit_many_calls == 0


async def test_batch_over_the_count_limit_is_413(
    client: httpx.AsyncClient, view: FakeView, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "BATCH_TXS_MAX", 2)
    body = codec.pack([make_tx(nonce=i) for i in range(3)])
    assert_error(
        await client.post("/txs/batch", content=body, headers=MSGPACK), 413, "batch_too_large"
    )
    assert view.submit_many_calls == 0
    r = await client.post(
        "/txs/batch", content=codec.pack([make_tx(nonce=i) for i in range(2)]), headers=MSGPACK
    )
    assert r.status_code == 200 and r.json()["accepted"] == 2


# -- reading transactions and blocks ------------------------------------------------------


async def test_get_tx_returns_tx_and_location(client: httpx.AsyncClient, view: FakeView) -> None:
    tx = make_tx(record_key="rk", value="hello")
    expired = make_tx(nonce=9)
    view.commit([expired, tx], statuses=[8, 0])
    r = await client.get(f"/txs/{tx_hash(tx).hex()}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["height"], body["index"], body["status_code"]) == (1, 1, 0)
    assert body["receipt"] == "applied"
    assert body["tx_hex"] == tx.hex()
    assert body["tx"]["key_text"] == "rk" and body["tx"]["value_text"] == "hello"
    assert body["tx"]["sender"] == ALICE.public.hex()
    other = (await client.get(f"/txs/{tx_hash(expired).hex()}")).json()
    assert (other["status_code"], other["receipt"]) == (8, "expired")
    assert_error(await client.get(f"/txs/{'ab' * 32}"), 404, "not_found")


@pytest.mark.parametrize("bad", ["abc", "zz" * 32, "ab" * 33, "ab" * 31 + "a", "%00" * 32])
async def test_get_tx_bad_hash_is_400(client: httpx.AsyncClient, bad: str) -> None:
    assert_error(await client.get(f"/txs/{bad}"), 400, "bad_hash")


async def test_blocks_by_height_and_latest(client: httpx.AsyncClient, view: FakeView) -> None:
    assert_error(await client.get("/blocks/latest"), 404, "not_found")
    first = view.commit([make_tx(nonce=1), make_tx(nonce=2)])
    second = view.commit([])
    body = (await client.get("/blocks/1")).json()
    assert body["height"] == 1 and body["hash"] == first.block.hash().hex()
    assert body["parent_hash"] == GENESIS_HASH.hex()
    assert body["tx_hashes"] == [tx_hash(t).hex() for t in first.block.txs]
    assert body["proposer"] == NODE_KEY.public.hex()
    cert = body["certificate"]
    assert (cert["view"], cert["height"], cert["epoch"]) == (0, 1, 0)
    assert cert["digest"] == first.block.hash().hex()
    assert cert["signatures"] == [
        {"replica": s.replica.hex(), "signature": s.signature.hex()}
        for s in first.certificate.signatures
    ]
    assert "txs" not in body
    with_txs = (await client.get("/blocks/1?txs=true")).json()
    assert with_txs["txs"] == [t.hex() for t in first.block.txs]
    latest = (await client.get("/blocks/latest")).json()
    assert latest["height"] == 2 and latest["hash"] == second.block.hash().hex()
    assert latest["parent_hash"] == first.block.hash().hex()


@pytest.mark.parametrize(
    ("height", "status", "code"),
    [
        ("0", 404, "not_found"),
        ("3", 404, "not_found"),
        (str(2**64 - 1), 404, "not_found"),
        ("-1", 400, "bad_height"),
        ("abc", 400, "bad_height"),
        ("1.5", 400, "bad_height"),
        ("1e3", 400, "bad_height"),
        (str(2**64), 400, "bad_height"),
        ("9" * 400, 400, "bad_height"),
        ("%D9%A3", 400, "bad_height"),  # Arabic-Indic digit three: isdigit() but not ASCII
    ],
)
async def test_bad_block_heights(
    client: httpx.AsyncClient, view: FakeView, height: str, status: int, code: str
) -> None:
    view.commit([])
    assert_error(await client.get(f"/blocks/{height}"), status, code)


# -- records ------------------------------------------------------------------------------


async def test_record_current_value_and_deletion(client: httpx.AsyncClient, view: FakeView) -> None:
    view.commit([make_tx(record_key="licence/42", value="granted")])
    r = await client.get("/records/agency0/licence%2F42")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["value"] == "granted" and body["value_hex"] == b"granted".hex()
    assert body["key"] == "licence/42" and body["deleted"] is False
    assert (body["version"], body["height"], body["tx_index"]) == (1, 1, 0)
    view.commit([make_tx(op="delete", record_key="licence/42", value=b"", nonce=3)])
    body = (await client.get("/records/agency0/licence%2F42")).json()
    assert body["deleted"] is True and body["value"] is None and body["value_hex"] is None
    assert (body["version"], body["height"]) == (2, 2)


async def test_record_binary_key_and_value(client: httpx.AsyncClient, view: FakeView) -> None:
    key, value = b"\xff\x00k", b"\x80\x81"
    view.commit([make_tx(record_key=key, value=value)])
    body = (await client.get(f"/records/agency0/hex:{key.hex()}")).json()
    assert body["value"] is None and body["value_hex"] == value.hex()
    assert body["key"] is None and body["key_hex"] == key.hex()
    assert_error(await client.get("/records/agency0/hex:zz"), 400, "bad_key")
    assert_error(await client.get("/records/agency1/hex:" + key.hex()), 404, "not_found")


async def test_record_history_newest_first_with_paging(
    client: httpx.AsyncClient, view: FakeView
) -> None:
    for i in range(5):
        view.commit([make_tx(record_key="h", value=f"v{i}", nonce=i)])
    body = (await client.get("/records/agency0/h/history")).json()
    assert [v["value"] for v in body["versions"]] == ["v4", "v3", "v2", "v1", "v0"]
    assert body["next_before"] is None
    page1 = (await client.get("/records/agency0/h/history?limit=2")).json()
    assert [v["version"] for v in page1["versions"]] == [5, 4]
    assert page1["next_before"] == 4
    page2 = (await client.get("/records/agency0/h/history?limit=2&before=4")).json()
    assert [v["version"] for v in page2["versions"]] == [3, 2]
    page3 = (
        await client.get(f"/records/agency0/h/history?limit=2&before={page2['next_before']}")
    ).json()
    assert [v["version"] for v in page3["versions"]] == [1] and page3["next_before"] is None
    for query in ("limit=0", "limit=1001", "limit=x", "before=-1", "before=1.5"):
        assert_error(await client.get(f"/records/agency0/h/history?{query}"), 400, "bad_request")


async def test_record_key_named_history_and_bad_paths(
    client: httpx.AsyncClient, view: FakeView
) -> None:
    view.commit(
        [make_tx(record_key="history", value="x"), make_tx(record_key="a/history", value="y")]
    )
    assert (await client.get("/records/agency0/history")).json()["value"] == "x"
    assert (await client.get("/records/agency0/a%2Fhistory")).json()["value"] == "y"
    assert_error(await client.get("/records/agency0/nope"), 404, "not_found")
    assert_error(await client.get("/records/agency0/a/b/c"), 404, "not_found")
    assert_error(await client.get("/records/" + "a" * 65 + "/k"), 400, "bad_agency")
    assert_error(await client.get("/records/%FF/k"), 400, "bad_agency")
    assert_error(await client.get("/records/agency0/" + "k" * 257), 400, "bad_key")
    assert_error(await client.get("/records/agency0/hex:"), 400, "bad_key")


# -- membership views, errors, OpenAPI ------------------------------------------------------


async def test_validators_peers_evidence(client: httpx.AsyncClient) -> None:
    vals = (await client.get("/validators")).json()["validators"]
    assert vals == [{"node_id": NODE_KEY.public.hex(), "agency": "agency0", "name": "node0"}]
    peers = (await client.get("/peers")).json()["peers"]
    assert peers == [{"node_id": "00" * 32, "address": "127.0.0.1:1"}]
    evidence = (await client.get("/evidence")).json()["evidence"]
    assert evidence[0]["replica"] == NODE_KEY.public.hex()


class StubGenesis:
    def to_dict(self) -> dict[str, Any]:
        return {"chain_id": CHAIN_ID, "agencies": [{"id": "agency0", "members": [ALICE.public]}]}


async def test_genesis_document_when_the_view_has_one(
    client: httpx.AsyncClient, view: FakeView
) -> None:
    assert_error(await client.get("/genesis"), 404, "not_found")
    view.genesis = StubGenesis()  # type: ignore[attr-defined]
    doc = (await client.get("/genesis")).json()
    assert doc["agencies"][0]["members"] == [ALICE.public.hex()]


async def test_unknown_routes_and_methods_are_json_errors(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/nope"), 404, "not_found")
    assert_error(await client.get("/blocks"), 404, "not_found")
    assert_error(await client.get("/status/"), 404, "not_found")
    assert_error(await client.get("/blocks/%2F1"), 404, "not_found")
    r = await client.get("/txs")
    assert_error(r, 405, "method_not_allowed")
    assert "POST" in r.headers["allow"]
    assert_error(await client.delete("/status"), 405, "method_not_allowed")
    assert_error(await client.post("/blocks/1", content=b"x"), 405, "method_not_allowed")


def app_routes(app: Any) -> set[tuple[str, str]]:
    out = set()
    for route in app.routes:
        assert isinstance(route, Route)
        for method in route.methods or ():
            if method != "HEAD":
                out.add((method, route.path.replace(":path}", "}")))
    return out


def spec_routes(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}


async def test_openapi_describes_exactly_the_routes(
    client: httpx.AsyncClient, view: FakeView
) -> None:
    doc = (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    described = spec_routes(doc)
    served = app_routes(build_app(view))
    assert described == served
    assert len(served) == len(api.ROUTES)
    for path, ops in doc["paths"].items():
        for op in ops.values():
            assert op["responses"], path
            for param in op.get("parameters", []):
                if param["in"] == "path":
                    assert "{" + param["name"] + "}" in path


def test_openapi_references_resolve() -> None:
    doc = spec()
    text = json.dumps(doc)
    for name in doc["components"]["schemas"]:
        assert f"#/components/schemas/{name}" in text or name == "Error"
    import re

    for ref in re.findall(r'"\$ref": "#/components/schemas/(\w+)"', text):
        assert ref in doc["components"]["schemas"]


# -- the real server on the Trio loop -----------------------------------------------------


async def read_event(lines: AsyncIterator[str]) -> dict[str, Any]:
    """The next `event: block` of an SSE stream (comments skipped)."""
    event: dict[str, str] = {}
    async for line in lines:
        if line.startswith(":"):
            continue
        if line == "":
            if event:
                assert event.get("event") == "block"
                return json.loads(event["data"])
            continue
        name, _, value = line.partition(": ")
        event[name] = value
    raise AssertionError("stream ended")


async def test_real_server_serves_and_streams_blocks(view: FakeView) -> None:
    """Hypercorn on 127.0.0.1:0 in the test's nursery: requests, the block stream, clean shutdown."""
    with trio.fail_after(WAIT_S):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_api, view, "127.0.0.1", 0)
            assert port > 0
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base) as http:
                assert (await http.get("/health")).json() == {"status": "ok"}
                assert_error(await http.get("/nope"), 404, "not_found")
                async with http.stream("GET", "/blocks/stream") as stream:
                    assert stream.status_code == 200
                    assert stream.headers["content-type"].startswith("text/event-stream")
                    lines = stream.aiter_lines()
                    first_line = await lines.__anext__()
                    assert first_line.startswith(":")
                    assert len(view.subscribers) == 1
                    cb1 = view.commit([make_tx()])
                    cb2 = view.commit([])
                    got1, got2 = await read_event(lines), await read_event(lines)
                    assert (got1["height"], got1["hash"]) == (1, cb1.block.hash().hex())
                    assert (got2["height"], got2["hash"]) == (2, cb2.block.hash().hex())
                    assert got1["certificate"]["digest"] == cb1.block.hash().hex()
                # the client went away: the server must close its subscription
                send = view.subscribers[0]
                while True:
                    try:
                        send.send_nowait(cb1)
                    except trio.BrokenResourceError:
                        break
                    except trio.WouldBlock:
                        pass
                    await trio.sleep(0.01)  # poll for the condition; bounded by fail_after
                r = await http.post(
                    "/txs?wait=commit&timeout=0.01", content=make_tx(nonce=77), headers=MSGPACK
                )
                assert_error(r, 504, "timeout")
            nursery.cancel_scope.cancel()


async def test_stream_ends_when_the_view_drops_the_reader(view: FakeView) -> None:
    with trio.fail_after(WAIT_S):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_api, view, "127.0.0.1", 0)
            async with (
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
                http.stream("GET", "/blocks/stream") as stream,
            ):
                lines = stream.aiter_lines()
                await lines.__anext__()
                view.subscribers[0].close()  # a slow reader dropped by the node
                rest = [line async for line in lines]
                assert all(line == "" or line.startswith(":") for line in rest)
            nursery.cancel_scope.cancel()


async def test_server_reports_a_busy_port(view: FakeView) -> None:
    with trio.fail_after(WAIT_S):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_api, view, "127.0.0.1", 0)
            with pytest.raises(OSError):
                await nursery.start(serve_api, view, "127.0.0.1", port)
            nursery.cancel_scope.cancel()
