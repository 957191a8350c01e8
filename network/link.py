"""One authenticated, encrypted link to a peer, on a Trio stream.

`handshake` runs the protocol of `handshake.py` over a stream. A `Link` then
owns the stream with two tasks:

- the *writer* drains the per-channel send queues (consensus first) into one
  sealed frame of up to `frame_batch_bytes`, so a burst of small messages
  costs one AEAD call and one `send_all`; when idle it sends keep-alives;
- the *reader* opens frames in order, charges the peer's token buckets (a
  peer in debt is not read from until it is repaid: TCP pushes back; one
  that stays throttled for `throttle_disconnect_s` is disconnected), and
  hands the messages to the network's `deliver` callback.

Send queues are bounded in messages and bytes per channel; `enqueue` never
blocks and reports a full queue so the caller can drop and count. Any frame
error, a stalled write, an idle peer or EOF closes the link with a reason.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from consensus.crypto import SigningKey
from network.config import SEND_PRIORITY, Channel, NetConfig
from network.frames import (
    KEEPALIVE_CHANNEL,
    MESSAGE_HEADER,
    FrameCipher,
    FrameError,
    FrameReader,
    pack_messages,
    seal_frame,
    seal_frame_parts,
    unpack_messages,
)
from network.handshake import (
    AUTH_BYTES,
    HELLO_BYTES,
    Ephemeral,
    HandshakeError,
    Hello,
    auth_message,
    chain_tag,
    check_auth,
    session_keys,
    transcript_hash,
)
from network.limits import TokenBucket
from network.stats import NetStats, PeerStats

CHANNEL_VALUES = frozenset(int(c) for c in Channel)
CHANNEL_NAMES = {int(c): c.name.lower() for c in Channel}
KEEPALIVE_PLAINTEXT = pack_messages([(KEEPALIVE_CHANNEL, b"")])
HANDSHAKE_READ_BYTES = 4096
# a sealed body at least this long is written after its length prefix, not copied behind
# it (a copy of a block-sized frame costs more than the second write)
SEPARATE_SEND_BYTES = 64 * 1024

CipherFactory = Callable[[bytes, bytes], FrameCipher]
Deliver = Callable[["Link", list[tuple[int, bytes]]], Awaitable[None]]


class LinkClosed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- handshake -------------------------------------------------------------------


async def _receive_more(stream: trio.abc.ReceiveStream, frames: FrameReader) -> None:
    data = await stream.receive_some(HANDSHAKE_READ_BYTES)
    if not data:
        raise HandshakeError("eof", "peer closed during the handshake")
    frames.feed(data)


async def handshake(
    stream: trio.abc.Stream,
    frames: FrameReader,
    key: SigningKey,
    chain_id: str,
    initiator: bool,
    cipher_factory: CipherFactory,
) -> tuple[bytes, FrameCipher]:
    """(peer node id, session cipher). Raises HandshakeError; the caller bounds the time.

    Bytes the peer sent after its auth frame stay in `frames`.
    """
    ephemeral = Ephemeral()
    own_hello = ephemeral.hello(chain_id).encode()
    await stream.send_all(own_hello)
    while (peer_hello := frames.take(HELLO_BYTES)) is None:
        await _receive_more(stream, frames)
    hello = Hello.parse(peer_hello, chain_tag(chain_id))
    shared = ephemeral.shared_secret(hello.ephemeral)
    hellos = (own_hello, peer_hello) if initiator else (peer_hello, own_hello)
    transcript = transcript_hash(*hellos)
    cipher = cipher_factory(*session_keys(shared, transcript, initiator))
    await stream.send_all(seal_frame(cipher, auth_message(key, chain_id, transcript, initiator)))
    frames.frame_bytes_max = AUTH_BYTES + cipher.overhead
    frames.frame_bytes_min = cipher.overhead
    try:
        while (frame := frames.next_frame()) is None:
            await _receive_more(stream, frames)
        plaintext = cipher.open(frame[1], frame[0])
    except FrameError as exc:
        raise HandshakeError("bad_auth", str(exc)) from exc
    return check_auth(plaintext, chain_id, transcript, not initiator), cipher


# -- the link ----------------------------------------------------------------------


@dataclass(slots=True)
class PeerLimits:
    """A peer's receive budgets; they outlive its links, so reconnecting does not refill them."""

    bytes: TokenBucket
    messages: TokenBucket
    sync: TokenBucket

    @classmethod
    def create(cls, config: NetConfig, now: float) -> PeerLimits:
        return cls(
            TokenBucket(config.peer_bytes_per_s, config.peer_bytes_burst, now),
            TokenBucket(config.peer_msgs_per_s, config.peer_msgs_burst, now),
            TokenBucket(config.sync_msgs_per_s, config.sync_msgs_burst, now),
        )


