"""Trio TCP between nodes: authenticated encrypted links, framing, peers, gossip.

The node uses `Network` (net.py) and the types of config.py; see
docs/interfaces.md for the contract.
"""

from network.config import Channel, Inbound, NetConfig, PeerAddress, PeerInfo
from network.net import Network
from network.stats import NetStats, PeerStats

__all__ = [
    "Channel",
    "Inbound",
    "NetConfig",
    "NetStats",
    "Network",
    "PeerAddress",
    "PeerInfo",
    "PeerStats",
]
