"""The UDP broadcast helper (sans-IO): Cisco's ``ip forward-protocol udp``.

A broadcast to a configured port (TFTP 69, time 37, NetBIOS 137/138, Wake-on-LAN 9...) received
on a client-facing interface goes to helper addresses, as Cisco's IP helper does: the destination
becomes the helper, the source address and port stay the client's. Keeping the source is what a
network engineer expects and what makes the protocols work: the helper answers the client
directly (a TFTP server's DATA goes to the client's address and port, routed back through this
router), and its logs and ACLs see the real client. The helper needs a route to the client LANs.

Off unless configured; DHCP/BOOTP (67/68) and DHCPv6 (546/547) never pass here (the
configuration refuses them, and this core drops them should one arrive). Rate-limited per
client-facing interface and port through the limiter the shell gives it (``shell.RateLimiter``).
"""

from __future__ import annotations

import dataclasses
import enum
from collections import Counter
from collections.abc import Hashable
from ipaddress import IPv4Address
from typing import Protocol

from .config import NEVER_FORWARDED_UDP, RelayConfig
from .counters import Tally
from .interfaces import InterfaceTable
from .wire import Datagram

LIMITED_BROADCAST = IPv4Address("255.255.255.255")


class UdpDrop(enum.Enum):
    UNKNOWN_INTERFACE = "unknown-interface"
    NOT_CLIENT_FACING = "not-client-facing"
    INTERFACE_DOWN = "interface-down"
    #: Sent to one of our addresses (or any unicast), not to a broadcast address of the link.
    NOT_BROADCAST = "not-broadcast"
    #: A source that is not a host of the ingress interface's subnets (0.0.0.0, ours, spoofed):
    #: kept as the source, it would make the relay a reflector.
    SOURCE_OFF_LINK = "source-off-link"
    #: A port not (or no longer, after a reload) forwarded, or one that never is (DHCP).
    PORT_NOT_FORWARDED = "port-not-forwarded"
    RATE_LIMITED = "rate-limited"
    NO_HELPERS = "no-helpers"


@dataclasses.dataclass(frozen=True, slots=True)
class ForwardUdp:
    """Send ``payload`` to ``server`` at ``port``, from the client's ``source``:``source_port``."""

    server: IPv4Address
    port: int
    source: IPv4Address
    source_port: int
    payload: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class UdpDropped:
    reason: UdpDrop
    detail: str


class Limiter(Protocol):
    """``shell.RateLimiter``'s interface: None once ``key`` has used its allowance."""

    def allow(self, key: Hashable, now: float) -> int | None: ...


@dataclasses.dataclass
class UdpCounters:
    received: Counter[int] = dataclasses.field(default_factory=Tally)
    forwarded: Counter[tuple[int, IPv4Address]] = dataclasses.field(default_factory=Tally)
    dropped: Counter[UdpDrop] = dataclasses.field(default_factory=Tally)

    def snapshot(self) -> dict[str, object]:
        forwarded: dict[str, dict[str, int]] = {}
        for (port, server), count in sorted(self.forwarded.items()):
            forwarded.setdefault(str(port), {})[str(server)] = count
        return {
            "udp_received": {str(port): n for port, n in sorted(self.received.items())},
            "udp_forwarded": forwarded,
            "udp_dropped": {reason.value: n for reason, n in self.dropped.items()},
        }


class BroadcastForwarder:
    def __init__(self, limiter: Limiter) -> None:
        #: Per (ingress ifindex, port): the shell's RateLimiter(burst=rate_limit, period=1 s).
        self.limiter = limiter
        self.counters = UdpCounters()

    def handle(self, datagram: Datagram, config: RelayConfig, interfaces: InterfaceTable,
               now: float) -> tuple[ForwardUdp, ...] | UdpDropped:
        """Forward one datagram received on a forwarded port, or say why not."""
        self.counters.received[datagram.port] += 1
        decided = self._decide(datagram, config, interfaces, now)
        if isinstance(decided, UdpDropped):
            self.counters.dropped[decided.reason] += 1
            return decided
        for action in decided:
            self.counters.forwarded[action.port, action.server] += 1
        return decided

    def _decide(self, datagram: Datagram, config: RelayConfig, interfaces: InterfaceTable,
                now: float) -> tuple[ForwardUdp, ...] | UdpDropped:
        port, source = datagram.port, datagram.source
        forwarding = config.forward_udp
        if forwarding is None or port not in forwarding.ports or port in NEVER_FORWARDED_UDP:
            return UdpDropped(UdpDrop.PORT_NOT_FORWARDED, f"port {port}")
        ingress = interfaces.by_index(datagram.ifindex)
        if ingress is None:
            return UdpDropped(UdpDrop.UNKNOWN_INTERFACE, f"ifindex {datagram.ifindex}")
        settings = config.interface(ingress.name)
        if settings is None or not settings.role.faces_clients:
            return UdpDropped(UdpDrop.NOT_CLIENT_FACING, f"port {port} on {ingress.name}")
        if not ingress.up:
            return UdpDropped(UdpDrop.INTERFACE_DOWN, ingress.name)
        destination = datagram.destination
        if destination != LIMITED_BROADCAST and not any(
                own.network.broadcast_address == destination and own.network.prefixlen < 31
                for own in ingress.addresses):
            return UdpDropped(UdpDrop.NOT_BROADCAST, f"to {destination} on {ingress.name}")
        if not any(source in own.network and source not in (own.ip, own.network.network_address,
                                                            own.network.broadcast_address)
                   for own in ingress.addresses) or interfaces.by_address(source) is not None:
            return UdpDropped(UdpDrop.SOURCE_OFF_LINK,
                              f"source {source} is not a host on {ingress.name}'s subnets")
        helpers = forwarding.helpers_for(port, config.helpers_for(settings))
        if not helpers:
            return UdpDropped(UdpDrop.NO_HELPERS, f"port {port} on {ingress.name}")
        if self.limiter.allow((ingress.index, port), now) is None:
            return UdpDropped(UdpDrop.RATE_LIMITED, f"port {port} on {ingress.name}")
        return tuple(ForwardUdp(helper, port, source, datagram.source_port, datagram.payload)
                     for helper in helpers)
