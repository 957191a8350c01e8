"""node.mempool: admission, bounds, fairness, reservation, requeue, expiry, counters."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from consensus.crypto import SigningKey, sha256
from node.app import Application, Rejected
from node.genesis import Genesis
from node.mempool import COMPACT_DEAD_MIN, Added, Mempool
from node.txs import build, decode_tx
from node.verify_pool import VerifyPool, verify_serial
from tests.unit.test_app import CHAIN, FakeStore, make_block

MEMBERS = [SigningKey(bytes([10 + i]) * 32) for i in range(6)]
OUTSIDER = SigningKey(b"\x66" * 32)


@pytest.fixture
def genesis() -> Genesis:
    return Genesis.from_dict(
        {
            "chain_id": CHAIN,
            "agencies": [{"id": "agency0", "members": [k.public.hex() for k in MEMBERS]}],
            "validators": [{"node_id": ("aa" * 32), "agency": "agency0"}],
            "params": {"record_value_bytes_max": 1024, "tx_ttl_blocks_max": 100},
        }
    )


@pytest.fixture
def store(genesis: Genesis) -> FakeStore:
    return FakeStore(genesis.hash())


@pytest.fixture
def app(store: FakeStore, genesis: Genesis) -> Application:
    return Application(store, genesis)


_nonce = iter(range(1, 10**9))


def tx(
    sender: int = 0, valid_until: int = 50, value: bytes = b"v", key: SigningKey | None = None
) -> bytes:
    signer = key or MEMBERS[sender]
    return build(signer, CHAIN, "put", "agency0", f"r{sender}", value, valid_until, next(_nonce))


def sender_of(raw: bytes) -> int:
    return MEMBERS.index(next(k for k in MEMBERS if k.public == decode_tx(raw).sender))


def add_ok(pool: Mempool, raw: bytes, height: int = 0) -> bytes:
    result = pool.add(raw, height)
    assert isinstance(result, Added), result
    return result.tx_hash


def code(result: object) -> str:
    assert isinstance(result, Rejected), result
    return result.code


# -- admission -----------------------------------------------------------------


def test_add_accepts_and_rejects_duplicates(app: Application) -> None:
    pool = Mempool(app, 100, 10**6, 100)
    raw = tx()
    assert add_ok(pool, raw) == sha256(raw)
    assert code(pool.add(raw, 0)) == "duplicate"
    assert sha256(raw) in pool and pool.get(sha256(raw)) == raw
    assert pool.size == 1 and pool.bytes == len(raw) and pool.pending == 1
    assert pool.received == 2 and pool.accepted == 1 and pool.rejected["duplicate"] == 1


def test_application_rejections_pass_through_and_are_counted(app: Application) -> None:
    pool = Mempool(app, 100, 10**6, 100)
    bad = bytearray(tx())
    bad[-1] ^= 1
    assert code(pool.add(bytes(bad), 0)) == "bad_signature"
    assert code(pool.add(b"junk", 0)) == "bad_encoding"
    assert code(pool.add(tx(key=OUTSIDER), 0)) == "not_a_member"
    assert code(pool.add(tx(valid_until=0), 0)) == "expired"
    assert code(pool.add(tx(valid_until=500), 0)) == "ttl_too_long"
    assert code(pool.add(tx(value=b"x" * 2000), 0)) == "value_too_large"
    assert pool.size == 0 and sum(pool.rejected.values()) == 6


def test_committed_transaction_cannot_reenter(app: Application, store: FakeStore) -> None:
    pool = Mempool(app, 100, 10**6, 100)
    raw = tx()
    add_ok(pool, raw)
    batch = pool.take(10, 10**6)
    executed = app.apply(make_block(store, batch))
    assert pool.committed(executed.tx_hashes) == 1 and pool.size == 0
    assert code(pool.add(raw, store.head_height())) == "duplicate"


def test_full_by_count_bytes_and_sender(app: Application) -> None:
    pool = Mempool(app, max_txs=3, max_bytes=10**6, max_per_sender=100)
    for s in range(3):
        add_ok(pool, tx(s))
    assert code(pool.add(tx(3), 0)) == "mempool_full"
    one = len(tx())
    pool = Mempool(app, max_txs=100, max_bytes=2 * one + 10, max_per_sender=100)
    add_ok(pool, tx(0))
    add_ok(pool, tx(1))
    assert code(pool.add(tx(2), 0)) == "mempool_full"
    pool = Mempool(app, max_txs=100, max_bytes=10**6, max_per_sender=2)
    add_ok(pool, tx(0))
    add_ok(pool, tx(0))
    rejected = pool.add(tx(0), 0)
    assert code(rejected) == "mempool_full" and "sender" in rejected.message  # type: ignore[union-attr]
    add_ok(pool, tx(1))  # other senders still get in


def test_sender_cap_counts_reserved_until_committed(app: Application, store: FakeStore) -> None:
    pool = Mempool(app, max_txs=100, max_bytes=10**6, max_per_sender=2)
    add_ok(pool, tx(0))
    add_ok(pool, tx(0))
    taken = pool.take(10, 10**6)
    assert code(pool.add(tx(0), 0)) == "mempool_full"
    pool.committed([sha256(r) for r in taken])
    add_ok(pool, tx(0))


def test_full_pool_does_not_spend_a_signature_check(store: FakeStore, genesis: Genesis) -> None:
    calls = []

    def counting(items: Sequence[tuple[bytes, bytes, bytes]]) -> list[bool]:
        calls.append(len(items))
        return verify_serial(items)

    pool = Mempool(Application(store, genesis, verify_many=counting), 1, 10**6, 10)
    add_ok(pool, tx(0))
    assert code(pool.add(tx(1), 0)) == "mempool_full"
    assert calls == [1]


# -- add_many ------------------------------------------------------------------


def test_add_many_verifies_the_batch_together(store: FakeStore, genesis: Genesis) -> None:
    calls = []

    def counting(items: Sequence[tuple[bytes, bytes, bytes]]) -> list[bool]:
        calls.append(len(items))
        return verify_serial(items)

    app = Application(store, genesis, verify_many=counting)
    pool = Mempool(app, 100, 10**6, 100)
    good = [tx(i % 3) for i in range(6)]
    bad = bytearray(tx(4))
    bad[-1] ^= 1
    batch = [*good, good[0], bytes(bad), b"junk", tx(valid_until=0)]
    results = pool.add_many(batch, 0)
    assert [r.tx_hash for r in results[:6]] == [sha256(g) for g in good]  # type: ignore[union-attr]
    assert [code(r) for r in results[6:]] == [
        "duplicate",
        "bad_signature",
        "bad_encoding",
        "expired",
    ]
    assert calls == [7] and pool.size == 6
    assert app.verified_cache_size == 6
    assert [code(r) for r in pool.add_many(good[:2], 0)] == ["duplicate", "duplicate"]


def test_screen_stops_at_the_bounds_before_checking_signatures(app: Application) -> None:
    pool = Mempool(app, max_txs=3, max_bytes=10**6, max_per_sender=100)
    screened = pool.screen([tx(i) for i in range(5)], 0)
    assert len(screened.items) == 3 and pool.size == 0  # screening keeps nothing
    with VerifyPool(threads=2) as verifier:
        oks = verifier.verify_many(screened.items)
    results = pool.admit(screened, oks)
    assert [isinstance(r, Added) for r in results] == [True, True, True, False, False]
    assert code(results[4]) == "mempool_full"


def test_admit_rechecks_bounds_and_duplicates(app: Application) -> None:
    """Between screen and admit (signatures checked off the loop) the pool may change."""
    pool = Mempool(app, max_txs=2, max_bytes=10**6, max_per_sender=100)
    a, b = tx(0), tx(1)
    screened = pool.screen([a, b], 0)
    add_ok(pool, a)
    add_ok(pool, tx(2))
    results = pool.admit(screened, [True, True])
    assert [code(r) for r in results] == ["duplicate", "mempool_full"]
    later = tx(5)
    fresh = Mempool(app, 10, 10**6, 10)
    screened = fresh.screen([later], 0)
    app.apply(make_block(app.store, [later]))  # committed while being verified
    assert [code(r) for r in fresh.admit(screened, [True])] == ["duplicate"]
    with pytest.raises(ValueError, match="one signature result"):
        fresh = Mempool(app, 10, 10**6, 10)
        fresh.admit(fresh.screen([tx(3)], 0), [])


def test_a_tx_committed_while_its_signature_was_checked_leaves_the_verified_cache(
    app: Application,
) -> None:
    """The node's order: screen on the loop, verify off it (caching good signatures), admit.

    A block holding the transaction can be applied in between; the apply forgets
    the block's hashes before this check caches its answer, so admit must drop
    it, or the stale entry (a decoded transaction, ~700 bytes) stays until the
    cache's bound pushes it out: measured in a throughput bench as 8,000 stale
    entries on one validator after a run, growing run by run.
    """
    pool = Mempool(app, 10, 10**6, 10)
    later, other = tx(5), tx(4)
    screened = pool.screen([later, other], 0)
    app.apply(make_block(app.store, [later]))  # committed while being verified
    oks = pool.verify(screened)
    assert oks == [True, True]
    assert app.is_verified(sha256(later))  # cached after the apply forgot it
    results = pool.admit(screened, oks)
    assert [code(r) if isinstance(r, Rejected) else "added" for r in results] == [
        "duplicate",
        "added",
    ]
    assert not app.is_verified(sha256(later))
    assert app.is_verified(sha256(other))  # still waiting in the mempool: kept
    assert app.verified_cache_size == 1


# -- take, fairness, reservation -------------------------------------------------


def test_take_is_round_robin_across_senders_and_fifo_within(app: Application) -> None:
    pool = Mempool(app, 1000, 10**7, 1000)
    order = [0] * 6 + [1] * 3 + [2]
    txs = [tx(s) for s in order]
    for raw in txs:
        add_ok(pool, raw)
    taken = pool.take(100, 10**7)
    assert [sender_of(r) for r in taken] == [0, 1, 2, 0, 1, 0, 1, 0, 0, 0]
    zero = [r for r in taken if sender_of(r) == 0]
    assert zero == [r for r in txs if sender_of(r) == 0]  # FIFO per sender


def test_rotation_carries_over_between_takes(app: Application) -> None:
    pool = Mempool(app, 1000, 10**7, 1000)
    for s in [0, 0, 0, 1, 1, 1, 2, 2, 2]:
        add_ok(pool, tx(s))
    firsts = [sender_of(r) for r in pool.take(2, 10**7)]
    seconds = [sender_of(r) for r in pool.take(2, 10**7)]
    assert firsts == [0, 1] and seconds == [2, 0]


def test_a_flooding_sender_does_not_starve_a_newcomer(app: Application) -> None:
    pool = Mempool(app, 1000, 10**7, 1000)
    for _ in range(200):
        add_ok(pool, tx(0))
    pool.take(50, 10**7)
    newcomer = tx(1)
    add_ok(pool, newcomer)
    assert newcomer in pool.take(2, 10**7)


def test_take_respects_byte_and_count_limits(app: Application) -> None:
    pool = Mempool(app, 1000, 10**7, 1000)
    big = tx(0, value=b"x" * 900)
    small = [tx(1), tx(2)]
    for raw in [big, *small]:
        add_ok(pool, raw)
    room = len(small[0]) + len(small[1]) + 5
    taken = pool.take(10, room)
    assert taken == small  # the big one did not fit; the others still came
    assert sum(map(len, taken)) <= room
    assert pool.take(10, 10**7) == [big]
    assert pool.take(10, 10**7) == []
    for s in range(5):
        add_ok(pool, tx(s))
    assert len(pool.take(3, 10**7)) == 3


def test_taken_txs_are_reserved_until_committed_or_requeued(app: Application) -> None:
    pool = Mempool(app, 1000, 10**7, 1000)
    txs = [tx(s) for s in (0, 0, 1)]
    for raw in txs:
        add_ok(pool, raw)
    first = pool.take(2, 10**7)
    assert pool.reserved == 2 and pool.pending == 1 and pool.size == 3
    rest = pool.take(10, 10**7)
    assert set(first).isdisjoint(rest) and pool.take(10, 10**7) == []
    assert code(pool.add(first[0], 0)) == "duplicate"
    pool.committed([sha256(first[0])])
    assert pool.requeue() == 2 and pool.reserved == 0
    again = pool.take(10, 10**7)
    assert sorted(again) == sorted([first[1], *rest])


def test_requeue_puts_reserved_ahead_of_newer_in_original_order(app: Application) -> None:
    pool = Mempool(app, 1000, 10**7, 1000)
    old = [tx(0) for _ in range(3)]
    for raw in old:
        add_ok(pool, raw)
    assert pool.take(3, 10**7) == old
    newer = tx(0)
    add_ok(pool, newer)
    pool.requeue()
    assert pool.take(10, 10**7) == [*old, newer]
    assert pool.requeued == 3


def test_committed_from_another_primary_removes_pending(app: Application) -> None:
    pool = Mempool(app, 1000, 10**7, 1000)
    txs = [tx(s % 2) for s in range(6)]
    for raw in txs:
        add_ok(pool, raw)
    assert pool.committed([sha256(r) for r in txs[:3]] + [b"\x00" * 32]) == 3
    assert pool.size == 3 and pool.removed_committed == 3
    assert sorted(pool.take(10, 10**7)) == sorted(txs[3:])


# -- expiry ----------------------------------------------------------------------


def test_evict_expired(app: Application) -> None:
    pool = Mempool(app, 1000, 10**7, 1000)
    soon, later, latest = tx(0, valid_until=5), tx(1, valid_until=8), tx(2, valid_until=20)
    for raw in (soon, later, latest):
        add_ok(pool, raw)
    pool.take(1, 10**7)  # reserve `soon`
    assert all(app.is_verified(sha256(raw)) for raw in (soon, later, latest))
    assert pool.evict_expired(4) == []
    assert pool.evict_expired(5) == [sha256(soon)] and soon not in pool.take(10, 10**7)
    pool.requeue()
    assert pool.evict_expired(9) == [sha256(later)] and pool.size == 1 and pool.evicted == 2
    assert pool.take(10, 10**7) == [latest]
    # no block can hold them now: their signatures leave the verified cache with them
    assert not app.is_verified(sha256(soon)) and not app.is_verified(sha256(later))
    assert app.is_verified(sha256(latest)) and app.verified_cache_size == 1


# -- bounds under churn ------------------------------------------------------------


def test_a_non_primary_pool_stays_compact_under_churn(app: Application) -> None:
    """Txs that arrive and are committed by others never leave dead entries behind unboundedly."""
    pool = Mempool(app, 10_000, 10**8, 10_000)
    live: list[bytes] = []
    for round_ in range(6):
        batch = [tx(0, valid_until=90) for _ in range(60)]
        for raw in batch:
            add_ok(pool, raw)
        live += batch
        pool.committed([sha256(r) for r in live[:-5]])  # another primary commits them
        live = live[-5:]
        assert pool.size == 5, round_
        internal = sum(len(q) for q in pool._queues.values())
        assert internal <= pool.size + COMPACT_DEAD_MIN + 1
        assert len(pool._expiry) <= 2 * pool.size + COMPACT_DEAD_MIN + 1
    assert sorted(pool.take(100, 10**8)) == sorted(live)


def test_random_operations_keep_every_invariant(app: Application) -> None:
    """A model check: random add/take/commit/requeue/evict against a simple reference."""
    rng = random.Random(7)
    pool = Mempool(app, max_txs=40, max_bytes=10**6, max_per_sender=12)
    pending: dict[bytes, bytes] = {}
    reserved: dict[bytes, bytes] = {}
    pre = [tx(rng.randrange(6), valid_until=rng.randrange(5, 60)) for _ in range(200)]
    height = 0
    for raw in pre:
        op = rng.random()
        if op < 0.5:
            result = pool.add(raw, height)
            if isinstance(result, Added):
                pending[result.tx_hash] = raw
        elif op < 0.7:
            for r in pool.take(rng.randrange(1, 8), 10**6):
                h = sha256(r)
                assert h in pending and h not in reserved
                reserved[h] = pending.pop(h)
        elif op < 0.8:
            done = rng.sample(sorted(reserved), k=len(reserved) // 2)
            pool.committed(done)
            for h in done:
                del reserved[h]
        elif op < 0.9:
            pool.requeue()
            pending.update(reserved)
            reserved.clear()
        else:
            height += rng.randrange(1, 10)
            pool.evict_expired(height)
            for table in (pending, reserved):
                for h in [h for h, r in table.items() if decode_tx(r).valid_until <= height]:
                    del table[h]
        assert pool.size == len(pending) + len(reserved) <= 40
        assert pool.reserved == len(reserved) and pool.pending == len(pending)
        assert pool.bytes == sum(map(len, pending.values())) + sum(map(len, reserved.values()))
        counts: dict[bytes, int] = {}
        for r in [*pending.values(), *reserved.values()]:
            counts[decode_tx(r).sender] = counts.get(decode_tx(r).sender, 0) + 1
        assert max(counts.values(), default=0) <= 12
    everything = pool.take(1000, 10**6)
    assert sorted(everything) == sorted(pending.values())


def test_bad_bounds_are_refused(app: Application) -> None:
    with pytest.raises(ValueError):
        Mempool(app, 0, 10, 10)


def test_stats(app: Application) -> None:
    pool = Mempool(app, 10, 10**6, 10)
    add_ok(pool, tx())
    pool.add(b"junk", 0)
    stats = pool.stats()
    assert stats["size"] == 1 and stats["received"] == 2
    assert stats["rejected"] == {"bad_encoding": 1} and stats["senders"] == 1


def test_mass_expiry_with_heap_compaction(app: Application) -> None:
    pool = Mempool(app, 10_000, 10**8, 10_000)
    txs = [tx(i % 6, valid_until=5 + i % 10) for i in range(300)]
    for raw in txs:
        add_ok(pool, raw)
    pool.committed([sha256(r) for r in txs[:150]])
    assert len(pool.evict_expired(9)) == 75
    assert pool.size == 75 and pool.pending == 75
    assert all(decode_tx(r).valid_until > 9 for r in pool.take(1000, 10**8))
    assert len(pool.evict_expired(14)) == 75 and pool.size == 0 and pool.bytes == 0


def test_transactions_checked_in_a_proposal_are_not_checked_again_at_admission(
    app: Application,
) -> None:
    """A PRE-PREPARE can arrive before the gossip of its transactions: the node checks
    them then (`verify_proposal`), and their gossip must not cost a second check."""
    pool = Mempool(app, 100, 10**7, 100)
    seen, bad = tx(1), bytearray(tx(2))
    bad[-1] ^= 1  # the signature's last byte
    assert app.verify_proposal([seen]) is None
    screened = pool.screen([tx(0), seen, bytes(bad)], 0)
    assert len(screened.checked) == 3 and len(screened.items) == 2  # only the unseen two
    results = pool.admit(screened, [True, False])
    assert isinstance(results[0], Added) and isinstance(results[1], Added)
    assert code(results[2]) == "bad_signature"
    with pytest.raises(ValueError, match="one signature result"):
        pool.admit(pool.screen([tx(3), tx(4)], 0), [True])
