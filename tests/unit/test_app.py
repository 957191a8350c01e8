"""node.app: admission checks (every rejection code), deterministic execution, state roots.

`FakeStore` implements the part of `storage.store.ChainStore` the application
uses, in memory; the same scenarios also run on the real ChainStore in a tmp
dir (the `store_kind` fixture).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from consensus import codec
from consensus.crypto import ZERO_HASH, SigningKey, sha256
from consensus.types import (
    Block,
    BlockHeader,
    CertifiedBlock,
    CommitCertificate,
    Transaction,
    tx_hash,
)
from node import native
from node.app import (
    META_STATE_ROOT,
    META_TX_COUNT,
    Application,
    Checked,
    Code,
    Rejected,
    code_name,
    record_state_key,
)
from node.genesis import Genesis
from node.txs import build
from node.verify_pool import VerifyPool, verify_serial
from storage.store import ChainStore, RecordVersion, StateWrite, TxLocation

CHAIN = "redwood-test"
ALICE = SigningKey(b"\x01" * 32)  # agency0
BOB = SigningKey(b"\x02" * 32)  # agency1
MALLORY = SigningKey(b"\x03" * 32)  # nobody
NODE = SigningKey(b"\x09" * 32)
TTL = 50


def make_genesis(value_max: int = 1024, ttl: int = TTL) -> Genesis:
    return Genesis.from_dict(
        {
            "chain_id": CHAIN,
            "agencies": [
                {"id": "agency0", "members": [ALICE.public.hex()]},
                {"id": "agency1", "members": [BOB.public.hex()]},
            ],
            "validators": [{"node_id": NODE.public.hex(), "agency": "agency0"}],
            "params": {"record_value_bytes_max": value_max, "tx_ttl_blocks_max": ttl},
        }
    )


class FakeStore:
    """In-memory stand-in for ChainStore with the same observable behaviour."""

    def __init__(self, genesis_hash: bytes) -> None:
        self.genesis_hash = genesis_hash
        self.blocks: list[CertifiedBlock] = []
        self.txs: dict[bytes, TxLocation] = {}
        self.state: dict[bytes, list[RecordVersion]] = {}
        self.meta: dict[bytes, bytes] = {}
        self.commits = 0
        self.syncs: list[bool] = []

    def head_height(self) -> int:
        return len(self.blocks)

    def has_tx(self, h: bytes) -> bool:
        return h in self.txs

    def get_tx(self, h: bytes) -> TxLocation | None:
        return self.txs.get(h)

    def get_meta(self, key: bytes) -> bytes | None:
        return self.meta.get(key)

    def meta_keys(self, start: bytes, stop: bytes, limit: int = 1_000_000) -> list[bytes]:
        keys = sorted(k for k, v in self.meta.items() if v is not None and start <= k < stop)
        return keys[:limit]

    def meta_snapshot(self) -> FakeStore:
        """A frozen copy of the meta entries and records (reads only)."""
        snap = FakeStore(self.genesis_hash)
        snap.meta = dict(self.meta)
        snap.state = {k: list(v) for k, v in self.state.items()}
        return snap

    def write_meta(self, meta: Mapping[bytes, bytes | None]) -> None:
        self.meta.update(meta)  # type: ignore[arg-type]  # None reads as absent

    def state_keys(self) -> list[bytes]:
        return sorted(self.state)

    def get_block(self, height: int) -> CertifiedBlock | None:
        return self.blocks[height - 1] if 1 <= height <= len(self.blocks) else None

    def get_record(self, key: bytes) -> RecordVersion | None:
        versions = self.state.get(key)
        return versions[-1] if versions else None

    def current_versions(self, keys: Iterable[bytes]) -> dict[bytes, int]:
        return {k: len(self.state.get(k, [])) for k in keys}

    def record_history(self, key: bytes, limit: int = 100) -> list[RecordVersion]:
        return list(reversed(self.state.get(key, [])))[:limit]

    def commit_block(
        self,
        cb: CertifiedBlock,
        writes: Sequence[StateWrite],
        meta: Mapping[bytes, bytes] = {},
        tx_status: Sequence[int] | None = None,
        *,
        sync: bool = True,
        versions: Mapping[bytes, int] | None = None,
        tx_hashes: Sequence[bytes] | None = None,
        first_seen: Sequence[bool] | None = None,
    ) -> None:
        height = cb.block.height
        parent = self.blocks[-1].block.hash() if self.blocks else self.genesis_hash
        if height != len(self.blocks) + 1 or cb.block.header.parent_hash != parent:
            raise ValueError("block does not extend the head")
        statuses = list(tx_status) if tx_status is not None else [0] * len(cb.block.txs)
        for i, raw in enumerate(cb.block.txs):
            self.txs.setdefault(tx_hash(raw), TxLocation(height, i, raw, statuses[i]))
        for w in writes:
            versions = self.state.setdefault(w.key, [])
            versions.append(RecordVersion(w.key, w.value, len(versions) + 1, height, w.tx_index))
        self.meta.update(meta)
        self.blocks.append(cb)
        self.commits += 1
        self.syncs.append(sync)


# -- helpers -------------------------------------------------------------------


def certify(block: Block) -> CertifiedBlock:
    cert = CommitCertificate(
        view=0, height=block.height, digest=block.hash(), epoch=0, signatures=()
    )
    return CertifiedBlock(block, cert)


def make_block(store: Any, txs: Sequence[bytes]) -> CertifiedBlock:
    height = store.head_height() + 1
    prev = store.get_block(height - 1)
    parent = prev.block.hash() if prev is not None else store.genesis_hash
    header = BlockHeader(
        chain_id=CHAIN,
        height=height,
        view=0,
        epoch=0,
        parent_hash=parent,
        tx_root=ZERO_HASH,
        tx_count=len(txs),
        state_height=0,
        state_root=ZERO_HASH,
        proposer=NODE.public,
        timestamp_ms=height,
        validator_set_hash=ZERO_HASH,
    )
    return certify(Block(header, tuple(txs)))


_nonce = iter(range(1, 10**9))


def tx(
    key: SigningKey = ALICE,
    op: str = "put",
    agency: str = "agency0",
    record: bytes | str = "rec",
    value: bytes | str = "v",
    valid_until: int = 10,
    nonce: int | None = None,
    chain_id: str = CHAIN,
) -> bytes:
    n = next(_nonce) if nonce is None else nonce
    return build(key, chain_id, op, agency, record, value, valid_until, n)


def raw_tx(**fields: Any) -> bytes:
    """A transaction with arbitrary (even over-the-wire-limit) fields, signed by ALICE.

    Built by hand because the codec refuses to encode what it could not decode.
    """
    base: dict[str, Any] = {
        "sender": ALICE.public,
        "nonce": next(_nonce),
        "valid_until": 10,
        "op": "put",
        "agency": "agency0",
        "key": b"k",
        "value": b"v",
    }
    base.update(fields)
    body = list(base.values())
    signature = ALICE.sign(Transaction.DOMAIN, CHAIN, codec.pack(body))
    return codec.pack([codec.FORMAT_VERSION, 1, [*body, signature]])


@pytest.fixture(params=["fake", "leveldb"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def genesis() -> Genesis:
    return make_genesis()


@pytest.fixture
def store(store_kind: str, genesis: Genesis, tmp_path: Path) -> Iterator[Any]:
    if store_kind == "fake":
        yield FakeStore(genesis.hash())
        return
    real = ChainStore.open(tmp_path / "db", genesis_hash=genesis.hash())
    try:
        yield real
    finally:
        real.close()


@pytest.fixture
def app(store: Any, genesis: Genesis) -> Application:
    return Application(store, genesis)


# -- admission -----------------------------------------------------------------


def test_check_accepts_a_good_put_and_remembers_it(app: Application) -> None:
    raw = tx()
    result = app.check(raw, 0)
    assert isinstance(result, Checked) and result.tx_hash == sha256(raw)
    assert result.tx.key == b"rec" and app.verified_cache_size == 1


def _rejection(app: Application, raw: bytes, height: int = 0) -> str:
    result = app.check(raw, height)
    assert isinstance(result, Rejected), result
    assert result.message
    return result.code


def test_bad_encoding(app: Application) -> None:
    assert _rejection(app, b"\x00garbage") == "bad_encoding"
    assert _rejection(app, tx()[:-3]) == "bad_encoding"
    assert _rejection(app, b"") == "bad_encoding"


def test_bad_signature(app: Application) -> None:
    raw = bytearray(tx())
    raw[-1] ^= 1
    assert _rejection(app, bytes(raw)) == "bad_signature"
    assert _rejection(app, tx(chain_id="other-chain")) == "bad_signature"
    assert app.verified_cache_size == 0


def test_unknown_agency_and_not_a_member(app: Application) -> None:
    assert _rejection(app, tx(agency="agency9")) == "unknown_agency"
    assert _rejection(app, tx(key=MALLORY)) == "not_a_member"
    # no agency writes another's namespace
    assert _rejection(app, tx(key=BOB, agency="agency0")) == "not_a_member"
    assert isinstance(app.check(tx(key=BOB, agency="agency1"), 0), Checked)


def test_bad_op(app: Application) -> None:
    assert _rejection(app, tx(op="append")) == "bad_op"
    assert _rejection(app, tx(op="gov.add_member")) == "bad_op"
    assert _rejection(app, tx(op="delete", value="not empty")) == "bad_op"
    assert isinstance(app.check(tx(op="delete", value=""), 0), Checked)


def test_key_too_large(app: Application) -> None:
    assert _rejection(app, raw_tx(key=b"k" * 257)) == "key_too_large"
    assert _rejection(app, tx(record=b"")) == "key_too_large"
    assert isinstance(app.check(tx(record=b"k" * 256), 0), Checked)


def test_value_too_large(app: Application) -> None:
    assert _rejection(app, tx(value=b"v" * 1025)) == "value_too_large"  # genesis limit 1024
    assert _rejection(app, raw_tx(value=b"v" * (1024 * 1024 + 1))) == "value_too_large"
    assert isinstance(app.check(tx(value=b"v" * 1024), 0), Checked)


def test_expiry_window_is_next_height_to_next_height_plus_ttl(app: Application) -> None:
    # committed head 9: the next block is 10
    assert _rejection(app, tx(valid_until=9), height=9) == "expired"
    assert isinstance(app.check(tx(valid_until=10), 9), Checked)
    assert isinstance(app.check(tx(valid_until=10 + TTL), 9), Checked)
    assert _rejection(app, tx(valid_until=11 + TTL), height=9) == "ttl_too_long"


def test_duplicate_after_commit_replay_rejected_across_blocks(app: Application, store: Any) -> None:
    raw = tx(valid_until=40)
    assert isinstance(app.check(raw, 0), Checked)
    app.apply(make_block(store, [raw]))
    assert _rejection(app, raw, height=1) == "duplicate"
    # a primary replaying it in a later block gets a duplicate receipt and no write
    executed = app.apply(make_block(store, [raw, tx(record="other", valid_until=40)]))
    assert executed.tx_status == [Code.DUPLICATE, Code.APPLIED]
    assert [w.key for w in executed.writes] == [record_state_key("agency0", b"other")]
    assert store.get_tx(sha256(raw)).height == 1  # first location kept


def test_code_names() -> None:
    assert code_name(0) == "applied" and code_name(2) == "bad_signature"
    assert code_name(99) == "status_99"
    assert Rejected("ttl_too_long", "x").status == 9
    assert [int(c) for c in Code] == list(range(13))  # 12: gov_rejected


# -- execution -----------------------------------------------------------------


def test_execute_puts_and_deletes_with_history(app: Application, store: Any) -> None:
    a1 = tx(record="licence/1", value="v1")
    a2 = tx(record="licence/1", value="v2")
    b1 = tx(key=BOB, agency="agency1", record="licence/1", value="bob")
    executed = app.apply(make_block(store, [a1, a2, b1]))
    assert executed.tx_status == [0, 0, 0] and executed.applied == 3
    key_a = record_state_key("agency0", b"licence/1")
    key_b = record_state_key("agency1", b"licence/1")
    assert key_a == b"rec/agency0\x00licence/1"
    assert executed.writes == [
        StateWrite(key_a, b"v1", 0),
        StateWrite(key_a, b"v2", 1),
        StateWrite(key_b, b"bob", 2),
    ]
    assert store.get_record(key_a).value == b"v2"
    app.apply(make_block(store, [tx(op="delete", record="licence/1", value="")]))
    current = store.get_record(key_a)
    assert current is not None and current.value is None and current.height == 2
    history = store.record_history(key_a)
    assert [v.value for v in history] == [None, b"v2", b"v1"]
    assert store.get_record(key_b).value == b"bob"
    assert app.tx_count() == 4


def test_rejected_txs_stay_in_the_block_with_their_status(app: Application, store: Any) -> None:
    bad_sig = bytearray(tx(record="x"))
    bad_sig[-1] ^= 1
    good = tx(record="good")
    block_txs = [
        b"\x93garbage",
        bytes(bad_sig),
        tx(agency="agency9"),
        tx(key=MALLORY),
        tx(op="merge"),
        raw_tx(key=b"k" * 300),
        tx(value=b"v" * 2000),
        tx(valid_until=0),
        tx(valid_until=1 + TTL + 1),
        good,
        good,
        tx(key=BOB, agency="agency0", record="cross"),
    ]
    executed = app.apply(make_block(store, block_txs))
    assert executed.tx_status == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 10, 4]
    assert all(type(s) is int for s in executed.tx_status)  # the store wants plain ints
    assert executed.writes == [StateWrite(record_state_key("agency0", b"good"), b"v", 9)]
    assert store.get_tx(sha256(block_txs[3])).status == Code.NOT_A_MEMBER
    assert store.get_record(record_state_key("agency0", b"cross")) is None
    assert app.tx_count() == 1


def test_execute_is_read_only_and_checks_the_height(app: Application, store: Any) -> None:
    cb = make_block(store, [tx()])
    first = app.execute(cb.block)
    assert store.head_height() == 0 and app.execute(cb.block) == first
    app.apply(cb)
    with pytest.raises(ValueError, match="cannot execute block 1 on head 1"):
        app.execute(cb.block)


def test_state_roots_chain_and_are_kept_per_height(app: Application, store: Any) -> None:
    from node.proofs import value_hash
    from storage import state_tree

    genesis_root = state_tree.EMPTY_ROOT
    assert app.state_root() == genesis_root == app.state_root_at(0)
    e1 = app.apply(make_block(store, [tx(record="a")]))
    (w,) = e1.writes
    assert e1.state_root != genesis_root
    khash = state_tree.key_hash(w.key)
    proof = app.prove_state(1, khash)
    assert state_tree.verify(e1.state_root, khash, value_hash(1, 1, w.value), proof)
    e2 = app.apply(make_block(store, []))  # an empty block still advances the chain
    assert e2.state_root == e1.state_root  # no writes, same state
    assert app.state_root_at(1) == e1.state_root and app.state_root_at(2) == e2.state_root
    assert app.state_root_at(3) is None and app.state_root() == e2.state_root
    assert store.get_meta(META_STATE_ROOT) == e2.state_root
    assert store.get_meta(META_TX_COUNT) == struct.pack(">Q", 1)


class CountingVerifier:
    def __init__(self) -> None:
        self.items = 0
        self.calls = 0

    def __call__(self, items: Sequence[tuple[bytes, bytes, bytes]]) -> list[bool]:
        self.calls += 1
        self.items += len(items)
        return verify_serial(items)


def test_execute_skips_signatures_checked_at_admission(store: Any, genesis: Genesis) -> None:
    counter = CountingVerifier()
    app = Application(store, genesis, verify_many=counter)
    known = [tx(record=f"k{i}") for i in range(5)]
    for raw in known:
        assert isinstance(app.check(raw, 0), Checked)
    assert counter.items == 5
    assert isinstance(app.check(known[0], 0), Checked) and counter.items == 5  # cached
    unknown = [tx(record=f"u{i}") for i in range(3)]
    executed = app.apply(make_block(store, known + unknown))
    assert executed.tx_status == [0] * 8
    assert counter.items == 5 + 3 and counter.calls == 5 + 1  # one batch for the unknown ones
    assert app.verified_cache_size == 0  # committed hashes are forgotten


def test_verified_cache_is_bounded(store: Any, genesis: Genesis) -> None:
    app = Application(store, genesis, verified_cache_txs_max=3)
    for i in range(10):
        assert isinstance(app.check(tx(record=f"k{i}"), 0), Checked)
    assert app.verified_cache_size == 3
    small = Application(store, genesis, verified_cache_bytes_max=1000)
    for i in range(10):
        small.check(tx(record=f"k{i}"), 0)
    assert small.verified_cache_size == 2  # 400-byte overhead + key + value per entry


def test_execute_with_a_verify_pool(store: Any, genesis: Genesis) -> None:
    with VerifyPool(threads=2) as pool:
        app = Application(store, genesis, verify_many=pool.verify_many)
        txs = [tx(record=f"k{i}") for i in range(150)]
        bad = bytearray(txs[77])
        bad[-5] ^= 0x40
        txs[77] = bytes(bad)
        executed = app.apply(make_block(store, txs))
    assert executed.tx_status == [0] * 77 + [Code.BAD_SIGNATURE] + [0] * 72
    assert pool.signatures == 150


# -- determinism ---------------------------------------------------------------


def _scenario_blocks() -> list[list[bytes]]:
    """Blocks mixing valid puts/deletes, invalid txs, duplicates and cross-agency writes."""
    t = {
        i: tx(record=f"r{i % 7}", value=f"v{i}", valid_until=30, nonce=1000 + i) for i in range(40)
    }
    bad_sig = bytearray(t[5])
    bad_sig[-1] ^= 1
    return [
        [t[0], t[1], t[2], t[0], b"\x01\x02"],
        [t[3], bytes(bad_sig), tx(key=BOB, agency="agency0", nonce=7, valid_until=30)],
        [],
        [t[1], t[4], tx(op="delete", record="r0", value="", nonce=8, valid_until=30)],
        [t[i] for i in range(6, 40)] + [tx(key=BOB, agency="agency1", nonce=9, valid_until=30)],
        [tx(valid_until=2, nonce=10), tx(value=b"x" * 5000, nonce=11, valid_until=30)],
    ]


def _dump(store: Any, app: Application, heights: int) -> dict[str, Any]:
    keys = sorted({w for b in range(1, heights + 1) for w in _keys_of(store.get_block(b))})
    return {
        "roots": [app.state_root_at(h) for h in range(heights + 1)],
        "records": {k: store.get_record(k) for k in keys},
        "history": {k: store.record_history(k, limit=100) for k in keys},
        "status": [
            [store.get_tx(tx_hash(raw)) for raw in store.get_block(h).block.txs]
            for h in range(1, heights + 1)
        ],
        "tx_count": app.tx_count(),
    }


def _keys_of(cb: CertifiedBlock) -> set[bytes]:
    from node.txs import decode_tx

    keys = set()
    for raw in cb.block.txs:
        try:
            t = decode_tx(raw)
        except codec.DecodeError:
            continue
        keys.add(record_state_key(t.agency, t.key))
    return keys


def test_two_nodes_reach_identical_state(tmp_path: Path, genesis: Genesis) -> None:
    """A warm node (signatures cached at admission) on LevelDB and a cold node on the fake store."""
    warm_store = ChainStore.open(tmp_path / "warm", genesis_hash=genesis.hash())
    cold_store = FakeStore(genesis.hash())
    warm = Application(warm_store, genesis)
    cold = Application(cold_store, genesis)
    try:
        results = []
        for txs in _scenario_blocks():
            for raw in txs:
                warm.check(raw, warm_store.head_height())
            cb = make_block(warm_store, txs)
            assert cb.block.hash() == make_block(cold_store, txs).block.hash()
            a, b = warm.apply(cb), cold.apply(cb)
            assert a == b
            results.append(a)
        assert any(Code.DUPLICATE in r.tx_status for r in results)
        assert any(Code.NOT_A_MEMBER in r.tx_status for r in results)
        assert any(Code.BAD_SIGNATURE in r.tx_status for r in results)
        heights = len(results)
        assert _dump(warm_store, warm, heights) == _dump(cold_store, cold, heights)
        assert warm.signatures_skipped > 0 and cold.signatures_skipped == 0
    finally:
        warm_store.close()


def test_remembered_entries_are_one_packed_bytes_each(app: Application, store: Any) -> None:
    """One bytes object a remembered key (version, then the value hash unless deleted),
    read back as the version and the known value hash."""
    from node.app import pack_current

    h = bytes(range(32))
    assert pack_current(7, h) == (7).to_bytes(8, "big") + h
    assert pack_current(2**64 - 1, None) == b"\xff" * 8
    app.apply(make_block(store, [tx(record="a", value="1"), tx(record="b", value="2")]))
    app.apply(make_block(store, [tx(op="delete", record="a", value="")]))
    entries = {**app._current_old, **app._current}
    assert entries and all(type(e) is bytes and len(e) in (8, 40) for e in entries.values())
    deleted = [k for k, e in entries.items() if len(e) == 8]
    assert len(deleted) == 1
    versions, known = app._current_of(set(entries))
    assert versions[deleted[0]] == 2 and deleted[0] not in known
    assert all(len(known[k]) == 32 for k in entries if k not in deleted)


def test_remembered_versions_and_value_hashes_change_nothing(
    tmp_path: Path, genesis: Genesis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys a committed block wrote are remembered (version, value hash): the next
    blocks writing them read no version from the store, and the results equal those
    of an application that remembers nothing, however the memory's generations turn."""
    import node.app as app_module

    blocks = _scenario_blocks()
    for round_ in range(6):  # rewrite, delete and re-put the same few keys, several per block
        blocks.append(
            [
                tx(record=f"r{(round_ + i) % 5}", value=f"w{round_}.{i}", valid_until=30)
                for i in range(4)
            ]
            + [tx(op="delete", record=f"r{round_ % 5}", value="", valid_until=30)]
        )
    stores = {name: FakeStore(genesis.hash()) for name in ("remembers", "churns", "forgets")}
    apps = {name: Application(store, genesis) for name, store in stores.items()}
    read: dict[str, int] = {name: 0 for name in stores}
    for name, store in stores.items():
        real = store.current_versions

        def counting(keys: Iterable[bytes], name: str = name, real: Any = real) -> Any:
            keys = list(keys)
            read[name] += len(keys)
            return real(keys)

        store.current_versions = counting  # type: ignore[method-assign]
    for txs in blocks:
        results = {}
        for name, app in apps.items():
            if name == "forgets":
                app._current.clear()
                app._current_old.clear()
            monkeypatch.setattr(app_module, "CURRENT_CACHE_KEYS", 2 if name == "churns" else 65_536)
            results[name] = app.apply(make_block(stores[name], txs))
        assert results["remembers"] == results["churns"] == results["forgets"]
    heights = len(blocks)
    dumps = [_dump(stores[name], apps[name], heights) for name in stores]
    assert dumps[0] == dumps[1] == dumps[2]
    assert read["remembers"] < read["churns"] < read["forgets"]


