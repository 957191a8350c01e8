"""Canonical encoding and strict decoding (consensus.codec).

Three layers of evidence:

* round trips: every registered message type, built by the strategies in
  `test_types.py` (valid nested instances) and straight from its schema,
  survives encode -> decode unchanged, and re-encodes to the same bytes;
* an oracle: msgpack's own unpacker + "re-pack must give the same bytes" +
  `codec.from_raw` is an independent definition of "canonical and valid".
  The codec reads bytes with its own reader, so every fuzzed input is
  checked to be accepted by both or refused by both, with equal values;
* fuzzing: random bytes and mutated valid encodings (bit flips, truncation,
  insertion, non-minimal headers, str/bin swaps, maps, floats, ext types...)
  raise nothing but `DecodeError`, and whatever decodes re-encodes to
  exactly the input bytes.

Plus the resource limits: size checks before allocation, bounded nesting.
`--run-slow` runs the fuzzers with a large budget.
"""

import contextlib
import dataclasses
import struct
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus import codec
from consensus.codec import DecodeError, EncodeError
from consensus.types import (
    MAX_BLOCK_TXS,
    Block,
    BlockHeader,
    BlockResponse,
    CertifiedBlock,
    CommitCertificate,
    CommitSignature,
    NewView,
    Prepare,
    Transaction,
    ViewChange,
    ViewRecord,
)
from tests.unit.test_types import GOLDEN_HEADER, STRATEGIES, strategy_for

REGISTERED = sorted(codec.registered().items())
TAG_OF = {cls: tag for tag, cls in REGISTERED}
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- the oracle -------------------------------------------------------------------

REJECT = object()


def oracle(data: bytes) -> Any:
    """What a valid message is, defined with msgpack's unpacker and `from_raw`."""
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=False)
        if msgpack.packb(raw, use_bin_type=True) != data:
            return REJECT
    except Exception:
        return REJECT
    if type(raw) is not list or len(raw) != 3:
        return REJECT
    version, tag, body = raw
    if type(version) is not int or version != codec.FORMAT_VERSION or type(tag) is not int:
        return REJECT
    cls = codec.registered().get(tag)
    if cls is None:
        return REJECT
    try:
        return codec.from_raw(cls, body)
    except DecodeError:
        return REJECT


def assert_decode_contract(data: bytes) -> None:
    """DecodeError or a value that re-encodes to exactly `data`; agrees with the oracle."""
    expected = oracle(data)
    try:
        got = codec.decode(data)
    except DecodeError as exc:
        assert str(exc), "a DecodeError must say what was wrong"
        assert expected is REJECT, f"oracle accepts {expected!r}, decode refused: {exc}"
        return
    assert codec.encode(got) == data
    assert got == expected
    # The same bytes through the other entry points.
    assert codec.decode(bytearray(data)) == got
    assert codec.unpack(data)[:2] == [codec.FORMAT_VERSION, TAG_OF[type(got)]]


def assert_unpack_contract(data: bytes) -> None:
    """`unpack` (schema-less) agrees with msgpack + re-pack on the allowed types."""
    try:
        got = codec.unpack(data)
    except DecodeError as exc:
        assert str(exc)
        return
    assert codec.pack(got) == data
    assert msgpack.unpackb(data, raw=False) == got
    assert _only_allowed_types(got, codec.MAX_UNPACK_DEPTH)


def _only_allowed_types(value: Any, depth: int) -> bool:
    if type(value) is list:
        return depth > 0 and all(_only_allowed_types(x, depth - 1) for x in value)
    if type(value) is int:
        return 0 <= value < 2**64
    return type(value) in (bytes, str, bool, type(None))


# -- round trips --------------------------------------------------------------------


