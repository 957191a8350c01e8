"""The replica's progress timer, tick by tick (consensus/replica.py, "Progress timer").

PBFT §4.4 has a backup suspect the primary when a request waits too long; the
replica measures instead how long the lowest uncommitted height goes without a
phase (pre-prepare accepted, prepared, committed) and how long the chain goes
without a commit (a timeout learned from recent commit gaps). Each test isolates
one replica (every link cut), feeds it messages by hand and counts the ticks to
its VIEW-CHANGE. The simulator scenarios in tests/sim/test_progress_timer.py
show the same rules at cluster scale.
"""

from __future__ import annotations

import pytest

from consensus.certificates import NO_SIGNATURE, sign
from consensus.replica import Replica, ReplicaConfig
from consensus.types import Prepare
from tests.unit.test_replica import make_block, pre_prepare
from tests.unit.test_replica_harness import CHAIN_ID, GENESIS_HASH, Cluster

TIMEOUT_TICKS = 10


def _isolated(c: Cluster, i: int) -> Replica:
    c.cut = lambda src, dst, message: True
    r = c.nodes[i].replica
    r.note_pending(1)  # clients wait: the timer runs
    return r


def _ticks_until_view_change(c: Cluster, r: Replica, limit: int = 1_000) -> int:
    node = next(n for n in c.nodes if n.replica is r)
    for t in range(1, limit + 1):
        r.tick()
        c.process(node)
        if r.in_view_change:
            return t
    raise AssertionError("no view change")


def _block1_pre_prepare(c: Cluster, txs: tuple[bytes, ...] = (b"one",)) -> object:
    block = make_block(c, 1, 0, txs, GENESIS_HASH, c.keys[0].public)
    return pre_prepare(c.keys[0], 0, block)


def test_without_any_phase_a_backup_suspects_after_one_timeout() -> None:
    c = Cluster(4, view_change_timeout_ticks=TIMEOUT_TICKS)
    r = _isolated(c, 1)
    timeout = r.timeout_ticks  # drawn again when the view change starts
    assert TIMEOUT_TICKS <= timeout <= TIMEOUT_TICKS * 3 // 2
    assert _ticks_until_view_change(c, r) == timeout
    assert r.view_change_reasons["progress_timeout"] == 1


def test_pre_prepare_of_the_lowest_height_restarts_the_timer_once() -> None:
    """Accepted at tick k, it moves the deadline to k + timeout; a conflicting second
    pre-prepare from the same primary (equivocation) moves nothing."""
    c = Cluster(4, view_change_timeout_ticks=TIMEOUT_TICKS)
    r = _isolated(c, 1)
    timeout = r.timeout_ticks
    k = timeout - 2
    for _ in range(k):
        r.tick()
    r.step(_block1_pre_prepare(c), c.keys[0].public)
    assert r.timer_restarts["pre_prepared"] == 1
    for _ in range(timeout - 3):
        r.tick()
    r.step(_block1_pre_prepare(c, (b"other",)), c.keys[0].public)
    assert r.dropped["equivocation"] == 1 and r.timer_restarts["pre_prepared"] == 1
    assert _ticks_until_view_change(c, r) == 3  # the deadline is still k + timeout
    assert r.view_change_reasons["progress_timeout"] == 1


def test_pre_prepare_above_the_lowest_height_restarts_nothing() -> None:
    """A primary that withholds height 1 and pre-prepares height 2 (held: no parent)."""
    c = Cluster(4, view_change_timeout_ticks=TIMEOUT_TICKS)
    r = _isolated(c, 1)
    one = make_block(c, 1, 0, (b"one",), GENESIS_HASH, c.keys[0].public)
    two = make_block(c, 2, 0, (b"two",), one.hash(), c.keys[0].public)
    for _ in range(r.timeout_ticks - 2):
        r.tick()
    r.step(pre_prepare(c.keys[0], 0, two), c.keys[0].public)
    assert r.held and not r.timer_restarts
    assert _ticks_until_view_change(c, r) == 2