class Link:
    __slots__ = (
        "_cipher",
        "_frames",
        "_queued_bytes",
        "_queues",
        "_scope",
        "_stream",
        "_throttled_since",
        "_wake",
        "address",
        "close_reason",
        "closed",
        "config",
        "initiator_id",
        "limits",
        "outbound",
        "peer_id",
        "peer_stats",
        "since",
        "stats",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        frames: FrameReader,
        cipher: FrameCipher,
        *,
        peer_id: bytes,
        initiator_id: bytes,
        outbound: bool,
        address: tuple[str, int],
        config: NetConfig,
        limits: PeerLimits,
        stats: NetStats,
    ) -> None:
        self._stream = stream
        self._frames = frames
        self._cipher = cipher
        self.peer_id = peer_id
        self.initiator_id = initiator_id  # node id of the side that dialed this link
        self.outbound = outbound
        self.address = address
        self.config = config
        self.limits = limits
        self.stats = stats
        self.peer_stats: PeerStats = stats.peer(peer_id)
        self.since = time.time()
        self._queues: dict[int, deque[bytes]] = {int(c): deque() for c in SEND_PRIORITY}
        self._queued_bytes: dict[int, int] = dict.fromkeys(self._queues, 0)
        self._wake = trio.Event()
        self._scope: trio.CancelScope | None = None
        self._throttled_since: float | None = None
        self.close_reason: str | None = None
        self.closed = trio.Event()  # set by the network once the link is unregistered
        frames.frame_bytes_max = config.message_bytes_max + MESSAGE_HEADER.size + cipher.overhead
        frames.frame_bytes_min = cipher.overhead

    # -- caller side (never blocks) --

    def enqueue(self, channel: int, payload: bytes) -> bool:
        """Queue a message; False when this channel's queue is full (the caller counts the drop)."""
        if self.close_reason is not None:
            return False
        queue = self._queues[channel]
        size = self._queued_bytes[channel] + len(payload)
        if len(queue) >= self.config.send_queue_messages_max:
            return False
        if size > self.config.send_queue_bytes_max:
            return False
        queue.append(payload)
        self._queued_bytes[channel] = size
        self._wake.set()
        return True

    def queued_messages(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def close(self, reason: str) -> None:
        if self.close_reason is None:
            self.close_reason = reason
        if self._scope is not None:
            self._scope.cancel()

    # -- tasks --

    async def run(self, deliver: Deliver) -> None:
        """Serve the link until it closes; `close_reason` says why. Closes the stream."""
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                if self.close_reason is not None:
                    nursery.cancel_scope.cancel()
                nursery.start_soon(self._guard, self._write_loop)
                nursery.start_soon(self._guard, self._read_loop, deliver)
        finally:
            if self.close_reason is None:
                self.close_reason = "cancelled"
            await trio.aclose_forcefully(self._stream)

    async def _guard(self, loop: Callable[..., Awaitable[None]], *args: object) -> None:
        try:
            await loop(*args)
        except (LinkClosed, FrameError) as exc:
            self.close(exc.reason)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self.close("io_error")

    def _drain(self) -> list[tuple[int, bytes]]:
        """Queued messages for one frame, consensus first, up to frame_batch_bytes."""
        budget = self.config.frame_batch_bytes
        count_max = self.config.frame_messages_max
        header = MESSAGE_HEADER.size
        batch: list[tuple[int, bytes]] = []
        size = 0
        for channel, queue in self._queues.items():
            taken = 0
            while queue:
                payload = queue[0]
                cost = header + len(payload)
                if batch and (size + cost > budget or len(batch) >= count_max):
                    break
                queue.popleft()
                batch.append((channel, payload))
                size += cost
                taken += len(payload)
            self._queued_bytes[channel] -= taken
            if size >= budget or len(batch) >= count_max:
                break
        return batch

    def _count_sent(self, batch: list[tuple[int, bytes]], frame_bytes: int) -> None:
        stats = self.stats
        stats.frames_sent += 1
        self.peer_stats.bytes_out += frame_bytes
        self.peer_stats.msgs_out += len(batch)
        for channel, payload in batch:
            name = CHANNEL_NAMES[channel]
            stats.messages_sent[name] += 1
            stats.bytes_sent[name] += len(payload)

    async def _write_loop(self) -> None:
        config = self.config
        while True:
            if not any(self._queues.values()):
                self._wake = trio.Event()
                with trio.move_on_after(config.keepalive_interval_s):
                    await self._wake.wait()
            batch = self._drain()
            prefix, body = seal_frame_parts(
                self._cipher, pack_messages(batch) if batch else KEEPALIVE_PLAINTEXT
            )
            with trio.move_on_after(config.send_stall_timeout_s) as stall:
                if len(body) < SEPARATE_SEND_BYTES:
                    await self._stream.send_all(prefix + body)
                else:  # a block or a large batch: two writes cost less than copying it
                    await self._stream.send_all(prefix)
                    await self._stream.send_all(body)
            if stall.cancelled_caught:
                raise LinkClosed("send_stalled")
            self._count_sent(batch, len(prefix) + len(body))

    async def _read_loop(self, deliver: Deliver) -> None:
        config = self.config
        frames = self._frames
        while True:
            frame = frames.next_frame()
            if frame is None:
                with trio.move_on_after(config.idle_timeout_s) as idle:
                    data = await self._stream.receive_some(config.read_chunk_bytes)
                if idle.cancelled_caught:
                    raise LinkClosed("idle_timeout")
                if not data:
                    raise LinkClosed("eof")
                frames.feed(data)
                continue
            prefix, body = frame
            plaintext = self._cipher.open(body, prefix)
            messages = unpack_messages(
                plaintext, CHANNEL_VALUES, config.message_bytes_max, config.frame_messages_max
            )
            self.stats.frames_received += 1
            self.peer_stats.bytes_in += len(prefix) + len(body)
            self.peer_stats.msgs_in += len(messages)
            await self._throttle(len(prefix) + len(body), len(messages))
            if messages:
                await deliver(self, messages)

    async def _throttle(self, frame_bytes: int, messages: int) -> None:
        """Charge the peer's buckets; pause reading while it is in debt."""
        now = trio.current_time()
        delay_s = max(
            self.limits.bytes.take(frame_bytes, now), self.limits.messages.take(messages, now)
        )
        if delay_s <= 0:
            self._throttled_since = None
            return
        if self._throttled_since is None:
            self._throttled_since = now
        elif now - self._throttled_since >= self.config.throttle_disconnect_s:
            raise LinkClosed("rate_limited")
        self.stats.throttled += 1
        self.peer_stats.throttled += 1
        await trio.sleep(delay_s)
