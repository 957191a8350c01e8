"""Merkle roots and inclusion proofs, checked against a plain recursive RFC 6962 model.

The model below is written from the RFC's definitions (MTH and PATH, §2.1)
and shares no code with `consensus.merkle`, which computes level by level.
Every kind of tampering with a proof must be refused, including passing an
inner node off as a leaf (the second-preimage trick).
"""

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import codec, merkle
from consensus.merkle import InclusionProof, prove, root, verify_inclusion, verify_leaf_hash

# -- the independent model (RFC 6962 §2.1, straight from the text) ----------


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return _h(b"")
    if n == 1:
        return _h(b"\x00" + d[0])
    k = _split(n)
    return _h(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_sides(m: int, n: int) -> list[str]:
    """Which side each sibling of leaf m sits on, leaf to root, in a tree of n leaves."""
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return [*ref_sides(m, k), "right"]
    return [*ref_sides(m - k, n - k), "left"]


def items_of(n: int, salt: int = 0) -> list[bytes]:
    return [f"tx-{salt}-{i}".encode() for i in range(n)]


# -- roots and proofs agree with the model --------------------------------


def test_split_helper_is_largest_power_of_two_below() -> None:
    assert [_split(n) for n in (2, 3, 4, 5, 8, 9, 70)] == [1, 2, 2, 4, 4, 8, 64]


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert root([]) == merkle.EMPTY_ROOT == hashlib.sha256(b"").digest()


def test_known_vector_two_leaves() -> None:
    a, b = b"a", b"b"
    expected = _h(b"\x01" + _h(b"\x00a") + _h(b"\x00b"))
    assert root([a, b]) == expected


@pytest.mark.parametrize("n", range(71))
def test_root_and_every_proof_match_rfc6962_model(n: int) -> None:
    d = items_of(n)
    assert root(d) == ref_mth(d)
    for i in range(n):
        proof = prove(d, i)
        assert proof == InclusionProof(index=i, size=n, path=tuple(ref_path(i, d)))
        assert verify_inclusion(d[i], proof, ref_mth(d))
        assert verify_inclusion(d[i], proof, ref_mth(d), expected_size=n)


@pytest.mark.parametrize("n", [127, 128, 129, 255, 256, 257, 1000, 1023, 1024, 1025])
def test_larger_trees_match_model(n: int) -> None:
    d = items_of(n, salt=n)
    expected = ref_mth(d)
    assert root(d) == expected
    rng = random.Random(n)
    for i in {0, n - 1, n // 2, *rng.sample(range(n), 5)}:
        proof = prove(d, i)
        assert list(proof.path) == ref_path(i, d)
        assert verify_inclusion(d[i], proof, expected, expected_size=n)


def test_random_larger_sizes_match_model() -> None:
    rng = random.Random(6962)
    for _ in range(4):
        n = rng.randrange(71, 3000)
        d = [rng.randbytes(rng.randrange(0, 40)) for _ in range(n)]
        expected = ref_mth(d)
        assert root(d) == expected
        i = rng.randrange(n)
        assert list(prove(d, i).path) == ref_path(i, d)


def test_root_of_leaf_hashes_and_prove_leaf_hashes_agree_with_item_forms() -> None:
    d = items_of(13)
    leaves = [merkle.leaf_hash(x) for x in d]
    assert merkle.root_of_leaf_hashes(leaves) == root(d)
    assert merkle.prove_leaf_hashes(leaves, 5) == prove(d, 5)
    assert verify_leaf_hash(leaves[5], prove(d, 5), root(d))


@pytest.mark.parametrize(("n", "i"), [(0, 0), (3, 3), (3, -1), (1, 5)])
def test_prove_refuses_index_outside_the_tree(n: int, i: int) -> None:
    with pytest.raises(IndexError):
        prove(items_of(n), i)


def test_proof_travels_through_the_codec() -> None:
    proof = prove(items_of(37), 20)
    data = codec.encode_body(proof)
    assert codec.decode_body(InclusionProof, data) == proof
    too_long = codec.pack([1, 2, [bytes(32)] * (merkle.MAX_PROOF_DEPTH + 1)])
    with pytest.raises(codec.DecodeError, match="path"):
        codec.decode_body(InclusionProof, too_long)


# -- tampering ------------------------------------------------------------------


def _all_tamperings(d: list[bytes], i: int) -> list[tuple[str, bytes, InclusionProof]]:
    """Every single-step forgery of the proof of leaf i (each must be refused)."""
    n, good = len(d), prove(d, i)
    path = list(good.path)
    out: list[tuple[str, bytes, InclusionProof]] = []
    for j in range(n):
        if j != i and d[j] != d[i]:
            out.append((f"index {j}", d[i], InclusionProof(j, n, good.path)))
    out.append(("wrong leaf", d[i] + b"!", good))
    out.append(("index = size", d[i], InclusionProof(n, n, good.path)))
    out.append(("size 0", d[i], InclusionProof(i, 0, good.path)))
    for extra in (bytes(32), path[0] if path else bytes(32)):
        for at in range(len(path) + 1):
            longer = (*path[:at], extra, *path[at:])
            out.append((f"extra element at {at}", d[i], InclusionProof(i, n, longer)))
    for at in range(len(path)):
        shorter = tuple(path[:at] + path[at + 1 :])
        out.append((f"missing element {at}", d[i], InclusionProof(i, n, shorter)))
        for bit in (0, 7, 255):
            changed = bytearray(path[at])
            changed[bit // 8] ^= 1 << (bit % 8)
            modified = tuple([*path[:at], bytes(changed), *path[at + 1 :]])
            out.append((f"modified element {at} bit {bit}", d[i], InclusionProof(i, n, modified)))
        out.append(
            (
                f"short element {at}",
                d[i],
                InclusionProof(i, n, tuple([*path[:at], path[at][:31], *path[at + 1 :]])),
            )
        )
    for at in range(len(path) - 1):
        if path[at] != path[at + 1]:
            swapped = [*path[:at], path[at + 1], path[at], *path[at + 2 :]]
            out.append((f"swapped {at}/{at + 1}", d[i], InclusionProof(i, n, tuple(swapped))))
    out.append(("reversed path", d[i], InclusionProof(i, n, tuple(reversed(path)))))
    return [t for t in out if t[2] != good or t[1] != d[i]]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 33])
def test_every_single_step_tampering_is_refused(n: int) -> None:
    d = items_of(n)
    r = root(d)
    for i in range(n):
        for label, item, forged in _all_tamperings(d, i):
            assert not verify_inclusion(item, forged, r, expected_size=n), (n, i, label)
            assert not verify_inclusion(item, forged, r), (n, i, label)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 7, 8, 9, 12, 17, 33])
