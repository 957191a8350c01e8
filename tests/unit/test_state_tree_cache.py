"""The state tree's node cache: one slot per position of depths 0-3, shared slots for depth 4.

The cache only saves reads: an update must come out the same, byte for byte,
whatever the cache holds (warm, cold after a restart, filled by proofs of old
roots, or holding nodes of updates that were never committed), and a node the
cache does not hold is read from the store, so a missing or corrupt one is a
TreeError. Nodes are stored by position and overwritten in place, so a cached
node is the one stored now (`committed` replaces it with its successor).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

import pytest

from storage.state_tree import (
    CACHE_DEPTH_MAX,
    INTERNAL_PREFIX,
    LEAF_PREFIX,
    NodeRef,
    StateTree,
    TreeError,
    Update,
    internal_key,
    key_hash,
)

UPPER = 1 + 16 + 256 + 4096  # positions of depths 0-3


def vh(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def random_changes(
    rng: random.Random, live: dict[bytes, bytes], fresh: int, updates: int, deletes: int
) -> dict[bytes, bytes | None]:
    changes: dict[bytes, bytes | None] = {}
    for _ in range(fresh):
        changes[key_hash(b"k%d" % rng.randrange(10**9))] = vh(b"%d" % rng.randrange(10**9))
    existing = sorted(live)
    for k in rng.sample(existing, min(updates, len(existing))):
        changes[k] = vh(b"%d" % rng.randrange(10**9))
    for k in rng.sample(existing, min(deletes, len(existing))):
        changes[k] = None
    return changes


def apply(live: dict[bytes, bytes], changes: dict[bytes, bytes | None]) -> None:
    for k, v in changes.items():
        if v is None:
            live.pop(k, None)
        else:
            live[k] = v


def same(a: Update, b: Update) -> bool:
    return (a.root, a.puts, sorted(a.deleted)) == (b.root, b.puts, sorted(b.deleted))


def keys_of(db: dict[bytes, bytes]) -> Callable[[bytes, bytes], list[bytes]]:
    return lambda lo, hi: sorted(k for k in db if lo <= k < hi)[:16]


def tree_over(db: dict[bytes, bytes], **kwargs: int) -> StateTree:
    return StateTree(db.get, keys=keys_of(db), **kwargs)


def write(db: dict[bytes, bytes], up: Update) -> None:
    for key in up.deleted:
        del db[key]
    db.update(up.puts)


def check_cache(tree: StateTree, db: dict[bytes, bytes], bound: int) -> None:
    cached = tree.cached_nodes()
    assert len(cached) <= bound
    for key, raw in cached.items():
        assert key.startswith(INTERNAL_PREFIX) and key[len(INTERNAL_PREFIX)] < CACHE_DEPTH_MAX
        assert db[key] == raw  # a cached node is exactly the stored one


@pytest.mark.parametrize("slots", [1, 7, UPPER + 40, 40_960])
def test_warm_cache_gives_the_same_updates_as_no_cache(slots: int) -> None:
    """Updates, deletes (down to the empty tree) and re-adds, warm tree against cold reads."""
    rng = random.Random(slots)
    db: dict[bytes, bytes] = {}
    warm = tree_over(db, cache_nodes_max=slots)
    root: NodeRef | None = None
    live: dict[bytes, bytes] = {}
    for version in range(1, 25):
        if version == 12:
            changes: dict[bytes, bytes | None] = dict.fromkeys(live)  # empty the tree
        else:
            fresh = 400 if version < 5 or 12 < version < 16 else 60
            changes = random_changes(rng, live, fresh, 60, 30)
        cold = tree_over(db, cache_nodes_max=1).update(root, changes, version)
        up = warm.update(root, changes, version)
        assert same(up, cold)
        write(db, up)
        warm.committed(up)
        root = up.root
        apply(live, changes)
        check_cache(warm, db, slots)
        if version == 12:
            assert root is None
    assert len(live) > 1000
    fresh = tree_over(db)
    for k in rng.sample(sorted(live), 50):
        assert warm.get(root, k) == live[k] == fresh.get(root, k)


def test_restart_rebuilds_nothing_and_agrees() -> None:
    """A tree made anew over the same store (a restart) starts cold and gives the same updates."""
    rng = random.Random(11)
    db: dict[bytes, bytes] = {}
    tree = tree_over(db)
    root: NodeRef | None = None
    live: dict[bytes, bytes] = {}
    for version in range(1, 8):
        changes = random_changes(rng, live, 800, 100, 20)
        up = tree.update(root, changes, version)
        write(db, up)
        tree.committed(up)
        root = up.root
        apply(live, changes)
    assert len(tree.cached_nodes()) > 1000
    restarted = tree_over(db)
    assert restarted.cached_nodes() == {}
    for version in range(8, 12):
        changes = random_changes(rng, live, 50, 100, 20)
        a = tree.update(root, changes, version)
        b = restarted.update(root, changes, version)
        assert same(a, b)
        write(db, a)
        tree.committed(a)
        restarted.committed(b)
        root = a.root
        apply(live, changes)
        check_cache(restarted, db, 40_960)


def test_uncommitted_update_never_enters_the_cache() -> None:
    """A block executed but not written, then another at the same height: no stale cache hit."""
    rng = random.Random(5)
    db: dict[bytes, bytes] = {}
    tree = tree_over(db, cache_nodes_max=UPPER + 100)
    live: dict[bytes, bytes] = {}
    changes = random_changes(rng, live, 1500, 0, 0)
    up = tree.update(None, changes, 1)
    write(db, up)
    tree.committed(up)
    apply(live, changes)
    root = up.root
    before = tree.cached_nodes()
    abandoned = tree.update(root, random_changes(rng, live, 30, 30, 5), 2)
    assert abandoned.nodes  # it would have cached nodes at version 2
    assert tree.cached_nodes() == before
    changes = random_changes(rng, live, 30, 30, 5)
    got = tree.update(root, changes, 2)
    assert same(got, tree_over(db, cache_nodes_max=1).update(root, changes, 2))


def test_proofs_of_old_roots_are_refused_and_leave_the_cache_alone() -> None:
    """The store holds the newest tree only: a proof of an older root read through it
    would mix trees. Every node read is checked against its parent's hash."""
    rng = random.Random(9)
    db: dict[bytes, bytes] = {}
    tree = tree_over(db)
    live: dict[bytes, bytes] = {}
    roots: list[NodeRef | None] = [None]
    for version in range(1, 6):
        changes = random_changes(rng, live, 600, 80, 10)
        up = tree.update(roots[-1], changes, version)
        write(db, up)
        tree.committed(up)
        roots.append(up.root)
        apply(live, changes)
    before = tree.cached_nodes()
    for k in rng.sample(sorted(live), 20):
        with pytest.raises(TreeError, match="not the one of root"):
            tree.prove(roots[1], k)
        assert tree.get(roots[-1], k) == live[k]
    assert tree.cached_nodes() == before
    check_cache(tree, db, 40_960)
    changes = random_changes(rng, live, 40, 40, 10)
    got = tree.update(roots[-1], changes, 6)
    assert same(got, tree_over(db, cache_nodes_max=1).update(roots[-1], changes, 6))


