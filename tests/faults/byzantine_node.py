"""A Byzantine validator for fault tests: `python -m tests.faults.byzantine_node --home DIR`.

Test-only. It is the real node (node.service.Node) with its driver's send path
wrapped from outside; nothing in node/ or in any configuration file can turn
it on. With the node's own key it:

- equivocates as primary: for every PRE-PREPARE it proposes it signs a twin
  with a different block for the same (view, height) (the header's timestamp
  moved by 1 ms, so the digest differs) and sends the original to one half of
  the other validators, the twin to the other half, and both to one validator
  of the first half (so that an honest node holds the two signed messages);
- votes for conflicting blocks: next to each PREPARE and COMMIT it sends, it
  signs a second one for another digest and sends it to one validator;
- replays old messages: every few sends it sends again a random message from
  the last `REPLAY_KEPT` it sent, to a random validator.

With `--bad-tx-signature` it instead proposes, whenever it is primary, its
block with the first transaction's signature damaged (one bit; the block's
tx_root recomputed and the PRE-PREPARE signed, so only the transaction
signature is wrong), to every validator: correct validators must refuse to
vote for it (node/service.py checks proposals' transaction signatures).

Each action is logged as a JSON line ("byzantine" with its kind), so the test
can count them. Exit and shutdown behave as `redwood start`.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import json
import logging
import random
import sys
from pathlib import Path
from typing import Any

import trio

from consensus import merkle
from consensus.certificates import NO_SIGNATURE, sign
from consensus.types import Block, Commit, Prepare, PrePrepare

REPLAY_KEPT = 256
REPLAY_EVERY = 5

log = logging.getLogger("redwood.byzantine")


class Byzantine:
    """Wraps `node.driver._send`; see the module docstring."""

    def __init__(self, node: Any, rng: random.Random, *, bad_tx_signature: bool = False) -> None:
        self.node = node
        self.bad_tx_signature = bad_tx_signature
        self.rng = rng
        self.honest_send = node._send
        self.sent: collections.deque[tuple[bytes | None, Any]] = collections.deque(
            maxlen=REPLAY_KEPT
        )
        self.counts: collections.Counter[str] = collections.Counter()
        self._sends = 0

    def install(self) -> None:
        self.node.driver._send = self.send

    def others(self) -> list[bytes]:
        me = self.node.node_id
        return sorted(v for v in self.node.replica_validators() if v != me)

    def send(self, to: bytes | None, message: Any) -> None:
        self._sends += 1
        mine = getattr(message, "replica", None) == self.node.node_id
        if mine and isinstance(message, PrePrepare) and self.bad_tx_signature:
            self._bad_signature_proposal(to, message)
        elif mine and isinstance(message, PrePrepare):
            self._equivocate(to, message)
        else:
            self.honest_send(to, message)
            if mine and isinstance(message, Prepare | Commit):
                self._conflicting_vote(message)
        self.sent.append((to, message))
        if self._sends % REPLAY_EVERY == 0 and len(self.sent) > 1:
            self._replay()

    def _twin(self, pp: PrePrepare) -> PrePrepare:
        header = dataclasses.replace(pp.block.header, timestamp_ms=pp.block.header.timestamp_ms + 1)
        block = Block(header=header, txs=pp.block.txs)
        twin = PrePrepare(pp.view, pp.height, block, self.node.node_id, NO_SIGNATURE)
        return sign(self.node.key, self.node.chain_id, twin)

    def _equivocate(self, to: bytes | None, pp: PrePrepare) -> None:
        twin = self._twin(pp)
        others = self.others()
        first, second = others[0::2], others[1::2]
        targets = others if to is None else [to]
        for peer in targets:
            self.honest_send(peer, twin if peer in second else pp)
        if first and (to is None or to == first[0]):
            self.honest_send(first[0], twin)  # first[0] holds both: evidence
        self._note("equivocation", view=pp.view, height=pp.height)

    def _bad_signature_proposal(self, to: bytes | None, pp: PrePrepare) -> None:
        if not pp.block.txs:
            self.honest_send(to, pp)
            return
        first = pp.block.txs[0]
        damaged = first[:-1] + bytes([first[-1] ^ 1])  # the last byte is the signature's
        txs = (damaged, *pp.block.txs[1:])
        header = dataclasses.replace(pp.block.header, tx_root=merkle.root(list(txs)))
        bad = PrePrepare(pp.view, pp.height, Block(header, txs), self.node.node_id, NO_SIGNATURE)
        self.honest_send(to, sign(self.node.key, self.node.chain_id, bad))
        tx_hash = hashlib.sha256(damaged).hexdigest()
        self._note("bad_tx_signature", view=pp.view, height=pp.height)
        log.warning("byzantine damaged tx", extra={"tx_hash": tx_hash})

    def _conflicting_vote(self, vote: Prepare | Commit) -> None:
        others = self.others()
        if not others:
            return
        digest = hashlib.sha256(b"byzantine" + vote.digest).digest()
        other = dataclasses.replace(vote, digest=digest, signature=NO_SIGNATURE)
        self.honest_send(self.rng.choice(others), sign(self.node.key, self.node.chain_id, other))
        self._note(f"conflicting_{type(vote).__name__.lower()}", view=vote.view, height=vote.height)

    def _replay(self) -> None:
        _to, old = self.rng.choice(list(self.sent)[:-1])
        others = self.others()
        if others:
            self.honest_send(self.rng.choice(others), old)
            self.counts["replay"] += 1

    def _note(self, kind: str, **fields: int) -> None:
        self.counts[kind] += 1
        log.warning("byzantine", extra={"byzantine": kind, **fields})


async def _serve(node: Any) -> None:
    from node.service import _serve_until_signal

    await _serve_until_signal(node)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.byzantine_node")
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bad-tx-signature", action="store_true")
    args = parser.parse_args(argv)
    from node.config import load_config
    from node.logs import setup_logging
    from node.service import Node

    cfg = load_config(args.home)
    setup_logging(cfg.log.format, cfg.log.level, sys.stderr)
    node = Node(cfg)
    byz = Byzantine(node, random.Random(args.seed), bad_tx_signature=args.bad_tx_signature)
    byz.install()
    log.warning("byzantine node started", extra={"node_id": node.node_id.hex()})
    try:
        trio.run(_serve, node)
    finally:
        print(json.dumps({"byzantine_counts": dict(byz.counts)}), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
