"""Plain counters of the network layer; the node exports them as Prometheus metrics.

Channel-keyed counters use the channel's lower-case name ("consensus",
"tx_gossip", ...). Per-peer entries exist only for allowlisted peers that
completed a handshake, so their number is bounded by the allowlist.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class PeerStats:
    bytes_in: int = 0  # wire bytes (frames) received
    bytes_out: int = 0  # wire bytes (frames) sent
    msgs_in: int = 0
    msgs_out: int = 0
    links_established: int = 0
    throttled: int = 0  # times its reader had to pause for the rate limit
    dropped: Counter[str] = field(default_factory=Counter)  # by reason


@dataclass(slots=True)
class NetStats:
    messages_sent: Counter[str] = field(default_factory=Counter)  # by channel
    bytes_sent: Counter[str] = field(default_factory=Counter)  # payload bytes, by channel
    messages_received: Counter[str] = field(default_factory=Counter)
    bytes_received: Counter[str] = field(default_factory=Counter)
    dropped: Counter[tuple[str, str]] = field(default_factory=Counter)  # (channel, reason)
    gossip_duplicates: Counter[str] = field(default_factory=Counter)  # by channel
    handshake_failures: Counter[str] = field(default_factory=Counter)  # by reason
    inbound_rejected: Counter[str] = field(default_factory=Counter)  # connection refused, by reason
    link_closes: Counter[str] = field(default_factory=Counter)  # by reason
    frames_sent: int = 0
    frames_received: int = 0
    dial_failures: int = 0
    reconnects: int = 0  # a peer connected again after a link to it had closed
    throttled: int = 0
    connected_peers: int = 0
    peers: dict[bytes, PeerStats] = field(default_factory=dict)

    def peer(self, node_id: bytes) -> PeerStats:
        entry = self.peers.get(node_id)
        if entry is None:
            entry = self.peers[node_id] = PeerStats()
        return entry
