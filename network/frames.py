"""Frames on an authenticated link (sans-IO): length prefix, AEAD, counter nonces, batches.

Wire format of one frame::

    u32 big-endian L | L bytes sealed with ChaCha20-Poly1305 (IETF)

The 4-byte prefix is the AEAD's associated data, so it cannot be altered
either. Each direction has its own key and its own 64-bit frame counter;
the nonce of frame k is ``4 zero bytes || k (u64 little-endian)``. Nonces
are never sent: a replayed, reordered, dropped or tampered frame is opened
with the wrong nonce or fails its tag, and the link closes.

`FrameReader` checks the length prefix against a maximum as soon as its
four bytes arrive, before any byte of the body is buffered.

A frame's plaintext is a batch of messages, each ``u8 channel | u32 length |
payload``; channel 0 is the keep-alive (empty payload).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Protocol

import nacl.bindings
import nacl.exceptions

LENGTH_PREFIX = struct.Struct(">I")
MESSAGE_HEADER = struct.Struct(">BI")
KEEPALIVE_CHANNEL = 0
AEAD_KEY_BYTES = nacl.bindings.crypto_aead_chacha20poly1305_ietf_KEYBYTES
AEAD_TAG_BYTES = nacl.bindings.crypto_aead_chacha20poly1305_ietf_ABYTES
NONCE_COUNTER_MAX = 2**64 - 1


class FrameError(Exception):
    """The peer sent bytes that are not a valid frame. `reason` is a short metric label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class FrameCipher(Protocol):
    """Seals and opens the frames of one link, in order. Stateful (counters)."""

    overhead: int

    def seal(self, plaintext: bytes, aad: bytes) -> bytes: ...

    def open(self, sealed: bytes, aad: bytes) -> bytes: ...


def counter_nonce(counter: int) -> bytes:
    """The 12-byte IETF nonce for frame number `counter` of one direction."""
    if not 0 <= counter <= NONCE_COUNTER_MAX:
        raise OverflowError("frame counter exhausted; the link must be re-established")
    return bytes(4) + counter.to_bytes(8, "little")


class AeadCipher:
    """ChaCha20-Poly1305 with one key and one frame counter per direction."""

    __slots__ = ("_recv_counter", "_recv_key", "_send_counter", "_send_key")

    overhead = AEAD_TAG_BYTES

    def __init__(self, send_key: bytes, recv_key: bytes) -> None:
        if len(send_key) != AEAD_KEY_BYTES or len(recv_key) != AEAD_KEY_BYTES:
            raise ValueError(f"AEAD keys are {AEAD_KEY_BYTES} bytes")
        if send_key == recv_key:
            raise ValueError("the two directions must use different keys")
        self._send_key = send_key
        self._recv_key = recv_key
        self._send_counter = 0
        self._recv_counter = 0

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = counter_nonce(self._send_counter)
        self._send_counter += 1
        return nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(
            plaintext, aad, nonce, self._send_key
        )

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        nonce = counter_nonce(self._recv_counter)
        try:
            plaintext = nacl.bindings.crypto_aead_chacha20poly1305_ietf_decrypt(
                sealed, aad, nonce, self._recv_key
            )
        except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
            raise FrameError("auth_failed", "frame failed authentication") from exc
        self._recv_counter += 1  # only an authentic frame advances the counter
        return plaintext


def seal_frame(cipher: FrameCipher, plaintext: bytes) -> bytes:
    """One frame on the wire: length prefix (also the AAD) and the sealed body."""
    prefix, body = seal_frame_parts(cipher, plaintext)
    return prefix + body


def seal_frame_parts(cipher: FrameCipher, plaintext: bytes) -> tuple[bytes, bytes]:
    """`seal_frame` as (length prefix, sealed body): a sender of large frames writes the
    two one after the other instead of copying the body behind the prefix."""
    prefix = LENGTH_PREFIX.pack(len(plaintext) + cipher.overhead)
    return prefix, cipher.seal(plaintext, prefix)


class FrameReader:
    """Splits a byte stream into (prefix, sealed body) pairs. Bytes in, frames out."""

    __slots__ = ("_buffer", "frame_bytes_max", "frame_bytes_min")

    def __init__(self, frame_bytes_max: int, frame_bytes_min: int = AEAD_TAG_BYTES) -> None:
        self.frame_bytes_max = frame_bytes_max  # largest sealed body accepted
        self.frame_bytes_min = frame_bytes_min  # smallest (an empty plaintext's tag)
        self._buffer = bytearray()

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes | bytearray) -> None:
        self._buffer += data

    def take(self, size: int) -> bytes | None:
        """Exactly `size` raw bytes (the unframed hello), or None until they arrive."""
        if len(self._buffer) < size:
            return None
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def next_frame(self) -> tuple[bytes, bytes] | None:
        """The next complete frame, or None until more bytes arrive. Raises FrameError."""
        buffer = self._buffer
        if len(buffer) < LENGTH_PREFIX.size:
            return None
        (length,) = LENGTH_PREFIX.unpack_from(buffer)
        if length > self.frame_bytes_max:
            raise FrameError("oversized", f"length prefix {length} > {self.frame_bytes_max}")
        if length < self.frame_bytes_min:
            raise FrameError("undersized", f"length prefix {length}")
        end = LENGTH_PREFIX.size + length
        if len(buffer) < end:
            return None
        with memoryview(buffer) as view:  # one copy of the body, not two
            prefix = bytes(view[: LENGTH_PREFIX.size])
            body = bytes(view[LENGTH_PREFIX.size : end])
        del buffer[:end]  # after the view is released: a bytearray with a view cannot shrink
        return prefix, body


def pack_messages(messages: Iterable[tuple[int, bytes]]) -> bytes:
    """A frame's plaintext: the batch of (channel, payload) messages, in order."""
    parts: list[bytes] = []
    header = MESSAGE_HEADER.pack
    for channel, payload in messages:
        parts.append(header(channel, len(payload)))
        parts.append(payload)
    return b"".join(parts)


DEFAULT_FRAME_MESSAGES_MAX = 16384


def unpack_messages(
    plaintext: bytes,
    channels: frozenset[int],
    message_bytes_max: int,
    messages_max: int = DEFAULT_FRAME_MESSAGES_MAX,
) -> list[tuple[int, bytes]]:
    """The (channel, payload) messages of an opened frame. Raises FrameError on garbage.

    Keep-alives are accepted and left out of the result. At most
    `messages_max` entries (keep-alives included) are accepted per frame,
    so a frame of empty messages cannot balloon into millions of objects.
    """
    out: list[tuple[int, bytes]] = []
    offset = 0
    end = len(plaintext)
    header_size = MESSAGE_HEADER.size
    unpack_header = MESSAGE_HEADER.unpack_from
    entries = 0
    while offset < end:
        entries += 1
        if entries > messages_max:
            raise FrameError("bad_batch", f"more than {messages_max} messages in a frame")
        if end - offset < header_size:
            raise FrameError("bad_batch", "truncated message header")
        channel, length = unpack_header(plaintext, offset)
        offset += header_size
        if length > message_bytes_max or length > end - offset:
            raise FrameError("bad_batch", "message length out of bounds")
        if channel == KEEPALIVE_CHANNEL:
            if length:
                raise FrameError("bad_batch", "keep-alive with a payload")
            continue
        if channel not in channels:
            raise FrameError("bad_channel", f"unknown channel {channel}")
        out.append((channel, plaintext[offset : offset + length]))
        offset += length
    return out
