"""A versioned 16-ary sparse Merkle tree over the application state (Jellyfish-style).

Keys are 256-bit: `key_hash = sha256(state key)`, read as 64 nibbles. A leaf
sits at the shortest nibble prefix that no other key shares (so a tree of n
keys is about log16(n) levels deep), and an internal node at every prefix two
or more keys share (so it has 2..16 children, or one that is itself an
internal node when all its keys share the next nibble too). A tree of one key
is that key's leaf; the empty tree has no node.

Hashes (prefixes keep leaves and internal nodes apart):

- leaf:     sha256(0x00 || key_hash || value_hash)
- internal: sha256(0x01 || bitmap (u16 BE, bit i = child i present) ||
  the present children's hashes, in nibble order)
- empty tree: `EMPTY_ROOT` = sha256(b"redwood/smt/empty/v1")

Storage: the newest tree only, each node under a key that does not change
when the node does, so an update overwrites in place:

- internal: ``smt/n/`` u8 depth, packed path nibbles (its position) ->
  bitmap u16, leafmask u16, child hashes 32*k, child versions u64*k (the
  height each child was last written: kept in the bytes, read by nothing)
- leaf:     ``smt/k/`` key hash -> key_hash, value_hash (a leaf that moves,
  when a new key splits its slot or its siblings go, keeps its key); or, in a
  tree made with a `leaf` callable, -> the caller's name for the key (node/app.py:
  the state key, whose record gives the value hash). Such a leaf is written
  when its key is created and deleted with it, never when its value changes: a
  block that updates existing keys writes no leaf at all. Leaves rewritten per
  value were ~2.8 us of LevelDB's compaction a transaction (bench/compaction.py,
  300,000 transactions), most of what the tree still cost it.

and ``smt/r/`` u64 height -> the root reference after that height (empty for
the empty tree). An update returns the node writes and the stored keys it
removes (`Update.deleted`: a position left empty, a deleted key's leaf); the
caller writes both in the block's batch. Nothing else is ever deleted, so
the store holds the live tree and nothing more. An older height's tree is
read from a LevelDB snapshot taken when it committed (node/app.py). The
caller may hold the tree's top (`is_top`: internal nodes of depths 0-3) in
memory and write it less often; `top_levels` recomputes it from the rest
of the tree when a stop lost it.

Until stop 25 nodes were stored per version (``smt/i/``, ``smt/l/``, with
lists of replaced nodes under ``smt/s/`` and ``smt/u/`` deleted hundreds of
heights later): a replaced version then lived on in LevelDB, and its
deletion too, so compactions carried ~25 times the live tree down the levels
(`bench/compaction.py`: LevelDB's background thread 29.3 us a transaction
over 900,000, 20.7 with this layout; live tree bytes 201 MB against 8 MB).
`LEGACY_PREFIXES` names those keys; node/app.py rebuilds a store written
that way once.

Pure: no I/O. Nodes are read through a `get(key) -> bytes | None` callable
(the store's meta reads), and, to find a leaf whose key is not the one
looked for (a new key splitting its slot, a proof of absence), a
`keys(lo, hi) -> list` callable listing stored keys in a range; leaves stored
by name through a `leaf(key) -> key hash + value hash | None` callable. Internal
nodes of depths 0-4 are cached, one slot per position (see `StateTree`),
replaced as updates are committed, so a cached node is the stored one.
Deeper nodes and leaves are read: per write into 1,000,000
records, ~0.7 leaves (the updated key's own, or the one a new key splits),
~0.45 depth-5 nodes and ~0.2 depth-4 nodes (the ones not cached). A caller
that knows the value hashes its keys hold may pass them (`update`'s `known`):
the leaf hash proves them, and the updates' leaf reads go.

Cost (bench/state_tree_bench.py): an update walks the block's sorted key hashes
by index ranges over the stored node bytes, with no decoding and no object per
child; below the top levels each key has its path to itself, spliced by
slicing, with its own leaf replaced in the same step. Most of what remains is
reading nodes (a LevelDB read costs several times the CPU of rewriting a
node) and the SHA-256 and byte joins of the ~3 nodes a write rewrites. See
that bench for the figures.
"""

from __future__ import annotations

import hashlib
import struct
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

NIBBLES = 64
EMPTY_ROOT = hashlib.sha256(b"redwood/smt/empty/v1").digest()
INTERNAL_PREFIX = b"smt/n/"  # same length as the legacy b"smt/i/": the cache reads key[6]
LEAF_PREFIX = b"smt/k/"
ROOT_PREFIX = b"smt/r/"
# the layout before stop 25 (module docstring): internal nodes and leaves per version,
# and the lists of replaced nodes
LEGACY_PREFIXES = (b"smt/i/", b"smt/l/", b"smt/s/", b"smt/u/")
NODE_CACHE_MAX = 57_344  # slots: depths 0-3 (4,369 nodes) and 52,975 of the 65,536 of depth 4
CACHE_DEPTH_MAX = 5  # the cache holds internal nodes of depths 0-4
_UPPER_POSITIONS = 1 + 16 + 256 + 4096  # positions at depths 0-3: a slot each
PROOF_LEVELS_MAX = NIBBLES
# internal nodes above this depth (0-3, at most 4,369) are the tree's top: node/app.py holds
# them in memory between writes and `top_levels` recomputes them after a stop that lost them
TOP_DEPTHS = 4

_sha256 = hashlib.sha256
_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")
_ROOT = struct.Struct(">BQ32s")


class TreeError(Exception):
    """A node the tree needs is missing or malformed (pruned version, corrupt store)."""


class NodeRef(NamedTuple):
    """A pointer to a stored node: its hash, the version it was written at, leaf or internal.

    A named tuple rather than a dataclass: decoding a node makes up to 16 of them,
    and tuples are several times cheaper to create.
    """

    hash: bytes
    version: int
    is_leaf: bool


@dataclass(frozen=True, slots=True)
class Update:
    """Result of `StateTree.update`: new root, node writes, stored keys it removes."""

    root: NodeRef | None
    puts: dict[bytes, bytes]
    deleted: list[bytes]
    # internal nodes written at the cached depths, flat: key, bytes, key, bytes, ...;
    # empty bytes for a replaced node that left no node at its position
    nodes: list[bytes] = field(default_factory=list, repr=False)

    @property
    def root_hash(self) -> bytes:
        return EMPTY_ROOT if self.root is None else self.root.hash


