"""A tiny in-process message pump around real `Replica` objects, for the replica's unit tests.

It plays the node's part as docs/interfaces.md states it: persist -> send ->
apply committed blocks (toy state root = sha256(prev_root + block_hash)) and
call `executed` -> advance; it answers `BlockRequest`s from its chain. Messages
travel through one FIFO queue; a `cut` predicate drops chosen ones. The
multi-replica simulator with faults, reordering and crashes lives in
tests/sim/; this harness only has to make each protocol rule easy to drive.
"""

from __future__ import annotations

import hashlib
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from consensus.crypto import sha256, signing_bytes
from consensus.replica import Ready, Replica, ReplicaConfig, Restored, ValidatorSet
from consensus.types import BlockRequest, BlockResponse, CertifiedBlock

CHAIN_ID = "redwood-test"
GENESIS_HASH = sha256(b"test-genesis")
GENESIS_ROOT = sha256(b"test-genesis-state")


class Key:
    """A fast stand-in for SigningKey: signature = keyed BLAKE2b (only the holder can make it)."""

    def __init__(self, i: int) -> None:
        self.secret = hashlib.sha256(b"secret%d" % i).digest()
        self.public = hashlib.sha256(b"public" + self.secret).digest()

    def sign(self, domain: str, chain_id: str, payload: bytes) -> bytes:
        msg = signing_bytes(domain, chain_id, payload)
        return hashlib.blake2b(msg, key=self.secret, digest_size=64).digest()


class Verifier:
    def __init__(self, keys: list[Key]) -> None:
        self.secrets = {k.public: k.secret for k in keys}
        self.checks = 0

    def verify(
        self, public: bytes, signature: bytes, domain: str, chain_id: str, payload: bytes
    ) -> bool:
        self.checks += 1
        secret = self.secrets.get(public)
        if secret is None:
            return False
        msg = signing_bytes(domain, chain_id, payload)
        return hashlib.blake2b(msg, key=secret, digest_size=64).digest() == signature


def toy_root(prev: bytes, block_hash: bytes) -> bytes:
    return sha256(prev + block_hash)


@dataclass
class Node:
    key: Key | None
    replica: Replica
    journal: dict[bytes, bytes] = field(default_factory=dict)
    chain: list[CertifiedBlock] = field(default_factory=list)
    roots: list[bytes] = field(default_factory=lambda: [GENESIS_ROOT])
    up: bool = True
    readies: list[Ready] = field(default_factory=list)

    @property
    def height(self) -> int:
        return len(self.chain)

    @property
    def node_id(self) -> bytes:
        assert self.key is not None
        return self.key.public