@pytest.mark.parametrize(("tag", "cls"), REGISTERED, ids=[c.__name__ for _, c in REGISTERED])
@FAST
@given(data=st.data())
def test_round_trip_every_registered_type(tag: int, cls: type, data: st.DataObject) -> None:
    obj = data.draw(strategy_for(cls))
    encoded = codec.encode(obj)
    decoded = codec.decode(encoded)
    assert decoded == obj
    assert type(decoded) is cls
    assert codec.encode(decoded) == encoded  # stable
    assert codec.decode(encoded, cls) == obj
    assert codec.decode_body(cls, codec.encode_body(obj)) == obj
    # canonical by msgpack's own definition, and the oracle agrees
    assert msgpack.packb(msgpack.unpackb(encoded, raw=False), use_bin_type=True) == encoded
    assert oracle(encoded) == obj
    assert codec.unpack(encoded)[:2] == [codec.FORMAT_VERSION, tag]
    assert codec.from_raw(cls, codec.unpack(encoded)[2]) == obj


def test_every_types_message_has_a_strategy() -> None:
    for _, cls in REGISTERED:
        if cls.__module__ == "consensus.types":
            assert cls in STRATEGIES, cls.__name__


def test_equal_values_built_separately_encode_identically() -> None:
    a = Block(header=GOLDEN_HEADER, txs=(b"x", b"y"))
    b = Block(header=dataclasses.replace(GOLDEN_HEADER), txs=(b"x" + b"", b"y"))
    assert a is not b and codec.encode(a) == codec.encode(b)
    assert codec.encode(Block(header=GOLDEN_HEADER, txs=[b"x", b"y"])) == codec.encode(a)  # type: ignore[arg-type]


U64_EDGES = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63, 2**64 - 1]


@pytest.mark.parametrize("v", U64_EDGES)
def test_u64_edges_round_trip_and_every_longer_form_is_refused(v: int) -> None:
    good = codec.encode(ViewRecord(view=v))
    assert codec.decode(good) == ViewRecord(view=v)
    prefix = good[: -len(_uint_forms(v)[0])]
    assert prefix == b"\x93\x01\x29\x91"
    for form in _uint_forms(v)[1:]:
        with pytest.raises(DecodeError, match=r"not canonical|expected uint"):
            codec.decode(prefix + form)


def _uint_forms(v: int) -> list[bytes]:
    """Every msgpack encoding of non-negative v, shortest first (uint and signed int forms)."""
    forms = []
    if v <= 0x7F:
        forms.append(bytes([v]))
    for tag, fmt in ((0xCC, ">B"), (0xCD, ">H"), (0xCE, ">I"), (0xCF, ">Q")):
        if v < 2 ** (8 * struct.calcsize(fmt)):
            forms.append(bytes([tag]) + struct.pack(fmt, v))
    for tag, fmt in ((0xD0, ">b"), (0xD1, ">h"), (0xD2, ">i"), (0xD3, ">q")):
        if v < 2 ** (8 * struct.calcsize(fmt) - 1):
            forms.append(bytes([tag]) + struct.pack(fmt, v))
    return forms


@pytest.mark.parametrize("n", [0, 1, 31, 32, 255, 256, 65535, 65536, 70000])
def test_bin_length_edges_round_trip(n: int) -> None:
    tx = Transaction(bytes(32), 1, 2, "put", "a", b"k", b"v" * n, bytes(64))
    assert codec.decode(codec.encode(tx)) == tx


@pytest.mark.parametrize("n", [0, 15, 16, 17, 300])
def test_list_length_edges_round_trip(n: int) -> None:
    block = Block(header=GOLDEN_HEADER, txs=tuple(bytes([i % 256]) * (i % 7) for i in range(n)))
    assert codec.decode(codec.encode(block)) == block


@pytest.mark.parametrize("text", ["", "a" * 31, "a" * 32, "é" * 16, "é" * 32, "€" * 32, "𝄞" * 32])
def test_text_edges_round_trip(text: str) -> None:
    tx = Transaction(bytes(32), 1, 2, text, "a", b"", b"", bytes(64))
    assert codec.decode(codec.encode(tx)) == tx


