"""Canonical msgpack encoding of Redwood's data types, and strict decoding.

Every wire object is a frozen dataclass whose fields declare a *kind*
(`U64`, `Bytes(32)`, `ListOf(...)`, ...). An object encodes as a msgpack
array of its fields in declaration order; a top-level message is the envelope
`[FORMAT_VERSION, tag, body]`. Only arrays, unsigned ints, bools, nil, str and
bin are used: no maps, no floats, no extension types. msgpack always picks the
shortest form of a value, so re-packing the decoded structure and comparing
it with the input proves the input was the one canonical encoding; anything
else is rejected. Hashes and signatures are therefore stable.

Decoding untrusted bytes raises `DecodeError` and nothing else: sizes are
checked (by msgpack's limits) before anything is allocated, every field's type
and bound is checked, and no half-valid object is ever returned.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

import msgpack

FORMAT_VERSION = 1
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
MAX_LIST_ITEMS = 1_000_000
U64_MAX = 2**64 - 1

T = TypeVar("T")


class DecodeError(ValueError):
    """Bytes from outside are not a valid Redwood object. The message says why."""


class Kind:
    """How one field is checked (decode) and lowered (encode)."""

    def check(self, raw: Any, path: str) -> Any:
        raise NotImplementedError

    def dump(self, value: Any) -> Any:
        return value


class _U64(Kind):
    def check(self, raw: Any, path: str) -> Any:
        if type(raw) is not int:
            raise DecodeError(f"{path}: expected unsigned integer, got {type(raw).__name__}")
        if raw < 0 or raw > U64_MAX:
            raise DecodeError(f"{path}: integer {raw} out of range 0..2**64-1")
        return raw


class _Bool(Kind):
    def check(self, raw: Any, path: str) -> Any:
        if type(raw) is not bool:
            raise DecodeError(f"{path}: expected bool, got {type(raw).__name__}")
        return raw


class Bytes(Kind):
    """bin of exactly `size` bytes, or of at most `max_len` bytes."""

    def __init__(self, size: int | None = None, *, max_len: int | None = None) -> None:
        assert (size is None) != (max_len is None)
        self.size = size
        self.max_len = max_len

    def check(self, raw: Any, path: str) -> Any:
        if type(raw) is not bytes:
            raise DecodeError(f"{path}: expected bytes, got {type(raw).__name__}")
        if self.size is not None and len(raw) != self.size:
            raise DecodeError(f"{path}: expected {self.size} bytes, got {len(raw)}")
        if self.max_len is not None and len(raw) > self.max_len:
            raise DecodeError(f"{path}: {len(raw)} bytes exceeds maximum {self.max_len}")
        return raw


class Str(Kind):
    """UTF-8 text of at most `max_len` characters."""

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len

    def check(self, raw: Any, path: str) -> Any:
        if type(raw) is not str:
            raise DecodeError(f"{path}: expected text, got {type(raw).__name__}")
        if len(raw) > self.max_len:
            raise DecodeError(f"{path}: text of {len(raw)} characters exceeds {self.max_len}")
        return raw


class ListOf(Kind):
    """A list (a tuple in Python) of at most `max_len` items of one kind."""

    def __init__(self, item: Kind, max_len: int) -> None:
        self.item = item
        self.max_len = max_len

    def check(self, raw: Any, path: str) -> Any:
        if type(raw) is not list:
            raise DecodeError(f"{path}: expected list, got {type(raw).__name__}")
        if len(raw) > self.max_len:
            raise DecodeError(f"{path}: {len(raw)} items exceeds maximum {self.max_len}")
        check = self.item.check
        return tuple([check(x, f"{path}[{i}]") for i, x in enumerate(raw)])

    def dump(self, value: Any) -> Any:
        dump = self.item.dump
        return [dump(x) for x in value]


class Optional(Kind):
    """nil or a value of one kind."""

    def __init__(self, item: Kind) -> None:
        self.item = item

    def check(self, raw: Any, path: str) -> Any:
        return None if raw is None else self.item.check(raw, path)

    def dump(self, value: Any) -> Any:
        return None if value is None else self.item.dump(value)


class Struct(Kind):
    """A nested wire dataclass, encoded as the array of its fields."""

    def __init__(self, cls: type) -> None:
        self.cls = cls

    def check(self, raw: Any, path: str) -> Any:
        return from_raw(self.cls, raw, path)

    def dump(self, value: Any) -> Any:
        if type(value) is not self.cls:
            raise TypeError(f"expected {self.cls.__name__}, got {type(value).__name__}")
        return to_raw(value)


U64 = _U64()
BOOL = _Bool()
HASH = Bytes(32)
PUBKEY = Bytes(32)
SIGNATURE = Bytes(64)


def wire(kind: Kind) -> Any:
    """Declare a dataclass field and how it travels: `height: int = wire(U64)`."""
    return dataclasses.field(metadata={"wire": kind})


# -- per-class schema, computed once ---------------------------------------

_SCHEMAS: dict[type, tuple[tuple[str, Kind], ...]] = {}
_BY_TAG: dict[int, type] = {}
_TAG_OF: dict[type, int] = {}


def schema(cls: type) -> tuple[tuple[str, Kind], ...]:
    found = _SCHEMAS.get(cls)
    if found is None:
        found = tuple((f.name, f.metadata["wire"]) for f in dataclasses.fields(cls))
        _SCHEMAS[cls] = found
    return found


def message(tag: int) -> Callable[[type[T]], type[T]]:
    """Register a wire dataclass as a top-level message with a unique tag."""

    def register(cls: type[T]) -> type[T]:
        assert tag not in _BY_TAG, f"tag {tag} used twice"
        schema(cls)
        _BY_TAG[tag] = cls
        _TAG_OF[cls] = tag
        return cls

    return register


def to_raw(obj: Any) -> list[Any]:
    """The plain msgpack-able structure of a wire dataclass."""
    return [kind.dump(getattr(obj, name)) for name, kind in schema(type(obj))]


def from_raw(cls: type[T], raw: Any, path: str = "") -> T:
    fields = schema(cls)
    where = path or cls.__name__
    if type(raw) is not list:
        raise DecodeError(f"{where}: expected {cls.__name__} as a list, got {type(raw).__name__}")
    if len(raw) != len(fields):
        raise DecodeError(f"{where}: expected {len(fields)} fields, got {len(raw)}")
    values = [kind.check(x, f"{where}.{name}") for (name, kind), x in zip(fields, raw, strict=True)]
    return cls(*values)


def pack(raw: Any) -> bytes:
    return msgpack.packb(raw, use_bin_type=True)  # type: ignore[no-any-return]


def unpack(data: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> Any:
    """msgpack bytes -> plain structure, with every size bounded and canonical form checked."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise DecodeError(f"message of {len(data)} bytes exceeds maximum {max_bytes}")
    if len(data) == 0:
        raise DecodeError("empty message")
    try:
        raw = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_bin_len=max_bytes,
            max_str_len=max_bytes,
            max_array_len=MAX_LIST_ITEMS,
            max_map_len=0,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises many types; all mean "bad bytes"
        raise DecodeError(f"not valid msgpack: {type(exc).__name__}: {exc}") from None
    try:
        canonical = pack(raw) == bytes(data)
    except Exception as exc:  # e.g. a float or huge int that slipped through
        raise DecodeError(f"unsupported value: {exc}") from None
    if not canonical:
        raise DecodeError("not the canonical encoding (non-minimal form or forbidden type)")
    return raw


