"""`Node.wait_committed` and the latency bookkeeping forget transactions that never commit
(node/service.py): an expired or never-proposed transaction must not hold a slot forever."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import trio
import trio.testing

from node.service import Node


def _node(committed: dict[bytes, Any]) -> SimpleNamespace:
    store = SimpleNamespace(get_tx=committed.get)
    return SimpleNamespace(store=store, _waiters={}, _waiting={})


async def test_a_wait_that_times_out_leaves_no_waiter_behind() -> None:
    node = _node({})
    h = b"\x01" * 32
    assert await Node.wait_committed(node, h, 0.01) is None  # type: ignore[arg-type]
    assert node._waiters == {} and node._waiting == {}


async def test_waiters_share_an_event_and_the_last_to_leave_removes_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    committed: dict[bytes, Any] = {}
    node = _node(committed)
    h = b"\x02" * 32
    answers: list[Any] = []

    async def wait(timeout_s: float) -> None:
        answers.append(await Node.wait_committed(node, h, timeout_s))  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait, 1.0)  # gives up first
        nursery.start_soon(wait, 100.0)
        await trio.testing.wait_all_tasks_blocked()
        assert node._waiting == {h: 2}
        await trio.sleep(2)  # virtual time (autojump clock): the first request timed out
        assert answers == [None]
        assert node._waiting == {h: 1} and h in node._waiters  # the other still waits on it
        committed[h] = "receipt"  # what _after_commit does when the block is applied
        node._waiters.pop(h).set()
    assert sorted(map(str, answers)) == ["None", "receipt"]
    assert node._waiters == {} and node._waiting == {}
