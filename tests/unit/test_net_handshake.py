"""Handshake pieces: hello parsing, low-order keys, transcript, keys, signatures; and a full run."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from consensus.crypto import SigningKey
from network.frames import AeadCipher, FrameReader, seal_frame
from network.handshake import (
    AUTH_BYTES,
    HELLO_BYTES,
    MAGIC,
    PROTOCOL_VERSION,
    Ephemeral,
    HandshakeError,
    Hello,
    auth_message,
    chain_tag,
    check_auth,
    session_keys,
    shared_secret,
    transcript_hash,
)
from network.link import handshake

CHAIN = "redwood-test"
ALICE, BOB = SigningKey(b"\x0a" * 32), SigningKey(b"\x0b" * 32)


def test_hello_round_trip_and_size() -> None:
    hello = Ephemeral().hello(CHAIN)
    data = hello.encode()
    assert len(data) == HELLO_BYTES and data.startswith(MAGIC) and data[4] == PROTOCOL_VERSION
    assert Hello.parse(data, chain_tag(CHAIN)) == hello


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: b"HTTP" + d[4:], "bad_hello"),
        (lambda d: d[:4] + bytes([PROTOCOL_VERSION + 1]) + d[5:], "version"),
        (lambda d: d[:5] + chain_tag("other-chain") + d[37:], "wrong_chain"),
        (lambda d: d[:-1], "bad_hello"),
    ],
)
def test_bad_hellos_are_refused(mutate, reason: str) -> None:  # type: ignore[no-untyped-def]
    data = mutate(Ephemeral().hello(CHAIN).encode())
    with pytest.raises(HandshakeError) as err:
        Hello.parse(data, chain_tag(CHAIN))
    assert err.value.reason == reason


@pytest.mark.parametrize(
    "point",
    [
        bytes(32),
        b"\x01" + bytes(31),
        b"\xe0\xeb\x7a\x7c\x3b\x41\xb8\xae\x16\x56\xe3\xfa\xf1\x9f\xc4\x6a\xda\x09\x8d\xeb\x9c\x32\xb1\xfd\x86\x62\x05\x16\x5f\x49\xb8\x00",
    ],
)
def test_low_order_keys_are_refused(point: bytes) -> None:
    with pytest.raises(HandshakeError) as err:
        Ephemeral().shared_secret(point)
    assert err.value.reason == "low_order_key"


def test_both_sides_derive_mirrored_distinct_keys() -> None:
    a, b = Ephemeral(), Ephemeral()
    ha, hb = a.hello(CHAIN).encode(), b.hello(CHAIN).encode()
    assert a.shared_secret(b.public) == b.shared_secret(a.public)
    t = transcript_hash(ha, hb)
    a_send, a_recv = session_keys(a.shared_secret(b.public), t, initiator=True)
    b_send, b_recv = session_keys(b.shared_secret(a.public), t, initiator=False)
    assert (a_send, a_recv) == (b_recv, b_send)
    assert a_send != a_recv


def test_transcript_binds_both_hellos_and_their_order() -> None:
    ha, hb = Ephemeral().hello(CHAIN).encode(), Ephemeral().hello(CHAIN).encode()
    t = transcript_hash(ha, hb)
    assert t != transcript_hash(hb, ha)
    assert t != transcript_hash(ha, hb[:-1] + bytes([hb[-1] ^ 1]))
    shared = b"\x05" * 32
    assert session_keys(shared, t, True) != session_keys(shared, transcript_hash(hb, ha), True)


def test_auth_verifies_only_for_its_transcript_role_and_chain() -> None:
    t = transcript_hash(b"i" * HELLO_BYTES, b"r" * HELLO_BYTES)
    auth = auth_message(ALICE, CHAIN, t, initiator=True)
    assert len(auth) == AUTH_BYTES
    assert check_auth(auth, CHAIN, t, peer_is_initiator=True) == ALICE.public
    for chain, transcript, role in [
        (CHAIN, t, False),  # reflected as the responder's
        ("other-chain", t, True),
        (CHAIN, bytes(32), True),
    ]:
        with pytest.raises(HandshakeError) as err:
            check_auth(auth, chain, transcript, peer_is_initiator=role)
        assert err.value.reason == "bad_signature"
    with pytest.raises(HandshakeError):
        check_auth(auth[:-1], CHAIN, t, True)


def test_shared_secret_rejects_malformed_key() -> None:
    with pytest.raises(HandshakeError):
        shared_secret(b"\x01" * 32, b"short")


async def _both(chain_a: str, chain_b: str) -> list[object]:
    left, right = trio.testing.memory_stream_pair()
    results: list[object] = [None, None]

    async def side(i: int, stream, key: SigningKey, chain: str, initiator: bool) -> None:  # type: ignore[no-untyped-def]
        try:
            results[i] = await handshake(
                stream, FrameReader(AUTH_BYTES + 16), key, chain, initiator, AeadCipher
            )
        except HandshakeError as exc:
            results[i] = exc
            await stream.aclose()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(side, 0, left, ALICE, chain_a, True)
            nursery.start_soon(side, 1, right, BOB, chain_b, False)
    return results


async def test_full_handshake_over_memory_streams() -> None:
    (peer_of_a, cipher_a), (peer_of_b, cipher_b) = await _both(CHAIN, CHAIN)  # type: ignore[misc]
    assert peer_of_a == BOB.public and peer_of_b == ALICE.public
    frame = seal_frame(cipher_a, b"secret")
    assert cipher_b.open(frame[4:], frame[:4]) == b"secret"


async def test_handshake_across_chains_fails_on_both_sides() -> None:
    results = await _both(CHAIN, "other-chain")
    assert all(isinstance(r, HandshakeError) for r in results)
    assert "wrong_chain" in {r.reason for r in results}  # type: ignore[union-attr]
