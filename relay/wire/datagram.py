"""The input of every sans-IO core: one received UDP datagram and what the socket said of it."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, IPv6Address

from .message import ZERO


@dataclasses.dataclass(slots=True)
class Datagram:
    """One UDP datagram as the shell received it, with IP_PKTINFO's view of where it arrived.

    The relay engine, the DHCP server, proxyDHCP and the TFTP admission all take this one type:
    the shell ring builds it once per packet and hands it to whichever core it serves. Not
    frozen: a frozen dataclass sets each field through ``object.__setattr__``, which made this
    one allocation per packet cost the relay some 2 % of its instructions; cores only read it.
    """

    payload: bytes
    source: IPv4Address
    source_port: int
    #: The IP header's destination (``ipi_addr``): 255.255.255.255 for a broadcast.
    destination: IPv4Address = ZERO
    #: The ingress interface's index (``ipi_ifindex``).
    ifindex: int = 0
    #: The local address it reached (``ipi_spec_dst``): the interface's own for a broadcast.
    local: IPv4Address = ZERO
    #: The local port it arrived on (67 or 4011 for proxyDHCP).
    port: int = 0
    #: The ingress interface's name, where the shell knows it.
    ifname: str = ""
    #: The link-layer source, where the shell read the frame (a packet socket), else empty.
    source_mac: bytes = b""


@dataclasses.dataclass(slots=True)
class Datagram6:
    """One UDP datagram received on an IPv6 socket, with IPV6_PKTINFO's view of where it arrived:
    the input of the DHCPv6 relay engine (``Datagram``'s sibling)."""

    payload: bytes
    source: IPv6Address
    source_port: int
    #: The IPv6 header's destination (``ipi6_addr``): ff02::1:2 for a client's multicast.
    destination: IPv6Address
    #: The ingress interface's index (``ipi6_ifindex``).
    ifindex: int
    #: The local port it arrived on (547).
    port: int = 0
