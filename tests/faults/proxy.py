"""A fault-injecting TCP proxy on 127.0.0.1 between nodes (the fallback without namespaces).

Every ordered pair (dialer i, listener j) gets its own proxy port: node i's
peer entry for node j points at it. A proxied connection carries i->j bytes
upstream and j->i bytes downstream, so a rule on the directed pair (src, dst)
applies to whichever connections carry src's bytes to dst:

- blocked both ways (a partition): existing connections are cut, new ones are
  accepted and closed at once (like a host that answers with a reset);
- blocked one way: src's bytes to dst are held, not forwarded (TCP would keep
  retransmitting them), while dst's bytes to src still flow; they are released
  when the rule is lifted;
- delay and loss: each chunk is released `delay` later, order kept; a "lost"
  chunk costs one retransmission timeout (`LOSS_PENALTY_S`) more, which is what
  a lost segment means to a TCP stream.

The proxy runs an asyncio loop in a daemon thread; every method is thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from dataclasses import dataclass

LOSS_PENALTY_S = 0.2
CHUNK_BYTES = 65536
HOLD_POLL_S = 0.02
QUEUE_CHUNKS_MAX = 1024


@dataclass
class _Route:
    src: int
    dst: int
    target_port: int
    listen_port: int = 0


class FaultProxy:
    """Routes (i -> j) with per-direction rules; see the module docstring."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._blocked: set[tuple[int, int]] = set()
        self._delay_s: dict[tuple[int, int], float] = {}
        self._loss: dict[tuple[int, int], float] = {}
        self._conns: dict[tuple[int, int], set[asyncio.StreamWriter]] = {}
        self._servers: list[asyncio.AbstractServer] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="proxy")
        self._thread.start()
        self.connections_cut = 0

    # -- control (any thread) -------------------------------------------------------------

    def add_route(self, src: int, dst: int, target_port: int) -> int:
        """Listen for node `src` dialing node `dst` (at `target_port`); returns the proxy port."""
        route = _Route(src, dst, target_port)
        fut = asyncio.run_coroutine_threadsafe(self._listen(route), self._loop)
        return fut.result(timeout=10)

    def set_rules(
        self,
        blocked: set[tuple[int, int]] | None = None,
        delay_s: dict[tuple[int, int], float] | None = None,
        loss: dict[tuple[int, int], float] | None = None,
    ) -> None:
        """Replace every rule (in force on return); fully blocked pairs lose their connections."""

        def apply() -> None:
            self._blocked = set(blocked or ())
            self._delay_s = dict(delay_s or {})
            self._loss = dict(loss or {})
            for (a, b), writers in self._conns.items():
                if (a, b) in self._blocked and (b, a) in self._blocked:
                    for w in list(writers):
                        self.connections_cut += 1
                        w.close()

        applied = threading.Event()

        def apply_and_signal() -> None:
            try:
                apply()
            finally:
                applied.set()

        self._loop.call_soon_threadsafe(apply_and_signal)
        applied.wait(timeout=10)  # in force when this returns

    def close(self) -> None:
        async def stop() -> None:
            for s in self._servers:
                s.close()
            for writers in self._conns.values():
                for w in writers:
                    w.close()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    # -- the loop ---------------------------------------------------------------------------

    async def _listen(self, route: _Route) -> int:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._serve(route, reader, writer)

        server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        self._servers.append(server)
        route.listen_port = server.sockets[0].getsockname()[1]
        return route.listen_port

    async def _serve(
        self, route: _Route, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter
    ) -> None:
        a, b = route.src, route.dst
        if (a, b) in self._blocked and (b, a) in self._blocked:
            c_writer.close()
            return
        try:
            s_reader, s_writer = await asyncio.open_connection("127.0.0.1", route.target_port)
        except OSError:
            c_writer.close()
            return
        key = (min(a, b), max(a, b))
        live = self._conns.setdefault(key, set())
        live.update((c_writer, s_writer))
        try:
            await asyncio.gather(
                self._pump(c_reader, s_writer, a, b), self._pump(s_reader, c_writer, b, a)
            )
        finally:
            for w in (c_writer, s_writer):
                live.discard(w)
                w.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, src: int, dst: int
    ) -> None:
        """Forward src's bytes to dst under the rules of (src, dst); closing ends both ways."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(QUEUE_CHUNKS_MAX)
        sender = asyncio.ensure_future(self._drain(queue, writer))
        last_release = 0.0
        try:
            while True:
                try:
                    data = await reader.read(CHUNK_BYTES)
                except (OSError, asyncio.IncompleteReadError):
                    break
                if not data:
                    break
                while (src, dst) in self._blocked and not writer.is_closing():
                    await asyncio.sleep(HOLD_POLL_S)  # held like unacknowledged TCP segments
                delay = self._delay_s.get((src, dst), 0.0)
                if self._rng.random() < self._loss.get((src, dst), 0.0):
                    delay += LOSS_PENALTY_S
                last_release = max(time.monotonic() + delay, last_release)
                await queue.put((last_release, data))
        finally:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
            if queue.full():
                sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await sender
            writer.close()

    @staticmethod
    async def _drain(
        queue: asyncio.Queue[tuple[float, bytes] | None], writer: asyncio.StreamWriter
    ) -> None:
        while True:
            item = await queue.get()
            if item is None:
                return
            release_at, data = item
            wait = release_at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            try:
                await writer.drain()
            except OSError:
                return
