"""The relay's fast re-encoding (relay.wire.Frame) is byte for byte the slow path it replaces.

``Frame`` patches the received bytes (hops, giaddr, option 82) instead of decoding, editing and
encoding again. Every property here compares it with decode -> edit -> encode: on generated valid
messages (padded as ``encode`` pads, unpadded as Kea sends, with pad options and repeated options
that make the bytes non-canonical), on the real captures, and on arbitrary bytes. Both paths must
give the same bytes or raise the same kind of WireError.
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_wire_properties import BIG, FUZZ, PROPERTY, addresses, messages

from boothop.relay.wire import (
    MAGIC_COOKIE,
    DhcpMessage,
    Frame,
    Opt,
    WireError,
    decode,
    encode,
    encoded_size,
)

CAPTURES = Path(__file__).parent / "captures"
AGENT = Opt.RELAY_AGENT_INFO
#: Capacities around the sizes that matter: BOOTP's 300, dhcrelay's 576, Ethernet's 1472.
capacities = st.sampled_from((240, 300, 320, 576, 1472, BIG))
agent_values = st.one_of(st.none(), st.binary(max_size=40), st.binary(min_size=250, max_size=300))


def same(fast: Callable[[], object], slow: Callable[[], object]) -> None:
    """Equal results, or the same WireError subclass from both."""
    try:
        expected: object = slow()
    except WireError as error:
        with pytest.raises(type(error)):
            fast()
        return
    assert fast() == expected


def relayed_slow(msg: DhcpMessage, hops: int, giaddr: IPv4Address, agent: bytes | None,
                 capacity: int) -> bytes:
    edited = msg.replace(hops=hops, giaddr=giaddr)
    if agent is not None:
        edited = edited.without_option(AGENT).with_option(AGENT, agent)
    return encode(edited, capacity)


def check_frame(data: bytes, hops: int, giaddr: IPv4Address, agent: bytes | None,
                capacity: int) -> None:
    try:
        msg = decode(data)
    except WireError as error:
        with pytest.raises(type(error)):
            Frame(data)
        return
    frame = Frame(data)
    assert frame.message == msg
    if frame.exact:
        assert encode(msg, BIG) == data.ljust(300, b"\0")
    same(lambda: frame.relayed(hops, giaddr, agent, capacity),
         lambda: relayed_slow(msg, hops, giaddr, agent, capacity))
    same(lambda: frame.without_option(AGENT, capacity),
         lambda: encode(msg.without_option(AGENT), capacity))
    same(lambda: frame.encoded(capacity), lambda: encode(msg, capacity))
    if agent is not None:
        assert frame.size_with_agent_info(agent) == encoded_size(
            msg.without_option(AGENT).with_option(AGENT, agent))


def unpadded(data: bytes) -> bytes:
    """The message as a sender that does not pad to 300 bytes sends it (Kea's replies)."""
    return data.rstrip(b"\0") if data[236:240] == MAGIC_COOKIE else data


@st.composite
def encodings(draw: st.DrawFn) -> bytes:
    """Encoded valid messages, some unpadded, some made non-canonical by hand."""
    msg = draw(messages(max_options=8))
    data = encode(msg, BIG)
    change = draw(st.sampled_from(("none", "unpad", "zeros", "pad-option", "repeat", "trailer")))
    if msg.vendor is not None or change == "none":
        return data
    if change == "unpad":
        return unpadded(data)
    if change == "zeros":  # more zeros after END than encode's padding to 300 bytes
        return data + bytes(draw(st.integers(1, 80)))
    body = data[: encoded_size(msg) - 1]  # without END and padding
    if change == "pad-option":
        return body + b"\0\xff"
    if change == "repeat":
        return body + b"\xfa\x01a\xfa\x01b\xff"
    return body + b"\xff\0\0junk"


@PROPERTY
@given(encodings(), st.integers(0, 256), addresses, agent_values, capacities)
def test_frame_equals_decode_edit_encode_on_valid_messages(
    data: bytes, hops: int, giaddr: IPv4Address, agent: bytes | None, capacity: int
) -> None:
    check_frame(data, hops, giaddr, agent, capacity)


@PROPERTY
@given(messages(max_options=8))
def test_canonical_encodings_take_the_fast_path(msg: DhcpMessage) -> None:
    data = encode(msg, BIG)
    if msg.vendor is None and encoded_size(msg) <= len(data) and all(
        len(value) <= 255 for _, value in msg.options
    ):
        assert Frame(data).exact
        assert Frame(unpadded(data)).exact


@FUZZ
@given(st.booleans(), st.binary(max_size=400), st.integers(0, 20), addresses, agent_values,
       capacities)
def test_frame_equals_decode_edit_encode_on_arbitrary_bytes(
    header: bool, data: bytes, hops: int, giaddr: IPv4Address, agent: bytes | None,
    capacity: int
) -> None:
    if header:  # a valid header and cookie: the option area is the arbitrary part
        data = b"\x02\x01\x06\x00" + bytes(232) + MAGIC_COOKIE + data
    check_frame(data, hops, giaddr, agent, capacity)


@pytest.mark.parametrize("path", sorted(CAPTURES.glob("*.bin")), ids=lambda p: p.stem)
def test_frame_equals_decode_edit_encode_on_captures(path: Path) -> None:
    data = path.read_bytes()
    for agent in (None, b"\x01\x05lanc0", bytes(300)):
        for capacity in (300, 576, 1472):
            check_frame(data, 1, IPv4Address("10.45.128.1"), agent, capacity)
            check_frame(unpadded(data), 1, IPv4Address("10.45.128.1"), agent, capacity)
    assert Frame(data).exact or Frame(unpadded(data)).exact, "real clients send canonical bytes"
