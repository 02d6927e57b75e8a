"""Where a reply goes: RFC 2131 §4.1 (and RFC 1542 §5.4 for BOOTREPLY), as one pure function."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from boothop.relay.wire import BROADCAST_FLAG, CLIENT_PORT, SERVER_PORT, ZERO, DhcpMessage

BROADCAST = IPv4Address("255.255.255.255")


@dataclass(slots=True)
class Destination:
    """Not frozen: one per reply, only read (see actions.py)."""

    address: IPv4Address
    port: int
    #: The reply's flags field (the broadcast bit may be set for a relayed NAK).
    flags: int
    to_chaddr: bool = False


def reply_destination(request: DhcpMessage, yiaddr: IPv4Address, nak: bool,
                      relay_port: int = SERVER_PORT) -> Destination:
    """``relay_port``: where a relay agent listens (RFC 8357 §5.2: the source port of a request
    carrying the Relay Source Port sub-option), else 67.

    ``request`` comes from the codec, whose 0.0.0.0 is ``ZERO`` itself: giaddr is compared by
    identity (``!=`` on an IPv4Address is a Python call, for every reply)."""
    flags = request.flags
    if request.giaddr is not ZERO:
        # RFC 2131 §4.1: "If the 'giaddr' field in a DHCP message from a client is non-zero, the
        # server sends any return messages to the 'DHCP server' port on the BOOTP relay agent
        # whose address appears in 'giaddr'."
        if nak:
            # RFC 2131 §4.3.2: "The server MUST set the broadcast bit in the DHCPNAK, so that
            # the relay agent will broadcast the DHCPNAK to the client".
            flags |= BROADCAST_FLAG
        return Destination(request.giaddr, relay_port, flags)
    if nak:
        # RFC 2131 §4.1: "In all cases, when 'giaddr' is zero, the server broadcasts any DHCPNAK
        # messages to 0xffffffff."
        return Destination(BROADCAST, CLIENT_PORT, flags)
    if request.ciaddr != ZERO:
        # RFC 2131 §4.1: "If the 'giaddr' field is zero and the 'ciaddr' field is nonzero, then
        # the server unicasts DHCPOFFER and DHCPACK messages to the address in 'ciaddr'."
        return Destination(request.ciaddr, CLIENT_PORT, flags)
    if request.broadcast or yiaddr == ZERO:
        # RFC 2131 §4.1: "If 'giaddr' is zero and 'ciaddr' is zero, and the broadcast bit is set,
        # then the server broadcasts DHCPOFFER and DHCPACK messages to 0xffffffff."
        return Destination(BROADCAST, CLIENT_PORT, flags)
    # RFC 2131 §4.1: "If the broadcast bit is not set and 'giaddr' is zero and 'ciaddr' is zero,
    # then the server unicasts DHCPOFFER and DHCPACK messages to the client's hardware address
    # and 'yiaddr' address."
    return Destination(yiaddr, CLIENT_PORT, flags, to_chaddr=True)
