"""Where a reply goes: RFC 2131 §4.1 (and RFC 1542 §5.4 for BOOTREPLY), as one pure function."""

from __future__ import annotations

from ipaddress import IPv4Address

from boothop.relay.wire import BROADCAST_FLAG, CLIENT_PORT, SERVER_PORT, ZERO, DhcpMessage

BROADCAST = IPv4Address("255.255.255.255")


#: Where a reply goes: the address, the UDP port, the reply's flags field (the broadcast bit may
#: be set for a relayed NAK) and whether RFC 2131 §4.1 asks for a unicast to yiaddr at the
#: link-layer address chaddr. A tuple: one per reply, and a tuple costs no ``__init__`` call.
Destination = tuple[IPv4Address, int, int, bool]


def reply_destination(request: DhcpMessage, yiaddr: int, nak: bool,
                      relay_port: int = SERVER_PORT) -> Destination:
    """``yiaddr``: the address offered or bound, as an int (0: none). ``relay_port``: where a
    relay agent listens (RFC 8357 §5.2: the source port of a request carrying the Relay Source
    Port sub-option), else 67.

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
        return request.giaddr, relay_port, flags, False
    if nak:
        # RFC 2131 §4.1: "In all cases, when 'giaddr' is zero, the server broadcasts any DHCPNAK
        # messages to 0xffffffff."
        return BROADCAST, CLIENT_PORT, flags, False
    if request.ciaddr != ZERO:
        # RFC 2131 §4.1: "If the 'giaddr' field is zero and the 'ciaddr' field is nonzero, then
        # the server unicasts DHCPOFFER and DHCPACK messages to the address in 'ciaddr'."
        return request.ciaddr, CLIENT_PORT, flags, False
    if request.broadcast or not yiaddr:
        # RFC 2131 §4.1: "If 'giaddr' is zero and 'ciaddr' is zero, and the broadcast bit is set,
        # then the server broadcasts DHCPOFFER and DHCPACK messages to 0xffffffff."
        return BROADCAST, CLIENT_PORT, flags, False
    # RFC 2131 §4.1: "If the broadcast bit is not set and 'giaddr' is zero and 'ciaddr' is zero,
    # then the server unicasts DHCPOFFER and DHCPACK messages to the client's hardware address
    # and 'yiaddr' address."
    return IPv4Address(yiaddr), CLIENT_PORT, flags, True
