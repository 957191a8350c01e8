"""Client transactions: build and sign one, decode one, and their JSON form for the API.

A transaction is `consensus.types.Transaction` in canonical msgpack; its hash
is SHA-256 of those bytes. `build` checks the *wire* limits (what can be
encoded at all) and raises `TxError` for misuse; the chain's own limits
(record value size from genesis, expiry window, membership) are the
application's checks (`node.app`), so that a client learns them from the
node's answer rather than from a copy of the rules.

JSON form (`tx_to_json` / `tx_from_json`)
-----------------------------------------
    {"sender": hex, "nonce": int, "valid_until": int, "op": "put",
     "agency": "agency0", "key": hex, "value": hex, "signature": hex,
     "key_text": str, "value_text": str,    # when the bytes are valid UTF-8
     "hash": hex}                            # when the encoded bytes are known

On input, `key`/`value` may be given as hex or as `key_text`/`value_text`
(UTF-8); when both are given they must agree. `nonce` and `valid_until` may
be integers or decimal strings (JavaScript numbers lose precision above
2**53). `hash`, if present, must match the encoded transaction.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from consensus import codec
from consensus.codec import U64_MAX, DecodeError, EncodeError
from consensus.crypto import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, SigningKey
from consensus.types import (
    MAX_AGENCY_CHARS,
    MAX_OP_CHARS,
    MAX_RECORD_KEY_BYTES,
    MAX_TX_BYTES,
    MAX_TX_VALUE_BYTES,
    Transaction,
    signed_payload,
    tx_hash,
)

__all__ = ["DecodeError", "TxError", "build", "decode_tx", "tx_from_json", "tx_to_json"]

_HEX_RE = re.compile(r"(?:[0-9a-fA-F]{2})*")
_DECIMAL_RE = re.compile(r"[0-9]{1,20}")
_JSON_FIELDS = {
    "sender",
    "nonce",
    "valid_until",
    "op",
    "agency",
    "key",
    "value",
    "signature",
    "key_text",
    "value_text",
    "hash",
}


class TxError(ValueError):
    """A transaction cannot be built or parsed as given. The message names the field."""


def build(
    key: SigningKey,
    chain_id: str,
    op: str,
    agency: str,
    record_key: bytes | str,
    value: bytes | str,
    valid_until: int,
    nonce: int | None = None,
) -> bytes:
    """Build and sign one transaction; return its canonical bytes.

    `record_key` and `value` may be text (encoded as UTF-8). `nonce` is a
    random 64-bit number when not given, so equal requests stay distinct.
    """
    if nonce is None:
        nonce = secrets.randbits(64)
    unsigned = _transaction(
        sender=key.public,
        nonce=nonce,
        valid_until=valid_until,
        op=op,
        agency=agency,
        key=_as_bytes(record_key, "record_key"),
        value=_as_bytes(value, "value"),
        signature=bytes(SIGNATURE_BYTES),
    )
    signature = key.sign(Transaction.DOMAIN, chain_id, signed_payload(unsigned))
    return codec.encode(_replace_signature(unsigned, signature))


def decode_tx(tx_bytes: bytes) -> Transaction:
    """Untrusted bytes -> a checked `Transaction`, or `DecodeError`."""
    return codec.decode(tx_bytes, Transaction, max_bytes=MAX_TX_BYTES)


def tx_to_json(tx: Transaction, tx_bytes: bytes | None = None) -> dict[str, Any]:
    """The API's JSON form of a transaction (see the module docstring)."""
    out: dict[str, Any] = {
        "sender": tx.sender.hex(),
        "nonce": tx.nonce,
        "valid_until": tx.valid_until,
        "op": tx.op,
        "agency": tx.agency,
        "key": tx.key.hex(),
        "value": tx.value.hex(),
        "signature": tx.signature.hex(),
    }
    for name, raw in (("key_text", tx.key), ("value_text", tx.value)):
        text = _utf8_or_none(raw)
        if text is not None:
            out[name] = text
    if tx_bytes is not None:
        out["hash"] = tx_hash(tx_bytes).hex()
    return out


