"""Binary SHA-256 Merkle trees with inclusion proofs (RFC 9162 shape).

Leaves and inner nodes are hashed under different prefixes (0x00 and 0x01),
so an inner node can never be passed off as a leaf (the second-preimage trick
against naive Merkle trees). The tree of n leaves splits at the largest power
of two below n, which is the same as pairing level by level and promoting an
unpaired last node; the empty tree's root is SHA-256 of nothing.

Used for a block's `tx_root` and for transaction inclusion proofs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from consensus.codec import HASH, U64, ListOf, wire

MAX_PROOF_DEPTH = 64
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    return _sha256(b"\x00" + data).digest()


def inner_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def root_of_leaf_hashes(level: Sequence[bytes]) -> bytes:
    """Root over already-hashed leaves (use `leaf_hash` on each item first)."""
    if not level:
        return EMPTY_ROOT
    nodes = list(level)
    while len(nodes) > 1:
        paired = [
            _sha256(b"\x01" + nodes[i] + nodes[i + 1]).digest() for i in range(0, len(nodes) - 1, 2)
        ]
        if len(nodes) % 2:
            paired.append(nodes[-1])
        nodes = paired
    return nodes[0]


def root(items: Sequence[bytes]) -> bytes:
    return root_of_leaf_hashes([leaf_hash(x) for x in items])


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """The siblings from leaf `index` up to the root of a tree of `size` leaves."""

    index: int = wire(U64)
    size: int = wire(U64)
    path: tuple[bytes, ...] = wire(ListOf(HASH, MAX_PROOF_DEPTH))


def prove(items: Sequence[bytes], index: int) -> InclusionProof:
    return prove_leaf_hashes([leaf_hash(x) for x in items], index)


def prove_leaf_hashes(level: Sequence[bytes], index: int) -> InclusionProof:
    if not 0 <= index < len(level):
        raise IndexError(f"leaf {index} not in a tree of {len(level)} leaves")
    size = len(level)
    path: list[bytes] = []
    nodes = list(level)
    i = index
    while len(nodes) > 1:
        sibling = i ^ 1
        if sibling < len(nodes):
            path.append(nodes[sibling])
        paired = [inner_hash(nodes[j], nodes[j + 1]) for j in range(0, len(nodes) - 1, 2)]
        if len(nodes) % 2:
            paired.append(nodes[-1])
        nodes = paired
        i //= 2
    return InclusionProof(index=index, size=size, path=tuple(path))


def verify_inclusion(
    item: bytes, proof: InclusionProof, expected_root: bytes, *, expected_size: int | None = None
) -> bool:
    """True only when `proof` shows `item` at `proof.index` under `expected_root`.

    RFC 9162 §2.1.3.2; every malformed proof (index out of range, path too
    short or too long, wrong sibling) yields False.

    The root does not commit to the tree size, and trees of different sizes
    can share the shape along one leaf's path (leaf 0 of 3 and of 4 leaves).
    Pass `expected_size` (a block's `tx_count`) to pin the size, as RFC 9162
    does with its signed tree head; without it `proof.size` is taken on trust.
    """
    return verify_leaf_hash(leaf_hash(item), proof, expected_root, expected_size=expected_size)


def verify_leaf_hash(
    leaf: bytes, proof: InclusionProof, expected_root: bytes, *, expected_size: int | None = None
) -> bool:
    """`verify_inclusion` for an already-hashed leaf."""
    if not isinstance(proof, InclusionProof) or not _well_formed(proof):
        return False
    if expected_size is not None and proof.size != expected_size:
        return False
    if type(leaf) is not bytes or len(leaf) != 32:
        return False
    fn, sn, r = proof.index, proof.size - 1, leaf
    for p in proof.path:
        if type(p) is not bytes or len(p) != 32 or sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = inner_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = inner_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected_root


def _well_formed(proof: InclusionProof) -> bool:
    """Index and size are integers with 0 <= index < size; the path is a short sequence.

    A hand-built proof (not one from the decoder) could carry a negative
    index, which the bit walk below would treat as an all-ones index.
    """
    index, size, path = proof.index, proof.size, proof.path
    if type(index) is not int or type(size) is not int or not 0 <= index < size:
        return False
    return isinstance(path, tuple | list) and len(path) <= MAX_PROOF_DEPTH
