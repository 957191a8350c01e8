"""The chain store: certified blocks, versioned application state, meta and the consensus journal.

One LevelDB (plyvel) database per node home. Every block commit — block and
certificate, hash index, tx index, state writes with their history, meta and
the head pointer — is ONE `write_batch(transaction=True, sync=...)`, so a
kill -9 at any instant leaves either the old head or the new one, never a mix.
The consensus journal has its own prefix and is always written with sync=True.

Key layout (all integers big-endian, so keys sort numerically)
---------------------------------------------------------------
=============================  ==============================================
key                            value
=============================  ==============================================
``m/format``                   u32 store format version (`FORMAT`; a format-1
                               store is marked 2 when opened, below)
``m/genesis``                  32-byte genesis hash (block 1's parent hash)
``m/head``                     u64 height + 32-byte hash of the head block
``b/`` u64 height              `codec.encode(CertifiedBlock)`
``h/`` block hash              u64 height
``t/`` tx hash                 u64 height, u32 index, u32 status,
                               u32 offset, u32 length (where the tx's bytes
                               sit inside the stored block record)
``s/`` state key               u64 current version number
``v/`` u16 len, key, u64 ver   one version: u64 height, u32 tx_index, u8 kind,
                               then for kind 1 (present) the value, for kind 2
                               (present, stored apart) a u32 sequence number;
                               kind 0: deleted
``w/`` u64 height, u32 seq      the value of a kind-2 version written by the
                               block at that height (seq: the write's place
                               among the block's writes)
``a/`` meta key                application meta value
``j/`` journal key             consensus journal value (a committed block's
                               prepared certificate without its transactions,
                               see below)
=============================  ==============================================

Transactions are stored once, inside the block record; the tx index keeps
their byte range in it, and `get_tx` checks the slice against the tx hash. A tx
hash already in the index keeps its first location. Each state value is
stored once; the current entry points at the newest version. History keys
carry the state key's length so that one key's versions are a contiguous
range that no other key's entries can fall into.

A value longer than `INLINE_VALUE_MAX` bytes is not in its version entry but
under ``w/``, keyed by the height that wrote it (kind 2): history keys are
random (state key order), so LevelDB's compactions merge them again at every
level as the database grows, while ``w/`` keys only grow and their files mostly
move down the levels as they are. With the values in the history, they were
the largest part of what compactions rewrote (`bench/compaction.py`: dropping
the history altogether took LevelDB's background thread from 36.6 to 22.6 us
a transaction over 900,000 transactions; docs/performance.md, stop 21).
`get_record` reads three entries (current, version, value) instead of two.
Format 1 stores hold only kinds 0 and 1, which this format reads as before;
opening one marks it format 2, so that an older node refuses it with a clear
"unknown format" rather than take a kind-2 entry for corruption. Format 3
changes nothing here: its application meta may hold the state tree stored by
position (storage/state_tree.py), which a node reading formats 1-2 would take
for a damaged tree, so opening an older store marks it 3 as well.

The replica journals each prepared certificate with its whole block before it
votes COMMIT, and deletes it only at the next stable checkpoint (64-128 heights
later), by which time LevelDB has merged those bytes down a level or two. When
the block commits, its commit batch rewrites that record without the block's
transactions (`journal_codec.elide_prepared`, only if the record is there and
is for this very block: the check runs under the writer lock, so a record the
replica deleted or replaced is never written back); `journal_items` puts them
back from the block record (`journal_codec.restore_prepared`), so the replica
reads exactly what it wrote.

Reads never take a lock (LevelDB reads are thread-safe and each iterator reads
a snapshot). Writers (`commit_block`, `journal_write`) are serialized by a
lock: the node calls them from one worker thread at a time, and the lock makes
a mistake there harmless rather than corrupting. `close()` must not race with
reads still running in other threads (plyvel frees the database under them):
stop the readers first.

`has_tx` answers most lookups from memory, exactly: the hashes of the
transactions committed in the newest blocks (`RECENT_TXS_MAX` of them), and
the hashes a LevelDB read found absent together with the head height of that
read (two generations of `ABSENT_TXS_MAX`). A hash found absent at height A
is still absent if no block above A holds it, which the recent hashes answer
as long as they cover every height above A. A node looks each transaction up
at admission, again when it executes the block, and sometimes in between;
only the first look-up reads LevelDB (a miss there costs 3-7 us).

LevelDB's own corruption and I/O errors, and records that do not decode, are
raised as `StoreError` from every public method, so the node has one error
type to stop on.

`ChainStore.open` checks the head before anyone uses the store: the head
pointer's block exists and decodes, its certificate names that block, the hash
chain of the last `HEAD_CHECK_BLOCKS` blocks links, nothing lies beyond the
head, and the head block's transactions are indexed. A store that fails any
check is refused with a `StoreError` naming the recovery command.
"""

from __future__ import annotations

import os
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

import plyvel

from consensus import codec, journal_codec
from consensus.codec import DecodeError
from consensus.types import Block, CertifiedBlock, tx_hash
from storage import leveldb_reads

