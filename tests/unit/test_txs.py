"""node.txs: building and signing, decoding, and the API's JSON form."""

from __future__ import annotations

from typing import Any

import pytest

from consensus import codec
from consensus.codec import DecodeError
from consensus.crypto import Domain, SigningKey, verify
from consensus.types import Transaction, signed_payload, tx_hash
from node.txs import TxError, build, decode_tx, tx_from_json, tx_to_json

KEY = SigningKey(b"\x07" * 32)
CHAIN = "redwood-test"


def _tx(**kw: Any) -> bytes:
    args: dict[str, Any] = {
        "key": KEY,
        "chain_id": CHAIN,
        "op": "put",
        "agency": "agency0",
        "record_key": "licence/42",
        "value": b"granted",
        "valid_until": 100,
        "nonce": 5,
    }
    args.update(kw)
    return build(**args)


def test_build_signs_over_domain_chain_and_fields() -> None:
    raw = _tx()
    tx = decode_tx(raw)
    assert (tx.sender, tx.nonce, tx.valid_until, tx.op, tx.agency) == (
        KEY.public,
        5,
        100,
        "put",
        "agency0",
    )
    assert tx.key == b"licence/42" and tx.value == b"granted"
    assert verify(tx.sender, tx.signature, Domain.TX, CHAIN, signed_payload(tx))
    assert not verify(tx.sender, tx.signature, Domain.TX, "other-chain", signed_payload(tx))
    assert not verify(tx.sender, tx.signature, Domain.PREPARE, CHAIN, signed_payload(tx))


def test_build_is_deterministic_given_a_nonce_and_random_without() -> None:
    assert _tx() == _tx()
    assert _tx(nonce=None) != _tx(nonce=None)
    assert decode_tx(_tx(nonce=None)).nonce < 2**64


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"record_key": b"k" * 257}, "key"),
        ({"value": b"v" * (1024 * 1024 + 1)}, "value"),
        ({"op": ""}, "op"),
        ({"op": "x" * 33}, "op"),
        ({"agency": "a" * 65}, "agency"),
        ({"valid_until": -1}, "valid_until"),
        ({"nonce": 2**64}, "nonce"),
        ({"nonce": True}, "nonce"),
        ({"value": 12}, "value"),
    ],
)
def test_build_refuses_what_the_wire_cannot_carry(kw: dict[str, Any], field: str) -> None:
    with pytest.raises(TxError, match=field):
        _tx(**kw)


def test_decode_tx_refuses_garbage_and_other_messages() -> None:
    raw = _tx()
    flipped = raw[:2] + b"\x02" + raw[3:]  # envelope tag 2: a BlockHeader, not a Transaction
    for bad in (b"", b"\xc1", raw[:-1], raw + b"\x00", flipped):
        with pytest.raises(DecodeError):
            decode_tx(bad)
    from consensus.types import BlockRequest

    with pytest.raises(DecodeError, match="expected Transaction"):
        decode_tx(codec.encode(BlockRequest(1, 2)))


def test_json_round_trip_with_text_forms_and_hash() -> None:
    raw = _tx()
    doc = tx_to_json(decode_tx(raw), raw)
    assert doc["key_text"] == "licence/42" and doc["value_text"] == "granted"
    assert doc["hash"] == tx_hash(raw).hex()
    assert doc["sender"] == KEY.public.hex() and doc["nonce"] == 5
    assert tx_from_json(doc) == raw


def test_json_omits_text_for_non_utf8_bytes() -> None:
    raw = _tx(value=b"\xff\x00\xfe")
    doc = tx_to_json(decode_tx(raw))
    assert "value_text" not in doc and doc["value"] == "ff00fe" and "hash" not in doc
    assert tx_from_json(doc) == raw


def test_json_accepts_text_only_and_decimal_string_numbers() -> None:
    raw = _tx(nonce=2**63 + 1)
    doc = tx_to_json(decode_tx(raw))
    del doc["key"], doc["value"]
    doc["nonce"] = str(2**63 + 1)
    assert tx_from_json(doc) == raw


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"extra": 1}, "unknown field"),
        ({"sender": "abc"}, "sender"),
        ({"sender": "00" * 31}, "sender: expected 32 bytes"),
        ({"signature": "zz" * 64}, "signature"),
        ({"nonce": 1.5}, "nonce"),
        ({"nonce": True}, "nonce"),
        ({"nonce": "-1"}, "nonce"),
        ({"valid_until": 2**64}, "valid_until"),
        ({"op": 3}, "op"),
        ({"key_text": "different"}, "key_text: does not match key"),
        ({"value_text": 5}, "value_text"),
        ({"hash": "00" * 32}, "hash: does not match"),
        ({"key": "00" * 257, "key_text": "\x00" * 257}, "key: 257 bytes"),
    ],
)
def test_json_errors_name_the_field(change: dict[str, Any], field: str) -> None:
    raw = _tx()
    doc = tx_to_json(decode_tx(raw), raw)
    doc.update(change)
    with pytest.raises(TxError, match=field):
        tx_from_json(doc)


def test_json_missing_fields_and_non_objects() -> None:
    raw = _tx()
    for name in ("sender", "nonce", "valid_until", "op", "agency", "signature"):
        doc = tx_to_json(decode_tx(raw))
        del doc[name]
        with pytest.raises(TxError, match=f"{name}: required"):
            tx_from_json(doc)
    doc = tx_to_json(decode_tx(raw))
    del doc["key"], doc["key_text"]
    with pytest.raises(TxError, match="key: required"):
        tx_from_json(doc)
    with pytest.raises(TxError, match="JSON object"):
        tx_from_json([1])


def test_json_form_does_not_vouch_for_the_signature() -> None:
    """tx_from_json builds what it is given; checking signatures is the app's job."""
    raw = _tx()
    doc = tx_to_json(decode_tx(raw))
    doc["value_text"] = doc["value"] = None  # type: ignore[assignment]
    del doc["value_text"]
    doc["value"] = b"forged".hex()
    forged = decode_tx(tx_from_json(doc))
    assert isinstance(forged, Transaction)
    assert not verify(forged.sender, forged.signature, Domain.TX, CHAIN, signed_payload(forged))
