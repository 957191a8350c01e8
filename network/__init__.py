"""Trio TCP between nodes: authenticated encrypted links, framing, peers, gossip."""
