"""Canonical msgpack encoding of Redwood's data types, and strict decoding.

Every wire object is a frozen dataclass whose fields declare a *kind*
(`U64`, `Bytes(32)`, `ListOf(...)`, ...). An object encodes as a msgpack
array of its fields in declaration order; a top-level message is the envelope
`[FORMAT_VERSION, tag, body]`. Only arrays, unsigned ints, bools, nil, str and
bin are used: no maps, no floats, no extension types, no negative ints.
Encoding is msgpack's packer, which always picks the shortest form of a value,
so every value has exactly one encoding and hashes and signatures are stable.

Decoding untrusted bytes raises `DecodeError` and nothing else. It does not
hand the bytes to msgpack's unpacker (which pre-allocates lists from array
headers and nests up to 1024 deep before anything is checked). Instead each
kind reads its own bytes directly: it checks the msgpack type byte is the one
the schema expects, that the header is the shortest form (anything else is not
canonical), and every length and bound *before* slicing or looping. A list
never allocates more than the items actually present; nesting is bounded by
the schema; no half-valid object is ever returned. `unpack` does the same for
schema-less structures (with a nesting limit).

Encoding checks values too: encoding something that could not be decoded is a
caller bug and raises `EncodeError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar, cast

import msgpack  # type: ignore[import-untyped]

FORMAT_VERSION = 1
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
MAX_LIST_ITEMS = 1_000_000
MAX_UNPACK_DEPTH = 32  # schema-less `unpack` only; schema reads are bounded by the schema
U64_MAX = 2**64 - 1

T = TypeVar("T")


class DecodeError(ValueError):
    """Bytes from outside are not a valid Redwood object. The message says why."""


try:
    from mypy_extensions import mypyc_attr
except ImportError:  # an install without mypy: the decorator only matters to mypyc's build

    def mypyc_attr(*attrs: str, **kwattrs: object) -> Callable[[T], T]:
        return lambda cls: cls


# two builtin bases: a Python class even when this module is compiled (node/native.py)
@mypyc_attr(native_class=False)
class EncodeError(TypeError, ValueError):
    """A value cannot be encoded (wrong type, out of range, too long): a caller bug."""


class _Bad(Exception):
    """Internal: a decoding failure on its way up, collecting the field path."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []  # innermost first


def _error(exc: _Bad, root: str) -> DecodeError:
    where = root + "".join(reversed(exc.path))
    return DecodeError(f"{where}: {exc.reason}" if where else exc.reason)


# -- reading msgpack headers from bytes ------------------------------------
#
# Each reader takes (data, pos) and returns (value, new_pos). `data[pos]`
# past the end raises IndexError, which the public entry points report as
# truncated input; multi-byte reads check the end explicitly.


def _type_name(b: int) -> str:
    """The msgpack type a header byte announces, for error messages."""
    if b <= 0x7F or 0xCC <= b <= 0xCF:
        return "uint"
    if b >= 0xE0 or 0xD0 <= b <= 0xD3:
        return "negative/signed int"
    if b <= 0x8F or b in (0xDE, 0xDF):
        return "map"
    if b <= 0x9F or b in (0xDC, 0xDD):
        return "array"
    if b <= 0xBF or 0xD9 <= b <= 0xDB:
        return "str"
    if 0xC4 <= b <= 0xC6:
        return "bin"
    if b in (0xCA, 0xCB):
        return "float"
    if 0xC7 <= b <= 0xC9 or 0xD4 <= b <= 0xD8:
        return "ext"
    return {0xC0: "nil", 0xC2: "bool", 0xC3: "bool"}.get(b, f"reserved byte 0x{b:02x}")


def _wrong(expected: str, b: int, pos: int) -> _Bad:
    return _Bad(f"expected {expected}, got {_type_name(b)} at offset {pos}")


def _big(data: bytes, start: int, size: int) -> int:
    end = start + size
    if end > len(data):
        raise _Bad(f"input ends inside a header at offset {start - 1}")
    return int.from_bytes(data[start:end], "big")


def _noncanonical(what: str, n: int, pos: int) -> _Bad:
    return _Bad(f"not canonical: {what} {n} at offset {pos} has a longer header than needed")