@dataclass(frozen=True, slots=True)
class Proof:
    """What proves a key's value (or absence) under a root.

    `levels`, from the root down, are (bitmap, sibling hashes) for each
    internal node on the key's path; the key's own child is left out of the
    hashes. `leaf` is the (key_hash, value_hash) found at the end of the path:
    the key itself (inclusion) or another key sharing the prefix (absence).
    With `leaf` None the path ends at an empty slot: the last level then lists
    *all* of that node's children, and the key's nibble is not in its bitmap.
    """

    levels: tuple[tuple[int, tuple[bytes, ...]], ...]
    leaf: tuple[bytes, bytes] | None

    def to_json(self) -> dict[str, object]:
        return {
            "levels": [[bm, [h.hex() for h in hs]] for bm, hs in self.levels],
            "leaf": None if self.leaf is None else [self.leaf[0].hex(), self.leaf[1].hex()],
        }

    @classmethod
    def from_json(cls, doc: object) -> Proof:
        """Parse a proof from JSON; ValueError on any malformed part."""
        if not isinstance(doc, dict) or set(doc) != {"levels", "leaf"}:
            raise ValueError("proof: expected an object with levels and leaf")
        levels_raw, leaf_raw = doc["levels"], doc["leaf"]
        if not isinstance(levels_raw, list) or len(levels_raw) > PROOF_LEVELS_MAX:
            raise ValueError("proof.levels: expected a list of at most 64 levels")
        levels = []
        for lv in levels_raw:
            if not isinstance(lv, list) or len(lv) != 2:
                raise ValueError("proof.levels: each level is [bitmap, [hashes]]")
            bm, hs = lv
            if type(bm) is not int or not 0 < bm < 1 << 16:
                raise ValueError("proof.levels: bitmap must be an integer in 1..65535")
            if not isinstance(hs, list) or len(hs) > 16:
                raise ValueError("proof.levels: at most 16 hashes per level")
            levels.append((bm, tuple(_hex32(h, "proof.levels hash") for h in hs)))
        leaf = None
        if leaf_raw is not None:
            if not isinstance(leaf_raw, list) or len(leaf_raw) != 2:
                raise ValueError("proof.leaf: expected [key_hash, value_hash] or null")
            leaf = (_hex32(leaf_raw[0], "proof.leaf"), _hex32(leaf_raw[1], "proof.leaf"))
        return cls(tuple(levels), leaf)

    def size_bytes(self) -> int:
        """Binary size: 2 bytes per bitmap, 32 per hash, 64 for the leaf."""
        return sum(2 + 32 * len(hs) for _, hs in self.levels) + (64 if self.leaf else 0)


def _hex32(value: object, where: str) -> bytes:
    if not isinstance(value, str) or len(value) != 64:
        raise ValueError(f"{where}: expected 64 hex characters")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"{where}: not hex") from None


# -- hashing and keys ------------------------------------------------------------


def key_hash(state_key: bytes) -> bytes:
    return _sha256(state_key).digest()


def leaf_hash(khash: bytes, vhash: bytes) -> bytes:
    return _sha256(b"\x00" + khash + vhash).digest()


def internal_hash(bitmap: int, child_hashes: Sequence[bytes]) -> bytes:
    return _sha256(b"\x01" + _U16.pack(bitmap) + b"".join(child_hashes)).digest()


def nibble(khash: bytes, depth: int) -> int:
    b = khash[depth >> 1]
    return (b >> 4) if not depth & 1 else (b & 0x0F)


def internal_key(depth: int, khash: bytes) -> bytes:
    """Storage key of the internal node at `depth` on `khash`'s path (its position)."""
    return _position(depth, khash)


def leaf_key(khash: bytes) -> bytes:
    """Storage key of the leaf of key hash `khash`."""
    return LEAF_PREFIX + khash


def root_key(height: int) -> bytes:
    return ROOT_PREFIX + _U64.pack(height)


def encode_root(ref: NodeRef | None) -> bytes:
    if ref is None:
        return b""
    return _ROOT.pack(1 if ref.is_leaf else 0, ref.version, ref.hash)


def decode_root(raw: bytes) -> NodeRef | None:
    if raw == b"":
        return None
    if len(raw) != _ROOT.size or raw[0] > 1:
        raise TreeError("malformed state tree root reference")
    kind, version, h = _ROOT.unpack(raw)
    return NodeRef(h, version, kind == 1)


# -- nodes -----------------------------------------------------------------------
#
# Inside an update, a child reference is a plain tuple (hash, version as 8 bytes
# big-endian, is_leaf): exactly the slices an internal node stores, so children
# are copied between nodes without decoding, and versions are never converted
# to int. Only the root becomes a `NodeRef`. An internal node stays in its
# stored bytes; `_Batch` reads children from them by offset.

_Ref = tuple[bytes, bytes, bool]
_GONE: Any = object()  # a subtree that the update emptied (None: unchanged)
_NOTHING: Mapping[bytes, bytes] = {}  # no known values
_POS_HEAD = [INTERNAL_PREFIX + bytes((d,)) for d in range(NIBBLES)]
_HIGH = [bytes((b & 0xF0,)) for b in range(256)]
_BYTE = [bytes((b,)) for b in range(256)]
_LEAF_END = LEAF_PREFIX[:-1] + bytes((LEAF_PREFIX[-1] + 1,))  # past every leaf key


def is_top(key: bytes) -> bool:
    """Is `key` the storage key of an internal node of the tree's top (depth < TOP_DEPTHS)?"""
    return key.startswith(INTERNAL_PREFIX) and len(key) > 6 and key[6] < TOP_DEPTHS


