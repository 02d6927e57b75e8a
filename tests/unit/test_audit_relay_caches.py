"""The relay's caches (issue 9's mutation audit): what they hold must follow the configuration,
the interfaces and each request, and every cache filled from the network must stay bounded.

Each test here failed on a copy of the code with its rule removed (see the report of issue 9):
a cache that outlives a reload, a flag cached across requests, a bound lifted.
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

import pytest
import structlog
from test_relay_engine import (
    DHCP_SERVER,
    LAN1,
    LAN1_ADDR,
    LIMITED_BROADCAST,
    UP0,
    agent_info,
    delivery,
    drop_reason,
    forwarded,
    from_client,
    from_server,
    host_interfaces,
    ip,
    make_config,
    make_engine,
    reply,
    request,
    with_agent,
)
from test_server_service import FakeSocket

from boothop.relay import shell, sockets
from boothop.relay.drops import DropReason
from boothop.relay.interfaces import Interface, InterfaceTable
from boothop.relay.wire import FLAG_UNICAST, AgentSub, MessageType, address_of
from boothop.relay.wire import message as wire_message
from boothop.server.dhcp import service
from boothop.server.dhcp.actions import ReplyKind, Send

RENEWING = ip("10.1.0.50")


def test_option82_circuit_id_follows_a_reloaded_configuration() -> None:
    """A configuration swap (SIGHUP) changes the circuit-id of the very next request, and a reply
    echoing the old circuit-id no longer counts as one of ours."""
    engine = make_engine({"lan1": {"circuit_id": b"port-1"}}, agent_info=True)
    assert agent_info(forwarded(engine.handle(from_client(request()), 0.0))).circuit_id == (
        b"port-1")
    stale = with_agent(reply(), (AgentSub.CIRCUIT_ID, b"port-1"))
    assert drop_reason(engine.handle(from_server(with_agent(
        reply(), (AgentSub.CIRCUIT_ID, b"lan2"))), 0.0)) is DropReason.CIRCUIT_MISMATCH

    engine.update_config(make_config({"lan1": {"circuit_id": b"port-2"}}, agent_info=True))
    assert agent_info(forwarded(engine.handle(from_client(request()), 0.0))).circuit_id == (
        b"port-2")
    delivery(engine.handle(from_server(with_agent(reply(), (AgentSub.CIRCUIT_ID, b"port-2"))),
                           0.0))
    # port-1 names no interface any more: unknown, not "lan1's".
    assert drop_reason(engine.handle(from_server(stale), 0.0)) is DropReason.UNKNOWN_CIRCUIT


def test_option82_follows_a_readdressed_interface() -> None:
    """An address change on the client's interface (netlink) changes the server identifier
    override of the very next request."""
    engine = make_engine({"lan1": {"server_id_override": True}})
    assert agent_info(forwarded(engine.handle(from_client(request()), 0.0))).server_id_override \
        == LAN1_ADDR
    readdressed = ip("10.1.0.2")
    engine.update_interfaces(InterfaceTable.of([
        Interface(i.index, i.name, i.up,
                  (IPv4Interface("10.1.0.2/24"),) if i.index == LAN1 else i.addresses)
        for i in host_interfaces()
    ]))
    assert agent_info(forwarded(engine.handle(from_client(request()), 0.0))).server_id_override \
        == readdressed


def test_rfc5010_unicast_flag_is_decided_per_request_not_cached() -> None:
    """Broadcast, unicast, broadcast again on one interface: each request's own flag."""
    engine = make_engine({"lan1": {"server_id_override": True}})

    def flags(destination: IPv4Address, source: IPv4Address) -> int | None:
        message = request(MessageType.REQUEST, ciaddr=source)
        outcome = engine.handle(from_client(message, source=source, destination=destination), 0.0)
        return agent_info(forwarded(outcome)).flags

    assert flags(LIMITED_BROADCAST, ip("0.0.0.0")) == 0
    assert flags(LAN1_ADDR, RENEWING) == FLAG_UNICAST
    assert flags(LIMITED_BROADCAST, ip("0.0.0.0")) == 0
    assert flags(LAN1_ADDR, RENEWING) == FLAG_UNICAST


def test_reply_after_the_client_interface_goes_down_is_dropped() -> None:
    engine = make_engine()
    delivery(engine.handle(from_server(reply()), 0.0))
    table = host_interfaces()
    lan1 = table.by_index(LAN1)
    assert lan1 is not None
    engine.update_interfaces(InterfaceTable.of(
        [Interface(i.index, i.name, i.up and i.index != LAN1, i.addresses) for i in table]))
    assert drop_reason(engine.handle(from_server(reply()), 0.0)) is DropReason.INTERFACE_DOWN


