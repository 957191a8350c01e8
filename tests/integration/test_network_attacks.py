"""Attacks on a node's network layer. After each, the node still serves its honest peer.

Setup for every test: node A listens, honest node B dials A, and an attacker
does one bad thing to A. The test asserts A noticed (a counter with the
right reason) and that A and B still exchange messages.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import trio

from consensus.crypto import SigningKey
from network import Channel, Network, PeerAddress
from network.frames import AeadCipher, FrameCipher, FrameReader, pack_messages, seal_frame
from network.handshake import AUTH_BYTES, HELLO_BYTES, Ephemeral
from network.link import handshake
from tests.integration.test_network_support import (
    CHAIN,
    Cluster,
    config,
    exchange,
    keys,
    receive_matching,
    wait_until,
)

WAIT_S = 10.0


@pytest.fixture
async def honest(nursery: trio.Nursery) -> AsyncIterator[Cluster]:
    """Nodes 0 (A) and 1 (B, dials A) running and linked; key 2 is allowlisted but unused."""
    c = Cluster(nursery, keys(3))
    await c.start(0)
    await c.start(1, dial=[0])
    await exchange(c.nets[0], c.nets[1], b"before")
    yield c


async def evil_session(port: int, key: SigningKey, chain: str = CHAIN):  # type: ignore[no-untyped-def]
    """A raw client that completes the handshake, then sends whatever the test wants."""
    frames = FrameReader(AUTH_BYTES + 16)
    with trio.fail_after(WAIT_S):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        _peer, cipher = await handshake(stream, frames, key, chain, True, AeadCipher)
    return stream, cipher


def frame(cipher: FrameCipher, payload: bytes) -> bytes:
    return seal_frame(cipher, pack_messages([(Channel.CONSENSUS, payload)]))


async def closed_by_peer(stream: trio.SocketStream) -> None:
    """Wait (bounded) until the other side closes; whatever it sends before is discarded."""
    with trio.fail_after(WAIT_S):
        try:
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass


async def assert_survives(c: Cluster, tag: bytes) -> None:
    await exchange(c.nets[0], c.nets[1], tag)


# -- identity -------------------------------------------------------------------------


async def test_unknown_key_is_refused(honest: Cluster) -> None:
    a = honest.nets[0]
    stranger = SigningKey(b"\x99" * 32)
    evil = Network(stranger, CHAIN, config(), [honest.addr(0)], [*honest.ids, stranger.public])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(evil.run)
        await wait_until(
            lambda: a.stats.handshake_failures["unknown_peer"] >= 2
        )  # re-dials, refused
        assert not a.is_connected(stranger.public)
        nursery.cancel_scope.cancel()
    await assert_survives(honest, b"unknown-key")


async def test_dialing_an_address_held_by_another_key_is_refused(honest: Cluster) -> None:
    """A node answering at a configured peer's address with another (allowlisted) key."""
    impostor = Network(honest.keys[2], CHAIN, config(), [], honest.ids)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(impostor.run)
        fake_addr = PeerAddress(honest.ids[1], "127.0.0.1", port)
        victim = Network(honest.keys[0], CHAIN, config(), [fake_addr], honest.ids)
        nursery.start_soon(victim.run)
        await wait_until(lambda: victim.stats.handshake_failures["unexpected_peer"] >= 1)
        assert not victim.connected()
        nursery.cancel_scope.cancel()
    await assert_survives(honest, b"impostor")


async def test_wrong_chain_id_is_refused(honest: Cluster) -> None:
    a = honest.nets[0]
    evil = Network(honest.keys[2], "other-chain", config(), [honest.addr(0)], honest.ids)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(evil.run)
        await wait_until(lambda: a.stats.handshake_failures["wrong_chain"] >= 1)
        assert evil.stats.handshake_failures["wrong_chain"] >= 1  # checked on both sides
        assert not a.is_connected(honest.ids[2])
        nursery.cancel_scope.cancel()
    await assert_survives(honest, b"wrong-chain")