def top_levels(
    get: Callable[[bytes], bytes | None],
    list_keys: Callable[[bytes, bytes, int], list[bytes]],
    version: int,
    leaf: Callable[[bytes], bytes | None] | None = None,
) -> tuple[dict[bytes, bytes], NodeRef | None]:
    """The tree's top (internal nodes of depths 0-3) and root, recomputed from the rest.

    For a store whose top was not written since the rest of the tree was (node/app.py
    holds it in memory between writes, and a crash loses it): the children of the
    depth-3 nodes are the stored depth-4 nodes, listed by position, and the leaves of
    the 4-nibble prefixes that have no depth-4 node (one at most each, or the store is
    corrupt), listed by key hash in runs of such prefixes. Returns storage key -> stored
    bytes of every top node (child versions `version`), and the root reference; the
    caller compares the root with the one it stored. `list_keys(lo, hi, limit)`: the
    sorted stored keys in [lo, hi), at most `limit`; `leaf`: as `StateTree`'s, for
    leaves stored by name. TreeError for a corrupt store.
    About 0.3 s at 1,000,000 records (65,536 depth-4 nodes read and hashed).
    """
    width = 16**TOP_DEPTHS
    children: list[tuple[bytes, bool] | None] = [None] * width
    head = _POS_HEAD[TOP_DEPTHS]
    for key in list_keys(head, _POS_HEAD[TOP_DEPTHS + 1], width + 1):
        raw = get(key)
        if len(key) != len(head) + 2 or raw is None:
            raise TreeError(f"state tree node {key!r} is malformed (corrupt store)")
        raw = bytes(raw)
        _, _, vbase = _node_parts(raw)
        children[key[-2] << 8 | key[-1]] = (
            _sha256(b"\x01" + raw[:2] + raw[4:vbase]).digest(),
            False,
        )
    p = 0
    while p < width:
        if children[p] is not None:
            p += 1
            continue
        q = p + 1
        while q < width and children[q] is None:
            q += 1
        lo = LEAF_PREFIX + p.to_bytes(2, "big")
        hi = LEAF_PREFIX + q.to_bytes(2, "big") if q < width else _LEAF_END
        for key in list_keys(lo, hi, q - p + 1):
            raw = get(key) if leaf is None else leaf(key)
            if len(key) != len(LEAF_PREFIX) + 32 or raw is None or len(raw) != 64:
                raise TreeError(f"state tree leaf {key!r} is malformed (corrupt store)")
            raw = bytes(raw)
            if raw[:32] != key[6:]:
                raise TreeError(f"state tree leaf {key!r} holds another key (corrupt store)")
            at = key[6] << 8 | key[7]
            if children[at] is not None:
                raise TreeError(
                    "two state tree leaves share a 4-nibble prefix with no node over them "
                    "(corrupt store)"
                )
            children[at] = (_sha256(b"\x00" + raw).digest(), True)
        p = q
    ver8 = _U64.pack(version)
    nodes: dict[bytes, bytes] = {}
    level = children
    for depth in range(TOP_DEPTHS - 1, -1, -1):
        up: list[tuple[bytes, bool] | None] = [None] * 16**depth
        for q in range(16**depth):
            bitmap = leafmask = 0
            hashes: list[bytes] = []
            for n in range(16):
                c = level[16 * q + n]
                if c is not None:
                    bitmap |= 1 << n
                    if c[1]:
                        leafmask |= 1 << n
                    hashes.append(c[0])
            if not bitmap:
                continue
            if len(hashes) == 1 and leafmask:  # a lone leaf sits higher
                up[q] = (hashes[0], True)
                continue
            bm = _U16.pack(bitmap)
            hpart = b"".join(hashes)
            path = (q << (4 * (NIBBLES - depth))).to_bytes(32, "big")
            nodes[_position(depth, path)] = bm + _U16.pack(leafmask) + hpart + ver8 * len(hashes)
            up[q] = (_sha256(b"\x01" + bm + hpart).digest(), False)
        level = up
    top = level[0]
    return nodes, None if top is None else NodeRef(top[0], version, top[1])


def _position(depth: int, khash: bytes) -> bytes:
    """`internal_key` without the version: where the node sits, whatever its version."""
    if depth & 1:
        return _POS_HEAD[depth] + khash[: depth >> 1] + _HIGH[khash[depth >> 1]]
    return _POS_HEAD[depth] + khash[: depth >> 1]


def _node_parts(raw: bytes) -> tuple[int, int, int]:
    """(bitmap, leafmask, offset of the versions) of stored internal-node bytes."""
    if len(raw) < 4:
        raise TreeError("malformed state tree node")
    bitmap = raw[0] << 8 | raw[1]
    k = bitmap.bit_count()
    if len(raw) != 4 + 40 * k or not bitmap:
        raise TreeError("malformed state tree node")
    return bitmap, raw[2] << 8 | raw[3], 4 + 32 * k


