"""Helpers shared by the network tests (no tests here): nodes on loopback, bounded waits."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import trio

from consensus.crypto import SigningKey
from network import Channel, Inbound, NetConfig, Network, PeerAddress

CHAIN = "redwood-test"
WAIT_S = 10.0

# Fast bounds so that attack tests finish in well under a second each.
FAST = NetConfig(
    handshake_timeout_s=1.0,
    connect_timeout_s=1.0,
    keepalive_interval_s=0.5,
    idle_timeout_s=3.0,
    redial_initial_s=0.02,
    redial_max_s=0.2,
)


def keys(n: int) -> list[SigningKey]:
    return [SigningKey(bytes([i + 1]) * 32) for i in range(n)]


def config(**changes: object) -> NetConfig:
    return dataclasses.replace(FAST, **changes)  # type: ignore[arg-type]


class Cluster:
    """Networks started in one nursery; `addr(i)` once running."""

    def __init__(self, nursery: trio.Nursery, keys_: Sequence[SigningKey]) -> None:
        self.nursery = nursery
        self.keys = list(keys_)
        self.nets: list[Network] = []
        self.ports: list[int] = []
        self.scopes: list[trio.CancelScope] = []
        self.stopped: list[trio.Event] = []

    @property
    def ids(self) -> list[bytes]:
        return [k.public for k in self.keys]

    def addr(self, i: int) -> PeerAddress:
        return PeerAddress(self.keys[i].public, "127.0.0.1", self.ports[i])

    async def start(
        self,
        i: int,
        dial: Sequence[int] = (),
        cfg: NetConfig = FAST,
        allow: Sequence[bytes] | None = None,
        **kw: object,
    ) -> Network:
        net = Network(
            self.keys[i],
            CHAIN,
            cfg,
            [self.addr(j) for j in dial],
            self.ids if allow is None else allow,
            **kw,  # type: ignore[arg-type]
        )
        scope = trio.CancelScope()
        stopped = trio.Event()

        async def runner(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    await net.run(task_status=task_status)
            finally:
                stopped.set()

        port = await self.nursery.start(runner)
        while len(self.nets) <= i:
            self.nets.append(None)  # type: ignore[arg-type]
            self.ports.append(0)
            self.scopes.append(None)  # type: ignore[arg-type]
            self.stopped.append(None)  # type: ignore[arg-type]
        self.nets[i], self.ports[i], self.scopes[i], self.stopped[i] = net, port, scope, stopped
        return net

    async def stop(self, i: int) -> None:
        """Cancel node i and wait (bounded) until its sockets are closed."""
        self.scopes[i].cancel()
        with trio.fail_after(WAIT_S):
            await self.stopped[i].wait()


async def wait_until(predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    """Poll a condition on the Trio clock (checkpoints every 5 ms), bounded."""
    with trio.fail_after(timeout_s):
        while not predicate():
            await trio.sleep(0.005)


async def receive(net: Network, timeout_s: float = WAIT_S) -> Inbound:
    with trio.fail_after(timeout_s):
        return await net.inbound.receive()


async def exchange(a: Network, b: Network, tag: bytes = b"ping") -> None:
    """Assert a and b can still talk both ways on the consensus channel."""
    await wait_until(lambda: a.is_connected(b.node_id) and b.is_connected(a.node_id))
    assert a.send(b.node_id, Channel.CONSENSUS, tag + b"-ab")
    assert b.send(a.node_id, Channel.CONSENSUS, tag + b"-ba")
    got_b = await receive_matching(b, tag + b"-ab")
    got_a = await receive_matching(a, tag + b"-ba")
    assert got_b.peer == a.node_id and got_a.peer == b.node_id


async def receive_matching(net: Network, payload: bytes, timeout_s: float = WAIT_S) -> Inbound:
    """Receive until `payload` arrives (other traffic is skipped)."""
    with trio.fail_after(timeout_s):
        while True:
            item = await net.inbound.receive()
            if item.payload == payload:
                return item
