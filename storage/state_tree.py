"""A versioned 16-ary sparse Merkle tree over the application state (Jellyfish-style).

Keys are 256-bit: `key_hash = sha256(state key)`, read as 64 nibbles. A leaf
sits at the shortest nibble prefix that no other key shares (so a tree of n
keys is about log16(n) levels deep); an internal node has 2..16 children
(only the root may have one, or none: the empty tree).

Hashes (prefixes keep leaves and internal nodes apart):

- leaf:     sha256(0x00 || key_hash || value_hash)
- internal: sha256(0x01 || bitmap (u16 BE, bit i = child i present) ||
  the present children's hashes, in nibble order)
- empty tree: `EMPTY_ROOT` = sha256(b"redwood/smt/empty/v1")

Storage (versioned, never overwritten, so a proof against any recent root
is possible while newer blocks commit): a node written at version (height) v
lives under

- internal: ``smt/i/`` u8 depth, packed path nibbles, u64 v ->
  bitmap u16, leafmask u16, child hashes 32*k, child versions u64*k
- leaf:     ``smt/l/`` leaf hash, u64 v -> key_hash, value_hash

and ``smt/r/`` u64 height -> the root reference after that height (empty for
the empty tree). An update returns the node writes *and* the keys of the nodes
it replaced (stale); the caller writes both in the block's batch and may
delete stale nodes once no proof needs their version (`prune_keys`).

Pure: no I/O. Nodes are read through a `get(key) -> bytes | None` callable
(the store's meta reads) and cached (immutable, so a cache is always right).
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from consensus import codec

NIBBLES = 64
EMPTY_ROOT = hashlib.sha256(b"redwood/smt/empty/v1").digest()
INTERNAL_PREFIX = b"smt/i/"
LEAF_PREFIX = b"smt/l/"
ROOT_PREFIX = b"smt/r/"
STALE_PREFIX = b"smt/s/"
NODE_CACHE_MAX = 32_768  # the top four levels of a 16-ary tree are 4,369 nodes; ~600 B each
PROOF_LEVELS_MAX = NIBBLES

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
    """Result of `StateTree.update`: new root, node writes, replaced node keys."""

    root: NodeRef | None
    puts: dict[bytes, bytes]
    stale: list[bytes]

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


def internal_key(depth: int, khash: bytes, version: int) -> bytes:
    """Storage key of the internal node at `depth` on `khash`'s path, written at `version`."""
    n = (depth + 1) // 2
    path = bytearray(khash[:n])
    if depth & 1:
        path[-1] &= 0xF0
    return INTERNAL_PREFIX + bytes((depth,)) + bytes(path) + _U64.pack(version)


def leaf_key(lhash: bytes, version: int) -> bytes:
    """Storage key of the leaf of hash `lhash` written at `version`."""
    return LEAF_PREFIX + lhash + _U64.pack(version)


def root_key(height: int) -> bytes:
    return ROOT_PREFIX + _U64.pack(height)


def stale_key(height: int) -> bytes:
    return STALE_PREFIX + _U64.pack(height)


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


def encode_stale(keys: Sequence[bytes]) -> bytes:
    return codec.pack(list(keys))


def decode_stale(raw: bytes) -> list[bytes]:
    keys = codec.unpack(raw)
    if type(keys) is not list or any(type(k) is not bytes for k in keys):
        raise TreeError("malformed stale node list")
    return keys


# -- nodes -----------------------------------------------------------------------


class _Internal:
    """A decoded internal node: children[nibble] = NodeRef or None."""

    __slots__ = ("children",)

    def __init__(self, children: list[NodeRef | None]) -> None:
        self.children = children


def _encode_internal(children: Sequence[NodeRef | None]) -> tuple[bytes, bytes]:
    """(stored bytes, hash) of an internal node."""
    bitmap = leafmask = 0
    hashes: list[bytes] = []
    versions: list[int] = []
    for i, c in enumerate(children):
        if c is not None:
            bitmap |= 1 << i
            if c[2]:
                leafmask |= 1 << i
            hashes.append(c[0])
            versions.append(c[1])
    hs = b"".join(hashes)
    bm = _U16.pack(bitmap)
    h = _sha256(b"\x01" + bm + hs).digest()
    return bm + _U16.pack(leafmask) + hs + struct.pack(f">{len(versions)}Q", *versions), h