def test_decode_accepts_bytearray_and_memoryview() -> None:
    data = codec.encode(ViewRecord(view=300))
    assert codec.decode(bytearray(data)) == codec.decode(memoryview(data)) == ViewRecord(view=300)


# -- precise refusals -------------------------------------------------------------------


def _with_body(cls: type, body: Any, version: int = codec.FORMAT_VERSION) -> bytes:
    return codec.pack([version, TAG_OF[cls], body])


def _raw_block(txs: list[Any]) -> list[Any]:
    return [codec.to_raw(GOLDEN_HEADER), txs]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (codec.pack([2, 41, [5]]), "unsupported format version 2"),
        (codec.pack([0, 41, [5]]), "unsupported format version 0"),
        (codec.pack([1, 999, [5]]), "unknown message tag 999"),
        (codec.pack([1, 41]), "envelope"),
        (codec.pack([1, 41, [5], 0]), "envelope"),
        (codec.pack({"v": 1}), "expected array, got map"),
        (codec.pack([True, 41, [5]]), "expected uint, got bool"),
        (codec.pack([1, 41, [5]]) + b"\x00", "1 trailing bytes"),
        (codec.pack([1, 41, [5]])[:-1], "truncated"),
        (codec.pack([1, 41, []]), "ViewRecord: expected ViewRecord as 1 fields, got 0"),
        (codec.pack([1, 41, [-1]]), "ViewRecord.view: expected uint, got negative"),
        (codec.pack([1, 41, [1.0]]), "ViewRecord.view: expected uint, got float"),
        (codec.pack([1, 41, [None]]), "ViewRecord.view: expected uint, got nil"),
        (codec.pack([1, 41, ["5"]]), "ViewRecord.view: expected uint, got str"),
        (codec.pack([1, 41, [msgpack.ExtType(1, b"x")]]), "ViewRecord.view: expected uint, got ext"),
        (_with_body(Block, _raw_block([b"ok", "no"])), r"Block.txs\[1\]: expected bytes \(bin\), got str"),
        (_with_body(Block, _raw_block([b"ok", [b"x"]])), r"Block.txs\[1\]: expected bytes \(bin\), got array"),
        (_with_body(Block, [codec.to_raw(GOLDEN_HEADER)[:-1], []]), "Block.header: expected BlockHeader as 12 fields, got 11"),
        (_with_body(Prepare, [1, 2, b"short", bytes(32), bytes(64)]), "Prepare.digest: expected 32 bytes, got 5"),
        (_with_body(Transaction, [bytes(32), 1, 2, "x" * 33, "a", b"", b"", bytes(64)]), "Transaction.op: text of 33 characters exceeds 32"),
        (_with_body(Transaction, [bytes(32), 1, 2, "x" * 200, "a", b"", b"", bytes(64)]), "Transaction.op: text of 200 bytes exceeds 32 characters"),
        (_with_body(Transaction, [bytes(32), 1, 2, "x", "a", bytes(257), b"", bytes(64)]), "Transaction.key: 257 bytes exceeds maximum 256"),
    ],
)  # fmt: skip
def test_refusals_say_what_was_wrong(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        codec.decode(data)


@pytest.mark.parametrize("n", [0, 5, 31, 32, 64, 255, 256, 300])
def test_text_where_bytes_belong_is_refused_in_every_header_form(n: int) -> None:
    """A str header is never read as bin, even when the length would fit."""
    tx = Transaction(bytes(32), 1, 2, "put", "a", b"", bytes(n), bytes(64))
    good = codec.encode(tx)
    as_text = codec.pack([1, 1, [bytes(32), 1, 2, "put", "a", b"", "x" * n, bytes(64)]])
    assert codec.decode(good) == tx
    with pytest.raises(DecodeError, match=r"Transaction.value: expected bytes \(bin\), got str"):
        codec.decode(as_text)
    block = codec.pack([1, 3, [codec.to_raw(GOLDEN_HEADER), [b"ok", "x" * n]]])
    with pytest.raises(DecodeError, match=r"Block.txs\[1\]: expected bytes \(bin\), got str"):
        codec.decode(block)


def test_bin_running_past_the_end_is_named() -> None:
    data = codec.encode(Block(header=GOLDEN_HEADER, txs=(b"abc",)))[:-1]
    with pytest.raises(
        DecodeError, match=r"Block.txs\[0\]: bin of 3 bytes at offset \d+ runs past the end"
    ):
        codec.decode(data)
    data = codec.encode(Transaction(bytes(32), 1, 2, "put", "a", b"", b"v", bytes(64)))[:-1]
    with pytest.raises(DecodeError, match=r"Transaction.signature: bin of 64 bytes at offset"):
        codec.decode(data)


def test_invalid_utf8_and_surrogates_are_refused() -> None:
    good = codec.encode(Transaction(bytes(32), 1, 2, "ab", "a", b"", b"", bytes(64)))
    at = good.index(b"\xa2ab")
    for bad_text in (
        b"\xa2\xff\xfe",
        b"\xa3\xed\xa0\x80",
        b"\xa2\xc0\xaf",
    ):  # junk, surrogate, overlong
        data = good[:at] + bad_text + good[at + 3 :]
        with pytest.raises(DecodeError, match=r"Transaction.op: invalid UTF-8"):
            codec.decode(data)


def test_nested_error_path_names_the_field() -> None:
    pp = [1, 2, [codec.to_raw(GOLDEN_HEADER), [b"tx"]], bytes(32), bytes(64)]
    pp[2][0][1] = -5  # header height
    vc = [3, 0, [], [[pp, []]], bytes(32), bytes(64)]
    data = _with_body(NewView, [3, [vc], [], bytes(32), bytes(64)])
    with pytest.raises(DecodeError) as info:
        codec.decode(data)
    assert str(info.value).startswith(
        "NewView.view_changes[0].prepared[0].pre_prepare.block.header.height: expected uint"
    )


def test_expected_type_mismatch_and_non_bytes_input() -> None:
    data = codec.encode(ViewRecord(view=1))
    with pytest.raises(DecodeError, match="expected Block, got ViewRecord"):
        codec.decode(data, Block)
    for junk in ("text", None, 5, [1, 2], 1.5):
        with pytest.raises(DecodeError, match="expected bytes"):
            codec.decode(junk)  # type: ignore[arg-type]
        with pytest.raises(DecodeError, match="expected bytes"):
            codec.unpack(junk)  # type: ignore[arg-type]


def test_max_bytes_is_checked_first() -> None:
    data = codec.encode(Block(header=GOLDEN_HEADER, txs=(bytes(100),)))
    with pytest.raises(DecodeError, match="exceeds maximum 100"):
        codec.decode(data, max_bytes=100)
    assert codec.decode(data, max_bytes=len(data)).txs == (bytes(100),)


def test_decode_body_refuses_trailing_and_wrong_shape() -> None:
    body = codec.encode_body(GOLDEN_HEADER)
    assert codec.decode_body(BlockHeader, body) == GOLDEN_HEADER
    with pytest.raises(DecodeError, match="trailing"):
        codec.decode_body(BlockHeader, body + b"\xc0")
    with pytest.raises(DecodeError, match=r"BlockHeader.chain_id: expected text"):
        codec.decode_body(BlockHeader, codec.pack([b"x", *codec.to_raw(GOLDEN_HEADER)[1:]]))


# -- resource limits -----------------------------------------------------------------


def _peak_bytes(fn: Callable[[], object]) -> tuple[int, float]:
    tracemalloc.start()
    tracemalloc.reset_peak()
    started = time.perf_counter()
    with contextlib.suppress(DecodeError):
        fn()
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, elapsed


@pytest.mark.parametrize(
    "header",
    [b"\xc6\x80\x00\x00\x00", b"\xc6\xff\xff\xff\xff", b"\xdb\x80\x00\x00\x00", b"\xc5\xff\xff"],
)
def test_huge_length_header_in_short_buffer_is_refused_cheaply(header: bytes) -> None:
    prefix = codec.encode(Transaction(bytes(32), 1, 2, "put", "a", b"", b"", bytes(64)))
    at = prefix.index(b"\xa3put")
    for data in (
        prefix[:at] + header + b"xyz",  # in a str field
        codec.encode(Block(header=GOLDEN_HEADER, txs=()))[:-1] + b"\x91" + header + b"abc",  # a tx
        header + b"abc",  # top level
    ):
        for fn in (codec.decode, codec.unpack):
            with pytest.raises(DecodeError):
                fn(data)
            peak, elapsed = _peak_bytes(lambda fn=fn, data=data: fn(data))
            assert peak < 64 * 1024 and elapsed < 0.05


def test_deep_nesting_does_not_blow_the_stack() -> None:
    for data in (b"\x91" * 200_000, b"\x93\x01\x29" + b"\x91" * 200_000 + b"\x00"):
        with pytest.raises(DecodeError):
            codec.decode(data)
        with pytest.raises(DecodeError, match="nested deeper than 32"):
            codec.unpack(data)
    ok = b"\x91" * codec.MAX_UNPACK_DEPTH + b"\x05"
    assert codec.unpack(ok) is not None
    with pytest.raises(DecodeError, match="nested deeper"):
        codec.unpack(b"\x91" + ok)


@pytest.mark.parametrize(
    "count_header", [b"\xdd\x00\x0f\x42\x40", b"\xdd\xff\xff\xff\xff", b"\xdc\xff\xff"]
)
def test_huge_array_headers_do_not_allocate(count_header: bytes) -> None:
    """msgpack's own unpacker pre-allocates lists from these headers: 5 KB -> 80 MB."""
    nested = count_header * 1000
    block_prefix = codec.encode(Block(header=GOLDEN_HEADER, txs=()))[:-1]
    for data in (nested, b"\x93\x01\x03" + nested, block_prefix + count_header + b"\xc4\x00" * 10):
        for fn in (codec.decode, codec.unpack):
            with pytest.raises(DecodeError):
                fn(data)
            peak, elapsed = _peak_bytes(lambda fn=fn, data=data: fn(data))
            assert peak < 256 * 1024, f"{fn.__name__} allocated {peak} bytes for {len(data)}"
            assert elapsed < 0.05


def test_array_claiming_more_items_than_bytes_remain_is_refused_early() -> None:
    data = (
        codec.encode(Block(header=GOLDEN_HEADER, txs=()))[:-1] + b"\xdc\x00\x20" + b"\xc4\x00" * 3
    )
    with pytest.raises(
        DecodeError, match=r"Block.txs: array claims 32 items but only 6 bytes remain"
    ):
        codec.decode(data)


def test_list_longer_than_its_maximum_is_refused_before_reading_items() -> None:
    n = MAX_BLOCK_TXS + 1
    data = codec.encode(Block(header=GOLDEN_HEADER, txs=()))[:-1] + b"\xdd" + n.to_bytes(4, "big")
    with pytest.raises(DecodeError, match=f"Block.txs: {n} items exceeds maximum {MAX_BLOCK_TXS}"):
        codec.decode(data)


# -- encoding refuses what could not be decoded -------------------------------------------


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (ViewRecord(view=-1), "ViewRecord.view: integer -1 out of range"),
        (ViewRecord(view=2**64), "out of range"),
        (ViewRecord(view=True), "expected int, got bool"),
        (ViewRecord(view=1.0), "expected int, got float"),  # type: ignore[arg-type]
        (Prepare(1, 2, b"short", bytes(32), bytes(64)), "Prepare.digest: expected 32 bytes, got 5"),
        (Prepare(1, 2, "x" * 32, bytes(32), bytes(64)), "expected bytes, got str"),  # type: ignore[arg-type]
        (Transaction(bytes(32), 1, 2, "x" * 33, "a", b"", b"", bytes(64)), "Transaction.op: text of 33"),
        (Transaction(bytes(32), 1, 2, "\ud800", "a", b"", b"", bytes(64)), "not encodable as UTF-8"),
        (Transaction(bytes(32), 1, 2, b"put", "a", b"", b"", bytes(64)), "expected str, got bytes"),  # type: ignore[arg-type]
        (Block(header=GOLDEN_HEADER, txs=("tx",)), "Block.txs: expected bytes, got str"),  # type: ignore[arg-type]
        (Block(header=GOLDEN_HEADER, txs=b"tx"), "expected a tuple"),  # type: ignore[arg-type]
        (Block(header=ViewRecord(1), txs=()), "expected BlockHeader, got ViewRecord"),  # type: ignore[arg-type]
        (CertifiedBlock(Block(GOLDEN_HEADER, ()), None), "expected CommitCertificate, got NoneType"),  # type: ignore[arg-type]
        ("not a message", "not a registered message type"),
    ],
)  # fmt: skip
def test_encode_refuses_values_that_could_not_be_decoded(obj: Any, message: str) -> None:
    with pytest.raises(EncodeError, match=message):
        codec.encode(obj)