class StateTree:
    """Reads and updates the tree; see the module docstring. Not thread-safe for updates.

    The cache holds internal nodes of depths 0-4 (`CACHE_DEPTH_MAX`) in
    `cache_nodes_max` slots, each the node's storage key followed by its stored
    bytes. A position has one slot: each of the 4,369 positions of depths 0-3
    its own, the 65,536 of depth 4 share the rest (position modulo their
    number). `committed` puts each node an update wrote in its position's
    slot, over the one it replaced, and empties the slot of a node that left
    no successor, so the cache holds the latest tree's top without any
    ordering or eviction work; a lookup is by the exact storage key, so a slot
    holding another position is a miss. Deeper nodes (too many to keep, each
    hit at random) and leaves are always read. A read fills only an empty
    slot. Only the newest tree may be read through a cache: proofs of an
    older height use a tree of their own over a snapshot (node/app.py).

    Memory: about 520 B a slot at 1,000,000 records (depth-4 nodes of ~10
    children), at most ~710 B (full nodes): 21-29 MB for the default 40,960.
    """

    def __init__(
        self,
        get: Callable[[bytes], bytes | None],
        *,
        cache_nodes_max: int = NODE_CACHE_MAX,
        keys: Callable[[bytes, bytes], list[bytes]] | None = None,
        leaf: Callable[[bytes], bytes | None] | None = None,
    ) -> None:
        if cache_nodes_max < 1:
            raise ValueError("state tree: cache_nodes_max must be at least 1")
        self._get = get
        self._keys = keys
        # leaves stored by name (see `update`'s `names`): `leaf` reads one as key hash +
        # value hash; else a leaf is stored as those 64 bytes and read with `get`
        self.by_name = leaf is not None
        self._leaf_get = get if leaf is None else leaf
        # slot i holds storage key + stored bytes of one internal node, or None
        self._slots: list[bytes | None] = [None] * cache_nodes_max
        self._d4_base = min(_UPPER_POSITIONS, cache_nodes_max - 1)
        self._d4_mod = cache_nodes_max - self._d4_base

    # -- node access --------------------------------------------------------------

    def _slot(self, depth: int, path: bytes) -> int:
        """The cache slot of the position at `depth` (< CACHE_DEPTH_MAX) on `path`'s nibbles.

        `path` is a key hash, or a storage key's bytes after its depth byte.
        """
        if depth == 4:
            return self._d4_base + (path[0] << 8 | path[1]) % self._d4_mod
        if depth == 0:
            number = 0
        elif depth == 1:
            number = 1 + (path[0] >> 4)
        elif depth == 2:
            number = 17 + path[0]
        else:
            number = 273 + (path[0] << 4 | path[1] >> 4)
        return number % len(self._slots)

    def _cached(self, key: bytes) -> bytes | None:
        """The cached bytes of the internal node stored under `key`, or None."""
        depth = key[len(INTERNAL_PREFIX)]
        if depth >= CACHE_DEPTH_MAX:
            return None
        e = self._slots[self._slot(depth, key[len(INTERNAL_PREFIX) + 1 :])]
        return e[len(key) :] if e is not None and e.startswith(key) else None

    def _read_internal(self, key: bytes) -> bytes:
        """Stored bytes of the internal node stored under `key`, read and checked for shape."""
        raw = self._get(key)
        if raw is None:
            raise TreeError(f"state tree node {key!r} is missing (pruned or corrupt store)")
        if type(raw) is not bytes:
            raw = bytes(raw)
        if (
            len(raw) < 4
            or len(raw) != 4 + 40 * (raw[0] << 8 | raw[1]).bit_count()
            or raw[:2] == b"\0\0"
        ):
            raise TreeError("malformed state tree node")
        return raw

    def _internal(self, key: bytes) -> bytes:
        """`_read_internal` through the cache; a node read fills an empty slot of its position."""
        raw = self._cached(key)
        if raw is not None:
            return raw
        raw = self._read_internal(key)
        depth = key[len(INTERNAL_PREFIX)]
        if depth < CACHE_DEPTH_MAX:
            i = self._slot(depth, key[len(INTERNAL_PREFIX) + 1 :])
            if self._slots[i] is None:
                self._slots[i] = key + raw
        return raw

    def _leaf(self, lhash: bytes, khash: bytes, depth: int) -> bytes:
        """The leaf `lhash` in the slot at `depth` on `khash`'s path: key hash + value hash.

        Leaves are stored by key hash: `khash`'s own first, else the one key stored
        under the slot's nibble prefix (a leaf sits at its shortest unique prefix)."""
        raw = self._stored_leaf(LEAF_PREFIX + khash, lhash)
        if raw is None and self._keys is not None:
            lo, hi = _prefix_range(khash, depth)
            for key in self._keys(LEAF_PREFIX + lo, LEAF_PREFIX + hi):
                raw = self._stored_leaf(key, lhash)
                if raw is not None:
                    break
        if raw is None:
            raise TreeError(f"state tree leaf {lhash.hex()} is missing (corrupt store)")
        return raw

    def _leaf_key(self, khash: bytes, depth: int) -> bytes:
        """Leaves by name: the key hash of the leaf in the slot at `depth` on `khash`'s path.

        An update needs no more: the slot's own key is replaced, compared by its leaf
        hash, and another key's leaf is split by its key hash alone. So an update
        reads no record (a proof does, `_leaf`); like the internal nodes an update
        reads, the leaf is then taken as stored, not checked against its hash."""
        if self._get(LEAF_PREFIX + khash) is not None:
            return khash  # the key's own leaf: the one on its path
        found: list[bytes] = []
        if self._keys is not None:
            lo, hi = _prefix_range(khash, depth)
            found = self._keys(LEAF_PREFIX + lo, LEAF_PREFIX + hi)
        if len(found) != 1 or len(found[0]) != len(LEAF_PREFIX) + 32:
            raise TreeError(
                f"state tree slot of {khash.hex()} at depth {depth} holds {len(found)} leaves "
                "(corrupt store)"
            )
        return bytes(found[0][len(LEAF_PREFIX) :])

    def _stored_leaf(self, key: bytes, lhash: bytes) -> bytes | None:
        """The leaf stored under `key` if it is the one of hash `lhash`."""
        raw = self._leaf_get(key)
        if raw is None:
            return None
        if len(raw) != 64 or raw[:32] != key[len(LEAF_PREFIX) :]:
            raise TreeError("malformed state tree leaf")
        raw = bytes(raw)
        return raw if _sha256(b"\x00" + raw).digest() == lhash else None

    def committed(self, update: Update) -> None:
        """Cache the internal nodes of an update that has been written (optional; speeds reads).

        Only an update that was written: a cached node is trusted as stored.
        Each node takes its position's slot, in place of the version it replaced.
        """
        slots = self._slots
        base, mod = self._d4_base, self._d4_mod
        nodes = iter(update.nodes)
        for key, raw in zip(nodes, nodes, strict=True):
            depth = key[6]  # after INTERNAL_PREFIX
            i = base + (key[7] << 8 | key[8]) % mod if depth == 4 else self._slot(depth, key[7:])
            if raw:
                slots[i] = key + raw
            elif (e := slots[i]) is not None and e.startswith(key):
                slots[i] = None  # the node left no successor at its position

    def cached_nodes(self) -> dict[bytes, bytes]:
        """The cached internal nodes, storage key -> stored bytes (for tests and inspection)."""
        out = {}
        for e in self._slots:
            if e is not None:
                depth = e[len(INTERNAL_PREFIX)]
                n = len(INTERNAL_PREFIX) + 1 + (depth + 1) // 2
                out[e[:n]] = e[n:]
        return out

    # -- reads ----------------------------------------------------------------------

    def get(self, root: NodeRef | None, khash: bytes) -> bytes | None:
        """The value hash of `khash` under `root`, or None."""
        proof = self.prove(root, khash)
        if proof.leaf is not None and proof.leaf[0] == khash:
            return proof.leaf[1]
        return None

    def prove(self, root: NodeRef | None, khash: bytes) -> Proof:
        """Proof of `khash`'s value or absence under `root`.

        Each node read must hash to what its parent (or `root`) says: TreeError when
        the store holds another tree than `root`'s (nodes are overwritten in place, so
        an older root is provable only from the store as it was then)."""
        if root is None:
            return Proof((), None)
        levels: list[tuple[int, tuple[bytes, ...]]] = []
        lhash, is_leaf = root.hash, root.is_leaf
        depth = 0
        while not is_leaf:
            if depth >= NIBBLES:
                raise TreeError("state tree path longer than 64 nibbles (corrupt store)")
            raw = self._internal(_position(depth, khash))
            bitmap, leafmask, vbase = _node_parts(raw)
            if _sha256(b"\x01" + raw[:2] + raw[4:vbase]).digest() != lhash:
                raise TreeError(f"the stored state tree is not the one of root {root.hash.hex()}")
            hashes = [raw[off : off + 32] for off in range(4, vbase, 32)]
            bit = 1 << nibble(khash, depth)
            if not bitmap & bit:  # empty slot: list every child
                levels.append((bitmap, tuple(hashes)))
                return Proof(tuple(levels), None)
            j = (bitmap & (bit - 1)).bit_count()
            lhash = hashes.pop(j)
            levels.append((bitmap, tuple(hashes)))
            is_leaf = bool(leafmask & bit)
            depth += 1
        raw = self._leaf(lhash, khash, depth)
        return Proof(tuple(levels), (raw[:32], raw[32:]))

    # -- updates ----------------------------------------------------------------------

    def update(
        self,
        root: NodeRef | None,
        changes: Mapping[bytes, bytes | None],
        version: int,
        *,
        known: Mapping[bytes, bytes] | None = None,
        names: Mapping[bytes, bytes] | None = None,
    ) -> Update:
        """Apply `changes` (key_hash -> value_hash, None deletes) as version `version`.

        `version` (the block height) goes into the written nodes' child versions.
        `known` (optional) maps key hashes to the value hashes the caller
        believes they hold under `root`: a key whose leaf hash in the tree is
        `leaf_hash(key, known value)` is known to be that leaf, which is then
        not read. A wrong or stale entry only costs the read (the leaf hash
        decides, so the result never depends on `known`).
        `names` (a tree made with `leaf`: required) maps each key hash that
        `changes` sets to what a new leaf of it stores (the caller's name for
        the key, from which its `leaf` callable finds the value hash). Such a
        tree writes a leaf only when its key is created, and deletes it with
        the key: a new value of a key it holds writes no leaf.
        ValueError if a key or value hash is not 32 bytes, or a name is missing.
        """
        if not changes:
            return Update(root, {}, [])
        keys = sorted(changes)
        vals = list(map(changes.__getitem__, keys))
        if min(map(len, keys)) != 32 or max(map(len, keys)) != 32:
            raise ValueError("state tree: key hashes must be 32 bytes")
        if any(v is not None and len(v) != 32 for v in vals):
            raise ValueError("state tree: value hashes must be 32 bytes (or None)")
        if known and set(map(type, known.values())) != {bytes}:
            raise ValueError("state tree: known value hashes must be bytes")
        if self.by_name and (
            names is None
            or any(v is not None and k not in names for k, v in zip(keys, vals, strict=True))
        ):
            raise ValueError("state tree: a tree with leaves by name needs every key's name")
        batch = _Batch(self, keys, vals, version, known or _NOTHING, names or _NOTHING)
        n = len(keys)
        kind = 0 if root is None else 1 if root.is_leaf else 2
        rhash, rver = (b"", b"") if root is None else (root.hash, _U64.pack(root.version))
        if n == 1:
            new = batch.one(0, rhash, rver, kind, 0)
        elif kind == 2:
            new = batch.node(_POS_HEAD[0], 0, rver, 0, n)
        elif kind == 1:
            new = batch.leaf_slot(rhash, rver, 0, 0, n)
        else:
            new = batch.empty_slot(0, 0, n)
        if new is None:
            new_root = root
        elif new is _GONE:
            new_root = None
        else:
            new_root = NodeRef(new[0], _U64.unpack(new[1])[0], new[2])
        puts = batch.puts
        # a replaced node is overwritten at its key, unless its position was left empty
        deleted = [key for key in dict.fromkeys(batch.stale) if key not in puts]
        return Update(new_root, puts, deleted, batch.nodes)


