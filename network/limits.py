"""Rate limiting and re-dial pacing (sans-IO: the caller passes the time and the RNG)."""

from __future__ import annotations

import random

BACKOFF_EXPONENT_MAX = 32


class TokenBucket:
    """A token bucket that may go into debt: `take` returns how long to wait to repay it.

    The reader of a link takes the size of every frame it read; while the
    bucket is in debt it stops reading, so TCP pushes back on the sender.
    """

    __slots__ = ("_stamp", "burst", "rate_per_s", "tokens")

    def __init__(self, rate_per_s: float, burst: float, now: float) -> None:
        if rate_per_s <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.tokens = burst
        self._stamp = now

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._stamp)
        self._stamp = max(self._stamp, now)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate_per_s)

    def take(self, amount: float, now: float) -> float:
        """Spend `amount` tokens; seconds until the balance is back to zero (0.0 if none owed)."""
        self._refill(now)
        self.tokens -= amount
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate_per_s

    def try_take(self, amount: float, now: float) -> bool:
        """Spend `amount` tokens if available, never going into debt."""
        self._refill(now)
        if self.tokens < amount:
            return False
        self.tokens -= amount
        return True


class Backoff:
    """Capped exponential back-off with jitter: delay k is uniform in [b/2, b], b = min(max, initial*2^k)."""

    __slots__ = ("_rng", "attempt", "initial_s", "max_s")

    def __init__(self, initial_s: float, max_s: float, rng: random.Random) -> None:
        if not 0 < initial_s <= max_s:
            raise ValueError("need 0 < initial_s <= max_s")
        self.initial_s = initial_s
        self.max_s = max_s
        self._rng = rng
        self.attempt = 0

    def next_delay_s(self) -> float:
        base = min(self.max_s, self.initial_s * 2 ** min(self.attempt, BACKOFF_EXPONENT_MAX))
        self.attempt += 1
        return float(base / 2 + self._rng.uniform(0.0, base / 2))

    def reset(self) -> None:
        self.attempt = 0