def tx_from_json(doc: Any) -> bytes:
    """The API's JSON form -> canonical transaction bytes, or `TxError` naming the field.

    The signature is not checked here (the application does that).
    """
    if not isinstance(doc, dict):
        raise TxError(f"transaction: expected a JSON object, got {type(doc).__name__}")
    unknown = sorted(set(doc) - _JSON_FIELDS)
    if unknown:
        raise TxError(f"transaction: unknown field(s) {', '.join(map(repr, unknown))}")
    tx = _transaction(
        sender=_hex_field(doc, "sender", PUBLIC_KEY_BYTES),
        nonce=_u64_field(doc, "nonce"),
        valid_until=_u64_field(doc, "valid_until"),
        op=_str_field(doc, "op"),
        agency=_str_field(doc, "agency"),
        key=_bytes_or_text(doc, "key"),
        value=_bytes_or_text(doc, "value"),
        signature=_hex_field(doc, "signature", SIGNATURE_BYTES),
    )
    encoded = codec.encode(tx)
    claimed = doc.get("hash")
    if claimed is not None and claimed != tx_hash(encoded).hex():
        raise TxError("hash: does not match the transaction's fields")
    return encoded


# -- helpers -------------------------------------------------------------------


def _transaction(**fields: Any) -> Transaction:
    """A Transaction whose every field fits the wire format, or `TxError`."""
    _check_u64(fields["nonce"], "nonce")
    _check_u64(fields["valid_until"], "valid_until")
    _check_text(fields["op"], "op", MAX_OP_CHARS)
    _check_text(fields["agency"], "agency", MAX_AGENCY_CHARS)
    if len(fields["key"]) > MAX_RECORD_KEY_BYTES:
        raise TxError(f"key: {len(fields['key'])} bytes exceeds {MAX_RECORD_KEY_BYTES}")
    if len(fields["value"]) > MAX_TX_VALUE_BYTES:
        raise TxError(f"value: {len(fields['value'])} bytes exceeds {MAX_TX_VALUE_BYTES}")
    tx = Transaction(**fields)
    try:
        codec.to_raw(tx)  # anything else the wire format refuses
    except EncodeError as exc:
        raise TxError(str(exc)) from None
    return tx


def _replace_signature(tx: Transaction, signature: bytes) -> Transaction:
    return Transaction(
        tx.sender, tx.nonce, tx.valid_until, tx.op, tx.agency, tx.key, tx.value, signature
    )


def _as_bytes(value: bytes | str, name: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise TxError(f"{name}: expected bytes or text, got {type(value).__name__}")


def _check_u64(value: Any, name: str) -> None:
    if type(value) is not int or not 0 <= value <= U64_MAX:
        raise TxError(f"{name}: expected an integer in 0..2**64-1, got {value!r}")


def _check_text(value: Any, name: str, max_len: int) -> None:
    if not isinstance(value, str) or not 1 <= len(value) <= max_len:
        raise TxError(f"{name}: expected text of 1 to {max_len} characters, got {value!r:.80}")


def _utf8_or_none(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _hex_field(doc: dict[str, Any], name: str, size: int | None) -> bytes:
    if name not in doc:
        raise TxError(f"{name}: required field is missing")
    return _parse_hex(doc[name], name, size)


def _parse_hex(value: Any, name: str, size: int | None) -> bytes:
    if not isinstance(value, str) or not _HEX_RE.fullmatch(value):
        raise TxError(f"{name}: expected hex text, got {value!r:.80}")
    raw = bytes.fromhex(value)
    if size is not None and len(raw) != size:
        raise TxError(f"{name}: expected {size} bytes, got {len(raw)}")
    return raw


def _u64_field(doc: dict[str, Any], name: str) -> int:
    if name not in doc:
        raise TxError(f"{name}: required field is missing")
    value = doc[name]
    if isinstance(value, str) and _DECIMAL_RE.fullmatch(value):
        value = int(value)
    _check_u64(value, name)
    return int(value)


def _str_field(doc: dict[str, Any], name: str) -> str:
    if name not in doc:
        raise TxError(f"{name}: required field is missing")
    value = doc[name]
    if not isinstance(value, str):
        raise TxError(f"{name}: expected text, got {type(value).__name__}")
    return value


def _bytes_or_text(doc: dict[str, Any], name: str) -> bytes:
    """`name` as hex, or `name_text` as UTF-8; both given must agree."""
    text_name = f"{name}_text"
    from_hex = _parse_hex(doc[name], name, None) if name in doc else None
    from_text = None
    if text_name in doc:
        if not isinstance(doc[text_name], str):
            raise TxError(f"{text_name}: expected text, got {type(doc[text_name]).__name__}")
        try:
            from_text = doc[text_name].encode("utf-8")
        except UnicodeEncodeError:
            raise TxError(f"{text_name}: not encodable as UTF-8") from None
    if from_hex is None and from_text is None:
        raise TxError(f"{name}: required field is missing (give {name} as hex or {text_name})")
    if from_hex is not None and from_text is not None and from_hex != from_text:
        raise TxError(f"{text_name}: does not match {name}")
    result = from_hex if from_hex is not None else from_text
    assert result is not None
    return result
