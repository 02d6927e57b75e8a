"""DHCPv6 (RFC 8415) messages and options, and their codec.

A message is held as its fixed fields and an ordered tuple of ``(code, value)`` options, values
as the raw bytes of the wire: unknown options, and known ones a reader never looks into, are
re-emitted byte for byte. Options with structure (IA_NA and its IA Address, Status Code, Vendor
Class...) have a typed view: a frozen dataclass or a function pair that decodes a raw value and
encodes it back. Every decoding failure is a WireError; nothing else escapes on any bytes.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable
from ipaddress import IPv6Address
from typing import Any, ClassVar, Self

from .errors import CapacityError, FieldError, TruncatedError

Option = tuple[int, bytes]

CLIENT_PORT_V6 = 546
SERVER_PORT_V6 = 547
#: RFC 8415 §7.1: "All_DHCP_Relay_Agents_and_Servers (ff02::1:2)", link-scoped.
ALL_RELAY_AGENTS_AND_SERVERS = IPv6Address("ff02::1:2")
#: RFC 8415 §7.1: "All_DHCP_Servers (ff05::1:3)", site-scoped: what a relay may send to.
ALL_SERVERS = IPv6Address("ff05::1:3")
UNSPECIFIED = IPv6Address(0)
#: RFC 8415 §7.6: "HOP_COUNT_LIMIT 8 Max hop count in a Relay-forward message".
HOP_COUNT_LIMIT = 8
#: The fixed part of a client/server message (type, transaction-id) and of a relay message
#: (type, hop-count, link-address, peer-address): RFC 8415 §8 and §9.
HEADER_SIZE = 4
RELAY_HEADER_SIZE = 34
#: Largest option value the 16-bit option-len can announce.
MAX_OPTION_SIZE = 0xFFFF


class MessageType6(enum.IntEnum):
    """RFC 8415 §7.3 and the IANA registry."""

    SOLICIT = 1
    ADVERTISE = 2
    REQUEST = 3
    CONFIRM = 4
    RENEW = 5
    REBIND = 6
    REPLY = 7
    RELEASE = 8
    DECLINE = 9
    RECONFIGURE = 10
    INFORMATION_REQUEST = 11
    RELAY_FORW = 12
    RELAY_REPL = 13


RELAY_TYPES = frozenset((MessageType6.RELAY_FORW, MessageType6.RELAY_REPL))


class Opt6(enum.IntEnum):
    """Option codes (RFC 8415 §21, 4649, 5970, 6939, 3646, 8357)."""

    CLIENTID = 1
    SERVERID = 2
    IA_NA = 3
    IA_TA = 4
    IAADDR = 5
    ORO = 6
    PREFERENCE = 7
    ELAPSED_TIME = 8
    RELAY_MSG = 9
    AUTH = 11
    UNICAST = 12
    STATUS_CODE = 13
    RAPID_COMMIT = 14
    USER_CLASS = 15
    VENDOR_CLASS = 16
    VENDOR_OPTS = 17
    INTERFACE_ID = 18
    RECONF_MSG = 19
    RECONF_ACCEPT = 20
    DNS_SERVERS = 23
    DOMAIN_LIST = 24
    IA_PD = 25
    IAPREFIX = 26
    INFORMATION_REFRESH_TIME = 32
    REMOTE_ID = 37
    SUBSCRIBER_ID = 38
    CLIENT_FQDN = 39
    BOOTFILE_URL = 59
    BOOTFILE_PARAM = 60
    CLIENT_ARCH_TYPE = 61
    NII = 62
    CLIENT_LINKLAYER_ADDR = 79
    SOL_MAX_RT = 82
    INF_MAX_RT = 83
    RELAY_SOURCE_PORT = 135


class Status6(enum.IntEnum):
    """RFC 8415 §21.13 status codes."""

    SUCCESS = 0
    UNSPEC_FAIL = 1
    NO_ADDRS_AVAIL = 2
    NO_BINDING = 3
    NOT_ON_LINK = 4
    USE_MULTICAST = 5
    NO_PREFIX_AVAIL = 6


class DuidType(enum.IntEnum):
    """RFC 8415 §11.1 (and RFC 6355 for UUID)."""

    LLT = 1
    EN = 2
    LL = 3
    UUID = 4


def option6_name(code: int) -> str:
    try:
        return Opt6(code).name.lower()
    except ValueError:
        return f"option6-{code}"


# -- option lists ------------------------------------------------------------------------------


def decode_options(data: bytes, base_offset: int = 0, what: str = "options") -> list[Option]:
    """RFC 8415 §21.1: options are ``option-code`` (2 octets), ``option-len`` (2 octets) and
    ``option-len`` octets of data, back to back, no padding and no end marker."""
    options: list[Option] = []
    size = len(data)
    position = 0
    while position < size:
        if position + 4 > size:
            raise TruncatedError(
                f"{what}: an option header needs 4 bytes, {size - position} left",
                base_offset + position,
            )
        code = (data[position] << 8) | data[position + 1]
        start = position + 4
        position = start + ((data[position + 2] << 8) | data[position + 3])
        if position > size:
            raise TruncatedError(
                f"{what} option {code} value: needs {position - start} bytes, {size - start} left",
                base_offset + start,
            )
        options.append((code, data[start:position]))
    return options


def encode_options(options: Iterable[Option]) -> bytes:
    out = bytearray()
    for code, value in options:
        if not 0 <= code <= 0xFFFF:
            raise FieldError(f"option code {code} out of range")
        if len(value) > MAX_OPTION_SIZE:
            raise CapacityError(f"option {code} is {len(value)} bytes, at most 65535 fit")
        out += code.to_bytes(2, "big") + len(value).to_bytes(2, "big") + value
    return bytes(out)


class _OptionAccess:
    """Option lookups shared by both message formats and the IA options."""

    __slots__ = ()
    options: tuple[Option, ...]

    def get(self, code: int) -> bytes | None:
        """The first option with ``code``, or None."""
        for option_code, value in self.options:
            if option_code == code:
                return value
        return None

    def get_all(self, code: int) -> list[bytes]:
        return [value for option_code, value in self.options if option_code == code]

    def has(self, code: int) -> bool:
        return any(option_code == code for option_code, _ in self.options)

    def with_option(self, code: int, value: bytes) -> Self:
        """Set an option: replaces the first in place (dropping any repeat), else appends."""
        options: list[Option] = []
        placed = False
        for option_code, old in self.options:
            if option_code != code:
                options.append((option_code, old))
            elif not placed:
                options.append((code, value))
                placed = True
        if not placed:
            options.append((code, value))
        return dataclasses.replace(self, options=tuple(options))  # type: ignore[type-var]

    def without_option(self, code: int) -> Self:
        return dataclasses.replace(  # type: ignore[type-var]
            self, options=tuple((c, v) for c, v in self.options if c != code)
        )


# -- messages ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Dhcp6Message(_OptionAccess):
    """A client/server message (RFC 8415 §8): every type but Relay-forw and Relay-repl."""

    msg_type: int
    transaction_id: int
    options: tuple[Option, ...] = ()

    def replace(self, **changes: Any) -> Dhcp6Message:
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True, slots=True)
class RelayMessage(_OptionAccess):
    """A Relay-forward or Relay-reply message (RFC 8415 §9)."""

    msg_type: int
    hop_count: int
    link_address: IPv6Address
    peer_address: IPv6Address
    options: tuple[Option, ...] = ()

    def replace(self, **changes: Any) -> RelayMessage:
        return dataclasses.replace(self, **changes)

    @property
    def relayed(self) -> bytes | None:
        """The Relay Message option's (9) bytes: the message this one carries."""
        return self.get(Opt6.RELAY_MSG)

    def inner(self) -> Dhcp6Message | RelayMessage:
        """The carried message, decoded; a WireError when there is none or it is malformed."""
        relayed = self.relayed
        if relayed is None:
            raise FieldError("relay message without a Relay Message option")
        return decode6(relayed)


