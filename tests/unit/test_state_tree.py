"""The sparse Merkle state tree: history independence, proofs of inclusion and absence, and a
store that holds the live tree and nothing else (nodes by position, leaves by key hash)."""

from __future__ import annotations

import bisect
import hashlib
import random
import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.state_tree import (
    EMPTY_ROOT,
    TOP_DEPTHS,
    NodeRef,
    Proof,
    StateTree,
    TreeError,
    Update,
    decode_root,
    encode_root,
    internal_hash,
    internal_key,
    is_top,
    key_hash,
    leaf_hash,
    leaf_key,
    nibble,
    top_levels,
    verify,
)


def vh(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def keys_of(db: dict[bytes, bytes]) -> Callable[[bytes, bytes], list[bytes]]:
    """The `keys` look-up of a StateTree over a dict, as the store's `meta_keys` gives it."""
    return lambda lo, hi: sorted(k for k in db if lo <= k < hi)[:16]


def write(db: dict[bytes, bytes], up: Update) -> None:
    """What the node's batch does with an update: its deletes, then its puts."""
    for key in up.deleted:
        assert key in db, "an update deletes only what is stored"
        del db[key]
    db.update(up.puts)


class Backend:
    def __init__(self, cache_nodes_max: int = 50) -> None:
        self.db: dict[bytes, bytes] = {}
        self.tree = StateTree(self.db.get, cache_nodes_max=cache_nodes_max, keys=keys_of(self.db))
        self.root: NodeRef | None = None
        self.version = 0

    def apply(self, changes: dict[bytes, bytes | None]) -> Update:
        self.version += 1
        up = self.tree.update(self.root, changes, self.version)
        write(self.db, up)
        self.tree.committed(up)
        self.root = up.root
        return up


def fresh(state: dict[bytes, bytes]) -> Backend:
    b = Backend()
    if state:
        b.apply(dict(state))
    return b


def fresh_root(state: dict[bytes, bytes]) -> bytes:
    b = fresh(state)
    return EMPTY_ROOT if b.root is None else b.root.hash


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


def test_an_older_tree_is_provable_from_a_copy_of_its_store_only() -> None:
    """Updates overwrite nodes in place: an older root is read from the store as it was
    (the node keeps a LevelDB snapshot per recent height), never from the live one."""
    b = Backend()
    k = key_hash(b"a")
    b.apply({k: vh(b"1"), key_hash(b"b"): vh(b"2")})
    old_root, old_db = b.root, dict(b.db)
    b.apply({k: vh(b"3")})
    assert old_root is not None and b.root is not None and old_root.hash != b.root.hash
    old = StateTree(old_db.get, keys=keys_of(old_db))
    assert verify(old_root.hash, k, vh(b"1"), old.prove(old_root, k))
    assert verify(b.root.hash, k, vh(b"3"), b.tree.prove(b.root, k))
    with pytest.raises(TreeError):  # the live store no longer holds the old tree
        StateTree(b.db.get, keys=keys_of(b.db)).prove(old_root, k)


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
    for batch in batches:
        changes = {key_hash(str(k).encode()): (None if v is None else vh(v)) for k, v in batch}
        up = b.apply(changes)
        for k, v in changes.items():
            if v is None:
                state.pop(k, None)
            else:
                state[k] = v
        assert up.root_hash == fresh_root(state)
        assert not set(up.deleted) & set(up.puts)
        # the store holds the live tree and nothing else: the keys a fresh build writes
        assert set(b.db) == set(fresh(state).db)
    root = b.root.hash if b.root else EMPTY_ROOT
    for k in range(41):
        kh = key_hash(str(k).encode())
        p = b.tree.prove(b.root, kh)
        assert verify(root, kh, state.get(kh), p)


def test_the_latest_tree_is_whole_in_the_store() -> None:
    b = Backend()
    keys = [key_hash(str(i).encode()) for i in range(200)]
    b.apply({k: vh(b"0") for k in keys})
    for r in range(1, 5):
        b.apply({k: vh(bytes([r])) for k in keys[r * 10 : r * 10 + 30]})
        b.apply({k: None for k in keys[r * 7 : r * 7 + 3]})
        b.apply({k: vh(b"back") for k in keys[r * 7 : r * 7 + 3]})
    b.tree = StateTree(b.db.get, keys=keys_of(b.db))  # no cache: every node from the store
    assert b.root is not None
    root = b.root.hash
    for k in keys:
        assert b.tree.get(b.root, k) is not None
        assert verify(root, k, b.tree.get(b.root, k), b.tree.prove(b.root, k))


# -- the optimized update against a straightforward reference ----------------------


def reference_update(
    db: dict[bytes, bytes],
    root: NodeRef | None,
    changes: dict[bytes, bytes | None],
    version: int,
) -> Update:
    """The same update, written plainly: decode every node, split key sets per nibble.

    Same contract as `StateTree.update`: a node a change reaches is rewritten (at
    its position, child versions `version`); a leaf that only moves (split below
    a new internal node, or moved up when its siblings go) keeps its stored key
    (its key hash); what no longer has a node is deleted.
    """
    get = db.get
    puts: dict[bytes, bytes] = {}
    stale: list[bytes] = []

    def new_leaf(k: bytes, v: bytes) -> NodeRef:
        h = leaf_hash(k, v)
        puts[leaf_key(k)] = k + v
        return NodeRef(h, version, True)

    def find_leaf(depth: int, near: bytes, ref: NodeRef) -> bytes:
        """The stored leaf of hash ref.hash among the keys sharing near's first nibbles."""
        for key, raw in db.items():
            if not key.startswith(leaf_key(b"")) or leaf_hash(raw[:32], raw[32:]) != ref.hash:
                continue
            if all(nibble(raw, d) == nibble(near, d) for d in range(depth)):
                return raw
        raise AssertionError("leaf not stored")

    def write(depth: int, khash: bytes, children: list[NodeRef | None]) -> NodeRef:
        present = [(n, c) for n, c in enumerate(children) if c is not None]
        bitmap = sum(1 << n for n, _ in present)
        leafmask = sum(1 << n for n, c in present if c.is_leaf)
        raw = struct.pack(">HH", bitmap, leafmask) + b"".join(c.hash for _, c in present)
        raw += b"".join(struct.pack(">Q", c.version) for _, c in present)
        puts[internal_key(depth, khash)] = raw
        return NodeRef(internal_hash(bitmap, [c.hash for _, c in present]), version, False)

    def build(depth: int, leaves: list[tuple[bytes, NodeRef]]) -> NodeRef | None:
        if not leaves:
            return None
        if len(leaves) == 1:
            return leaves[0][1]
        children: list[NodeRef | None] = [None] * 16
        for n in range(16):
            children[n] = build(depth + 1, [e for e in leaves if nibble(e[0], depth) == n])
        return write(depth, leaves[0][0], children)

    def decode(depth: int, khash: bytes, ref: NodeRef) -> list[NodeRef | None]:
        raw = get(internal_key(depth, khash))
        assert raw is not None
        bitmap, leafmask = struct.unpack_from(">HH", raw)
        k = bin(bitmap).count("1")
        children: list[NodeRef | None] = [None] * 16
        j = 0
        for n in range(16):
            if bitmap >> n & 1:
                h = raw[4 + 32 * j : 36 + 32 * j]
                (v,) = struct.unpack_from(">Q", raw, 4 + 32 * k + 8 * j)
                children[n] = NodeRef(h, v, bool(leafmask >> n & 1))
                j += 1
        return children

    def upd(ref: NodeRef | None, depth: int, items: dict[bytes, bytes | None]) -> NodeRef | None:
        if ref is None:
            return build(depth, [(k, new_leaf(k, v)) for k, v in sorted(items.items()) if v])
        if ref.is_leaf:
            raw = find_leaf(depth, next(iter(items)), ref)
            lk, lv = raw[:32], raw[32:]
            if all(k == lk and v == lv for k, v in items.items() if k == lk or v is not None):
                return ref  # only the leaf's own value again, or deletes of absent keys
            leaves = {lk: ref}
            if lk in items and items[lk] != lv:
                stale.append(leaf_key(lk))
                del leaves[lk]
            for k, v in items.items():
                if v is not None and not (k == lk and v == lv):
                    leaves[k] = new_leaf(k, v)
            return build(depth, sorted(leaves.items()))
        khash = next(iter(items))
        children = decode(depth, khash, ref)
        new = list(children)
        for n in range(16):
            group = {k: v for k, v in items.items() if nibble(k, depth) == n}
            if group:
                new[n] = upd(children[n], depth + 1, group)
        if new == children:
            return ref
        stale.append(internal_key(depth, khash))
        present = [c for c in new if c is not None]
        if not present:
            return None
        if len(present) == 1 and present[0].is_leaf:
            return present[0]
        return write(depth, khash, new)

    new_root = upd(root, 0, dict(changes)) if changes else root
    return Update(new_root, puts, [k for k in dict.fromkeys(stale) if k not in puts])


def test_roots_are_those_of_existing_chains() -> None:
    """Roots pinned from the first implementation: hashes must never change (old chains)."""
    golden = [
        "c088cd705979b7d097b45be945bdbd76eab9b5c55a082db4760991a15fe7048b",
        "1b8f314a451f5cf30b3d15826b4a459bbd96c6d777f2adee36b39e2d62d827d7",
        "303246db9f0d2a56040102d0bd819174626d79e51ec2dbf231e6f844564acbff",
    ]
    batches: list[dict[bytes, bytes | None]] = [
        {key_hash(str(i).encode()): vh(str(i).encode()) for i in range(300)},
        {
            key_hash(str(i).encode()): None if i % 3 == 0 else vh(b"x%d" % i)
            for i in range(0, 400, 7)
        },
        {key_hash(str(i).encode()): None for i in range(300)},
    ]
    for update in (StateTree.update, None):
        db: dict[bytes, bytes] = {}
        tree = StateTree(db.get, keys=keys_of(db))
        root = None
        for version, (changes, want) in enumerate(zip(batches, golden, strict=True), 1):
            if update is None:
                up = reference_update(db, root, changes, version)
            else:
                up = update(tree, root, changes, version)
            assert up.root_hash.hex() == want
            write(db, up)
            root = up.root


def deep_key(rng: random.Random) -> bytes:
    """A key sharing a long prefix with others: exercises chains of one-child nodes."""
    return bytes([rng.choice((0x00, 0x01, 0x10))]) + bytes(30) + bytes([rng.randrange(4)])


def key_pool(rng: random.Random, size: int) -> list[bytes]:
    pool = {key_hash(b"%d" % rng.randrange(10**9)) for _ in range(size)}
    pool |= {deep_key(rng) for _ in range(size // 4)}
    return sorted(pool)


def check_against_reference(
    rng: random.Random, pool: list[bytes], batches: int, batch_max: int, cache_nodes_max: int
) -> None:
    db: dict[bytes, bytes] = {}
    tree = StateTree(db.get, cache_nodes_max=cache_nodes_max, keys=keys_of(db))
    root: NodeRef | None = None
    state: dict[bytes, bytes] = {}
    for version in range(1, batches + 1):
        changes: dict[bytes, bytes | None] = {}
        kind = rng.random()
        if kind < 0.1 and state:  # delete everything: the tree becomes empty
            changes = dict.fromkeys(state)
        else:
            for _ in range(rng.randrange(1, batch_max + 1)):
                k = rng.choice(pool)
                r = rng.random()
                if r < 0.3:
                    changes[k] = None  # delete (present or absent)
                elif r < 0.4 and k in state:
                    changes[k] = state[k]  # same value again
                else:
                    changes[k] = vh(b"%d" % rng.randrange(10**9))
        want = reference_update(db, root, changes, version)
        got = tree.update(root, changes, version)
        assert got.root == want.root
        assert got.puts == want.puts
        assert sorted(got.deleted) == sorted(want.deleted)
        assert len(set(got.deleted)) == len(got.deleted)
        write(db, got)
        if rng.random() < 0.8:
            tree.committed(got)
        else:  # not committed: the cache may hold nodes this update replaced
            tree = StateTree(db.get, cache_nodes_max=cache_nodes_max, keys=keys_of(db))
        root = got.root
        for k, v in changes.items():
            if v is None:
                state.pop(k, None)
            else:
                state[k] = v
        assert got.root_hash == fresh_root(state)
        assert set(db) == set(fresh(state).db)
    root_hash = EMPTY_ROOT if root is None else root.hash
    for k in [*pool[:50], key_hash(b"absent")]:
        assert verify(root_hash, k, state.get(k), tree.prove(root, k))


def test_update_matches_reference_small_batches_tiny_cache() -> None:
    for seed in range(40):
        rng = random.Random(seed)
        check_against_reference(rng, key_pool(rng, 12), 8, 6, cache_nodes_max=3)


def test_update_matches_reference_single_key_trees() -> None:
    for seed in range(30):
        rng = random.Random(1000 + seed)
        check_against_reference(rng, key_pool(rng, 2), 10, 2, cache_nodes_max=50)


def test_update_matches_reference_large_batches() -> None:
    rng = random.Random(2024)
    check_against_reference(rng, key_pool(rng, 3000), 6, 1500, cache_nodes_max=300)


# batches of changes to 61 keys of a pool (None deletes), for the property tests
BATCHES = st.lists(
    st.dictionaries(st.integers(0, 60), st.one_of(st.none(), st.binary(max_size=2)), min_size=1),
    min_size=1,
    max_size=6,
)


@settings(max_examples=80, deadline=None)
@given(BATCHES)
def test_update_matches_reference_hypothesis(batches: list[dict[int, bytes | None]]) -> None:
    pool = key_pool(random.Random(5), 40)
    db: dict[bytes, bytes] = {}
    tree = StateTree(db.get, cache_nodes_max=8, keys=keys_of(db))
    root: NodeRef | None = None
    for version, batch in enumerate(batches, 1):
        changes = {pool[i % len(pool)]: None if v is None else vh(v) for i, v in batch.items()}
        want = reference_update(db, root, changes, version)
        got = tree.update(root, changes, version)
        assert (got.root, got.puts, sorted(got.deleted)) == (
            want.root,
            want.puts,
            sorted(want.deleted),
        )
        write(db, got)
        tree.committed(got)
        root = got.root


def test_update_refuses_hashes_of_the_wrong_size() -> None:
    b = Backend()
    with pytest.raises(ValueError, match="key hashes"):
        b.apply({b"short": vh(b"v")})
    with pytest.raises(ValueError, match="value hashes"):
        b.apply({key_hash(b"k"): b"short"})
    assert b.root is None and not b.db


def test_cache_is_bounded_and_holds_the_stored_nodes() -> None:
    db: dict[bytes, bytes] = {}
    tree = StateTree(db.get, cache_nodes_max=40, keys=keys_of(db))
    root: NodeRef | None = None
    rng = random.Random(3)
    for version in range(1, 30):
        changes: dict[bytes, bytes | None] = {
            key_hash(b"%d" % rng.randrange(500)): vh(b"%d" % version) for _ in range(20)
        }
        changes.update(dict.fromkeys(key_hash(b"%d" % rng.randrange(500)) for _ in range(5)))
        up = tree.update(root, changes, version)
        write(db, up)
        tree.committed(up)
        root = up.root
        cached = tree.cached_nodes()
        assert len(cached) <= 40
        assert not set(up.deleted) & set(cached)  # a deleted node leaves its slot
        assert all(db[k] == raw for k, raw in cached.items())  # a replaced one is overwritten


# -- the tree's top recomputed from the rest (node/app.py after an unclean stop) ----------


def list_keys_of(db: dict[bytes, bytes]) -> Callable[[bytes, bytes, int], list[bytes]]:
    """The store's `meta_keys` over a dict that no longer changes."""
    ordered = sorted(db)

    def list_keys(lo: bytes, hi: bytes, limit: int) -> list[bytes]:
        i = bisect.bisect_left(ordered, lo)
        return ordered[i : min(bisect.bisect_left(ordered, hi), i + limit)]

    return list_keys


def without_versions(raw: bytes) -> bytes:
    """An internal node's stored bytes without its child versions (read by nothing)."""
    return raw[: 4 + 32 * (raw[0] << 8 | raw[1]).bit_count()]


def check_top(db: dict[bytes, bytes], root: NodeRef | None) -> None:
    top = {k: v for k, v in db.items() if is_top(k)}
    rest = {k: v for k, v in db.items() if not is_top(k)}
    nodes, got = top_levels(rest.get, list_keys_of(rest), 7)
    assert {k: without_versions(v) for k, v in nodes.items()} == {
        k: without_versions(v) for k, v in top.items()
    }
    assert all(v.endswith(struct.pack(">Q", 7)) for v in nodes.values())
    if root is None:
        assert got is None
    else:
        assert got is not None and (got.hash, got.is_leaf) == (root.hash, root.is_leaf)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 17, 300, 5_000])
def test_top_levels_are_recomputed_from_the_rest_of_the_store(size: int) -> None:
    rng = random.Random(size)
    b = Backend()
    keys = key_pool(rng, size)[:size] if size else []
    if keys:
        b.apply({k: vh(k) for k in keys})
    check_top(b.db, b.root)
    # after updates that move leaves up and down across the top's depths
    for r in range(3):
        gone = rng.sample(keys, len(keys) // 3)
        b.apply(dict.fromkeys(gone))
        check_top(b.db, b.root)
        b.apply({k: vh(b"%d" % r + k) for k in gone[: len(gone) // 2]})
        check_top(b.db, b.root)


def test_top_levels_where_every_prefix_holds_a_node() -> None:
    """Each 4-nibble prefix under nibble 0 holds a node (as all do with a million records),
    each of the others one leaf or none."""
    b = Backend()
    keys = [
        (p << 240 | i).to_bytes(32, "big") for p in range(16 ** (TOP_DEPTHS - 1)) for i in (1, 2)
    ]
    keys += [
        (p << 240).to_bytes(32, "big") for p in range(16 ** (TOP_DEPTHS - 1), 16**TOP_DEPTHS, 3)
    ]
    b.apply({k: vh(k) for k in keys})
    check_top(b.db, b.root)


def test_top_levels_refuse_a_corrupt_store() -> None:
    b = Backend()
    keys = [bytes([0xAB, 0xCD]) + bytes([i]) * 30 for i in (1, 2)] + [key_hash(b"x")]
    b.apply({k: vh(k) for k in keys})
    rest = {k: v for k, v in b.db.items() if not is_top(k)}
    # the depth-4 node over the two keys sharing 0xABCD is lost: two leaves, one prefix
    lost = {k: v for k, v in rest.items() if not k.startswith(b"smt/n/\x04")}
    with pytest.raises(TreeError, match="share a 4-nibble prefix"):
        top_levels(lost.get, list_keys_of(lost), 1)
    bad = dict(rest)
    bad[next(k for k in rest if k.startswith(b"smt/n/\x04"))] = b"\x00"
    with pytest.raises(TreeError, match="malformed"):
        top_levels(bad.get, list_keys_of(bad), 1)
    leaf = next(k for k in rest if k.startswith(b"smt/k/"))
    bad = dict(rest)
    bad[leaf] = bytes(64)
    with pytest.raises(TreeError, match="holds another key"):
        top_levels(bad.get, list_keys_of(bad), 1)


# -- leaves by name: written when a key is created and deleted only ------------------------


class NamedBackend:
    """A tree whose leaves store names (as node/app.py stores state keys), next to the
    "records": name -> the value hash a leaf of it has now."""

    def __init__(self, cache_nodes_max: int = 8) -> None:
        self.db: dict[bytes, bytes] = {}
        self.records: dict[bytes, bytes] = {}
        self.name_of: dict[bytes, bytes] = {}
        self.tree = StateTree(
            self.db.get, cache_nodes_max=cache_nodes_max, keys=keys_of(self.db), leaf=self.leaf
        )

    def leaf(self, key: bytes) -> bytes | None:
        name = self.db.get(key)
        if name is None:
            return None
        if self.name_of.get(key[6:]) != name:
            raise TreeError("state tree leaf holds another key")
        return key[6:] + self.records[name]


@settings(max_examples=80, deadline=None)
@given(BATCHES)
def test_leaves_by_name_give_the_same_tree_and_are_written_at_creation_only(
    batches: list[dict[int, bytes | None]],
) -> None:
    pool = key_pool(random.Random(5), 40)
    plain = Backend(cache_nodes_max=8)
    named = NamedBackend()
    for k in pool:
        named.name_of[k] = b"name of " + k
    root: NodeRef | None = None
    for version, batch in enumerate(batches, 1):
        changes = {pool[i % len(pool)]: None if v is None else vh(v) for i, v in batch.items()}
        before = {k: v for k, v in named.records.items()}
        want = plain.apply(changes)
        names = {k: named.name_of[k] for k, v in changes.items() if v is not None}
        got = named.tree.update(root, changes, version, names=names)
        assert got.root == want.root
        leaves = {k[6:]: v for k, v in got.puts.items() if k.startswith(b"smt/k/")}
        created = {
            k for k, v in changes.items() if v is not None and named.name_of[k] not in before
        }
        assert leaves == {k: named.name_of[k] for k in created}
        gone = {k for k, v in changes.items() if v is None and named.name_of[k] in before}
        assert {k[6:] for k in got.deleted if k.startswith(b"smt/k/")} == gone
        assert {k: v for k, v in got.puts.items() if not k.startswith(b"smt/k/")} == {
            k: v for k, v in want.puts.items() if not k.startswith(b"smt/k/")
        }
        write(named.db, got)
        named.tree.committed(got)
        for k, v in changes.items():  # the records, written with the tree
            if v is None:
                named.records.pop(named.name_of[k], None)
            else:
                named.records[named.name_of[k]] = v
        root = got.root
        assert set(named.db) == set(plain.db)
        rhash = EMPTY_ROOT if root is None else root.hash
        for k in pool[:10]:
            v = named.records.get(named.name_of[k])
            assert verify(rhash, k, v, named.tree.prove(root, k))
        top = {k: v for k, v in named.db.items() if is_top(k)}
        rest = {k: v for k, v in named.db.items() if not is_top(k)}
        nodes, got_root = top_levels(rest.get, list_keys_of(rest), 7, named.leaf)
        assert {k: without_versions(v) for k, v in nodes.items()} == {
            k: without_versions(v) for k, v in top.items()
        }
        assert (None if got_root is None else got_root.hash) == (
            None if root is None else root.hash
        )


def test_a_tree_with_leaves_by_name_needs_the_names_and_checks_its_leaves() -> None:
    named = NamedBackend()
    keys = [key_hash(b"%d" % i) for i in range(50)]
    for k in keys:
        named.name_of[k] = b"n" + k
    with pytest.raises(ValueError, match="every key's name"):
        named.tree.update(None, {keys[0]: vh(b"v")}, 1)
    up = named.tree.update(None, {k: vh(k) for k in keys}, 1, names=named.name_of)
    write(named.db, up)
    named.tree.committed(up)
    named.records.update({b"n" + k: vh(k) for k in keys})
    # an update reads no record: new values, a new key splitting a slot, a delete, and the
    # same value again (compared by its leaf hash)
    reads: list[bytes] = []
    leaf = named.leaf
    named.leaf = lambda key: reads.append(key) or leaf(key)  # type: ignore[method-assign]
    named.tree._leaf_get = named.leaf
    new_keys = [key_hash(b"new %d" % i) for i in range(20)]
    named.name_of.update({k: b"n" + k for k in new_keys})
    changes: dict[bytes, bytes | None] = {keys[1]: vh(b"new"), keys[5]: None, keys[6]: vh(keys[6])}
    changes.update({k: vh(k) for k in new_keys})
    up2 = named.tree.update(up.root, changes, 2, names=named.name_of)
    assert reads == []
    assert {k[6:] for k in up2.puts if k.startswith(b"smt/k/")} == set(new_keys)
    assert [k[6:] for k in up2.deleted if k.startswith(b"smt/k/")] == [keys[5]]
    plain = Backend()
    plain.apply({k: vh(k) for k in keys})
    assert plain.apply(changes).root == up2.root
    # a leaf whose record changed behind the tree's back no longer hashes to what its
    # parent says: a proof refuses it as missing
    named.records[b"n" + keys[2]] = vh(b"changed")
    with pytest.raises(TreeError, match="missing"):
        named.tree.prove(up.root, keys[2])
    assert reads
    named.db[b"smt/k/" + keys[3]] = b"n" + keys[4]
    with pytest.raises(TreeError, match="holds another key"):
        named.tree.prove(up.root, keys[3])


def test_an_update_by_name_refuses_a_slot_without_its_one_leaf() -> None:
    """An update finds another key's leaf by listing the slot's prefix: none there, or
    two, is a corrupt store, not a tree built on a guess."""
    named = NamedBackend()
    a, b = bytes([0x12]) + bytes(31), bytes([0x34]) + bytes(31)  # two leaves under the root
    named.name_of.update({a: b"a", b: b"b"})
    up = named.tree.update(None, {a: vh(b"1"), b: vh(b"2")}, 1, names=named.name_of)
    write(named.db, up)
    named.records.update({b"a": vh(b"1"), b"b": vh(b"2")})
    new = bytes([0x12, 0x80]) + bytes(30)  # splits a's slot
    named.name_of[new] = b"new"
    lost = dict(named.db)
    del lost[b"smt/k/" + a]
    tree = StateTree(lost.get, keys=keys_of(lost), leaf=named.leaf)
    with pytest.raises(TreeError, match="holds 0 leaves"):
        tree.update(up.root, {new: vh(b"3")}, 2, names=named.name_of)
    extra = dict(named.db)
    extra[b"smt/k/" + bytes([0x12, 0x40]) + bytes(30)] = b"stray"
    tree = StateTree(extra.get, keys=keys_of(extra), leaf=named.leaf)
    with pytest.raises(TreeError, match="holds 2 leaves"):
        tree.update(up.root, {new: vh(b"3")}, 2, names=named.name_of)
    got = named.tree.update(up.root, {new: vh(b"3")}, 2, names=named.name_of)
    plain = Backend()
    plain.apply({a: vh(b"1"), b: vh(b"2")})
    assert plain.apply({new: vh(b"3")}).root == got.root