FORMAT = 3
# format 1 is format 2 without kind-2 versions; format 3 is format 2 whose application
# meta may hold a state tree stored by position (module docstring)
READABLE_FORMATS = (1, 2, 3)
INLINE_VALUE_MAX = 32  # longer state values are stored apart from their version entry
HASH_BYTES = 32
HEAD_CHECK_BLOCKS = 32
STATE_KEY_BYTES_MAX = 4096
RECENT_TXS_MAX = 65_536  # committed tx hashes `has_tx` keeps in memory (newest blocks')
RECENT_BLOCKS_MAX = 4_096  # and at most this many blocks of them (empty blocks too)
ABSENT_TXS_MAX = 65_536  # hashes found absent, per generation (two generations)
RECORD_HISTORY_MAX = 1000
META_KEY_BYTES_MAX = 1024
U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1
RECOVERY_COMMAND = "redwood repair --home DIR"
# what an I/O failure of the store (at open or at run time) asks the operator to do
_DISK_ADVICE = (
    "Check the disk (space, permissions, health) and restart; if the store is then "
    f"reported corrupt, run `{RECOVERY_COMMAND}`."
)

_FORMAT_KEY = b"m/format"
_GENESIS_KEY = b"m/genesis"
_HEAD_KEY = b"m/head"
_BLOCK = b"b/"
_HASH = b"h/"
_TX = b"t/"
_STATE = b"s/"
_HISTORY = b"v/"
_VALUES = b"w/"
_META = b"a/"
_JOURNAL = b"j/"

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_HEAD = struct.Struct(">Q32s")
_TXLOC = struct.Struct(">QIIII")
_VERSION = struct.Struct(">QIB")
_VALUE_KEY = struct.Struct(">2sQI")  # w/, height, seq

# LevelDB tuning: a write buffer of several blocks keeps multi-megabyte block batches
# from stalling on memtable flushes; bloom filters make "is this tx hash new?" cheap.
# Memory: two write buffers (one flushing) plus the block cache, up to ~80 MB of a
# node's 300 MB budget. The write buffer went 32 -> 16 MB for memory when the heap
# was the problem (87579c7) and back to 32 MB once it was not: LevelDB's compaction
# thread is the node's largest CPU cost after Ed25519 (8% of a core per validator in
# a fresh 60 s run, 13% by the third) and fewer, larger level-0 files cost it less.
# Three 60 s runs on one localnet: 3,236 / 2,835 / 2,719 -> 3,527 / 3,027 / 2,786
# tx/s, peak heap (RssAnon) 234 -> 267 MB.
# No block compression: most of what the store holds (hashes, signatures, keys,
# state-tree nodes) does not compress, and a read that misses the block cache costs
# 8-10 us with snappy against ~3 us without (bench/state_tree_bench.py). Same 45 s
# closed-loop run back to back: 2,833 -> 3,179 tx/s, 174 -> 154 us of CPU per
# transaction per node. Disk: the state tree's nodes take ~45% more (317 MB instead
# of 220 MB for 1,000,000 records). Blocks written compressed by an older node stay
# readable (LevelDB marks each block).
# Nodes sharing one machine (a localnet, the bench) write the same blocks, so with
# one write buffer size they flush together and their compactions start at the same
# moment and take the cores from every event loop at once (the latency bench's p99
# tail, docs/performance.md change 22). `redwood testnet` gives its nodes sizes
# from 24 to 40 MB (`[node] write_buffer_mb`), 32 on average, so the flushes drift
# apart.
# Tables are read with pread, not memory-mapped (storage/leveldb_reads.py): mapped, the
# pages reads and compactions touch counted in the node's resident set (60-200 MB of it
# in the throughput bench); read, they stay in the kernel's page cache, and the block
# cache below is what the node holds of them.
WRITE_BUFFER_SIZE = 32 * 1024 * 1024
WRITE_BUFFER_MIN = 4 * 1024 * 1024
WRITE_BUFFER_MAX = 1024 * 1024 * 1024
_DB_OPTIONS = {
    "write_buffer_size": WRITE_BUFFER_SIZE,
    "lru_cache_size": 16 * 1024 * 1024,
    "bloom_filter_bits": 10,
    "paranoid_checks": True,
    "compression": None,
}


class StoreError(Exception):
    """The store is corrupt, inconsistent, locked or of another chain. The message says what to do."""


@dataclass(frozen=True, slots=True)
class StateWrite:
    """Set `key` to `value` (None deletes; the deletion is kept in history) for tx `tx_index`."""

    key: bytes
    value: bytes | None
    tx_index: int


@dataclass(frozen=True, slots=True)
class RecordVersion:
    """One version of a state key; `value` None means the key was deleted at this version."""

    key: bytes
    value: bytes | None
    version: int
    height: int
    tx_index: int


@dataclass(frozen=True, slots=True)
class TxLocation:
    """Where a committed transaction is: block height, index in the block, receipt status."""

    height: int
    index: int
    tx: bytes
    status: int


def _block_key(height: int) -> bytes:
    return _BLOCK + _U64.pack(height)


def _history_prefix(key: bytes) -> bytes:
    return _HISTORY + _U16.pack(len(key)) + key


def _array_header_bytes(items: int) -> int:
    """Size of the msgpack header of an array of `items` items."""
    return 1 if items < 16 else (3 if items < 65536 else 5)


def _tx_offsets(cb: CertifiedBlock, record: bytes) -> list[int]:
    """Byte offset of each transaction's bytes inside `codec.encode(cb)`.

    The record is `[version, tag, [[header, [tx, ...]], certificate]]`; msgpack
    writes each bin as a header and the raw bytes, so every tx appears verbatim.
    Checked against the record for the first and last transaction.
    """
    txs = cb.block.txs
    start = 5 + len(codec.encode_body(cb.block.header))  # 3 envelope + 2 array bytes
    offset = start + _array_header_bytes(len(txs))
    offsets: list[int] = []
    append = offsets.append
    for tx in txs:
        n = len(tx)
        offset += 2 if n < 256 else (3 if n < 65536 else 5)  # the bin header
        append(offset)
        offset += n
    assert (
        record[0] == 0x93 and record[1] < 0x80 and record[2] < 0x80 and record[3:5] == b"\x92\x92"
    )
    if txs:
        assert record[offsets[0] : offsets[0] + len(txs[0])] == txs[0]
        assert record[offsets[-1] : offsets[-1] + len(txs[-1])] == txs[-1]
    return offsets


