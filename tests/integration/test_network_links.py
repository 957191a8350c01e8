"""Links between real Network instances on loopback: delivery, tie-break, reconnect, limits."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio

from network import Channel, NetConfig, Network, PeerAddress
from tests.integration.test_network_support import (
    CHAIN,
    Cluster,
    config,
    exchange,
    keys,
    receive,
    receive_matching,
    wait_until,
)


async def test_messages_flow_both_ways_on_every_channel() -> None:
    async with trio.open_nursery() as nursery:
        c = Cluster(nursery, keys(2))
        a = await c.start(0)
        b = await c.start(1, dial=[0])
        await wait_until(lambda: a.is_connected(b.node_id) and b.is_connected(a.node_id))
        for channel in (Channel.CONSENSUS, Channel.SYNC, Channel.TX_GOSSIP, Channel.BLOCK_GOSSIP):
            assert b.send(a.node_id, channel, b"payload-%d" % channel)
            got = await receive(a)
            assert (got.peer, got.channel, got.payload) == (
                b.node_id,
                channel,
                b"payload-%d" % channel,
            )
        await exchange(a, b)
        assert a.stats.messages_received["consensus"] == 2
        assert b.stats.bytes_sent["sync"] == len(b"payload-4")
        [info] = a.connected()
        assert info.node_id == b.node_id and not info.outbound and info.msgs_in == 5
        assert b.connected()[0].outbound
        assert a.stats.connected_peers == 1
        nursery.cancel_scope.cancel()


async def test_simultaneous_dial_keeps_the_link_dialed_by_the_lower_id() -> None:
    async with trio.open_nursery() as nursery:
        c = Cluster(nursery, keys(2))
        await c.start(0)  # learn two free ports, then start both nodes at once on them
        await c.start(1)
        await c.stop(0)
        await c.stop(1)
        a, b = (
            Network(
                c.keys[i],
                CHAIN,
                config(listen_port=c.ports[i]),
                [PeerAddress(c.ids[1 - i], "127.0.0.1", c.ports[1 - i])],
                c.ids,
            )
            for i in (0, 1)
        )
        nursery.start_soon(a.run)
        nursery.start_soon(b.run)
        lower = min(a, b, key=lambda n: n.node_id)
        higher = b if lower is a else a

        def settled() -> bool:
            return (
                len(lower.connected()) == 1
                and len(higher.connected()) == 1
                and lower.connected()[0].outbound
                and not higher.connected()[0].outbound
            )

        await wait_until(settled)
        await exchange(a, b)
        assert settled()  # and it stays that way: no flapping
        # both dialed: one side refused the losing link, the other replaced it
        closes = a.stats.link_closes + b.stats.link_closes
        assert closes["duplicate"] + closes["replaced"] <= 2
        assert a.stats.reconnects == 0 and b.stats.reconnects == 0
        nursery.cancel_scope.cancel()


async def test_dialer_reconnects_after_the_peer_restarts() -> None:
    async with trio.open_nursery() as nursery:
        c = Cluster(nursery, keys(2))
        b = await c.start(1)
        a = await c.start(0, dial=[1])
        await exchange(a, b)
        await c.stop(1)
        await wait_until(lambda: not a.is_connected(b.node_id))
        assert a.stats.link_closes["eof"] + a.stats.link_closes["io_error"] >= 1
        b2 = await c.start(1, cfg=config(listen_port=c.ports[1]))
        await exchange(a, b2, b"after-restart")
        assert a.stats.reconnects == 1
        nursery.cancel_scope.cancel()


async def test_link_up_is_reported_on_both_sides_each_time_and_can_greet_at_once() -> None:
    async with trio.open_nursery() as nursery:
        c = Cluster(nursery, keys(2))
        ups: dict[int, list[bytes]] = {0: [], 1: []}
        nets: dict[int, Network] = {}

        def greeter(i: int) -> Callable[[bytes], None]:
            def up(peer: bytes) -> None:
                ups[i].append(peer)
                assert nets[i].send(peer, Channel.SYNC, b"hello from %d" % i)

            return up

        nets[0] = await c.start(0, on_link_up=greeter(0))
        nets[1] = await c.start(1, dial=[0], on_link_up=greeter(1))
        got0 = await receive(nets[0])
        got1 = await receive(nets[1])
        assert (got0.payload, got1.payload) == (b"hello from 1", b"hello from 0")
        assert ups == {0: [c.ids[1]], 1: [c.ids[0]]}
        await c.stop(0)
        nets[0] = await c.start(0, cfg=config(listen_port=c.ports[0]), on_link_up=greeter(0))
        assert (await receive(nets[1])).payload == b"hello from 0"
        assert (await receive(nets[0])).payload == b"hello from 1"
        assert ups == {0: [c.ids[1]] * 2, 1: [c.ids[0]] * 2}
        nursery.cancel_scope.cancel()


async def test_observer_on_the_allowlist_is_accepted_inbound() -> None:
    async with trio.open_nursery() as nursery:
        c = Cluster(nursery, keys(3))
        validator = await c.start(0)
        observer = await c.start(2, dial=[0])  # node 0 does not know its address
        await exchange(validator, observer)
        nursery.cancel_scope.cancel()


async def test_removing_a_peer_from_the_allowlist_closes_and_refuses_it() -> None:
    async with trio.open_nursery() as nursery:
        c = Cluster(nursery, keys(3))
        a = await c.start(0)
        b = await c.start(1, dial=[0])
        other = await c.start(2, dial=[0])
        await exchange(a, b)
        await exchange(a, other)
        a.set_allowlist([a.node_id, other.node_id])
        await wait_until(lambda: a.stats.handshake_failures["unknown_peer"] >= 1)
        assert not a.is_connected(b.node_id)
        assert a.stats.link_closes["not_allowed"] == 1
        await exchange(a, other, b"still")
        nursery.cancel_scope.cancel()


async def test_send_failures_are_counted_and_never_block() -> None:
    async with trio.open_nursery() as nursery:
        c = Cluster(nursery, keys(2))
        a = await c.start(0, cfg=config(message_bytes_max=1000, frame_batch_bytes=500))
        assert not a.send(c.ids[1], Channel.CONSENSUS, b"x")
        assert a.stats.dropped[("consensus", "not_connected")] == 1
        assert not a.send(c.ids[1], Channel.CONSENSUS, b"x" * 1001)
        assert a.stats.dropped[("consensus", "too_large")] == 1
        assert a.broadcast(Channel.CONSENSUS, b"x") == 0
        try:
            a.gossip(Channel.CONSENSUS, b"x")
        except ValueError:
            pass
        else:
            raise AssertionError("gossip on the consensus channel must be refused")
        nursery.cancel_scope.cancel()


async def test_queued_messages_are_batched_into_few_frames_in_order() -> None:
    async with trio.open_nursery() as nursery:
        c = Cluster(nursery, keys(2))
        a = await c.start(0)
        b = await c.start(1, dial=[0])
        await exchange(a, b)
        frames_before = b.stats.frames_sent
        payloads = [i.to_bytes(4, "big") * 50 for i in range(2000)]  # 200 bytes each
        for p in payloads:
            assert b.send(a.node_id, Channel.CONSENSUS, p)
        got = [(await receive(a)).payload for _ in payloads]
        assert got == payloads
        frames = b.stats.frames_sent - frames_before
        assert frames <= 2000 * 205 // (64 * 1024) + 3  # about one per 64 KiB, not one each
        nursery.cancel_scope.cancel()


async def test_block_sized_messages_arrive_whole_and_in_order_among_small_ones() -> None:
    """Frames of 64 KiB and more are written as prefix, then body (no copy): the reader
    must see the same stream as from one write, whatever the sizes around them."""
    async with trio.open_nursery() as nursery:
        c = Cluster(nursery, keys(2))
        a = await c.start(0)
        b = await c.start(1, dial=[0])
        await exchange(a, b)
        sizes = [700_000, 10, 65_520, 65_536, 3, 1_500_000, 200, 64 * 1024 - 17, 64 * 1024 - 16]
        payloads = [bytes([i]) * n for i, n in enumerate(sizes)]
        for p in payloads:
            assert b.send(a.node_id, Channel.SYNC, p)
        got = [(await receive(a)).payload for _ in payloads]
        assert [len(g) for g in got] == sizes
        assert got == payloads
        nursery.cancel_scope.cancel()


async def test_full_inbound_back_pressures_consensus_but_drops_gossip() -> None:
    async with trio.open_nursery() as nursery:
        c = Cluster(nursery, keys(2))
        a = await c.start(0, cfg=config(inbound_queue_max=4))
        b = await c.start(1, dial=[0])
        await wait_until(lambda: a.is_connected(b.node_id) and b.is_connected(a.node_id))
        for i in range(4):
            b.gossip(Channel.TX_GOSSIP, b"tx-%d" % i)
        await wait_until(lambda: a.stats.messages_received["tx_gossip"] == 4)
        b.gossip(Channel.TX_GOSSIP, b"tx-overflow")
        await wait_until(lambda: a.stats.dropped[("tx_gossip", "inbound_full")] == 1)
        for i in range(50):
            assert b.send(a.node_id, Channel.CONSENSUS, b"c-%d" % i)
        got = [(await receive(a)).payload for _ in range(54)]
        assert got[:4] == [b"tx-%d" % i for i in range(4)]
        assert got[4:] == [b"c-%d" % i for i in range(50)]  # none lost, in order
        assert a.stats.dropped[("consensus", "inbound_full")] == 0
        nursery.cancel_scope.cancel()


async def test_sync_channel_is_rate_limited_per_peer() -> None:
    async with trio.open_nursery() as nursery:
        c = Cluster(nursery, keys(2))
        a = await c.start(0, cfg=config(sync_msgs_per_s=0.001, sync_msgs_burst=5))
        b = await c.start(1, dial=[0])
        await wait_until(lambda: a.is_connected(b.node_id) and b.is_connected(a.node_id))
        for i in range(20):
            assert b.send(a.node_id, Channel.SYNC, b"req-%d" % i)
        await wait_until(lambda: a.stats.messages_received["sync"] == 20)
        assert a.stats.dropped[("sync", "rate_limited")] == 15
        assert a.stats.peers[b.node_id].dropped["rate_limited"] == 15
        got = [a.inbound.receive_nowait().payload for _ in range(5)]
        assert got == [b"req-%d" % i for i in range(5)]
        await exchange(a, b)  # consensus is not affected
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("limit", ["bytes", "messages"])
async def test_a_peer_over_its_rate_is_throttled_then_disconnected(limit: str) -> None:
    if limit == "bytes":
        cfg = config(
            message_bytes_max=64 * 1024,
            peer_bytes_per_s=50_000.0,
            peer_bytes_burst=100_000.0,
            throttle_disconnect_s=0.3,
        )
        payload, per_round = bytes(60_000), 1
    else:
        cfg = config(peer_msgs_per_s=500.0, peer_msgs_burst=1000.0, throttle_disconnect_s=0.3)
        payload, per_round = b"m", 200
    async with trio.open_nursery() as nursery:
        c = Cluster(nursery, keys(2))
        a = await c.start(0, cfg=cfg)
        b = await c.start(1, dial=[0])
        await wait_until(lambda: a.is_connected(b.node_id) and b.is_connected(a.node_id))

        async def flood() -> None:
            while True:
                for _ in range(per_round):
                    b.send(a.node_id, Channel.CONSENSUS, payload)
                await trio.sleep(0.001)

        async def drain() -> None:
            while True:
                await a.inbound.receive()

        nursery.start_soon(flood)
        nursery.start_soon(drain)
        await wait_until(lambda: a.stats.throttled >= 1)
        assert a.stats.peers[b.node_id].throttled >= 1
        await wait_until(lambda: a.stats.link_closes["rate_limited"] >= 1)
        nursery.cancel_scope.cancel()


async def test_keepalives_hold_an_idle_link_open() -> None:
    cfg = config(keepalive_interval_s=0.05, idle_timeout_s=0.2)
    async with trio.open_nursery() as nursery:
        c = Cluster(nursery, keys(2))
        a = await c.start(0, cfg=cfg)
        b = await c.start(1, dial=[0], cfg=cfg)
        await exchange(a, b)
        frames = a.stats.frames_received
        await wait_until(lambda: a.stats.frames_received >= frames + 10)  # ~0.5 s of keep-alives
        assert a.stats.link_closes["idle_timeout"] == 0
        assert a.stats.peers[b.node_id].links_established == 1
        nursery.cancel_scope.cancel()


async def test_a_silent_link_is_closed_after_the_idle_timeout() -> None:
    # b sends keep-alives far less often than a's idle timeout
    async with trio.open_nursery() as nursery:
        c = Cluster(nursery, keys(2))
        a = await c.start(0, cfg=config(keepalive_interval_s=0.05, idle_timeout_s=0.2))
        b = await c.start(1, dial=[0], cfg=config(keepalive_interval_s=5.0, idle_timeout_s=10.0))
        await wait_until(lambda: a.stats.link_closes["idle_timeout"] >= 1)
        await exchange(a, b, b"re-dialed")  # b dials again
        nursery.cancel_scope.cancel()


def test_config_refuses_inconsistent_bounds() -> None:
    for bad in (
        {"idle_timeout_s": 1.0, "keepalive_interval_s": 2.0},
        {"frame_batch_bytes": 10, "message_bytes_max": 5, "peer_bytes_burst": 10_000},
        {"peer_bytes_burst": 100.0},
    ):
        try:
            NetConfig(**bad)  # type: ignore[arg-type]
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad}")


async def test_messages_to_a_peer_are_received_by_receive_matching() -> None:
    # sanity check of the helper itself: it must time out on a payload that never comes
    async with trio.open_nursery() as nursery:
        c = Cluster(nursery, keys(2))
        a = await c.start(0)
        b = await c.start(1, dial=[0])
        await exchange(a, b)
        try:
            await receive_matching(a, b"never-sent", timeout_s=0.1)
        except trio.TooSlowError:
            pass
        else:
            raise AssertionError("receive_matching returned a message that was never sent")
        nursery.cancel_scope.cancel()