def test_state_survives_reopening_the_store(tmp_path: Path, genesis: Genesis) -> None:
    path = tmp_path / "db"
    store = ChainStore.open(path, genesis_hash=genesis.hash())
    app = Application(store, genesis)
    roots = [app.apply(make_block(store, txs)).state_root for txs in _scenario_blocks()[:3]]
    store.close()
    store = ChainStore.open(path, genesis_hash=genesis.hash())
    try:
        app = Application(store, genesis)
        assert [app.state_root_at(h) for h in (1, 2, 3)] == roots
        assert app.state_root() == roots[-1]
        e4 = app.apply(make_block(store, _scenario_blocks()[3]))
        fresh = FakeStore(genesis.hash())
        replay = Application(fresh, genesis)
        for txs in _scenario_blocks()[:4]:
            last = replay.apply(make_block(fresh, txs))
        assert last.state_root == e4.state_root
    finally:
        store.close()


# -- the verify pool -------------------------------------------------------------


def test_verify_pool_answers_in_order_across_threads() -> None:
    from consensus.crypto import signing_bytes

    items = []
    expected = []
    for i in range(300):
        message = signing_bytes("d", CHAIN, i.to_bytes(4, "big"))
        sig = ALICE.sign("d", CHAIN, i.to_bytes(4, "big"))
        good = i % 7 != 3
        if not good:
            sig = bytes([sig[0] ^ 1]) + sig[1:]
        items.append((ALICE.public, sig, message))
        expected.append(good)
    items.append((b"short", bytes(64), b"m"))  # malformed key: False, never an exception
    expected.append(False)
    with VerifyPool(threads=3) as pool:
        assert pool.verify_many(items) == expected
        assert pool.verify_many(items[:5]) == expected[:5]  # small batches stay in the caller
        assert pool.verify_many([]) == []
        assert pool.batches == 3 and pool.signatures == 306
    assert verify_serial(items) == expected
    with pytest.raises(ValueError):
        VerifyPool(threads=0)