def _read_uint(data: bytes, pos: int) -> tuple[int, int]:
    b = data[pos]
    if b <= 0x7F:
        return b, pos + 1
    if b == 0xCC:
        v = data[pos + 1]
        if v <= 0x7F:
            raise _noncanonical("uint", v, pos)
        return v, pos + 2
    if 0xCD <= b <= 0xCF:
        size = 1 << (b - 0xCC)  # 2, 4, 8
        v = _big(data, pos + 1, size)
        if v < 1 << (4 * size):  # fits the next smaller form
            raise _noncanonical("uint", v, pos)
        return v, pos + 1 + size
    raise _wrong("uint", b, pos)


def _read_array_header(data: bytes, pos: int) -> tuple[int, int]:
    b = data[pos]
    if 0x90 <= b <= 0x9F:
        return b & 0x0F, pos + 1
    if b == 0xDC:
        n = _big(data, pos + 1, 2)
        if n <= 0x0F:
            raise _noncanonical("array of length", n, pos)
        return n, pos + 3
    if b == 0xDD:
        n = _big(data, pos + 1, 4)
        if n <= 0xFFFF:
            raise _noncanonical("array of length", n, pos)
        return n, pos + 5
    raise _wrong("array", b, pos)


def _read_bin_header(data: bytes, pos: int) -> tuple[int, int]:
    b = data[pos]
    if b == 0xC4:
        return data[pos + 1], pos + 2
    if b == 0xC5:
        n = _big(data, pos + 1, 2)
        if n <= 0xFF:
            raise _noncanonical("bin of length", n, pos)
        return n, pos + 3
    if b == 0xC6:
        n = _big(data, pos + 1, 4)
        if n <= 0xFFFF:
            raise _noncanonical("bin of length", n, pos)
        return n, pos + 5
    raise _wrong("bytes (bin)", b, pos)


def _read_str_header(data: bytes, pos: int) -> tuple[int, int]:
    b = data[pos]
    if 0xA0 <= b <= 0xBF:
        return b & 0x1F, pos + 1
    if b == 0xD9:
        n = data[pos + 1]
        if n <= 0x1F:
            raise _noncanonical("str of length", n, pos)
        return n, pos + 2
    if b == 0xDA:
        n = _big(data, pos + 1, 2)
        if n <= 0xFF:
            raise _noncanonical("str of length", n, pos)
        return n, pos + 3
    if b == 0xDB:
        n = _big(data, pos + 1, 4)
        if n <= 0xFFFF:
            raise _noncanonical("str of length", n, pos)
        return n, pos + 5
    raise _wrong("text (str)", b, pos)


def _payload_end(data: bytes, start: int, n: int, what: str) -> int:
    end = start + n
    if end > len(data):
        raise _Bad(f"{what} of {n} bytes at offset {start} runs past the end of the input")
    return end


