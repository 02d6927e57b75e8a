"""Reply templates (server/dhcp/reply.py): a filled template is byte for byte what ``encode``
gives for the same reply, and a reply that only fits with file/sname overloaded is left to it."""

from __future__ import annotations

from ipaddress import IPv4Address

from hypothesis import given, settings
from hypothesis import strategies as st

from boothop.relay.wire import (
    DHCP_MIN_MAX_SIZE,
    ETHERNET_MAX_MESSAGE,
    ZERO,
    DhcpMessage,
    Op,
    Opt,
    encode,
    encoded_size,
)
from boothop.server.dhcp.reply import ReplyTemplate

addresses = st.one_of(st.just(ZERO), st.integers(1, 2**32 - 1).map(IPv4Address))
#: Option codes a reply carries (no PAD, END or OVERLOAD); values up to 600 octets, so some
#: are split (RFC 3396) and some replies need overload or do not fit.
options = st.lists(st.tuples(
    st.integers(1, 254).filter(lambda code: code != Opt.OVERLOAD),
    st.binary(max_size=600) | st.binary(max_size=8)), max_size=6)


@settings(max_examples=300, deadline=None)
@given(
    leading=options, client=options, siaddr=addresses, file=st.binary(max_size=128),
    htype=st.integers(0, 255), hlen=st.integers(0, 16), xid=st.integers(0, 2**32 - 1),
    chaddr=st.binary(min_size=16, max_size=16), flags=st.integers(0, 0xFFFF),
    ciaddr=addresses, yiaddr=addresses, giaddr=addresses,
    capacity=st.integers(DHCP_MIN_MAX_SIZE, ETHERNET_MAX_MESSAGE),
    edge=st.none() | st.integers(-2, 2),
)
def test_a_filled_template_is_what_encode_gives(
    leading: list[tuple[int, bytes]], client: list[tuple[int, bytes]], siaddr: IPv4Address,
    file: bytes, htype: int, hlen: int, xid: int, chaddr: bytes, flags: int,
    ciaddr: IPv4Address, yiaddr: IPv4Address, giaddr: IPv4Address, capacity: int,
    edge: int | None,
) -> None:
    """``edge``: the capacity is the reply's size give or take that, where fill must choose."""
    file = file.rstrip(b"\0")  # decoded messages hold file without its NUL padding
    request = DhcpMessage(op=Op.BOOTREQUEST, xid=xid, chaddr=chaddr, htype=htype, hlen=hlen,
                          hops=1, secs=9, flags=flags ^ 1, ciaddr=IPv4Address(7), giaddr=giaddr)
    reply = DhcpMessage(op=Op.BOOTREPLY, xid=xid, chaddr=chaddr, htype=htype, hlen=hlen,
                        flags=flags, ciaddr=ciaddr, yiaddr=yiaddr, siaddr=siaddr, giaddr=giaddr,
                        file=file, options=(*leading, *client))
    if edge is not None:
        capacity = encoded_size(reply) + edge
    filled = ReplyTemplate.of(tuple(leading), siaddr, file).fill(
        request, flags, ciaddr, int(yiaddr), client, capacity)
    if filled is None:
        assert encoded_size(reply) > capacity  # encode would overload file/sname, or fail
    else:
        assert filled == encode(reply, capacity)
