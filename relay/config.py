"""The relay's configuration: what the engine needs, validated before it is used."""

from __future__ import annotations

import dataclasses
import enum
from ipaddress import IPv4Address

from .classes import ForwardingClass
from .interfaces import Role
from .throttle import RateLimits

DEFAULT_MAX_HOPS = 10
#: dhcrelay's -A default: the largest packet sent to a server once option 82 is added.
DEFAULT_MAX_PACKET_SIZE = 576


class AgentPolicy(enum.Enum):
    """dhcrelay's -m: what to do with a request that already carries option 82."""

    APPEND = "append"
    REPLACE = "replace"
    FORWARD = "forward"
    DISCARD = "discard"


@dataclasses.dataclass(frozen=True, slots=True)
class InterfaceConfig:
    name: str
    role: Role = Role.DOWNSTREAM
    #: RFC 3046 §2.1: on an untrusted circuit a request with giaddr 0 and option 82 is dropped.
    trusted: bool = False
    #: The address put in giaddr when the interface has several (secondary subnets).
    giaddr: IPv4Address | None = None
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
