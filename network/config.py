"""The network layer's public data types and every bound it enforces (`NetConfig`).

Every queue, buffer, timeout and rate the network applies is a named field
of `NetConfig` with a default; the node fills it from `config/node.toml`.
There is deliberately no field that disables encryption: a plaintext frame
codec exists only inside the benchmark and the tests (see `frames.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from consensus import codec


class Channel(IntEnum):
    """What a message is for. The network never decodes payloads; it routes by channel."""

    CONSENSUS = 1  # direct send / broadcast; inbound back-pressure, never dropped on arrival
    TX_GOSSIP = 2  # flooded with a seen-cache; may be dropped when inbound is full
    BLOCK_GOSSIP = 3  # flooded with a seen-cache; may be dropped when inbound is full
    SYNC = 4  # block fetch requests/responses; per-peer rate limited


GOSSIP_CHANNELS = frozenset({Channel.TX_GOSSIP, Channel.BLOCK_GOSSIP})

# The writer drains per-channel queues in this order, so consensus traffic is
# never stuck behind a burst of gossip.
SEND_PRIORITY = (Channel.CONSENSUS, Channel.SYNC, Channel.BLOCK_GOSSIP, Channel.TX_GOSSIP)


@dataclass(frozen=True, slots=True)
class PeerAddress:
    node_id: bytes
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Inbound:
    """One message from an authenticated peer: `peer` is its node id (Ed25519 public key)."""

    peer: bytes
    channel: Channel
    payload: bytes


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """A connected peer as the node shows it (status API, metrics)."""

    node_id: bytes
    address: tuple[str, int]  # remote socket address of the link
    outbound: bool  # True when this node dialed the link
    since: float  # wall-clock seconds (time.time()) when the link was established
    bytes_in: int
    bytes_out: int
    msgs_in: int
    msgs_out: int


@dataclass(frozen=True, slots=True)
class NetConfig:
    """Every bound of the network layer. Times in seconds, sizes in bytes."""

    listen_host: str = "127.0.0.1"
    listen_port: int = 0  # 0 = pick a free port (run() reports it through task_status)

    # handshake and link liveness
    handshake_timeout_s: float = 5.0  # whole handshake, from accept/connect to authenticated
    connect_timeout_s: float = 5.0
    keepalive_interval_s: float = 5.0  # writer sends a keep-alive when idle this long
    idle_timeout_s: float = 20.0  # reader closes the link after this long without a frame
    send_stall_timeout_s: float = 30.0  # one frame write blocked this long -> close the link

    # inbound connection limits
    inbound_connections_max: int = 128  # all inbound connections, handshaking or established
    inbound_handshakes_per_address_max: int = 8  # concurrent unauthenticated ones per source IP

    # frames and messages
    message_bytes_max: int = codec.MAX_MESSAGE_BYTES
    frame_batch_bytes: int = 64 * 1024  # writer stops adding messages to a frame past this
    frame_messages_max: int = 16384  # messages per frame, both ways (a frame of empty messages)
    # most a socket read asks for: CPython allocates the whole size for every recv, and
    # at 256 KiB (the node's mmap threshold, node/service.py) most reads mapped and
    # unmapped fresh pages: ~15 us a read against ~2.5 us at 64 KiB (bench/recv_chunk.py)
    read_chunk_bytes: int = 64 * 1024

    # per-peer send queues (per channel): full -> drop and count, never block the caller
    send_queue_messages_max: int = 8192
    send_queue_bytes_max: int = 64 * 1024 * 1024

    # inbound channel to the node (bounded; see Network for the back-pressure rule)
    inbound_queue_max: int = 4096

    # per-peer receive rate limits (token buckets), all channels together
    peer_bytes_per_s: float = 64 * 1024 * 1024
    peer_bytes_burst: float = 64 * 1024 * 1024 + 1024 * 1024
    peer_msgs_per_s: float = 200_000.0
    peer_msgs_burst: float = 400_000.0
    throttle_disconnect_s: float = 10.0  # throttled continuously this long -> disconnect
    # SYNC channel (block fetch), per peer; excess messages are dropped and counted
    sync_msgs_per_s: float = 50.0
    sync_msgs_burst: float = 100.0

    # gossip
    seen_cache_max: int = 100_000

    # peer manager re-dial back-off (capped exponential with jitter)
    redial_initial_s: float = 0.1
    redial_max_s: float = 10.0
    link_stable_s: float = 5.0  # a link that lived this long resets the back-off

    def __post_init__(self) -> None:
        if self.frame_batch_bytes > self.message_bytes_max:
            raise ValueError("frame_batch_bytes must not exceed message_bytes_max")
        if self.peer_bytes_burst < self.message_bytes_max + 1024:
            # a single maximal message must be able to pass the byte bucket
            raise ValueError("peer_bytes_burst must be at least message_bytes_max")
        if self.idle_timeout_s <= self.keepalive_interval_s:
            raise ValueError("idle_timeout_s must exceed keepalive_interval_s")