async def test_a_misconfigured_address_that_leads_back_to_itself_is_refused(
    nursery: trio.Nursery,
) -> None:
    c = Cluster(nursery, keys(2))
    await c.start(0)
    await c.stop(0)
    port = c.ports[0]
    own_address = PeerAddress(c.ids[1], "127.0.0.1", port)  # peer 1's id, our own port
    net = Network(c.keys[0], CHAIN, config(listen_port=port), [own_address], c.ids)
    nursery.start_soon(net.run)
    await wait_until(lambda: net.stats.handshake_failures["self"] >= 2)  # both ends refuse
    assert not net.connected()


# -- a man in the middle ----------------------------------------------------------------


class TamperingRelay:
    """Relays TCP between a dialer and `target_port`; flips one byte on request."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.flip_next_chunk = False
        self.flipped = 0
        self.connections = 0

    async def serve(self, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._relay, listeners)

    async def _relay(self, client: trio.SocketStream) -> None:
        self.connections += 1
        server = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        async with client, server, trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, client, server, True, nursery.cancel_scope)
            nursery.start_soon(self._pump, server, client, False, nursery.cancel_scope)

    async def _pump(self, src, dst, tamper: bool, scope: trio.CancelScope) -> None:  # type: ignore[no-untyped-def]
        try:
            while data := await src.receive_some(65536):
                if tamper and self.flip_next_chunk:
                    self.flip_next_chunk = False
                    self.flipped += 1
                    data = data[:-1] + bytes([data[-1] ^ 0x40])
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()  # one side gone: drop both


async def test_relay_that_flips_a_byte_closes_the_link_and_reconnect_works(
    nursery: trio.Nursery,
) -> None:
    c = Cluster(nursery, keys(2))
    a = await c.start(0)
    relay = TamperingRelay(c.ports[0])
    relay_port = await nursery.start(relay.serve)
    c.ports.append(0)
    b_net = Network(
        c.keys[1],
        CHAIN,
        config(),
        [PeerAddress(c.ids[0], "127.0.0.1", relay_port)],
        c.ids,
    )
    nursery.start_soon(b_net.run)
    await exchange(a, b_net, b"through-relay")  # an honest relay is harmless
    relay.flip_next_chunk = True
    assert b_net.send(a.node_id, Channel.CONSENSUS, b"tampered")
    await wait_until(lambda: a.stats.link_closes["auth_failed"] == 1)
    assert relay.flipped == 1
    await wait_until(lambda: relay.connections >= 2)  # B re-dialed through the relay
    await exchange(a, b_net, b"after-tamper")
    assert a.stats.messages_received["consensus"] >= 2
    # the tampered message was never delivered
    assert all(item.payload != b"tampered" for item in _drain(a))


def _drain(net: Network) -> list:  # type: ignore[type-arg]
    out = []
    while True:
        try:
            out.append(net.inbound.receive_nowait())
        except trio.WouldBlock:
            return out


# -- an authenticated peer sending bad frames ------------------------------------------


async def test_replayed_frame_closes_the_link(honest: Cluster) -> None:
    a = honest.nets[0]
    stream, cipher = await evil_session(honest.ports[0], honest.keys[2])
    first = frame(cipher, b"evil-1")
    await stream.send_all(first)
    got = await receive_matching(a, b"evil-1")
    assert got.peer == honest.ids[2]
    await stream.send_all(first)  # the same frame again
    await closed_by_peer(stream)
    await wait_until(lambda: a.stats.link_closes["auth_failed"] == 1)
    assert a.stats.messages_received["consensus"] == 2  # "before" and evil-1, once
    await assert_survives(honest, b"replay")


async def test_reordered_frames_close_the_link(honest: Cluster) -> None:
    a = honest.nets[0]
    stream, cipher = await evil_session(honest.ports[0], honest.keys[2])
    first, second = frame(cipher, b"evil-1"), frame(cipher, b"evil-2")
    await stream.send_all(second + first)
    await closed_by_peer(stream)
    await wait_until(lambda: a.stats.link_closes["auth_failed"] == 1)
    assert a.stats.messages_received["consensus"] == 1  # only B's "before"
    await assert_survives(honest, b"reorder")


async def test_truncated_frame_delivers_nothing(honest: Cluster) -> None:
    a = honest.nets[0]
    stream, cipher = await evil_session(honest.ports[0], honest.keys[2])
    await stream.send_all(frame(cipher, b"evil-truncated")[:-5])
    await stream.aclose()
    await wait_until(lambda: a.stats.link_closes["eof"] == 1)
    assert a.stats.messages_received["consensus"] == 1
    await assert_survives(honest, b"truncated")


async def test_truncated_hello_fails_the_handshake(honest: Cluster) -> None:
    a = honest.nets[0]
    stream = await trio.open_tcp_stream("127.0.0.1", honest.ports[0])
    await stream.send_all(Ephemeral().hello(CHAIN).encode()[: HELLO_BYTES // 2])
    await stream.aclose()
    failures = a.stats.handshake_failures
    # EOF, or a reset if A's own hello was still unread when the attacker closed
    await wait_until(lambda: failures["eof"] + failures["io_error"] == 1)
    await assert_survives(honest, b"truncated-hello")


async def test_oversized_length_prefix_closes_before_allocating(honest: Cluster) -> None:
    a = honest.nets[0]
    stream, _ = await evil_session(honest.ports[0], honest.keys[2])
    await stream.send_all(b"\xff\xff\xff\xff" + b"x" * 100)
    await closed_by_peer(stream)
    await wait_until(lambda: a.stats.link_closes["oversized"] == 1)
    await assert_survives(honest, b"oversized")


async def test_oversized_prefix_during_the_handshake(honest: Cluster) -> None:
    a = honest.nets[0]
    stream = await trio.open_tcp_stream("127.0.0.1", honest.ports[0])
    await stream.send_all(Ephemeral().hello(CHAIN).encode() + b"\x7f\xff\xff\xff")
    await closed_by_peer(stream)
    await wait_until(lambda: a.stats.handshake_failures["bad_auth"] == 1)
    await assert_survives(honest, b"oversized-hs")


@pytest.mark.parametrize("after_handshake", [False, True])
async def test_random_garbage_is_refused(honest: Cluster, after_handshake: bool) -> None:
    a = honest.nets[0]
    if after_handshake:
        stream, _ = await evil_session(honest.ports[0], honest.keys[2])
        garbage = b"\x00\x00\x10\x00" + os.urandom(4096)  # plausible prefix, random body
    else:
        stream = await trio.open_tcp_stream("127.0.0.1", honest.ports[0])
        garbage = os.urandom(8192)
    await stream.send_all(garbage)
    await closed_by_peer(stream)
    if after_handshake:
        await wait_until(lambda: a.stats.link_closes["auth_failed"] == 1)
    else:
        await wait_until(lambda: a.stats.handshake_failures["bad_hello"] == 1)
    await assert_survives(honest, b"garbage")


async def test_unknown_channel_from_an_authenticated_peer_closes_its_link(honest: Cluster) -> None:
    a = honest.nets[0]
    stream, cipher = await evil_session(honest.ports[0], honest.keys[2])
    await stream.send_all(seal_frame(cipher, pack_messages([(77, b"?")])))
    await closed_by_peer(stream)
    await wait_until(lambda: a.stats.link_closes["bad_channel"] == 1)
    await assert_survives(honest, b"bad-channel")


# -- resource exhaustion ---------------------------------------------------------------


async def test_connection_loop_is_bounded_and_harmless(nursery: trio.Nursery) -> None:
    c = Cluster(nursery, keys(2))
    cfg = config(inbound_handshakes_per_address_max=4, inbound_connections_max=16)
    a = await c.start(0, cfg=cfg)
    await c.start(1, dial=[0])
    await exchange(a, c.nets[1], b"before")
    held = []
    for _ in range(100):  # open, sometimes hold, sometimes close at once
        stream = await trio.open_tcp_stream("127.0.0.1", c.ports[0])
        if len(held) < 10:
            held.append(stream)
        else:
            await stream.aclose()
    await wait_until(lambda: a.stats.inbound_rejected["too_many_from_address"] >= 6)
    assert a._inbound.connections <= 16
    await assert_survives(c, b"conn-loop")
    for stream in held:
        await stream.aclose()
    # the slots free up again: a fresh honest connection is accepted afterwards
    await wait_until(lambda: a._inbound.handshaking() == 0)
    c.nets[1].disconnect(a.node_id)
    await exchange(a, c.nets[1], b"after")


async def test_slowloris_hits_the_handshake_timeout(nursery: trio.Nursery) -> None:
    c = Cluster(nursery, keys(2))
    a = await c.start(0, cfg=config(handshake_timeout_s=0.3))
    await c.start(1, dial=[0])
    stream = await trio.open_tcp_stream("127.0.0.1", c.ports[0])
    hello = Ephemeral().hello(CHAIN).encode()

    async def drip() -> None:
        try:
            for byte in hello:
                await stream.send_all(bytes([byte]))
                await trio.sleep(0.05)  # the attack: one byte every 50 ms
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    nursery.start_soon(drip)
    await wait_until(lambda: a.stats.handshake_failures["timeout"] == 1)
    await closed_by_peer(stream)
    await assert_survives(c, b"slowloris")


async def test_peer_that_never_reads_fills_its_queue_not_ours(nursery: trio.Nursery) -> None:
    c = Cluster(nursery, keys(3))
    cfg = config(send_queue_bytes_max=256 * 1024, send_stall_timeout_s=30.0)
    a = await c.start(0, cfg=cfg)
    await c.start(1, dial=[0])
    stream, _ = await evil_session(c.ports[0], c.keys[2])  # handshakes, then never reads
    await wait_until(lambda: a.is_connected(c.ids[2]))
    chunk = bytes(64 * 1024)
    for _ in range(2000):  # 128 MiB offered; the socket buffers and the queue hold far less
        a.send(c.ids[2], Channel.CONSENSUS, chunk)
        if a.stats.dropped[("consensus", "queue_full")]:
            break
        await trio.sleep(0)
    assert a.stats.dropped[("consensus", "queue_full")] >= 1
    assert a.stats.peers[c.ids[2]].dropped["queue_full"] >= 1
    await assert_survives(c, b"never-reads")
    for i in range(20):  # honest traffic keeps flowing while the slow peer is stuck
        assert a.send(c.ids[1], Channel.CONSENSUS, b"honest-%d" % i)
    await receive_matching(c.nets[1], b"honest-19")
    await stream.aclose()


async def test_peer_that_never_reads_is_disconnected_once_a_write_stalls(
    nursery: trio.Nursery,
) -> None:
    c = Cluster(nursery, keys(3))
    a = await c.start(0, cfg=config(send_stall_timeout_s=0.2))
    await c.start(1, dial=[0])
    stream, _ = await evil_session(c.ports[0], c.keys[2])
    await wait_until(lambda: a.is_connected(c.ids[2]))

    async def offer() -> None:
        while a.send(c.ids[2], Channel.CONSENSUS, bytes(64 * 1024)) or a.is_connected(c.ids[2]):
            await trio.sleep(0.001)

    nursery.start_soon(offer)
    await wait_until(lambda: a.stats.link_closes["send_stalled"] == 1)
    assert not a.is_connected(c.ids[2])
    await assert_survives(c, b"after-stall")
    await stream.aclose()
