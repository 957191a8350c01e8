"""A deliberately tiny replica, to test the simulator without the real one.

It speaks the replica interface of `docs/interfaces.md` (step, tick, propose,
wants_proposal, executed, has_ready, ready, advance) with real signed
`consensus.types` messages, but its protocol is only the normal case with a
fixed primary (validator 0, view 0), one height in flight, no view change and
no catch-up: PRE-PREPARE from the primary, COMMIT from every replica that
accepts it, commit on q COMMITs. So it is safe and live with a healthy
network and no faulty primary, and not otherwise -- which is what the
harness tests need: a correct baseline, and (with `careless=True`, which
forgets its votes on restart and votes for any pre-prepare) a replica that the
state checker must catch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from consensus import codec, merkle
from consensus.crypto import ZERO_HASH
from consensus.types import (
    Block,
    BlockHeader,
    CertifiedBlock,
    Commit,
    CommitCertificate,
    CommitSignature,
    PrePrepare,
    SignedVote,
    VoteKind,
    signed_payload,
)


@dataclass(frozen=True, slots=True)
class ToyOutbound:
    to: bytes | None
    message: object


@dataclass(frozen=True, slots=True)
class ToyReady:
    persist: tuple[tuple[bytes, bytes | None], ...]
    messages: tuple[ToyOutbound, ...]
    committed: tuple[CertifiedBlock, ...]
    stable_checkpoints: tuple[tuple[int, bytes], ...] = ()
    evidence: tuple[Any, ...] = ()


class ToyReplica:
    def __init__(
        self,
        *,
        chain_id: str,
        validators: tuple[bytes, ...],
        signer: Any,
        verifier: Any,
        committed_height: int,
        committed_hash: bytes,
        journal: dict[bytes, bytes],
        careless: bool = False,
    ) -> None:
        self.chain_id = chain_id
        self.validators = validators
        self.quorum = (len(validators) + (len(validators) - 1) // 3) // 2 + 1
        self.signer = signer
        self.verifier = verifier
        self.committed_height = committed_height
        self.head_hash = committed_hash
        self.careless = careless
        self.view = 0
        self.voted: dict[int, bytes] = {}
        if not careless:
            for value in journal.values():
                vote = codec.decode(value, SignedVote)
                self.voted[vote.height] = vote.digest
        self.blocks: dict[bytes, Block] = {}
        self.commits: dict[tuple[int, bytes], dict[bytes, bytes]] = {}
        self.proposed_height = committed_height
        self._persist: list[tuple[bytes, bytes | None]] = []
        self._out: list[ToyOutbound] = []
        self._committed: list[CertifiedBlock] = []

    @property
    def is_primary(self) -> bool:
        return self.signer.public == self.validators[0]

    def wants_proposal(self) -> bool:
        return self.is_primary and self.proposed_height == self.committed_height

    def propose(self, txs: Sequence[bytes], timestamp_ms: int) -> bool:
        if not self.wants_proposal():
            return False
        h = self.committed_height + 1
        header = BlockHeader(
            chain_id=self.chain_id,
            height=h,
            view=0,
            epoch=0,
            parent_hash=self.head_hash,
            tx_root=merkle.root(txs),
            tx_count=len(txs),
            state_height=0,
            state_root=ZERO_HASH,
            proposer=self.signer.public,
            timestamp_ms=timestamp_ms,
            validator_set_hash=ZERO_HASH,
        )
        block = Block(header=header, txs=tuple(txs))
        pp = self._sign(PrePrepare(0, h, block, self.signer.public, bytes(64)))
        self.proposed_height = h
        self._out.append(ToyOutbound(None, pp))
        self._on_pre_prepare(pp)
        return True

    def _sign(self, m: Any) -> Any:
        sig = self.signer.sign(m.DOMAIN, self.chain_id, signed_payload(m))
        return dataclasses.replace(m, signature=sig)

    def _ok(self, m: Any) -> bool:
        return self.verifier.verify(
            m.replica, m.signature, m.DOMAIN, self.chain_id, signed_payload(m)
        )

    def step(self, message: object, sender: bytes) -> None:
        if not isinstance(message, PrePrepare | Commit) or not self._ok(message):
            return
        if isinstance(message, PrePrepare) and message.replica == self.validators[0]:
            self._on_pre_prepare(message)
        elif isinstance(message, Commit) and message.replica in self.validators:
            self._on_commit(message)

    def _on_pre_prepare(self, pp: PrePrepare) -> None:
        h = pp.height
        if h <= self.committed_height or pp.block.height != h:
            return
        digest = pp.block.hash()
        self.blocks[digest] = pp.block
        if not self.careless and self.voted.get(h, digest) != digest:
            return
        self.voted[h] = digest
        vote = SignedVote(VoteKind.COMMIT, 0, h, digest)
        self._persist.append((b"vote/%d" % h, codec.encode(vote)))
        commit = self._sign(Commit(0, h, digest, self.signer.public, bytes(64)))
        self._out.append(ToyOutbound(None, commit))
        self._on_commit(commit)

    def _on_commit(self, c: Commit) -> None:
        if c.height <= self.committed_height:
            return
        votes = self.commits.setdefault((c.height, c.digest), {})
        votes[c.replica] = c.signature
        self._try_commit()

    def _try_commit(self) -> None:
        while True:
            h = self.committed_height + 1
            found = [
                (d, v) for (hh, d), v in self.commits.items() if hh == h and len(v) >= self.quorum
            ]
            if not found or found[0][0] not in self.blocks:
                return
            digest, votes = found[0]
            block = self.blocks[digest]
            if block.header.parent_hash != self.head_hash:
                return
            sigs = tuple(CommitSignature(r, s) for r, s in sorted(votes.items())[: self.quorum])
            cert = CommitCertificate(0, h, digest, 0, sigs)
            self._committed.append(CertifiedBlock(block, cert))
            self.committed_height = h
            self.head_hash = digest

    def executed(self, height: int, state_root: bytes) -> None:
        pass

    def tick(self) -> None:
        pass

    def has_ready(self) -> bool:
        return bool(self._persist or self._out or self._committed)

    def ready(self) -> ToyReady:
        return ToyReady(tuple(self._persist), tuple(self._out), tuple(self._committed))

    def advance(self, ready: ToyReady) -> None:
        del self._persist[: len(ready.persist)]
        del self._out[: len(ready.messages)]
        del self._committed[: len(ready.committed)]


def toy_factory(*, careless: bool = False) -> Any:
    def make(node: Any) -> ToyReplica:
        cluster = node.cluster
        return ToyReplica(
            chain_id="redwood-sim",
            validators=cluster.validators,
            signer=node.key,
            verifier=cluster.verifier,
            committed_height=node.height,
            committed_hash=node.head_hash(),
            journal=dict(node.journal),
            careless=careless,
        )

    return make