P = ParamSpec("P")
R = TypeVar("R")


def _leveldb_errors(
    method: Callable[Concatenate[ChainStore, P], R],
) -> Callable[Concatenate[ChainStore, P], R]:
    """Turn LevelDB's corruption and I/O errors inside `method` into a clear StoreError."""

    @wraps(method)
    def wrapper(self: ChainStore, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except plyvel.CorruptionError as exc:
            raise self._corrupt(f"LevelDB reports corruption ({exc})") from None
        except plyvel.IOError as exc:
            raise StoreError(
                f"chain store {self.path}: I/O error ({exc}); the node must stop. {_DISK_ADVICE}"
            ) from None

    return wrapper  # type: ignore[return-value]  # functools' _Wrapped is callable alike


class ChainStore:
    """Blocks with certificates, versioned state, meta and the journal in one LevelDB."""

    def __init__(self, db: plyvel.DB, path: Path, genesis_hash: bytes) -> None:
        self._db = db
        self.path = path
        self.genesis_hash = genesis_hash
        self._write_lock = threading.Lock()
        self._head_height = 0
        self._head_hash = genesis_hash
        # `has_tx`'s memory (module docstring); `_tx_lock` guards all five
        self._tx_lock = threading.Lock()
        self._recent: dict[bytes, int] = {}  # tx hash -> height of a block holding it
        self._recent_blocks: deque[tuple[int, Sequence[bytes]]] = deque()
        self._recent_floor = 0  # every height above it is in `_recent`
        self._absent: dict[bytes, int] = {}  # tx hash -> head height when LevelDB lacked it
        self._absent_old: dict[bytes, int] = {}

    # -- opening and checking ------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        genesis_hash: bytes | None = None,
        write_buffer_size: int = WRITE_BUFFER_SIZE,
    ) -> ChainStore:
        """Open (creating if missing) the store at `path` and check its head.

        `genesis_hash` is recorded on first open; a later open with a different
        one is refused. It may be omitted only for an existing store.
        `write_buffer_size` is LevelDB's memtable size in bytes (`_DB_OPTIONS`).
        """
        path = Path(path)
        if not WRITE_BUFFER_MIN <= write_buffer_size <= WRITE_BUFFER_MAX:
            raise ValueError(
                f"write_buffer_size must be {WRITE_BUFFER_MIN}..{WRITE_BUFFER_MAX} bytes"
            )
        if genesis_hash is not None and (
            not isinstance(genesis_hash, bytes) or len(genesis_hash) != HASH_BYTES
        ):
            raise ValueError(f"genesis_hash must be {HASH_BYTES} bytes")
        if genesis_hash is None and not (path / "CURRENT").exists():
            raise StoreError(
                f"{path}: no chain store here, and no genesis hash given to create one"
            )
        db = _open_db(path, write_buffer_size)
        try:
            store = cls(db, path, _check_genesis(db, path, genesis_hash))
            store._load_head()
        except plyvel.Error as exc:
            db.close()
            raise _corrupt(path, f"LevelDB reports an error reading the head ({exc})") from None
        except BaseException:
            db.close()
            raise
        return store

    def close(self) -> None:
        with self._write_lock:
            if not self._db.closed:
                self._db.close()

    def __enter__(self) -> ChainStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _corrupt(self, what: str) -> StoreError:
        return _corrupt(self.path, what)

    @_leveldb_errors
    def _load_head(self) -> None:
        raw = self._db.get(_HEAD_KEY)
        if raw is None:
            if next(self._db.iterator(prefix=_BLOCK, include_value=False), None) is not None:
                raise self._corrupt("blocks are present but the head pointer is missing")
            return
        if len(raw) != _HEAD.size:
            raise self._corrupt(f"head pointer is {len(raw)} bytes, expected {_HEAD.size}")
        height, head_hash = _HEAD.unpack(raw)
        if height < 1:
            raise self._corrupt(f"head pointer names height {height}")
        if self._db.get(_block_key(height + 1)) is not None:
            raise self._corrupt(f"a block exists above the head height {height}")
        cb = self._check_block(height, head_hash)
        self._check_chain(cb)
        self._check_tx_index(cb)
        self._head_height = height
        self._head_hash = head_hash
        self._recent_floor = height

    def _check_block(self, height: int, expected_hash: bytes) -> CertifiedBlock:
        """The block at `height` exists, decodes, has `expected_hash`, and its certificate matches."""
        cb = self.get_block(height)
        if cb is None:
            raise self._corrupt(f"block {height} is missing")
        block_hash = cb.block.hash()
        if cb.block.height != height or block_hash != expected_hash:
            raise self._corrupt(f"block stored at height {height} is not the block expected there")
        cert = cb.certificate
        if cert.height != height or cert.digest != block_hash:
            raise self._corrupt(f"certificate of block {height} does not match the block")
        if self._db.get(_HASH + block_hash) != _U64.pack(height):
            raise self._corrupt(f"hash index entry of block {height} is missing or wrong")
        return cb

    def _check_chain(self, head: CertifiedBlock) -> None:
        """The parent links of the last HEAD_CHECK_BLOCKS blocks hold."""
        cb = head
        lowest = max(1, head.block.height - HEAD_CHECK_BLOCKS + 1)
        while cb.block.height > lowest:
            parent_height = cb.block.height - 1
            cb = self._check_block(parent_height, cb.block.header.parent_hash)
        if cb.block.height == 1 and cb.block.header.parent_hash != self.genesis_hash:
            raise self._corrupt("block 1 does not link to the genesis hash")

    def _check_tx_index(self, head: CertifiedBlock) -> None:
        """Every tx of the head block is indexed, here or (a replayed copy) in an earlier block."""
        height = head.block.height
        record = self._db.get(_block_key(height))
        get, unpack = self._db.get, _TXLOC.unpack
        for index, tx in enumerate(head.block.txs):
            raw = get(_TX + tx_hash(tx))
            if raw is None or len(raw) != _TXLOC.size:
                raise self._corrupt(f"tx index entry of block {height} tx {index} is missing")
            at_height, at_index, _, offset, length = unpack(raw)
            here = at_height == height and at_index <= index
            if not (at_height < height or here):
                raise self._corrupt(f"tx index entry of block {height} tx {index} is wrong")
            if at_height == height and record[offset : offset + length] != head.block.txs[at_index]:
                raise self._corrupt(f"tx index entry of block {height} tx {index} is wrong")

    # -- blocks ----------------------------------------------------------------

    def head_height(self) -> int:
        return self._head_height

    def head_hash(self) -> bytes:
        """Hash of the head block (the genesis hash when there is none). Extension."""
        return self._head_hash

    @_leveldb_errors
    def head(self) -> CertifiedBlock | None:
        return self.get_block(self._head_height) if self._head_height else None

    @_leveldb_errors
    def get_block(self, height: int) -> CertifiedBlock | None:
        if not 0 < height < 2**64:
            return None
        raw = self._db.get(_block_key(height))
        return None if raw is None else self._decode_block(height, raw)

    @_leveldb_errors
    def get_block_by_hash(self, block_hash: bytes) -> CertifiedBlock | None:
        raw = self._db.get(_HASH + bytes(block_hash))
        if raw is None:
            return None
        if len(raw) != _U64.size:
            raise self._corrupt("a hash index entry is malformed")
        return self.get_block(_U64.unpack(raw)[0])

    @_leveldb_errors
    def get_blocks(self, first: int, last: int, max_bytes: int) -> list[CertifiedBlock]:
        """Blocks first..last in order, stopping before `max_bytes` of records are exceeded.

        The first block is returned even if it alone exceeds `max_bytes`, so
        a peer catching up always makes progress.
        """
        first = max(first, 1)
        last = min(last, self._head_height)
        if first > last:
            return []
        blocks: list[CertifiedBlock] = []
        total = 0
        it = self._db.iterator(start=_block_key(first), stop=_block_key(last + 1))
        with it:
            for key, raw in it:
                total += len(raw)
                if blocks and total > max_bytes:
                    break
                height = _U64.unpack(key[len(_BLOCK) :])[0]
                if height != first + len(blocks):
                    raise self._corrupt(f"block {first + len(blocks)} is missing")
                blocks.append(self._decode_block(height, raw))
        return blocks

    def _decode_block(self, height: int, raw: bytes) -> CertifiedBlock:
        try:
            cb = codec.decode(raw, CertifiedBlock)
        except DecodeError as exc:
            raise self._corrupt(f"block {height} does not decode ({exc})") from None
        if cb.block.height != height:
            raise self._corrupt(f"record for height {height} holds block {cb.block.height}")
        return cb

    # -- transactions ----------------------------------------------------------

    @_leveldb_errors
    def get_tx(self, tx_hash_: bytes) -> TxLocation | None:
        raw = self._db.get(_TX + bytes(tx_hash_))
        if raw is None:
            return None
        if len(raw) != _TXLOC.size:
            raise self._corrupt("a tx index entry is malformed")
        height, index, status, offset, length = _TXLOC.unpack(raw)
        record = self._db.get(_block_key(height))
        tx = None if record is None else record[offset : offset + length]
        if tx is None or len(tx) != length or tx_hash(tx) != tx_hash_:
            raise self._corrupt(f"tx index points into block {height}, which does not hold the tx")
        return TxLocation(height, index, tx, status)

    @_leveldb_errors
    def has_tx(self, tx_hash_: bytes) -> bool:
        """Whether a committed block holds this transaction (exact; see the module docstring)."""
        h = bytes(tx_hash_)
        with self._tx_lock:
            if h in self._recent:
                return True
            seen = self._absent.get(h)
            if seen is None:
                seen = self._absent_old.get(h)
            if seen is not None and seen >= self._recent_floor:
                return False
        # read the head first: a block committed after this read is in `_recent`
        # before the head moves, so the absence is right as of `head`
        head = self._head_height
        if self._db.get(_TX + h) is not None:
            return True
        with self._tx_lock:
            if head >= self._recent_floor:
                self._absent[h] = head
                if len(self._absent) >= ABSENT_TXS_MAX:
                    self._absent_old, self._absent = self._absent, {}
        return False

    def _remember_committed(self, height: int, hashes: Sequence[bytes]) -> None:
        """After block `height` is written, before the head moves (see `has_tx`)."""
        with self._tx_lock:
            recent = self._recent
            for h in hashes:
                recent[h] = height
            blocks = self._recent_blocks
            blocks.append((height, hashes))
            while len(blocks) > 1 and (
                len(recent) > RECENT_TXS_MAX or len(blocks) > RECENT_BLOCKS_MAX
            ):
                old_height, old = blocks.popleft()
                self._recent_floor = old_height  # heights above it stay covered
                for h in old:
                    if recent.get(h) == old_height:
                        del recent[h]

    # -- state -----------------------------------------------------------------

    @_leveldb_errors
    def get_record(self, key: bytes) -> RecordVersion | None:
        return self._current_record(self._db.get, key)

    def _current_record(self, get: Any, key: bytes) -> RecordVersion | None:
        """The current version of `key`, read with `get` (the database's, or a snapshot's)."""
        key = bytes(key)
        current = get(_STATE + key)
        if current is None:
            return None
        if len(current) != _U64.size or len(key) > STATE_KEY_BYTES_MAX:
            raise self._corrupt("a current-version entry is malformed")
        raw = get(_history_prefix(key) + current)
        if raw is None:
            raise self._corrupt("the current version of a state key is missing")
        return self._record_version(key, _U64.unpack(current)[0], raw, get)

    def _record_version(
        self, key: bytes, version: int, raw: bytes, get: Any = None
    ) -> RecordVersion:
        if len(raw) < _VERSION.size:
            raise self._corrupt("a state version entry is malformed")
        height, tx_index, kind = _VERSION.unpack_from(raw)
        if kind == 1:
            value: bytes | None = raw[_VERSION.size :]
        elif kind == 2:
            if len(raw) != _VERSION.size + _U32.size:
                raise self._corrupt("a state version entry is malformed")
            seq = _U32.unpack_from(raw, _VERSION.size)[0]
            value = (self._db.get if get is None else get)(_VALUE_KEY.pack(_VALUES, height, seq))
            if value is None:
                raise self._corrupt(f"a state value written at height {height} is missing")
        elif kind == 0 and len(raw) == _VERSION.size:
            value = None
        else:
            raise self._corrupt("a state version entry is malformed")
        return RecordVersion(key, value, version, height, tx_index)

    @_leveldb_errors
    def record_history(
        self, key: bytes, limit: int = 100, before_version: int | None = None
    ) -> list[RecordVersion]:
        """Versions of `key`, newest first, at most `limit` (capped at RECORD_HISTORY_MAX).

        With `before_version`, only versions older than it (for paging).
        """
        key = bytes(key)
        limit = min(limit, RECORD_HISTORY_MAX)
        if limit < 1 or len(key) > STATE_KEY_BYTES_MAX:
            return []
        prefix = _history_prefix(key)
        if before_version is None or before_version > U64_MAX:
            it = self._db.iterator(prefix=prefix, reverse=True)
        elif before_version <= 1:
            return []
        else:
            stop = prefix + _U64.pack(before_version)
            it = self._db.iterator(start=prefix, stop=stop, reverse=True)
        out: list[RecordVersion] = []
        with it:
            for hkey, raw in it:
                if len(hkey) != len(prefix) + _U64.size:
                    raise self._corrupt("a state version key is malformed")
                version = _U64.unpack_from(hkey, len(prefix))[0]
                out.append(self._record_version(key, version, raw))
                if len(out) >= limit:
                    break
        return out

    # -- meta and journal --------------------------------------------------------

    @_leveldb_errors
    def get_meta(self, key: bytes) -> bytes | None:
        value: bytes | None = self._db.get(_META + bytes(key))
        return value

    @_leveldb_errors
    def meta_snapshot(self) -> MetaSnapshot:
        """The meta entries as they are now, unchanged by later writes (a LevelDB snapshot).

        Released when the last reference goes (never explicitly, so a reader on
        another thread cannot have it released under it)."""
        return MetaSnapshot(self, self._db.snapshot())

    @_leveldb_errors
    def write_meta(self, meta: Mapping[bytes, bytes | None]) -> None:
        """Write meta entries (None deletes) in one synced batch, outside any block.

        For one-off work of the application between blocks (rebuilding its state
        tree in a newer layout); a block's own meta goes in `commit_block`."""
        self._write_synced(_meta_entries(meta))

    def _write_synced(self, entries: Sequence[tuple[bytes, bytes | None]]) -> None:
        """Put (or, for None, delete) full keys in one synced batch, under the writer lock."""
        with self._write_lock, self._db.write_batch(transaction=True, sync=True) as wb:
            for key, value in entries:
                if value is None:
                    wb.delete(key)
                else:
                    wb.put(key, value)

    def state_keys(self, batch: int = 10_000) -> Iterator[bytes]:
        """Every state key that has a current entry (deleted ones too), in key order.

        Reads `batch` keys at a time, each batch from a fresh iterator."""
        start, stop = _STATE, prefix_end(_STATE)
        first = True
        while True:
            keys = self._state_key_batch(start, stop, batch, include_start=first)
            yield from keys
            if len(keys) < batch:
                return
            start, first = _STATE + keys[-1], False

    @_leveldb_errors
    def _state_key_batch(
        self, start: bytes, stop: bytes, limit: int, *, include_start: bool
    ) -> list[bytes]:
        out: list[bytes] = []
        with self._db.iterator(
            start=start, stop=stop, include_start=include_start, include_value=False
        ) as it:
            for key in it:
                out.append(key[len(_STATE) :])
                if len(out) >= limit:
                    break
        return out

    @_leveldb_errors
    def meta_keys(self, start: bytes, stop: bytes, limit: int = 1_000_000) -> list[bytes]:
        """The meta keys in [start, stop), in order, at most `limit` (values not read)."""
        return _list_meta_keys(self._db, start, stop, limit)

    @_leveldb_errors
    def journal_write(self, records: Sequence[tuple[bytes, bytes | None]]) -> None:
        """Persist journal records (None deletes) atomically, synced before returning."""
        for key, value in _pairs(records, "journal"):
            _check_bytes("journal key", key, META_KEY_BYTES_MAX)
            if value is not None and not isinstance(value, bytes):
                raise ValueError("journal value must be bytes or None")
        self._write_synced([(_JOURNAL + key, value) for key, value in records])

    @_leveldb_errors
    def journal_items(self) -> dict[bytes, bytes]:
        """Every journal record as written, prepared certificates whose block has committed
        restored in full (`commit_block` stored them without their transactions)."""
        n = len(_JOURNAL)
        with self._db.iterator(prefix=_JOURNAL) as it:
            items = {key[n:]: value for key, value in it}
        for key, value in items.items():
            if value.startswith(journal_codec.ELIDED_TAG):
                try:
                    items[key] = journal_codec.restore_prepared(value, self._committed_block)
                except journal_codec.JournalError as exc:
                    raise self._corrupt(f"journal record {key!r}: {exc}") from None
        return items

    def _committed_block(self, height: int) -> Block | None:
        cb = self.get_block(height)
        return None if cb is None else cb.block

    def _elided_journal(self, cb: CertifiedBlock) -> bytes | None:
        """The journal's prepared certificate of `cb`'s height rewritten without the
        transactions `cb` holds, when that record is there and is for this very block."""
        key = _JOURNAL + journal_codec.prepared_key(cb.block.height)
        value = self._db.get(key)
        if value is None:
            return None
        return journal_codec.elide_prepared(value, cb.block)

    # -- committing a block ------------------------------------------------------

    @_leveldb_errors
    def commit_block(
        self,
        cb: CertifiedBlock,
        writes: Sequence[StateWrite],
        meta: Mapping[bytes, bytes | None] = {},  # never mutated
        tx_status: Sequence[int] | None = None,
        *,
        sync: bool = True,
        versions: Mapping[bytes, int] | None = None,
        tx_hashes: Sequence[bytes] | None = None,
        first_seen: Sequence[bool] | None = None,
    ) -> None:
        """Write block `head+1` with its certificate, indexes, state writes and meta atomically.

        Raises ValueError (and writes nothing) if the block is not at head+1,
        does not link to the head's hash, carries a certificate for another
        block, or the arguments are malformed. Meta values of None delete.

        Lookups the caller has already done can be handed in (the application
        does, to spare a LevelDB read per write and per transaction):
        `versions`, the current version of every key in `writes` as
        `current_versions` returned it against this head; `tx_hashes`, the
        hash of every transaction; `first_seen`, per transaction, True when it
        is not indexed yet and not earlier in this block (the caller's
        duplicate check). Without them the store looks them up itself.
        """
        with self._write_lock:
            block_hash = self._check_next(cb)
            count = len(cb.block.txs)
            statuses = self._check_statuses(tx_status, count)
            for name, given in (("tx_hashes", tx_hashes), ("first_seen", first_seen)):
                if given is not None and len(given) != count:
                    raise ValueError(f"{name} has {len(given)} entries for {count} transactions")
            meta_entries = _meta_entries(meta)
            record = codec.encode(cb)
            height = cb.block.height
            hkey = _U64.pack(height)
            # read under the write lock, so a record the replica deleted (its stable
            # checkpoint) or replaced meanwhile is never written back
            elided = self._elided_journal(cb)
            # A ValueError raised inside the batch discards it: nothing is written.
            with self._db.write_batch(transaction=True, sync=sync) as wb:
                wb.put(_BLOCK + hkey, record)
                wb.put(_HASH + block_hash, hkey)
                hashes = self._put_tx_index(wb, cb, record, statuses, tx_hashes, first_seen)
                self._put_state(wb, writes, height, versions)
                for key, value in meta_entries:
                    if value is None:
                        wb.delete(key)
                    else:
                        wb.put(key, value)
                if elided is not None:
                    wb.put(_JOURNAL + journal_codec.prepared_key(height), elided)
                wb.put(_HEAD_KEY, _HEAD.pack(height, block_hash))
            self._remember_committed(height, hashes)
            self._head_height = height
            self._head_hash = block_hash

    def _check_next(self, cb: CertifiedBlock) -> bytes:
        if not isinstance(cb, CertifiedBlock):
            raise ValueError(f"expected a CertifiedBlock, got {type(cb).__name__}")
        height = cb.block.height
        if height != self._head_height + 1:
            raise ValueError(
                f"cannot commit block {height}: the store's head is {self._head_height}, "
                f"so the next block must be {self._head_height + 1}"
            )
        if cb.block.header.parent_hash != self._head_hash:
            raise ValueError(
                f"cannot commit block {height}: its parent hash "
                f"{cb.block.header.parent_hash.hex()[:16]} does not match the hash "
                f"{self._head_hash.hex()[:16]} of {'block ' + str(height - 1) if height > 1 else 'genesis'}"
            )
        block_hash = cb.block.hash()
        cert = cb.certificate
        if cert.height != height or cert.digest != block_hash:
            raise ValueError(f"cannot commit block {height}: its certificate is for another block")
        return block_hash

    @staticmethod
    def _check_statuses(tx_status: Sequence[int] | None, count: int) -> Sequence[int]:
        if tx_status is None:
            return (0,) * count
        if len(tx_status) != count:
            raise ValueError(f"tx_status has {len(tx_status)} entries for {count} transactions")
        for status in tx_status:
            if type(status) is not int or not 0 <= status <= U32_MAX:
                raise ValueError(f"tx status {status!r} is not an integer in 0..2**32-1")
        return tx_status

    def _put_tx_index(
        self,
        wb: plyvel.WriteBatch,
        cb: CertifiedBlock,
        record: bytes,
        statuses: Sequence[int],
        tx_hashes: Sequence[bytes] | None,
        first_seen: Sequence[bool] | None,
    ) -> Sequence[bytes]:
        """Index the block's transactions that were never indexed before (first location wins).

        Returns the hash of every transaction of the block."""
        height = cb.block.height
        put, pack = wb.put, _TXLOC.pack
        txs = cb.block.txs
        if tx_hashes is None:
            tx_hashes = [tx_hash(tx) for tx in txs]
        keys = [_TX + h for h in tx_hashes]
        offsets = _tx_offsets(cb, record)
        if first_seen is not None:
            for index, key in enumerate(keys):
                if first_seen[index]:
                    put(key, pack(height, index, statuses[index], offsets[index], len(txs[index])))
            return tx_hashes
        skip = self._existing(keys)  # already indexed by an earlier block
        for index, (key, tx) in enumerate(zip(keys, txs, strict=True)):
            if key in skip:
                continue
            skip.add(key)  # a second copy in this block keeps the first location too
            put(key, pack(height, index, statuses[index], offsets[index], len(tx)))
        return tx_hashes

    def _existing(self, keys: list[bytes]) -> set[bytes]:
        """Those of `keys` present in the database (looked up in key order: fewer cache misses)."""
        get = self._db.get
        return {key for key in sorted(keys) if get(key) is not None}

    def _put_state(
        self,
        wb: plyvel.WriteBatch,
        writes: Sequence[StateWrite],
        height: int,
        current: Mapping[bytes, int] | None,
    ) -> None:
        """Current and history entries for each write, with version numbers counted per key."""
        put = wb.put
        pack_version, pack_u64, pack_u16 = _VERSION.pack, _U64.pack, _U16.pack
        pack_u32, pack_value_key = _U32.pack, _VALUE_KEY.pack
        keys = {w.key for w in writes}
        if current is None:
            versions = self.current_versions(keys)
        else:
            _check_state_keys(keys)
            missing = keys - current.keys()
            if missing:
                raise ValueError(f"versions lacks {len(missing)} key(s) of the writes")
            versions = {k: current[k] for k in keys}
        for seq, w in enumerate(writes):
            key, value, tx_index = w.key, w.value, w.tx_index
            if value is None:
                kind, body = 0, b""
            elif type(value) is not bytes:
                raise ValueError("state value must be bytes or None")
            elif len(value) > INLINE_VALUE_MAX:
                kind, body = 2, pack_u32(seq)
                put(pack_value_key(_VALUES, height, seq), value)
            else:
                kind, body = 1, value
            if type(tx_index) is not int or not 0 <= tx_index <= U32_MAX:
                raise ValueError(f"tx_index {tx_index!r} is not an integer in 0..2**32-1")
            version = versions[key] + 1
            versions[key] = version
            packed = pack_u64(version)
            put(
                _HISTORY + pack_u16(len(key)) + key + packed,
                pack_version(height, tx_index, kind) + body,
            )
        for key, version in versions.items():  # the last write of each key is its current version
            put(_STATE + key, pack_u64(version))

    @_leveldb_errors
    def current_versions(self, keys: Iterable[bytes]) -> dict[bytes, int]:
        """Current version number (0 = never written) of every key in `keys`."""
        keys = set(keys)
        _check_state_keys(keys)
        get, unpack = self._db.get, _U64.unpack_from
        versions = {}
        for key in sorted(keys):
            current = get(_STATE + key)
            if current is not None and len(current) != _U64.size:
                raise self._corrupt("a current-version entry is malformed")
            versions[key] = 0 if current is None else unpack(current)[0]
        return versions