def _rewrite_in_place(
    raw: bytes, bitmap: int, leafmask: int, k: int, changes: dict[int, NodeRef | None],
    depth: int, khash0: bytes, version: int, puts: dict[bytes, bytes],
) -> NodeRef:  # fmt: skip
    """The common case of `_rewrite`: only existing children change (same shape, k >= 2)."""
    buf = bytearray(raw)
    vbase = 4 + 32 * k
    for n, c in changes.items():
        assert c is not None
        j = (bitmap & ((1 << n) - 1)).bit_count()
        buf[4 + 32 * j : 36 + 32 * j] = c[0]
        _U64.pack_into(buf, vbase + 8 * j, c[1])
        leafmask = leafmask | (1 << n) if c[2] else leafmask & ~(1 << n)
    _U16.pack_into(buf, 2, leafmask)
    out = bytes(buf)
    if k == 1 and leafmask:  # a lone child that is now a leaf moves up
        return NodeRef(out[4:36], _U64.unpack_from(out, 36)[0], True)
    h = _sha256(b"\x01" + out[:2] + out[4:vbase]).digest()
    puts[internal_key(depth, khash0, version)] = out
    return NodeRef(h, version, False)


def _popcount(x: int) -> int:
    return x.bit_count()


def _check_internal(raw: bytes) -> bytes:
    """Stored internal-node bytes, checked for shape (kept undecoded)."""
    if len(raw) < 4 or len(raw) != 4 + 40 * _popcount(_U16.unpack_from(raw, 0)[0]):
        raise TreeError("malformed state tree node")
    return bytes(raw)


def _decode_internal(raw: bytes) -> _Internal:
    if len(raw) < 4:
        raise TreeError("malformed state tree node")
    bitmap, leafmask = _U16.unpack_from(raw, 0)[0], _U16.unpack_from(raw, 2)[0]
    k = bin(bitmap).count("1")
    if len(raw) != 4 + 40 * k:
        raise TreeError("malformed state tree node")
    children: list[NodeRef | None] = [None] * 16
    versions = struct.unpack_from(f">{k}Q", raw, 4 + 32 * k)
    j = 0
    for i in range(16):
        if bitmap >> i & 1:
            off = 4 + 32 * j
            children[i] = NodeRef(raw[off : off + 32], versions[j], bool(leafmask >> i & 1))
            j += 1
    return _Internal(children)


