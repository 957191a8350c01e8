"""Framing: counter nonces, AEAD sealing, length-prefix checks, message batches."""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from network.frames import (
    AEAD_TAG_BYTES,
    LENGTH_PREFIX,
    AeadCipher,
    FrameError,
    FrameReader,
    counter_nonce,
    pack_messages,
    seal_frame,
    seal_frame_parts,
    unpack_messages,
)

K1, K2 = b"\x01" * 32, b"\x02" * 32
CHANNELS = frozenset({1, 2, 3, 4})


def pair() -> tuple[AeadCipher, AeadCipher]:
    return AeadCipher(K1, K2), AeadCipher(K2, K1)


def split(frame: bytes) -> tuple[bytes, bytes]:
    return frame[:4], frame[4:]


def test_counter_nonce_layout_and_exhaustion() -> None:
    assert counter_nonce(0) == bytes(12)
    assert counter_nonce(1) == bytes(4) + b"\x01" + bytes(7)
    assert counter_nonce(2**64 - 1) == bytes(4) + b"\xff" * 8
    with pytest.raises(OverflowError):
        counter_nonce(2**64)


def test_same_key_both_directions_refused() -> None:
    with pytest.raises(ValueError):
        AeadCipher(K1, K1)
    with pytest.raises(ValueError):
        AeadCipher(K1, b"short")


def test_frames_open_in_order_with_advancing_counters() -> None:
    alice, bob = pair()
    frames = [seal_frame(alice, f"msg {i}".encode()) for i in range(5)]
    assert len(set(frames)) == 5  # same-length plaintexts, distinct nonces
    for i, frame in enumerate(frames):
        assert bob.open(*reversed(split(frame))) == f"msg {i}".encode()


def test_replayed_frame_is_rejected() -> None:
    alice, bob = pair()
    frame = seal_frame(alice, b"once")
    assert bob.open(frame[4:], frame[:4]) == b"once"
    with pytest.raises(FrameError) as err:
        bob.open(frame[4:], frame[:4])
    assert err.value.reason == "auth_failed"


def test_reordered_frames_are_rejected_and_failure_does_not_advance() -> None:
    alice, bob = pair()
    first, second = seal_frame(alice, b"first"), seal_frame(alice, b"second")
    with pytest.raises(FrameError):
        bob.open(second[4:], second[:4])
    assert bob.open(first[4:], first[:4]) == b"first"  # counter was not consumed


def test_frame_from_the_other_direction_is_rejected() -> None:
    alice, _bob = pair()
    frame = seal_frame(alice, b"to bob")
    with pytest.raises(FrameError):
        alice.open(frame[4:], frame[:4])  # reflected back at its sender


@pytest.mark.parametrize("index", [0, 3, 4, 10, -1])
def test_any_flipped_byte_fails_authentication(index: int) -> None:
    alice, bob = pair()
    frame = bytearray(seal_frame(alice, b"hello, tamper-proof world"))
    frame[index] ^= 0x01
    with pytest.raises(FrameError):
        bob.open(bytes(frame[4:]), bytes(frame[:4]))


def test_reader_checks_the_prefix_before_buffering_a_body() -> None:
    reader = FrameReader(frame_bytes_max=1024)
    reader.feed(LENGTH_PREFIX.pack(2**32 - 1))  # 4 GiB promised, nothing sent
    with pytest.raises(FrameError) as err:
        reader.next_frame()
    assert err.value.reason == "oversized"
    assert reader.buffered_bytes == 4


def test_reader_rejects_a_body_shorter_than_the_tag() -> None:
    reader = FrameReader(frame_bytes_max=1024)
    reader.feed(LENGTH_PREFIX.pack(AEAD_TAG_BYTES - 1))
    with pytest.raises(FrameError) as err:
        reader.next_frame()
    assert err.value.reason == "undersized"