def _check_state_keys(keys: Iterable[object]) -> None:
    for key in keys:
        if type(key) is not bytes or len(key) > STATE_KEY_BYTES_MAX:
            raise ValueError(f"state key must be bytes of at most {STATE_KEY_BYTES_MAX} bytes")


def destroy(path: str | os.PathLike[str]) -> None:
    """Delete the chain store at `path` (what `redwood repair` does before re-syncing).

    Refuses with StoreError while another process has the store open. Files
    that are not LevelDB's are left alone. Extension of docs/interfaces.md.
    """
    path = Path(path)
    if not path.exists():
        return
    try:
        plyvel.destroy_db(str(path))
    except plyvel.IOError as exc:
        if "lock" in str(exc).lower():
            raise StoreError(
                f"chain store {path} is locked: another process (is the node running?) has "
                f"it open. Stop it first. ({exc})"
            ) from None
        raise StoreError(f"chain store {path} cannot be deleted: {exc}") from None
    except plyvel.Error as exc:
        raise StoreError(f"chain store {path} cannot be deleted: {exc}") from None


# -- module helpers --------------------------------------------------------------


def _corrupt(path: Path, what: str) -> StoreError:
    return StoreError(
        f"chain store {path} is corrupt or inconsistent: {what}. The node will not run on it. "
        f"To recover, stop the node and run `{RECOVERY_COMMAND}` (DIR = the node home that "
        f"holds this data directory): it drops this chain data and re-syncs it from peers."
    )


