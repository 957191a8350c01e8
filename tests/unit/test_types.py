"""The protocol's data types: strategies for every wire type, signing, hashing, null blocks.

The Hypothesis strategies here build *valid* instances of every message in
`consensus.types`, nested ones included (blocks with encoded transactions and
a matching tx root, prepared certificates whose prepares match their
pre-prepare, view changes carrying them, ...). `test_codec.py` uses them for
its round-trip and fuzz tests; `from_schema` covers any registered type,
including ones added later, straight from its wire schema.
"""

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import codec, merkle
from consensus.codec import Bytes, Kind, ListOf, Optional, Str, Struct
from consensus.crypto import ZERO_HASH, Domain, SigningKey, sha256, verify
from consensus.types import (
    Block,
    BlockHeader,
    BlockRequest,
    BlockResponse,
    CertifiedBlock,
    Checkpoint,
    Commit,
    CommitCertificate,
    CommitSignature,
    Evidence,
    NewView,
    Prepare,
    PreparedCertificate,
    PrePrepare,
    SignedVote,
    StatusAnnouncement,
    Transaction,
    ViewChange,
    ViewRecord,
    VoteKind,
    signed_payload,
    tx_hash,
)

CHAIN = "redwood-test"

# -- strategies ------------------------------------------------------------------

u64 = st.one_of(st.integers(0, 300), st.integers(0, 2**64 - 1))
hashes = st.binary(min_size=32, max_size=32)
keys = st.binary(min_size=32, max_size=32)
sigs = st.binary(min_size=64, max_size=64)


def texts(max_chars: int) -> st.SearchStrategy[str]:
    return st.text(st.characters(codec="utf-8"), max_size=max_chars)


transactions = st.builds(
    Transaction,
    sender=keys,
    nonce=u64,
    valid_until=u64,
    op=st.one_of(st.sampled_from(["put", "delete", "gov.add_validator"]), texts(32)),
    agency=texts(64),
    key=st.binary(max_size=256),
    value=st.binary(max_size=300),
    signature=sigs,
)
tx_bytes = transactions.map(codec.encode)

headers = st.builds(
    BlockHeader,
    chain_id=texts(64),
    height=u64,
    view=u64,
    epoch=u64,
    parent_hash=hashes,
    tx_root=hashes,
    tx_count=u64,
    state_height=u64,
    state_root=hashes,
    proposer=keys,
    timestamp_ms=u64,
    validator_set_hash=hashes,
)


@st.composite
def blocks(draw: st.DrawFn, max_txs: int = 4) -> Block:
    """A block whose header counts its transactions and commits to their Merkle root."""
    txs = tuple(draw(st.lists(st.one_of(tx_bytes, st.binary(max_size=40)), max_size=max_txs)))
    header = draw(headers)
    header = dataclasses.replace(header, tx_count=len(txs), tx_root=merkle.root(txs))
    return Block(header=header, txs=txs)


@st.composite
def pre_prepares(draw: st.DrawFn) -> PrePrepare:
    block = draw(blocks())
    h = block.header
    return PrePrepare(
        view=h.view, height=h.height, block=block, replica=h.proposer, signature=draw(sigs)
    )


def votes(cls: type[Any]) -> st.SearchStrategy[Any]:
    return st.builds(cls, view=u64, height=u64, digest=hashes, replica=keys, signature=sigs)


prepares = votes(Prepare)
commits = votes(Commit)
checkpoints = st.builds(Checkpoint, height=u64, state_root=hashes, replica=keys, signature=sigs)


@st.composite
def prepared_certificates(draw: st.DrawFn) -> PreparedCertificate:
    pp = draw(pre_prepares())
    replicas = draw(st.lists(keys, max_size=3, unique=True))
    ps = tuple(Prepare(pp.view, pp.height, pp.digest, r, draw(sigs)) for r in replicas)
    return PreparedCertificate(pre_prepare=pp, prepares=ps)


@st.composite
def view_changes(draw: st.DrawFn) -> ViewChange:
    stable = draw(u64)
    root = draw(hashes)
    proof = tuple(
        Checkpoint(stable, root, r, draw(sigs))
        for r in draw(st.lists(keys, max_size=3, unique=True))
    )
    return ViewChange(
        new_view=draw(u64),
        stable_height=stable,
        checkpoint_proof=proof,
        prepared=tuple(draw(st.lists(prepared_certificates(), max_size=2))),
        replica=draw(keys),
        signature=draw(sigs),
    )


