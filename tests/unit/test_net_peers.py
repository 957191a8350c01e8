"""Peer-management rules: the simultaneous-dial tie-break and inbound admission."""

from __future__ import annotations

import dataclasses

import pytest

from network.config import NetConfig
from network.peers import InboundSlots, keep_new_link

LOW, HIGH = b"\x01" * 32, b"\x02" * 32


@pytest.mark.parametrize(("own", "peer"), [(LOW, HIGH), (HIGH, LOW)])
def test_both_sides_keep_the_link_dialed_by_the_lower_id(own: bytes, peer: bytes) -> None:
    # old link dialed by the higher id, new by the lower: replace
    assert keep_new_link(own, peer, old_dialer=HIGH, new_dialer=LOW)
    # old link dialed by the lower id, new by the higher: keep the old one
    assert not keep_new_link(own, peer, old_dialer=LOW, new_dialer=HIGH)


def test_both_sides_agree_whatever_order_the_links_complete_in() -> None:
    for first, second in [(LOW, HIGH), (HIGH, LOW)]:
        survivors = set()
        for own, peer in [(LOW, HIGH), (HIGH, LOW)]:
            survivors.add(second if keep_new_link(own, peer, first, second) else first)
        assert survivors == {LOW}


def test_a_new_link_from_the_same_dialer_replaces_the_old() -> None:
    assert keep_new_link(LOW, HIGH, old_dialer=HIGH, new_dialer=HIGH)
    assert keep_new_link(HIGH, LOW, old_dialer=HIGH, new_dialer=HIGH)


def test_inbound_slots_bound_handshakes_per_address_and_connections_in_total() -> None:
    slots = InboundSlots(connections_max=5, handshakes_per_address_max=2)
    assert slots.admit("10.0.0.1") is None
    assert slots.admit("10.0.0.1") is None
    assert slots.admit("10.0.0.1") == "too_many_from_address"
    assert slots.admit("10.0.0.2") is None  # other addresses are unaffected
    slots.handshake_done("10.0.0.1")  # authenticated: still a connection, no longer pending
    assert slots.admit("10.0.0.1") is None
    assert slots.admit("10.0.0.3") is None
    assert slots.connections == 5
    assert slots.admit("10.0.0.4") == "too_many_connections"
    slots.closed()
    assert slots.admit("10.0.0.4") is None
    assert slots.handshaking() == 5 and slots.handshaking("10.0.0.1") == 2


def test_netconfig_offers_no_way_to_disable_encryption() -> None:
    names = {f.name for f in dataclasses.fields(NetConfig)}
    assert not {n for n in names if any(w in n for w in ("plain", "crypt", "cipher", "aead"))}
