"""Token buckets, re-dial back-off and the gossip seen-cache: bounds and arithmetic."""

from __future__ import annotations

import random

import pytest

from network.gossip import SeenCache, gossip_id
from network.limits import Backoff, TokenBucket


def test_bucket_allows_the_burst_then_charges_debt_as_wait_time() -> None:
    bucket = TokenBucket(rate_per_s=100.0, burst=50.0, now=0.0)
    assert bucket.take(50, now=0.0) == 0.0
    assert bucket.take(10, now=0.0) == pytest.approx(0.1)  # 10 tokens owed at 100/s
    assert bucket.take(0, now=0.1) == 0.0  # repaid


def test_bucket_refills_at_rate_up_to_burst() -> None:
    bucket = TokenBucket(rate_per_s=10.0, burst=5.0, now=0.0)
    bucket.take(5, now=0.0)
    assert not bucket.try_take(1, now=0.05)
    assert bucket.try_take(1, now=0.1)
    assert bucket.take(0, now=1000.0) == 0.0
    assert bucket.tokens == 5.0  # capped at the burst


def test_try_take_never_goes_into_debt() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=3.0, now=0.0)
    assert [bucket.try_take(1, 0.0) for _ in range(5)] == [True, True, True, False, False]
    assert bucket.tokens == 0.0


def test_bucket_ignores_a_clock_going_backwards() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=1.0, now=10.0)
    bucket.take(1, now=10.0)
    assert not bucket.try_take(1, now=5.0)


def test_bucket_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate_per_s=0.0, burst=1.0, now=0.0)


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    backoff = Backoff(initial_s=0.1, max_s=2.0, rng=random.Random(7))
    delays = [backoff.next_delay_s() for _ in range(100)]
    for k, delay in enumerate(delays):
        base = min(2.0, 0.1 * 2**k)
        assert base / 2 <= delay <= base
    assert max(delays) <= 2.0
    assert len({round(d, 9) for d in delays[10:]}) > 50  # jittered, not a constant


def test_backoff_reset_starts_over() -> None:
    backoff = Backoff(initial_s=1.0, max_s=60.0, rng=random.Random(1))
    for _ in range(10):
        backoff.next_delay_s()
    backoff.reset()
    assert 0.5 <= backoff.next_delay_s() <= 1.0


def test_backoff_survives_many_attempts() -> None:
    backoff = Backoff(initial_s=0.5, max_s=30.0, rng=random.Random(3))
    backoff.attempt = 10**6
    assert 15.0 <= backoff.next_delay_s() <= 30.0


def test_seen_cache_is_bounded_and_forgets_oldest_first() -> None:
    cache = SeenCache(max_items=3)
    assert all(cache.add(k) for k in (b"a", b"b", b"c"))
    assert not cache.add(b"a")
    assert cache.add(b"d")
    assert len(cache) == 3
    assert b"a" not in cache and b"d" in cache
    assert cache.add(b"a")  # forgotten, so new again


def test_seen_cache_never_exceeds_its_bound() -> None:
    cache = SeenCache(max_items=100)
    for i in range(10_000):
        cache.add(i.to_bytes(4, "big"))
    assert len(cache) == 100


def test_gossip_id_separates_channels() -> None:
    assert gossip_id(2, b"x") != gossip_id(3, b"x")
    assert gossip_id(2, b"x") == gossip_id(2, b"x")
