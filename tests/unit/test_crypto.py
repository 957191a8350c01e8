"""Ed25519 signing with domain separation, and hashing (consensus.crypto)."""

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import crypto
from consensus.crypto import Domain, Ed25519Verifier, SigningKey, signing_bytes, verify, verify_raw

SEED = bytes(range(32))
CHAIN = "redwood-test"

# RFC 8032 §7.1, TEST 1 (empty message) and TEST 2 (one byte).
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIG_EMPTY = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
    "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)
RFC8032_SEED_2 = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
RFC8032_PUBLIC_2 = bytes.fromhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
RFC8032_SIG_72 = bytes.fromhex(
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
    "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
)

ALL_DOMAINS = [v for k, v in vars(Domain).items() if not k.startswith("_")]


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey(SEED)


def test_rfc8032_vectors_through_verify_raw() -> None:
    assert SigningKey(RFC8032_SEED).public == RFC8032_PUBLIC
    assert verify_raw(RFC8032_PUBLIC, RFC8032_SIG_EMPTY, b"")
    assert SigningKey(RFC8032_SEED_2).public == RFC8032_PUBLIC_2
    assert verify_raw(RFC8032_PUBLIC_2, RFC8032_SIG_72, b"\x72")
    assert not verify_raw(RFC8032_PUBLIC_2, RFC8032_SIG_72, b"\x73")
    assert not verify_raw(RFC8032_PUBLIC, RFC8032_SIG_72, b"\x72")


def test_sha256_known_answer() -> None:
    assert crypto.sha256(b"abc").hex() == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert bytes(32) == crypto.ZERO_HASH


def test_sign_and_verify(key: SigningKey) -> None:
    sig = key.sign(Domain.PREPARE, CHAIN, b"payload")
    assert len(sig) == crypto.SIGNATURE_BYTES
    assert verify(key.public, sig, Domain.PREPARE, CHAIN, b"payload")
    assert Ed25519Verifier().verify(key.public, sig, Domain.PREPARE, CHAIN, b"payload")
    # the signature covers exactly signing_bytes(domain, chain, payload)
    assert verify_raw(key.public, sig, signing_bytes(Domain.PREPARE, CHAIN, b"payload"))
    assert not verify_raw(key.public, sig, b"payload")


def test_signing_is_deterministic(key: SigningKey) -> None:
    assert key.sign(Domain.TX, CHAIN, b"x") == SigningKey(SEED).sign(Domain.TX, CHAIN, b"x")


@pytest.mark.parametrize("other", ALL_DOMAINS[1:])
def test_signature_for_one_domain_is_invalid_for_every_other(key: SigningKey, other: str) -> None:
    for domain in ALL_DOMAINS:
        sig = key.sign(domain, CHAIN, b"same payload")
        if domain != other:
            assert not verify(key.public, sig, other, CHAIN, b"same payload")


def test_domain_tags_are_distinct_and_versioned() -> None:
    assert len(ALL_DOMAINS) == len(set(ALL_DOMAINS)) >= 8
    assert all(d.startswith("redwood/") and d.endswith("/v1") for d in ALL_DOMAINS)


def test_signature_for_one_chain_is_invalid_for_another(key: SigningKey) -> None:
    sig = key.sign(Domain.COMMIT, "chain-a", b"p")
    assert verify(key.public, sig, Domain.COMMIT, "chain-a", b"p")
    for other in ("chain-b", "chain-a ", "", "Chain-a", "chain-"):
        assert not verify(key.public, sig, Domain.COMMIT, other, b"p")


def test_other_key_or_payload_or_flipped_bit_is_invalid(key: SigningKey) -> None:
    other = SigningKey(bytes(32))
    sig = key.sign(Domain.TX, CHAIN, b"p")
    assert not verify(other.public, sig, Domain.TX, CHAIN, b"p")
    assert not verify(key.public, sig, Domain.TX, CHAIN, b"q")
    for bit in range(0, 512, 37):
        flipped = bytearray(sig)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert not verify(key.public, bytes(flipped), Domain.TX, CHAIN, b"p")
    for bit in range(0, 256, 29):
        flipped = bytearray(key.public)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert not verify(bytes(flipped), sig, Domain.TX, CHAIN, b"p")


@settings(max_examples=40, deadline=None)
@given(
    st.tuples(st.text(max_size=8), st.text(max_size=8), st.binary(max_size=8)),
    st.tuples(st.text(max_size=8), st.text(max_size=8), st.binary(max_size=8)),
)
def test_signing_bytes_never_collide_for_different_triples(
    a: tuple[str, str, bytes], b: tuple[str, str, bytes]
) -> None:
    """No (domain, chain, payload) can be re-split into another triple."""
    assert (signing_bytes(*a) == signing_bytes(*b)) == (a == b)


def test_signing_bytes_resists_boundary_shifts() -> None:
    assert signing_bytes("ab", "c", b"d") != signing_bytes("a", "bc", b"d")
    assert signing_bytes("a", "b", b"cd") != signing_bytes("a", "bc", b"d")
    assert signing_bytes("a", "b", b"c") != signing_bytes("a", "b", "c")  # type: ignore[arg-type]


