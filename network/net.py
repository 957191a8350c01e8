"""`Network`: the node's view of the peer-to-peer layer (listen, dial, send, gossip).

Theory of operation
-------------------
`run()` listens and starts one dialer task per configured peer. Every TCP
connection, dialed or accepted, goes through the handshake within
`handshake_timeout_s`; the peer's node id must be on the allowlist (both
sides check), and a dialer must reach the node it meant to. Then the link is
*registered*: there is at most one link per peer. When two links to one peer
exist (both sides dialed at once), both nodes keep the one dialed by the
lower node id, so they agree without talking; a new link dialed by the same
side as the old one replaces it (the peer restarted).

Dialers never give up on a configured peer: capped exponential back-off with
jitter between attempts, reset once a link stayed up `link_stable_s`.
Inbound connections are limited in total and, while unauthenticated, per
source address; allowlisted peers that we do not dial (observers) are
accepted like any other.

Messages to the node arrive on `inbound`, a bounded channel. The choice of
what happens when it is full, per channel:

- CONSENSUS and SYNC: the reader of that peer's link waits (so TCP pushes
  back on that peer only). Consensus messages are never dropped on arrival.
- TX_GOSSIP and BLOCK_GOSSIP: dropped and counted (`dropped[(ch,
  "inbound_full")]`). Gossip is redundant by construction (several peers
  relay each item, and blocks are also fetched through SYNC), and a flood of
  gossip must not hold back consensus traffic on the same link.

SYNC is additionally rate limited per peer (`sync_msgs_per_s`); excess
messages are dropped and counted (the requester retries).

Sending never blocks: `send` queues on the peer's link, or drops and counts
(`not_connected`, `queue_full`, `too_large`) and returns False.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Sequence

import trio

from consensus.crypto import SigningKey
from network.config import GOSSIP_CHANNELS, Channel, Inbound, NetConfig, PeerAddress, PeerInfo
from network.frames import AEAD_TAG_BYTES, AeadCipher, FrameCipher, FrameReader
from network.gossip import SeenCache, gossip_id
from network.handshake import AUTH_BYTES, HandshakeError
from network.limits import Backoff
from network.link import CHANNEL_NAMES, CipherFactory, Link, PeerLimits, handshake
from network.peers import InboundSlots, keep_new_link
from network.stats import NetStats

ACCEPT_ERROR_PAUSE_S = 0.1  # after EMFILE and the like, as trio.serve_listeners does
CHANNEL_BY_VALUE = {int(c): c for c in Channel}
_SYNC = int(Channel.SYNC)


def _remote(stream: trio.SocketStream) -> tuple[str, int]:
    try:
        host, port = stream.socket.getpeername()[:2]
    except OSError:
        return ("?", 0)
    return str(host), int(port)


class Network:
    def __init__(
        self,
        key: SigningKey,
        chain_id: str,
        config: NetConfig,
        peers: Sequence[PeerAddress],
        allowlist: Collection[bytes],
        *,
        rng: random.Random | None = None,
        frame_cipher: CipherFactory = AeadCipher,
        on_link_up: Callable[[bytes], None] | None = None,
    ) -> None:
        """`frame_cipher` exists for the benchmark and tests only; nodes never pass it."""
        self._key = key
        self.node_id = key.public
        self.chain_id = chain_id
        self.config = config
        self._peers = {p.node_id: p for p in peers if p.node_id != key.public}
        self._allowlist = frozenset(allowlist)
        self._rng = rng if rng is not None else random.Random()
        self._cipher_factory = frame_cipher
        self._links: dict[bytes, Link] = {}
        self._limits: dict[bytes, PeerLimits] = {}
        self._ever_connected: set[bytes] = set()
        self._seen = SeenCache(config.seen_cache_max)
        self._inbound = InboundSlots(
            config.inbound_connections_max, config.inbound_handshakes_per_address_max
        )
        self._nursery: trio.Nursery | None = None
        # called with the peer's id each time a link to it is established (the node greets it)
        self.on_link_up = on_link_up
        self.listen_port: int | None = None
        self.stats = NetStats()
        self._inbound_send, self.inbound = trio.open_memory_channel[Inbound](
            config.inbound_queue_max
        )

    # -- running -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and dial until cancelled; reports the bound port through `task_status`."""
        listeners = await trio.open_tcp_listeners(
            self.config.listen_port, host=self.config.listen_host
        )
        try:
            self.listen_port = int(listeners[0].socket.getsockname()[1])
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for listener in listeners:
                    nursery.start_soon(self._accept_loop, listener)
                for peer in self._peers.values():
                    nursery.start_soon(self._dial_loop, peer)
                task_status.started(self.listen_port)
        finally:
            for listener in listeners:
                await trio.aclose_forcefully(listener)

    async def _accept_loop(self, listener: trio.SocketListener) -> None:
        assert self._nursery is not None
        while True:
            try:
                stream = await listener.accept()
            except OSError:
                self.stats.inbound_rejected["accept_error"] += 1
                await trio.sleep(ACCEPT_ERROR_PAUSE_S)
                continue
            address = _remote(stream)
            reason = self._inbound.admit(address[0])
            if reason is not None:
                self.stats.inbound_rejected[reason] += 1
                await trio.aclose_forcefully(stream)
                continue
            self._nursery.start_soon(self._serve_inbound, stream, address)

    async def _serve_inbound(self, stream: trio.SocketStream, address: tuple[str, int]) -> None:
        host = address[0]
        try:
            try:
                session = await self._handshake(stream, initiator=False, expected=None)
            finally:
                self._inbound.handshake_done(host)
            if session is not None:
                await self._run_link(stream, *session, outbound=False, address=address)
        finally:
            self._inbound.closed()
            await trio.aclose_forcefully(stream)

    async def _dial_loop(self, peer: PeerAddress) -> None:
        backoff = Backoff(self.config.redial_initial_s, self.config.redial_max_s, self._rng)
        while True:
            while (link := self._links.get(peer.node_id)) is not None:
                await link.closed.wait()
            started = trio.current_time()
            await self._dial_once(peer)
            if trio.current_time() - started >= self.config.link_stable_s:
                backoff.reset()
            if peer.node_id not in self._links:
                await trio.sleep(backoff.next_delay_s())

    async def _dial_once(self, peer: PeerAddress) -> None:
        try:
            with trio.fail_after(self.config.connect_timeout_s):
                stream = await trio.open_tcp_stream(peer.host, peer.port)
        except (OSError, trio.TooSlowError):
            self.stats.dial_failures += 1
            return
        try:
            session = await self._handshake(stream, initiator=True, expected=peer.node_id)
            if session is not None:
                await self._run_link(stream, *session, outbound=True, address=_remote(stream))
        finally:
            await trio.aclose_forcefully(stream)

    async def _handshake(
        self, stream: trio.SocketStream, *, initiator: bool, expected: bytes | None
    ) -> tuple[bytes, FrameCipher, FrameReader] | None:
        """(peer id, cipher, reader holding any early bytes), or None (counted)."""
        frames = FrameReader(AUTH_BYTES + AEAD_TAG_BYTES)
        reason = None
        with trio.move_on_after(self.config.handshake_timeout_s) as timeout:
            try:
                peer_id, cipher = await handshake(
                    stream, frames, self._key, self.chain_id, initiator, self._cipher_factory
                )
                reason = self._refuse_peer(peer_id, expected)
            except HandshakeError as exc:
                reason = exc.reason
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                reason = "io_error"
        if timeout.cancelled_caught:
            reason = "timeout"
        if reason is not None:
            self.stats.handshake_failures[reason] += 1
            return None
        return peer_id, cipher, frames

    def _refuse_peer(self, peer_id: bytes, expected: bytes | None) -> str | None:
        if peer_id == self.node_id:
            return "self"
        if peer_id not in self._allowlist:
            return "unknown_peer"
        if expected is not None and peer_id != expected:
            return "unexpected_peer"
        return None

    # -- links ---------------------------------------------------------------------

    async def _run_link(
        self,
        stream: trio.SocketStream,
        peer_id: bytes,
        cipher: FrameCipher,
        frames: FrameReader,
        *,
        outbound: bool,
        address: tuple[str, int],
    ) -> None:
        limits = self._limits.get(peer_id)
        if limits is None:
            limits = self._limits[peer_id] = PeerLimits.create(self.config, trio.current_time())
        link = Link(
            stream,
            frames,
            cipher,
            peer_id=peer_id,
            initiator_id=self.node_id if outbound else peer_id,
            outbound=outbound,
            address=address,
            config=self.config,
            limits=limits,
            stats=self.stats,
        )
        if not self._register(link):
            self.stats.link_closes["duplicate"] += 1
            return
        if self.on_link_up is not None:
            self.on_link_up(peer_id)
        try:
            await link.run(self._deliver)
        finally:
            if self._links.get(peer_id) is link:
                del self._links[peer_id]
            self.stats.connected_peers = len(self._links)
            self.stats.link_closes[link.close_reason or "cancelled"] += 1
            link.closed.set()

    def _register(self, link: Link) -> bool:
        """Make `link` the peer's link, unless the existing one wins the tie-break."""
        peer_id = link.peer_id
        existing = self._links.get(peer_id)
        if existing is not None:
            if not keep_new_link(self.node_id, peer_id, existing.initiator_id, link.initiator_id):
                return False
            existing.close("replaced")
        self._links[peer_id] = link
        self.stats.connected_peers = len(self._links)
        self.stats.peer(peer_id).links_established += 1
        if peer_id in self._ever_connected and existing is None:
            self.stats.reconnects += 1
        self._ever_connected.add(peer_id)
        return True

    async def _deliver(self, link: Link, messages: list[tuple[int, bytes]]) -> None:
        stats = self.stats
        peer_id = link.peer_id
        for channel, payload in messages:
            name = CHANNEL_NAMES[channel]
            stats.messages_received[name] += 1
            stats.bytes_received[name] += len(payload)
            if channel in GOSSIP_CHANNELS:
                self._on_gossip(link, channel, payload)
                continue
            if channel == _SYNC and not link.limits.sync.try_take(1, trio.current_time()):
                self._drop(name, "rate_limited", peer_id)
                continue
            item = Inbound(peer_id, CHANNEL_BY_VALUE[channel], payload)
            try:
                self._inbound_send.send_nowait(item)  # no scheduler round trip per message
            except trio.WouldBlock:
                await self._inbound_send.send(item)  # full: this peer's reader waits

    def _on_gossip(self, link: Link, channel: int, payload: bytes) -> None:
        name = CHANNEL_NAMES[channel]
        if not self._seen.add(gossip_id(channel, payload)):
            self.stats.gossip_duplicates[name] += 1
            return
        try:
            self._inbound_send.send_nowait(
                Inbound(link.peer_id, CHANNEL_BY_VALUE[channel], payload)
            )
        except trio.WouldBlock:
            self._drop(name, "inbound_full", link.peer_id)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._drop(name, "inbound_closed", link.peer_id)
        self._relay(channel, payload, exclude=link.peer_id)

    def _relay(self, channel: int, payload: bytes, exclude: bytes | None) -> None:
        for peer_id in list(self._links):
            if peer_id != exclude:
                self.send(peer_id, CHANNEL_BY_VALUE[channel], payload)

    def _drop(self, channel_name: str, reason: str, peer_id: bytes | None) -> None:
        self.stats.dropped[(channel_name, reason)] += 1
        if peer_id is not None and peer_id in self.stats.peers:
            self.stats.peers[peer_id].dropped[reason] += 1

    # -- the node's API --------------------------------------------------------------

    def send(self, peer: bytes, channel: Channel, payload: bytes) -> bool:
        """Queue `payload` for `peer`; never blocks. False = dropped (counted)."""
        channel = Channel(channel)
        if not isinstance(payload, bytes):
            raise TypeError("payload must be bytes")
        name = CHANNEL_NAMES[channel]
        if len(payload) > self.config.message_bytes_max:
            self._drop(name, "too_large", None)
            return False
        link = self._links.get(peer)
        if link is None or link.close_reason is not None:
            self._drop(name, "not_connected", None)
            return False
        if not link.enqueue(channel, payload):
            self._drop(name, "queue_full", peer)
            return False
        return True

    def broadcast(
        self, channel: Channel, payload: bytes, peers: Collection[bytes] | None = None
    ) -> int:
        """Send to `peers` (default: every connected peer); the number queued."""
        targets = list(self._links) if peers is None else [p for p in peers if p != self.node_id]
        return sum(self.send(peer, channel, payload) for peer in targets)

    def gossip(self, channel: Channel, payload: bytes) -> None:
        """Flood `payload` to every node; each delivers it to its `inbound` once (not this one)."""
        channel = Channel(channel)
        if channel not in GOSSIP_CHANNELS:
            raise ValueError(f"{channel.name} is not a gossip channel")
        if not self._seen.add(gossip_id(channel, payload)):
            self.stats.gossip_duplicates[CHANNEL_NAMES[channel]] += 1
            return
        self._relay(channel, payload, exclude=None)

    def set_allowlist(self, node_ids: Collection[bytes]) -> None:
        """Replace the allowlist; links to peers no longer on it are closed."""
        self._allowlist = frozenset(node_ids)
        for peer_id, link in list(self._links.items()):
            if peer_id not in self._allowlist:
                link.close("not_allowed")

    def disconnect(self, peer: bytes, reason: str = "requested") -> bool:
        """Close the link to `peer` (a configured peer is re-dialed). False if not connected."""
        link = self._links.get(peer)
        if link is None:
            return False
        link.close(reason)
        return True

    def connected(self) -> list[PeerInfo]:
        return [
            PeerInfo(
                node_id=link.peer_id,
                address=link.address,
                outbound=link.outbound,
                since=link.since,
                bytes_in=link.peer_stats.bytes_in,
                bytes_out=link.peer_stats.bytes_out,
                msgs_in=link.peer_stats.msgs_in,
                msgs_out=link.peer_stats.msgs_out,
            )
            for link in self._links.values()
            if link.close_reason is None
        ]

    def is_connected(self, peer: bytes) -> bool:
        link = self._links.get(peer)
        return link is not None and link.close_reason is None
