"""The BOOTP/DHCP message (RFC 951, RFC 2131 §2) and its codec.

Options are held as an ordered tuple of ``(code, value)`` after RFC 3396 concatenation of the
options field, then ``file`` and ``sname`` when option 52 overloads them (RFC 2131 §4.1).
Unknown options are kept as raw bytes, in order, and re-emitted unchanged.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterable
from ipaddress import IPv4Address
from typing import Any

from .codes import (
    BOOTP_HEADER_SIZE,
    BOOTP_MIN_SIZE,
    BROADCAST_FLAG,
    MAGIC_COOKIE,
    MessageType,
    Opt,
)
from .errors import CapacityError, FieldError, TruncatedError
from .options import Option, concatenate, encode_tlv, option_offset, read_tlvs, scan_tlvs, tlv_size

ZERO = IPv4Address(0)
#: Largest DHCP message that fits an Ethernet frame in one IPv4/UDP datagram.
ETHERNET_MAX_MESSAGE = 1500 - 20 - 8
_SNAME_OFFSET = 44
_FILE_OFFSET = 108
_OPTIONS_OFFSET = BOOTP_HEADER_SIZE + len(MAGIC_COOKIE)
_OVERLOAD_FILE = 1
_OVERLOAD_SNAME = 2


@dataclasses.dataclass(slots=True, unsafe_hash=True)
class DhcpMessage:
    """One decoded message: a value, never changed (``replace`` makes the changed copy).

    Not frozen, but hashed by value all the same: a frozen dataclass sets each field through
    ``object.__setattr__``, 2 µs against 0.2 for the sixteen fields here, paid for every packet
    decoded (as ``Datagram``).

    ``vendor`` is the RFC 951 vendor area when there is no magic cookie (None when there is one).
    ``sname``, ``file`` and ``vendor`` are fixed-size, NUL-padded fields on the wire: they are held
    with trailing NULs stripped, so that a decoded message re-encodes to the same message.
    """

    op: int
    xid: int
    chaddr: bytes = bytes(16)
    htype: int = 1
    hlen: int = 6
    hops: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: IPv4Address = ZERO
    yiaddr: IPv4Address = ZERO
    siaddr: IPv4Address = ZERO
    giaddr: IPv4Address = ZERO
    sname: bytes = b""
    file: bytes = b""
    options: tuple[Option, ...] = ()
    vendor: bytes | None = None

    # -- convenience accessors -------------------------------------------------------------
    def get(self, code: int) -> bytes | None:
        for option_code, value in self.options:
            if option_code == code:
                return value
        return None

    def has(self, code: int) -> bool:
        for option_code, _ in self.options:  # noqa: SIM110 - any() builds a generator per call
            if option_code == code:
                return True
        return False

    @property
    def message_type(self) -> int | None:
        """The DHCP message type (option 53), or None for a plain BOOTP message."""
        return message_type_of(self.get(Opt.MESSAGE_TYPE))

    @property
    def is_dhcp(self) -> bool:
        return self.message_type is not None

    @property
    def broadcast(self) -> bool:
        return bool(self.flags & BROADCAST_FLAG)

    @property
    def hardware_address(self) -> bytes:
        return self.chaddr[: min(self.hlen, 16)]

    @property
    def mac(self) -> str:
        return self.hardware_address.hex(":")

    def replace(self, **changes: Any) -> DhcpMessage:
        return dataclasses.replace(self, **changes)

    def with_option(self, code: int, value: bytes) -> DhcpMessage:
        """Set an option: replaces it in place if present, else appends it."""
        if self.has(code):
            options = tuple((c, value if c == code else v) for c, v in self.options)
        else:
            options = (*self.options, (code, value))
        return dataclasses.replace(self, options=options)

    def without_option(self, code: int) -> DhcpMessage:
        return dataclasses.replace(
            self, options=tuple((c, v) for c, v in self.options if c != code)
        )


#: The message types by number: an Enum lookup by value is a Python-level call, and the type is
#: read several times per relayed packet.
_MESSAGE_TYPES = {kind.value: kind for kind in MessageType}


def message_type_of(value: bytes | None) -> int | None:
    """The message type an option 53 value says (a MessageType, or the number if unknown), or
    None (absent, or not one octet: a plain BOOTP message)."""
    if value is None or len(value) != 1:
        return None
    return _MESSAGE_TYPES.get(value[0], value[0])


_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
_ZERO_PACKED = bytes(4)
_ADDRESSES: dict[str | bytes, IPv4Address] = {}


class _HashedAddress(IPv4Address):
    """An IPv4Address that computes its hash and its packed form once. ``IPv4Address.__hash__``
    formats the address as hexadecimal text and hashes that, per call, and the relay hashes the
    same few addresses several times per packet (counters per helper, reply tracking, interface
    lookups); ``packed`` is a property calling a function (two Python calls), read for the giaddr
    of every server reply. Equal to, and hashed as, the IPv4Address of the same value."""

    #: ``packed`` as a slot: it shadows ``IPv4Address.packed``, the property.
    __slots__ = ("_hash", "packed")

    def __init__(self, address: str | bytes) -> None:
        super().__init__(address)
        self._hash = IPv4Address.__hash__(self)
        object.__setattr__(self, "packed", super().packed)  # the slot (mypy sees the property)

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"IPv4Address({str(self)!r})"


def address_of(key: str | bytes) -> IPv4Address:
    """IPv4Address of a dotted quad or 4 packed bytes, memoized: ``IPv4Address()`` is Python and
    costs more than the relay engine's whole decision, and a daemon sees few distinct addresses
    (giaddr, its own, its peers'); the same object each time also makes comparisons identity."""
    address = _ADDRESSES.get(key)
    if address is None:
        if len(_ADDRESSES) >= 4096:  # bounded: addresses are chosen by remote parties
            _ADDRESSES.clear()
        address = _ADDRESSES[key] = _HashedAddress(key)
    return address


def decode(data: bytes) -> DhcpMessage:
    """Decode a BOOTP/DHCP message. Raises only WireError subclasses."""
    return _decoded(data if type(data) is bytes else bytes(data), False)[0]


def decode_options(data: bytes) -> tuple[DhcpMessage, dict[int, bytes]]:
    """``decode``, and the message's options by code (what a server reads them by): the dict the
    decoder builds anyway, not a second one made from ``options``."""
    # bytes() of bytes is the same object, but a call through the type: a receive gives bytes.
    msg, _, by_code = _decoded(data if type(data) is bytes else bytes(data), False)
    return msg, by_code


def _decode(data: bytes) -> tuple[DhcpMessage, int]:
    """The message, and the offset of its END option when ``data`` is ``encode(message)`` but
    for, perhaps, the zeros that pad it to 300 bytes (else -1: pad options, repeated or
    overloaded options, data after END, no magic cookie...)."""
    msg, exact, _ = _decoded(data, True)
    return msg, exact


#: sname and file when unused: compared whole (one memcmp), where ``rstrip`` looks every NUL up
#: in its strip set (11k instructions per DORA in the server).
_EMPTY_SNAME, _EMPTY_FILE = bytes(64), bytes(128)


def _decoded(data: bytes, exact_wanted: bool, in_place: bool = True
             ) -> tuple[DhcpMessage, int, dict[int, bytes]]:
    """``_decode``, and the options by code; the END offset is worked out only if
    ``exact_wanted`` (else -1).

    ``in_place``: the options field of the usual message (each code once, no pad before END, no
    option 52) is read in one pass over ``data`` into the dict by code, without the list of
    TLVs, the copy of the area and the call ``scan_tlvs`` takes (a server's DISCOVER and
    REQUEST: 49k -> 43k instructions); anything else leaves that pass for the general one
    below, which is the specification (False: the general pass alone; a property test holds
    both equal)."""
    if len(data) < BOOTP_HEADER_SIZE:
        raise TruncatedError(
            f"message is {len(data)} bytes, a BOOTP header needs {BOOTP_HEADER_SIZE}", len(data)
        )
    (op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname_raw,
     file_raw) = _HEADER.unpack_from(data)
    if op != 1 and op != 2:  # Op.BOOTREQUEST, Op.BOOTREPLY
        raise FieldError(f"op {op} is neither BOOTREQUEST nor BOOTREPLY", 0)
    if hlen > 16:
        raise FieldError(f"hlen {hlen} exceeds the 16-byte chaddr", 2)
    # A client's address (ciaddr, yiaddr): a new object but for 0.0.0.0 (a memo of per-client
    # addresses would only miss); a server's or relay's (siaddr, giaddr): few, so
    # ``address_of``'s memo. Inline: four calls per message otherwise.
    zero = _ZERO_PACKED
    client = ZERO if ciaddr == zero else IPv4Address(ciaddr)
    yours = ZERO if yiaddr == zero else IPv4Address(yiaddr)
    server = ZERO if siaddr == zero else address_of(siaddr)
    relay = ZERO if giaddr == zero else address_of(giaddr)
    sname = b"" if sname_raw == _EMPTY_SNAME else sname_raw.rstrip(b"\0")
    file = b"" if file_raw == _EMPTY_FILE else file_raw.rstrip(b"\0")
    if data[BOOTP_HEADER_SIZE:_OPTIONS_OFFSET] != MAGIC_COOKIE:
        rest = data[BOOTP_HEADER_SIZE:]
        return DhcpMessage(
            op, xid, chaddr, htype, hlen, hops, secs, flags, client, yours, server, relay, sname,
            file, (), rest.rstrip(b"\0"),
        ), -1, {}
    by_code: dict[int, bytes] = {}
    if in_place:
        size = len(data)
        position = _OPTIONS_OFFSET
        while position < size:
            code = data[position]
            if code == 255:  # Opt.END
                # encode() pads with zeros to BOOTP's 300 bytes, and never further; senders
                # that do not pad (Kea's replies) differ from it only by that padding.
                exact = position if (exact_wanted and size <= max(position + 1, BOOTP_MIN_SIZE)
                                     and data.count(0, position + 1) == size - position - 1
                                     ) else -1
                return DhcpMessage(
                    op, xid, chaddr, htype, hlen, hops, secs, flags, client, yours, server,
                    relay, sname, file, tuple(by_code.items()), None,
                ), exact, by_code
            # PAD, option 52, a repeated code, a length or value cut short: the general pass.
            if code == 0 or code == 52 or code in by_code or position + 1 == size:
                break
            start = position + 2
            position = start + data[position + 1]
            if position > size:
                break
            by_code[code] = data[start:position]
    area = data[_OPTIONS_OFFSET:]
    tlvs, end, padded = scan_tlvs(area, _OPTIONS_OFFSET, "options")
    # RFC 2131 §4.1: "the 'option overload' option MUST appear in the 'options' field", so
    # only the options field is searched for it; a 52 found in file or sname is ignored.
    found = len(tlvs)
    # Each code once and no overload (most messages): the options as read, no loop in Python.
    by_code = dict(tlvs)
    overload = seen = 0
    if 52 in by_code:  # Opt.OVERLOAD
        for code, value in tlvs:
            if code == 52:
                if len(value) != 1 or value[0] not in (1, 2, 3):
                    raise FieldError(f"option overload value {value.hex()} is not 1, 2 or 3",
                                     option_offset(area, _OPTIONS_OFFSET, 52, seen))
                overload = value[0]
                seen += 1
    # RFC 2131 §4.1: the options field first, then 'file', then 'sname'.
    if overload & _OVERLOAD_FILE:
        tlvs += read_tlvs(file_raw, _FILE_OFFSET, "file (overloaded)")[0]
        file = b""
    if overload & _OVERLOAD_SNAME:
        tlvs += read_tlvs(sname_raw, _SNAME_OFFSET, "sname (overloaded)")[0]
        sname = b""
    if overload:
        options = tuple(o for o in concatenate(tlvs) if o[0] != 52)
        by_code = dict(options)
    elif len(by_code) == found:
        options = tuple(tlvs)
    else:
        options = tuple(concatenate(tlvs))
        by_code = dict(options)
    exact = -1
    if exact_wanted and end >= 0 and not padded and not overload and len(options) == found:
        end += _OPTIONS_OFFSET
        # As above: encode() pads to 300 bytes and never further.
        padding = len(data) - end - 1
        if len(data) <= max(end + 1, BOOTP_MIN_SIZE) and data.count(0, end + 1) == padding:
            exact = end
    return DhcpMessage(
        op, xid, chaddr, htype, hlen, hops, secs, flags, client, yours, server, relay, sname,
        file, options, None,
    ), exact, by_code


def _header(msg: DhcpMessage, sname: bytes, file: bytes) -> bytes:
    for name, number in (("op", msg.op), ("htype", msg.htype), ("hlen", msg.hlen),
                         ("hops", msg.hops)):
        if not 0 <= number <= 255:
            raise FieldError(f"{name} {number} does not fit one byte")
    if not (0 <= msg.xid <= 0xFFFFFFFF and 0 <= msg.secs <= 0xFFFF and 0 <= msg.flags <= 0xFFFF):
        raise FieldError("xid, secs or flags out of range")
    for name, value, size in (("chaddr", msg.chaddr, 16), ("sname", sname, 64),
                              ("file", file, 128)):
        if len(value) > size:
            raise FieldError(f"{name} is {len(value)} bytes, the field holds {size}")
    # struct pads the fixed-size fields with NULs.
    return _HEADER.pack(
        msg.op, msg.htype, msg.hlen, msg.hops, msg.xid, msg.secs, msg.flags, msg.ciaddr.packed,
        msg.yiaddr.packed, msg.siaddr.packed, msg.giaddr.packed, msg.chaddr, sname, file,
    )


def _pack_area(chunks: list[bytes], room: int) -> tuple[bytes, int]:
    """Greedily take whole TLV chunks that fit in ``room`` bytes; returns bytes and how many."""
    if sum(map(len, chunks)) <= room:
        return b"".join(chunks), len(chunks)
    out = bytearray()
    index = 0
    while index < len(chunks) and len(out) + len(chunks[index]) <= room:
        out += chunks[index]
        index += 1
    return bytes(out), index


def _pack_overloaded(options: list[Option], rooms: list[int]) -> list[bytes] | None:
    """Fill the option areas in order (options field, then file, then sname); None if they overflow.

    A short option moves whole to the next area when it fits there; otherwise it is split over
    the areas (RFC 3396 §5 allows any option to be split; the receiver concatenates them in the
    order of RFC 2131 §4.1, which is this order).
    """
    areas = [bytearray() for _ in rooms]
    index = 0
    for code, value in options:
        position = 0
        while True:
            if index == len(rooms):
                return None
            free = rooms[index] - len(areas[index])
            rest = len(value) - position
            if not value:
                if free >= 2:
                    areas[index] += bytes((code, 0))
                    break
                index += 1
                continue
            later = rooms[index + 1 :]
            fits_later = position == 0 and rest <= 255 and any(r >= rest + 2 for r in later)
            if free < 3 or (free < rest + 2 and fits_later):
                index += 1
                continue
            size = min(255, free - 2, rest)
            areas[index] += bytes((code, size)) + value[position : position + size]
            position += size
            if position == len(value):
                break
    return [bytes(area) for area in areas]


def encode(msg: DhcpMessage, capacity: int = ETHERNET_MAX_MESSAGE) -> bytes:
    """Encode a message of at most ``capacity`` bytes, padded to BOOTP's 300-byte minimum.

    Options go in the options field; only when they do not fit there are ``file`` and/or
    ``sname`` overloaded (option 52), and only those that are empty. Raises CapacityError when
    the message cannot fit.
    """
    if msg.vendor is not None:
        if msg.options:
            raise FieldError("a BOOTP message with a raw vendor area cannot carry DHCP options")
        if msg.vendor.startswith(MAGIC_COOKIE):
            raise FieldError("a raw vendor area must not start with the magic cookie")
        body = _header(msg, msg.sname, msg.file) + msg.vendor
        if len(body) > max(capacity, BOOTP_MIN_SIZE):
            raise CapacityError(f"message would be {len(body)} bytes, capacity {capacity}")
        return body.ljust(BOOTP_MIN_SIZE, b"\0")
    options = [o for o in msg.options if o[0] != Opt.OVERLOAD]
    chunks = _option_chunks(options)
    room = capacity - _OPTIONS_OFFSET - 1
    options_area, used = _pack_area(chunks, room)
    sname, file = msg.sname, msg.file
    if used < len(chunks):
        # RFC 2131 §4.1: file and sname carry options only when option 52 says so; only the
        # empty ones can. 3 bytes for option 52 itself; 1 byte for END in each area.
        rooms = [room - 3] + ([127] if not msg.file else []) + ([63] if not msg.sname else [])
        areas = _pack_overloaded(options, rooms)
        if areas is None:
            raise CapacityError(
                f"options need {sum(map(len, chunks))} bytes, more than fit in {capacity}"
                " with file/sname overloaded where free"
            )
        options_area, *spare = areas
        file_area = b"" if msg.file else spare.pop(0)
        sname_area = b"" if msg.sname else spare.pop(0)
        flag = (_OVERLOAD_FILE if file_area else 0) | (_OVERLOAD_SNAME if sname_area else 0)
        options_area = encode_tlv(Opt.OVERLOAD, bytes((flag,))) + options_area
        if file_area:
            file = file_area + b"\xff"
        if sname_area:
            sname = sname_area + b"\xff"
    # The options area was sized to leave room for END within the capacity.
    body = b"".join((_header(msg, sname, file), MAGIC_COOKIE, options_area, b"\xff"))
    return body.ljust(BOOTP_MIN_SIZE, b"\0")


def _option_chunks(options: Iterable[Option]) -> list[bytes]:
    chunks: list[bytes] = []
    for code, value in options:
        encoded = encode_tlv(code, value)
        if len(encoded) <= 257:
            chunks.append(encoded)
        else:
            chunks.extend(encoded[i : i + 257] for i in range(0, len(encoded), 257))
    return chunks


def encoded_size(msg: DhcpMessage) -> int:
    """Size of ``encode(msg)`` without overload, before padding to the BOOTP minimum."""
    if msg.vendor is not None:
        return BOOTP_HEADER_SIZE + len(msg.vendor)
    return _OPTIONS_OFFSET + 1 + sum(tlv_size(len(v)) for c, v in msg.options if c != Opt.OVERLOAD)