class Cluster:
    """n validators (and optional observers) wired through one FIFO queue."""

    def __init__(self, n: int = 4, observers: int = 0, seed: int = 0, **config: Any) -> None:
        self.keys = [Key(i) for i in range(n)]
        self.vset = ValidatorSet(epoch=0, validators=tuple(k.public for k in self.keys))
        self.verifier = Verifier(self.keys)
        config.setdefault("pipeline_depth", 2)
        config.setdefault("checkpoint_interval", 4)
        self.config = ReplicaConfig(chain_id=CHAIN_ID, **config)
        self.seed = seed
        self.nodes: list[Node] = []
        self.queue: deque[tuple[int, bytes, object]] = deque()
        self.cut: Callable[[int, int, object], bool] = lambda src, dst, msg: False
        self.delivered = 0
        self.epochs: tuple[tuple[int, ValidatorSet], ...] = ((1, self.vset),)
        # governance: executing height d schedules (first, set), like node/service.py
        # (add_epoch before executed(d)) or tests/sim (after it)
        self.decisions: dict[int, tuple[int, ValidatorSet]] = {}
        self.add_epoch_before_executed = True
        for i in range(n):
            self.nodes.append(self._fresh(self.keys[i], i))
        for j in range(observers):
            self.nodes.append(self._fresh(None, n + j))

    # -- building -----------------------------------------------------------------------

    def restored(self, node: Node | None) -> Restored:
        chain = node.chain if node else []
        roots = node.roots if node else [GENESIS_ROOT]
        h = len(chain)
        depth = self.config.pipeline_depth
        return Restored(
            committed_height=h,
            committed_hash=chain[-1].block.hash() if chain else GENESIS_HASH,
            committed_timestamp_ms=chain[-1].block.header.timestamp_ms if chain else 0,
            state_roots={i: roots[i] for i in range(max(0, h - depth), h + 1)},
            journal=dict(node.journal) if node else {},
            epochs=self.epochs,
        )

    def _fresh(self, key: Key | None, i: int, node: Node | None = None) -> Node:
        rng = random.Random(f"{self.seed}/{i}")
        replica = Replica(self.config, self.restored(node), key, self.verifier, rng)
        if node is None:
            node = Node(key, replica)
        else:
            node.replica = replica
        self.process(node)
        return node

    def restart(self, i: int) -> None:
        """Lose the replica's memory; keep the journal and chain (what was synced)."""
        node = self.nodes[i]
        self.queue = deque(m for m in self.queue if m[0] != i)
        self._fresh(node.key, i, node)

    # -- the driver loop -------------------------------------------------------------------

    def link_id(self, i: int) -> bytes:
        """The authenticated id of node i's links (observers have a key of their own too)."""
        key = self.nodes[i].key
        return key.public if key else b"observer%d" % i + bytes(32 - len(b"observer%d" % i))

    def index_of(self, node_id: bytes) -> int:
        return next(i for i in range(len(self.nodes)) if self.link_id(i) == node_id)

    def process(self, node: Node) -> None:
        src = self.nodes.index(node) if node in self.nodes else len(self.nodes)
        while node.replica.has_ready():
            ready = node.replica.ready()
            node.readies.append(ready)
            for key, value in ready.persist:
                if value is None:
                    node.journal.pop(key, None)
                else:
                    node.journal[key] = value
            for out in ready.messages:
                self._route(src, node, out.to, out.message)
            for cb in ready.committed:
                assert cb.block.height == node.height + 1
                assert cb.block.header.parent_hash == (
                    node.chain[-1].block.hash() if node.chain else GENESIS_HASH
                )
                node.chain.append(cb)
                node.roots.append(toy_root(node.roots[-1], cb.block.hash()))
                if self.add_epoch_before_executed:
                    self._decide(node, cb.block.height)
                node.replica.executed(cb.block.height, node.roots[-1])
                if not self.add_epoch_before_executed:
                    self._decide(node, cb.block.height)
            node.replica.advance(ready)

    def _decide(self, node: Node, height: int) -> None:
        decision = self.decisions.get(height)
        if decision is not None:
            node.replica.add_epoch(*decision)

    def _route(self, src: int, node: Node, to: bytes | None, message: object) -> None:
        sender = self.link_id(src)
        if to is None:
            targets = [
                i
                for i, n in enumerate(self.nodes)
                if n is not node and (n.key is None or n.key.public in self.vset)
            ]
        else:
            targets = [
                i for i, n in enumerate(self.nodes) if n.key is not None and n.key.public == to
            ]
        for dst in targets:
            if not self.cut(src, dst, message):
                self.queue.append((dst, sender, message))

    def deliver_one(self) -> None:
        dst, sender, message = self.queue.popleft()
        node = self.nodes[dst]
        if not node.up:
            return
        self.delivered += 1
        if isinstance(message, BlockRequest):
            src = self.index_of(sender)
            first = max(1, message.from_height)
            last = min(message.to_height, node.height)
            blocks = tuple(node.chain[first - 1 : last])
            if blocks and not self.cut(dst, src, BlockResponse(blocks)):
                self.queue.append((src, node.node_id, BlockResponse(blocks)))
            return
        node.replica.step(message, sender)
        self.process(node)

    def pump(self, max_messages: int = 200_000) -> None:
        for _ in range(max_messages):
            if not self.queue:
                return
            self.deliver_one()
        raise AssertionError("message pump did not quiesce")

    def tick(self, times: int = 1) -> None:
        for _ in range(times):
            for node in self.nodes:
                if node.up:
                    node.replica.tick()
                    self.process(node)
            self.pump()

    # -- helpers ---------------------------------------------------------------------------

    def primary(self) -> Node:
        views = [n.replica.view for n in self.nodes if n.up and n.key]
        view = max(set(views), key=views.count)
        return self.nodes[self.index_of(self.vset.primary(view))]

    def propose(self, txs: list[bytes], ts: int = 1000, pump: bool = True) -> bool:
        node = self.primary()
        ok = node.replica.propose(txs, ts)
        self.process(node)
        if pump:
            self.pump()
        return ok

    def run_blocks(self, count: int, txs_per_block: int = 2, tag: str = "tx") -> None:
        """Propose and commit `count` blocks, proposing whenever the primary wants to."""
        made = 0
        for _ in range(count * 50):
            if made >= count:
                break
            node = self.primary()
            if node.replica.wants_proposal():
                txs = [f"{tag}-{made}-{i}".encode() for i in range(txs_per_block)]
                assert node.replica.propose(txs, 1000 + made)
                made += 1
                self.process(node)
            else:
                self.deliver_one() if self.queue else self.tick()
        self.pump()
        assert made == count, f"proposed {made} of {count}"

    def heights(self) -> list[int]:
        return [n.height for n in self.nodes]

    def assert_agree(self) -> None:
        """No two nodes hold different blocks at one height (the safety property)."""
        top = max(self.heights())
        for h in range(1, top + 1):
            hashes = {n.chain[h - 1].block.hash() for n in self.nodes if n.height >= h}
            assert len(hashes) == 1, f"fork at height {h}"


def test_harness_commits_one_block() -> None:
    c = Cluster(4)
    assert c.propose([b"a", b"b"])
    assert c.heights() == [1, 1, 1, 1]
    c.assert_agree()