class _Batch:
    """One update: the sorted changed keys and their values, walked by index ranges.

    Each walk returns the slot's new child reference, None when the slot is
    unchanged, or `_GONE` when it became empty; it records the node writes in
    `puts`, the keys of the nodes it replaced in `stale` (most are
    overwritten by a put; `update` deletes the rest), and the internal nodes
    written at the cached depths in `nodes` (for `StateTree.committed`). A
    leaf that only moves (a new key splits its slot, or its siblings go and
    it moves up) is not rewritten: leaves are stored by key hash, not by
    position.

    Below the top levels most nodes lie on one changed key's path only: `down`
    follows such a path and, on the way back up, re-encodes each node by
    slicing its stored bytes around the one changed child (`patch` for the
    rarer changes of shape: a child added, removed or changing kind).
    """

    __slots__ = (
        "by_name", "d4_base", "d4_mod", "get", "keys", "known", "names", "nodes", "puts",
        "slots", "stale", "tree", "vals", "ver8",
    )  # fmt: skip

    def __init__(
        self,
        tree: StateTree,
        keys: list[bytes],
        vals: list[bytes | None],
        version: int,
        known: Mapping[bytes, bytes],
        names: Mapping[bytes, bytes],
    ) -> None:
        self.tree = tree
        self.known = known
        self.names = names
        self.by_name = tree.by_name
        self.slots = tree._slots
        self.d4_base = tree._d4_base
        self.d4_mod = tree._d4_mod
        self.get = tree._get
        self.keys = keys
        self.vals = vals
        self.ver8 = _U64.pack(version)
        self.puts: dict[bytes, bytes] = {}
        self.stale: list[bytes] = []
        self.nodes: list[bytes] = []

    def node(self, pos: bytes, depth: int, ver8: bytes, lo: int, hi: int) -> Any:
        """Apply keys[lo:hi] (two or more) under the internal node at `pos` (version `ver8`)."""
        key = pos
        e = self.slots[self.tree._slot(depth, self.keys[lo])] if depth < CACHE_DEPTH_MAX else None
        raw = e[len(key) :] if e and e.startswith(key) else self.tree._read_internal(key)
        bitmap = raw[0] << 8 | raw[1]
        leafmask = raw[2] << 8 | raw[3]
        vbase = 4 + 32 * bitmap.bit_count()
        keys, vals = self.keys, self.vals
        bi, odd = depth >> 1, depth & 1
        changes: list[tuple[int, Any]] = []
        reshaped = False  # a child added or removed
        i = lo
        while i < hi:
            k = keys[i]
            if odd:
                n, limit = k[bi] & 15, k[bi] + 1
            else:
                n, limit = k[bi] >> 4, (k[bi] | 15) + 1
            j = i + 1  # keys[i:j] share the nibble n
            if j < hi and keys[j][bi] < limit:
                j = _group_end(keys, j, hi, bi, limit)
            bit = 1 << n
            if bitmap & bit:
                o = 4 + 32 * (bitmap & (bit - 1)).bit_count()
                vo = vbase + ((o - 4) >> 2)
                if leafmask & bit:
                    if j - i == 1:
                        new = self.leaf_one(
                            raw[o : o + 32], raw[vo : vo + 8], depth + 1, k, vals[i]
                        )
                    else:
                        new = self.leaf_slot(raw[o : o + 32], raw[vo : vo + 8], depth + 1, i, j)
                elif j - i == 1:
                    new = self.down(depth + 1, raw[vo : vo + 8], k, i)
                else:
                    new = self.node(_position(depth + 1, k), depth + 1, raw[vo : vo + 8], i, j)
            elif j - i == 1:
                v = vals[i]
                new = None if v is None else self.new_leaf(k, v)
            else:
                new = self.empty_slot(depth + 1, i, j)
            if new is not None:
                changes.append((bit, new))
                if new is _GONE or not bitmap & bit:
                    reshaped = True
            i = j
        if not changes:
            return None
        self.stale.append(key)
        if len(changes) == 1:
            bit, new = changes[0]
            return self.patch(pos, depth, raw, bitmap, vbase, bit, new)
        return self.rewrite(pos, depth, raw, bitmap, leafmask, vbase, changes, reshaped)

    def one(self, depth: int, chash: bytes, cver: bytes, kind: int, t: int) -> Any:
        """Apply keys[t] alone to the slot at `depth` holding `kind` (0 empty, 1 leaf, 2 node)."""
        if kind == 2:
            return self.down(depth, cver, self.keys[t], t)
        v = self.vals[t]
        if kind == 1:
            return self.leaf_one(chash, cver, depth, self.keys[t], v)
        return None if v is None else self.new_leaf(self.keys[t], v)

    def down(self, depth: int, ver8: bytes, k: bytes, t: int) -> Any:
        """Apply key `k` (keys[t]) alone under the internal node at `depth` on its path.

        The hot path of an update (every key below the levels keys share): the
        common cases, a key's own leaf replaced and a child node rewritten, are
        spliced in here; changes of shape go through `patch`.
        """
        bi = depth >> 1
        b = k[bi]
        if depth & 1:
            pos = _POS_HEAD[depth] + k[:bi] + _HIGH[b]
            bit = 1 << (b & 15)
        else:
            pos = _POS_HEAD[depth] + k[:bi]
            bit = 1 << (b >> 4)
        key = pos
        if depth == 4:  # the cached depth below the levels keys share
            e = self.slots[self.d4_base + (k[0] << 8 | k[1]) % self.d4_mod]
        elif depth < 4:
            e = self.slots[self.tree._slot(depth, k)]
        else:
            e = None
        raw = e[len(key) :] if e and e.startswith(key) else self.tree._read_internal(key)
        bitmap = raw[0] << 8 | raw[1]
        vbase = 4 + 32 * bitmap.bit_count()
        below = (bitmap & (bit - 1)).bit_count()
        o = 4 + 32 * below
        vo = vbase + 8 * below
        if not bitmap & bit:  # an empty slot: a new leaf, unless a delete of an absent key
            v = self.vals[t]
            if v is None:
                return None
            self.stale.append(key)
            kv = k + v
            h = _sha256(b"\x00" + kv).digest()
            ver8 = self.ver8
            self.puts[LEAF_PREFIX + k] = self.names[k] if self.by_name else kv
            head = _U16.pack(bitmap | bit) + _U16.pack((raw[2] << 8 | raw[3]) | bit)
            hpart = raw[4:o] + h + raw[o:vbase]
            out = head + hpart + raw[vbase:vo] + ver8 + raw[vo:]
            self.puts[key] = out
            if depth < CACHE_DEPTH_MAX:
                self.nodes += (key, out)
            return _sha256(b"\x01" + head[:2] + hpart).digest(), ver8, False
        if (raw[2] << 8 | raw[3]) & bit:
            lhash, lver8 = raw[o : o + 32], raw[vo : vo + 8]
            lraw = self.slot_leaf(lhash, k, depth + 1)
            lkey = LEAF_PREFIX + lraw[:32]
            v = self.vals[t]
            if lraw.startswith(k):  # the key's own leaf
                if v is None:
                    self.stale.append(lkey)
                    new = _GONE
                elif len(lraw) == 64 and lraw.endswith(v):
                    return None  # the same value again
                else:  # the common case: the leaf replaced (by name: it stays as it is)
                    kv = k + v
                    h = _sha256(b"\x00" + kv).digest()
                    if h == lhash:
                        return None  # the same value again (its value hash not read)
                    if not self.by_name:
                        self.stale.append(lkey)
                        self.puts[lkey] = kv
                    new = h, self.ver8, True
            elif v is None:
                return None  # deleting an absent key
            else:  # another key's leaf: `k` splits the slot
                new = self.split(lhash, lver8, lraw[:32], depth + 1, k, v)
            same_kind = new is not _GONE and new[2]
        else:
            new = self.down(depth + 1, raw[vo : vo + 8], k, t)
            if new is None:
                return None
            same_kind = new is not _GONE and not new[2]
        self.stale.append(key)
        if not same_kind:
            return self.patch(pos, depth, raw, bitmap, vbase, bit, new)
        # the common case: splice the child's new hash and version into the stored bytes
        h, ver8 = new[0], self.ver8
        out = raw[:o] + h + raw[o + 32 : vo] + new[1] + raw[vo + 8 :]
        self.puts[key] = out
        if depth < CACHE_DEPTH_MAX:
            self.nodes += (key, out)
        return _sha256(b"\x01" + out[:2] + out[4:vbase]).digest(), ver8, False

    def patch(
        self, pos: bytes, depth: int, raw: bytes, bitmap: int, vbase: int, bit: int, new: Any
    ) -> Any:
        """The node at `pos` with one child (`bit`) replaced, added or removed (`_GONE`)."""
        leafmask = raw[2] << 8 | raw[3]
        idx = (bitmap & (bit - 1)).bit_count()
        o, vo = 4 + 32 * idx, vbase + 8 * idx
        if not bitmap & bit:  # a new child
            bitmap |= bit
            if new[2]:
                leafmask |= bit
            hpart = b"".join((raw[4:o], new[0], raw[o:vbase]))
            vpart = b"".join((raw[vbase:vo], new[1], raw[vo:]))
        elif new is _GONE:
            bitmap ^= bit
            leafmask &= ~bit
            if not bitmap:
                return self.vanish(depth, _GONE)
            if not bitmap & (bitmap - 1) and leafmask:  # a lone leaf is left: it moves up
                r = 0 if idx else 1
                h, v8 = raw[4 + 32 * r : 36 + 32 * r], raw[vbase + 8 * r : vbase + 8 * r + 8]
                return self.vanish(depth, (h, v8, True))
            hpart = raw[4:o] + raw[o + 32 : vbase]
            vpart = raw[vbase:vo] + raw[vo + 8 :]
        elif bitmap == bit and new[2]:  # its only child is now a leaf: it moves up
            return self.vanish(depth, new)
        elif new[2] == bool(leafmask & bit):  # same kind of child: splice in place
            out = b"".join((raw[:o], new[0], raw[o + 32 : vo], new[1], raw[vo + 8 :]))
            key = pos
            self.puts[key] = out
            if depth < CACHE_DEPTH_MAX:
                self.nodes += (key, out)
            pre = b"".join((b"\x01", raw[:2], raw[4:o], new[0], raw[o + 32 : vbase]))
            return _sha256(pre).digest(), self.ver8, False
        else:
            leafmask ^= bit
            hpart = b"".join((raw[4:o], new[0], raw[o + 32 : vbase]))
            vpart = b"".join((raw[vbase:vo], new[1], raw[vo + 8 :]))
        return self.put_node(pos, depth, bitmap, leafmask, hpart, vpart)

    def vanish(self, depth: int, result: Any) -> Any:
        """Note that the node just replaced (the last stale key) leaves no node at its position.

        `committed` then empties its cache slot: no new version takes it over.
        """
        if depth < CACHE_DEPTH_MAX:
            self.nodes += (self.stale[-1], b"")
        return result

    def put_node(
        self, pos: bytes, depth: int, bitmap: int, leafmask: int, hpart: bytes, vpart: bytes
    ) -> _Ref:
        """Store an internal node (its children's hashes and versions, each joined)."""
        bm = _U16.pack(bitmap)
        out = b"".join((bm, _U16.pack(leafmask), hpart, vpart))
        key = pos
        self.puts[key] = out
        if depth < CACHE_DEPTH_MAX:
            self.nodes += (key, out)
        return _sha256(b"".join((b"\x01", bm, hpart))).digest(), self.ver8, False

    def rewrite(
        self, pos: bytes, depth: int, raw: bytes, bitmap: int, leafmask: int, vbase: int,
        changes: list[tuple[int, Any]], reshaped: bool,
    ) -> Any:  # fmt: skip
        """The node at `pos` with `changes` (bit, new child or `_GONE`) applied."""
        if not reshaped:
            # same children present: overwrite the changed hashes and versions in a copy
            buf = bytearray(raw)
            for bit, c in changes:
                idx = (bitmap & (bit - 1)).bit_count()
                buf[4 + 32 * idx : 36 + 32 * idx] = c[0]
                buf[vbase + 8 * idx : vbase + 8 * idx + 8] = c[1]
                leafmask = leafmask | bit if c[2] else leafmask & ~bit
            _U16.pack_into(buf, 2, leafmask)
            out = bytes(buf)
            key = pos
            self.puts[key] = out
            if depth < CACHE_DEPTH_MAX:
                self.nodes += (key, out)
            return _sha256(b"\x01" + out[:2] + out[4:vbase]).digest(), self.ver8, False
        new_of = dict(changes)
        new_bm = bitmap
        for bit, c in changes:
            new_bm = new_bm & ~bit if c is _GONE else new_bm | bit
        hashes: list[bytes] = []
        versions: list[bytes] = []
        new_lm = 0
        rest = new_bm
        while rest:  # only the children present afterwards, in nibble order
            bit = rest & -rest
            rest ^= bit
            c = new_of.get(bit)
            if c is None:
                idx = (bitmap & (bit - 1)).bit_count()
                new_lm |= leafmask & bit
                hashes.append(raw[4 + 32 * idx : 36 + 32 * idx])
                versions.append(raw[vbase + 8 * idx : vbase + 8 * idx + 8])
            else:
                if c[2]:
                    new_lm |= bit
                hashes.append(c[0])
                versions.append(c[1])
        if not hashes:
            return self.vanish(depth, _GONE)
        if len(hashes) == 1 and new_lm:  # a lone leaf moves up
            return self.vanish(depth, (hashes[0], versions[0], True))
        return self.put_node(pos, depth, new_bm, new_lm, b"".join(hashes), b"".join(versions))

    def new_leaf(self, khash: bytes, vhash: bytes) -> _Ref:
        """The leaf of a key the tree does not hold."""
        kv = khash + vhash
        h = _sha256(b"\x00" + kv).digest()
        self.puts[LEAF_PREFIX + khash] = self.names[khash] if self.by_name else kv
        return h, self.ver8, True

    def new_value(self, khash: bytes, vhash: bytes) -> _Ref:
        """The leaf of a key the tree holds, with a new value (by name: not rewritten)."""
        if self.by_name:
            return _sha256(b"\x00" + khash + vhash).digest(), self.ver8, True
        return self.new_leaf(khash, vhash)

    def empty_slot(self, depth: int, lo: int, hi: int) -> Any:
        """Apply keys[lo:hi] (two or more) to an empty slot at `depth`."""
        keys, vals = self.keys, self.vals
        refs = [
            (keys[t], self.new_leaf(keys[t], v))
            for t in range(lo, hi)
            if (v := vals[t]) is not None
        ]
        if not refs:
            return None  # deletes of absent keys
        return refs[0][1] if len(refs) == 1 else self.build(depth, refs)

    def slot_leaf(self, lhash: bytes, k: bytes, depth: int) -> bytes:
        """The leaf (`lhash`) in the slot at `depth` on key `k`'s path, as far as an update
        needs it: key hash + value hash, or by name the key hash only (`_leaf_key`).

        `k`'s own leaf when `known` gives its value hash, without reading it."""
        ov = self.known.get(k)
        if ov is not None and _sha256(b"\x00" + k + ov).digest() == lhash:
            return k + ov
        if self.by_name:
            return self.tree._leaf_key(k, depth)
        return self.tree._leaf(lhash, k, depth)

    def leaf_one(self, lhash: bytes, lver8: bytes, depth: int, k: bytes, v: bytes | None) -> Any:
        """Apply key `k` alone to the slot at `depth` holding the leaf (`lhash`, `lver8`)."""
        raw = self.slot_leaf(lhash, k, depth)
        key = LEAF_PREFIX + raw[:32]
        if raw.startswith(k):
            if v is None:
                self.stale.append(key)
                return _GONE
            if len(raw) == 64 and raw[32:] == v:
                return None
            ref = self.new_value(k, v)
            return None if ref[0] == lhash else ref  # the same value again
        if v is None:
            return None  # deleting an absent key
        return self.split(lhash, lver8, raw[:32], depth, k, v)

    def split(
        self, lhash: bytes, lver8: bytes, lkey: bytes, depth: int, k: bytes, v: bytes
    ) -> _Ref:
        """The slot at `depth` holding another key's leaf (`lkey`), with key `k` added.

        `build` for two leaves: a node where their nibbles first differ, holding
        both (the other key's leaf moves down as it is), under a chain of
        one-child nodes up to `depth` when they share more nibbles.
        """
        h, ver8, _ = self.new_leaf(k, v)
        d = depth
        while True:
            if d >= NIBBLES:
                raise TreeError("two distinct keys share all 64 nibbles")
            a, b = lkey[d >> 1], k[d >> 1]
            if d & 1:
                a, b = a & 15, b & 15
            else:
                a, b = a >> 4, b >> 4
            if a != b:
                break
            d += 1
        hashes, versions = (lhash + h, lver8 + ver8) if a < b else (h + lhash, ver8 + lver8)
        ref = self.put_node(_position(d, k), d, 1 << a | 1 << b, 1 << a | 1 << b, hashes, versions)
        while d > depth:
            d -= 1
            bit = 1 << nibble(k, d)
            ref = self.put_node(_position(d, k), d, bit, 0, ref[0], ref[1])
        return ref

    def leaf_slot(self, lhash: bytes, lver8: bytes, depth: int, lo: int, hi: int) -> Any:
        """Apply keys[lo:hi] (two or more) to the slot at `depth` holding the leaf (`lhash`, `lver8`)."""
        if self.by_name:  # the key hash only: a value is compared by its leaf hash
            lkey, lval = self.tree._leaf_key(self.keys[lo], depth), None
        else:
            lraw = self.tree._leaf(lhash, self.keys[lo], depth)
            lkey, lval = lraw[:32], lraw[32:]
        keys, vals = self.keys, self.vals
        refs: list[tuple[bytes, _Ref]] = []
        kept = True  # the old leaf stays as it is
        placed = False
        for t in range(lo, hi):
            k, v = keys[t], vals[t]
            if not placed and k >= lkey:
                placed = True
                if k == lkey:
                    if lval is not None:
                        kept = v == lval
                        new = None if kept or v is None else self.new_value(k, v)
                    else:  # by name (no write): the same value has the same leaf hash
                        new = None if v is None else self.new_value(k, v)
                        kept = new is not None and new[0] == lhash
                    if not kept:
                        if new is not None:
                            refs.append((k, new))
                        else:
                            self.stale.append(LEAF_PREFIX + lkey)
                        continue
                refs.append((lkey, (lhash, lver8, True)))
                if k == lkey:
                    continue
            if v is not None:
                refs.append((k, self.new_leaf(k, v)))
        if not placed:
            refs.append((lkey, (lhash, lver8, True)))
        if kept and len(refs) == 1:
            return None
        if not refs:
            return _GONE
        return refs[0][1] if len(refs) == 1 else self.build(depth, refs)

    def build(self, depth: int, refs: list[tuple[bytes, _Ref]]) -> _Ref:
        """A new internal node at `depth` over >= 2 leaves (key, ref), sorted by key."""
        if depth >= NIBBLES:
            raise TreeError("two distinct keys share all 64 nibbles")
        bi, odd = depth >> 1, depth & 1
        bitmap = leafmask = 0
        hashes: list[bytes] = []
        versions: list[bytes] = []
        i, m = 0, len(refs)
        while i < m:
            b = refs[i][0][bi]
            n, limit = (b & 15, b + 1) if odd else (b >> 4, (b | 15) + 1)
            j = i + 1
            while j < m and refs[j][0][bi] < limit:
                j += 1
            c = refs[i][1] if j - i == 1 else self.build(depth + 1, refs[i:j])
            bitmap |= 1 << n
            if c[2]:
                leafmask |= 1 << n
            hashes.append(c[0])
            versions.append(c[1])
            i = j
        pos = _position(depth, refs[0][0])
        return self.put_node(pos, depth, bitmap, leafmask, b"".join(hashes), b"".join(versions))