Message6 = Dhcp6Message | RelayMessage


def decode6(data: bytes) -> Message6:
    """Decode a DHCPv6 message. Raises only WireError subclasses."""
    data = bytes(data)
    if len(data) < HEADER_SIZE:
        raise TruncatedError(f"message is {len(data)} bytes, a header needs {HEADER_SIZE}", 0)
    msg_type = data[0]
    if msg_type in RELAY_TYPES:
        if len(data) < RELAY_HEADER_SIZE:
            raise TruncatedError(
                f"relay message is {len(data)} bytes, its header needs {RELAY_HEADER_SIZE}", 0
            )
        return RelayMessage(
            msg_type,
            data[1],
            IPv6Address(data[2:18]),
            IPv6Address(data[18:34]),
            tuple(decode_options(data[RELAY_HEADER_SIZE:], RELAY_HEADER_SIZE)),
        )
    return Dhcp6Message(
        msg_type,
        int.from_bytes(data[1:4], "big"),
        tuple(decode_options(data[HEADER_SIZE:], HEADER_SIZE)),
    )


def encode6(message: Message6) -> bytes:
    """Encode a message; a FieldError for a field out of its range."""
    if not 0 <= message.msg_type <= 0xFF:
        raise FieldError(f"msg-type {message.msg_type} out of range")
    options = encode_options(message.options)
    if isinstance(message, RelayMessage):
        if message.msg_type not in RELAY_TYPES:
            raise FieldError(f"msg-type {message.msg_type} is not a relay message type")
        if not 0 <= message.hop_count <= 0xFF:
            raise FieldError(f"hop-count {message.hop_count} out of range")
        return (
            bytes((message.msg_type, message.hop_count))
            + message.link_address.packed
            + message.peer_address.packed
            + options
        )
    if message.msg_type in RELAY_TYPES:
        raise FieldError(f"msg-type {message.msg_type} needs the relay message format")
    if not 0 <= message.transaction_id <= 0xFFFFFF:
        raise FieldError(f"transaction-id {message.transaction_id} out of range")
    return bytes((message.msg_type,)) + message.transaction_id.to_bytes(3, "big") + options