def _open_db(path: Path, write_buffer_size: int = WRITE_BUFFER_SIZE) -> plyvel.DB:
    leveldb_reads.prefer_pread()  # before the process's first open (that module's docstring)
    options = {**_DB_OPTIONS, "write_buffer_size": write_buffer_size}
    try:
        path.mkdir(parents=True, exist_ok=True)
        return plyvel.DB(str(path), create_if_missing=True, **options)
    except plyvel.CorruptionError as exc:
        raise _corrupt(path, f"LevelDB reports corruption ({exc})") from None
    except plyvel.IOError as exc:
        if "lock" in str(exc).lower():
            raise StoreError(
                f"chain store {path} is locked: another process (is a node already running "
                f"on this home?) has it open. Stop that process first. ({exc})"
            ) from None
        raise _cannot_open(path, exc) from None
    except (plyvel.Error, OSError) as exc:
        raise _cannot_open(path, exc) from None


def _cannot_open(path: Path, exc: Exception) -> StoreError:
    """An I/O failure at open (a full disk, most often): what to do, as at run time."""
    return StoreError(f"chain store {path} cannot be opened: {exc}. {_DISK_ADVICE}")


def _check_genesis(db: plyvel.DB, path: Path, genesis_hash: bytes | None) -> bytes:
    """Record the genesis hash on first open; refuse a different one later."""
    stored = db.get(_GENESIS_KEY)
    fmt = db.get(_FORMAT_KEY)
    if stored is None:
        if next(db.iterator(include_value=False), None) is not None:
            raise _corrupt(path, "the store holds data but no genesis hash")
        if genesis_hash is None:
            raise StoreError(f"{path}: empty chain store, and no genesis hash given to create one")
        with db.write_batch(transaction=True, sync=True) as wb:
            wb.put(_FORMAT_KEY, _U32.pack(FORMAT))
            wb.put(_GENESIS_KEY, genesis_hash)
        return genesis_hash
    if fmt not in {_U32.pack(f) for f in READABLE_FORMATS}:
        shown = _U32.unpack(fmt)[0] if fmt is not None and len(fmt) == _U32.size else fmt
        raise StoreError(
            f"chain store {path} has an unknown format {shown!r}; this node reads formats "
            f"{', '.join(map(str, READABLE_FORMATS))} (a newer Redwood wrote it?)"
        )
    if len(stored) != HASH_BYTES:
        raise _corrupt(path, "the stored genesis hash is malformed")
    stored = bytes(stored)
    if genesis_hash is not None and genesis_hash != stored:
        raise StoreError(
            f"chain store {path} belongs to another chain: its genesis hash is {stored.hex()}, "
            f"the genesis file's is {genesis_hash.hex()}. Point the node at the right home, or "
            f"run `{RECOVERY_COMMAND}` to drop this data and sync the new chain."
        )
    if fmt != _U32.pack(FORMAT):
        # an older format this one reads: from now on the store may hold what it cannot
        db.put(_FORMAT_KEY, _U32.pack(FORMAT), sync=True)
    return stored