# Public keys that are not on the curve or of small order; libsodium refuses them.
ZERO_KEY = bytes(32)
SMALL_ORDER_KEY = bytes.fromhex("0100000000000000000000000000000000000000000000000000000000000000")
NOT_ON_CURVE = bytes.fromhex("0200000000000000000000000000000000000000000000000000000000000000")


@pytest.mark.parametrize(
    ("public", "signature"),
    [
        (b"", b""),
        (b"\x00" * 31, b"\x00" * 64),
        (b"\x00" * 33, b"\x00" * 64),
        ("key", b"\x00" * 64),
        (None, None),
        (42, 42),
        (bytearray(32), bytes(64)),
        (ZERO_KEY, bytes(64)),
        (SMALL_ORDER_KEY, bytes(64)),
        (NOT_ON_CURVE, bytes(64)),
        (SMALL_ORDER_KEY, b"\x01" + bytes(63)),
        (RFC8032_PUBLIC, b"\xff" * 64),  # S >= group order
        (RFC8032_PUBLIC, b"\x00" * 63),
        (RFC8032_PUBLIC, b"\x00" * 65),
        (RFC8032_PUBLIC, "s" * 64),
        (RFC8032_PUBLIC, memoryview(bytes(64))),
    ],
)
def test_malformed_keys_and_signatures_give_false(public: object, signature: object) -> None:
    assert verify(public, signature, Domain.TX, CHAIN, b"p") is False  # type: ignore[arg-type]
    assert verify_raw(public, signature, b"") is False  # type: ignore[arg-type]
    assert Ed25519Verifier().verify(public, signature, Domain.TX, CHAIN, b"") is False  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("domain", "chain", "payload"),
    [
        (None, CHAIN, b"p"),
        (Domain.TX, None, b"p"),
        (Domain.TX, CHAIN, None),
        (Domain.TX, CHAIN, "p"),
        (Domain.TX, CHAIN, 7),
        (Domain.TX, "\ud800", b"p"),  # lone surrogate: not encodable
        (b"redwood/tx/v1", CHAIN, b"p"),
    ],
)
def test_wrong_argument_types_give_false(
    key: SigningKey, domain: object, chain: object, payload: object
) -> None:
    sig = key.sign(Domain.TX, CHAIN, b"p")
    assert verify(key.public, sig, domain, chain, payload) is False  # type: ignore[arg-type]


def test_verify_raw_with_non_bytes_message_gives_false(key: SigningKey) -> None:
    sig = key.sign(Domain.TX, CHAIN, b"p")
    assert verify_raw(key.public, sig, None) is False  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [b"", bytes(31), bytes(33), "x" * 32, bytearray(32), None])
def test_signing_key_refuses_bad_seed(seed: object) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SigningKey(seed)  # type: ignore[arg-type]


def test_signing_key_repr_never_shows_the_seed() -> None:
    k = SigningKey(RFC8032_SEED)
    for text in (repr(k), str(k), f"{k}", f"{k!r}", repr([k]), repr({"k": k})):
        assert RFC8032_SEED.hex() not in text
        assert RFC8032_SEED.hex()[:8] not in text
        assert repr(RFC8032_SEED)[2:12] not in text
        assert "SigningKey(public=d75a980182b10ab7" in text
    assert not hasattr(k, "__dict__")  # slotted: nothing else to leak through vars()


def test_seed_round_trip_and_public_identity() -> None:
    k = SigningKey(RFC8032_SEED)
    assert k.seed == RFC8032_SEED
    assert SigningKey(k.seed).public == k.public == RFC8032_PUBLIC


def test_generated_keys_are_distinct_and_work() -> None:
    a, b = SigningKey.generate(), SigningKey.generate()
    assert a.public != b.public and len(a.public) == crypto.PUBLIC_KEY_BYTES
    sig = a.sign(Domain.HANDSHAKE, CHAIN, b"hello")
    assert verify(a.public, sig, Domain.HANDSHAKE, CHAIN, b"hello")
    assert not verify(b.public, sig, Domain.HANDSHAKE, CHAIN, b"hello")


def test_verifier_protocol_is_satisfied() -> None:
    verifier: crypto.Verifier = Ed25519Verifier()
    assert verifier.verify(bytes(32), bytes(64), Domain.TX, CHAIN, b"") is False


def test_hash_helper_matches_hashlib() -> None:
    assert crypto.sha256(b"redwood") == hashlib.sha256(b"redwood").digest()


@pytest.mark.parametrize("size", [0, 1, 255, 256, 300, 65_535, 65_536, 200_000])
def test_signing_bytes_equal_msgpack_of_the_triple_at_every_header_size(size: int) -> None:
    import msgpack

    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    for domain in (Domain.TX, Domain.COMMIT):
        for chain in ("redwood-test", "x" * 40, "ünï"):
            want = msgpack.packb([domain, chain, payload], use_bin_type=True)
            assert signing_bytes(domain, chain, payload) == want


@given(st.text(max_size=50), st.text(max_size=50), st.binary(max_size=700))
@settings(max_examples=300, deadline=None)
def test_signing_bytes_equal_msgpack_of_any_triple(domain: str, chain: str, payload: bytes) -> None:
    import msgpack

    assert signing_bytes(domain, chain, payload) == msgpack.packb(
        [domain, chain, payload], use_bin_type=True
    )
