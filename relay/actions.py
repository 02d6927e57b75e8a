"""What the relay engine tells the shell to do with a datagram."""

from __future__ import annotations

import dataclasses
import enum
from ipaddress import IPv4Address, IPv6Address

from .drops import DropReason
from .wire import DhcpMessage, MessageType
from .wire.dhcpv6 import Dhcp6Message, Message6, MessageType6


@dataclasses.dataclass(frozen=True, slots=True)
class Forward:
    """Send ``payload`` to a helper address, from the relay's port (67) to the same port."""

    server: IPv4Address
    payload: bytes


class DeliveryMode(enum.Enum):
    BROADCAST = "broadcast"
    UNICAST_CIADDR = "unicast-ciaddr"
    UNICAST_CHADDR = "unicast-chaddr"
    #: DHCPv6 (RFC 8415 §19.2): to the peer-address on port 546, a client...
    PEER_CLIENT = "peer-client"
    #: ...or on port 547, a relay agent (the carried message is a Relay-reply itself).
    PEER_RELAY = "peer-relay"


@dataclasses.dataclass(frozen=True, slots=True)
class Deliver:
    """Send a reply to a client on port 68 (the relay's + 1), on ``ifindex``, per RFC 2131 §4.1.

    For UNICAST_CHADDR the shell addresses the link-layer frame to ``mac`` itself (a packet
    socket), so the client's address never enters the ARP table; for BROADCAST ``mac`` is
    ff:ff:ff:ff:ff:ff and ``destination`` 255.255.255.255.
    """

    ifindex: int
    ifname: str
    payload: bytes
    mode: DeliveryMode
    destination: IPv4Address
    mac: bytes
    source: IPv4Address


@dataclasses.dataclass(frozen=True, slots=True)
class Drop:
    reason: DropReason
    detail: str


@dataclasses.dataclass(frozen=True, slots=True)
class Warn:
    """A condition a person must act on, logged once: ``event`` is the log event name."""

    event: str
    message: str
    server: IPv4Address


@dataclasses.dataclass(frozen=True, slots=True)
class Throttle:
    """Rate limiting of one client started (``started``) or stopped, after ``dropped`` requests:
    logged once each way. ``kind`` is "mac" or "circuit"."""

    kind: str
    client: str
    ifname: str
    started: bool
    dropped: int


@dataclasses.dataclass(frozen=True, slots=True)
class RogueServer:
    """A DHCP server that is not a configured helper answered on a client-facing interface:
    logged once per server address (an hour apart at most)."""

    server: IPv4Address
    mac: str
    ifname: str
    #: Its option 54 and the address it offered, as a person looks for it.
    server_id: str | None
    yiaddr: IPv4Address


Action = Forward | Deliver | Drop | Warn | Throttle | RogueServer


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """The engine's answer for one datagram, with the context the shell binds to its log events.

    ``hops`` and ``giaddr`` are as relayed for a forwarded request (what the servers see), else
    as received. The other context is derived from ``message`` only when a log line asks for it.
    """

    actions: tuple[Action, ...]
    message: DhcpMessage | None = None
    hops: int | None = None
    giaddr: IPv4Address | None = None
    #: The forwarding class a forwarded request went by (``relay.classes``).
    forwarding_class: str | None = None

    @property
    def xid(self) -> int | None:
        return None if self.message is None else self.message.xid

    @property
    def mac(self) -> str | None:
        return None if self.message is None else self.message.mac

    @property
    def message_type(self) -> str | None:
        """The DHCP message type's name, "BOOTP" without one, the number if unknown."""
        return None if self.message is None else type_name(self.message.message_type)


def type_name(kind: int | None) -> str:
    """A DHCP message type (``DhcpMessage.message_type``) as the log lines name it: its name,
    "BOOTP" without one, the number if unknown."""
    if kind is None:
        return "BOOTP"
    return kind.name if isinstance(kind, MessageType) else str(kind)


@dataclasses.dataclass(frozen=True, slots=True)
class Forward6:
    """Send a Relay-forward to a DHCPv6 server (or ff05::1:3) on port 547; ``ifindex`` names the
    interface it leaves by (needed for a multicast or link-local destination, else 0: routed)."""

    server: IPv6Address
    ifindex: int
    payload: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Deliver6:
    """Send an unwrapped Relay-reply's message to its peer-address on ``ifindex``, port 546 for
    a client, 547 for a relay agent (``mode`` says which)."""

    ifindex: int
    ifname: str
    payload: bytes
    mode: DeliveryMode
    destination: IPv6Address

    @property
    def port(self) -> int:
        return 547 if self.mode is DeliveryMode.PEER_RELAY else 546


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome6:
    """The DHCPv6 engine's answer for one datagram, with the context of its log events: the
    message received (None when it could not be decoded) and, for a Relay-forward sent, its
    hop-count and link-address."""

    actions: tuple[Forward6 | Deliver6 | Drop, ...]
    message: Message6 | None = None
    hop_count: int | None = None
    link_address: IPv6Address | None = None

    @property
    def message_type(self) -> str | None:
        if self.message is None:
            return None
        try:
            return MessageType6(self.message.msg_type).name
        except ValueError:
            return str(self.message.msg_type)

    @property
    def transaction_id(self) -> int | None:
        """The client's transaction-id, when the message is a client/server one (not a relay's)."""
        message = self.message
        return message.transaction_id if isinstance(message, Dhcp6Message) else None