def prefix_end(prefix: bytes) -> bytes:
    """The first key after every key that starts with `prefix` (its last byte below 0xff)."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


class MetaSnapshot:
    """Reads of the meta entries at one moment (`ChainStore.meta_snapshot`)."""

    def __init__(self, store: ChainStore, snapshot: Any) -> None:
        self._store = store
        self._snapshot = snapshot

    def get_meta(self, key: bytes) -> bytes | None:
        try:
            value: bytes | None = self._snapshot.get(_META + bytes(key))
        except (plyvel.CorruptionError, plyvel.IOError, RuntimeError) as exc:
            raise StoreError(f"chain store {self._store.path}: reading a snapshot: {exc}") from None
        return value

    def meta_keys(self, start: bytes, stop: bytes, limit: int = 1_000_000) -> list[bytes]:
        try:
            return _list_meta_keys(self._snapshot, start, stop, limit)
        except (plyvel.CorruptionError, plyvel.IOError, RuntimeError) as exc:
            raise StoreError(f"chain store {self._store.path}: reading a snapshot: {exc}") from None

    def get_record(self, key: bytes) -> RecordVersion | None:
        """The current version of a state key as it was at the snapshot (`ChainStore.get_record`)."""
        try:
            return self._store._current_record(self._snapshot.get, key)
        except (plyvel.CorruptionError, plyvel.IOError, RuntimeError) as exc:
            raise StoreError(f"chain store {self._store.path}: reading a snapshot: {exc}") from None


def _list_meta_keys(source: Any, start: bytes, stop: bytes, limit: int) -> list[bytes]:
    """The meta keys in [start, stop) of a plyvel DB or snapshot, at most `limit`."""
    out: list[bytes] = []
    with source.iterator(
        start=_META + bytes(start), stop=_META + bytes(stop), include_value=False
    ) as it:
        for key in it:
            out.append(key[len(_META) :])
            if len(out) >= limit:
                break
    return out


def _meta_entries(meta: Mapping[bytes, bytes | None]) -> list[tuple[bytes, bytes | None]]:
    entries = []
    for key, value in _pairs(meta.items(), "meta"):
        _check_bytes("meta key", key, META_KEY_BYTES_MAX)
        if value is not None and not isinstance(value, bytes):
            raise ValueError("meta value must be bytes or None")
        entries.append((_META + cast(bytes, key), value))
    return entries


def _pairs(items: Iterable[object], what: str) -> Iterator[tuple[object, object]]:
    """(key, value) pairs as plain objects, so that the checks after it see every bad type.

    Typed loops over the caller's pairs would raise TypeError in the compiled
    build (node/native.py) before the store's own checks could say what is wrong.
    A generator: a block's meta holds ~10,000 tree nodes, not worth a second list.
    """
    for item in items:
        if not isinstance(item, tuple) or len(item) != 2:
            raise ValueError(f"{what} entries must be (key, value) pairs")
        yield item[0], item[1]


def _check_bytes(what: str, key: object, max_len: int) -> None:
    if not isinstance(key, bytes) or len(key) > max_len:
        raise ValueError(f"{what} must be bytes of at most {max_len} bytes")
