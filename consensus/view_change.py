"""The new primary's choice of blocks after a view change (PBFT §4.4, "O").

Given the q VIEW-CHANGE messages of a NEW-VIEW, every replica computes the
same list of blocks for heights base+1 .. top, where base is the highest
stable checkpoint among them and top the highest prepared height:

1. per height, the block of the prepared certificate with the highest view
   (ties, impossible with at most f faults, go to the smaller digest so the
   choice stays deterministic);
   (a block may come stripped of its transactions, `certificates.strip`: the
   header is what the derivation needs);
2. walking upward from base, a chosen block is kept only if its
   `parent_hash` is the hash of the block kept (or null-filled) just below;
   otherwise, and where nothing was prepared, the height gets the one null
   block its parent determines (`certificates.null_header`).

Why dropping unlinked blocks is safe: a replica sends COMMIT for h in view v
only if h is prepared in v *and* h-1 is committed with hash == parent_hash
or prepared in v with digest == parent_hash (and itself linked). If block B
at h was committed, q replicas sent such COMMITs, so f+1 correct ones hold a
prepared certificate for B and, by induction down to the stable checkpoint,
for B's ancestors; one of them is among any q VIEW-CHANGEs. By the usual
PBFT argument the highest-view certificate at each of those heights is
B's (or its ancestor's) own, so the chosen chain below B is B's chain and B
links: a committed block is never dropped.

Why re-proposed blocks above a null cannot be kept: a re-proposed block keeps
its exact content (its digest is what was prepared), so its `parent_hash`
names some earlier block, never the freshly made null below it. It cannot
have been committed either: had it been, its parent would have been
committed too, would have been chosen by the rule above and would not be
null.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from consensus.certificates import BlockLimits, null_header
from consensus.types import Block, PrePrepare, ViewChange
from consensus.validators import ValidatorSet


def base_height(view_changes: Iterable[ViewChange]) -> int:
    return max(vc.stable_height for vc in view_changes)


def choose_prepared(view_changes: Iterable[ViewChange], base: int) -> dict[int, PrePrepare]:
    """Per height above `base`: the pre-prepare of the highest-view prepared certificate."""
    chosen: dict[int, PrePrepare] = {}
    for vc in view_changes:
        for pc in vc.prepared:
            pp = pc.pre_prepare
            if pp.height <= base:
                continue
            old = chosen.get(pp.height)
            if old is None or _rank(pp) > _rank(old):
                chosen[pp.height] = pp
    return chosen


def _rank(pp: PrePrepare) -> tuple[int, bytes, bool]:
    """Highest view first; then (never with <= f faults) the smaller digest; a full block
    beats the same block stripped of its transactions."""
    return pp.view, _neg(pp.digest), len(pp.block.txs) == pp.block.header.tx_count


def _neg(digest: bytes) -> bytes:
    return bytes(255 - b for b in digest)


def derive_blocks(
    view_changes: Iterable[ViewChange],
    new_view: int,
    base_hash: bytes,
    base_timestamp_ms: int,
    limits: BlockLimits,
    vset_at: Callable[[int], ValidatorSet],
) -> list[Block]:
    """The blocks the NEW-VIEW for `new_view` must re-propose, heights base+1 upward."""
    vcs = list(view_changes)
    base = base_height(vcs)
    chosen = choose_prepared(vcs, base)
    top = max(chosen, default=base)
    out: list[Block] = []
    parent_hash, parent_ts = base_hash, base_timestamp_ms
    for h in range(base + 1, top + 1):
        pp = chosen.get(h)
        if pp is not None and pp.block.header.parent_hash == parent_hash:
            block = pp.block
        else:
            header = null_header(limits, vset_at(h), new_view, h, parent_hash, parent_ts)
            block = Block(header=header, txs=())
        out.append(block)
        parent_hash, parent_ts = block.hash(), block.header.timestamp_ms
    return out