new_views = st.builds(
    NewView,
    view=u64,
    view_changes=st.lists(view_changes(), max_size=2).map(tuple),
    pre_prepares=st.lists(pre_prepares(), max_size=2).map(tuple),
    replica=keys,
    signature=sigs,
)
commit_signatures = st.builds(CommitSignature, replica=keys, signature=sigs)
commit_certificates = st.builds(
    CommitCertificate,
    view=u64,
    height=u64,
    digest=hashes,
    epoch=u64,
    signatures=st.lists(commit_signatures, max_size=4).map(tuple),
)


@st.composite
def certified_blocks(draw: st.DrawFn) -> CertifiedBlock:
    block = draw(blocks())
    cert = draw(commit_certificates)
    cert = dataclasses.replace(cert, height=block.height, digest=block.hash())
    return CertifiedBlock(block=block, certificate=cert)


@st.composite
def evidence(draw: st.DrawFn) -> Evidence:
    kind = draw(st.sampled_from([VoteKind.PREPARE, VoteKind.COMMIT]))
    cls = Prepare if kind == VoteKind.PREPARE else Commit
    first, second = draw(votes(cls)), draw(votes(cls))
    return Evidence(
        kind=int(kind),
        replica=first.replica,
        view=first.view,
        height=first.height,
        first=codec.encode(first),
        second=codec.encode(second),
    )


STRATEGIES: dict[type, st.SearchStrategy[Any]] = {
    Transaction: transactions,
    BlockHeader: headers,
    Block: blocks(),
    PrePrepare: pre_prepares(),
    Prepare: prepares,
    Commit: commits,
    Checkpoint: checkpoints,
    ViewChange: view_changes(),
    NewView: new_views,
    CommitCertificate: commit_certificates,
    CertifiedBlock: certified_blocks(),
    BlockRequest: st.builds(BlockRequest, from_height=u64, to_height=u64),
    BlockResponse: st.builds(
        BlockResponse, blocks=st.lists(certified_blocks(), max_size=2).map(tuple)
    ),
    StatusAnnouncement: st.builds(StatusAnnouncement, height=u64, view=u64, replica=keys),
    Evidence: evidence(),
    SignedVote: st.builds(SignedVote, kind=st.integers(1, 3), view=u64, height=u64, digest=hashes),
    ViewRecord: st.builds(ViewRecord, view=u64),
    PreparedCertificate: prepared_certificates(),
    CommitSignature: commit_signatures,
}


def _kind_strategy(kind: Kind) -> st.SearchStrategy[Any]:
    if kind is codec.U64:
        return u64
    if kind is codec.BOOL:
        return st.booleans()
    if isinstance(kind, Bytes):
        if kind.size is not None:
            return st.binary(min_size=kind.size, max_size=kind.size)
        return st.binary(max_size=min(kind.high, 300))
    if isinstance(kind, Str):
        return texts(min(kind.max_len, 80))
    if isinstance(kind, ListOf):
        return st.lists(_kind_strategy(kind.item), max_size=min(kind.max_len, 3)).map(tuple)
    if isinstance(kind, Optional):
        return st.none() | _kind_strategy(kind.item)
    if isinstance(kind, Struct):
        return st.deferred(lambda: from_schema(kind.cls))
    raise AssertionError(f"no strategy for wire kind {kind!r}")


def from_schema(cls: type) -> st.SearchStrategy[Any]:
    """Instances of any wire dataclass, built from its declared kinds (not semantically valid)."""
    fields = {name: _kind_strategy(kind) for name, kind in codec.schema(cls)}
    return st.builds(cls, **fields)


def strategy_for(cls: type) -> st.SearchStrategy[Any]:
    """Semantically shaped instances where we have them, schema-driven ones too."""
    if cls in STRATEGIES:
        return st.one_of(STRATEGIES[cls], from_schema(cls))
    return from_schema(cls)


SIGNED_TYPES = [
    cls
    for cls in codec.registered().values()
    if codec.schema(cls)[-1][0] == "signature" and hasattr(cls, "DOMAIN")
]

