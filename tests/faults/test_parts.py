"""The fault-test parts on their own, in about a second: the proxy's rules and the Byzantine wrapper.

The proxy is driven with a local echo server: a blocked direction holds bytes
until the rule is lifted, a partition refuses connections, a delay delays. The
Byzantine wrapper is driven with a stand-in node: its twin pre-prepare and its
conflicting votes must be validly signed by the node key for another digest,
and reach the peers the module docstring promises.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from consensus import merkle
from consensus.certificates import NO_SIGNATURE, sign
from consensus.crypto import SigningKey, sha256, verify
from consensus.types import Block, BlockHeader, Commit, Prepare, PrePrepare, signed_payload
from tests.faults.byzantine_node import Byzantine
from tests.faults.proxy import FaultProxy

CHAIN = "parts-test"
IO_TIMEOUT_S = 5.0


@pytest.fixture
def echo() -> Iterator[int]:
    srv = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            threading.Thread(target=_echo, args=(conn,), daemon=True).start()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join(timeout=5)
    srv.close()


def _echo(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(4096):
            conn.sendall(data)


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    p = FaultProxy(seed=1)
    yield p
    p.close()


def _roundtrip(port: int, payload: bytes, timeout_s: float = IO_TIMEOUT_S) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        return got


def test_proxy_forwards_delays_and_partitions(proxy: FaultProxy, echo: int) -> None:
    port = proxy.add_route(0, 1, echo)
    assert _roundtrip(port, b"hello") == b"hello"
    proxy.set_rules(delay_s={(0, 1): 0.3})
    started = time.monotonic()
    assert _roundtrip(port, b"slow") == b"slow"
    assert time.monotonic() - started >= 0.3
    proxy.set_rules(blocked={(0, 1), (1, 0)})
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(b"x")
        if s.recv(1) == b"":
            raise ConnectionResetError("closed by the proxy")


def test_proxy_one_way_block_holds_bytes_until_lifted(proxy: FaultProxy, echo: int) -> None:
    port = proxy.add_route(0, 1, echo)
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S) as s:
        s.sendall(b"a")
        assert s.recv(1) == b"a"
        proxy.set_rules(blocked={(0, 1)})
        s.sendall(b"b")
        s.settimeout(0.5)
        with pytest.raises(TimeoutError):
            s.recv(1)
        proxy.set_rules()
        s.settimeout(IO_TIMEOUT_S)
        assert s.recv(1) == b"b"


class StandInNode:
    def __init__(self, n: int) -> None:
        self.keys = [SigningKey(bytes([i + 1]) * 32) for i in range(n)]
        self.key = self.keys[0]
        self.node_id = self.key.public
        self.chain_id = CHAIN
        self.sent: list[tuple[bytes | None, Any]] = []
        self.driver = type("D", (), {"_send": None})()

    def _send(self, to: bytes | None, message: Any) -> None:
        self.sent.append((to, message))

    def replica_validators(self) -> tuple[bytes, ...]:
        return tuple(k.public for k in self.keys)


def _pre_prepare(node: StandInNode) -> PrePrepare:
    txs = (b"tx",)
    header = BlockHeader(
        chain_id=CHAIN, height=3, view=1, epoch=1, parent_hash=sha256(b"p"),
        tx_root=merkle.root(txs), tx_count=1, state_height=2, state_root=sha256(b"s"),
        proposer=node.node_id, timestamp_ms=1000, validator_set_hash=sha256(b"v"),
    )  # fmt: skip
    return sign(node.key, CHAIN, PrePrepare(1, 3, Block(header, txs), node.node_id, NO_SIGNATURE))


def _valid(msg: Any) -> bool:
    return verify(msg.replica, msg.signature, msg.DOMAIN, CHAIN, signed_payload(msg))


def test_byzantine_primary_equivocates_to_halves_and_one_sees_both() -> None:
    node = StandInNode(4)
    byz = Byzantine(node, random.Random(0))
    byz.install()
    assert node.driver._send == byz.send
    pp = _pre_prepare(node)
    byz.send(None, pp)
    others = sorted(k.public for k in node.keys[1:])
    got: dict[bytes, set[bytes]] = {}
    for to, msg in node.sent:
        assert to is not None and isinstance(msg, PrePrepare) and _valid(msg)
        assert (msg.view, msg.height, msg.replica) == (1, 3, node.node_id)
        got.setdefault(to, set()).add(msg.digest)
    assert set(got) == set(others)
    digests = set().union(*got.values())
    assert len(digests) == 2 and pp.digest in digests
    assert got[others[0]] == digests  # one validator holds both: evidence
    assert got[others[1]] == digests - {pp.digest}
    assert got[others[2]] == {pp.digest}
    assert byz.counts["equivocation"] == 1


def test_byzantine_votes_conflict_and_old_messages_are_replayed() -> None:
    node = StandInNode(4)
    byz = Byzantine(node, random.Random(0))
    votes: list[Any] = []
    for h in range(1, 4):
        for cls in (Prepare, Commit):
            v = sign(node.key, CHAIN, cls(1, h, sha256(bytes([h])), node.node_id, NO_SIGNATURE))
            votes.append(v)
            byz.send(None, v)
    assert byz.counts["conflicting_prepare"] == 3 and byz.counts["conflicting_commit"] == 3
    assert byz.counts["replay"] >= 1
    for v in votes:
        assert (None, v) in node.sent
        twins = [
            m for to, m in node.sent
            if to is not None and type(m) is type(v) and (m.view, m.height) == (v.view, v.height)
            and m.digest != v.digest
        ]  # fmt: skip
        assert twins and all(_valid(m) for m in twins)
    # a message that is not this node's own passes through untouched
    foreign = sign(
        node.keys[1], CHAIN, Prepare(1, 9, sha256(b"x"), node.keys[1].public, NO_SIGNATURE)
    )
    before = len(node.sent)
    byz.send(None, foreign)
    assert node.sent[before] == (None, foreign)