def _prefix_range(khash: bytes, depth: int) -> tuple[bytes, bytes]:
    """[lo, hi): the 32-byte key hashes sharing `khash`'s first `depth` nibbles."""
    nbytes = (depth + 1) // 2
    v = int.from_bytes(khash[:nbytes], "big")
    step = 1
    if depth & 1:
        v &= ~15
        step = 16
    lo = v.to_bytes(nbytes, "big")
    if v + step >= 1 << (8 * nbytes):
        return lo, b"\xff" * 33  # past every 32-byte key
    return lo, (v + step).to_bytes(nbytes, "big")


def _group_end(keys: list[bytes], j: int, hi: int, bi: int, limit: int) -> int:
    """End of the run of keys[j:hi] whose byte `bi` is below `limit` (keys sorted)."""
    if limit > 255:
        return hi
    if hi - j > 8:  # a long range (top levels): binary search
        return bisect_left(keys, keys[j][:bi] + _BYTE[limit], j + 1, hi)
    j += 1
    while j < hi and keys[j][bi] < limit:
        j += 1
    return j


# -- verification ------------------------------------------------------------------


def verify(root: bytes, khash: bytes, vhash: bytes | None, proof: Proof) -> bool:
    """True when `proof` shows `khash` -> `vhash` under `root` (vhash None: absent)."""
    try:
        return _computed_root(khash, vhash, proof) == root
    except (ValueError, IndexError, TypeError):
        return False


