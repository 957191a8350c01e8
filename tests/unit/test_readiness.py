"""`Node.readiness`: the chain's height heard, a quorum of connections, and not far behind
(node/service.py)."""

from __future__ import annotations

from types import SimpleNamespace

from node.service import READY_LAG_BLOCKS_MAX, Node

VALIDATORS = tuple(bytes([i]) * 32 for i in range(4))


def _node(
    committed: int,
    target: int,
    connected: int,
    heard: int = 3,
    validators: tuple[bytes, ...] = VALIDATORS,
) -> SimpleNamespace:
    replica = SimpleNamespace(
        committed_height=committed,
        catchup_target=target,
        catching_up=target > committed,
        peer_heights={v: target for v in validators[1 : 1 + heard]},
    )
    node = SimpleNamespace(replica=replica, node_id=validators[0])
    node.replica_validators = lambda: validators
    node._heights_heard = lambda vals: Node._heights_heard(node, vals)  # type: ignore[arg-type]
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


def test_just_started_is_not_ready_until_f_plus_1_heights_are_heard() -> None:
    # connected to everyone, at height 0, but no peer has said where the chain is
    ok, why = Node.readiness(_node(0, 0, 3, heard=0))  # type: ignore[arg-type]
    assert not ok and why == "waiting for the chain's height from peers (0 of 2 heard)"
    ok, _ = Node.readiness(_node(0, 0, 3, heard=1))  # type: ignore[arg-type]
    assert not ok  # f = 1: one peer could be the faulty one
    assert Node.readiness(_node(0, 0, 3, heard=2)) == (True, "ready")  # type: ignore[arg-type]


def test_heights_of_non_validators_do_not_count() -> None:
    node = _node(0, 0, 3, heard=0)
    node.replica.peer_heights = {bytes([9]) * 32: 5, bytes([8]) * 32: 5}
    ok, _ = Node.readiness(node)  # type: ignore[arg-type]
    assert not ok


def test_a_single_validator_needs_no_peer() -> None:
    node = _node(0, 0, 0, heard=0, validators=VALIDATORS[:1])
    assert Node.readiness(node) == (True, "ready")  # type: ignore[arg-type]