def test_encode_error_is_both_type_and_value_error() -> None:
    assert issubclass(EncodeError, TypeError) and issubclass(EncodeError, ValueError)
    assert not issubclass(EncodeError, DecodeError)


def test_encode_refuses_overlong_list() -> None:
    sig = CommitSignature(bytes(32), bytes(64))
    too_many = CommitCertificate(1, 1, bytes(32), 0, (sig,) * 300)
    with pytest.raises(EncodeError, match="300 items exceeds maximum 256"):
        codec.encode(too_many)


def test_int_subclasses_encode_as_plain_ints() -> None:
    from consensus.types import Evidence, VoteKind

    ev = Evidence(VoteKind.PREPARE, bytes(32), 1, 2, b"a", b"b")
    got = codec.decode(codec.encode(ev))
    assert got == ev and type(got.kind) is int


# -- the schema-less `unpack` -----------------------------------------------------------

plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(0, 2**64 - 1)
    | st.binary(max_size=300)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=20),
    max_leaves=40,
)


@FAST
@given(plain)
def test_unpack_round_trips_plain_structures(value: Any) -> None:
    data = codec.pack(value)
    assert codec.unpack(data) == value
    assert_unpack_contract(data)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({}, "forbidden msgpack type map"),
        ([1, {"a": 1}], r"\[1\]: forbidden msgpack type map"),
        (1.5, "float"),
        (-1, "negative"),
        (msgpack.ExtType(5, b"x"), "ext"),
    ],
)
def test_unpack_refuses_forbidden_types(value: Any, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        codec.unpack(msgpack.packb(value, use_bin_type=True))


def test_unpack_refuses_non_minimal_forms() -> None:
    for data in (b"\xcc\x05", b"\xd9\x01a", b"\xc5\x00\x01a", b"\xdc\x00\x01\x05", b"\xd0\x05"):
        with pytest.raises(DecodeError):
            codec.unpack(data)


# -- fuzzing ------------------------------------------------------------------------------

any_message = st.sampled_from([cls for _, cls in REGISTERED]).flatmap(strategy_for)
valid_encodings = any_message.map(codec.encode)

INTERESTING = [0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xC3, 0xC4,
               0xC5, 0xC6, 0xC7, 0xCA, 0xCB, 0xCC, 0xCF, 0xD0, 0xD4, 0xD9, 0xDB, 0xDC, 0xDD,
               0xDE, 0xDF, 0xE0, 0xFF]  # fmt: skip


@st.composite
def byte_mutations(draw: st.DrawFn) -> bytes:
    """A valid encoding with one byte-level mutation."""
    data = bytearray(draw(valid_encodings))
    op = draw(
        st.sampled_from(
            ["flip", "truncate", "extend", "insert", "delete", "poke", "version", "tag"]
        )
    )
    # uniform position: plain integers() would mostly hit the envelope
    at = draw(st.randoms(use_true_random=False)).randrange(len(data))
    if op == "flip":
        data[at] ^= 1 << draw(st.integers(0, 7))
    elif op == "truncate":
        del data[at:]
    elif op == "extend":
        data += draw(st.binary(min_size=1, max_size=8))
    elif op == "insert":
        data[at:at] = draw(
            st.binary(min_size=1, max_size=4)
            | st.sampled_from(INTERESTING).map(lambda b: bytes([b]))
        )
    elif op == "delete":
        del data[at : at + draw(st.integers(1, 4))]
    elif op == "poke":
        data[at] = draw(st.sampled_from(INTERESTING))
    elif op == "version":
        data[1] = draw(st.integers(0, 255))
    else:
        data[2] = draw(st.integers(0, 255))
    return bytes(data)


def _paths(value: Any, prefix: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    out = [prefix]
    if type(value) is list:
        for i, x in enumerate(value):
            out += _paths(x, (*prefix, i))
    return out


def _replace(value: Any, path: tuple[int, ...], new: Any) -> Any:
    if not path:
        return new
    copy = list(value)
    copy[path[0]] = _replace(value[path[0]], path[1:], new)
    return copy


def _get(value: Any, path: tuple[int, ...]) -> Any:
    for i in path:
        value = value[i]
    return value


foreign_values = st.one_of(
    st.floats(allow_nan=False),
    st.integers(-(2**63), -1),
    st.dictionaries(st.text(max_size=3), st.integers(0, 5), max_size=2),
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=20)),
    st.none(),
    st.booleans(),
    st.integers(0, 2**64 - 1),
    st.binary(max_size=40),
    st.text(max_size=10),
    st.lists(st.integers(0, 3), max_size=3),
)