# -- tests -------------------------------------------------------------------------


def test_every_registered_type_in_types_has_a_handwritten_strategy() -> None:
    missing = [
        c.__name__
        for c in codec.registered().values()
        if c.__module__ == "consensus.types" and c not in STRATEGIES
    ]
    assert not missing


def test_signed_types_are_the_expected_ones_with_unique_domains() -> None:
    names = {c.__name__ for c in SIGNED_TYPES}
    assert {
        "Transaction",
        "PrePrepare",
        "Prepare",
        "Commit",
        "Checkpoint",
        "ViewChange",
        "NewView",
    } <= names
    domains = [c.DOMAIN for c in SIGNED_TYPES]
    assert len(domains) == len(set(domains))


@pytest.mark.parametrize("cls", SIGNED_TYPES, ids=lambda c: c.__name__)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_signed_payload_excludes_only_the_signature(cls: type, data: st.DataObject) -> None:
    obj = data.draw(strategy_for(cls))
    payload = signed_payload(obj)
    raw = codec.to_raw(obj)
    assert payload == codec.pack(raw[:-1])
    assert codec.unpack(payload) == codec.unpack(codec.encode_body(obj))[:-1]
    other_sig = dataclasses.replace(
        obj, signature=bytes(64) if obj.signature != bytes(64) else b"\x01" * 64
    )
    assert signed_payload(other_sig) == payload


@pytest.mark.parametrize("cls", SIGNED_TYPES, ids=lambda c: c.__name__)
def test_signed_payload_changes_with_every_other_field(cls: type) -> None:
    obj = _fixed_instance(cls)
    base = signed_payload(obj)
    for name, _ in codec.schema(cls)[:-1]:
        changed = dataclasses.replace(obj, **{name: _different(getattr(obj, name), cls, name)})
        assert signed_payload(changed) != base, name


def _different(value: Any, cls: type, name: str) -> Any:
    kind = dict(codec.schema(cls))[name]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, bytes):
        return bytes([value[0] ^ 1]) + value[1:] if value else b"\x00"
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, tuple):
        return value[:-1] if value else (_fixed_instance(kind.item.cls),)
    return _fixed_instance(type(value), salt=1)


def _fixed_instance(cls: type, salt: int = 0) -> Any:
    """A deterministic instance with every field non-empty (recursive)."""
    values = {}
    for i, (name, kind) in enumerate(codec.schema(cls)):
        values[name] = _fixed_value(kind, i + salt)
    return cls(**values)


def _fixed_value(kind: Kind, n: int) -> Any:
    if kind is codec.U64:
        return n + 1
    if kind is codec.BOOL:
        return True
    if isinstance(kind, Bytes):
        return bytes([n % 256]) * (kind.size or 3)
    if isinstance(kind, Str):
        return f"s{n}"
    if isinstance(kind, ListOf):
        return (_fixed_value(kind.item, n),)
    if isinstance(kind, Optional):
        return _fixed_value(kind.item, n)
    if isinstance(kind, Struct):
        return _fixed_instance(kind.cls, n)
    raise AssertionError(kind)


@settings(max_examples=10, deadline=None)
@given(transactions)
def test_transaction_signature_round_trip(tx: Transaction) -> None:
    key = SigningKey(bytes(range(32)))
    tx = dataclasses.replace(tx, sender=key.public)
    signed = dataclasses.replace(tx, signature=key.sign(Domain.TX, CHAIN, signed_payload(tx)))
    data = codec.encode(signed)
    got = codec.decode(data, Transaction)
    assert got == signed
    assert verify(got.sender, got.signature, Domain.TX, CHAIN, signed_payload(got))
    assert not verify(got.sender, got.signature, Domain.TX, CHAIN + "x", signed_payload(got))
    assert not verify(got.sender, got.signature, Domain.PREPARE, CHAIN, signed_payload(got))
    tampered = dataclasses.replace(got, nonce=(got.nonce + 1) % 2**64)
    assert not verify(got.sender, got.signature, Domain.TX, CHAIN, signed_payload(tampered))
    assert tx_hash(data) == sha256(data)


