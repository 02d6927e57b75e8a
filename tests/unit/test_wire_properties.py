"""Property tests of the wire codec (hypothesis).

1. decode(encode(m)) == m for generated valid messages, with and without forced overload.
2. decode raises only WireError (or returns a message) on arbitrary bytes, on hand-shaped option
   areas (pads, repeats, option 52, garbage after END) and on mutations of real encoded messages.
3. Whatever decode accepts re-encodes to bytes that decode to the same message, and
   decode_options gives that message with its options by code (after RFC 3396 concatenation).

``messages()`` is also used by test_wire_scapy.py.
"""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from boothop.relay.wire import (
    MAGIC_COOKIE,
    CapacityError,
    DhcpMessage,
    Opt,
    WireError,
    address_of,
    decode,
    decode_options,
    encode,
    encoded_size,
)
from boothop.relay.wire.message import _decoded

#: Large enough for anything the strategies build: properties 1 and 3 are about format, not size.
BIG = 1 << 16
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: For the cheap decode-only properties: more examples for the same time.
FUZZ = settings(PROPERTY, max_examples=1000)

addresses = st.integers(0, 0xFFFFFFFF).map(IPv4Address)
option_codes = st.integers(1, 254).filter(lambda code: code != Opt.OVERLOAD)
#: Mostly short values, sometimes long enough to need RFC 3396 splitting.
option_values = st.one_of(
    st.binary(max_size=16), st.binary(max_size=80), st.binary(min_size=250, max_size=600)
)


def stripped(size: int) -> st.SearchStrategy[bytes]:
    """A fixed NUL-padded field as DhcpMessage holds it: no trailing NULs."""
    return st.binary(max_size=size).map(lambda value: value.rstrip(b"\0"))


@st.composite
def messages(
    draw: st.DrawFn,
    max_options: int = 12,
    min_options: int = 0,
    allow_vendor: bool = True,
    values: st.SearchStrategy[bytes] = option_values,
    names: st.SearchStrategy[bool] = st.booleans(),
) -> DhcpMessage:
    """Valid messages; ``names``: may sname/file be set (only empty ones can be overloaded)."""
    vendor = None
    options: tuple[tuple[int, bytes], ...] = ()
    if allow_vendor and draw(st.integers(0, 9)) == 0:
        vendor = draw(stripped(200).filter(lambda value: not value.startswith(MAGIC_COOKIE)))
    else:
        codes = draw(
            st.lists(option_codes, unique=True, min_size=min_options, max_size=max_options)
        )
        options = tuple((code, draw(values)) for code in codes)
    with_names = draw(names)
    return DhcpMessage(
        op=draw(st.sampled_from((1, 2))),
        xid=draw(st.integers(0, 0xFFFFFFFF)),
        chaddr=draw(st.binary(min_size=16, max_size=16)),
        htype=draw(st.integers(0, 255)),
        hlen=draw(st.integers(0, 16)),
        hops=draw(st.integers(0, 255)),
        secs=draw(st.integers(0, 0xFFFF)),
        flags=draw(st.integers(0, 0xFFFF)),
        ciaddr=draw(addresses),
        yiaddr=draw(addresses),
        siaddr=draw(addresses),
        giaddr=draw(addresses),
        sname=draw(stripped(64)) if with_names else b"",
        file=draw(stripped(128)) if with_names else b"",
        options=options,
        vendor=vendor,
    )


@PROPERTY
@given(messages())
def test_decode_inverts_encode(msg: DhcpMessage) -> None:
    assert decode(encode(msg, capacity=BIG)) == msg


@PROPERTY
@given(messages(allow_vendor=False), st.integers(300, 700))
def test_decode_inverts_encode_with_overload_or_capacity_error(
    msg: DhcpMessage, capacity: int
) -> None:
    try:
        data = encode(msg, capacity=capacity)
    except CapacityError:
        assert encoded_size(msg) > capacity
        return
    assert len(data) <= capacity
    assert decode(data) == msg


