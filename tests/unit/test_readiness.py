"""`Node.readiness`: a quorum of connections, and not far behind (node/service.py)."""

from __future__ import annotations

from types import SimpleNamespace

from node.service import READY_LAG_BLOCKS_MAX, Node

VALIDATORS = tuple(bytes([i]) * 32 for i in range(4))


def _node(committed: int, target: int, connected: int) -> SimpleNamespace:
    replica = SimpleNamespace(
        committed_height=committed, catchup_target=target, catching_up=target > committed
    )
    node = SimpleNamespace(replica=replica, node_id=VALIDATORS[0])
    node.replica_validators = lambda: VALIDATORS
    node._connected_validators = lambda: connected
    node._catching_up = lambda: bool(replica.catching_up)
    node._blocks_behind = lambda: Node._blocks_behind(node)  # type: ignore[arg-type]
    return node


def test_ready_when_connected_and_current() -> None:
    assert Node.readiness(_node(100, 100, 3)) == (True, "ready")  # type: ignore[arg-type]


def test_a_few_blocks_behind_is_still_ready() -> None:
    ok, _ = Node.readiness(_node(100, 100 + READY_LAG_BLOCKS_MAX, 3))  # type: ignore[arg-type]
    assert ok


def test_far_behind_is_not_ready_and_says_how_far() -> None:
    behind = READY_LAG_BLOCKS_MAX + 1
    ok, why = Node.readiness(_node(100, 100 + behind, 3))  # type: ignore[arg-type]
    assert not ok and why == f"catching up with peers ({behind} blocks behind)"


def test_no_quorum_is_not_ready() -> None:
    ok, why = Node.readiness(_node(100, 100, 1))  # type: ignore[arg-type]
    assert not ok and "connected to 2 of the 3 validators" in why