# -- speed (slow: run with --run-slow) ----------------------------------------------


@pytest.mark.slow
def test_execute_speed_of_a_full_block_with_cached_signatures(tmp_path: Path) -> None:
    """Target: < 25 µs/tx for 4,000 ~200-byte puts whose signatures were checked at admission."""
    import time

    genesis = make_genesis(value_max=65536, ttl=10_000)
    store = ChainStore.open(tmp_path / "db", genesis_hash=genesis.hash())
    try:
        app = Application(store, genesis)
        txs = [
            build(ALICE, CHAIN, "put", "agency0", f"licence/{i:08d}", b"x" * 60, 100, i)
            for i in range(4000)
        ]
        assert 190 <= len(txs[0]) <= 210
        for raw in txs:
            assert isinstance(app.check(raw, 0), Checked)
        block = make_block(store, txs).block
        best = min(_timed(app.execute, block, time.perf_counter) for _ in range(3))
        per_tx_us = best / len(txs) * 1e6
        print(f"execute: {per_tx_us:.1f} us/tx with cached signatures")
        assert per_tx_us < 25
    finally:
        store.close()


def _timed(fn: Any, arg: Any, clock: Any) -> float:
    start = clock()
    result = fn(arg)
    assert result.applied == len(arg.txs)
    return float(clock() - start)


