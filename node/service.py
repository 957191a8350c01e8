"""`redwood start`: one Trio process wiring store, application, mempool, replica, network and API.

Tasks in the node's nursery:

- the network (listener, dialers, per-peer links);
- the inbound router: decodes peer payloads and routes them — consensus
  messages and block responses to the driver, block requests to the sync
  server, gossiped transactions to the mempool;
- the driver (node/driver.py), the only task touching the replica;
- the ticker (logical time for the replica);
- the transaction gossiper (batches newly accepted transactions into one
  gossip item every few milliseconds);
- the HTTP API and the metrics endpoint.

LevelDB calls that may block run in a worker thread behind a single-slot
limiter, so the event loop keeps serving peers and clients meanwhile.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import logging
import os
import random
import signal
import threading
import time
from dataclasses import dataclass
from functools import cache, partial
from typing import Any

import trio

from consensus import codec
from consensus.codec import DecodeError
from consensus.types import (
    BlockRequest,
    BlockResponse,
    CertifiedBlock,
    Evidence,
    PrePrepare,
    tx_hash,
)
from node import native
from node.driver import Driver, PeerConnected, PeerMessage, Tick, is_sync_message
from storage.store import StoreError

log = logging.getLogger("redwood.node")

GRACEFUL_SHUTDOWN_S = 5.0
SYNC_BLOCKS_PER_RESPONSE_MAX = 256
SYNC_RESPONSE_BYTES_MAX = 8 * 1024 * 1024
TX_GOSSIP_BATCH_MAX = 2000
TX_GOSSIP_INTERVAL_S = 0.005
TX_GOSSIP_QUEUE_MAX = 200_000
BLOCK_SUBSCRIBERS_MAX = 64
BLOCK_SUBSCRIBER_QUEUE_MAX = 32  # blocks of up to ~1.5 MB each; a slower client is dropped
TX_IN_QUEUED_MAX = 40_000  # gossiped txs waiting for admission (~14 MB); more are dropped
TX_IN_BATCHES_MAX = 4096
READY_LAG_BLOCKS_MAX = 32  # /ready fails when catching up from further behind than this
EVIDENCE_KEPT_MAX = 1000
WAITERS_MAX = 100_000
ROUTE_DRAIN_MAX = 1024


@dataclass(frozen=True, slots=True)
class SubmitResult:
    tx_hash: bytes
    accepted: bool
    code: str | None = None
    message: str = ""


class NodeError(Exception):
    """The node cannot start (bad home, corrupt store, port in use...). The message says why."""


def _hex(b: bytes) -> str:
    return b.hex()


def encode_tx_batch(txs: list[bytes]) -> bytes:
    return codec.pack(txs)


def decode_tx_batch(payload: bytes) -> list[bytes]:
    raw = codec.unpack(payload)
    if type(raw) is not list or len(raw) > TX_GOSSIP_BATCH_MAX:
        raise DecodeError("tx gossip: expected a bounded list")
    for item in raw:
        if type(item) is not bytes:
            raise DecodeError("tx gossip: expected a list of byte strings")
    return raw


class Node:
    """One Redwood node: see the module docstring. Implements the API's `NodeView`."""

    def __init__(self, config: Any) -> None:
        from network.config import NetConfig, PeerAddress
        from network.net import Network
        from node import __version__
        from node.app import Application
        from node.genesis import Genesis
        from node.mempool import Mempool
        from node.metrics import NodeMetrics
        from node.verify_pool import VerifyPool
        from storage import leveldb_reads
        from storage.keyfile import read_key
        from storage.store import ChainStore

        self.config = config
        self.genesis = Genesis.load(config.genesis_path)
        self.key = read_key(config.key_path)
        self.node_id: bytes = self.key.public
        self.chain_id: str = self.genesis.chain_id
        self.params = self.genesis.params
        # Each start-up phase is logged with its time: a node that takes long to come up
        # (LevelDB recovering its log, a long journal) shows where it is.
        started = time.monotonic()
        log.info(
            "opening the chain store",
            extra={
                "path": str(config.data_path / "chain"),
                "write_buffer_mb": config.node.write_buffer_mb,
                "leveldb_reads": leveldb_reads.prefer_pread(),
            },
        )
        self.store = ChainStore.open(
            config.data_path / "chain",
            genesis_hash=self.genesis.hash(),
            write_buffer_size=config.node.write_buffer_mb * 1024 * 1024,
        )
        opened = time.monotonic()
        try:
            self.verify_pool = VerifyPool()
            self.app = Application(
                self.store, self.genesis, verify_many=self.verify_pool.verify_many
            )
            loaded = time.monotonic()
            self.mempool = Mempool(
                self.app,
                max_txs=config.mempool.max_txs,
                max_bytes=config.mempool.max_bytes,
                max_per_sender=config.mempool.max_per_sender,
            )
            self.vset = self.genesis.validator_set()
            self.is_validator = self.node_id in self.vset
            self.replica = self._make_replica()
            log.info(
                "chain store open",
                extra={
                    "height": self.store.head_height(),
                    "store_s": round(opened - started, 3),
                    "state_s": round(loaded - opened, 3),
                    "journal_s": round(time.monotonic() - loaded, 3),
                },
            )
            host, port = _host_port(config.p2p.listen)
            net_config = NetConfig(
                listen_host=host,
                listen_port=port,
                handshake_timeout_s=config.p2p.handshake_timeout_ms / 1000,
                inbound_connections_max=max(config.p2p.max_inbound, 1),
                send_queue_messages_max=config.p2p.send_queue_max,
                redial_max_s=config.p2p.reconnect_backoff_max_ms / 1000,
            )
            peers = [PeerAddress(nid, h, p) for nid, h, p in config.peer_addresses()]
            allow = set(self.genesis.node_ids()) | set(config.observer_ids())
            allow.update(v for _epoch, _first, ids in self.app.gov.epochs for v in ids)
            self.network = Network(self.key, self.chain_id, net_config, peers, allow)
        except BaseException:
            self.store.close()
            raise
        self.network.on_link_up = self._link_up
        self.bad_inbound: dict[str, int] = {}
        self.metrics = NodeMetrics(self.chain_id, self.node_id.hex(), __version__)
        self.driver = Driver(
            self.replica,
            journal_write=self._journal_write,
            send=self._send,
            apply_blocks=self._apply_blocks,
            on_applied=self._apply_governance,  # runs in the driver, after replica.executed
            take_batch=self._take_batch,
            pending_count=lambda: self.mempool.pending,
            on_evidence=self._on_evidence,
            on_stable_checkpoint=self._on_stable_checkpoint,
            pipeline_depth=self.params.pipeline_depth,
            empty_block_interval_s=config.consensus.block_interval_ms / 1000,
            propose_empty_blocks=config.consensus.propose_empty_blocks,
            txs_height=self.store.head_height(),
        )
        # One worker thread each for block execution, journal writes and block reads for
        # peers. The journal write gates every vote the driver sends, so it must not queue
        # behind the execution of a batch of blocks (tens of ms): LevelDB takes concurrent
        # writers (the store's write lock orders them) and lock-free reads.
        self._db_limiter = trio.CapacityLimiter(1)
        self._journal_limiter = trio.CapacityLimiter(1)
        self._read_limiter = trio.CapacityLimiter(1)
        self._waiters: dict[bytes, trio.Event] = {}
        self._waiting: dict[bytes, int] = {}  # requests waiting on each of _waiters
        self._submitted_at: dict[bytes, float] = {}
        self._subscribers: list[trio.MemorySendChannel[CertifiedBlock]] = []
        self._evidence: list[Evidence] = []
        self._gossip_out: list[bytes] = []
        self._gossip_wakeup = trio.Event()
        self._tx_in_send, self._tx_in = trio.open_memory_channel[tuple[bytes, list[bytes]]](
            TX_IN_BATCHES_MAX
        )
        self._tx_in_queued = 0  # transactions in _tx_in (the memory bound is on these)
        self._last_commit_at: float | None = None
        self._last_view = self.replica.view
        self.txs_committed = self.app.tx_count()
        # the newest block whose commit this node has finished handling: /status reports
        # it with txs_committed, which counts the same blocks (the store's head moves
        # earlier, in the apply thread, so the two read apart differed by a batch)
        self._reported_head: CertifiedBlock | None = self.store.head()
        self.started_at = time.time()
        self.gc_watch: GcWatch | None = None  # set by tune_gc (redwood start)
        self._install_layer_metrics()

    # -- construction helpers ---------------------------------------------------------

    def _make_replica(self) -> Any:
        from consensus.crypto import Ed25519Verifier
        from consensus.replica import Replica, ReplicaConfig, Restored

        p = self.params
        head = self.store.head()
        depth = p.pipeline_depth
        height = self.store.head_height()
        roots = {}
        for h in range(max(0, height - depth - 1), height + 1):
            root = self.app.state_root_at(h)
            if root is not None:
                roots[h] = root
        restored = Restored(
            committed_height=height,
            committed_hash=head.block.hash() if head else self.genesis.hash(),
            committed_timestamp_ms=(
                head.block.header.timestamp_ms if head else self.genesis.genesis_time_ms
            ),
            state_roots=roots,
            journal=self.store.journal_items(),
            epochs=tuple(self.app.epochs()),
        )
        tick_ms = self.config.consensus.tick_ms
        rconfig = ReplicaConfig(
            chain_id=self.chain_id,
            pipeline_depth=depth,
            checkpoint_interval=p.checkpoint_interval,
            block_txs_max=p.block_txs_max,
            block_bytes_max=p.block_bytes_max,
            view_change_timeout_ticks=max(
                1, self.config.consensus.view_change_timeout_ms // tick_ms
            ),
            # one request may bring up to SYNC_BLOCKS_PER_RESPONSE_MAX blocks (8 MB at most):
            # a catch-up round trip to a busy peer then brings 256 small blocks, not 64
            catchup_blocks_max=SYNC_BLOCKS_PER_RESPONSE_MAX,
        )
        # Every node holds its key: the replica votes only at heights whose epoch names it,
        # so an observer promoted by governance signs from its epoch's first height on.
        signer = self.key
        seed = int.from_bytes(self.node_id[:8], "big") ^ time.time_ns()
        return Replica(rconfig, restored, signer, Ed25519Verifier(), random.Random(seed))

    def _install_layer_metrics(self) -> None:
        m, c = self.metrics, self.chain_id
        m.bind_sources(
            network_stats=self.network.stats,
            mempool=self.mempool,
            replica=lambda: self.replica,
            ready=lambda: self.readiness()[0],
            db_path=self.config.data_path,
            node_dropped=self.bad_inbound,
        )
        m.height.labels(c).set(self.store.head_height())
        m.stable_checkpoint.labels(c).set(self.replica.stable_checkpoint[0])
        pool, app = self.verify_pool, self.app
        m.bind_signatures(
            lambda: pool.signatures,
            lambda: app.signatures_skipped,
            lambda: app.verified_cache_size,
        )
        m.bind_state_tree(lambda: app.state_tree_cpu_s)
        m.bind_apply_queue(self.driver)

    # -- running ----------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run every task until cancelled; started() with the bound (p2p, api, metrics) ports."""
        from node.api import serve_api
        from node.metrics import serve_metrics

        cfg = self.config
        try:
            async with trio.open_nursery() as nursery:
                p2p_port = await nursery.start(self.network.run)
                nursery.start_soon(self.driver.run)
                nursery.start_soon(self._route_inbound)
                nursery.start_soon(self._admit_gossiped_txs)
                nursery.start_soon(self._gossip_txs)
                nursery.start_soon(self._tick)
                if self.gc_watch is not None:  # redwood start: the process is the node's own
                    nursery.start_soon(self._collect_garbage)
                    if cfg.node.compaction_nice:
                        nursery.start_soon(
                            self._lower_compaction_priority, cfg.node.compaction_nice
                        )
                api_host, api_port = _host_port(cfg.api.listen)
                api_port = await nursery.start(
                    partial(
                        serve_api, self, api_host, api_port,
                        max_body_bytes=cfg.api.max_body_bytes,
                        wait_timeout_s_max=cfg.api.wait_timeout_ms_max / 1000,
                    )
                )  # fmt: skip
                metrics_port = None
                if cfg.metrics.enabled:
                    m_host, m_port = _host_port(cfg.metrics.listen)
                    metrics_port = await nursery.start(serve_metrics, self.metrics, m_host, m_port)
                log.info(
                    "node started",
                    extra={
                        "node_id": self.node_id.hex(), "height": self.store.head_height(),
                        "p2p_port": p2p_port, "api_port": api_port, "validator": self.is_validator,
                        "build": native.MODE,
                    },
                )  # fmt: skip
                task_status.started((p2p_port, api_port, metrics_port))
        finally:
            self.verify_pool.close()
            try:
                # no block is being applied: the nursery has waited for the apply thread
                self.app.write_tree_top()
            except StoreError as exc:  # the next start recomputes the top instead
                log.error("writing the state tree's top at stop failed: %s", exc)
            self.store.close()

    async def _collect_garbage(self) -> None:
        """Run the collector on the node's schedule (see GC_YOUNG_INTERVAL_S)."""
        last_full = last_trim = time.monotonic()
        while True:
            await trio.sleep(GC_YOUNG_INTERVAL_S)
            now = time.monotonic()
            if now - last_full >= GC_FULL_INTERVAL_S:
                gc.collect(2)
                last_full = now
            else:
                gc.collect(1)
            if now - last_trim >= MALLOC_TRIM_INTERVAL_S:
                last_trim = now
                await trio.to_thread.run_sync(trim_malloc)

    async def _lower_compaction_priority(self, niceness: int) -> None:
        """Keep LevelDB's background thread at least at `niceness` (it starts with a flush)."""
        done: set[int] = set()
        while True:
            for tid in lower_native_threads(niceness, done):
                log.info("background thread priority lowered", extra={"tid": tid, "nice": niceness})
            await trio.sleep(NATIVE_THREAD_SCAN_S)

    async def _tick(self) -> None:
        interval = self.config.consensus.tick_ms / 1000
        while True:
            await trio.sleep(interval)
            with contextlib.suppress(trio.WouldBlock):
                self.driver.events_send.send_nowait(Tick())
            self._refresh_gauges()

    async def _route_inbound(self) -> None:
        """Decode peer payloads and hand each to its consumer (bad bytes are counted, dropped).

        Drains everything already queued before yielding: one scheduler round
        trip per message would cap the node far below what the links carry.
        """
        inbound = self.network.inbound
        while True:
            await self._route(await inbound.receive())
            for _ in range(ROUTE_DRAIN_MAX):
                try:
                    item = inbound.receive_nowait()
                except trio.WouldBlock:
                    break
                await self._route(item)

    async def _route(self, item: Any) -> None:
        from network.config import Channel

        if item.channel == Channel.TX_GOSSIP:
            try:
                txs = decode_tx_batch(item.payload)
            except DecodeError:
                self._count_bad("tx_gossip")
                return
            # A dropped batch costs nothing but time: its txs arrive again inside the proposal.
            if self._tx_in_queued + len(txs) > TX_IN_QUEUED_MAX:
                self._count_bad("tx_gossip_overflow")
                return
            try:
                self._tx_in_send.send_nowait((item.peer, txs))
            except trio.WouldBlock:
                self._count_bad("tx_gossip_overflow")
                return
            self._tx_in_queued += len(txs)
            return
        if item.channel not in (Channel.CONSENSUS, Channel.SYNC):
            self._count_bad("unexpected_channel")
            return
        try:
            message = codec.decode(item.payload)
        except DecodeError:
            self._count_bad("undecodable")
            return
        if isinstance(message, BlockRequest):
            await self._serve_blocks(item.peer, message)
        elif isinstance(message, PrePrepare) and not await self._proposal_signatures_ok(
            item.peer, message
        ):
            self._count_bad("bad_tx_signature")
        elif isinstance(message, Evidence):
            self._count_bad("unexpected_type")
        else:
            if isinstance(message, BlockResponse):
                self.metrics.observe_blocks_fetched(len(message.blocks))
            event = PeerMessage(item.peer, message)
            try:
                self.driver.events_send.send_nowait(event)
            except trio.WouldBlock:
                await self.driver.events_send.send(event)  # back-pressure onto this peer

    async def _proposal_signatures_ok(self, peer: bytes, pp: PrePrepare) -> bool:
        """Check the signatures of a proposed block's transactions before the replica sees it.

        The replica then never prepares (so never commits) a block with a bad
        transaction signature, which is what lets every node execute committed
        blocks without checking signatures again (`Application.verify_proposal`).
        Only a PRE-PREPARE its validator sends directly is checked (anything
        else the replica drops anyway, so a relayed or forged one costs no
        signature checks); most transactions are in the verified cache from
        gossip already. NEW-VIEW re-proposals need no check: each was prepared
        by a quorum, so a correct validator checked it.

        Nor does a proposal for a height this node has committed already (the
        replica drops it as below its window). A node running behind commits
        some heights from fetched blocks before their PRE-PREPAREs reach it;
        checking those cost it ~50 us a transaction for nothing, and the
        checked transactions stayed in the verified cache with nothing left to
        forget them (measured on the slowest validator of a throughput bench:
        24,000 such entries while the chain was idle, ~42,000 under load, at
        ~0.7 KB each).
        """
        if (
            pp.replica != peer
            or not pp.block.txs
            or pp.view < self.replica.view
            or pp.height <= self.replica.committed_height
        ):
            return True  # the replica drops it unchecked, or there is nothing to check
        bad = await trio.to_thread.run_sync(self.app.verify_proposal, pp.block.txs)
        if pp.height <= self.store.head_height():
            # executed while it was being checked: the execution forgot the block's
            # hashes before this check cached them
            self.app.forget([tx_hash(raw) for raw in pp.block.txs])
        if bad is None:
            return True
        log.warning(
            "proposal dropped: a transaction signature does not verify",
            extra={"proposer": peer.hex(), "height": pp.height, "view": pp.view, "index": bad},
        )
        return False

    def _link_up(self, peer: bytes) -> None:
        """A peer connected: the replica greets it with our height (see `peer_connected`)."""
        # with the events queue full, the periodic status announcement reaches it anyway
        with contextlib.suppress(trio.WouldBlock):
            self.driver.events_send.send_nowait(PeerConnected(peer))

    def _count_bad(self, reason: str) -> None:
        self.bad_inbound[reason] = self.bad_inbound.get(reason, 0) + 1

    async def _serve_blocks(self, peer: bytes, request: BlockRequest) -> None:
        from network.config import Channel

        first = max(1, request.from_height)
        last = min(request.to_height, first + SYNC_BLOCKS_PER_RESPONSE_MAX - 1)
        if last < first:
            return
        blocks = await trio.to_thread.run_sync(
            self.store.get_blocks, first, last, SYNC_RESPONSE_BYTES_MAX, limiter=self._read_limiter
        )
        if blocks:
            self.network.send(peer, Channel.SYNC, codec.encode(BlockResponse(tuple(blocks))))

    # -- driver callbacks -----------------------------------------------------------------

    async def _journal_write(self, records: list[tuple[bytes, bytes | None]]) -> None:
        await trio.to_thread.run_sync(
            self.store.journal_write, records, limiter=self._journal_limiter
        )

    def _send(self, to: bytes | None, message: Any) -> None:
        from network.config import Channel

        self.metrics.observe_sent(message)
        payload = codec.encode(message)
        if is_sync_message(message):
            if to is None:  # status announcements reach observers too
                self.network.broadcast(
                    Channel.SYNC, payload, [p.node_id for p in self.network.connected()]
                )
            else:
                self.network.send(to, Channel.SYNC, payload)
        elif to is None:
            others = [v for v in self.replica_validators() if v != self.node_id]
            self.network.broadcast(Channel.CONSENSUS, payload, others)
        else:
            self.network.send(to, Channel.CONSENSUS, payload)

    def replica_validators(self) -> tuple[bytes, ...]:
        return tuple(self.replica.vset.validators)

    async def _apply_blocks(self, cbs: list[CertifiedBlock]) -> list[tuple[bytes, Any]]:
        for cb in cbs:
            self.metrics.observe_committed(cb, self.replica_validators())
        started = time.perf_counter()
        # committed blocks carry only good signatures (see _proposal_signatures_ok)
        apply = partial(self.app.apply_many, verify_signatures=False)
        done = await trio.to_thread.run_sync(apply, cbs, limiter=self._db_limiter)
        now = time.perf_counter()
        per_block = (now - started) / len(cbs)
        out = []
        for cb, executed in zip(cbs, done, strict=True):
            self.metrics.write_latency.labels(self.chain_id).observe(per_block)
            self._after_commit(cb, executed, now)
            out.append((bytes(executed.state_root), executed))
        return out

    def _apply_governance(self, executed: Any) -> None:
        """Validator-set changes decided in this block: schedule each new epoch, widen the allowlist.

        The application picks first heights above this height + pipeline_depth at a
        checkpoint boundary (node/governance.py), as `Replica.add_epoch` requires.
        Removed validators stay on the allowlist (they may still serve blocks).
        """
        new_epochs = getattr(executed, "new_epochs", ())
        if not new_epochs:
            return
        from consensus.validators import ValidatorSet

        for epoch, first, ids in new_epochs:
            self.replica.add_epoch(first, ValidatorSet(epoch, ids))
            log.info(
                "validator set change scheduled",
                extra={"epoch": epoch, "first_height": first, "validators": len(ids)},
            )
        allow = set(self.genesis.node_ids()) | set(self.config.observer_ids())
        for _epoch, _first, ids in self.app.gov.epochs:
            allow.update(ids)
        self.network.set_allowlist(allow)

    def _after_commit(self, cb: CertifiedBlock, executed: Any, now: float) -> None:
        header = cb.block.header
        hashes = executed.tx_hashes
        self.mempool.committed(hashes)
        self.txs_committed += executed.applied
        self._reported_head = cb
        m, c = self.metrics, self.chain_id
        m.blocks.labels(c).inc()
        m.txs.labels(c).inc(executed.applied)
        m.height.labels(c).set(header.height)
        if self._last_commit_at is not None:
            m.block_interval.labels(c).observe(now - self._last_commit_at)
        self._last_commit_at = now
        if self._submitted_at or self._waiters:
            wall = time.monotonic()
            latency = m.commit_latency.labels(c)
            for h in hashes:
                t0 = self._submitted_at.pop(h, None)
                if t0 is not None:
                    latency.observe(wall - t0)
                event = self._waiters.pop(h, None)
                if event is not None:
                    event.set()
        for sub in list(self._subscribers):
            try:
                sub.send_nowait(cb)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.remove(sub)
                sub.close()
        if header.height % 16 == 0:
            for h in self.mempool.evict_expired(header.height):
                self._submitted_at.pop(h, None)  # never commits: no latency to observe
        if self.replica.view != self._last_view:
            self._last_view = self.replica.view
            self.mempool.requeue()

    def _take_batch(self) -> list[bytes]:
        p = self.params
        return self.mempool.take(p.block_txs_max, p.block_bytes_max - 64 * 1024)

    def _on_evidence(self, evidence: Evidence) -> None:
        if len(self._evidence) < EVIDENCE_KEPT_MAX:
            self._evidence.append(evidence)
        self.metrics.evidence.labels(self.chain_id).inc()
        log.warning("evidence of equivocation", extra={"replica": evidence.replica.hex()})

    def _on_stable_checkpoint(self, height: int, root: bytes) -> None:
        self.metrics.stable_checkpoint.labels(self.chain_id).set(height)

    def _refresh_gauges(self) -> None:
        m, c = self.metrics, self.chain_id
        if self.gc_watch is not None:
            self.gc_watch.drain(lambda gen, s: m.gc_pause.labels(c, str(gen)).observe(s))
        m.view.labels(c).set(self.replica.view)
        m.mempool_size.labels(c).set(self.mempool.size)
        m.mempool_bytes.labels(c).set(self.mempool.bytes)
        m.syncing.labels(c).set(1 if self._catching_up() else 0)
        m.validators.labels(c).set(len(self.replica_validators()))
        m.peers.labels(c).set(len(self.network.connected()))
        if self.replica.view != self._last_view:
            self._last_view = self.replica.view
            self.mempool.requeue()

    # -- transactions -----------------------------------------------------------------------

    async def _gossip_txs(self) -> None:
        from network.config import Channel

        while True:
            await self._gossip_wakeup.wait()
            self._gossip_wakeup = trio.Event()
            await trio.sleep(TX_GOSSIP_INTERVAL_S)  # gather a batch: one gossip item per few ms
            pending, self._gossip_out = self._gossip_out, []
            for i in range(0, len(pending), TX_GOSSIP_BATCH_MAX):
                self.network.gossip(
                    Channel.TX_GOSSIP, encode_tx_batch(pending[i : i + TX_GOSSIP_BATCH_MAX])
                )

    def _queue_gossip(self, txs: list[bytes]) -> None:
        if len(self._gossip_out) + len(txs) > TX_GOSSIP_QUEUE_MAX:
            self._count_bad("tx_gossip_out_overflow")
            return
        self._gossip_out.extend(txs)
        self._gossip_wakeup.set()

    async def _admit_gossiped_txs(self) -> None:
        async for _peer, txs in self._tx_in:
            self._tx_in_queued -= len(txs)
            await self._admit_many(txs)

    async def _admit_many(self, txs: list[bytes]) -> list[Any]:
        height = self.store.head_height()
        screened = self.mempool.screen(txs, height)
        oks: list[bool] = []
        if screened.items:
            oks = await trio.to_thread.run_sync(self.mempool.verify, screened)
        results = self.mempool.admit(screened, oks)
        if any(not hasattr(r, "code") for r in results):
            self.driver.poke()
        return results

    # -- NodeView (the API's view of the node) --------------------------------------------

    async def submit(self, tx_bytes: bytes) -> SubmitResult:
        return (await self.submit_many([tx_bytes]))[0]

    async def submit_many(self, txs: list[bytes]) -> list[SubmitResult]:
        results = await self._admit_many(txs)
        out: list[SubmitResult] = []
        accepted: list[bytes] = []
        now = time.monotonic()
        for tx, r in zip(txs, results, strict=True):
            if hasattr(r, "code"):
                out.append(SubmitResult(tx_hash(tx), False, r.code, r.message))
            else:
                h = r.tx_hash  # `Added` carries the hash admission computed
                out.append(SubmitResult(h, True))
                accepted.append(tx)
                if len(self._submitted_at) < WAITERS_MAX:
                    self._submitted_at[h] = now
        if accepted:
            self._queue_gossip(accepted)
        return out

    async def wait_committed(self, tx_hash_: bytes, timeout_s: float) -> Any:
        found = self.store.get_tx(tx_hash_)
        if found is not None:
            return found
        event = self._waiters.get(tx_hash_)
        if event is None:
            if len(self._waiters) >= WAITERS_MAX:
                return None
            event = self._waiters[tx_hash_] = trio.Event()
        self._waiting[tx_hash_] = self._waiting.get(tx_hash_, 0) + 1
        try:
            with trio.move_on_after(timeout_s):
                await event.wait()
        finally:
            # the last request to give up on a transaction that did not commit (expired,
            # never proposed) takes its event along: otherwise it stays until the commit
            # that never comes, and WAITERS_MAX of them would refuse every later wait
            left = self._waiting[tx_hash_] - 1
            if left:
                self._waiting[tx_hash_] = left
            else:
                del self._waiting[tx_hash_]
                if self._waiters.get(tx_hash_) is event:
                    del self._waiters[tx_hash_]
        return self.store.get_tx(tx_hash_)

    def _catching_up(self) -> bool:
        return bool(getattr(self.replica, "catching_up", False))

    def _connected_validators(self) -> int:
        vals = set(self.replica_validators())
        return sum(1 for p in self.network.connected() if p.node_id in vals)

    def _blocks_behind(self) -> int:
        """How far f+1 validators' reported heights are ahead of this node's commits."""
        r = self.replica
        return max(0, int(getattr(r, "catchup_target", 0)) - int(r.committed_height))

    def _heights_heard(self, vals: tuple[bytes, ...]) -> tuple[int, int]:
        """(other validators whose height we have heard, how many it takes: f+1 of them,
        so at least one is correct, or every other validator when there are fewer)."""
        heard = getattr(self.replica, "peer_heights", {})
        others = [v for v in vals if v != self.node_id]
        f = (len(vals) - 1) // 3
        return sum(1 for v in others if v in heard), min(f + 1, len(others))

    def readiness(self) -> tuple[bool, str]:
        """Ready: knows the chain's height, connected to a quorum, at most
        READY_LAG_BLOCKS_MAX blocks behind.

        Knowing the height takes the status of f+1 other validators (one is
        correct): a node that has just started, connected before any status
        arrived, would otherwise look current at any height, even 0.

        A node a few blocks behind while it fetches them is still serving a
        current chain; flagging it would make /ready flap on a busy chain of
        small blocks, where a correct node often trails by more than the
        pipeline depth for a moment (which is when the replica starts a fetch).
        """
        behind = self._blocks_behind()
        if self._catching_up() and behind > READY_LAG_BLOCKS_MAX:
            return False, f"catching up with peers ({behind} blocks behind)"
        vals = self.replica_validators()
        quorum = (len(vals) + (len(vals) - 1) // 3) // 2 + 1
        have = self._connected_validators() + (1 if self.node_id in vals else 0)
        if have < quorum:
            return False, f"connected to {have} of the {quorum} validators a quorum needs"
        heard, need = self._heights_heard(vals)
        if heard < need:  # just started: the chain may be far ahead and we cannot tell yet
            return False, f"waiting for the chain's height from peers ({heard} of {need} heard)"
        return True, "ready"

    def status(self) -> dict[str, Any]:
        head = self._reported_head
        r = self.replica
        vals = self.replica_validators()
        view = r.view
        return {
            "chain_id": self.chain_id,
            "node_id": self.node_id.hex(),
            "moniker": self.config.node.moniker,
            "height": head.block.height if head else 0,
            "view": view,
            "last_block_hash": head.block.hash().hex() if head else self.genesis.hash().hex(),
            "last_block_time_ms": head.block.header.timestamp_ms if head else None,
            "catching_up": self._catching_up(),
            "blocks_behind": self._blocks_behind(),
            "peers": len(self.network.connected()),
            "validators": len(vals),
            "is_validator": self.node_id in vals,
            "primary": vals[view % len(vals)].hex(),
            "epoch": r.vset.epoch,
            "txs_committed": self.txs_committed,
            "mempool_size": self.mempool.size,
            "mempool_bytes": self.mempool.bytes,
            "ready": self.readiness()[0],
        }

    def validators(self) -> list[dict[str, Any]]:
        gov = self.app.gov  # genesis plus every passed governance proposal
        by_id = {v.node_id: v for v in (*self.genesis.validators, *gov.validators)}
        out = []
        for i, nid in enumerate(self.replica_validators()):
            v = by_id.get(nid)
            agency = (gov.agency(v.agency) or self.genesis.agency(v.agency)) if v else None
            out.append({
                "index": i,
                "node_id": nid.hex(),
                "name": v.name if v else None,
                "agency": v.agency if v else None,
                "address": v.address if v else None,
                "members": [m.hex() for m in agency.members] if agency else [],
                "connected": nid == self.node_id or self.network.is_connected(nid),
            })  # fmt: skip
        return out

    def peers(self) -> list[dict[str, Any]]:
        vals = set(self.replica_validators())
        out = []
        for p in self.network.connected():
            d = {k: getattr(p, k) for k in getattr(p, "__slots__", ())}
            d = {k: (v.hex() if isinstance(v, bytes) else v) for k, v in d.items()}
            d["validator"] = p.node_id in vals
            out.append(d)
        return out

    def evidence(self) -> list[dict[str, Any]]:
        return [
            {
                "kind": e.kind, "replica": e.replica.hex(), "view": e.view, "height": e.height,
                "first": e.first.hex(), "second": e.second.hex(),
            }
            for e in self._evidence
        ]  # fmt: skip

    def subscribe_blocks(self) -> trio.MemoryReceiveChannel[CertifiedBlock]:
        send, receive = trio.open_memory_channel[CertifiedBlock](BLOCK_SUBSCRIBER_QUEUE_MAX)
        if len(self._subscribers) >= BLOCK_SUBSCRIBERS_MAX:
            send.close()  # the API answers a closed stream: too many subscribers
        else:
            self._subscribers.append(send)
        return receive


def _host_port(text: str) -> tuple[str, int]:
    from node.config import listen_address

    return listen_address(text)


async def _serve_until_signal(node: Node) -> None:
    """Run the node; the first SIGTERM/SIGINT cancels it (graceful: stores close cleanly)."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            async for sig in signals:
                log.info("shutting down", extra={"signal": signal.Signals(sig).name})
                nursery.cancel_scope.cancel()
                break


# Python's collector pauses every thread of the node. At the default thresholds a
# node under load spent more time in collections than in anything but signature
# checks (12 full collections of ~0.5 s each in a 30 s bench run, every node), and
# raised thresholds only made each pause longer. Nearly everything a node allocates
# is freed by reference counting (bytes, tuples, frozen dataclasses), so the node
# freezes what start-up built, turns automatic collection off, and collects itself:
# the young generations every GC_YOUNG_INTERVAL_S (a pause of a few ms: little
# survives a second) and everything every GC_FULL_INTERVAL_S, so cyclic garbage
# (exceptions with tracebacks, cancelled tasks) is still freed. Measured in the same
# 30 s closed-loop run, 4 validators: 94,000-98,000 txs committed with automatic
# collection, 126,000 without it.
GC_YOUNG_INTERVAL_S = 1.0
GC_FULL_INTERVAL_S = 300.0
GC_PAUSES_KEPT = 4096
NATIVE_THREAD_SCAN_S = 1.0  # how often new native threads are looked for (a listdir)


class GcWatch:
    """Times collector pauses (gc.callbacks) for the `redwood_gc_pause_seconds` metric.

    The callback only appends to a bounded deque (no locks inside a collection);
    `drain` moves the pauses into the histogram from the node's ticker.
    """

    def __init__(self) -> None:
        self.pauses: collections.deque[tuple[int, float]] = collections.deque(maxlen=GC_PAUSES_KEPT)
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._started))

    def drain(self, observe: Any) -> None:
        while self.pauses:
            generation, seconds = self.pauses.popleft()
            observe(generation, seconds)


# glibc malloc, tuned so freed memory goes back to the system. Measured on one
# validator of a 60 s closed-loop bench run: after the run, with nothing queued,
# the malloc heap held 118 MB of which 40 MB were in use; the rest was free but
# kept, so peak RSS only ever grew. Three settings, each a no-op elsewhere:
# - at most MALLOC_ARENAS_MAX arenas: by default each thread that allocates may
#   get one (up to 8 per core), and the verify, apply and LevelDB threads keep
#   freed memory in separate heaps;
# - a fixed mmap threshold: glibc raises it (up to 32 MB) each time a large
#   buffer is freed, after which blocks, frames and batches of a few hundred KB
#   come from the heap and fragment it; fixed, they are mapped and unmapped;
# - `malloc_trim` every MALLOC_TRIM_INTERVAL_S (in a worker thread: it walks the
#   free lists and hands whole free pages back, a few ms).
MALLOC_ARENAS_MAX = 2
MALLOC_MMAP_THRESHOLD_BYTES = 256 * 1024
MALLOC_TRIM_INTERVAL_S = 5.0
_M_ARENA_MAX = -8  # glibc's mallopt parameter numbers
_M_MMAP_THRESHOLD = -3


@cache
def _libc() -> Any | None:
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.mallopt  # noqa: B018 - glibc only
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def tune_malloc() -> None:
    """Apply the settings above (before any thread starts)."""
    libc = _libc()
    if libc is None:
        return
    libc.mallopt(_M_ARENA_MAX, MALLOC_ARENAS_MAX)
    libc.mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD_BYTES)


def native_thread_ids() -> set[int]:
    """Ids of this process's threads that Python did not start (LevelDB's compaction thread).

    Empty where /proc is missing. Every thread the node starts itself (the main
    thread, Trio's workers, the verify pool's) is a `threading.Thread` with a
    `native_id`, but a thread another thread is starting (the verify pool starts
    its own from a worker) exists for a moment before it has one; `threading`
    lists it from before the OS thread exists, so while any listed thread has no
    id yet the answer is empty (the next scan looks again).
    """
    try:
        tids = {int(t) for t in os.listdir("/proc/self/task")}
    except (OSError, ValueError):
        return set()
    known = set()
    for thread in threading.enumerate():  # after the listing: a thread seen there is here
        if thread.native_id is None:
            return set()
        known.add(thread.native_id)
    return tids - known


def lower_native_threads(niceness: int, done: set[int]) -> list[int]:
    """Give threads Python did not start (not in `done`) at least the niceness `niceness`.

    LevelDB compacts in one native background thread. On a machine the node shares
    (every node of a localnet does), compactions of all nodes start together (they
    write the same blocks) and took the cores from the event loops for seconds; at a
    lower priority they run in the time the event loops leave. Returns the threads
    changed; a thread that has gone, or a system without per-thread priorities, is
    skipped.
    """
    changed = []
    for tid in sorted(native_thread_ids() - done):
        done.add(tid)
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) >= niceness:
                continue  # already as low (a node started with a higher niceness): keep it
            os.setpriority(os.PRIO_PROCESS, tid, niceness)
        except (OSError, AttributeError):
            continue
        changed.append(tid)
    return changed


def trim_malloc() -> bool:
    """Return the malloc heap's free pages to the system; False where that is not glibc."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def tune_gc(node: Node) -> GcWatch:
    """Freeze start-up objects, leave collections to the node (`Node._collect_garbage`),
    time every pause."""
    gc.collect()
    gc.freeze()
    gc.disable()
    watch = GcWatch()
    gc.callbacks.append(watch)
    node.gc_watch = watch
    return watch


def run(config: Any) -> int:
    """`redwood start`: run the node in the foreground until SIGTERM/SIGINT. Returns the exit code.

    A `StoreError` while running (disk full, I/O error, corruption) stops the
    node; it is re-raised bare (not inside a Trio ExceptionGroup) so that the
    CLI prints its one-line message and recovery advice instead of a traceback.
    """
    from storage.store import StoreError

    tune_malloc()
    node = Node(config)
    watch = tune_gc(node)
    try:
        trio.run(_serve_until_signal, node)
    except BaseExceptionGroup as group:
        found, _rest = group.split(StoreError)
        if found is None:
            raise
        first: BaseException = found
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    finally:
        gc.callbacks.remove(watch)
        gc.enable()
    log.info("stopped")
    return 0
