"""The sparse Merkle state tree: history independence, proofs of inclusion and absence, versions."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from storage.state_tree import (
    EMPTY_ROOT,
    NodeRef,
    Proof,
    StateTree,
    Update,
    decode_root,
    encode_root,
    key_hash,
    verify,
)


def vh(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


class Backend:
    def __init__(self) -> None:
        self.db: dict[bytes, bytes] = {}
        self.tree = StateTree(self.db.get, cache_nodes_max=50)
        self.root: NodeRef | None = None
        self.version = 0

    def apply(self, changes: dict[bytes, bytes | None]) -> Update:
        self.version += 1
        up = self.tree.update(self.root, changes, self.version)
        self.db.update(up.puts)
        self.root = up.root
        return up


def fresh_root(state: dict[bytes, bytes]) -> bytes:
    b = Backend()
    return b.apply(dict(state)).root_hash if state else EMPTY_ROOT


def test_empty_tree_proves_absence() -> None:
    b = Backend()
    k = key_hash(b"x")
    proof = b.tree.prove(None, k)
    assert verify(EMPTY_ROOT, k, None, proof)
    assert not verify(EMPTY_ROOT, k, vh(b"v"), proof)


def test_single_and_many_keys_prove_inclusion_and_absence() -> None:
    b = Backend()
    keys = [key_hash(str(i).encode()) for i in range(300)]
    b.apply({k: vh(k) for k in keys})
    root = b.root.hash if b.root else EMPTY_ROOT
    for k in keys[:50]:
        p = b.tree.prove(b.root, k)
        assert verify(root, k, vh(k), p)
        assert not verify(root, k, vh(b"other"), p)
        assert not verify(root, k, None, p)
    for i in range(300, 350):
        k = key_hash(str(i).encode())
        p = b.tree.prove(b.root, k)
        assert verify(root, k, None, p)
        assert not verify(root, k, vh(b"x"), p)


def test_old_versions_stay_provable() -> None:
    b = Backend()
    k = key_hash(b"a")
    b.apply({k: vh(b"1"), key_hash(b"b"): vh(b"2")})
    old_root = b.root
    b.apply({k: vh(b"3")})
    assert verify(old_root.hash, k, vh(b"1"), b.tree.prove(old_root, k))
    assert verify(b.root.hash, k, vh(b"3"), b.tree.prove(b.root, k))
    assert old_root.hash != b.root.hash


def test_root_reference_round_trips() -> None:
    ref = NodeRef(bytes(range(32)), 7, True)
    assert decode_root(encode_root(ref)) == ref
    assert decode_root(encode_root(None)) is None


def test_proof_json_round_trip_and_size() -> None:
    b = Backend()
    keys = [key_hash(str(i).encode()) for i in range(2000)]
    b.apply({k: vh(k) for k in keys})
    p = b.tree.prove(b.root, keys[5])
    assert Proof.from_json(p.to_json()) == p
    assert p.size_bytes() < 4096


ops = st.lists(
    st.tuples(st.integers(0, 40), st.one_of(st.none(), st.binary(max_size=3))),
    min_size=1,
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(st.lists(ops, min_size=1, max_size=6))
def test_root_depends_only_on_contents(batches: list[list[tuple[int, bytes | None]]]) -> None:
    b = Backend()
    state: dict[bytes, bytes] = {}
    stale_seen: set[bytes] = set()
    for batch in batches:
        changes = {key_hash(str(k).encode()): (None if v is None else vh(v)) for k, v in batch}
        up = b.apply(changes)
        for k, v in changes.items():
            if v is None:
                state.pop(k, None)
            else:
                state[k] = v
        assert up.root_hash == fresh_root(state)
        assert not (set(up.puts) & stale_seen)
        stale_seen.update(up.stale)
        for s in up.stale:  # stale nodes are never the live ones
            assert s not in up.puts
    root = b.root.hash if b.root else EMPTY_ROOT
    for k in range(41):
        kh = key_hash(str(k).encode())
        p = b.tree.prove(b.root, kh)
        assert verify(root, kh, state.get(kh), p)


def test_pruning_stale_nodes_keeps_latest_tree_whole() -> None:
    b = Backend()
    keys = [key_hash(str(i).encode()) for i in range(200)]
    b.apply({k: vh(b"0") for k in keys})
    for r in range(1, 5):
        up = b.apply({k: vh(bytes([r])) for k in keys[r * 10 : r * 10 + 30]})
        for s in up.stale:
            b.db.pop(s, None)
    b.tree = StateTree(b.db.get)  # no cache: every node must be in the db
    root = b.root.hash
    for k in keys:
        assert b.tree.get(b.root, k) is not None
        assert verify(root, k, b.tree.get(b.root, k), b.tree.prove(b.root, k))
