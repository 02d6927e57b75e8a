"""Rogue server detection: a DHCP server that is not a helper, answering on a client LAN.

The engine's rules (relay.engine ``observe_client_lan`` for answers seen on their way to a
client's port, ``handle`` for answers sent to the relay's port) and the shell's reply listener
(a packet socket whose hand-written BPF filter keeps only BOOTREPLYs to one UDP port), on
loopback. The host and helpers are those of test_relay_engine.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from ipaddress import IPv4Address, IPv4Interface

import pytest
from test_relay_engine import (
    DHCP_SERVER,
    LAN1,
    LAN1_ADDR,
    LAN2,
    PXE_SERVER,
    UP0,
    drop_reason,
    host_interfaces,
    make_engine,
    reply,
    request,
)

from boothop.relay.actions import Drop, RogueServer
from boothop.relay.classes import ForwardingClass
from boothop.relay.drops import DropReason
from boothop.relay.engine import ROGUE_REPEAT, RelayEngine
from boothop.relay.interfaces import Interface
from boothop.relay.shell import Truncated, open_reply_listener, receive_frame
from boothop.relay.wire import ZERO, Datagram, Opt, encode

ROGUE = IPv4Address("10.1.0.66")
ROGUE_MAC = bytes.fromhex("0241000001ff")
#: The router's own MAC on lan1: a DHCP client of this host's, answered by its LAN's server.
OWN_MAC = bytes.fromhex("02000000aa01")


def on_lan(message: object, source: IPv4Address = ROGUE, ifindex: int = LAN1,
           mac: bytes = ROGUE_MAC) -> Datagram:
    """A server's answer as the reply listener sees it: broadcast to port 68 on a client LAN."""
    payload = message if isinstance(message, bytes) else encode(message)  # type: ignore[arg-type]
    return Datagram(payload, source, 67, IPv4Address("255.255.255.255"), ifindex, ZERO, 68,
                    source_mac=mac)


def rogue_offer(**fields: object) -> object:
    """A direct answer on the LAN (giaddr 0), with the rogue's option 54."""
    return reply(giaddr=ZERO, **fields).with_option(Opt.SERVER_ID, ROGUE.packed)


def rogues(engine: RelayEngine, datagram: Datagram, now: float = 0.0) -> list[RogueServer]:
    return [a for a in engine.observe_client_lan(datagram, now).actions
            if isinstance(a, RogueServer)]


def test_a_server_that_is_not_a_helper_answering_on_a_client_lan_is_a_rogue() -> None:
    engine = make_engine()
    (found,) = rogues(engine, on_lan(rogue_offer()))
    assert found == RogueServer(ROGUE, "02:41:00:00:01:ff", "lan1", str(ROGUE),
                                IPv4Address("10.1.0.50"))
    assert engine.counters.rogue_replies == {LAN1: 1}


def test_a_rogue_is_logged_once_per_address_and_again_after_an_hour_but_always_counted() -> None:
    engine = make_engine()
    assert rogues(engine, on_lan(rogue_offer()), 0.0)
    assert rogues(engine, on_lan(rogue_offer()), 10.0) == []
    assert rogues(engine, on_lan(rogue_offer(), ifindex=LAN2), 20.0) == []
    other = IPv4Address("10.1.0.67")
    assert rogues(engine, on_lan(rogue_offer(), source=other), 30.0)[0].server == other
    assert rogues(engine, on_lan(rogue_offer()), ROGUE_REPEAT)
    assert engine.counters.rogue_replies == {LAN1: 4, LAN2: 1}


@pytest.mark.parametrize("server", [DHCP_SERVER, PXE_SERVER, IPv4Address("10.99.0.30"),
                                    IPv4Address("10.99.0.40")])
def test_configured_servers_are_never_rogues(server: IPv4Address) -> None:
    """Helpers, a class's helpers and extra_servers answer where they may."""
    engine = make_engine(classes=(ForwardingClass("efi", (IPv4Address("10.99.0.30"),),
                                                  client_arch=frozenset({7})),),
                         extra_servers=(IPv4Address("10.99.0.40"),))
    assert rogues(engine, on_lan(rogue_offer(), source=server)) == []
    assert engine.counters.rogue_replies == {}


def test_an_answer_another_relay_delivered_is_not_a_rogue_on_this_lan() -> None:
    """giaddr set: a relay on the LAN (a redundant router) delivered its server's answer."""
    engine = make_engine()
    assert rogues(engine, on_lan(reply(giaddr=IPv4Address("10.1.0.2")),
                                 source=IPv4Address("10.1.0.2"))) == []


