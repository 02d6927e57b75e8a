"""Property tests of the DHCPv6 codec (hypothesis), and its RFC 8415 layouts by hand.

1. decode6(encode6(m)) == m for generated messages of both formats, nested relays included, and
   decode(encode(v)) == v for every typed option value.
2. decode6 and every typed decoder raise only WireError (or return) on arbitrary bytes and on
   mutations of real encoded messages; what they accept re-encodes to the same bytes.

The strategies are also used by test_wire6_scapy.py and the relay engine's tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from ipaddress import IPv6Address
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_wire_properties import FUZZ, PROPERTY

from boothop.relay.wire import TruncatedError, WireError
from boothop.relay.wire import dhcpv6 as v6
from boothop.relay.wire.dhcpv6 import (
    ClientLinkLayer,
    Dhcp6Message,
    IaAddress,
    IaNa,
    IaPd,
    IaPrefix,
    IaTa,
    MessageType6,
    NetworkInterfaceId,
    Opt6,
    RelayMessage,
    RemoteId,
    StatusCode,
    VendorClass,
    VendorOpts,
    decode6,
    encode6,
)

addresses6 = st.integers(0, (1 << 128) - 1).map(IPv6Address)
u32 = st.integers(0, 0xFFFFFFFF)
option_codes6 = st.one_of(st.sampled_from(list(Opt6)), st.integers(0, 0xFFFF))
option_lists = st.lists(
    st.tuples(option_codes6, st.one_of(st.binary(max_size=24), st.binary(max_size=300))),
    max_size=8,
).map(tuple)
#: For the per-codec parametrized properties: many small cases, fewer examples each.
PER_CODEC = settings(PROPERTY, max_examples=100)
client_types = st.integers(0, 255).filter(lambda t: t not in v6.RELAY_TYPES)


def client_messages() -> st.SearchStrategy[Dhcp6Message]:
    return st.builds(Dhcp6Message, client_types, st.integers(0, 0xFFFFFF), option_lists)


def relay_messages(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[RelayMessage]:
    """Relay messages whose options hold, among others, a Relay Message option with ``inner``."""
    return st.builds(
        lambda msg_type, hops, link, peer, before, carried, after: RelayMessage(
            msg_type, hops, link, peer, (*before, (Opt6.RELAY_MSG, encode6(carried)), *after)
        ),
        st.sampled_from(sorted(v6.RELAY_TYPES)),
        st.integers(0, 255),
        addresses6,
        addresses6,
        option_lists,
        inner,
        option_lists,
    )


messages6 = st.recursive(client_messages(), relay_messages, max_leaves=4)

labels = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=63)
domain_names = st.one_of(st.just(""), st.lists(labels, min_size=1, max_size=4).map(".".join))
nested = st.lists(st.tuples(option_codes6, st.binary(max_size=20)), max_size=4).map(tuple)

#: Each typed value class with a strategy for it.
TYPED: dict[type, st.SearchStrategy[Any]] = {
    IaNa: st.builds(IaNa, u32, u32, u32, nested),
    IaPd: st.builds(IaPd, u32, u32, u32, nested),
    IaTa: st.builds(IaTa, u32, nested),
    IaAddress: st.builds(IaAddress, addresses6, u32, u32, nested),
    IaPrefix: st.builds(IaPrefix, st.integers(0, 128), addresses6, u32, u32, nested),
    StatusCode: st.builds(StatusCode, st.integers(0, 0xFFFF), st.text(max_size=40)),
    RemoteId: st.builds(RemoteId, u32, st.binary(max_size=40)),
    ClientLinkLayer: st.builds(ClientLinkLayer, st.integers(0, 0xFFFF), st.binary(max_size=20)),
    VendorClass: st.builds(VendorClass, u32, st.lists(st.binary(max_size=20)).map(tuple)),
    VendorOpts: st.builds(VendorOpts, u32, nested),
    NetworkInterfaceId: st.builds(
        NetworkInterfaceId, st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)
    ),
}

#: Each (decode, encode) function pair with a strategy for its values.
PAIRS: list[tuple[Callable[[bytes], Any], Callable[[Any], bytes], st.SearchStrategy[Any]]] = [
    (v6.decode_codes, v6.encode_codes, st.lists(st.integers(0, 0xFFFF)).map(tuple)),
    (v6.decode_addresses, v6.encode_addresses, st.lists(addresses6, max_size=5).map(tuple)),
    (v6.decode_data_list, v6.encode_data_list, st.lists(st.binary(max_size=30)).map(tuple)),
    (v6.decode_domains, v6.encode_domains, st.lists(domain_names, max_size=4).map(tuple)),
    (v6.decode_u8, lambda n: v6.encode_uint(n, 1), st.integers(0, 0xFF)),
    (v6.decode_u16, lambda n: v6.encode_uint(n, 2), st.integers(0, 0xFFFF)),
    (v6.decode_u32, lambda n: v6.encode_uint(n, 4), u32),
]


@PROPERTY
@given(messages6)
def test_decode6_inverts_encode6(message: v6.Message6) -> None:
    assert decode6(encode6(message)) == message


@PER_CODEC
@given(st.data())
@pytest.mark.parametrize("kind", list(TYPED), ids=lambda kind: kind.__name__)
def test_typed_option_decode_inverts_encode(kind: Any, data: st.DataObject) -> None:
    value = data.draw(TYPED[kind])
    code, raw = value.option()
    assert code == kind.code
    assert kind.decode(raw) == value


@PER_CODEC
@given(st.data())
@pytest.mark.parametrize("index", range(len(PAIRS)))
def test_option_value_decode_inverts_encode(index: int, data: st.DataObject) -> None:
    decoder, encoder, values = PAIRS[index]
    value = data.draw(values)
    assert decoder(encoder(value)) == value


def check_decode6(data: bytes) -> None:
    """decode6 raises only WireError; what it accepts re-encodes to the very same bytes."""
    try:
        message = decode6(data)
    except WireError as error:
        assert error.offset is None or 0 <= error.offset <= len(data)
        return
    assert encode6(message) == data
    if isinstance(message, RelayMessage):
        with contextlib.suppress(WireError):
            v6.innermost(message)


@FUZZ
@given(st.binary(max_size=200))
def test_decode6_of_arbitrary_bytes(data: bytes) -> None:
    check_decode6(data)


@st.composite
def mutated6(draw: st.DrawFn) -> bytes:
    data = bytearray(encode6(draw(messages6)))
    for _ in range(draw(st.integers(1, 5))):
        index = draw(st.integers(0, max(len(data) - 1, 0)))
        kind = draw(st.sampled_from(("replace", "cut", "insert", "delete")))
        if kind == "replace" and data:
            data[index] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[index:]
        elif kind == "insert":
            data[index:index] = draw(st.binary(min_size=1, max_size=4))
        elif data:
            del data[index]
    return bytes(data)


@FUZZ
@given(mutated6())
def test_decode6_of_mutated_messages(data: bytes) -> None:
    check_decode6(data)


DECODERS: list[Callable[[bytes], Any]] = [kind.decode for kind in TYPED] + [
    decoder for decoder, _, _ in PAIRS
]


@PER_CODEC
@given(st.binary(max_size=80))
@pytest.mark.parametrize("index", range(len(DECODERS)))
def test_typed_decoders_raise_only_wire_error(index: int, data: bytes) -> None:
    with contextlib.suppress(WireError):
        DECODERS[index](data)


# -- layouts by hand (RFC 8415 §8, §9, §21) -----------------------------------------------------


def test_client_message_layout() -> None:
    """§8: msg-type (1), transaction-id (3), then options of code (2), len (2), data."""
    data = bytes.fromhex("01abcdef" "0008" "0002" "0000" "0001" "0004" "00030001")
    message = decode6(data)
    assert message == Dhcp6Message(
        MessageType6.SOLICIT, 0xABCDEF, ((Opt6.ELAPSED_TIME, b"\0\0"), (1, b"\0\3\0\1"))
    )
    assert encode6(message) == data


def test_relay_message_layout() -> None:
    """§9: msg-type, hop-count, link-address (16), peer-address (16), options."""
    inner = bytes.fromhex("0b000001")
    data = (
        bytes((12, 3))
        + IPv6Address("2001:db8::1").packed
        + IPv6Address("fe80::2").packed
        + bytes.fromhex("0012 0002 6530".replace(" ", ""))
        + b"\x00\x09\x00\x04"
        + inner
    )
    message = decode6(data)
    assert isinstance(message, RelayMessage)
    assert (message.hop_count, message.link_address, message.peer_address) == (
        3,
        IPv6Address("2001:db8::1"),
        IPv6Address("fe80::2"),
    )
    assert message.get(Opt6.INTERFACE_ID) == b"e0"
    assert message.inner() == Dhcp6Message(MessageType6.INFORMATION_REQUEST, 1)
    assert v6.innermost(message) == message.inner()
    assert encode6(message) == data


@pytest.mark.parametrize(
    "data",
    [b"", b"\x01\x00\x00", bytes((12,)) + bytes(32), bytes.fromhex("01000000" "0001" "0005" "00")],
)
def test_truncated_messages_are_wire_errors(data: bytes) -> None:
    with pytest.raises(TruncatedError):
        decode6(data)


def test_unknown_options_are_kept_byte_for_byte() -> None:
    data = bytes.fromhex("07000001" "fffe0003616263" "0000" "0000" "1234" "0001" "ff")
    assert encode6(decode6(data)) == data


def test_relay_without_relay_message_has_no_inner_message() -> None:
    message = RelayMessage(13, 0, v6.UNSPECIFIED, v6.UNSPECIFIED)
    with pytest.raises(WireError):
        message.inner()


def test_innermost_refuses_nesting_past_the_limit() -> None:
    message: v6.Message6 = Dhcp6Message(1, 1)
    for _ in range(3):
        message = RelayMessage(12, 0, v6.UNSPECIFIED, v6.UNSPECIFIED, ((9, encode6(message)),))
    assert v6.innermost(message) == Dhcp6Message(1, 1)
    with pytest.raises(WireError):
        v6.innermost(message, limit=2)


def test_encode_refuses_out_of_range_fields() -> None:
    for message in (
        Dhcp6Message(1, 1 << 24),
        Dhcp6Message(12, 0),
        RelayMessage(1, 0, v6.UNSPECIFIED, v6.UNSPECIFIED),
        RelayMessage(12, 256, v6.UNSPECIFIED, v6.UNSPECIFIED),
        Dhcp6Message(1, 0, ((1, bytes(0x10000)),)),
    ):
        with pytest.raises(WireError):
            encode6(message)


def test_with_option_replaces_in_place_and_drops_repeats() -> None:
    message = Dhcp6Message(1, 1, ((1, b"a"), (2, b"b"), (1, b"c")))
    assert message.with_option(1, b"x").options == ((1, b"x"), (2, b"b"))
    assert message.with_option(3, b"y").options[-1] == (3, b"y")
    assert message.without_option(1).options == ((2, b"b"),)
    assert message.get_all(1) == [b"a", b"c"]


def test_duid_link_layer_of_llt_and_ll() -> None:
    mac = bytes.fromhex("525400000001")
    assert v6.duid_link_layer(b"\0\1\0\1" + bytes(4) + mac) == (1, mac)
    assert v6.duid_link_layer(b"\0\3\0\1" + mac) == (1, mac)
    assert v6.duid_link_layer(b"\0\2" + bytes(8)) is None
    assert v6.duid_link_layer(b"\0\3") is None


def test_domain_list_refuses_compression_and_unterminated_names() -> None:
    for data in (b"\xc0\x0c", b"\x03abc", b"\x03a.c\x00"):
        with pytest.raises(WireError):
            v6.decode_domains(data)
    assert v6.decode_domains(b"\x07example\x03com\x00\x00") == ("example.com", "")


def test_an_ia_prefix_longer_than_128_bits_is_refused_on_decode() -> None:
    """Found by the codec6 fuzz target: decode took prefix-length 131, which encode refuses, so
    an IA_PD echoed from such a message would have raised outside the codec's contract."""
    value = bytes(8) + bytes((131,)) + bytes(16)
    with pytest.raises(v6.FieldError, match="prefix-length 131"):
        IaPrefix.decode(value)
    assert IaPrefix.decode(bytes(8) + bytes((128,)) + bytes(16)).prefix_length == 128
