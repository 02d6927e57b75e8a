"""The UDP broadcast helper (Cisco ``ip forward-protocol udp``): one test per rule.

Host and helpers as in test_relay_engine.py (up0 upstream; lan1 10.1.0.1/24 + 10.11.0.1/24,
lan2 10.2.0.1/24, lan3 down, lan4 without address, all client-facing). The limiter is the
shell's own RateLimiter, as the relay service gives it.
"""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from test_relay_engine import (
    DHCP_SERVER,
    LAN1,
    LAN1_ADDR,
    LAN2,
    LAN3,
    PXE_SERVER,
    UP0,
    host_interfaces,
    make_config,
)

from boothop.relay.broadcast import BroadcastForwarder, ForwardUdp, UdpDrop, UdpDropped
from boothop.relay.config import RelayConfig, UdpForwarding
from boothop.relay.configfile import load
from boothop.relay.settings import ConfigError
from boothop.relay.shell import RateLimiter
from boothop.relay.wire import Datagram

CLIENT = IPv4Address("10.1.0.50")
TFTP_HELPER = IPv4Address("10.99.0.69")
RRQ = b"\x00\x01pxelinux.0\x00octet\x00"
SUBNET_BROADCAST = IPv4Address("10.1.0.255")
LIMITED = IPv4Address("255.255.255.255")


def config(**forwarding: object) -> RelayConfig:
    fields: dict[str, object] = {"ports": (69, 9)}
    fields.update(forwarding)
    return make_config(forward_udp=UdpForwarding(**fields))  # type: ignore[arg-type]


def broadcast(port: int = 69, *, source: IPv4Address = CLIENT, ifindex: int = LAN1,
              destination: IPv4Address = LIMITED) -> Datagram:
    return Datagram(RRQ, source, 40123, destination, ifindex, port=port)


def run(datagram: Datagram, relay: RelayConfig | None = None, *,
        forwarder: BroadcastForwarder | None = None,
        now: float = 0.0) -> tuple[ForwardUdp, ...] | UdpDropped:
    forwarder = forwarder or BroadcastForwarder(RateLimiter(burst=50, period=1.0))
    return forwarder.handle(datagram, relay or config(), host_interfaces(), now)


def dropped(outcome: tuple[ForwardUdp, ...] | UdpDropped) -> UdpDrop:
    assert isinstance(outcome, UdpDropped), outcome
    return outcome.reason


def test_a_broadcast_goes_to_every_helper_with_the_clients_source_kept() -> None:
    """Cisco's IP helper rewrites the destination and keeps the source: the helper answers the
    client directly (TFTP's DATA to the client's port)."""
    assert run(broadcast()) == (
        ForwardUdp(DHCP_SERVER, 69, CLIENT, 40123, RRQ),
        ForwardUdp(PXE_SERVER, 69, CLIENT, 40123, RRQ),
    )


def test_a_subnet_directed_broadcast_of_any_of_the_interfaces_subnets_is_forwarded() -> None:
    assert len(run(broadcast(destination=SUBNET_BROADCAST))) == 2  # type: ignore[arg-type]
    secondary = broadcast(destination=IPv4Address("10.11.0.255"),
                          source=IPv4Address("10.11.0.7"))
    assert len(run(secondary)) == 2  # type: ignore[arg-type]


@pytest.mark.parametrize("destination", [LAN1_ADDR, IPv4Address("10.2.0.255"),
                                         IPv4Address("10.99.0.10")])
def test_a_unicast_or_another_links_broadcast_is_not_forwarded(destination: IPv4Address) -> None:
    assert dropped(run(broadcast(destination=destination))) is UdpDrop.NOT_BROADCAST


@pytest.mark.parametrize("source", ["0.0.0.0", "10.1.0.1", "10.1.0.255", "10.2.0.9",
                                    "192.0.2.1"])
def test_a_source_that_is_not_a_host_of_the_ingress_subnets_is_never_forwarded(
        source: str) -> None:
    """The source is kept: a spoofed or unanswerable one would make the relay a reflector."""
    outcome = run(broadcast(source=IPv4Address(source)))
    assert dropped(outcome) is UdpDrop.SOURCE_OFF_LINK


@pytest.mark.parametrize("port", [67, 68, 546, 547])
def test_dhcp_ports_never_take_this_path_even_if_a_configuration_lists_them(port: int) -> None:
    relay = config(ports=(port,))
    assert dropped(run(broadcast(port), relay)) is UdpDrop.PORT_NOT_FORWARDED


def test_a_port_no_longer_configured_is_dropped() -> None:
    """After a reload that removed the port (its socket stays open until a restart)."""
    assert dropped(run(broadcast(37))) is UdpDrop.PORT_NOT_FORWARDED
    assert dropped(run(broadcast(), make_config())) is UdpDrop.PORT_NOT_FORWARDED


def test_only_client_facing_interfaces_are_served() -> None:
    upstream = broadcast(ifindex=UP0, source=IPv4Address("10.99.0.33"))
    assert dropped(run(upstream)) is UdpDrop.NOT_CLIENT_FACING
    assert dropped(run(broadcast(ifindex=99))) is UdpDrop.UNKNOWN_INTERFACE
    down = broadcast(ifindex=LAN3, source=IPv4Address("10.3.0.9"))
    assert dropped(run(down)) is UdpDrop.INTERFACE_DOWN


