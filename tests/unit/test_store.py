"""ChainStore: round trips, refusals, tx index, state history, reopen, corruption and locking."""

from __future__ import annotations

import dataclasses
import pathlib
import random
import statistics
import struct
import threading
import time

import plyvel
import pytest

from consensus import codec, journal_codec
from consensus.crypto import sha256
from consensus.types import CertifiedBlock, Prepare, PreparedCertificate, PrePrepare, tx_hash
from node import native
from storage.store import (
    FORMAT,
    INLINE_VALUE_MAX,
    RECORD_HISTORY_MAX,
    ChainStore,
    RecordVersion,
    StateWrite,
    StoreError,
    TxLocation,
    destroy,
)
from tests.unit.crash_writer import GENESIS_HASH, make_block, make_tx

RECOVERY = "redwood repair --home"


@pytest.fixture
def path(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "data"


@pytest.fixture
def store(path: pathlib.Path):
    s = ChainStore.open(path, genesis_hash=GENESIS_HASH)
    yield s
    s.close()


def commit_chain(store: ChainStore, count: int, txs_per_block: int = 3) -> list[CertifiedBlock]:
    """Commit `count` blocks on top of the head; tx i of block h is tx 'h i'."""
    blocks = []
    for _ in range(count):
        h = store.head_height() + 1
        txs = tuple(make_tx(b"%d %d" % (h, i), 100 + i) for i in range(txs_per_block))
        cb = make_block(h, store.head_hash(), txs)
        store.commit_block(cb, [StateWrite(b"k", b"v%d" % h, 0)], {b"height": b"%d" % h})
        blocks.append(cb)
    return blocks


def raw_db(path: pathlib.Path) -> plyvel.DB:
    return plyvel.DB(str(path))


# -- round trips -------------------------------------------------------------------


def test_empty_store_has_no_head(store: ChainStore) -> None:
    assert store.head_height() == 0
    assert store.head() is None
    assert store.head_hash() == GENESIS_HASH
    assert store.genesis_hash == GENESIS_HASH
    assert store.get_block(1) is None
    assert store.get_blocks(1, 10, 10**6) == []
    assert store.get_record(b"k") is None
    assert store.record_history(b"k") == []
    assert store.get_meta(b"height") is None
    assert store.journal_items() == {}


def test_block_round_trip_by_height_hash_and_head(store: ChainStore) -> None:
    blocks = commit_chain(store, 3)
    assert store.head_height() == 3
    assert store.head() == blocks[-1]
    assert store.head_hash() == blocks[-1].block.hash()
    for cb in blocks:
        assert store.get_block(cb.block.height) == cb
        assert store.get_block_by_hash(cb.block.hash()) == cb
    assert store.get_block(4) is None
    assert store.get_block(0) is None
    assert store.get_block_by_hash(sha256(b"nothing")) is None


def test_get_blocks_range_and_byte_limit(store: ChainStore) -> None:
    blocks = commit_chain(store, 5)
    assert store.get_blocks(2, 4, 10**9) == blocks[1:4]
    assert store.get_blocks(0, 99, 10**9) == blocks
    assert store.get_blocks(4, 2, 10**9) == []
    one = len(codec.encode(blocks[0]))  # the blocks all encode to the same size
    # a limit of two blocks' bytes gives two; a tiny limit still gives the first block
    assert store.get_blocks(1, 5, 2 * one + 10) == blocks[:2]
    assert store.get_blocks(3, 5, 1) == blocks[2:3]


def test_tx_index_round_trip_with_status(store: ChainStore) -> None:
    txs = (make_tx(b"a"), make_tx(b"b", 1000), make_tx(b"c", 70000))
    cb = make_block(1, GENESIS_HASH, txs)
    store.commit_block(cb, [], tx_status=[0, 7, 2**32 - 1])
    for index, (tx, status) in enumerate(zip(txs, [0, 7, 2**32 - 1], strict=True)):
        assert store.has_tx(tx_hash(tx))
        assert store.get_tx(tx_hash(tx)) == TxLocation(1, index, tx, status)
    assert not store.has_tx(tx_hash(b"other"))
    assert store.get_tx(tx_hash(b"other")) is None


def test_tx_index_keeps_the_first_location(store: ChainStore) -> None:
    a, b = make_tx(b"a"), make_tx(b"b")
    store.commit_block(make_block(1, GENESIS_HASH, (a, b, a)), [], tx_status=[0, 0, 5])
    cb2 = make_block(2, store.head_hash(), (make_tx(b"c"), b))
    store.commit_block(cb2, [], tx_status=[0, 9])
    assert store.get_tx(tx_hash(a)) == TxLocation(1, 0, a, 0)  # not the copy at index 2
    assert store.get_tx(tx_hash(b)) == TxLocation(1, 1, b, 0)  # not the replay in block 2
    assert store.get_tx(tx_hash(make_tx(b"c"))) == TxLocation(2, 0, make_tx(b"c"), 0)


class _CountingDb:
    """The store's plyvel handle with its point reads counted."""

    def __init__(self, db: plyvel.DB) -> None:
        self.db, self.gets = db, 0

    def get(self, key: bytes) -> bytes | None:
        self.gets += 1
        return self.db.get(key)

    def __getattr__(self, name: str) -> object:
        return getattr(self.db, name)


@pytest.mark.parametrize("absent_max", [5, 200])
def test_has_tx_agrees_with_the_index_through_its_memory(
    store: ChainStore, path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, absent_max: int
) -> None:
    """`has_tx` answers from memory (recent commits, earlier misses) exactly as LevelDB would:
    random commits, replays and look-ups with tiny limits, so every eviction path runs."""
    import random

    import storage.store as store_module

    monkeypatch.setattr(store_module, "RECENT_TXS_MAX", 7)
    monkeypatch.setattr(store_module, "RECENT_BLOCKS_MAX", 4)
    monkeypatch.setattr(store_module, "ABSENT_TXS_MAX", absent_max)
    rng = random.Random(11)
    pool = [make_tx(b"pool %d" % i, 60) for i in range(120)]
    committed: set[bytes] = set()
    for _ in range(300):
        if rng.random() < 0.3:
            txs = tuple(rng.choice(pool) for _ in range(rng.randrange(0, 5)))
            store.commit_block(make_block(store.head_height() + 1, store.head_hash(), txs), [])
            committed.update(tx_hash(tx) for tx in txs)
        else:
            h = tx_hash(rng.choice(pool))
            assert store.has_tx(h) == (h in committed)
    assert len(committed) > 40 and store.head_height() > 60
    store.close()
    with ChainStore.open(path) as reopened:  # a fresh memory: LevelDB alone
        for tx in pool:
            assert reopened.has_tx(tx_hash(tx)) == (tx_hash(tx) in committed)


def test_has_tx_reads_leveldb_once_per_absent_hash(store: ChainStore) -> None:
    """Admission looks a new transaction up, execution again: only the first reads LevelDB."""
    counting = _CountingDb(store._db)
    store._db = counting  # type: ignore[assignment]
    new, other = make_tx(b"new"), make_tx(b"other")
    assert not store.has_tx(tx_hash(new)) and counting.gets == 1
    assert not store.has_tx(tx_hash(new)) and counting.gets == 1  # remembered absent
    store.commit_block(make_block(1, GENESIS_HASH, (new,)), [])
    reads = counting.gets
    assert store.has_tx(tx_hash(new)) and counting.gets == reads  # a recent commit
    assert not store.has_tx(tx_hash(other)) and counting.gets == reads + 1


def test_meta_is_written_with_the_block_and_can_be_deleted(store: ChainStore) -> None:
    store.commit_block(make_block(1, GENESIS_HASH), [], {b"a": b"1", b"b": b"2"})
    store.commit_block(make_block(2, store.head_hash()), [], {b"a": b"3", b"b": None})
    assert store.get_meta(b"a") == b"3"
    assert store.get_meta(b"b") is None


def test_meta_keys_lists_a_range_of_meta_only(store: ChainStore) -> None:
    meta = {b"l/1": b"x", b"l/2": b"y", b"l/3": b"z", b"l/4": b"w", b"m/1": b"v"}
    store.commit_block(make_block(1, GENESIS_HASH), [], meta)
    store.commit_block(make_block(2, store.head_hash()), [], {b"l/2": None})
    store.journal_write([(b"l/1", b"journal")])  # another namespace: never listed
    assert store.meta_keys(b"l/", b"l0") == [b"l/1", b"l/3", b"l/4"]
    assert store.meta_keys(b"l/", b"l/4") == [b"l/1", b"l/3"]
    assert store.meta_keys(b"l/", b"l0", limit=2) == [b"l/1", b"l/3"]
    assert store.meta_keys(b"n/", b"o/") == []


def test_empty_block_commits(store: ChainStore) -> None:
    cb = make_block(1, GENESIS_HASH)
    store.commit_block(cb, [])
    assert store.head() == cb


# -- refusals ------------------------------------------------------------------------


def test_refuses_a_height_that_is_not_head_plus_one(store: ChainStore) -> None:
    with pytest.raises(ValueError, match="next block must be 1"):
        store.commit_block(make_block(2, GENESIS_HASH), [])
    commit_chain(store, 2)
    with pytest.raises(ValueError, match="next block must be 3"):
        store.commit_block(make_block(2, store.get_block(1).block.hash()), [])
    with pytest.raises(ValueError, match="next block must be 3"):
        store.commit_block(make_block(4, store.head_hash()), [])
    assert store.head_height() == 2


def test_refuses_a_parent_hash_that_does_not_link(store: ChainStore) -> None:
    with pytest.raises(ValueError, match=r"does not match the hash .* of genesis"):
        store.commit_block(make_block(1, sha256(b"another genesis")), [])
    commit_chain(store, 1)
    with pytest.raises(ValueError, match=r"parent hash .* of block 1"):
        store.commit_block(make_block(2, GENESIS_HASH), [])
    assert store.head_height() == 1


def test_refuses_a_certificate_for_another_block(store: ChainStore) -> None:
    cb = make_block(1, GENESIS_HASH)
    other = make_block(1, GENESIS_HASH, (make_tx(b"x"),))
    wrong_digest = dataclasses.replace(cb, certificate=other.certificate)
    with pytest.raises(ValueError, match="certificate"):
        store.commit_block(wrong_digest, [])
    wrong_height = dataclasses.replace(
        cb, certificate=dataclasses.replace(cb.certificate, height=2)
    )
    with pytest.raises(ValueError, match="certificate"):
        store.commit_block(wrong_height, [])
    assert store.head_height() == 0


@pytest.mark.parametrize(
    "make",
    [
        lambda: ([StateWrite(b"ok", b"1", 0), StateWrite("str key", b"1", 0)], {}, None),  # type: ignore[arg-type]
        lambda: ([StateWrite(b"ok", b"1", 0), StateWrite(b"k", 5, 0)], {}, None),  # type: ignore[arg-type]
        lambda: ([StateWrite(b"ok", b"1", 0), StateWrite(b"k", b"v", -1)], {}, None),
        lambda: ([StateWrite(b"ok", b"1", 0), StateWrite(b"k" * 5000, b"v", 0)], {}, None),
        lambda: ([StateWrite(b"ok", b"1", 0)], {b"m": 3}, None),
        lambda: ([StateWrite(b"ok", b"1", 0)], {}, [0, 0]),
        lambda: ([StateWrite(b"ok", b"1", 0)], {}, [-1]),
    ],
)
def test_malformed_arguments_write_nothing(store: ChainStore, make) -> None:
    cb = make_block(1, GENESIS_HASH, (make_tx(b"t"),))
    try:
        writes, meta, status = make()
    except TypeError:  # the compiled StateWrite refuses a wrongly typed field itself
        assert "storage.store" in native.compiled_modules()
    else:
        with pytest.raises(ValueError):
            store.commit_block(cb, writes, meta, status)
    assert store.head_height() == 0
    assert store.get_block(1) is None
    assert store.get_record(b"ok") is None
    assert not store.has_tx(tx_hash(make_tx(b"t")))
    store.commit_block(cb, [StateWrite(b"ok", b"1", 0)])  # the store is still usable
    assert store.get_record(b"ok").version == 1


# -- versioned state -------------------------------------------------------------------


def _write(store: ChainStore, writes: list[StateWrite]) -> int:
    h = store.head_height() + 1
    store.commit_block(make_block(h, store.head_hash()), writes)
    return h


def test_versions_count_per_key_including_several_writes_in_one_block(store: ChainStore) -> None:
    _write(store, [StateWrite(b"a", b"1", 0), StateWrite(b"b", b"x", 1), StateWrite(b"a", b"2", 2)])
    _write(store, [StateWrite(b"a", b"3", 4)])
    assert store.get_record(b"a") == RecordVersion(b"a", b"3", 3, 2, 4)
    assert store.get_record(b"b") == RecordVersion(b"b", b"x", 1, 1, 1)
    assert [v.value for v in store.record_history(b"a")] == [b"3", b"2", b"1"]
    assert [(v.version, v.height, v.tx_index) for v in store.record_history(b"a")] == [
        (3, 2, 4),
        (2, 1, 2),
        (1, 1, 0),
    ]


def test_deletion_is_a_version_kept_in_history(store: ChainStore) -> None:
    _write(store, [StateWrite(b"k", b"1", 0)])
    _write(store, [StateWrite(b"k", None, 0)])
    _write(store, [StateWrite(b"k", b"", 0)])  # an empty value is not a deletion
    assert store.record_history(b"k") == [
        RecordVersion(b"k", b"", 3, 3, 0),
        RecordVersion(b"k", None, 2, 2, 0),
        RecordVersion(b"k", b"1", 1, 1, 0),
    ]
    _write(store, [StateWrite(b"k", None, 1)])
    assert store.get_record(b"k") == RecordVersion(b"k", None, 4, 4, 1)


def test_history_pages_newest_first(store: ChainStore) -> None:
    for i in range(1, 8):
        _write(store, [StateWrite(b"k", b"%d" % i, 0)])
    versions = lambda page: [v.version for v in page]  # noqa: E731
    assert versions(store.record_history(b"k", limit=3)) == [7, 6, 5]
    assert versions(store.record_history(b"k", limit=3, before_version=5)) == [4, 3, 2]
    assert versions(store.record_history(b"k", limit=3, before_version=2)) == [1]
    assert store.record_history(b"k", limit=3, before_version=1) == []
    assert versions(store.record_history(b"k", before_version=100)) == [7, 6, 5, 4, 3, 2, 1]
    assert store.record_history(b"k", limit=0) == []
    assert store.record_history(b"k", before_version=-5) == []
    assert versions(store.record_history(b"k", limit=2, before_version=2**70)) == [7, 6]
    assert store.record_history(b"x" * 10_000) == []  # longer than any state key


def test_history_of_one_key_never_includes_another(store: ChainStore) -> None:
    # b"k" is a prefix of b"k\x00\x00..."; the length in the history key keeps them apart
    _write(store, [StateWrite(b"k", b"1", 0), StateWrite(b"k" + bytes(9), b"2", 1)])
    _write(store, [StateWrite(b"", b"empty key", 0)])
    assert [v.value for v in store.record_history(b"k")] == [b"1"]
    assert [v.value for v in store.record_history(b"k" + bytes(9))] == [b"2"]
    assert [v.value for v in store.record_history(b"")] == [b"empty key"]


def test_history_limit_is_capped(store: ChainStore) -> None:
    writes = [StateWrite(b"k", b"%d" % i, 0) for i in range(RECORD_HISTORY_MAX + 5)]
    _write(store, writes)
    assert len(store.record_history(b"k", limit=10**6)) == RECORD_HISTORY_MAX


def test_long_values_are_stored_apart_and_read_back(store: ChainStore, path: pathlib.Path) -> None:
    short, edge, long = b"s" * INLINE_VALUE_MAX, b"e" * INLINE_VALUE_MAX, b"L" * 200
    _write(
        store,
        [StateWrite(b"a", short, 0), StateWrite(b"b", long, 1), StateWrite(b"a", long + b"2", 2)],
    )
    _write(store, [StateWrite(b"b", None, 0), StateWrite(b"c", edge + b"!", 3)])
    assert store.get_record(b"a") == RecordVersion(b"a", long + b"2", 2, 1, 2)
    assert store.get_record(b"b") == RecordVersion(b"b", None, 2, 2, 0)
    assert store.get_record(b"c") == RecordVersion(b"c", edge + b"!", 1, 2, 3)
    assert [v.value for v in store.record_history(b"a")] == [long + b"2", short]
    assert [v.value for v in store.record_history(b"b")] == [None, long]
    store.close()
    entries = _dump(path)
    # the long values sit under w/ (height, the write's place in the block), once each
    values = {k: v for k, v in entries.items() if k.startswith(b"w/")}
    assert values == {
        b"w/" + _u64(1) + struct.pack(">I", 1): long,
        b"w/" + _u64(1) + struct.pack(">I", 2): long + b"2",
        b"w/" + _u64(2) + struct.pack(">I", 1): edge + b"!",
    }
    history = {k: v for k, v in entries.items() if k.startswith(b"v/")}
    assert max(map(len, history.values())) == 13 + INLINE_VALUE_MAX  # the short one, inline
    assert history[b"v/\x00\x01b" + _u64(1)] == _u64(1) + struct.pack(">IBI", 1, 2, 1)


def _format_1_store(path: pathlib.Path) -> None:
    """A store as format 1 wrote it: every value inline in its version entry."""
    with ChainStore.open(path, genesis_hash=GENESIS_HASH) as s:
        _write(s, [StateWrite(b"k", b"x" * 100, 0), StateWrite(b"d", None, 1)])
    db = raw_db(path)
    for key in [k for k, _ in db.iterator(prefix=b"w/")]:
        db.delete(key)
    db.put(b"v/\x00\x01k" + _u64(1), _u64(1) + struct.pack(">IB", 0, 1) + b"x" * 100)
    db.put(b"m/format", struct.pack(">I", 1))
    db.close()


def test_a_format_1_store_reads_continues_and_is_marked_format_3(path: pathlib.Path) -> None:
    _format_1_store(path)
    with ChainStore.open(path) as s:
        assert s.get_record(b"k") == RecordVersion(b"k", b"x" * 100, 1, 1, 0)
        _write(s, [StateWrite(b"k", b"y" * 100, 0)])
        assert [v.value for v in s.record_history(b"k")] == [b"y" * 100, b"x" * 100]
        assert s.get_record(b"d") == RecordVersion(b"d", None, 1, 1, 1)
    assert _dump(path)[b"m/format"] == struct.pack(">I", FORMAT) == struct.pack(">I", 3)


def test_a_store_of_an_unknown_format_is_refused_untouched(path: pathlib.Path) -> None:
    with ChainStore.open(path, genesis_hash=GENESIS_HASH) as s:
        commit_chain(s, 2)
    db = raw_db(path)
    db.put(b"m/format", struct.pack(">I", 4))
    db.close()
    before = _dump(path)
    with pytest.raises(StoreError, match="unknown format 4; this node reads formats 1, 2, 3"):
        ChainStore.open(path)
    assert _dump(path) == before


def test_a_missing_or_malformed_value_entry_is_reported_corrupt(path: pathlib.Path) -> None:
    with ChainStore.open(path, genesis_hash=GENESIS_HASH) as s:
        _write(s, [StateWrite(b"a", b"A" * 64, 0), StateWrite(b"b", b"B" * 64, 1)])
        _write(s, [StateWrite(b"c", b"C" * 64, 0), StateWrite(b"e", None, 1)])
    db = raw_db(path)
    db.delete(b"w/" + _u64(1) + struct.pack(">I", 0))  # a's value
    db.put(b"v/\x00\x01b" + _u64(1), _u64(1) + struct.pack(">IB", 1, 2))  # no seq
    db.put(b"v/\x00\x01c" + _u64(1), _u64(2) + struct.pack(">IB", 0, 7))  # unknown kind
    db.put(b"v/\x00\x01e" + _u64(1), _u64(2) + struct.pack(">IB", 1, 0) + b"?")  # deleted + bytes
    db.close()
    with ChainStore.open(path) as s:
        for key, what in ((b"a", "written at height 1 is missing"), (b"b", "malformed")):
            with pytest.raises(StoreError, match=what):
                s.get_record(key)
        for key in (b"c", b"e"):
            with pytest.raises(StoreError, match="malformed.*" + RECOVERY):
                s.record_history(key)


# -- journal ----------------------------------------------------------------------------


def test_journal_writes_deletes_and_is_separate_from_meta(store: ChainStore) -> None:
    store.journal_write([(b"vote/1", b"a"), (b"view", b"3"), (b"height", b"j")])
    store.journal_write([(b"vote/1", None), (b"vote/2", b"b")])
    store.commit_block(make_block(1, GENESIS_HASH), [], {b"height": b"m"})
    assert store.journal_items() == {b"view": b"3", b"vote/2": b"b", b"height": b"j"}
    assert store.get_meta(b"height") == b"m"
    with pytest.raises(ValueError):
        store.journal_write([(b"k", 3)])  # type: ignore[list-item]


def _prepared(cb: CertifiedBlock, view: int = 0) -> bytes:
    """The replica's journal record of a prepared certificate for `cb`'s block."""
    pp = PrePrepare(view, cb.block.height, cb.block, b"\x01" * 32, b"\x02" * 64)
    prepares = tuple(
        Prepare(view, cb.block.height, cb.block.hash(), bytes([i]) * 32, b"\x03" * 64)
        for i in (4, 5)
    )
    return journal_codec.encode_prepared(PreparedCertificate(pp, prepares))


def _next_block(store: ChainStore, txs: int = 50) -> CertifiedBlock:
    h = store.head_height() + 1
    return make_block(h, store.head_hash(), tuple(make_tx(b"p %d %d" % (h, i)) for i in range(txs)))


def test_a_committed_blocks_prepared_certificate_is_kept_without_its_transactions(
    path: pathlib.Path,
) -> None:
    """The journal's copy of a committed block's transactions goes in the block's own
    commit; the replica still reads back exactly the record it wrote, after a reopen."""
    with ChainStore.open(path, genesis_hash=GENESIS_HASH) as s:
        cb = _next_block(s)
        record = _prepared(cb)
        key = journal_codec.prepared_key(cb.block.height)
        s.journal_write([(key, record), (b"view", b"1")])
        s.commit_block(cb, [])
        assert s.journal_items() == {key: record, b"view": b"1"}
    db = raw_db(path)
    try:
        stored = db.get(b"j/" + key)
    finally:
        db.close()
    assert stored.startswith(journal_codec.ELIDED_TAG) and len(stored) < len(record) // 10
    with ChainStore.open(path) as s:
        assert s.journal_items() == {key: record, b"view": b"1"}
        s.journal_write([(key, None)])  # the stable checkpoint deletes it as before
        assert s.journal_items() == {b"view": b"1"}


def test_other_journal_records_are_left_as_written(store: ChainStore) -> None:
    # a certificate for another block at the same height (an earlier view's proposal)
    cb = _next_block(store)
    other = _prepared(_next_block(store, txs=3), view=1)
    key = journal_codec.prepared_key(cb.block.height)
    store.journal_write([(key, other)])
    store.commit_block(cb, [])
    assert store.journal_items() == {key: other}
    # none at all: the commit writes none (a record the replica deleted never comes back)
    store.journal_write([(key, None)])
    cb2 = _next_block(store)
    store.commit_block(cb2, [])
    assert store.journal_items() == {}
    # bytes that are not a certificate are not touched either
    cb3 = _next_block(store)
    key3 = journal_codec.prepared_key(cb3.block.height)
    store.journal_write([(key3, b"\x92not a certificate")])
    store.commit_block(cb3, [])
    assert store.journal_items() == {key3: b"\x92not a certificate"}


def test_an_elided_record_without_its_block_is_reported_corrupt(path: pathlib.Path) -> None:
    with ChainStore.open(path, genesis_hash=GENESIS_HASH) as s:
        cb = _next_block(s)
        key = journal_codec.prepared_key(cb.block.height)
        s.journal_write([(key, _prepared(cb))])
        s.commit_block(cb, [])
    db = raw_db(path)
    try:
        elided = db.get(b"j/" + key)
        # the same record moved to a height whose block the store does not hold
        stub = codec.decode_body(PreparedCertificate, elided[len(journal_codec.ELIDED_TAG) :])
        moved = dataclasses.replace(
            stub,
            pre_prepare=dataclasses.replace(
                stub.pre_prepare,
                height=7,
                block=dataclasses.replace(
                    stub.pre_prepare.block,
                    header=dataclasses.replace(stub.pre_prepare.block.header, height=7),
                ),
            ),
        )
        db.put(
            b"j/" + journal_codec.prepared_key(7),
            journal_codec.ELIDED_TAG + codec.encode_body(moved),
        )
    finally:
        db.close()
    with ChainStore.open(path) as s, pytest.raises(StoreError, match="height 7"):
        s.journal_items()
    with pytest.raises(journal_codec.JournalError, match="does not decode"):
        journal_codec.restore_prepared(journal_codec.ELIDED_TAG + b"\xc1", lambda h: None)
    assert journal_codec.restore_prepared(b"\x92full", lambda h: None) == b"\x92full"
    assert journal_codec.elide_prepared(elided, cb.block) is None  # elided already


# -- reopening ----------------------------------------------------------------------------


def test_reopen_keeps_everything(path: pathlib.Path) -> None:
    with ChainStore.open(path, genesis_hash=GENESIS_HASH) as s:
        blocks = commit_chain(s, 40)
        s.journal_write([(b"view", b"7")])
    with ChainStore.open(path) as s:  # the genesis hash may be omitted for an existing store
        assert s.genesis_hash == GENESIS_HASH
        assert s.head_height() == 40
        assert s.head() == blocks[-1]
        assert s.get_blocks(1, 40, 10**9) == blocks
        assert s.get_record(b"k") == RecordVersion(b"k", b"v40", 40, 40, 0)
        assert s.get_meta(b"height") == b"40"
        assert s.journal_items() == {b"view": b"7"}
        tx = blocks[9].block.txs[2]
        assert s.get_tx(tx_hash(tx)) == TxLocation(10, 2, tx, 0)
        commit_chain(s, 1)  # and it continues at head+1
        assert s.head_height() == 41


def test_a_store_written_with_snappy_compression_reads_and_continues(
    path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stores of nodes from before compression was turned off keep working."""
    from storage import store as store_module

    assert store_module._DB_OPTIONS["compression"] is None
    monkeypatch.setitem(store_module._DB_OPTIONS, "compression", "snappy")
    with ChainStore.open(path, genesis_hash=GENESIS_HASH) as s:
        blocks = commit_chain(s, 30)
        s._db.compact_range()  # into tables written with snappy
    monkeypatch.setitem(store_module._DB_OPTIONS, "compression", None)
    with ChainStore.open(path) as s:
        assert s.get_blocks(1, 30, 10**9) == blocks
        assert s.get_record(b"k") == RecordVersion(b"k", b"v30", 30, 30, 0)
        commit_chain(s, 5)
        assert s.head_height() == 35
        assert s.get_blocks(1, 35, 10**9)[:30] == blocks


def test_genesis_hash_mismatch_is_refused(path: pathlib.Path) -> None:
    ChainStore.open(path, genesis_hash=GENESIS_HASH).close()
    with pytest.raises(StoreError, match="another chain") as exc:
        ChainStore.open(path, genesis_hash=sha256(b"other"))
    assert RECOVERY in str(exc.value)
    ChainStore.open(path, genesis_hash=GENESIS_HASH).close()  # and the lock was released


def test_new_store_needs_a_genesis_hash(path: pathlib.Path) -> None:
    with pytest.raises(StoreError, match="no genesis hash"):
        ChainStore.open(path)
    with pytest.raises(ValueError):
        ChainStore.open(path, genesis_hash=b"short")


def _tables(path: pathlib.Path) -> list[pathlib.Path]:
    return list(path.glob("*.ldb"))


def _fill(store: ChainStore, megabytes: int) -> None:
    """Commit blocks carrying `megabytes` MB of incompressible meta values."""
    rng = random.Random(7)
    for i in range(megabytes * 16):
        h = store.head_height() + 1
        cb = make_block(h, store.head_hash(), ())
        store.commit_block(cb, [], {b"pad%d" % i: rng.randbytes(64 * 1024)})


def test_write_buffer_size_reaches_leveldb(tmp_path: pathlib.Path) -> None:
    """The same 6 MB flushes a 4 MB write buffer to a table file, not a 32 MB one."""
    with ChainStore.open(tmp_path / "big", genesis_hash=GENESIS_HASH) as big:
        _fill(big, 6)
        assert _tables(tmp_path / "big") == []  # still all in the memtable
    with ChainStore.open(
        tmp_path / "small", genesis_hash=GENESIS_HASH, write_buffer_size=4 * 1024 * 1024
    ) as small:
        _fill(small, 6)
        deadline = time.monotonic() + 30
        while not _tables(tmp_path / "small"):  # LevelDB flushes in its own thread
            assert time.monotonic() < deadline, "no table file after a full write buffer"
            time.sleep(0.01)
    for bad in (0, 1024 * 1024, 2 * 1024 * 1024 * 1024):
        with pytest.raises(ValueError, match="write_buffer_size"):
            ChainStore.open(tmp_path / "bad", genesis_hash=GENESIS_HASH, write_buffer_size=bad)


def test_locked_store_gives_a_clear_error(store: ChainStore, path: pathlib.Path) -> None:
    with pytest.raises(StoreError, match="locked: another process"):
        ChainStore.open(path, genesis_hash=GENESIS_HASH)


def test_a_store_that_cannot_be_opened_says_what_to_do(
    path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk at open (LevelDB writes while recovering its log): the error names the
    check and the recovery command, as the same failure at run time does."""

    def full(*args: object, **kwargs: object) -> None:
        raise plyvel.IOError(b"IO error: 000007.ldb: No space left on device")

    monkeypatch.setattr(plyvel, "DB", full)
    with pytest.raises(StoreError) as info:
        ChainStore.open(path, genesis_hash=GENESIS_HASH)
    text = str(info.value)
    assert "No space left on device" in text and "Check the disk" in text
    assert "redwood repair" in text


# -- corruption -----------------------------------------------------------------------------


def _corrupt_and_reopen(path: pathlib.Path, damage) -> StoreError:
    with ChainStore.open(path, genesis_hash=GENESIS_HASH) as s:
        commit_chain(s, 5)
    db = raw_db(path)
    damage(db)
    db.close()
    with pytest.raises(StoreError) as exc:
        ChainStore.open(path, genesis_hash=GENESIS_HASH)
    assert RECOVERY in str(exc.value)
    return exc.value


def _u64(n: int) -> bytes:
    return struct.pack(">Q", n)


def test_missing_head_block_is_detected(path: pathlib.Path) -> None:
    err = _corrupt_and_reopen(path, lambda db: db.delete(b"b/" + _u64(5)))
    assert "block 5 is missing" in str(err)


def test_garbage_head_block_is_detected(path: pathlib.Path) -> None:
    err = _corrupt_and_reopen(path, lambda db: db.put(b"b/" + _u64(5), b"\x93garbage"))
    assert "block 5 does not decode" in str(err)


def test_garbage_head_pointer_is_detected(path: pathlib.Path) -> None:
    err = _corrupt_and_reopen(path, lambda db: db.put(b"m/head", b"\x00\x01"))
    assert "head pointer" in str(err)


def test_head_pointer_beyond_the_blocks_is_detected(path: pathlib.Path) -> None:
    err = _corrupt_and_reopen(path, lambda db: db.put(b"m/head", _u64(6) + db.get(b"m/head")[8:]))
    assert "block 6 is missing" in str(err)


def test_block_above_the_head_is_detected(path: pathlib.Path) -> None:
    err = _corrupt_and_reopen(path, lambda db: db.put(b"m/head", _u64(4) + _hash_of(db, 4)))
    assert "above the head" in str(err)


def _hash_of(db: plyvel.DB, height: int) -> bytes:
    return codec.decode(db.get(b"b/" + _u64(height)), CertifiedBlock).block.hash()


def test_broken_hash_chain_is_detected(path: pathlib.Path) -> None:
    def damage(db: plyvel.DB) -> None:
        other = make_block(3, sha256(b"elsewhere"))
        db.put(b"b/" + _u64(3), codec.encode(other))

    err = _corrupt_and_reopen(path, damage)
    assert "block stored at height 3" in str(err)


def test_wrong_certificate_is_detected(path: pathlib.Path) -> None:
    def damage(db: plyvel.DB) -> None:
        cb = codec.decode(db.get(b"b/" + _u64(5)), CertifiedBlock)
        bad = dataclasses.replace(cb, certificate=dataclasses.replace(cb.certificate, height=9))
        db.put(b"b/" + _u64(5), codec.encode(bad))

    err = _corrupt_and_reopen(path, damage)
    assert "certificate of block 5" in str(err)


def test_missing_tx_index_of_head_is_detected(path: pathlib.Path) -> None:
    def damage(db: plyvel.DB) -> None:
        db.delete(b"t/" + tx_hash(make_tx(b"5 1", 101)))

    err = _corrupt_and_reopen(path, damage)
    assert "tx index" in str(err)


def test_blocks_without_head_pointer_is_detected(path: pathlib.Path) -> None:
    err = _corrupt_and_reopen(path, lambda db: db.delete(b"m/head"))
    assert "head pointer is missing" in str(err)


def test_leveldb_corruption_is_reported_as_store_error(path: pathlib.Path) -> None:
    with ChainStore.open(path, genesis_hash=GENESIS_HASH) as s:
        commit_chain(s, 2)
    for manifest in path.glob("MANIFEST-*"):
        manifest.write_bytes(b"\xff" * 64)
    with pytest.raises(StoreError) as exc:
        ChainStore.open(path, genesis_hash=GENESIS_HASH)
    assert RECOVERY in str(exc.value)
    assert "corrupt" in str(exc.value)


def test_garbage_records_read_later_raise_store_error(path: pathlib.Path) -> None:
    with ChainStore.open(path, genesis_hash=GENESIS_HASH) as s:
        blocks = commit_chain(s, 40)  # block 1 is below the blocks checked at open
    db = raw_db(path)
    db.put(b"s/k", b"\x01")
    db.put(b"s/k2", _u64(5))  # points at a version that does not exist
    db.put(b"v/\x00\x02k3" + _u64(1), b"\x00")  # a version entry too short to parse
    db.put(b"s/k3", _u64(1))
    db.put(b"b/" + _u64(1), b"junk")
    db.put(b"t/" + tx_hash(blocks[1].block.txs[0]), b"\x00" * 24)
    db.close()
    with ChainStore.open(path) as s:  # head checks pass: the damage is elsewhere
        for read in (
            lambda: s.get_record(b"k"),
            lambda: s.get_record(b"k2"),
            lambda: s.get_record(b"k3"),
            lambda: s.record_history(b"k3"),
            lambda: s.get_block(1),
            lambda: s.get_tx(tx_hash(blocks[1].block.txs[0])),
        ):
            with pytest.raises(StoreError, match=RECOVERY):
                read()
        assert s.get_block(2) == blocks[1]


# -- threads ------------------------------------------------------------------------------


def test_reads_from_another_thread_see_whole_blocks(store: ChainStore) -> None:
    """A reader thread never sees a head whose block, tx index or state is missing."""
    done = threading.Event()
    problems: list[str] = []

    def reader() -> None:
        while not done.is_set():
            h = store.head_height()
            if h == 0:
                continue
            cb = store.get_block(h)
            if cb is None or store.get_tx(tx_hash(cb.block.txs[0])) is None:
                problems.append(f"head {h} incomplete")
            record = store.get_record(b"k")
            if record is None or record.height < h:
                problems.append(f"state behind head {h}")

    t = threading.Thread(target=reader)
    t.start()
    try:
        commit_chain(store, 60, txs_per_block=20)
    finally:
        done.set()
        t.join(timeout=10)
    assert not problems, problems[:3]


# -- performance ------------------------------------------------------------------------------


@pytest.mark.slow
def test_commit_of_a_large_block_is_fast(store: ChainStore) -> None:
    """4,000 txs of 300 bytes and 4,000 state writes commit (synced) in well under 50 ms."""
    times_ms = []
    for h in range(1, 31):
        txs = tuple(make_tx(b"%d %d" % (h, i)) for i in range(4000))
        cb = make_block(h, store.head_hash(), txs)
        writes = [
            StateWrite(b"rec/agency0\x00key%d" % ((h * 4000 + i) % 20000), b"v" * 200, i)
            for i in range(4000)
        ]
        start = time.perf_counter()
        store.commit_block(cb, writes, {b"height": b"%d" % h}, sync=True)
        times_ms.append((time.perf_counter() - start) * 1000)
    print(f"commit_block ms: median {statistics.median(times_ms):.1f} max {max(times_ms):.1f}")
    assert statistics.median(times_ms) < 50


class _FailingDB:
    """Stands in for plyvel.DB: every read and write fails the way LevelDB reports it."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.closed = False

    def _fail(self, *args: object, **kwargs: object) -> None:
        raise self.error

    get = iterator = write_batch = _fail

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (plyvel.CorruptionError, RECOVERY),
        (plyvel.IOError, "I/O error"),
    ],
)
def test_leveldb_errors_at_run_time_become_store_errors(
    store: ChainStore, error: type[Exception], expected: str
) -> None:
    real = store._db
    store._db = _FailingDB(error("LevelDB says no"))  # type: ignore[assignment]
    try:
        for call in (
            lambda: store.get_block(1),
            lambda: store.get_tx(bytes(32)),
            lambda: store.has_tx(bytes(32)),
            lambda: store.get_record(b"k"),
            lambda: store.record_history(b"k"),
            lambda: store.get_meta(b"k"),
            lambda: store.journal_items(),
            lambda: store.journal_write([(b"k", b"v")]),
            lambda: store.commit_block(make_block(1, GENESIS_HASH), []),
        ):
            with pytest.raises(StoreError, match=expected):
                call()
    finally:
        store._db = real
    assert store.head_height() == 0


def test_destroy_drops_the_store_but_not_while_it_is_open(path: pathlib.Path) -> None:
    store = ChainStore.open(path, genesis_hash=GENESIS_HASH)
    commit_chain(store, 3)
    with pytest.raises(StoreError, match="locked"):
        destroy(path)
    store.close()
    with ChainStore.open(path) as reopened:  # the refused destroy left it intact
        assert reopened.head_height() == 3
    destroy(path)
    destroy(path)  # nothing there: nothing to do
    with ChainStore.open(path, genesis_hash=sha256(b"a new chain")) as fresh:
        assert fresh.head_height() == 0


def _dump(path: pathlib.Path) -> dict[bytes, bytes]:
    db = raw_db(path)
    try:
        return dict(db.iterator())
    finally:
        db.close()


def test_lookups_handed_in_write_the_same_bytes_as_lookups_done_by_the_store(
    tmp_path: pathlib.Path,
) -> None:
    """`versions`, `tx_hashes` and `first_seen` only spare reads: same database either way."""
    a, b, c = make_tx(b"a"), make_tx(b"b"), make_tx(b"c")
    blocks = [
        (
            (a, b, a),
            [StateWrite(b"k", b"1", 0), StateWrite(b"j", b"x", 1), StateWrite(b"k", b"2", 2)],
        ),
        ((c, b), [StateWrite(b"k", None, 0), StateWrite(b"n", b"new", 1)]),
    ]
    paths = []
    for hinted in (False, True):
        path = tmp_path / f"hinted-{hinted}"
        s = ChainStore.open(path, genesis_hash=GENESIS_HASH)
        seen: set[bytes] = set()
        for txs, writes in blocks:
            cb = make_block(s.head_height() + 1, s.head_hash(), txs)
            if not hinted:
                s.commit_block(cb, writes, tx_status=[0] * len(txs))
                continue
            hashes = [tx_hash(t) for t in txs]
            first = []
            for h in hashes:
                first.append(h not in seen and not s.has_tx(h))
                seen.add(h)
            versions = s.current_versions(w.key for w in writes)
            s.commit_block(
                cb, writes, tx_status=[0] * len(txs), versions=versions,
                tx_hashes=hashes, first_seen=first,
            )  # fmt: skip
        s.close()
        paths.append(path)
    plain, hinted_db = _dump(paths[0]), _dump(paths[1])
    assert plain == hinted_db
    assert len(plain) > 10  # blocks, tx index, state and history entries were written


def test_lookups_handed_in_are_checked(store: ChainStore) -> None:
    cb = make_block(1, GENESIS_HASH, (make_tx(b"a"),))
    writes = [StateWrite(b"k", b"v", 0)]
    with pytest.raises(ValueError, match="tx_hashes has 2 entries"):
        store.commit_block(cb, writes, tx_hashes=[b"x" * 32, b"y" * 32])
    with pytest.raises(ValueError, match="first_seen has 0 entries"):
        store.commit_block(cb, writes, first_seen=[])
    with pytest.raises(ValueError, match="versions lacks 1 key"):
        store.commit_block(cb, writes, versions={b"other": 0})
    assert store.head_height() == 0  # nothing was written
    assert store.current_versions([b"k", b"never"]) == {b"k": 0, b"never": 0}