class HeldVerifier:
    """Counts what it checks; its first call blocks until `release` is set."""

    def __init__(self, fail_first: bool = False) -> None:
        self.checked: list[int] = []
        self.first_started = threading.Event()
        self.release = threading.Event()
        self.fail_first = fail_first
        self.changed = threading.Condition()

    def __call__(self, items: Sequence[tuple[bytes, bytes, bytes]]) -> list[bool]:
        with self.changed:
            first = not self.checked
            self.checked.append(len(items))
            self.changed.notify_all()
        if first:
            self.first_started.set()
            assert self.release.wait(10)
            if self.fail_first:
                raise RuntimeError("verifier failed")
        return verify_serial(items)


def _checked_items(app: Application, raws: list[bytes]) -> tuple[list[Checked], list[Any]]:
    checked: list[Checked] = []
    for raw in raws:
        result = app.precheck(raw, 0)
        assert isinstance(result, Checked)
        checked.append(result)
    return checked, [app.signature_item(c.tx, raw) for c, raw in zip(checked, raws, strict=True)]


def _in_thread(fn: Any, *args: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn(*args))
        except Exception as exc:  # handed to the test
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def test_concurrent_checks_of_the_same_transactions_verify_each_once(
    store: Any, genesis: Genesis
) -> None:
    """A PRE-PREPARE's check and an admission batch holding the same transactions at
    the same moment (what made backups check 1.5 signatures a transaction): the later
    call waits for the earlier one's answer instead of checking again."""
    held = HeldVerifier()
    app = Application(store, genesis, verify_many=held)
    bad = _damaged(tx(record="bad"))
    raws = [tx(record=f"c{i}") for i in range(5)] + [bad]
    checked, items = _checked_items(app, raws)
    first, first_out = _in_thread(
        app.verify_checked, checked[:4] + checked[5:], items[:4] + items[5:]
    )
    assert held.first_started.wait(10)
    # the second call holds 3 of the first's (one of them bad) and 1 of its own
    second, second_out = _in_thread(app.verify_checked, checked[2:], items[2:])
    with held.changed:  # the second call checks its own transaction while the first is held
        assert held.changed.wait_for(lambda: len(held.checked) >= 2, timeout=10)
    assert held.checked == [5, 1]
    held.release.set()
    first.join(10)
    second.join(10)
    assert first_out == [[True, True, True, True, False]]
    assert second_out == [[True, True, True, False]]
    # the bad one is not cached, so the second call checked it again; nothing else twice
    assert held.checked == [5, 1, 1] and app.signatures_checked == 7
    assert all(app.is_verified(c.tx_hash) for c in checked[:5])
    assert not app.is_verified(checked[5].tx_hash) and not app._claimed