def test_helpers_per_port_then_the_forwarding_list_then_the_interfaces() -> None:
    relay = config(helpers=(PXE_SERVER,), port_helpers=((69, (TFTP_HELPER,)),))
    assert [a.server for a in run(broadcast(69), relay)] == [TFTP_HELPER]  # type: ignore[union-attr]
    assert [a.server for a in run(broadcast(9), relay)] == [PXE_SERVER]  # type: ignore[union-attr]
    per_interface = dataclasses.replace(
        config(), interfaces=tuple(dataclasses.replace(i, helpers=(TFTP_HELPER,))
                                   if i.name == "lan2" else i for i in config().interfaces))
    lan2 = broadcast(ifindex=LAN2, source=IPv4Address("10.2.0.9"))
    assert [a.server for a in run(lan2, per_interface)] == [TFTP_HELPER]  # type: ignore[union-attr]


def test_no_helpers_drops() -> None:
    relay = dataclasses.replace(config(), helpers=())
    assert dropped(run(broadcast(), relay)) is UdpDrop.NO_HELPERS


def test_rate_limit_per_interface_and_port_then_a_new_second() -> None:
    forwarder = BroadcastForwarder(RateLimiter(burst=3, period=1.0))
    outcomes = [run(broadcast(), forwarder=forwarder, now=0.1 * n) for n in range(5)]
    assert [isinstance(o, tuple) for o in outcomes] == [True, True, True, False, False]
    assert dropped(outcomes[-1]) is UdpDrop.RATE_LIMITED
    # Another port and another interface have their own allowance; a new second, a new one.
    assert isinstance(run(broadcast(9), forwarder=forwarder, now=0.5), tuple)
    lan2 = broadcast(ifindex=LAN2, source=IPv4Address("10.2.0.9"))
    assert isinstance(run(lan2, forwarder=forwarder, now=0.5), tuple)
    assert isinstance(run(broadcast(), forwarder=forwarder, now=1.2), tuple)


def test_counters_per_port_helper_and_reason() -> None:
    forwarder = BroadcastForwarder(RateLimiter(burst=50, period=1.0))
    run(broadcast(), forwarder=forwarder)
    run(broadcast(9), forwarder=forwarder)
    run(broadcast(source=IPv4Address("0.0.0.0")), forwarder=forwarder)
    assert forwarder.counters.snapshot() == {
        "udp_received": {"69": 2, "9": 1},
        "udp_forwarded": {"69": {str(DHCP_SERVER): 1, str(PXE_SERVER): 1},
                          "9": {str(DHCP_SERVER): 1, str(PXE_SERVER): 1}},
        "udp_dropped": {"source-off-link": 1},
    }


# -- configuration: TOML only, never on by default -------------------------------------------

def test_off_by_default() -> None:
    assert make_config().forward_udp is None
    assert load(Path(__file__).parents[2] / "config" / "relay.toml").relay.forward_udp is None


def test_config_forward_udp_table(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text('helpers = ["10.9.0.10"]\n[forward_udp]\nports = [69, 137, 9]\n'
                    'helpers = ["10.9.0.30"]\nrate_limit = 10\n'
                    '[forward_udp.helpers_by_port]\n69 = ["10.9.0.69"]\n')
    assert load(path).relay.forward_udp == UdpForwarding(
        ports=(69, 137, 9), helpers=(IPv4Address("10.9.0.30"),),
        port_helpers=((69, (IPv4Address("10.9.0.69"),)),), rate_limit=10)


@pytest.mark.parametrize(("text", "key", "line", "reason"), [
    ("ports = [69, 67]", "forward_udp.ports[1]", 3,
     "67 is DHCP/BOOTP: never forwarded as a plain broadcast (DHCP goes through the relay "
     "itself)"),
    ("ports = [68]", "forward_udp.ports[0]", 3, "68 is DHCP/BOOTP: never forwarded as a plain "
     "broadcast (DHCP goes through the relay itself)"),
    ("ports = [547]", "forward_udp.ports[0]", 3, "547 is DHCPv6: never forwarded as a plain "
     "broadcast (DHCP goes through the relay itself)"),
    ("ports = [0]", "forward_udp.ports[0]", 3, "must be a UDP port 1..65535, not 0"),
    ("ports = [9, 9]", "forward_udp.ports[1]", 3, "9 is listed twice"),
    ("ports = [9]\nrate = 3", "forward_udp.rate", 4,
     "unknown key (expected one of: helpers, helpers_by_port, ports, rate_limit)"),
    ("ports = [9]\n[forward_udp.helpers_by_port]\n69 = [\"10.0.0.1\"]",
     "forward_udp.helpers_by_port.69", 5, "'69' is not one of the forwarded ports (9)"),
])
def test_config_refusals_name_file_line_key_reason(tmp_path: Path, text: str, key: str,
                                                   line: int, reason: str) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(f'helpers = ["10.9.0.10"]\n[forward_udp]\n{text}\n')
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert (caught.value.key, caught.value.line, caught.value.reason) == (key, line, reason)
    assert str(caught.value).startswith(f"{path}:{line}: {key}: ")