def test_server_subnet_moving_to_another_interface_is_learnt_again() -> None:
    """Which interface a server's replies must come through is cached per server: the cache
    goes with the interface table it was computed from."""
    engine = make_engine()
    delivery(engine.handle(from_server(reply()), 0.0))
    up1 = 7
    moved = InterfaceTable.of([
        *(i for i in host_interfaces() if i.index != UP0),
        Interface(UP0, "up0", False, ()),
        Interface(up1, "up1", True, (IPv4Interface("10.99.0.1/24"),)),
    ])
    engine.update_interfaces(moved)
    delivery(engine.handle(from_server(reply(), ifindex=up1), 0.0))
    assert drop_reason(engine.handle(from_server(reply(), ifindex=UP0), 0.0)) is (
        DropReason.REPLY_WRONG_INTERFACE)


def test_option82_decoding_cache_of_replies_is_bounded_and_stays_right() -> None:
    """A server can echo any option 82: the engine's per-value cache stays at 1024 entries."""
    engine = make_engine(agent_info=True)
    for n in range(1500):
        engine.handle(from_server(with_agent(reply(), (AgentSub.CIRCUIT_ID, b"c%d" % n))), 0.0)
    assert 0 < len(engine._agent_decoded) <= 1024
    delivery(engine.handle(from_server(with_agent(reply(), (AgentSub.CIRCUIT_ID, b"lan1"))), 0.0))


# -- the per-process caches of the shell, the relay's sockets and the server ------------------
def _address(n: int) -> IPv4Address:
    return IPv4Address(0x0A000000 + n)


def _send(n: int) -> str:
    """The server sends a reply to the n-th address: the destination string it used."""
    send = Send(ReplyKind.ACK, b"x", _address(n), 68, DHCP_SERVER, 0, False)
    sock = FakeSocket()
    service._send(sock, send, structlog.get_logger(), Counter(), False)
    return sock.sent[0][1][0]


def _ip_header_is_right(n: int, header: object) -> bool:
    assert isinstance(header, bytes)
    return header[16:20] == _address(n).packed and sockets.checksum(header) == 0


#: cache, fill it with key n (returning what the caller got), is that answer right for n?
CACHES: dict[str, tuple[dict[Any, Any], Callable[[int], object], Callable[[int, object], bool]]]
CACHES = {
    "wire._ADDRESSES": (
        wire_message._ADDRESSES, lambda n: address_of(str(_address(n))),
        lambda n, got: got == _address(n),
    ),
    "shell._PKTINFOS": (
        shell._PKTINFOS,
        lambda n: shell._pktinfo([(socket.IPPROTO_IP, shell.IP_PKTINFO, shell._PKTINFO.pack(
            3, LAN1_ADDR.packed, _address(n).packed))]),
        lambda n, got: got == (3, LAN1_ADDR, _address(n)),
    ),
    "shell._NAMES": (
        shell._NAMES, lambda n: shell.interface_name(1_000_000 + n), lambda n, got: got == "",
    ),
    "shell._CMSGS": (
        shell._CMSGS, lambda n: shell.pktinfo_cmsg(n, LAN1_ADDR),
        lambda n, got: got == [(socket.IPPROTO_IP, shell.IP_PKTINFO,
                                shell._PKTINFO.pack(n, LAN1_ADDR.packed, bytes(4)))],
    ),
    "sockets._IP_HEADERS": (
        sockets._IP_HEADERS,
        lambda n: sockets._ip_header(LAN1_ADDR.packed, _address(n).packed, 328),
        _ip_header_is_right,
    ),
    "shell._TEXTS": (
        shell._TEXTS, _send, lambda n, got: got == str(_address(n)),
    ),
}


@pytest.fixture
def emptied() -> Iterator[None]:
    for cache, _, _ in CACHES.values():
        cache.clear()
    yield
    for cache, _, _ in CACHES.values():
        cache.clear()


@pytest.mark.parametrize("name", sorted(CACHES))
@pytest.mark.usefixtures("emptied")
def test_per_process_cache_is_bounded_at_4096_entries(name: str) -> None:
    """Keys chosen by remote parties (sources, destinations, indexes) never grow a cache beyond
    4096 entries, and what it answers after an eviction is still right."""
    cache, fill, right = CACHES[name]
    for n in range(4096 + 100):
        got = fill(n)
        assert len(cache) <= 4096, f"{name} holds {len(cache)} entries"
        assert right(n, got), (n, got)
    assert len(cache) < 4096  # it was cleared, then refilled
    assert right(7, fill(7)) and right(4096 + 99, fill(4096 + 99))