GOLDEN_HEADER = BlockHeader(
    chain_id="redwood-local",
    height=7,
    view=2,
    epoch=1,
    parent_hash=b"\x11" * 32,
    tx_root=b"\x22" * 32,
    tx_count=3,
    state_height=3,
    state_root=b"\x33" * 32,
    proposer=b"\x44" * 32,
    timestamp_ms=1_700_000_000_000,
    validator_set_hash=b"\x55" * 32,
)


def test_block_header_hash_is_sha256_of_canonical_body_and_stable() -> None:
    """Golden value: a change here means every stored block hash changes (a fork)."""
    body = codec.encode_body(GOLDEN_HEADER)
    assert GOLDEN_HEADER.hash() == sha256(body)
    assert body.hex() == (
        "9cad726564776f6f642d6c6f63616c070201c420" + "11" * 32 + "c420" + "22" * 32
        + "0303c420" + "33" * 32 + "c420" + "44" * 32 + "cf0000018bcfe56800c420" + "55" * 32
    )  # fmt: skip
    assert GOLDEN_HEADER.hash().hex() == GOLDEN_HEADER_HASH
    copy = BlockHeader(*[getattr(GOLDEN_HEADER, f.name) for f in dataclasses.fields(BlockHeader)])
    assert copy.hash() == GOLDEN_HEADER.hash()


GOLDEN_HEADER_HASH = sha256(
    bytes.fromhex(
        "9cad726564776f6f642d6c6f63616c070201c420" + "11" * 32 + "c420" + "22" * 32
        + "0303c420" + "33" * 32 + "c420" + "44" * 32 + "cf0000018bcfe56800c420" + "55" * 32
    )
).hex()  # fmt: skip


def test_block_header_hash_changes_with_every_field() -> None:
    base = GOLDEN_HEADER.hash()
    for f in dataclasses.fields(BlockHeader):
        changed = dataclasses.replace(
            GOLDEN_HEADER,
            **{f.name: _different(getattr(GOLDEN_HEADER, f.name), BlockHeader, f.name)},
        )
        assert changed.hash() != base, f.name


def test_block_hash_height_and_digest_come_from_the_header() -> None:
    block = Block(header=GOLDEN_HEADER, txs=(b"a", b"b", b"c"))
    assert block.hash() == GOLDEN_HEADER.hash()
    assert block.height == 7
    assert dataclasses.replace(block, txs=()).hash() == block.hash()  # txs bind via tx_root
    pp = PrePrepare(view=2, height=7, block=block, replica=b"\x44" * 32, signature=bytes(64))
    assert pp.digest == block.hash()


@pytest.mark.parametrize(
    ("tx_count", "state_root", "null"),
    [
        (0, ZERO_HASH, True),
        (1, ZERO_HASH, False),
        (0, b"\x01" + bytes(31), False),
        (5, b"\x33" * 32, False),
    ],
)
def test_is_null(tx_count: int, state_root: bytes, null: bool) -> None:
    h = dataclasses.replace(GOLDEN_HEADER, tx_count=tx_count, state_root=state_root)
    assert h.is_null is null


@pytest.mark.parametrize("cls", list(STRATEGIES), ids=lambda c: c.__name__)
def test_types_are_frozen_and_slotted(cls: type) -> None:
    obj = _fixed_instance(cls)
    assert not hasattr(obj, "__dict__")
    first = codec.schema(cls)[0][0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(obj, first, getattr(obj, first))
    assert hash(obj) == hash(_fixed_instance(cls))  # frozen: hashable, by value


def test_vote_kind_values_are_stable() -> None:
    assert [int(k) for k in VoteKind] == [1, 2, 3]


def test_wire_tags_are_stable() -> None:
    """Tags are part of the wire format: renumbering one is a protocol break."""
    tags = {
        cls.__name__: tag
        for tag, cls in codec.registered().items()
        if cls.__module__ == "consensus.types"
    }
    assert tags == {
        "Transaction": 1, "BlockHeader": 2, "Block": 3, "PrePrepare": 10, "Prepare": 11,
        "Commit": 12, "Checkpoint": 13, "ViewChange": 14, "NewView": 15,
        "CommitCertificate": 20, "CertifiedBlock": 21, "BlockRequest": 22, "BlockResponse": 23,
        "StatusAnnouncement": 24, "Evidence": 30, "SignedVote": 40, "ViewRecord": 41,
    }  # fmt: skip
