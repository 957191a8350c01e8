"""Gossip over a sparse topology: every node gets every item once; link churn heals."""

from __future__ import annotations

import trio

from network import Channel, Inbound, Network
from tests.integration.test_network_support import Cluster, config, keys, wait_until

VALIDATORS = 9  # nodes 0..8; node 9 is an observer nobody dials
OBSERVER = 9
CONVERGE_S = 5.0


def dial_plan() -> dict[int, list[int]]:
    """Ring + chords among validators (each dials 2–3 peers); the observer dials 2."""
    plan = {i: [(i + 1) % VALIDATORS, (i + 3) % VALIDATORS] for i in range(VALIDATORS)}
    plan[0].append(5)
    plan[OBSERVER] = [0, 4]
    return plan


async def start_cluster(nursery: trio.Nursery) -> Cluster:
    c = Cluster(nursery, keys(VALIDATORS + 1))
    for i in range(VALIDATORS + 1):  # learn ports first (nobody dials), then restart with peers
        await c.start(i)
    for i in range(VALIDATORS + 1):
        await c.stop(i)
    for i, peers in dial_plan().items():
        cfg = c.nets[i].config.__class__(**{**_fields(c.nets[i]), "listen_port": c.ports[i]})
        await c.start(i, dial=peers, cfg=cfg)
    await wait_until(lambda: _links_up(c), timeout_s=CONVERGE_S)
    return c


def _fields(net: Network) -> dict[str, object]:
    cfg = net.config
    return {name: getattr(cfg, name) for name in cfg.__dataclass_fields__}


def _links_up(c: Cluster) -> bool:
    return all(
        c.nets[i].is_connected(c.ids[j]) and c.nets[j].is_connected(c.ids[i])
        for i, peers in dial_plan().items()
        for j in peers
    )


def _quiet(c: Cluster, channel: str) -> bool:
    """Everything sent on `channel` has been received: nothing left in flight."""
    sent = sum(n.stats.messages_sent[channel] for n in c.nets)
    received = sum(n.stats.messages_received[channel] for n in c.nets)
    queued = sum(link.queued_messages() for n in c.nets for link in n._links.values())
    return sent == received and queued == 0


class Inboxes:
    def __init__(self, c: Cluster) -> None:
        self.items: list[list[Inbound]] = [[] for _ in c.nets]

    async def collect(self, i: int, net: Network) -> None:
        async for item in net.inbound:
            self.items[i].append(item)

    def payloads(self, i: int) -> list[bytes]:
        return [item.payload for item in self.items[i]]


async def test_gossip_reaches_every_node_once_including_the_observer(
    nursery: trio.Nursery,
) -> None:
    c = await start_cluster(nursery)
    assert not any(c.nets[i].is_connected(c.ids[OBSERVER]) for i in (2, 3, 6, 7))
    inboxes = Inboxes(c)
    for i, net in enumerate(c.nets):
        nursery.start_soon(inboxes.collect, i, net)
    items = {origin: b"tx from %d" % origin for origin in (3, 7, OBSERVER)}
    for origin, payload in items.items():
        c.nets[origin].gossip(Channel.TX_GOSSIP, payload)
    c.nets[6].gossip(Channel.BLOCK_GOSSIP, b"block 1")

    def everyone_has_everything() -> bool:
        return all(
            all(p in inboxes.payloads(i) for o, p in items.items() if o != i)
            and (i == 6 or b"block 1" in inboxes.payloads(i))
            for i in range(len(c.nets))
        )

    await wait_until(everyone_has_everything, timeout_s=CONVERGE_S)
    await wait_until(lambda: _quiet(c, "tx_gossip") and _quiet(c, "block_gossip"))
    for i in range(len(c.nets)):
        got = inboxes.payloads(i)
        assert len(got) == len(set(got)), f"node {i} got a duplicate"
        assert all(items[o] not in got for o in items if o == i), "origin got its own item"
    links = sum(len(n.connected()) for n in c.nets) // 2
    sent = sum(n.stats.messages_sent["tx_gossip"] for n in c.nets)
    assert sent <= 2 * links * len(items)  # each item crosses each link at most once each way
    assert sent >= (len(c.nets) - 1) * len(items)  # and reached everyone by relaying
    nursery.cancel_scope.cancel()


async def test_link_churn_heals_and_gossip_still_reaches_everyone(nursery: trio.Nursery) -> None:
    c = await start_cluster(nursery)
    inboxes = Inboxes(c)
    for i, net in enumerate(c.nets):
        nursery.start_soon(inboxes.collect, i, net)
    for victim in (0, 4, OBSERVER):  # cut every link of three nodes
        for info in c.nets[victim].connected():
            c.nets[victim].disconnect(info.node_id, "churn")
    cut = sum(len(c.nets[v].connected()) for v in (0, 4, OBSERVER))
    assert cut == 0
    await wait_until(lambda: sum(n.stats.link_closes["churn"] for n in c.nets) >= 8)
    closed = sum(n.stats.link_closes["churn"] for n in c.nets)
    await wait_until(lambda: _links_up(c), timeout_s=CONVERGE_S)
    assert sum(n.stats.reconnects for n in c.nets) >= closed
    c.nets[2].gossip(Channel.TX_GOSSIP, b"after churn")
    await wait_until(
        lambda: all(b"after churn" in inboxes.payloads(i) for i in range(len(c.nets)) if i != 2),
        timeout_s=CONVERGE_S,
    )
    nursery.cancel_scope.cancel()


async def test_a_forgotten_item_is_not_relayed_forever(nursery: trio.Nursery) -> None:
    """Even with a tiny seen-cache, flooding stops (the cache bounds memory, not termination)."""
    c = Cluster(nursery, keys(3))
    a = await c.start(0)
    b = await c.start(1, dial=[0], cfg=config(seen_cache_max=1))
    d = await c.start(2, dial=[0, 1], cfg=config(seen_cache_max=1))
    await wait_until(lambda: all(len(n.connected()) == 2 for n in (a, b, d)))
    a.gossip(Channel.TX_GOSSIP, b"item")
    await wait_until(lambda: _quiet(c, "tx_gossip"))
    assert sum(n.stats.messages_sent["tx_gossip"] for n in c.nets) <= 6
    assert [x.payload for x in _drain(b)] == [b"item"]
    assert [x.payload for x in _drain(d)] == [b"item"]
    nursery.cancel_scope.cancel()


def _drain(net: Network) -> list[Inbound]:
    out = []
    while True:
        try:
            out.append(net.inbound.receive_nowait())
        except trio.WouldBlock:
            return out