def test_reader_reassembles_frames_fed_byte_by_byte_and_back_to_back() -> None:
    alice, bob = pair()
    stream = seal_frame(alice, b"a" * 100) + seal_frame(alice, b"") + seal_frame(alice, b"c")
    reader = FrameReader(frame_bytes_max=1024)
    got = []
    for byte in stream:
        reader.feed(bytes([byte]))
        while (frame := reader.next_frame()) is not None:
            got.append(bob.open(frame[1], frame[0]))
    assert got == [b"a" * 100, b"", b"c"]
    assert reader.buffered_bytes == 0


def test_reader_take_returns_exact_raw_bytes() -> None:
    reader = FrameReader(frame_bytes_max=64)
    reader.feed(b"abc")
    assert reader.take(4) is None
    reader.feed(b"defg")
    assert reader.take(4) == b"abcd"
    assert reader.buffered_bytes == 3


def test_frame_parts_are_the_frame_split_after_its_prefix() -> None:
    alice, bob = pair()
    prefix, body = seal_frame_parts(alice, b"z" * 100_000)
    reader = FrameReader(frame_bytes_max=200_000)
    reader.feed(prefix)
    assert reader.next_frame() is None
    reader.feed(body[:5])
    assert reader.next_frame() is None
    reader.feed(body[5:] + seal_frame(alice, b"next"))
    p, sealed = reader.next_frame()
    assert (p, sealed) == (prefix, body)
    assert bob.open(sealed, p) == b"z" * 100_000
    p, sealed = reader.next_frame()
    assert bob.open(sealed, p) == b"next"
    assert reader.next_frame() is None and reader.buffered_bytes == 0


def test_truncated_frame_waits_for_more_bytes() -> None:
    alice, _ = pair()
    frame = seal_frame(alice, b"payload")
    reader = FrameReader(frame_bytes_max=1024)
    reader.feed(frame[:-1])
    assert reader.next_frame() is None


@given(st.lists(st.tuples(st.sampled_from(sorted(CHANNELS)), st.binary(max_size=300))))
def test_batches_round_trip(messages: list[tuple[int, bytes]]) -> None:
    assert unpack_messages(pack_messages(messages), CHANNELS, 1000) == messages


def test_messages_per_frame_are_bounded() -> None:
    plain = pack_messages([(1, b"")] * 11)
    assert len(unpack_messages(plain, CHANNELS, 100, messages_max=11)) == 11
    with pytest.raises(FrameError) as err:
        unpack_messages(plain, CHANNELS, 100, messages_max=10)
    assert err.value.reason == "bad_batch"


def test_keepalive_is_accepted_and_left_out() -> None:
    plain = pack_messages([(0, b""), (1, b"x"), (0, b"")])
    assert unpack_messages(plain, CHANNELS, 100) == [(1, b"x")]


@pytest.mark.parametrize(
    ("plain", "reason"),
    [
        (pack_messages([(1, b"abc")])[:-1], "bad_batch"),  # truncated payload
        (pack_messages([(1, b"abc")]) + b"\x01\x00", "bad_batch"),  # truncated header
        (pack_messages([(9, b"abc")]), "bad_channel"),
        (pack_messages([(0, b"x")]), "bad_batch"),  # keep-alive with payload
        (pack_messages([(1, b"y" * 101)]), "bad_batch"),  # over message_bytes_max
    ],
)
def test_bad_batches_are_rejected(plain: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as err:
        unpack_messages(plain, CHANNELS, 100)
    assert err.value.reason == reason


@given(st.binary(max_size=500))
def test_garbage_batches_raise_only_frame_error(data: bytes) -> None:
    with contextlib.suppress(FrameError):
        unpack_messages(data, CHANNELS, 200)


def test_garbage_never_opens() -> None:
    _, bob = pair()
    reader = FrameReader(frame_bytes_max=4096)
    reader.feed(LENGTH_PREFIX.pack(64) + os.urandom(64))
    frame = reader.next_frame()
    assert frame is not None
    with pytest.raises(FrameError):
        bob.open(frame[1], frame[0])
