"""Relay6Service around the engine, on a loopback socket: it sends what the engine says, logs one
JSON event per relayed step, counts, and takes a reload (configuration and log level)."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator
from ipaddress import IPv6Address, IPv6Interface

import pytest

from boothop.relay import shell
from boothop.relay.config import LowerInterface6, Relay6Config, Upstream6
from boothop.relay.configfile import RelaySettings
from boothop.relay.engine6 import Relay6Engine
from boothop.relay.interfaces import Interface, InterfaceTable
from boothop.relay.service6 import Relay6Service
from boothop.relay.wire import Datagram6
from boothop.relay.wire.dhcpv6 import Dhcp6Message, decode6, encode6

LAN = 4242
CLIENT = IPv6Address("fe80::5054:ff:fea1:b2c3")


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    shell.configure_logging("info", "json", stream=stream)
    yield stream
    shell.configure_logging("info", "json", stream=io.StringIO())


def config() -> Relay6Config:
    return Relay6Config((LowerInterface6("lan1"),), (Upstream6("lo", IPv6Address("::1")),))


@pytest.fixture
def service(logs: io.StringIO) -> Iterator[Relay6Service]:
    sock = shell.open_udp(0, "::1", family=socket.AF_INET6)
    lo = socket.if_nametoindex("lo")
    table = InterfaceTable.of([
        Interface(lo, "lo", True, (), addresses6=(IPv6Interface("::1/128"),)),
        Interface(LAN, "lan1", True, (), addresses6=(IPv6Interface("2001:db8:1::1/64"),)),
    ])
    relay = Relay6Service(Relay6Engine(config(), table), sock)
    with sock:
        yield relay


def events(logs: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in logs.getvalue().splitlines()]


def test_a_solicit_is_relayed_to_the_server_and_logged_once(
    service: Relay6Service, logs: io.StringIO
) -> None:
    with shell.open_udp(547, "::1", family=socket.AF_INET6) as server:
        solicit = encode6(Dhcp6Message(1, 0xABCDEF))
        service.handle(Datagram6(solicit, CLIENT, 546, IPv6Address("ff02::1:2"), LAN, 547), 0.0)
        server.settimeout(5)
        server.setblocking(True)
        forward = decode6(server.recv(4096))
    assert forward.relayed == solicit  # type: ignore[union-attr]
    (event,) = [e for e in events(logs) if e["event"] == "relay6.request.forwarded"]
    assert event["servers"] == ["::1"] and event["link_address"] == "2001:db8:1::1"
    assert event["xid"] == "0xabcdef" and event["type"] == "SOLICIT" and event["iface"] == "lan1"
    assert service.snapshot()["forwarded"] == {"::1": 1}


def test_drops_are_logged_with_their_reason(service: Relay6Service, logs: io.StringIO) -> None:
    service.handle(Datagram6(b"\x01", CLIENT, 546, IPv6Address("ff02::1:2"), LAN, 547), 0.0)
    (event,) = [e for e in events(logs) if e["event"] == "relay6.drop"]
    assert event["reason"] == "malformed"
    assert service.snapshot()["dropped"] == {"malformed": 1}


def test_a_reload_swaps_the_configuration_and_the_log_level(
    service: Relay6Service, logs: io.StringIO
) -> None:
    new = Relay6Config((LowerInterface6("lan1", interface_id=b"p1"),),
                       (Upstream6("lo", IPv6Address("::2")),))
    service.apply_config(RelaySettings(None, log_level="warning", relay6=new))
    assert service.engine.config == new and not service.steps
    assert service.snapshot()["reloads"] == 1 and service.snapshot()["upper"] == ["::2%lo"]
    service.apply_config(RelaySettings(None, log_level="info", relay6=None))
    assert service.engine.config == new  # a file without [dhcpv6] keeps the running relay