def test_wrong_size_is_refused_when_size_is_pinned(n: int) -> None:
    d = items_of(n)
    r = root(d)
    for i in range(n):
        good = prove(d, i)
        for other in {1, n - 1, n + 1, n + 2, 2 * n, 2**64 - 1} - {n}:
            forged = InclusionProof(i, other, good.path)
            assert not verify_inclusion(d[i], forged, r, expected_size=n)
            # Without the pin, a different size passes exactly when leaf i has
            # the same path shape in both trees (per the RFC model).
            same_shape = i < other and ref_sides(i, other) == ref_sides(i, n)
            assert verify_inclusion(d[i], forged, r) == same_shape, (n, i, other)


def test_unpinned_size_is_trusted_only_for_same_shape_example() -> None:
    """Documents why callers pin the size: leaf 0 of 3 and of 4 leaves share a path shape."""
    d = items_of(4)
    good = prove(d, 0)
    same_shape = InclusionProof(0, 3, good.path)
    assert verify_inclusion(d[0], same_shape, root(d))
    assert not verify_inclusion(d[0], same_shape, root(d), expected_size=4)


def _inner_nodes(d: list[bytes]) -> list[tuple[list[bytes], int, bytes, bytes]]:
    """(level, j, left, right) for every inner node formed by pairing, bottom up."""
    level = [merkle.leaf_hash(x) for x in d]
    found = []
    while len(level) > 1:
        nxt = []
        for j in range(0, len(level) - 1, 2):
            nxt.append(merkle.inner_hash(level[j], level[j + 1]))
        if len(level) % 2:
            nxt.append(level[-1])
        for j in range(len(level) // 2):
            found.append((nxt, j, level[2 * j], level[2 * j + 1]))
        level = nxt
    return found


@pytest.mark.parametrize("n", [2, 3, 4, 5, 8, 11, 16])
def test_inner_node_presented_as_leaf_is_refused(n: int) -> None:
    """The second-preimage attack: left||right of an inner node posing as leaf data."""
    d = items_of(n)
    r = root(d)
    attacks = _inner_nodes(d)
    assert attacks
    for level, j, left, right in attacks:
        proof = merkle.prove_leaf_hashes(level, j)
        # The attack is well aimed: accepting the node as a leaf *hash* works...
        assert verify_leaf_hash(level[j], proof, r)
        # ...but its preimage as *item* data must not, nor the raw node bytes.
        assert not verify_inclusion(left + right, proof, r)
        assert not verify_inclusion(level[j], proof, r)


@pytest.mark.parametrize(
    "bad",
    [
        InclusionProof(-1, 4, ()),
        InclusionProof(0, -4, ()),
        InclusionProof(True, 4, ()),  # type: ignore[arg-type]
        InclusionProof(0, 4, (bytes(32),) * (merkle.MAX_PROOF_DEPTH + 1)),
        InclusionProof(0, 4, ("x" * 32, bytes(32))),  # type: ignore[arg-type]
        InclusionProof(0, 4, None),  # type: ignore[arg-type]
        InclusionProof(0, 4, (bytearray(32), bytes(32))),  # type: ignore[arg-type]
        "not a proof",
        None,
    ],
)
def test_malformed_proofs_give_false_never_raise(bad: object) -> None:
    d = items_of(4)
    assert verify_inclusion(d[0], bad, root(d)) is False  # type: ignore[arg-type]


def test_negative_index_forgery_of_the_last_leaf_is_refused() -> None:
    """Index -1 walks like an all-ones index: it would 'prove' the last leaf of 4."""
    d = items_of(4)
    good = prove(d, 3)
    assert verify_inclusion(d[3], good, root(d))
    assert not verify_inclusion(d[3], InclusionProof(-1, 4, good.path), root(d))


def test_bad_leaf_hash_argument_gives_false() -> None:
    d = items_of(4)
    assert not verify_leaf_hash(b"short", prove(d, 0), root(d))
    assert not verify_leaf_hash("x" * 32, prove(d, 0), root(d))  # type: ignore[arg-type]


# -- property: random tampering ---------------------------------------------------


@st.composite
def tampered(draw: st.DrawFn) -> tuple[list[bytes], bytes, InclusionProof]:
    n = draw(st.integers(1, 300))
    d = [f"{i}".encode() for i in range(n)]
    i = draw(st.integers(0, n - 1))
    good = prove(d, i)
    path = list(good.path)
    item, index, size = d[i], i, n
    op = draw(
        st.sampled_from(["index", "size", "extra", "drop", "flip", "swap", "leaf", "replace"])
    )
    if op == "index":
        index = draw(st.integers(0, 2**64 - 1).filter(lambda x: x != i))
    elif op == "size":
        size = draw(st.integers(0, 2**64 - 1).filter(lambda x: x != n))
    elif op == "extra":
        at = draw(st.integers(0, len(path)))
        path.insert(at, draw(st.binary(min_size=32, max_size=32)))
    elif op == "drop" and path:
        del path[draw(st.integers(0, len(path) - 1))]
    elif op == "flip" and path:
        at = draw(st.integers(0, len(path) - 1))
        bit = draw(st.integers(0, 255))
        b = bytearray(path[at])
        b[bit // 8] ^= 1 << (bit % 8)
        path[at] = bytes(b)
    elif op == "swap" and len(path) >= 2:
        a = draw(st.integers(0, len(path) - 2))
        path[a], path[a + 1] = path[a + 1], path[a]
    elif op == "replace" and path:
        path[draw(st.integers(0, len(path) - 1))] = draw(st.binary(min_size=32, max_size=32))
    else:
        item = draw(st.binary(max_size=8).filter(lambda x: x != d[i]))
    forged = InclusionProof(index, size, tuple(path))
    changed = (item, forged) != (d[i], good)
    if not changed:  # a swap of equal elements or a no-op: force a different leaf
        item = d[i] + b"!"
    return d, item, forged


@settings(max_examples=150, deadline=None)
@given(tampered())
def test_random_tampering_is_refused(case: tuple[list[bytes], bytes, InclusionProof]) -> None:
    d, item, forged = case
    assert not verify_inclusion(item, forged, root(d), expected_size=len(d))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=20), min_size=1, max_size=100), st.data())
def test_random_trees_prove_and_verify(d: list[bytes], data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(d) - 1))
    r = root(d)
    assert r == ref_mth(d)
    proof = prove(d, i)
    assert list(proof.path) == ref_path(i, d)
    assert verify_inclusion(d[i], proof, r, expected_size=len(d))
