"""The relay's configuration: what the engine needs, validated before it is used."""

from __future__ import annotations

import dataclasses
import enum
from ipaddress import IPv4Address, IPv6Address

from .classes import ForwardingClass
from .interfaces import Role
from .throttle import RateLimits

DEFAULT_MAX_HOPS = 10
#: dhcrelay's -A default: the largest packet sent to a server once option 82 is added.
DEFAULT_MAX_PACKET_SIZE = 576
#: Cisco's ``ip dhcp smart-relay``: after this many DISCOVERs from one client without an OFFER
#: delivered to it, the next of the interface's addresses becomes its giaddr.
DEFAULT_SMART_RETRIES = 3


class AgentPolicy(enum.Enum):
    """dhcrelay's -m: what to do with a request that already carries option 82."""

    APPEND = "append"
    REPLACE = "replace"
    FORWARD = "forward"
    DISCARD = "discard"


#: Ports the UDP broadcast helper never forwards: DHCP/BOOTP takes the relay's own path (giaddr,
#: hops, option 82), and DHCPv6 is not a broadcast protocol to rewrite.
NEVER_FORWARDED_UDP = {67: "DHCP/BOOTP", 68: "DHCP/BOOTP", 546: "DHCPv6", 547: "DHCPv6"}
#: Broadcasts forwarded per second per client-facing interface and port, by default.
DEFAULT_UDP_RATE_LIMIT = 50


@dataclasses.dataclass(frozen=True, slots=True)
class UdpForwarding:
    """Cisco's ``ip forward-protocol udp``: other UDP broadcasts from client LANs, to helpers.

    Off unless configured (TOML ``[forward_udp]``). A datagram keeps its source address and port
    and goes to each helper at the same destination port.
    """

    ports: tuple[int, ...]
    #: Where broadcasts of every port go; empty: each interface's DHCP helpers.
    helpers: tuple[IPv4Address, ...] = ()
    #: Per port, helpers instead of ``helpers``.
    port_helpers: tuple[tuple[int, tuple[IPv4Address, ...]], ...] = ()
    rate_limit: int = DEFAULT_UDP_RATE_LIMIT

    def helpers_for(self, port: int, interface: tuple[IPv4Address, ...]
                    ) -> tuple[IPv4Address, ...]:
        for listed, helpers in self.port_helpers:
            if listed == port:
                return helpers
        return self.helpers or interface


class GiaddrMode(enum.Enum):
    """Which of a client-facing interface's addresses (several subnets on one LAN) is giaddr,
    unless one is pinned (``InterfaceConfig.giaddr``)."""

    #: The primary address (dhcrelay's behaviour).
    PRIMARY = "primary"
    #: The primary, then the next secondary after ``smart_retries`` unanswered DISCOVERs.
    SMART = "smart"
    #: One copy of each request per address of the interface.
    ALL = "all"