def encode(obj: Any) -> bytes:
    """Canonical bytes of a registered top-level message."""
    tag = _TAG_OF.get(type(obj))
    if tag is None:
        raise TypeError(f"{type(obj).__name__} is not a registered message type")
    return pack([FORMAT_VERSION, tag, to_raw(obj)])


def decode(data: bytes, expected: type[T] | None = None, max_bytes: int = MAX_MESSAGE_BYTES) -> T:
    """Bytes from anywhere -> a fully checked message, or `DecodeError`."""
    raw = unpack(data, max_bytes)
    if type(raw) is not list or len(raw) != 3:
        raise DecodeError("expected envelope [version, tag, body]")
    version, tag, body = raw
    if version != FORMAT_VERSION or type(version) is not int:
        raise DecodeError(f"unsupported format version {version!r} (this node speaks {FORMAT_VERSION})")
    cls = _BY_TAG.get(tag) if type(tag) is int else None
    if cls is None:
        raise DecodeError(f"unknown message tag {tag!r}")
    if expected is not None and cls is not expected:
        raise DecodeError(f"expected {expected.__name__}, got {cls.__name__}")
    result: T = from_raw(cls, body)
    return result


def encode_body(obj: Any) -> bytes:
    """Canonical bytes of any wire dataclass without the envelope (for hashing)."""
    return pack(to_raw(obj))


def decode_body(cls: type[T], data: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> T:
    return from_raw(cls, unpack(data, max_bytes))