def test_our_own_deliveries_and_our_hosts_dhcp_client_are_not_rogues() -> None:
    engine = RelayEngine(make_engine().config, host_interfaces(
        Interface(9, "lan9", True, (IPv4Interface("10.9.0.1/24"),), OWN_MAC)))
    assert rogues(engine, on_lan(rogue_offer(), source=LAN1_ADDR)) == []
    assert rogues(engine, on_lan(rogue_offer(chaddr=OWN_MAC + bytes(10)))) == []


def test_answers_on_a_server_facing_interface_are_not_watched() -> None:
    engine = make_engine()
    assert rogues(engine, on_lan(rogue_offer(), ifindex=UP0)) == []


def test_a_request_or_a_malformed_packet_on_the_listener_is_ignored() -> None:
    engine = make_engine()
    assert engine.observe_client_lan(on_lan(b"junk"), 0.0).actions == ()
    assert rogues(engine, on_lan(request())) == []
    assert engine.counters.received == 0  # nothing of this path counts as relay traffic


def test_a_non_server_reply_to_the_relay_on_a_client_only_interface_is_a_rogue_too() -> None:
    """The trust rules drop it (reply-from-non-server); on a downstream interface it is also a
    DHCP server on a client LAN."""
    engine = make_engine()
    datagram = Datagram(encode(reply()), ROGUE, 67, LAN1_ADDR, LAN1, port=67,
                        source_mac=ROGUE_MAC)
    actions = engine.handle(datagram, 0.0).actions
    assert isinstance(actions[0], Drop) and actions[0].reason is DropReason.REPLY_FROM_NON_SERVER
    assert [a.server for a in actions if isinstance(a, RogueServer)] == [ROGUE]
    upstream = Datagram(encode(reply()), IPv4Address("10.99.0.66"), 67, LAN1_ADDR, UP0, port=67)
    assert drop_reason(engine.handle(upstream, 0.0)) is DropReason.REPLY_FROM_NON_SERVER


# -- the listener (a packet socket and its BPF filter), on loopback ------------------------------

needs_raw = pytest.mark.skipif(os.geteuid() != 0, reason="a packet socket needs CAP_NET_RAW")


@needs_raw
def test_the_reply_listener_takes_only_bootreplies_to_its_port() -> None:
    port = 16800 + os.getpid() % 100
    listener = open_reply_listener(port)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sender.bind(("127.0.0.1", 0))
        offer = encode(reply())
        sender.sendto(encode(request()), ("127.0.0.1", port))  # a request: filtered out
        sender.sendto(offer, ("127.0.0.1", port + 1))  # another port: filtered out
        sender.sendto(offer, ("127.0.0.1", port))
        got = receive_frame(listener, port)
        assert got.payload == offer
        assert (got.source, got.source_port, got.destination) == (
            IPv4Address("127.0.0.1"), sender.getsockname()[1], IPv4Address("127.0.0.1"))
        assert got.ifindex == socket.if_nametoindex("lo") and got.port == port
        assert got.source_mac == bytes(6)  # loopback's link-layer address
        with pytest.raises(BlockingIOError):  # nothing else got through the filter
            receive_frame(listener, port, flags=socket.MSG_DONTWAIT)
    finally:
        sender.close()
        listener.close()


@needs_raw
def test_packets_queued_before_the_filter_is_attached_are_not_received() -> None:
    """A packet socket takes every packet until its filter is attached: traffic on loopback while
    the listener opens (another process's, bounded in time) must not come out of it."""
    port = 16900 + os.getpid() % 100
    flood = ("import socket, time\n"
             "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
             "end = time.monotonic() + 1\n"
             "while time.monotonic() < end:\n"
             f"    s.sendto(b'not a reply', ('127.0.0.1', {port + 1}))\n")
    flooders = [subprocess.Popen([sys.executable, "-c", flood]) for _ in range(2)]
    try:
        time.sleep(0.3)
        listeners = [open_reply_listener(port) for _ in range(300)]
    finally:
        for flooder in flooders:
            flooder.wait(10)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        offer = encode(reply())
        sender.sendto(offer, ("127.0.0.1", port))
        assert {receive_frame(listener, port).payload for listener in listeners} == {offer}
    finally:
        sender.close()
        for listener in listeners:
            listener.close()


def test_a_frame_shorter_than_its_udp_header_says_is_truncated() -> None:
    class Fake:
        """recvmsg as a packet socket answers it: the packet and (ifname, ..., mac)."""

        def recvmsg(self, size: int, ancillary: int, flags: int) -> tuple[bytes, list[object],
                                                                        int, tuple[object, ...]]:
            header = bytes((0x45,)) + bytes(19)
            return header + (67).to_bytes(2, "big") + (68).to_bytes(2, "big") + \
                (300).to_bytes(2, "big") + bytes(2) + bytes(10), [], 0, ("lo", 8, 0, 1, b"")

    with pytest.raises(Truncated):
        receive_frame(Fake(), 68)  # type: ignore[arg-type]
