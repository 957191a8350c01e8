"""Block builders for the storage tests, and the writer process the crash test kills.

Run as a script (`python -m tests.unit.crash_writer DIR`) it opens the chain
store in DIR, resumes at head+1 and commits deterministic certified blocks
(`crash_block`, `crash_writes`) with sync=True forever, printing
`start <head>` once and then `committed <height>` after each commit returns.
Certificates carry fake signatures: storage never verifies them.

Everything a block at height h holds is a pure function of h, so the test can
recompute the exact expected state after any head.
"""

from __future__ import annotations

import os
import sys

from consensus.crypto import ZERO_HASH, sha256
from consensus.types import (
    Block,
    BlockHeader,
    CertifiedBlock,
    CommitCertificate,
    CommitSignature,
)
from storage.store import ChainStore, StateWrite

CHAIN_ID = "redwood-test"
GENESIS_HASH = sha256(b"redwood-test genesis")
CRASH_TXS_PER_BLOCK = 40
CRASH_TX_BYTES = 300
CRASH_KEYS = 16


def make_block(
    height: int, parent_hash: bytes, txs: tuple[bytes, ...] = (), *, view: int = 0
) -> CertifiedBlock:
    """A certified block with fake signatures (storage never checks them)."""
    header = BlockHeader(
        chain_id=CHAIN_ID,
        height=height,
        view=view,
        epoch=0,
        parent_hash=parent_hash,
        tx_root=ZERO_HASH,
        tx_count=len(txs),
        state_height=0,
        state_root=sha256(b"state %d" % height),
        proposer=bytes(32),
        timestamp_ms=1_700_000_000_000 + height,
        validator_set_hash=ZERO_HASH,
    )
    block = Block(header=header, txs=tuple(txs))
    sigs = tuple(CommitSignature(replica=bytes([i]) * 32, signature=bytes(64)) for i in range(3))
    cert = CommitCertificate(
        view=view, height=height, digest=block.hash(), epoch=0, signatures=sigs
    )
    return CertifiedBlock(block=block, certificate=cert)


def make_tx(tag: bytes, size: int = CRASH_TX_BYTES) -> bytes:
    """Opaque transaction bytes of `size` (storage never decodes transactions)."""
    return (tag + b"|" + sha256(tag) * (size // 32 + 1))[:size]


def crash_txs(height: int) -> tuple[bytes, ...]:
    """Txs of block `height`; its last tx replays the first tx of the block before."""
    txs = [make_tx(b"tx %d %d" % (height, i)) for i in range(CRASH_TXS_PER_BLOCK)]
    if height > 1:
        txs.append(make_tx(b"tx %d 0" % (height - 1)))
    return tuple(txs)


def crash_writes(height: int) -> list[StateWrite]:
    """Writes of block `height`: three keys set, and every fifth block one key deleted."""
    writes = [
        StateWrite(b"key %d" % ((height * 3 + j) % CRASH_KEYS), b"value %d %d" % (height, j), j)
        for j in range(3)
    ]
    if height % 5 == 0:
        writes.append(StateWrite(b"key %d" % (height % CRASH_KEYS), None, 3))
    return writes


def expected_state(head: int) -> dict[bytes, tuple[bytes | None, int, int]]:
    """key -> (current value, version count, height of last write) after block `head`."""
    state: dict[bytes, tuple[bytes | None, int, int]] = {}
    for h in range(1, head + 1):
        for w in crash_writes(h):
            _, versions, _ = state.get(w.key, (None, 0, 0))
            state[w.key] = (w.value, versions + 1, h)
    return state


def run_writer(path: str) -> None:
    store = ChainStore.open(path, genesis_hash=GENESIS_HASH)
    height = store.head_height()
    parent = store.head_hash()
    out = sys.stdout.fileno()
    os.write(out, b"start %d\n" % height)
    while True:
        height += 1
        cb = make_block(height, parent, crash_txs(height))
        meta = {b"height": b"%d" % height}
        store.commit_block(cb, crash_writes(height), meta, sync=True)
        parent = cb.block.hash()
        os.write(out, b"committed %d\n" % height)


if __name__ == "__main__":
    run_writer(sys.argv[1])