@PROPERTY
@given(
    messages(
        min_options=3, max_options=16, allow_vendor=False, values=st.binary(max_size=30),
        names=st.just(False),
    ),
    st.integers(300, 400),
)
def test_rfc2131_4_1_overloaded_options_decode_to_the_message(
    msg: DhcpMessage, capacity: int
) -> None:
    """Option 52 moves options into file and sname; the decoder reads them back in order."""
    try:
        data = encode(msg, capacity=capacity)
    except CapacityError:
        assert encoded_size(msg) > capacity
        return
    assert (data[240] == Opt.OVERLOAD) == (encoded_size(msg) > capacity)
    assert decode(data) == msg


def check_decode(data: bytes) -> None:
    """Decode raises only WireError; what it accepts re-encodes to the same message. The
    decoder's in-place pass over the usual options field gives what the general pass gives
    (the message, the END offset ``Frame`` patches at, the options by code) or leaves to it."""
    try:
        msg = decode(data)
    except WireError as error:
        assert error.offset is None or 0 <= error.offset <= len(data)
        with pytest.raises(WireError):
            _decoded(data, True, in_place=False)
        return
    assert decode(encode(msg, capacity=BIG)) == msg
    assert decode_options(data) == (msg, dict(msg.options))
    assert _decoded(data, True) == _decoded(data, True, in_place=False)


@FUZZ
@given(st.binary(max_size=700))
def test_decode_of_arbitrary_bytes(data: bytes) -> None:
    check_decode(data)


@st.composite
def option_areas(draw: st.DrawFn, size: int) -> bytes:
    """Raw TLVs with pads, repeated codes, option 52 of any value, END and garbage after it."""
    out = bytearray()
    for _ in range(draw(st.integers(0, 12))):
        code = draw(st.one_of(st.sampled_from((0, 52, 53, 82, 200, 255)), st.integers(0, 255)))
        if code in (0, 255):
            out.append(code)
        else:
            value = draw(st.binary(max_size=6)) if code == 52 else draw(st.binary(max_size=40))
            out += bytes((code, len(value))) + value
    out += draw(st.binary(max_size=8))
    return bytes(out[:size]) if size else bytes(out)


@PROPERTY
@given(
    st.sampled_from((1, 2, 3)),
    st.integers(0, 17),
    option_areas(0),
    option_areas(64),
    option_areas(128),
    st.booleans(),
)
def test_decode_of_hand_shaped_option_areas(
    op: int, hlen: int, options: bytes, sname: bytes, file: bytes, cookie: bool
) -> None:
    data = (
        bytes((op, 1, hlen, 0)) + bytes(24) + bytes(16) + sname.ljust(64, b"\0")
        + file.ljust(128, b"\0") + (MAGIC_COOKIE if cookie else b"") + options
    )
    check_decode(data)


@st.composite
def mutated_packets(draw: st.DrawFn) -> bytes:
    """A valid encoded message (maybe overloaded) with bytes replaced, cut, inserted or deleted."""
    msg = draw(messages(max_options=6))
    try:
        data = bytearray(encode(msg, capacity=draw(st.sampled_from((300, 400, 576, BIG)))))
    except CapacityError:
        data = bytearray(encode(msg, capacity=BIG))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(("replace", "replace", "cut", "insert", "delete")))
        index = draw(st.integers(0, max(len(data) - 1, 0)))
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
@given(mutated_packets())
def test_decode_of_mutated_real_packets(data: bytes) -> None:
    check_decode(data)


@given(addresses, st.booleans())
@FUZZ
def test_memoized_addresses_are_the_ipaddress_of_their_value(plain: IPv4Address,
                                                              as_text: bool) -> None:
    """``address_of``'s objects keep their hash and packed form: both as ``ipaddress`` says."""
    memoized = address_of(str(plain) if as_text else plain.packed)
    assert memoized == plain and plain == memoized
    assert hash(memoized) == hash(plain)
    assert memoized.packed == plain.packed and int(memoized) == int(plain)
    assert str(memoized) == str(plain)