def test_pre_prepare_accepted_above_the_lowest_height_restarts_nothing() -> None:
    """Height 1 pre-prepared at tick 0, height 2 (accepted: its parent is known) just
    before the deadline: only height 1's phases count, the deadline stays."""
    c = Cluster(4, view_change_timeout_ticks=TIMEOUT_TICKS)
    r = _isolated(c, 1)
    timeout = r.timeout_ticks
    one = make_block(c, 1, 0, (b"one",), GENESIS_HASH, c.keys[0].public)
    two = make_block(c, 2, 0, (b"two",), one.hash(), c.keys[0].public)
    r.step(pre_prepare(c.keys[0], 0, one), c.keys[0].public)
    for _ in range(timeout - 2):
        r.tick()
    r.step(pre_prepare(c.keys[0], 0, two), c.keys[0].public)
    assert r.inflight_heights == 2 and r.timer_restarts["pre_prepared"] == 1
    assert _ticks_until_view_change(c, r) == 2


def test_prepared_restarts_the_timer_again() -> None:
    c = Cluster(4, view_change_timeout_ticks=TIMEOUT_TICKS)
    r = _isolated(c, 1)
    timeout = r.timeout_ticks
    pp = _block1_pre_prepare(c)
    r.step(pp, c.keys[0].public)
    for _ in range(timeout - 1):
        r.tick()
    prepare = sign(c.keys[2], CHAIN_ID, Prepare(0, 1, pp.digest, c.keys[2].public, NO_SIGNATURE))
    r.step(prepare, c.keys[2].public)  # with our own PREPARE: q - 1 = 2 from others
    assert r.pcerts[1] and r.timer_restarts["prepared"] == 1
    assert _ticks_until_view_change(c, r) == timeout


def test_primary_waits_two_timeouts_before_suspecting_itself() -> None:
    c = Cluster(4, view_change_timeout_ticks=TIMEOUT_TICKS)
    r = _isolated(c, 0)
    assert r.is_primary
    timeout = r.timeout_ticks
    assert _ticks_until_view_change(c, r) == 2 * timeout


@pytest.mark.parametrize(("factor_max", "learned"), [(8, 14), (1, TIMEOUT_TICKS)])
def test_commit_timeout_is_twice_the_recent_commit_gap_capped(
    factor_max: int, learned: int
) -> None:
    """A commit after 7 ticks with work: the commit timeout becomes 14 ticks (or the cap);
    the next view change then waits for it even when the phase timer has run out."""
    c = Cluster(4, view_change_timeout_ticks=TIMEOUT_TICKS, commit_timeout_factor_max=factor_max)
    for node in c.nodes:
        node.replica.note_pending(1)
    c.tick(7)
    assert c.propose([b"late"]) and c.heights() == [1, 1, 1, 1]
    r = _isolated(c, 1)
    assert list(r.commit_gaps) == [7] and r.commit_timeout_ticks == learned
    timeout = r.timeout_ticks
    assert _ticks_until_view_change(c, r) == max(timeout, learned)


def test_commit_timeout_factor_max_must_be_positive() -> None:
    with pytest.raises(ValueError, match="commit_timeout_factor_max"):
        ReplicaConfig(chain_id=CHAIN_ID, commit_timeout_factor_max=0)


def test_the_wait_for_a_replaced_primary_is_not_learned_as_a_commit_gap() -> None:
    """A gap counts from the last commit or from entering the view, whichever is later:
    otherwise each replaced primary doubles the commit timeout (up to its cap), and two
    faulty primaries in a row stalled the long fault run for over 30 s."""
    from tests.unit.test_replica import _silence_primary_and_tick

    c = Cluster(4, view_change_timeout_ticks=TIMEOUT_TICKS)
    _silence_primary_and_tick(c)  # view 0's primary cut off: everyone moves to view 1
    live = c.nodes[1:]
    assert all(n.replica.view == 1 for n in live)
    waited = max(n.replica.ticks for n in live)
    assert waited > TIMEOUT_TICKS  # the old view cost at least one timeout
    c.cut = lambda s, d, m: s == 0 or d == 0
    assert c.propose([b"after"])  # by view 1's primary
    for n in live:
        assert n.height == 1
        (gap,) = n.replica.commit_gaps
        assert gap < TIMEOUT_TICKS  # only the new view's ticks, not the wait before it
        assert n.replica.commit_timeout_ticks < TIMEOUT_TICKS