class StateTree:
    """Reads and updates the tree; see the module docstring. Not thread-safe for updates."""

    def __init__(
        self, get: Callable[[bytes], bytes | None], *, cache_nodes_max: int = NODE_CACHE_MAX
    ) -> None:
        self._get = get
        self._cache: OrderedDict[bytes, object] = OrderedDict()
        self._cache_max = cache_nodes_max

    # -- node access --------------------------------------------------------------

    def _load(self, key: bytes, decode: Callable[[bytes], object]) -> object:
        node = self._cache.get(key)
        if node is not None:
            return node
        raw = self._get(key)
        if raw is None:
            raise TreeError(f"state tree node {key!r} is missing (pruned or corrupt store)")
        node = decode(raw)
        self._remember(key, node)
        return node

    def _remember(self, key: bytes, node: object) -> None:
        cache = self._cache
        cache[key] = node
        if len(cache) > self._cache_max:
            for _ in range(len(cache) - self._cache_max):
                cache.popitem(last=False)

    def _internal(self, depth: int, khash: bytes, ref: NodeRef) -> _Internal:
        return _decode_internal(self._raw_internal(depth, khash, ref))

    def _raw_internal(self, depth: int, khash: bytes, ref: NodeRef) -> bytes:
        """The stored bytes of an internal node (cached as bytes: decoding is lazy)."""
        raw = self._load(internal_key(depth, khash, ref.version), _check_internal)
        assert isinstance(raw, bytes)
        return raw

    def _leaf(self, ref: NodeRef) -> tuple[bytes, bytes]:
        node = self._load(leaf_key(ref.hash, ref.version), _decode_leaf)
        assert isinstance(node, tuple)
        return node

    def committed(self, update: Update) -> None:
        """Cache the nodes of an update that has been written (optional; speeds reads)."""
        for key, raw in update.puts.items():
            if key.startswith(LEAF_PREFIX):
                self._remember(key, _decode_leaf(raw))
            else:
                self._remember(key, raw)

    # -- reads ----------------------------------------------------------------------

    def get(self, root: NodeRef | None, khash: bytes) -> bytes | None:
        """The value hash of `khash` under `root`, or None."""
        proof = self.prove(root, khash)
        if proof.leaf is not None and proof.leaf[0] == khash:
            return proof.leaf[1]
        return None

    def prove(self, root: NodeRef | None, khash: bytes) -> Proof:
        """Proof of `khash`'s value or absence under `root`."""
        levels: list[tuple[int, tuple[bytes, ...]]] = []
        ref = root
        depth = 0
        while ref is not None and not ref.is_leaf:
            node = self._internal(depth, khash, ref)
            n = nibble(khash, depth)
            bitmap = 0
            sibs = []
            for i, c in enumerate(node.children):
                if c is not None:
                    bitmap |= 1 << i
                    if i != n:
                        sibs.append(c.hash)
            child = node.children[n]
            if child is None:  # empty slot: list every child
                levels.append((bitmap, tuple(sibs)))
                return Proof(tuple(levels), None)
            levels.append((bitmap, tuple(sibs)))
            ref = child
            depth += 1
        if ref is None:
            return Proof((), None)
        return Proof(tuple(levels), self._leaf(ref))

    # -- updates ----------------------------------------------------------------------

    def update(
        self, root: NodeRef | None, changes: Mapping[bytes, bytes | None], version: int
    ) -> Update:
        """Apply `changes` (key_hash -> value_hash, None deletes) as version `version`."""
        puts: dict[bytes, bytes] = {}
        stale: list[bytes] = []
        items = sorted(changes.items())
        new_root = self._update(root, 0, items, version, puts, stale) if items else root
        return Update(new_root, puts, stale)

    def _update(
        self,
        ref: NodeRef | None,
        depth: int,
        items: list[tuple[bytes, bytes | None]],
        version: int,
        puts: dict[bytes, bytes],
        stale: list[bytes],
    ) -> NodeRef | None:
        if ref is None:
            live = [(k, v) for k, v in items if v is not None]
            return self._build(depth, live, version, puts)
        if ref.is_leaf:
            return self._update_leaf(ref, depth, items, version, puts, stale)
        khash0 = items[0][0]
        raw = self._raw_internal(depth, khash0, ref)
        bitmap, leafmask = _U16.unpack_from(raw, 0)[0], _U16.unpack_from(raw, 2)[0]
        k = _popcount(bitmap)
        vbase = 4 + 32 * k
        changes: dict[int, NodeRef | None] = {}
        for n, group in _groups(items, depth):
            if bitmap >> n & 1:
                j = _popcount(bitmap & ((1 << n) - 1))
                old: NodeRef | None = NodeRef(
                    raw[4 + 32 * j : 36 + 32 * j],
                    _U64.unpack_from(raw, vbase + 8 * j)[0],
                    bool(leafmask >> n & 1),
                )
            else:
                old = None
            new = self._update(old, depth + 1, group, version, puts, stale)
            if new != old:
                changes[n] = new
        if not changes:
            return ref
        stale.append(internal_key(depth, khash0, ref.version))
        return self._rewrite(raw, bitmap, leafmask, k, changes, depth, khash0, version, puts)

    @staticmethod
    def _rewrite(
        raw: bytes, bitmap: int, leafmask: int, k: int, changes: dict[int, NodeRef | None],
        depth: int, khash0: bytes, version: int, puts: dict[bytes, bytes],
    ) -> NodeRef | None:  # fmt: skip
        """Re-encode an internal node with `changes` applied, copying untouched children."""
        if all(c is not None and bitmap >> n & 1 for n, c in changes.items()):
            return _rewrite_in_place(
                raw, bitmap, leafmask, k, changes, depth, khash0, version, puts
            )
        new_bm = bitmap
        for n, c in changes.items():
            new_bm = new_bm & ~(1 << n) if c is None else new_bm | (1 << n)
        hashes: list[bytes] = []
        versions: list[bytes] = []
        new_lm = 0
        vbase = 4 + 32 * k
        rest = new_bm
        while rest:  # only the children present afterwards, in nibble order
            low = rest & -rest
            rest ^= low
            n = low.bit_length() - 1
            if n not in changes:
                j = (bitmap & (low - 1)).bit_count()
                new_lm |= leafmask & low
                hashes.append(raw[4 + 32 * j : 36 + 32 * j])
                versions.append(raw[vbase + 8 * j : vbase + 8 * j + 8])
            else:
                c = changes[n]
                assert c is not None
                if c[2]:
                    new_lm |= low
                hashes.append(c[0])
                versions.append(_U64.pack(c[1]))
        if not hashes:
            return None
        if len(hashes) == 1 and new_lm:
            # a lone leaf moves up (leaves are stored by hash, not position)
            return NodeRef(hashes[0], _U64.unpack(versions[0])[0], True)
        hs = b"".join(hashes)
        bm = _U16.pack(new_bm)
        h = _sha256(b"\x01" + bm + hs).digest()
        puts[internal_key(depth, khash0, version)] = (
            bm + _U16.pack(new_lm) + hs + b"".join(versions)
        )
        return NodeRef(h, version, False)

    def _update_leaf(
        self,
        ref: NodeRef,
        depth: int,
        items: list[tuple[bytes, bytes | None]],
        version: int,
        puts: dict[bytes, bytes],
        stale: list[bytes],
    ) -> NodeRef | None:
        khash, vhash = self._leaf(ref)
        if len(items) == 1 and items[0][0] == khash:  # the common case: this key changes
            new_v = items[0][1]
            if new_v == vhash:
                return ref
            stale.append(leaf_key(ref.hash, ref.version))
            if new_v is None:
                return None
            h = leaf_hash(khash, new_v)
            puts[leaf_key(h, version)] = khash + new_v
            return NodeRef(h, version, True)
        merged = dict(items)
        if khash in merged:
            if len(items) == 1 and merged[khash] == vhash:
                return ref
        else:
            merged[khash] = vhash
        live = sorted((k, v) for k, v in merged.items() if v is not None)
        if live == [(khash, vhash)]:
            return ref
        stale.append(leaf_key(ref.hash, ref.version))
        return self._build(depth, live, version, puts)

    def _build(
        self,
        depth: int,
        items: list[tuple[bytes, bytes]],
        version: int,
        puts: dict[bytes, bytes],
    ) -> NodeRef | None:
        if not items:
            return None
        if len(items) == 1:
            k, v = items[0]
            h = leaf_hash(k, v)
            puts[leaf_key(h, version)] = k + v
            return NodeRef(h, version, True)
        if depth >= NIBBLES:
            raise TreeError("two distinct keys share all 64 nibbles")
        children: list[NodeRef | None] = [None] * 16
        for n, group in _groups(items, depth):
            children[n] = self._build(depth + 1, group, version, puts)
        raw, h = _encode_internal(children)
        puts[internal_key(depth, items[0][0], version)] = raw
        return NodeRef(h, version, False)


def _decode_leaf(raw: bytes) -> tuple[bytes, bytes]:
    if len(raw) != 64:
        raise TreeError("malformed state tree leaf")
    return (bytes(raw[:32]), bytes(raw[32:]))


def _groups(items: list[Any], depth: int) -> list[tuple[int, list[Any]]]:
    """Split sorted items by their nibble at `depth` (stays sorted)."""
    out: list[tuple[int, list[Any]]] = []
    cur = -1
    i, odd = depth >> 1, depth & 1
    for item in items:
        b = item[0][i]
        n = (b & 0x0F) if odd else (b >> 4)
        if n != cur:
            out.append((n, [item]))
            cur = n
        else:
            out[-1][1].append(item)
    return out


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