def test_a_check_that_fails_releases_its_claims(store: Any, genesis: Genesis) -> None:
    held = HeldVerifier(fail_first=True)
    app = Application(store, genesis, verify_many=held)
    checked, items = _checked_items(app, [tx(record=f"f{i}") for i in range(3)])
    first, first_out = _in_thread(app.verify_checked, checked, items)
    assert held.first_started.wait(10)
    second, second_out = _in_thread(app.verify_checked, checked[1:], items[1:])
    held.release.set()
    first.join(10)
    second.join(10)
    assert isinstance(first_out[0], RuntimeError)
    assert second_out == [[True, True]] and held.checked == [3, 2]  # checked itself, no hang
    assert not app._claimed
    with pytest.raises(ValueError, match="one signature item"):
        app.verify_checked(checked, items[:1])


def _damaged(raw: bytes) -> bytes:
    return raw[:-1] + bytes([raw[-1] ^ 1])  # the last byte belongs to the signature


def test_verify_proposal_finds_the_first_bad_signature_and_caches_good_ones(
    store: Any, genesis: Genesis
) -> None:
    counter = CountingVerifier()
    app = Application(store, genesis, verify_many=counter)
    known = tx(record="known")
    assert isinstance(app.check(known, 0), Checked) and counter.items == 1
    good = [tx(record=f"g{i}") for i in range(4)]
    assert app.verify_proposal([known, *good]) is None
    assert counter.items == 1 + 4 and counter.calls == 2  # the cached one is not re-checked
    assert app.verify_proposal([known, *good]) is None and counter.items == 5  # all cached now
    bad = [good[0], _damaged(tx(record="b1")), b"\xc1 not a transaction", _damaged(tx(record="b2"))]
    assert app.verify_proposal(bad) == 1  # undecodable bytes are left to execution
    assert app.verify_proposal([]) is None


