"""The link handshake (sans-IO pieces): hello, key agreement, transcript, authentication.

Protocol (both sides act at once; the dialer is the *initiator*)::

    -> hello  = "RDWD" | version u8 | chain tag (32) | ephemeral X25519 public key (32)
    <- hello  (same shape)
    both: shared = X25519(own ephemeral secret, peer ephemeral public); all-zero -> reject
          transcript = BLAKE2b-256("redwood/handshake/v1" personalised, hello_I | hello_R)
          k_I->R, k_R->I = BLAKE2b-256(key=shared, transcript, person per direction)
    -> auth frame #0 (sealed with the session key): node id (32) | signature (64)
    <- auth frame #0
          signature = Ed25519(node key, Domain.HANDSHAKE, chain_id, role | transcript)

The chain id is bound twice: its tag is in both hellos (an early, clear
refusal) and it is in every handshake signature. The role byte keeps an
initiator's signature from being reflected back as a responder's. The
transcript holds both ephemeral keys, so a signature is valid for this
session only; a man in the middle who substitutes ephemeral keys cannot
produce the signatures, and one who only relays cannot read or alter frames.
Identities travel encrypted. Each side checks the other's node id against
its allowlist (and the dialer checks it reached the node it meant to).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions
import nacl.public

from consensus.crypto import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, Domain, SigningKey, verify

MAGIC = b"RDWD"
PROTOCOL_VERSION = 1
X25519_BYTES = 32
HELLO = struct.Struct(f">4sB32s{X25519_BYTES}s")
HELLO_BYTES = HELLO.size
AUTH_BYTES = PUBLIC_KEY_BYTES + SIGNATURE_BYTES
ROLE_INITIATOR = b"I"
ROLE_RESPONDER = b"R"
_TRANSCRIPT_PERSON = b"rdwd-hs-v1"
_KEY_PERSON = {True: b"rdwd-key-i2r", False: b"rdwd-key-r2i"}  # keyed by "sent by initiator"


class HandshakeError(Exception):
    """The handshake failed. `reason` is a short metric label (handshake_failures)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def chain_tag(chain_id: str) -> bytes:
    return hashlib.blake2b(chain_id.encode(), digest_size=32, person=b"rdwd-chain").digest()


@dataclass(frozen=True, slots=True)
class Hello:
    version: int
    chain_tag: bytes
    ephemeral: bytes  # X25519 public key

    def encode(self) -> bytes:
        return HELLO.pack(MAGIC, self.version, self.chain_tag, self.ephemeral)

    @classmethod
    def parse(cls, data: bytes, expected_chain_tag: bytes) -> Hello:
        """Parse a peer's hello and check it is for our protocol version and chain."""
        if len(data) != HELLO_BYTES:
            raise HandshakeError("bad_hello", "wrong length")
        magic, version, tag, ephemeral = HELLO.unpack(data)
        if magic != MAGIC:
            raise HandshakeError("bad_hello", "not a Redwood peer")
        if version != PROTOCOL_VERSION:
            raise HandshakeError("version", f"peer speaks version {version}")
        if tag != expected_chain_tag:
            raise HandshakeError("wrong_chain", "peer is on another chain")
        return cls(version, tag, ephemeral)


class Ephemeral:
    """A fresh X25519 key pair for one handshake."""

    __slots__ = ("_secret", "public")

    def __init__(self) -> None:
        key = nacl.public.PrivateKey.generate()
        self._secret = bytes(key)
        self.public = bytes(key.public_key)

    def hello(self, chain_id: str) -> Hello:
        return Hello(PROTOCOL_VERSION, chain_tag(chain_id), self.public)

    def shared_secret(self, peer_public: bytes) -> bytes:
        return shared_secret(self._secret, peer_public)


def shared_secret(secret: bytes, peer_public: bytes) -> bytes:
    """X25519; a low-order peer key (all-zero result) is refused, never used."""
    if len(peer_public) != X25519_BYTES:
        raise HandshakeError("bad_hello", "X25519 public keys are 32 bytes")
    try:
        shared = nacl.bindings.crypto_scalarmult(secret, peer_public)
    except (nacl.exceptions.CryptoError, RuntimeError, ValueError, TypeError) as exc:
        raise HandshakeError("low_order_key", "X25519 rejected the peer key") from exc
    if shared == bytes(len(shared)):
        raise HandshakeError("low_order_key", "all-zero shared secret")
    return shared


def transcript_hash(initiator_hello: bytes, responder_hello: bytes) -> bytes:
    return hashlib.blake2b(
        initiator_hello + responder_hello, digest_size=32, person=_TRANSCRIPT_PERSON
    ).digest()


def session_keys(shared: bytes, transcript: bytes, initiator: bool) -> tuple[bytes, bytes]:
    """(send key, receive key) for this side: one key per direction."""
    i2r = hashlib.blake2b(transcript, digest_size=32, key=shared, person=_KEY_PERSON[True])
    r2i = hashlib.blake2b(transcript, digest_size=32, key=shared, person=_KEY_PERSON[False])
    if initiator:
        return i2r.digest(), r2i.digest()
    return r2i.digest(), i2r.digest()


def _signed(transcript: bytes, by_initiator: bool) -> bytes:
    return (ROLE_INITIATOR if by_initiator else ROLE_RESPONDER) + transcript


def auth_message(key: SigningKey, chain_id: str, transcript: bytes, initiator: bool) -> bytes:
    """This side's proof of identity: node id and its signature of the transcript."""
    signature = key.sign(Domain.HANDSHAKE, chain_id, _signed(transcript, initiator))
    return key.public + signature


def check_auth(data: bytes, chain_id: str, transcript: bytes, peer_is_initiator: bool) -> bytes:
    """The peer's node id if its auth message signs this transcript in its role."""
    if len(data) != AUTH_BYTES:
        raise HandshakeError("bad_auth", "wrong length")
    node_id, signature = data[:PUBLIC_KEY_BYTES], data[PUBLIC_KEY_BYTES:]
    if not verify(
        node_id, signature, Domain.HANDSHAKE, chain_id, _signed(transcript, peer_is_initiator)
    ):
        raise HandshakeError("bad_signature", "handshake signature does not verify")
    return node_id