def innermost(message: Message6, limit: int = HOP_COUNT_LIMIT + 1) -> Dhcp6Message:
    """The client/server message inside any nesting of relay messages (at most ``limit`` deep)."""
    for _ in range(limit + 1):
        if isinstance(message, Dhcp6Message):
            return message
        message = message.inner()
    raise FieldError(f"relay messages nested more than {limit} deep")


# -- typed option values -----------------------------------------------------------------------


def _uint(value: bytes, size: int, what: str) -> int:
    if len(value) != size:
        raise FieldError(f"{what} is {len(value)} bytes, expected {size}")
    return int.from_bytes(value, "big")


def decode_u8(value: bytes, what: str = "Preference") -> int:
    return _uint(value, 1, what)


def decode_u16(value: bytes, what: str = "Elapsed Time") -> int:
    return _uint(value, 2, what)


def decode_u32(value: bytes, what: str = "Information Refresh Time") -> int:
    return _uint(value, 4, what)


def encode_uint(number: int, size: int) -> bytes:
    if not 0 <= number < 1 << (8 * size):
        raise FieldError(f"{number} does not fit {size} bytes")
    return number.to_bytes(size, "big")


def decode_codes(value: bytes, what: str = "Option Request") -> tuple[int, ...]:
    """A list of 16-bit numbers: the ORO (6) and Client System Architecture Type (61)."""
    if len(value) % 2:
        raise FieldError(f"{what} is {len(value)} bytes, not a multiple of 2")
    return tuple(int.from_bytes(value[i : i + 2], "big") for i in range(0, len(value), 2))


def encode_codes(codes: Iterable[int]) -> bytes:
    return b"".join(encode_uint(code, 2) for code in codes)


def decode_addresses(
    value: bytes, what: str = "DNS Recursive Name Server"
) -> tuple[IPv6Address, ...]:
    if len(value) % 16:
        raise FieldError(f"{what} is {len(value)} bytes, not a multiple of 16")
    return tuple(IPv6Address(value[i : i + 16]) for i in range(0, len(value), 16))


def encode_addresses(addresses: Iterable[IPv6Address]) -> bytes:
    return b"".join(address.packed for address in addresses)


