"""Cross-check of the wire codec against an independent parser and builder: scapy's BOOTP/DHCP.

Scapy implements neither RFC 3396 concatenation nor option overload, so the generated messages
here keep every option to one TLV (at most 255 bytes), codes unique and no option 52. Scapy
decodes many options into typed values (addresses as dotted strings, integers); ``typed`` turns
our raw value into the same shape, independently of scapy, so the two parses are compared value by
value. Codes scapy does not type (and those it types as strings) are compared as raw bytes.
"""

from __future__ import annotations

import logging
from ipaddress import IPv4Address
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_wire_properties import PROPERTY, messages

from boothop.relay.wire import MAGIC_COOKIE, DhcpMessage, Opt, decode, encode

logging.getLogger("scapy").setLevel(logging.ERROR)
dhcp_layer = pytest.importorskip("scapy.layers.dhcp")
BOOTP, DHCP, DHCPOptions = dhcp_layer.BOOTP, dhcp_layer.DHCP, dhcp_layer.DHCPOptions

#: Scapy field class name -> size of one element; None: the whole value is one element.
ELEMENT_SIZES: dict[str, int | None] = {
    "IPField": 4, "IntField": 4, "ShortField": 2, "ByteField": 1, "ByteEnumField": 1,
    "_DHCPByteFieldListField": None, "StrField": None,
}
#: 52 is overload (not an option to scapy's reader); 121's classless routes need a valid layout.
EXCLUDED = {0, 52, 121, 255}


def field_kind(code: int) -> str:
    spec = DHCPOptions.get(code)
    return "raw" if spec is None or isinstance(spec, str) else type(spec).__name__


SUPPORTED = [
    c for c in range(1, 255) if c not in EXCLUDED and field_kind(c) in {"raw", *ELEMENT_SIZES}
]


def typed(code: int, value: bytes) -> tuple[Any, ...]:
    """Our raw value in the shape of scapy's parsed option tuple (without its name)."""
    kind = field_kind(code)
    if kind in ("raw", "StrField"):
        return (value,)
    if kind == "_DHCPByteFieldListField":
        return (list(value),)
    size = ELEMENT_SIZES[kind]
    assert size is not None
    chunks = [value[i : i + size] for i in range(0, len(value), size)]
    if kind == "IPField":
        return tuple(str(IPv4Address(chunk)) for chunk in chunks)
    return tuple(int.from_bytes(chunk, "big") for chunk in chunks)


@st.composite
def scapy_options(draw: st.DrawFn) -> tuple[tuple[int, bytes], ...]:
    codes = draw(st.lists(st.sampled_from(SUPPORTED), unique=True, max_size=12))
    options = []
    for code in codes:
        kind = field_kind(code)
        size = ELEMENT_SIZES.get(kind)
        if size is None:
            least = 1 if kind == "_DHCPByteFieldListField" else 0
            value = draw(st.binary(min_size=least, max_size=255))
        else:
            value = draw(st.binary(min_size=size, max_size=size * (255 // size)).map(
                lambda v, s=size: v[: len(v) - len(v) % s]))
        options.append((code, value))
    return tuple(options)


@st.composite
def scapy_messages(draw: st.DrawFn) -> DhcpMessage:
    return draw(messages(max_options=0, allow_vendor=False)).replace(options=draw(scapy_options()))


def scapy_option_list(packet: Any) -> list[tuple[int, tuple[Any, ...]]]:
    """Scapy's parsed options as (code, typed values), pads and end dropped."""
    reverse = {name: code for code, name in
               ((c, s if isinstance(s, str) else s.name) for c, s in DHCPOptions.items())}
    out = []
    for item in packet[DHCP].options:
        if item in ("pad", "end"):
            continue
        assert isinstance(item, tuple), f"scapy could not parse options at {item!r}"
        name, *values = item
        out.append((name if isinstance(name, int) else reverse[name], tuple(values)))
    return out


def assert_same_header(msg: DhcpMessage, packet: Any) -> None:
    bootp = packet[BOOTP]
    assert [bootp.op, bootp.htype, bootp.hlen] == [msg.op, msg.htype, msg.hlen]
    assert bootp.hops == msg.hops
    assert (bootp.xid, bootp.secs, int(bootp.flags)) == (msg.xid, msg.secs, msg.flags)
    assert [bootp.ciaddr, bootp.yiaddr, bootp.siaddr, bootp.giaddr] == [
        str(a) for a in (msg.ciaddr, msg.yiaddr, msg.siaddr, msg.giaddr)
    ]
    assert bootp.chaddr == msg.chaddr.ljust(16, b"\0")
    assert bootp.sname.rstrip(b"\0") == msg.sname and bootp.file.rstrip(b"\0") == msg.file


def assert_scapy_agrees(msg: DhcpMessage, data: bytes) -> None:
    packet = BOOTP(data)
    assert_same_header(msg, packet)
    assert packet.options[:4] == MAGIC_COOKIE
    assert scapy_option_list(packet) == [(code, typed(code, value)) for code, value in msg.options]


@PROPERTY
@given(scapy_messages())
def test_scapy_parses_our_encoding_to_the_same_message(msg: DhcpMessage) -> None:
    assert_scapy_agrees(msg, encode(msg))


@PROPERTY
@given(scapy_messages())
def test_we_decode_packets_built_by_scapy(msg: DhcpMessage) -> None:
    options = [(DHCPOptions[code] if isinstance(DHCPOptions.get(code), str) else
                getattr(DHCPOptions.get(code), "name", code), *typed(code, value))
               for code, value in msg.options]
    packet = BOOTP(
        op=msg.op, htype=msg.htype, hlen=msg.hlen, hops=msg.hops, xid=msg.xid, secs=msg.secs,
        flags=msg.flags, ciaddr=str(msg.ciaddr), yiaddr=str(msg.yiaddr), siaddr=str(msg.siaddr),
        giaddr=str(msg.giaddr), chaddr=msg.chaddr, sname=msg.sname, file=msg.file,
    ) / DHCP(options=[*options, "end"])
    assert decode(bytes(packet)) == msg


def test_scapy_agrees_on_relay_agent_information() -> None:
    value = (
        b"\x01\x04eth1\x02\x03abc\x05\x04\x0a\x1f\x02\x00\x0a\x01\x80"
        b"\x0b\x04\x0a\x1f\x02\x01\x99\x00"
    )
    msg = DhcpMessage(1, 42, options=((Opt.MESSAGE_TYPE, b"\x01"), (Opt.RELAY_AGENT_INFO, value)))
    assert_scapy_agrees(msg, encode(msg))
    assert BOOTP(encode(msg))[DHCP].options[1] == ("relay_agent_information", value)