def test_slots_of_upper_levels_are_their_own() -> None:
    """With room for them, depths 0-3 have a slot each that depth 4 never takes."""
    tree = StateTree(lambda key: None, cache_nodes_max=UPPER + 10)
    seen = set()
    for first in range(256):
        for second in range(0, 256, 16):
            path = bytes((first, second))
            for depth in range(4):
                seen.add((depth, tree._slot(depth, path)))
            assert UPPER <= tree._slot(4, path) < UPPER + 10
    assert len({slot for _, slot in seen}) == len(seen) == UPPER


def build(count: int, slots: int = 40_960) -> tuple[dict[bytes, bytes], StateTree, NodeRef]:
    db: dict[bytes, bytes] = {}
    tree = tree_over(db, cache_nodes_max=slots)
    up = tree.update(None, {key_hash(b"%d" % i): vh(b"%d" % i) for i in range(count)}, 1)
    write(db, up)
    tree.committed(up)
    assert up.root is not None
    return db, tree, up.root


def test_pruned_or_corrupt_nodes_are_tree_errors() -> None:
    db, tree, root = build(5000)
    k = key_hash(b"17")
    deep = sorted(
        key for key in db if key.startswith(INTERNAL_PREFIX) and key[6] >= CACHE_DEPTH_MAX
    )
    assert deep  # 5,000 keys reach depth 5 somewhere
    leaf = next(key for key in db if key.startswith(LEAF_PREFIX) and db[key][:32] == k)
    saved = db.pop(leaf)
    with pytest.raises(TreeError, match="missing"):
        tree.update(root, {k: vh(b"new")}, 2)
    with pytest.raises(TreeError, match="missing"):
        tree.prove(root, k)
    db[leaf] = saved[:40]
    with pytest.raises(TreeError, match="malformed"):
        tree.update(root, {k: vh(b"new")}, 2)
    with pytest.raises(TreeError, match="malformed"):
        tree.prove(root, k)
    db[leaf] = saved
    cold = tree_over(db, cache_nodes_max=1)
    keys = [key_hash(b"%d" % i) for i in range(5000)]
    for key in deep[:20]:  # below the cached depths: always read
        below = next(kh for kh in keys if _on_path(key, kh))
        raw = db.pop(key)
        with pytest.raises(TreeError, match="missing"):
            tree.update(root, {below: vh(b"x")}, 2)
        with pytest.raises(TreeError, match="missing"):
            tree.prove(root, below)
        db[key] = raw[:-3]
        with pytest.raises(TreeError, match="malformed"):
            tree.update(root, {below: vh(b"x")}, 2)
        db[key] = raw
        assert tree.update(root, {below: vh(b"x")}, 2).root is not None
    top = internal_key(1, k)  # on k's path, cached
    raw = db.pop(top)  # cached: the update does not need the store
    assert tree.update(root, {k: vh(b"new")}, 2).root is not None
    with pytest.raises(TreeError, match="missing"):
        cold.update(root, {k: vh(b"new")}, 2)  # a restarted node reads it
    db[top] = raw