def _utf8(data: bytes, start: int, end: int) -> str:
    try:
        return data[start:end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Bad(f"invalid UTF-8 in text at offset {start}: {exc.reason}") from None


def _items_fit(data: bytes, pos: int, n: int) -> None:
    """Every item takes at least one byte: refuse headers that claim more."""
    if n > len(data) - pos:
        raise _Bad(f"array claims {n} items but only {len(data) - pos} bytes remain")


# -- kinds --------------------------------------------------------------------


class Kind:
    """How one field is checked (decode) and lowered (encode).

    `read` decodes the field straight from bytes (the path untrusted input
    takes); `check` validates an already-unpacked plain value (`from_raw`);
    `dump` lowers a Python value for msgpack and raises `EncodeError` if the
    value could never be decoded.
    """

    def read(self, data: bytes, pos: int) -> tuple[Any, int]:
        raise NotImplementedError

    def check(self, raw: Any, path: str) -> Any:
        raise NotImplementedError

    def dump(self, value: Any) -> Any:
        return value


class _U64(Kind):
    def read(self, data: bytes, pos: int) -> tuple[Any, int]:
        return _read_uint(data, pos)

    def check(self, raw: Any, path: str) -> Any:
        if type(raw) is not int:
            raise DecodeError(f"{path}: expected unsigned integer, got {type(raw).__name__}")
        if raw < 0 or raw > U64_MAX:
            raise DecodeError(f"{path}: integer {raw} out of range 0..2**64-1")
        return raw

    def dump(self, value: Any) -> Any:
        if not isinstance(value, int) or isinstance(value, bool):
            raise EncodeError(f"expected int, got {type(value).__name__}")
        if not 0 <= value <= U64_MAX:
            raise EncodeError(f"integer {value} out of range 0..2**64-1")
        return int(value)


class _Bool(Kind):
    def read(self, data: bytes, pos: int) -> tuple[Any, int]:
        b = data[pos]
        if b == 0xC2:
            return False, pos + 1
        if b == 0xC3:
            return True, pos + 1
        raise _wrong("bool", b, pos)

    def check(self, raw: Any, path: str) -> Any:
        if type(raw) is not bool:
            raise DecodeError(f"{path}: expected bool, got {type(raw).__name__}")
        return raw

    def dump(self, value: Any) -> Any:
        if type(value) is not bool:
            raise EncodeError(f"expected bool, got {type(value).__name__}")
        return value


class Bytes(Kind):
    """bin of exactly `size` bytes, or of at most `max_len` bytes."""

    def __init__(self, size: int | None = None, *, max_len: int | None = None) -> None:
        assert (size is None) != (max_len is None)
        self.size = size
        self.max_len = max_len
        # allowed lengths as one range, for the hot paths
        self.low, self.high = (size, size) if size is not None else (0, max_len or 0)

    def _length_error(self, n: int) -> str:
        if self.size is not None:
            return f"expected {self.size} bytes, got {n}"
        return f"{n} bytes exceeds maximum {self.max_len}"

    def read(self, data: bytes, pos: int) -> tuple[Any, int]:
        n, start = _read_bin_header(data, pos)
        if not self.low <= n <= self.high:
            raise _Bad(self._length_error(n))
        end = _payload_end(data, start, n, "bin")
        return data[start:end], end

    def check(self, raw: Any, path: str) -> Any:
        if type(raw) is not bytes:
            raise DecodeError(f"{path}: expected bytes, got {type(raw).__name__}")
        if not self.low <= len(raw) <= self.high:
            raise DecodeError(f"{path}: {self._length_error(len(raw))}")
        return raw

    def dump(self, value: Any) -> Any:
        if not isinstance(value, bytes):
            raise EncodeError(f"expected bytes, got {type(value).__name__}")
        if not self.low <= len(value) <= self.high:
            raise EncodeError(self._length_error(len(value)))
        return value


class Str(Kind):
    """UTF-8 text of at most `max_len` characters."""

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len

    def read(self, data: bytes, pos: int) -> tuple[Any, int]:
        n, start = _read_str_header(data, pos)
        if n > 4 * self.max_len:  # a character is at most 4 UTF-8 bytes
            raise _Bad(f"text of {n} bytes exceeds {self.max_len} characters")
        end = _payload_end(data, start, n, "str")
        text = _utf8(data, start, end)
        if len(text) > self.max_len:
            raise _Bad(f"text of {len(text)} characters exceeds {self.max_len}")
        return text, end

    def check(self, raw: Any, path: str) -> Any:
        if type(raw) is not str:
            raise DecodeError(f"{path}: expected text, got {type(raw).__name__}")
        if len(raw) > self.max_len:
            raise DecodeError(f"{path}: text of {len(raw)} characters exceeds {self.max_len}")
        return raw

    def dump(self, value: Any) -> Any:
        if not isinstance(value, str):
            raise EncodeError(f"expected str, got {type(value).__name__}")
        if len(value) > self.max_len:
            raise EncodeError(f"text of {len(value)} characters exceeds {self.max_len}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise EncodeError(f"text is not encodable as UTF-8: {exc.reason}") from None
        return str(value)


class ListOf(Kind):
    """A list (a tuple in Python) of at most `max_len` items of one kind."""

    def __init__(self, item: Kind, max_len: int) -> None:
        self.item = item
        self.max_len = max_len

    def read(self, data: bytes, pos: int) -> tuple[Any, int]:
        n, pos = _read_array_header(data, pos)
        if n > self.max_len:
            raise _Bad(f"{n} items exceeds maximum {self.max_len}")
        _items_fit(data, pos, n)
        item = self.item
        if type(item) is Bytes:
            return _read_bins(data, pos, n, item)
        read = item.read
        out = []
        i = 0
        try:
            for i in range(n):  # noqa: B007 (i names the failing item)
                value, pos = read(data, pos)
                out.append(value)
        except _Bad as exc:
            exc.path.append(f"[{i}]")
            raise
        return tuple(out), pos

    def check(self, raw: Any, path: str) -> Any:
        if type(raw) is not list:
            raise DecodeError(f"{path}: expected list, got {type(raw).__name__}")
        if len(raw) > self.max_len:
            raise DecodeError(f"{path}: {len(raw)} items exceeds maximum {self.max_len}")
        check = self.item.check
        return tuple([check(x, f"{path}[{i}]") for i, x in enumerate(raw)])

    def dump(self, value: Any) -> Any:
        if not isinstance(value, tuple | list):
            raise EncodeError(f"expected a tuple, got {type(value).__name__}")
        if len(value) > self.max_len:
            raise EncodeError(f"{len(value)} items exceeds maximum {self.max_len}")
        item = self.item
        if type(item) is Bytes:
            low, high = item.low, item.high
            for x in value:
                if not isinstance(x, bytes) or not low <= len(x) <= high:
                    item.dump(x)  # raises the precise error
            return list(value)
        dump = item.dump
        return [dump(x) for x in value]


def _read_bins(data: bytes, pos: int, n: int, kind: Bytes) -> tuple[tuple[bytes, ...], int]:
    """ListOf(Bytes) fast path: the body of a block is thousands of these."""
    low, high, size = kind.low, kind.high, len(data)
    out: list[bytes] = []
    append = out.append
    i = 0
    try:
        for i in range(n):  # noqa: B007 (i names the failing item)
            if data[pos] == 0xC4:  # the common case: under 256 bytes
                m = data[pos + 1]
                start = pos + 2
            else:
                m, start = _read_bin_header(data, pos)
            pos = start + m
            if not low <= m <= high:
                raise _Bad(kind._length_error(m))
            if pos > size:
                raise _Bad(f"bin of {m} bytes at offset {start} runs past the end of the input")
            append(data[start:pos])
    except _Bad as exc:
        exc.path.append(f"[{i}]")
        raise
    except IndexError:
        bad = _Bad("truncated, input ends inside a value")
        bad.path.append(f"[{i}]")
        raise bad from None
    return tuple(out), pos


class Optional(Kind):
    """nil or a value of one kind."""

    def __init__(self, item: Kind) -> None:
        self.item = item

    def read(self, data: bytes, pos: int) -> tuple[Any, int]:
        if data[pos] == 0xC0:
            return None, pos + 1
        return self.item.read(data, pos)

    def check(self, raw: Any, path: str) -> Any:
        return None if raw is None else self.item.check(raw, path)

    def dump(self, value: Any) -> Any:
        return None if value is None else self.item.dump(value)


class Struct(Kind):
    """A nested wire dataclass, encoded as the array of its fields."""

    def __init__(self, cls: type) -> None:
        self.cls = cls

    def read(self, data: bytes, pos: int) -> tuple[Any, int]:
        return _read_struct(self.cls, data, pos)

    def check(self, raw: Any, path: str) -> Any:
        return from_raw(self.cls, raw, path)

    def dump(self, value: Any) -> Any:
        if type(value) is not self.cls:
            raise EncodeError(f"expected {self.cls.__name__}, got {type(value).__name__}")
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
        fields = dataclasses.fields(cls)
        missing = [f.name for f in fields if "wire" not in f.metadata]
        assert not missing, f"{cls.__name__} fields without a wire kind: {missing}"
        found = tuple((f.name, f.metadata["wire"]) for f in fields)
        _SCHEMAS[cls] = found
    return found


def message(tag: int) -> Callable[[type[T]], type[T]]:
    """Register a wire dataclass as a top-level message with a unique tag."""

    def register(cls: type[T]) -> type[T]:
        assert type(tag) is int and 0 <= tag <= U64_MAX, f"bad tag {tag!r}"
        assert tag not in _BY_TAG, f"tag {tag} used twice"
        assert cls not in _TAG_OF, f"{cls.__name__} registered twice"
        schema(cls)
        _BY_TAG[tag] = cls
        _TAG_OF[cls] = tag
        return cls

    return register


def registered() -> dict[int, type]:
    """Every registered top-level message type by tag (a copy)."""
    return dict(_BY_TAG)


def to_raw(obj: Any) -> list[Any]:
    """The plain msgpack-able structure of a wire dataclass (values checked)."""
    out = []
    name = ""
    try:
        for name, kind in schema(type(obj)):
            out.append(kind.dump(getattr(obj, name)))
    except EncodeError as exc:
        raise EncodeError(f"{type(obj).__name__}.{name}: {exc}") from None
    return out


def _read_struct(cls: type[T], data: bytes, pos: int) -> tuple[T, int]:
    fields = schema(cls)
    n, pos = _read_array_header(data, pos)
    if n != len(fields):
        raise _Bad(f"expected {cls.__name__} as {len(fields)} fields, got {n}")
    values = []
    name = ""
    try:
        for name, kind in fields:  # noqa: B007 (name labels the failing field)
            value, pos = kind.read(data, pos)
            values.append(value)
    except _Bad as exc:
        exc.path.append(f".{name}")
        raise
    return _construct(cls, values), pos


def _construct(cls: type[T], values: list[Any]) -> T:
    try:
        return cls(*values)
    except (TypeError, ValueError) as exc:  # a __post_init__ that refuses the values
        raise _Bad(f"invalid {cls.__name__}: {exc}") from None


def from_raw(cls: type[T], raw: Any, path: str = "") -> T:
    """A wire dataclass from an already-unpacked plain structure, every field checked."""
    fields = schema(cls)
    where = path or cls.__name__
    if type(raw) is not list:
        raise DecodeError(f"{where}: expected {cls.__name__} as a list, got {type(raw).__name__}")
    if len(raw) != len(fields):
        raise DecodeError(f"{where}: expected {len(fields)} fields, got {len(raw)}")
    values = [kind.check(x, f"{where}.{name}") for (name, kind), x in zip(fields, raw, strict=True)]
    try:
        return _construct(cls, values)
    except _Bad as exc:
        raise _error(exc, where) from None


# -- entry points ------------------------------------------------------------


def pack(raw: Any) -> bytes:
    """Canonical msgpack of a plain structure (lists, ints >= 0, bools, None, str, bytes)."""
    try:
        out = cast(bytes, msgpack.packb(raw, use_bin_type=True))
    except (TypeError, ValueError, OverflowError) as exc:
        raise EncodeError(f"cannot encode: {exc}") from None
    return out


def _as_bytes(given: object, max_bytes: int) -> bytes:
    if not isinstance(given, bytes | bytearray | memoryview):
        raise DecodeError(f"expected bytes, got {type(given).__name__}")
    data = given if type(given) is bytes else bytes(given)
    if len(data) > max_bytes:
        raise DecodeError(f"message of {len(data)} bytes exceeds maximum {max_bytes}")
    if len(data) == 0:
        raise DecodeError("empty message")
    return data


def _finish(data: bytes, pos: int) -> None:
    if pos != len(data):
        raise _Bad(f"{len(data) - pos} trailing bytes after the value (offset {pos})")


def unpack(given: object, max_bytes: int = MAX_MESSAGE_BYTES) -> Any:
    """Canonical msgpack bytes -> plain structure; anything else raises `DecodeError`.

    Accepts only what `pack` produces from arrays, unsigned ints, bools, nil,
    str and bin, in canonical form, nested at most MAX_UNPACK_DEPTH deep.
    """
    data = _as_bytes(given, max_bytes)  # not typed bytes: a clear error for anything else
    try:
        raw, pos = _read_any(data, 0, MAX_UNPACK_DEPTH)
        _finish(data, pos)
    except _Bad as exc:
        raise _error(exc, "") from None
    except IndexError:
        raise DecodeError("truncated: the input ends inside a value") from None
    return raw


def _read_any(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    b = data[pos]
    if 0xC4 <= b <= 0xC6:
        n, start = _read_bin_header(data, pos)
        end = _payload_end(data, start, n, "bin")
        return data[start:end], end
    if b <= 0x7F or 0xCC <= b <= 0xCF:
        return _read_uint(data, pos)
    if 0x90 <= b <= 0x9F or b in (0xDC, 0xDD):
        return _read_list(data, pos, depth)
    if 0xA0 <= b <= 0xBF or 0xD9 <= b <= 0xDB:
        n, start = _read_str_header(data, pos)
        end = _payload_end(data, start, n, "str")
        return _utf8(data, start, end), end
    if b == 0xC0:
        return None, pos + 1
    if b in (0xC2, 0xC3):
        return b == 0xC3, pos + 1
    raise _Bad(f"forbidden msgpack type {_type_name(b)} (0x{b:02x}) at offset {pos}")


def _read_list(data: bytes, pos: int, depth: int) -> tuple[list[Any], int]:
    if depth <= 0:
        raise _Bad(f"nested deeper than {MAX_UNPACK_DEPTH} at offset {pos}")
    n, pos = _read_array_header(data, pos)
    if n > MAX_LIST_ITEMS:
        raise _Bad(f"{n} items exceeds maximum {MAX_LIST_ITEMS}")
    _items_fit(data, pos, n)
    out = []
    i = 0
    try:
        for i in range(n):  # noqa: B007 (i names the failing item)
            value, pos = _read_any(data, pos, depth - 1)
            out.append(value)
    except _Bad as exc:
        exc.path.append(f"[{i}]")
        raise
    return out, pos


def encode(obj: Any) -> bytes:
    """Canonical bytes of a registered top-level message."""
    tag = _TAG_OF.get(type(obj))
    if tag is None:
        raise EncodeError(f"{type(obj).__name__} is not a registered message type")
    return pack([FORMAT_VERSION, tag, to_raw(obj)])


def decode(given: object, expected: type[T] | None = None, max_bytes: int = MAX_MESSAGE_BYTES) -> T:
    """Bytes from anywhere -> a fully checked message, or `DecodeError`."""
    data = _as_bytes(given, max_bytes)  # not typed bytes: a clear error for anything else
    root = ""
    result: Any = None
    try:
        n, pos = _read_array_header(data, 0)
        if n != 3:
            raise _Bad(f"expected envelope [version, tag, body], got an array of {n}")
        version, pos = _read_uint(data, pos)
        if version != FORMAT_VERSION:
            raise _Bad(f"unsupported format version {version} (this node speaks {FORMAT_VERSION})")
        tag, pos = _read_uint(data, pos)
        cls = _BY_TAG.get(tag)
        if cls is None:
            raise _Bad(f"unknown message tag {tag}")
        if expected is not None and cls is not expected:
            raise _Bad(f"expected {expected.__name__}, got {cls.__name__}")
        root = cls.__name__
        result, pos = _read_struct(cls, data, pos)
        _finish(data, pos)
    except _Bad as exc:
        raise _error(exc, root) from None
    except IndexError:
        raise DecodeError(f"{root or 'message'}: truncated, input ends inside a value") from None
    out: T = result
    return out


def encode_body(obj: Any) -> bytes:
    """Canonical bytes of any wire dataclass without the envelope (for hashing)."""
    return pack(to_raw(obj))


def decode_body(cls: type[T], given: object, max_bytes: int = MAX_MESSAGE_BYTES) -> T:
    """The inverse of `encode_body`: bytes -> a fully checked `cls`, or `DecodeError`."""
    data = _as_bytes(given, max_bytes)  # not typed bytes: a clear error for anything else
    try:
        result, pos = _read_struct(cls, data, 0)
        _finish(data, pos)
    except _Bad as exc:
        raise _error(exc, cls.__name__) from None
    except IndexError:
        raise DecodeError(f"{cls.__name__}: truncated, input ends inside a value") from None
    return result