def test_execute_without_signature_checks_trusts_a_committed_block(
    store: Any, genesis: Genesis
) -> None:
    """A node executes committed blocks with verify_signatures=False: no signature is
    checked, cached or not (a catching-up node has nothing cached), and receipts are
    those of a block whose signatures verified."""
    counter = CountingVerifier()
    app = Application(store, genesis, verify_many=counter)
    raws = [tx(record=f"c{i}") for i in range(5)]
    executed = app.apply(make_block(store, raws), verify_signatures=False)
    assert executed.tx_status == [0] * 5 and counter.items == 0
    assert app.signatures_skipped == 5
    # the default still checks (tests and tools), and finds a bad one
    damaged = _damaged(tx(record="d"))
    checked = app.apply(make_block(store, [damaged]))
    assert checked.tx_status == [int(Code.BAD_SIGNATURE)] and counter.items == 1


def test_apply_many_applies_in_order_and_syncs_only_the_last_write(genesis: Genesis) -> None:
    store = FakeStore(genesis.hash())
    app = Application(store, genesis)
    blocks = []
    for i in range(3):
        cb = make_block(store, [tx(record=f"m{i}")])
        blocks.append(cb)
        app.apply(cb, sync=False)  # build the chain once to get linked blocks
    replay_store = FakeStore(genesis.hash())
    replay = Application(replay_store, genesis)
    done = replay.apply_many(blocks)
    assert [e.height for e in done] == [1, 2, 3]
    assert replay_store.syncs == [False, False, True]
    assert [e.state_root for e in done] == [app.state_root_at(h) for h in (1, 2, 3)]


