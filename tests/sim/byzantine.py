"""Byzantine behaviour for simulated validators that hold a real key.

A Byzantine node runs an ordinary `Replica` (so it knows the protocol's
state) and this module rewrites what leaves it, and adds traffic of its own.
Everything it sends is a real `consensus.types` object signed with its own
key, or raw bytes that the receiving node must refuse to decode. It cannot
forge other validators' signatures (the fake verifier is a MAC, the real one
is Ed25519), exactly as in production.

Behaviours (any subset per node):

- `equivocate`: as primary, sends a different block for the same height to
  half of the peers (both pre-prepares correctly signed);
- `conflicting_votes`: sends a PREPARE/COMMIT for another digest to half of
  the peers (the other block's digest when it equivocated);
- `bad_signatures`: corrupts the signature of some messages;
- `replay`: re-sends old messages (its own and ones it received) at random;
- `malformed`: sends garbage, truncated, non-canonical, oversized and
  nonsensical-but-decodable messages;
- `silence`: never sends to a chosen set of peers (everyone, sometimes);
- `bad_blocks`: answers catch-up requests with tampered blocks;
- `bad_state_claim`: as primary, claims a wrong state root in its blocks;
- `forged_view_change`: adds to its VIEW-CHANGEs a prepared certificate for a
  block it made up (signed by itself as that view's primary, the other
  PREPAREs with signatures it cannot make), full or stripped to its header.

`collude` (never in random profiles: it is for more than f faulty nodes) makes
all colluders share one `Collusion`: the correct replicas are split into two
fixed sides, a colluding primary sends side B another block, and every
colluder votes for that block towards side B and for the real one towards
side A -- the coordinated attack that breaks agreement once f+1 join it.
"""

from __future__ import annotations

import dataclasses
import random
from collections import deque
from typing import Any

from consensus import codec, merkle
from consensus.crypto import ZERO_HASH, sha256
from consensus.types import (
    MAX_PREPARED_IN_VIEW_CHANGE,
    Block,
    BlockHeader,
    BlockRequest,
    BlockResponse,
    CertifiedBlock,
    Commit,
    Prepare,
    PreparedCertificate,
    PrePrepare,
    StatusAnnouncement,
    ViewChange,
    signed_payload,
)
from consensus.validators import ValidatorSet

BEHAVIOURS = (
    "equivocate",
    "conflicting_votes",
    "bad_signatures",
    "replay",
    "malformed",
    "silence",
    "bad_blocks",
    "bad_state_claim",
    "forged_view_change",
)
REPLAY_MEMORY_MAX = 256
MALFORMED_PROBABILITY_PER_TICK = 0.2
REPLAY_PROBABILITY_PER_TICK = 0.3
BAD_SIGNATURE_PROBABILITY = 0.3
HUGE = 2**63
COLLUDE = "collude"


class Collusion:
    """State shared by colluding Byzantine nodes."""

    def __init__(self, side_b: frozenset[bytes]) -> None:
        self.side_b = side_b
        self.digests: dict[tuple[int, int], tuple[bytes, bytes]] = {}  # (view, h) -> (A, B)


_OVERSIZED: bytes | None = None


def _oversized() -> bytes:
    """One message over the codec's size limit, built once per process (32 MiB)."""
    global _OVERSIZED
    if _OVERSIZED is None:
        _OVERSIZED = b"\x00" * (codec.MAX_MESSAGE_BYTES + 1)
    return _OVERSIZED


Send = tuple[bytes | None, Any]  # (destination node id or None = all peers, payload)


