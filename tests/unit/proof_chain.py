"""A small real chain for proof and governance tests: real store, real app, real signatures.

`ProofChain` commits blocks the way the node does (header with the epoch in
force, the state root of height h - pipeline_depth, tx_root over the
transactions) with a commit certificate signed by a quorum of the epoch's
validators, so bundles built from it verify exactly as a live chain's would.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from consensus import merkle
from consensus.crypto import ZERO_HASH, Domain, SigningKey
from consensus.types import (
    Block,
    BlockHeader,
    CertifiedBlock,
    Commit,
    CommitCertificate,
    CommitSignature,
    signed_payload,
)
from consensus.validators import EpochSchedule
from node.app import Application
from node.genesis import Genesis
from node.txs import build
from storage.store import ChainStore

CHAIN = "redwood-proofs"
MEMBERS = [SigningKey(bytes([0x10 + i]) * 32) for i in range(3)]  # agency0..agency2
VALIDATORS = [SigningKey(bytes([0x40 + i]) * 32) for i in range(6)]  # 0..3 at genesis
OUTSIDER = SigningKey(b"\x7f" * 32)


def make_genesis(depth: int = 2, interval: int = 4, validators: int = 4) -> Genesis:
    return Genesis.from_dict(
        {
            "chain_id": CHAIN,
            "agencies": [
                {"id": f"agency{i}", "members": [k.public.hex()]} for i, k in enumerate(MEMBERS)
            ],
            "validators": [
                {"node_id": v.public.hex(), "agency": f"agency{i % 3}"}
                for i, v in enumerate(VALIDATORS[:validators])
            ],
            "params": {"pipeline_depth": depth, "checkpoint_interval": interval},
        }
    )


KEYS = {v.public: v for v in VALIDATORS}


class ProofChain:
    def __init__(self, path: Path, genesis: Genesis | None = None) -> None:
        self.genesis = genesis or make_genesis()
        self.store = ChainStore.open(path, genesis_hash=self.genesis.hash())
        self.app = Application(self.store, self.genesis)
        self.nonce = 0

    def close(self) -> None:
        self.store.close()

    def schedule(self) -> EpochSchedule:
        return EpochSchedule(tuple(self.app.epochs()))

    def tx(self, member: int, op: str, key: bytes | str, value: bytes | str = b"") -> bytes:
        self.nonce += 1
        height = self.store.head_height()
        return build(
            MEMBERS[member], CHAIN, op, f"agency{member}", key, value, height + 50, self.nonce
        )

    def commit(self, txs: Sequence[bytes] = (), signers: int | None = None) -> Any:
        """Commit one block with `txs`; returns the app's Executed."""
        height = self.store.head_height() + 1
        depth = self.genesis.params.pipeline_depth
        s = max(0, height - depth)
        vset = self.schedule().at(height)
        head = self.store.head()
        parent = head.block.hash() if head else self.genesis.hash()
        header = BlockHeader(
            chain_id=CHAIN, height=height, view=0, epoch=vset.epoch, parent_hash=parent,
            tx_root=merkle.root(txs), tx_count=len(txs), state_height=s,
            state_root=self.app.state_root_at(s) or ZERO_HASH, proposer=vset.primary(0),
            timestamp_ms=1000 + height, validator_set_hash=vset.hash(),
        )  # fmt: skip
        block = Block(header, tuple(txs))
        digest = block.hash()
        sigs = []
        for v in vset.validators[: signers or vset.quorum]:
            vote = Commit(0, height, digest, v, bytes(64))
            sig = KEYS[v].sign(Domain.COMMIT, CHAIN, signed_payload(vote))
            sigs.append(CommitSignature(v, sig))
        cert = CommitCertificate(0, height, digest, vset.epoch, tuple(sigs))
        return self.app.apply(CertifiedBlock(block, cert))

    def advance(self, blocks: int) -> None:
        for _ in range(blocks):
            self.commit()