@pytest.mark.skipif(
    "node.app" in native.compiled_modules(),
    reason="patches methods of compiled classes: test_native runs it in the pure build",
)
def test_state_tree_cpu_counts_the_tree_and_not_the_block_write(
    store: Any, genesis: Genesis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`state_tree_cpu_s` (exported as redwood_state_tree_cpu_seconds_total) adds the
    thread CPU of each block's tree update and of `committed`, and nothing of the
    store's reads and write: a fake thread clock that only the tree and the store advance."""
    import node.app as app_module

    clock = [0.0]
    monkeypatch.setattr(app_module.time, "thread_time", lambda: clock[0])
    app = Application(store, genesis)
    update, committed, commit_block = app.tree.update, app.tree.committed, store.commit_block

    def timed(cost: float, fn: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            clock[0] += cost
            return fn(*args, **kwargs)

        return run

    monkeypatch.setattr(app.tree, "update", timed(5.0, update))
    monkeypatch.setattr(app.tree, "committed", timed(3.0, committed))
    monkeypatch.setattr(store, "commit_block", timed(100.0, commit_block))
    monkeypatch.setattr(app, "tx_count", timed(50.0, app.tx_count))  # a store read, not the tree
    assert app.state_tree_cpu_s == 0.0
    app.apply(make_block(store, [tx(record="t1"), tx(record="t2")]))
    assert app.state_tree_cpu_s == 8.0
    app.apply(make_block(store, [tx(record="t3")]))
    assert app.state_tree_cpu_s == 16.0