def decode_data_list(value: bytes, what: str = "data list") -> tuple[bytes, ...]:
    """Opaque items each behind a 2-octet length: user-class-data (15), vendor-class-data (16)
    and Boot File Parameters (60, RFC 5970 §3.2)."""
    items: list[bytes] = []
    position = 0
    while position < len(value):
        if position + 2 > len(value):
            raise TruncatedError(f"{what}: an item length needs 2 bytes, 1 left", position)
        start = position + 2
        position = start + int.from_bytes(value[position:start], "big")
        if position > len(value):
            raise TruncatedError(
                f"{what}: an item needs {position - start} bytes, {len(value) - start} left", start
            )
        items.append(value[start:position])
    return tuple(items)


def encode_data_list(items: Iterable[bytes]) -> bytes:
    out = bytearray()
    for item in items:
        if len(item) > 0xFFFF:
            raise CapacityError(f"an item of {len(item)} bytes does not fit a 2-octet length")
        out += len(item).to_bytes(2, "big") + item
    return bytes(out)


def decode_text(value: bytes, what: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as error:
        raise FieldError(f"{what} is not UTF-8: {error.reason}", error.start) from None


def decode_domains(value: bytes, what: str = "Domain Search List") -> tuple[str, ...]:
    """RFC 8415 §10: domain names as RFC 1035 §3.1 labels, uncompressed; each name is held
    without its final dot (the root as "")."""
    names: list[str] = []
    labels: list[str] = []
    position = 0
    while position < len(value):
        length = value[position]
        if length == 0:
            names.append(".".join(labels))
            labels = []
            position += 1
            continue
        if length > 63:
            raise FieldError(f"{what}: label length {length} (no compression here)", position)
        start = position + 1
        position = start + length
        if position > len(value):
            raise TruncatedError(f"{what}: a label runs past the option", start)
        try:
            labels.append(value[start:position].decode("ascii"))
        except UnicodeDecodeError:
            raise FieldError(f"{what}: a label is not ASCII", start) from None
        if "." in labels[-1]:
            raise FieldError(f"{what}: a label holds a dot", start)
    if labels:
        raise TruncatedError(f"{what}: the last name has no root label", len(value))
    return tuple(names)


def encode_domains(names: Iterable[str]) -> bytes:
    out = bytearray()
    for name in names:
        for label in name.split(".") if name else ():
            if not label.isascii() or not 0 < len(label) <= 63:
                raise FieldError(f"domain name {name!r}: label {label!r} is not 1-63 ASCII bytes")
            out += bytes((len(label),)) + label.encode("ascii")
        out += b"\0"
    return bytes(out)


def duid_link_layer(duid: bytes) -> tuple[int, bytes] | None:
    """The (hardware type, link-layer address) of a DUID-LLT or DUID-LL (RFC 8415 §11.2, §11.4),
    else None."""
    if len(duid) < 4:
        return None
    duid_type = int.from_bytes(duid[:2], "big")
    hardware_type = int.from_bytes(duid[2:4], "big")
    if duid_type == DuidType.LLT and len(duid) > 8:
        return hardware_type, duid[8:]
    if duid_type == DuidType.LL and len(duid) > 4:
        return hardware_type, duid[4:]
    return None


class _Typed:
    """A typed option value: ``decode(raw)`` and ``encode()``, and its option code."""

    __slots__ = ()
    code: ClassVar[int]

    def option(self) -> Option:
        return (self.code, self.encode())

    def encode(self) -> bytes:
        raise NotImplementedError


def _nested(value: bytes, base: int, what: str) -> tuple[Option, ...]:
    return tuple(decode_options(value[base:], base, what))


@dataclasses.dataclass(frozen=True, slots=True)
class IaNa(_OptionAccess, _Typed):
    """Identity Association for Non-temporary Addresses (RFC 8415 §21.4)."""

    code: ClassVar[int] = Opt6.IA_NA
    iaid: int
    t1: int = 0
    t2: int = 0
    options: tuple[Option, ...] = ()

    @classmethod
    def decode(cls, value: bytes) -> IaNa:
        if len(value) < 12:
            raise TruncatedError(f"IA_NA is {len(value)} bytes, needs 12", 0)
        return cls(*_three_u32(value), _nested(value, 12, "IA_NA"))

    def encode(self) -> bytes:
        return _u32s(self.iaid, self.t1, self.t2) + encode_options(self.options)


@dataclasses.dataclass(frozen=True, slots=True)
class IaPd(_OptionAccess, _Typed):
    """Identity Association for Prefix Delegation (RFC 8415 §21.21)."""

    code: ClassVar[int] = Opt6.IA_PD
    iaid: int
    t1: int = 0
    t2: int = 0
    options: tuple[Option, ...] = ()

    @classmethod
    def decode(cls, value: bytes) -> IaPd:
        if len(value) < 12:
            raise TruncatedError(f"IA_PD is {len(value)} bytes, needs 12", 0)
        return cls(*_three_u32(value), _nested(value, 12, "IA_PD"))

    def encode(self) -> bytes:
        return _u32s(self.iaid, self.t1, self.t2) + encode_options(self.options)


@dataclasses.dataclass(frozen=True, slots=True)
class IaTa(_OptionAccess, _Typed):
    """Identity Association for Temporary Addresses (RFC 8415 §21.5): no T1/T2."""

    code: ClassVar[int] = Opt6.IA_TA
    iaid: int
    options: tuple[Option, ...] = ()

    @classmethod
    def decode(cls, value: bytes) -> IaTa:
        if len(value) < 4:
            raise TruncatedError(f"IA_TA is {len(value)} bytes, needs 4", 0)
        return cls(int.from_bytes(value[:4], "big"), _nested(value, 4, "IA_TA"))

    def encode(self) -> bytes:
        return _u32s(self.iaid) + encode_options(self.options)


@dataclasses.dataclass(frozen=True, slots=True)
class IaAddress(_OptionAccess, _Typed):
    """IA Address (RFC 8415 §21.6), inside IA_NA or IA_TA."""

    code: ClassVar[int] = Opt6.IAADDR
    address: IPv6Address
    preferred_lifetime: int = 0
    valid_lifetime: int = 0
    options: tuple[Option, ...] = ()

    @classmethod
    def decode(cls, value: bytes) -> IaAddress:
        if len(value) < 24:
            raise TruncatedError(f"IA Address is {len(value)} bytes, needs 24", 0)
        return cls(
            IPv6Address(value[:16]),
            int.from_bytes(value[16:20], "big"),
            int.from_bytes(value[20:24], "big"),
            _nested(value, 24, "IA Address"),
        )

    def encode(self) -> bytes:
        return (
            self.address.packed
            + _u32s(self.preferred_lifetime, self.valid_lifetime)
            + encode_options(self.options)
        )


@dataclasses.dataclass(frozen=True, slots=True)
class IaPrefix(_OptionAccess, _Typed):
    """IA Prefix (RFC 8415 §21.22), inside IA_PD."""

    code: ClassVar[int] = Opt6.IAPREFIX
    prefix_length: int
    prefix: IPv6Address
    preferred_lifetime: int = 0
    valid_lifetime: int = 0
    options: tuple[Option, ...] = ()

    @classmethod
    def decode(cls, value: bytes) -> IaPrefix:
        if len(value) < 25:
            raise TruncatedError(f"IA Prefix is {len(value)} bytes, needs 25", 0)
        # RFC 8415 §21.22: "prefix-length: Length for this prefix in bits", of an IPv6 prefix.
        if value[8] > 128:
            raise FieldError(f"prefix-length {value[8]} out of range", 8)
        return cls(
            value[8],
            IPv6Address(value[9:25]),
            int.from_bytes(value[0:4], "big"),
            int.from_bytes(value[4:8], "big"),
            _nested(value, 25, "IA Prefix"),
        )

    def encode(self) -> bytes:
        if not 0 <= self.prefix_length <= 128:
            raise FieldError(f"prefix-length {self.prefix_length} out of range")
        return (
            _u32s(self.preferred_lifetime, self.valid_lifetime)
            + bytes((self.prefix_length,))
            + self.prefix.packed
            + encode_options(self.options)
        )


@dataclasses.dataclass(frozen=True, slots=True)
class StatusCode(_Typed):
    """Status Code (RFC 8415 §21.13): a code and a UTF-8 message."""

    code: ClassVar[int] = Opt6.STATUS_CODE
    status: int
    message: str = ""

    @classmethod
    def decode(cls, value: bytes) -> StatusCode:
        if len(value) < 2:
            raise TruncatedError(f"Status Code is {len(value)} bytes, needs 2", 0)
        return cls(int.from_bytes(value[:2], "big"), decode_text(value[2:], "status-message"))

    def encode(self) -> bytes:
        return encode_uint(self.status, 2) + self.message.encode("utf-8")


@dataclasses.dataclass(frozen=True, slots=True)
class RemoteId(_Typed):
    """Relay Agent Remote-ID (RFC 4649 §3): an enterprise number and opaque bytes."""

    code: ClassVar[int] = Opt6.REMOTE_ID
    enterprise: int
    remote_id: bytes

    @classmethod
    def decode(cls, value: bytes) -> RemoteId:
        if len(value) < 4:
            raise TruncatedError(f"Remote-ID is {len(value)} bytes, needs 4", 0)
        return cls(int.from_bytes(value[:4], "big"), value[4:])

    def encode(self) -> bytes:
        return _u32s(self.enterprise) + self.remote_id


@dataclasses.dataclass(frozen=True, slots=True)
class ClientLinkLayer(_Typed):
    """Client Link-Layer Address (RFC 6939 §4): a hardware type and the address."""

    code: ClassVar[int] = Opt6.CLIENT_LINKLAYER_ADDR
    hardware_type: int
    address: bytes

    @classmethod
    def decode(cls, value: bytes) -> ClientLinkLayer:
        if len(value) < 2:
            raise TruncatedError(f"Client Link-Layer Address is {len(value)} bytes, needs 2", 0)
        return cls(int.from_bytes(value[:2], "big"), value[2:])

    def encode(self) -> bytes:
        return encode_uint(self.hardware_type, 2) + self.address


@dataclasses.dataclass(frozen=True, slots=True)
class VendorClass(_Typed):
    """Vendor Class (RFC 8415 §21.16): an enterprise number and a list of opaque data."""

    code: ClassVar[int] = Opt6.VENDOR_CLASS
    enterprise: int
    data: tuple[bytes, ...] = ()

    @classmethod
    def decode(cls, value: bytes) -> VendorClass:
        if len(value) < 4:
            raise TruncatedError(f"Vendor Class is {len(value)} bytes, needs 4", 0)
        return cls(int.from_bytes(value[:4], "big"), decode_data_list(value[4:], "Vendor Class"))

    def encode(self) -> bytes:
        return _u32s(self.enterprise) + encode_data_list(self.data)


@dataclasses.dataclass(frozen=True, slots=True)
class VendorOpts(_OptionAccess, _Typed):
    """Vendor-specific Information (RFC 8415 §21.17): an enterprise number and options in the
    format of §21.1."""

    code: ClassVar[int] = Opt6.VENDOR_OPTS
    enterprise: int
    options: tuple[Option, ...] = ()

    @classmethod
    def decode(cls, value: bytes) -> VendorOpts:
        if len(value) < 4:
            raise TruncatedError(f"Vendor Opts is {len(value)} bytes, needs 4", 0)
        return cls(int.from_bytes(value[:4], "big"), _nested(value, 4, "Vendor Opts"))

    def encode(self) -> bytes:
        return _u32s(self.enterprise) + encode_options(self.options)


@dataclasses.dataclass(frozen=True, slots=True)
class NetworkInterfaceId(_Typed):
    """Client Network Interface Identifier (RFC 5970 §3.4): type, major and minor (3 octets)."""

    code: ClassVar[int] = Opt6.NII
    interface_type: int
    major: int
    minor: int

    @classmethod
    def decode(cls, value: bytes) -> NetworkInterfaceId:
        if len(value) != 3:
            raise FieldError(f"NII is {len(value)} bytes, expected 3")
        return cls(value[0], value[1], value[2])

    def encode(self) -> bytes:
        return encode_uint(self.interface_type, 1) + encode_uint(self.major, 1) + encode_uint(
            self.minor, 1
        )


def _three_u32(value: bytes) -> tuple[int, int, int]:
    return (
        int.from_bytes(value[0:4], "big"),
        int.from_bytes(value[4:8], "big"),
        int.from_bytes(value[8:12], "big"),
    )


def _u32s(*numbers: int) -> bytes:
    return b"".join(encode_uint(number, 4) for number in numbers)