@st.composite
def structural_mutations(draw: st.DrawFn) -> bytes:
    """A valid message whose plain structure was changed, packed canonically or loosely."""
    raw = msgpack.unpackb(draw(valid_encodings), raw=False)
    path = draw(st.sampled_from(_paths(raw)))
    old = _get(raw, path)
    op = draw(st.sampled_from(["swap", "foreign", "drop", "add", "keep"]))
    if op == "swap" and type(old) is bytes:
        # same length as the bytes (a str8 where a bin8 was), or the text they might be
        new: Any = draw(st.sampled_from(["x" * len(old), old.decode("utf-8", "replace")]))
    elif op == "swap" and type(old) is str:
        new = old.encode()
    elif op == "drop" and type(old) is list and old:
        new = old[:-1]
    elif op == "add" and type(old) is list:
        new = [*old, draw(foreign_values)]
    elif op == "keep":
        new = old
    else:
        new = draw(foreign_values)
    mutated = _replace(raw, path, new)
    return draw(loose_pack(mutated))


@st.composite
def loose_pack(draw: st.DrawFn, value: Any) -> bytes:
    """msgpack of `value`, each header in the shortest form or (drawn) a longer one."""
    longer = draw(st.booleans())

    def header(forms: list[bytes]) -> bytes:
        return forms[draw(st.integers(0, len(forms) - 1))] if longer else forms[0]

    def go(v: Any) -> bytes:
        if type(v) is list:
            forms = [bytes([0x90 | len(v)])] if len(v) <= 15 else []
            forms += [b"\xdc" + struct.pack(">H", len(v))] if len(v) < 2**16 else []
            return header([*forms, b"\xdd" + struct.pack(">I", len(v))]) + b"".join(
                go(x) for x in v
            )
        if type(v) is int and 0 <= v < 2**64:
            return header(_uint_forms(v))
        if type(v) is bytes:
            n = len(v)
            forms = [b"\xc4" + bytes([n])] if n < 256 else []
            forms += [b"\xc5" + struct.pack(">H", n)] if n < 2**16 else []
            return header([*forms, b"\xc6" + struct.pack(">I", n)]) + v
        if type(v) is str:
            b = v.encode("utf-8", "surrogatepass")
            n = len(b)
            forms = [bytes([0xA0 | n])] if n <= 31 else []
            forms += [b"\xd9" + bytes([n])] if n < 256 else []
            forms += [b"\xda" + struct.pack(">H", n)] if n < 2**16 else []
            return header([*forms, b"\xdb" + struct.pack(">I", n)]) + b
        if type(v) is float and draw(st.booleans()) and abs(v) < 3e38:
            return msgpack.packb(v, use_single_float=True)
        return msgpack.packb(v, use_bin_type=True)

    return go(value)


