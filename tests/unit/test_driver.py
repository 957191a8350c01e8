"""node/driver.py: when the primary proposes, in particular empty blocks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from node.driver import Driver

DEPTH = 4


@dataclass
class FakeReplica:
    """Primary that accepts every proposal at the next height."""

    next_height: int = 1
    proposals: list[tuple[int, int]] = field(default_factory=list)  # (height, tx count)

    def wants_proposal(self) -> bool:
        return True

    def propose(self, txs: Any, timestamp_ms: int) -> bool:
        self.proposals.append((self.next_height, len(txs)))
        self.next_height += 1
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(
    pending: list[list[bytes]], *, always: bool = False, txs_height: int = 0, next_height: int = 1
) -> tuple[Driver, FakeReplica, Clock]:
    replica, clock = FakeReplica(next_height=next_height), Clock()

    def take() -> list[bytes]:
        return pending.pop(0) if pending else []

    async def nothing(*_a: Any) -> Any:
        return None

    driver = Driver(
        replica, journal_write=nothing, send=lambda to, m: None, apply_blocks=nothing,
        take_batch=take, pending_count=lambda: 0, on_evidence=lambda e: None,
        on_stable_checkpoint=lambda h, r: None, pipeline_depth=DEPTH,
        empty_block_interval_s=1.0, propose_empty_blocks=always, clock=clock,
        txs_height=txs_height,
    )  # fmt: skip
    return driver, replica, clock


def test_a_chain_that_never_had_transactions_proposes_nothing() -> None:
    driver, replica, clock = make([])
    for _ in range(5):
        clock.now += 10
        assert not driver._maybe_propose()
    assert replica.proposals == []


def test_after_a_block_with_txs_empty_blocks_certify_its_state_one_per_interval() -> None:
    driver, replica, clock = make([[b"tx1", b"tx2"]])
    assert driver._maybe_propose()  # height 1 holds transactions
    assert not driver._maybe_propose()  # nothing pending and the interval has not passed
    clock.now += 0.5
    assert not driver._maybe_propose()
    for _ in range(DEPTH):
        clock.now += 1.0
        assert driver._maybe_propose()
        assert not driver._maybe_propose()  # paced
    clock.now += 10
    assert not driver._maybe_propose()  # height 1 + DEPTH is proposed: its header claims 1
    assert replica.proposals == [(1, 2), (2, 0), (3, 0), (4, 0), (5, 0)]
    assert driver.empty_blocks == DEPTH


def test_new_transactions_restart_the_count_and_go_first() -> None:
    pending = [[b"a"], [], [b"b"]]
    driver, replica, clock = make(pending)
    assert driver._maybe_propose()  # height 1, txs
    clock.now += 1.0
    assert driver._maybe_propose()  # height 2: take() gave nothing, an empty block
    clock.now += 0.1
    assert driver._maybe_propose()  # height 3: transactions go out without waiting
    for _ in range(DEPTH):
        clock.now += 1.0
        assert driver._maybe_propose()
    clock.now += 1.0
    assert not driver._maybe_propose()
    assert replica.proposals[-1] == (3 + DEPTH, 0)


@pytest.mark.parametrize("gap_s", [1.0, 5.0])
def test_propose_empty_blocks_keeps_proposing_at_the_interval(gap_s: float) -> None:
    driver, replica, clock = make([], always=True)
    assert not driver._maybe_propose()  # the interval counts from start-up
    for _ in range(10):
        clock.now += gap_s
        assert driver._maybe_propose()
        assert not driver._maybe_propose()
    assert [n for _, n in replica.proposals] == [0] * 10


def test_a_restarted_primary_certifies_the_head_it_found() -> None:
    driver, replica, clock = make([], txs_height=40, next_height=41)
    for _ in range(DEPTH + 3):
        clock.now += 1.0
        driver._maybe_propose()
    assert replica.proposals == [(h, 0) for h in range(41, 41 + DEPTH)]


async def test_blocks_that_queue_up_are_applied_in_one_batch_in_order() -> None:
    import trio

    from node.driver import APPLY_BATCH_BLOCKS_MAX, Applied

    batches: list[list[int]] = []

    async def apply_blocks(cbs: list[Any]) -> list[tuple[bytes, Any]]:
        batches.append([cb.block.header.height for cb in cbs])
        return [(bytes([cb.block.header.height]) * 32, None) for cb in cbs]

    async def nothing(*_a: Any) -> Any:
        return None

    driver = Driver(
        FakeReplica(), journal_write=nothing, send=lambda to, m: None, apply_blocks=apply_blocks,
        take_batch=list, pending_count=lambda: 0, on_evidence=lambda e: None,
        on_stable_checkpoint=lambda h, r: None,
    )  # fmt: skip

    class _CB:
        def __init__(self, h: int) -> None:
            header = type("H", (), {"height": h})()
            self.block = type("B", (), {"header": header, "txs": (b"t",), "height": h})()

    total = APPLY_BATCH_BLOCKS_MAX + 5
    for h in range(1, total + 1):
        driver._apply_send.send_nowait(_CB(h))  # type: ignore[arg-type]
    applied: list[int] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(driver._apply_loop)
            while len(applied) < total:
                await driver._events.receive()  # the apply task's wake-up
                while driver._applied:
                    event = driver._applied.popleft()
                    assert isinstance(event, Applied)
                    assert event.state_root == bytes([event.height]) * 32
                    applied.append(event.height)
            nursery.cancel_scope.cancel()
    assert applied == list(range(1, total + 1))
    assert batches == [
        list(range(1, APPLY_BATCH_BLOCKS_MAX + 1)),
        list(range(APPLY_BATCH_BLOCKS_MAX + 1, total + 1)),
    ]


class _SizedCB:
    """A committed block with `n` transactions of `size` bytes, enough for the apply loop."""

    def __init__(self, h: int, n: int = 1, size: int = 1) -> None:
        header = type("H", (), {"height": h})()
        self.block = type("B", (), {"header": header, "txs": (b"t" * size,) * n, "height": h})()


def _apply_driver(apply_blocks: Any, **kwargs: Any) -> Driver:
    async def nothing(*_a: Any) -> Any:
        return None

    return Driver(
        FakeReplica(), journal_write=nothing, send=lambda to, m: None, apply_blocks=apply_blocks,
        take_batch=list, pending_count=lambda: 0, on_evidence=lambda e: None,
        on_stable_checkpoint=lambda h, r: None, **kwargs,
    )  # fmt: skip


async def test_the_apply_queue_holds_at_most_its_bytes() -> None:
    """Blocks handed to execution, with those being executed, stay within the byte bound;
    a block is never refused, only delayed, and all are applied in order."""
    import trio
    import trio.testing

    from node.driver import block_bytes

    limit = 3 * block_bytes(_SizedCB(0, 100, 100))  # three such blocks
    seen: list[int] = []
    peak = 0
    gate = trio.Event()
    driver: Driver

    async def apply_blocks(cbs: list[Any]) -> list[tuple[bytes, Any]]:
        nonlocal peak
        peak = max(peak, driver.apply_queue_bytes)
        await gate.wait()  # execution far behind until the test opens the gate
        seen.extend(cb.block.header.height for cb in cbs)
        return [(b"r" * 32, None) for _ in cbs]

    driver = _apply_driver(apply_blocks, apply_queue_bytes_max=limit)
    total = 10
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(driver._apply_loop)

            async def hand_all() -> None:
                for h in range(1, total + 1):
                    await driver._hand_to_apply(_SizedCB(h, 100, 100))  # type: ignore[arg-type]
                    peak_now = driver.apply_queue_bytes
                    assert peak_now <= limit

            nursery.start_soon(hand_all)
            await trio.testing.wait_all_tasks_blocked()
            # three blocks are in: the hand-over of the fourth waits for room
            assert driver.apply_queue_blocks == 3
            assert driver.apply_queue_waits == 1
            gate.set()
            while len(seen) < total:
                await driver._events.receive()
            nursery.cancel_scope.cancel()
    assert seen == list(range(1, total + 1))
    assert peak <= limit
    assert driver.apply_queue_blocks == 0 and driver.apply_queue_bytes == 0


async def test_a_block_larger_than_the_bound_goes_alone() -> None:
    import trio

    seen: list[int] = []

    async def apply_blocks(cbs: list[Any]) -> list[tuple[bytes, Any]]:
        seen.extend(cb.block.header.height for cb in cbs)
        return [(b"r" * 32, None) for _ in cbs]

    driver = _apply_driver(apply_blocks, apply_queue_bytes_max=10)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(driver._apply_loop)
            for h in (1, 2, 3):
                await driver._hand_to_apply(_SizedCB(h, 5, 1000))  # type: ignore[arg-type]
            while len(seen) < 3:
                await driver._events.receive()
            nursery.cancel_scope.cancel()
    assert seen == [1, 2, 3]


async def test_execution_results_never_wait_on_a_full_event_channel() -> None:
    """The driver may wait for room in the apply queue while its event channel is full
    (peers keep sending): the apply task must still hand its results back and make room,
    or the two would wait on each other for ever."""
    import trio

    from node.driver import EVENTS_QUEUE_MAX, TICK

    seen: list[int] = []

    async def apply_blocks(cbs: list[Any]) -> list[tuple[bytes, Any]]:
        seen.extend(cb.block.header.height for cb in cbs)
        return [(b"r" * 32, None) for _ in cbs]

    limit = 2 * 2000
    driver = _apply_driver(apply_blocks, apply_queue_bytes_max=limit)
    for _ in range(EVENTS_QUEUE_MAX):
        driver.events_send.send_nowait(TICK)  # nobody reads them during the hand-overs
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(driver._apply_loop)
            for h in range(1, 21):
                await driver._hand_to_apply(_SizedCB(h, 1, 900))  # type: ignore[arg-type]
            while len(driver._applied) < 20:
                await trio.sleep(0)
            nursery.cancel_scope.cancel()
    assert seen == list(range(1, 21))
    assert [a.height for a in driver._applied] == list(range(1, 21))


def test_the_apply_queue_bound_must_be_positive() -> None:
    async def nothing(*_a: Any) -> Any:
        return None

    with pytest.raises(ValueError, match="apply_queue_bytes_max"):
        _apply_driver(nothing, apply_queue_bytes_max=0)