def _computed_root(khash: bytes, vhash: bytes | None, proof: Proof) -> bytes | None:
    levels, leaf = proof.levels, proof.leaf
    if len(khash) != 32 or len(levels) > PROOF_LEVELS_MAX:
        return None
    depth = len(levels)
    if leaf is None:
        if vhash is not None:
            return None
        if not levels:
            return EMPTY_ROOT
        bitmap, hashes = levels[-1]
        n = nibble(khash, depth - 1)
        if bitmap >> n & 1 or len(hashes) != bin(bitmap).count("1") or not bitmap:
            return None
        current = internal_hash(bitmap, hashes)
        rest = levels[:-1]
    else:
        lk, lv = leaf
        if len(lk) != 32 or len(lv) != 32:
            return None
        if vhash is not None:
            if lk != khash or lv != vhash:
                return None
        else:
            if lk == khash:
                return None
            if any(nibble(lk, d) != nibble(khash, d) for d in range(depth)):
                return None
        current = leaf_hash(lk, lv)
        rest = levels
    for d in range(len(rest) - 1, -1, -1):
        bitmap, sibs = rest[d]
        n = nibble(khash, d)
        if not bitmap >> n & 1 or len(sibs) != bin(bitmap).count("1") - 1:
            return None
        below = bin(bitmap & ((1 << n) - 1)).count("1")
        hashes = (*sibs[:below], current, *sibs[below:])
        if any(type(h) is not bytes or len(h) != 32 for h in hashes):
            return None
        current = internal_hash(bitmap, hashes)
    return current
