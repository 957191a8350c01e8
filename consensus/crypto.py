"""Keys, hashes and signatures: Ed25519 and SHA-256 through PyNaCl/hashlib.

Every signature Redwood makes covers a *domain tag*, the *chain id* and the
canonical bytes of the signed fields, packed together as one msgpack array.
So nothing signed for one purpose (a PREPARE, a transaction, a handshake) or
for one chain is ever valid for another.

Nothing here reads files or clocks; key files live in `storage.keyfile`.
Signature checking is injected into the replica as a `Verifier` so that the
simulator can use a fast fake and the node can batch checks across threads.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Protocol, cast

import msgpack  # type: ignore[import-untyped]
import nacl.bindings
import nacl.exceptions
import nacl.signing

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
SEED_BYTES = 32
HASH_BYTES = 32
ZERO_HASH = bytes(HASH_BYTES)


class Domain:
    """Domain tags: one per kind of signed object. Never reuse one."""

    TX = "redwood/tx/v1"
    PRE_PREPARE = "redwood/pre-prepare/v1"
    PREPARE = "redwood/prepare/v1"
    COMMIT = "redwood/commit/v1"
    CHECKPOINT = "redwood/checkpoint/v1"
    VIEW_CHANGE = "redwood/view-change/v1"
    NEW_VIEW = "redwood/new-view/v1"
    HANDSHAKE = "redwood/handshake/v1"


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def signing_bytes(domain: str, chain_id: str, payload: bytes) -> bytes:
    """The exact bytes an Ed25519 signature covers: msgpack `[domain, chain_id, payload]`.

    A msgpack array is self-delimiting, so no (domain, chain, payload) triple
    can be re-split into another one. Built as the cached packing of
    `[domain, chain_id]`'s part plus the payload's bin header and bytes: the
    same bytes as `msgpack.packb` (tests/unit/test_crypto.py checks every
    header size), without a packer per call (every transaction and vote).
    """
    if type(payload) is not bytes:
        return cast(bytes, msgpack.packb([domain, chain_id, payload], use_bin_type=True))
    n = len(payload)
    if n < 0x100:
        header = b"\xc4" + n.to_bytes(1, "big")
    elif n < 0x10000:
        header = b"\xc5" + n.to_bytes(2, "big")
    else:
        header = b"\xc6" + n.to_bytes(4, "big")  # msgpack refuses bins of 4 GiB and more
    return _signing_prefix(domain, chain_id) + header + payload


@functools.lru_cache(maxsize=64)
def _signing_prefix(domain: str, chain_id: str) -> bytes:
    """msgpack of the 3-array header, `domain` and `chain_id` (a handful of pairs per node)."""
    empty = cast(bytes, msgpack.packb([domain, chain_id, b""], use_bin_type=True))
    assert empty.endswith(b"\xc4\x00")
    return empty[:-2]


class SigningKey:
    """An Ed25519 private key. `public` is the node or client identity."""

    __slots__ = ("_key", "public")

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
            raise ValueError(f"an Ed25519 seed is {SEED_BYTES} bytes")
        self._key = nacl.signing.SigningKey(seed)
        self.public: bytes = bytes(self._key.verify_key)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @property
    def seed(self) -> bytes:
        """The secret seed. Only `storage.keyfile` should ever need this."""
        return bytes(self._key)

    def sign(self, domain: str, chain_id: str, payload: bytes) -> bytes:
        return self._key.sign(signing_bytes(domain, chain_id, payload)).signature

    def __repr__(self) -> str:  # never show the secret
        return f"SigningKey(public={self.public.hex()[:16]}...)"


def verify(public: bytes, signature: bytes, domain: str, chain_id: str, payload: bytes) -> bool:
    """True when `signature` is `public`'s signature of (domain, chain_id, payload).

    Returns False (never raises) for malformed keys, signatures or arguments
    of the wrong type: they come from peers.
    """
    if not (isinstance(domain, str) and isinstance(chain_id, str) and isinstance(payload, bytes)):
        return False
    try:
        message = signing_bytes(domain, chain_id, payload)
    except (TypeError, ValueError):  # e.g. a lone surrogate in a str
        return False
    return verify_raw(public, signature, message)


def verify_raw(public: bytes, signature: bytes, message: bytes) -> bool:
    """True when `signature` is `public`'s Ed25519 signature of exactly `message`."""
    if not (isinstance(public, bytes) and isinstance(signature, bytes)):
        return False
    if len(public) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    if not isinstance(message, bytes):
        return False
    try:
        # what VerifyKey(public).verify(message, signature) runs, without building a
        # VerifyKey per call (every transaction's check goes through here)
        nacl.bindings.crypto_sign_open(signature + message, public)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        return False  # BadSignatureError is a CryptoError
    return True


class Verifier(Protocol):
    """What the replica uses to check signatures (injected)."""

    def verify(
        self, public: bytes, signature: bytes, domain: str, chain_id: str, payload: bytes
    ) -> bool: ...


class Ed25519Verifier:
    """The real verifier."""

    def verify(
        self, public: bytes, signature: bytes, domain: str, chain_id: str, payload: bytes
    ) -> bool:
        return verify(public, signature, domain, chain_id, payload)