@FAST
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    assert_decode_contract(data)
    assert_unpack_contract(data)


@FAST
@given(st.binary(max_size=100))
def test_fuzz_random_bytes_after_a_valid_envelope_prefix(tail: bytes) -> None:
    for tag, _ in REGISTERED[:: max(1, len(REGISTERED) // 6)]:
        assert_decode_contract(b"\x93\x01" + codec.pack(tag) + tail)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(byte_mutations())
def test_fuzz_byte_mutations_of_valid_encodings(data: bytes) -> None:
    assert_decode_contract(data)
    assert_unpack_contract(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(structural_mutations())
def test_fuzz_structural_mutations(data: bytes) -> None:
    assert_decode_contract(data)
    assert_unpack_contract(data)


def test_loose_pack_really_produces_non_canonical_forms_that_are_refused() -> None:
    """Guards the fuzzer: longer headers of a valid message must reach the decoder and fail."""
    raw = msgpack.unpackb(codec.encode(ViewRecord(view=5)), raw=False)
    assert _uint_forms(5)[1] == b"\xcc\x05"
    with pytest.raises(DecodeError, match="not canonical"):
        codec.decode(b"\x93\x01\x29\x91\xcc\x05")
    assert raw == [1, 41, [5]]


SLOW = settings(max_examples=20_000, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.mark.slow
@SLOW
@given(st.one_of(byte_mutations(), structural_mutations(), st.binary(max_size=400)))
def test_fuzz_large_budget(data: bytes) -> None:
    assert_decode_contract(data)
    assert_unpack_contract(data)


@pytest.mark.slow
@settings(max_examples=3_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(any_message)
def test_round_trip_large_budget(obj: Any) -> None:
    data = codec.encode(obj)
    assert codec.decode(data) == obj and oracle(data) == obj


# -- speed (generous bound; the figures are in the report) -----------------------------


def _big_block(n: int) -> Block:
    txs = tuple(
        codec.encode(
            Transaction(bytes(32), i, 9, "put", "agency0", b"k%d" % i, bytes(200), bytes(64))
        )
        for i in range(n)
    )
    return Block(header=dataclasses.replace(GOLDEN_HEADER, tx_count=n), txs=txs)


def test_big_block_decodes_fast_enough() -> None:
    block = _big_block(4000)
    data = codec.encode(block)
    best = min(_timed(lambda: codec.decode(data, Block)) for _ in range(3))
    assert codec.decode(data) == block
    assert best < 0.25, f"decoding a 4,000-tx block took {best * 1000:.1f} ms"


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def test_view_change_with_many_prepared_certificates_round_trips() -> None:
    from tests.unit.test_types import _fixed_instance

    vc = _fixed_instance(ViewChange)
    vc = dataclasses.replace(vc, prepared=vc.prepared * 20)
    resp = BlockResponse(blocks=(_fixed_instance(CertifiedBlock),) * 17)
    for obj in (vc, resp):
        assert codec.decode(codec.encode(obj)) == obj
