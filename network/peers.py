"""Peer-management rules (sans-IO): which of two links to a peer survives, inbound admission.

The tasks that dial, accept and re-dial live in `net.py`; the decisions they
take are here, as plain functions and counters, so they can be tested alone.
"""

from __future__ import annotations

from collections import Counter


def keep_new_link(own_id: bytes, peer_id: bytes, old_dialer: bytes, new_dialer: bytes) -> bool:
    """Whether a new link to `peer_id` replaces the one we already have.

    Both sides dialed at once -> two links with different dialers: both
    nodes keep the one dialed by the lower node id, so they agree without
    a message. Same dialer -> the new link wins: the dialer evidently lost
    the old one (it restarted, or its side of the old link died first).
    """
    if old_dialer == new_dialer:
        return True
    return new_dialer == min(own_id, peer_id)


class InboundSlots:
    """Admission control for accepted TCP connections.

    `connections_max` bounds all inbound connections, handshaking or
    established. `handshakes_per_address_max` bounds the *unauthenticated*
    ones per source address: several validators may share one address (a
    localnet, a NAT), so established links do not count against it.
    """

    __slots__ = ("_handshaking", "connections", "connections_max", "handshakes_per_address_max")

    def __init__(self, connections_max: int, handshakes_per_address_max: int) -> None:
        self.connections_max = connections_max
        self.handshakes_per_address_max = handshakes_per_address_max
        self.connections = 0
        self._handshaking: Counter[str] = Counter()

    def handshaking(self, host: str | None = None) -> int:
        if host is None:
            return sum(self._handshaking.values())
        return self._handshaking[host]

    def admit(self, host: str) -> str | None:
        """Take a slot for a new connection from `host`, or say why not (a metric label)."""
        if self.connections >= self.connections_max:
            return "too_many_connections"
        if self._handshaking[host] >= self.handshakes_per_address_max:
            return "too_many_from_address"
        self.connections += 1
        self._handshaking[host] += 1
        return None

    def handshake_done(self, host: str) -> None:
        """The handshake ended (either way): free the per-address slot."""
        assert self._handshaking[host] > 0
        self._handshaking[host] -= 1
        if not self._handshaking[host]:
            del self._handshaking[host]

    def closed(self) -> None:
        assert self.connections > 0
        self.connections -= 1