@dataclasses.dataclass(frozen=True, slots=True)
class InterfaceConfig:
    name: str
    role: Role = Role.DOWNSTREAM
    #: RFC 3046 §2.1: on an untrusted circuit a request with giaddr 0 and option 82 is dropped.
    trusted: bool = False
    #: The address put in giaddr when the interface has several (secondary subnets): pinned,
    #: whatever ``giaddr_mode`` says.
    giaddr: IPv4Address | None = None
    giaddr_mode: GiaddrMode = GiaddrMode.PRIMARY
    #: Helper addresses for requests received here; empty means the global list.
    helpers: tuple[IPv4Address, ...] = ()
    #: Circuit-id sub-option; default: the interface name.
    circuit_id: bytes | None = None
    #: Remote-id sub-option; default: the global remote_id.
    remote_id: bytes | None = None
    #: RFC 3527: put this interface's subnet in the link-selection sub-option and the named
    #: (upstream) interface's address in giaddr.
    link_selection: str | None = None
    #: RFC 5107: ask servers to name this relay as server identifier (with RFC 5010 flags).
    server_id_override: bool = False
    #: RFC 6607: the VSS sub-option's value (type octet + VPN identifier) this relay adds, with
    #: VSS-Control, to option 82 of requests from this interface (``wire.vss_value``).
    vss: bytes | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class RelayConfig:
    helpers: tuple[IPv4Address, ...]
    #: Empty means every interface with an IPv4 address, in both roles (dhcrelay without -i).
    interfaces: tuple[InterfaceConfig, ...] = ()
    max_hops: int = DEFAULT_MAX_HOPS
    #: dhcrelay's -a: add relay agent information (option 82) to requests.
    agent_info: bool = False
    agent_policy: AgentPolicy = AgentPolicy.REPLACE
    remote_id: bytes | None = None
    max_packet_size: int = DEFAULT_MAX_PACKET_SIZE
    #: Servers whose replies are accepted besides the helpers (e.g. a server answering from a
    #: second address).
    extra_servers: tuple[IPv4Address, ...] = ()
    #: dhcrelay's -g: the giaddr written into replies delivered to clients (a workaround for
    #: clients that route via giaddr instead of option 3), or None to leave it as it came.
    reply_giaddr: IPv4Address | None = None
    #: dhcrelay's -rp: RFC 8357 relay source port. Requests go to servers from this UDP port
    #: with the Relay Source Port sub-option (19) in option 82, and replies come back to it.
    relay_port: int | None = None
    #: DISCOVERs from one client without an OFFER before a smart interface's next address.
    smart_retries: int = DEFAULT_SMART_RETRIES
    #: The UDP broadcast helper (None: off).
    forward_udp: UdpForwarding | None = None
    #: Boot-aware forwarding classes, tried in order (``relay.classes``); a request none
    #: matches goes to ``helpers_for`` its interface.
    classes: tuple[ForwardingClass, ...] = ()
    #: Per-client rate limits (``relay.throttle``).
    rate_limits: RateLimits = dataclasses.field(default_factory=RateLimits)

    def interface(self, name: str) -> InterfaceConfig | None:
        if not self.interfaces:
            return InterfaceConfig(name, Role.BOTH)
        for interface in self.interfaces:
            if interface.name == name:
                return interface
        return None

    def helpers_for(self, interface: InterfaceConfig) -> tuple[IPv4Address, ...]:
        return interface.helpers or self.helpers

    @property
    def all_servers(self) -> frozenset[IPv4Address]:
        servers = set(self.helpers) | set(self.extra_servers)
        for interface in self.interfaces:
            servers.update(interface.helpers)
        for forwarding_class in self.classes:
            servers.update(forwarding_class.helpers)
        return frozenset(servers)


@dataclasses.dataclass(frozen=True, slots=True)
class LowerInterface6:
    """dhcrelay -6's ``-l [address%]ifname``: a client-facing interface of the DHCPv6 relay."""

    name: str
    #: The link-address of Relay-forwards from here; default: the interface's first global or
    #: ULA address, else unspecified (the Interface-ID names the link).
    link_address: IPv6Address | None = None
    #: The Interface-ID option's value; default: the interface name.
    interface_id: bytes | None = None

    @property
    def id_value(self) -> bytes:
        return self.interface_id or self.name.encode()


@dataclasses.dataclass(frozen=True, slots=True)
class Upstream6:
    """dhcrelay -6's ``-u [address%]ifname``: where Relay-forwards go, and out of which
    interface (ff05::1:3, All_DHCP_Servers, when no address is given)."""

    interface: str
    destination: IPv6Address


@dataclasses.dataclass(frozen=True, slots=True)
class Relay6Config:
    """The DHCPv6 relay agent's configuration (RFC 8415 §19, RFC 4649, RFC 6939)."""

    lower: tuple[LowerInterface6, ...]
    upper: tuple[Upstream6, ...]
    #: RFC 4649 Remote-ID (37): (enterprise number, remote-id) added to every Relay-forward.
    remote_id: tuple[int, bytes] | None = None
    #: RFC 4580 Subscriber-ID (38), dhcrelay -s.
    subscriber_id: bytes | None = None
    #: RFC 6939: add the client's link-layer address (79) to Relay-forwards of client messages.
    client_link_layer: bool = False

    def lower_interface(self, name: str) -> LowerInterface6 | None:
        for interface in self.lower:
            if interface.name == name:
                return interface
        return None

    def is_upper(self, name: str) -> bool:
        return any(upstream.interface == name for upstream in self.upper)

    @property
    def unicast_servers(self) -> frozenset[IPv6Address]:
        """Configured server addresses (a multicast destination names no one server)."""
        return frozenset(u.destination for u in self.upper if not u.destination.is_multicast)
