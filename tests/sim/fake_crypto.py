"""Fast stand-ins for Ed25519 in the simulator, with the same shape as `consensus.crypto`.

A simulated run checks hundreds of thousands of signatures; real Ed25519
(about 60 µs per check in PyNaCl) would dominate the run time. The fake keeps
every property the protocol relies on inside a closed simulation:

- only the holder of a key's secret can produce its signatures (a Byzantine
  node that lacks the secret cannot forge: BLAKE2b keyed with the secret is a
  MAC, and the verifier holds the table of secrets);
- the signature covers the exact `signing_bytes(domain, chain_id, payload)`,
  so domain separation and chain separation are exercised as in production;
- signatures are 64 bytes and public keys 32 bytes, so they fit the wire types.

A handful of seeds run with the real `SigningKey`/`Ed25519Verifier` too
(`make_keys(real=True)`), so nothing the fake hides goes unnoticed.
"""

from __future__ import annotations

import hashlib
import random

from consensus.crypto import (
    PUBLIC_KEY_BYTES,
    SEED_BYTES,
    SIGNATURE_BYTES,
    Ed25519Verifier,
    SigningKey,
    signing_bytes,
)


def _mac(secret: bytes, message: bytes) -> bytes:
    return hashlib.blake2b(message, key=secret, digest_size=SIGNATURE_BYTES).digest()


class FakeSigningKey:
    """Quacks like `consensus.crypto.SigningKey`: `.public` and `.sign(domain, chain_id, payload)`."""

    __slots__ = ("_secret", "public")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_BYTES:
            raise ValueError(f"a fake key seed is {SEED_BYTES} bytes")
        self._secret = seed
        self.public: bytes = hashlib.sha256(b"fake-public/" + seed).digest()[:PUBLIC_KEY_BYTES]

    @property
    def seed(self) -> bytes:
        return self._secret

    def sign(self, domain: str, chain_id: str, payload: bytes) -> bytes:
        return _mac(self._secret, signing_bytes(domain, chain_id, payload))

    def __repr__(self) -> str:
        return f"FakeSigningKey(public={self.public.hex()[:16]}...)"


class FakeVerifier:
    """Checks fake signatures against a table of the simulation's secrets.

    Unknown public keys, wrong lengths and wrong MACs all give False; like the
    real verifier it never raises on peer input. `checks` counts calls (the
    simulator reports it).
    """

    def __init__(self, keys: list[FakeSigningKey]) -> None:
        self._secrets = {k.public: k.seed for k in keys}
        self.checks = 0

    def verify(
        self, public: bytes, signature: bytes, domain: str, chain_id: str, payload: bytes
    ) -> bool:
        self.checks += 1
        secret = self._secrets.get(public)
        if secret is None or len(signature) != SIGNATURE_BYTES:
            return False
        return _mac(secret, signing_bytes(domain, chain_id, payload)) == signature


class CountingEd25519Verifier(Ed25519Verifier):
    """The real verifier, counting checks like the fake one."""

    def __init__(self) -> None:
        self.checks = 0

    def verify(
        self, public: bytes, signature: bytes, domain: str, chain_id: str, payload: bytes
    ) -> bool:
        self.checks += 1
        return super().verify(public, signature, domain, chain_id, payload)


Signer = FakeSigningKey | SigningKey
AnyVerifier = FakeVerifier | CountingEd25519Verifier


def make_keys(count: int, seed: int, *, real: bool = False) -> tuple[list[Signer], AnyVerifier]:
    """`count` deterministic keys derived from `seed`, and a verifier that knows them."""
    rng = random.Random(f"keys/{seed}")
    seeds = [rng.randbytes(SEED_BYTES) for _ in range(count)]
    if real:
        real_keys: list[Signer] = [SigningKey(s) for s in seeds]
        return real_keys, CountingEd25519Verifier()
    fake = [FakeSigningKey(s) for s in seeds]
    keys: list[Signer] = list(fake)
    return keys, FakeVerifier(fake)