def test_cache_holds_the_live_nodes_after_many_blocks() -> None:
    """After enough blocks every upper slot holds the live node of its position."""
    db, tree, root = build(3000)
    rng = random.Random(2)
    for version in range(2, 12):
        changes = {key_hash(b"%d" % rng.randrange(3000)): vh(b"v%d" % version) for _ in range(200)}
        up = tree.update(root, changes, version)
        write(db, up)
        tree.committed(up)
        root = up.root
    live = set()
    stack: list[tuple[list[int], NodeRef]] = [([], root)]
    while stack:  # walk the latest tree: every internal node of depth < 3 must be cached
        path, ref = stack.pop()
        if ref.is_leaf or len(path) >= 3:
            continue
        nibbles = path + [0] * (64 - len(path))
        packed = bytes(nibbles[i] << 4 | nibbles[i + 1] for i in range(0, 64, 2))
        key = internal_key(len(path), packed)
        assert _hash_of(db[key]) == ref.hash
        live.add(key)
        stack.extend(([*path, n], c) for n, c in _children(db[key]))
    assert len(live) == 1 + 16 + 256
    assert live <= set(tree.cached_nodes())


def _hash_of(raw: bytes) -> bytes:
    k = (raw[0] << 8 | raw[1]).bit_count()
    return hashlib.sha256(b"\x01" + raw[:2] + raw[4 : 4 + 32 * k]).digest()


def _on_path(key: bytes, khash: bytes) -> bool:
    """Is the internal node stored under `key` on `khash`'s path?"""
    depth = key[len(INTERNAL_PREFIX)]
    return internal_key(depth, khash) == key


def _children(raw: bytes) -> list[tuple[int, NodeRef]]:
    bitmap, leafmask = raw[0] << 8 | raw[1], raw[2] << 8 | raw[3]
    k = bitmap.bit_count()
    out, j = [], 0
    for n in range(16):
        if bitmap >> n & 1:
            h = raw[4 + 32 * j : 36 + 32 * j]
            v = int.from_bytes(raw[4 + 32 * k + 8 * j : 12 + 32 * k + 8 * j], "big")
            out.append((n, NodeRef(h, v, bool(leafmask >> n & 1))))
            j += 1
    return out


def test_cache_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="cache_nodes_max"):
        StateTree(lambda key: None, cache_nodes_max=0)


def test_known_values_skip_leaf_reads_and_never_change_the_result() -> None:
    """`known` value hashes replace leaf reads when the leaf hash proves them; else a read."""
    db, tree, root = build(3000)
    reads: list[bytes] = []

    def counting_get(key: bytes) -> bytes | None:
        reads.append(key)
        return db.get(key)

    rng = random.Random(4)
    old = {key_hash(b"%d" % i): vh(b"%d" % i) for i in rng.sample(range(3000), 300)}
    fresh = {key_hash(b"new%d" % i): vh(b"n%d" % i) for i in range(100)}
    changes: dict[bytes, bytes | None] = {k: vh(b"u" + k) for k in old}
    changes.update(fresh)
    changes[next(iter(old))] = None  # a delete too
    plain = tree_over(db, cache_nodes_max=1).update(root, changes, 2)
    hinted = [
        old,  # right: no leaf read for the updates
        {k: vh(b"wrong" + k) for k in old},  # wrong: read, same result
        {**old, **{k: vh(b"x") for k in fresh}},  # entries for absent keys: ignored
    ]
    leaf_reads = []
    for known in hinted:
        reads.clear()
        got = StateTree(counting_get, cache_nodes_max=1, keys=keys_of(db)).update(
            root, changes, 2, known=known
        )
        assert same(got, plain)
        leaf_reads.append(sum(key.startswith(LEAF_PREFIX) for key in reads))
    # only the new keys' splits read: their own (absent) leaf, then the one they split
    assert leaf_reads[0] <= 2 * len(fresh) < 300 <= leaf_reads[1]
    assert leaf_reads[2] == leaf_reads[0]
    # a known value of another key's leaf (the one a new key splits) is no proof
    reads.clear()
    StateTree(counting_get, cache_nodes_max=1, keys=keys_of(db)).update(root, fresh, 2)
    split_leaves = {
        db[key][:32]: db[key][32:] for key in reads if key.startswith(LEAF_PREFIX) and key in db
    }
    assert split_leaves
    lying = {k: next(iter(split_leaves.values())) for k in fresh}
    got = tree_over(db, cache_nodes_max=1).update(root, fresh, 2, known=lying)
    assert same(got, tree_over(db, cache_nodes_max=1).update(root, fresh, 2))
    with pytest.raises(ValueError, match="known"):
        tree.update(root, changes, 2, known={next(iter(old)): "not bytes"})  # type: ignore[dict-item]