class Byzantine:
    """Rewrites one node's traffic. Deterministic given its `rng`."""

    def __init__(
        self,
        behaviours: frozenset[str],
        *,
        rng: random.Random,
        key: Any,
        chain_id: str,
        validators: tuple[bytes, ...],
        oversized: bool = False,
        collusion: Collusion | None = None,
    ) -> None:
        assert behaviours <= {*BEHAVIOURS, COLLUDE}, behaviours
        assert (COLLUDE in behaviours) == (collusion is not None)
        self.collusion = collusion
        self.behaviours = behaviours
        self.rng = rng
        self.key = key
        self.chain_id = chain_id
        self.validators = validators
        self.vset_hash = ValidatorSet(epoch=0, validators=validators).hash()  # genesis epoch
        self.peers = tuple(v for v in validators if v != key.public)
        self.oversized = oversized
        self.silent_to = frozenset(self._silent_targets())
        self.memory: deque[Any] = deque(maxlen=REPLAY_MEMORY_MAX)
        self.alt_digest: dict[tuple[int, int], bytes] = {}

    def _silent_targets(self) -> list[bytes]:
        if "silence" not in self.behaviours:
            return []
        if self.rng.random() < 0.3:
            return list(self.peers)
        return self.rng.sample(self.peers, self.rng.randint(1, max(1, len(self.peers) - 1)))

    # -- rewriting what the replica sends -------------------------------------------

    def outgoing(self, to: bytes | None, message: Any) -> list[Send]:
        self.memory.append(message)
        targets = self.peers if to is None else (to,)
        halves = self._halves(targets)
        sends: list[Send] = []
        for i, peer in enumerate(targets):
            if peer in self.silent_to:
                continue
            if self.collusion is not None:
                sends.append((peer, self._collude(message, peer)))
            else:
                sends.append((peer, self._rewrite(message, second_half=i in halves)))
        return sends

    def _collude(self, message: Any, peer: bytes) -> Any:
        c = self.collusion
        assert c is not None
        if peer not in c.side_b:
            return message
        if isinstance(message, PrePrepare):
            alt = self._other_block(message)
            c.digests[(message.view, message.height)] = (message.digest, alt.digest)
            return alt
        if isinstance(message, Prepare | Commit):
            pair = c.digests.get((message.view, message.height))
            if pair is not None and pair[0] == message.digest:
                return self._sign(dataclasses.replace(message, digest=pair[1]))
        return message

    def _halves(self, targets: tuple[bytes, ...]) -> set[int]:
        idx = list(range(len(targets)))
        self.rng.shuffle(idx)
        return set(idx[: len(idx) // 2])

    def _rewrite(self, message: Any, *, second_half: bool) -> Any:
        b = self.behaviours
        if "bad_state_claim" in b and isinstance(message, PrePrepare):
            message = self._lie_about_state(message)
        if "forged_view_change" in b and isinstance(message, ViewChange):
            message = self._forge_view_change(message)
        if second_half and "equivocate" in b and isinstance(message, PrePrepare):
            message = self._other_block(message)
        elif second_half and "conflicting_votes" in b and isinstance(message, Prepare | Commit):
            alt = self.alt_digest.get((message.view, message.height))
            digest = alt or sha256(b"conflict" + message.digest)
            message = self._sign(dataclasses.replace(message, digest=digest))
        if "bad_signatures" in b and self.rng.random() < BAD_SIGNATURE_PROBABILITY:
            message = _corrupt_signature(message, self.rng)
        return message

    def _other_block(self, pp: PrePrepare) -> PrePrepare:
        key = (pp.view, pp.height)
        txs = (*pp.block.txs, b"evil-%d-%d" % key)
        header = dataclasses.replace(pp.block.header, tx_root=merkle.root(txs), tx_count=len(txs))
        block = Block(header=header, txs=txs)
        self.alt_digest[key] = block.hash()
        return self._sign(dataclasses.replace(pp, block=block))

    def _lie_about_state(self, pp: PrePrepare) -> PrePrepare:
        header = pp.block.header
        if header.state_root == ZERO_HASH:
            return pp
        lie = sha256(b"lie" + header.state_root)
        block = Block(header=dataclasses.replace(header, state_root=lie), txs=pp.block.txs)
        return self._sign(dataclasses.replace(pp, block=block))

    def _forge_view_change(self, vc: ViewChange) -> ViewChange:
        """A prepared certificate for a made-up block at the first height above the checkpoint."""
        n = len(self.validators)
        me = self.validators.index(self.key.public)
        mine = [v for v in range(max(0, vc.new_view - 3 * n), vc.new_view) if v % n == me]
        if vc.new_view == 0 or len(vc.prepared) >= MAX_PREPARED_IN_VIEW_CHANGE:
            return vc
        # its own past view if it had one, else its own first view (perhaps not even
        # begun) or a view it was never primary of
        fallback = me if self.rng.random() < 0.5 else vc.new_view - 1
        view, height = (mine or [fallback])[-1], vc.stable_height + 1
        txs = (b"forged-%d" % self.rng.randrange(1 << 30),)
        header = BlockHeader(
            chain_id=self.chain_id, height=height, view=view, epoch=0,
            parent_hash=self.rng.randbytes(32), tx_root=merkle.root(txs), tx_count=1,
            state_height=0, state_root=ZERO_HASH, proposer=self.key.public,
            timestamp_ms=0, validator_set_hash=self.vset_hash,
        )  # fmt: skip
        # half the time "stripped" (header only), which peers accept on q-1 PREPAREs alone
        stripped = self.rng.random() < 0.5
        block = Block(header=header, txs=() if stripped else txs)
        pp = self._sign(PrePrepare(view, height, block, self.key.public, bytes(64)))
        prepares = [self._sign(Prepare(view, height, block.hash(), self.key.public, bytes(64)))]
        for peer in self.peers:
            prepares.append(Prepare(view, height, block.hash(), peer, self.rng.randbytes(64)))
        forged = PreparedCertificate(pre_prepare=pp, prepares=tuple(prepares))
        others = tuple(pc for pc in vc.prepared if pc.pre_prepare.height != height)
        return self._sign(dataclasses.replace(vc, prepared=(forged, *others)))

    def _sign(self, message: Any) -> Any:
        sig = self.key.sign(message.DOMAIN, self.chain_id, signed_payload(message))
        return dataclasses.replace(message, signature=sig)

    # -- traffic of its own -------------------------------------------------------------

    def remember(self, message: Any) -> None:
        """A message the node received (replay material)."""
        self.memory.append(message)

    def on_tick(self) -> list[Send]:
        sends: list[Send] = []
        replaying = "replay" in self.behaviours and self.memory
        if replaying and self.rng.random() < REPLAY_PROBABILITY_PER_TICK:
            for _ in range(self.rng.randint(1, 3)):
                sends.append((self.rng.choice(self.peers), self.rng.choice(self.memory)))
        if "malformed" in self.behaviours and self.rng.random() < MALFORMED_PROBABILITY_PER_TICK:
            sends.append((self.rng.choice(self.peers), self._malformed()))
        return [s for s in sends if s[0] not in self.silent_to]

    def _malformed(self) -> Any:
        rng = self.rng
        sample = rng.choice(self.memory) if self.memory else None
        encoded = codec.encode(sample) if sample is not None else b"\x93\x01\x0b\x90"
        choice = rng.randrange(12 if self.oversized else 11)
        if choice == 0:
            return rng.randbytes(rng.randint(0, 200))
        if choice == 1:
            return encoded[: rng.randint(0, max(0, len(encoded) - 1))]
        if choice == 2:
            i = rng.randrange(len(encoded))
            return encoded[:i] + bytes([encoded[i] ^ (1 << rng.randrange(8))]) + encoded[i + 1 :]
        if choice == 3:
            return codec.pack([codec.FORMAT_VERSION + 1 + rng.randrange(5), 11, []])
        if choice == 4:
            return codec.pack([codec.FORMAT_VERSION, 200 + rng.randrange(50), [1, 2, 3]])
        if choice == 5:
            return b"\xc6\xff\xff\xff\xf0" + rng.randbytes(8)  # bin32 claiming ~4 GiB
        if choice == 6:
            return b"\x91" * 5000 + b"\x00"  # absurdly deep nesting
        if choice == 7:
            return b"\xcf" + (1).to_bytes(8, "big")  # non-canonical uint64 form of 1
        if choice == 8:
            return self._nonsense_vote()
        if choice == 9:
            return StatusAnnouncement(
                height=HUGE, view=rng.randrange(HUGE), replica=self.key.public
            )
        if choice == 10:
            return self._nonsense_view_change()
        return _oversized()

    def _nonsense_vote(self) -> Any:
        rng = self.rng
        cls = rng.choice((Prepare, Commit))
        vote = cls(
            view=rng.choice((0, 1, HUGE, 2**64 - 1)),
            height=rng.choice((0, 1, HUGE, 2**64 - 1)),
            digest=rng.randbytes(32),
            replica=self.key.public,
            signature=bytes(64),
        )
        return self._sign(vote)

    def _nonsense_view_change(self) -> Any:
        vc = ViewChange(
            new_view=self.rng.choice((1, HUGE)),
            stable_height=self.rng.choice((0, HUGE)),
            checkpoint_proof=(),
            prepared=(),
            replica=self.key.public,
            signature=bytes(64),
        )
        return self._sign(vc)

    # -- catch-up answers -------------------------------------------------------------------

    def answer(self, request: BlockRequest, blocks: list[CertifiedBlock]) -> BlockResponse:
        if "bad_blocks" not in self.behaviours or not blocks:
            return BlockResponse(blocks=tuple(blocks))
        i = self.rng.randrange(len(blocks))
        cb = blocks[i]
        if self.rng.random() < 0.5:
            txs = (*cb.block.txs, b"forged")
            header = dataclasses.replace(
                cb.block.header, tx_root=merkle.root(txs), tx_count=len(txs)
            )
            forged = CertifiedBlock(block=Block(header=header, txs=txs), certificate=cb.certificate)
        else:
            sigs = cb.certificate.signatures
            bad = tuple(dataclasses.replace(s, signature=bytes(64)) for s in sigs)
            forged = CertifiedBlock(
                block=cb.block, certificate=dataclasses.replace(cb.certificate, signatures=bad)
            )
        blocks = [*blocks[:i], forged, *blocks[i + 1 :]]
        return BlockResponse(blocks=tuple(blocks))


def _corrupt_signature(message: Any, rng: random.Random) -> Any:
    sig = getattr(message, "signature", None)
    if not isinstance(sig, bytes) or len(sig) == 0:
        return message
    i = rng.randrange(len(sig))
    bad = sig[:i] + bytes([sig[i] ^ 0xFF]) + sig[i + 1 :]
    return dataclasses.replace(message, signature=bad)
