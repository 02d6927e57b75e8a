"""Relay agent information, option 82 (RFC 3046), and its sub-options.

Sub-options are kept in order as ``(code, value)``; unknown ones survive unchanged.
"""

from __future__ import annotations

import dataclasses
import enum
from ipaddress import IPv4Address

from .codes import AgentSub
from .errors import FieldError
from .options import Option, encode_sub_tlvs, parse_sub_tlvs

#: RFC 5010 §3: bit 0 (the high bit) of the flags sub-option: the client's request was unicast.
FLAG_UNICAST = 0x80
#: RFC 2685 §3: a VPN-ID is a 3-octet VPN authority OUI and a 4-octet VPN index.
VPN_ID_SIZE = 7


class VssType(enum.IntEnum):
    """RFC 6607 §3.1: the type octet of VSS information (sub-option 151, option 221, DHCPv6 68)."""

    #: An NVT ASCII VPN identifier.
    NVT_ASCII = 0
    #: An RFC 2685 VPN-ID (7 octets).
    VPN_ID = 1
    #: The global, default VPN: no VSS information follows.
    GLOBAL = 255


def vss_value(kind: VssType, info: bytes = b"") -> bytes:
    """The value of a VSS sub-option: the type octet and the information, checked per type."""
    if kind is VssType.GLOBAL and info:
        raise FieldError("VSS type 255 (global, default VPN) carries no VSS information")
    if kind is VssType.VPN_ID and len(info) != VPN_ID_SIZE:
        raise FieldError(f"an RFC 2685 VPN-ID is {VPN_ID_SIZE} octets, not {len(info)}")
    if kind is VssType.NVT_ASCII and not (info and info.isascii() and info.decode().isprintable()):
        raise FieldError(f"an NVT ASCII VPN identifier is printable ASCII, not {info!r}")
    if len(info) > 254:
        raise FieldError(f"VSS information of {len(info)} octets does not fit a sub-option")
    return bytes((kind,)) + info


@dataclasses.dataclass(frozen=True, slots=True)
class AgentInfo:
    suboptions: tuple[Option, ...] = ()

    @classmethod
    def decode(cls, value: bytes) -> AgentInfo:
        return cls(tuple(parse_sub_tlvs(value, 0, "relay agent information")))

    def encode(self) -> bytes:
        return encode_sub_tlvs(self.suboptions)

    def get(self, code: int) -> bytes | None:
        for sub_code, value in self.suboptions:
            if sub_code == code:
                return value
        return None

    @property
    def circuit_id(self) -> bytes | None:
        return self.get(AgentSub.CIRCUIT_ID)

    @property
    def remote_id(self) -> bytes | None:
        return self.get(AgentSub.REMOTE_ID)

    @property
    def link_selection(self) -> IPv4Address | None:
        return _address_sub(self.get(AgentSub.LINK_SELECTION), "link selection")

    @property
    def server_id_override(self) -> IPv4Address | None:
        return _address_sub(self.get(AgentSub.SERVER_ID_OVERRIDE), "server identifier override")

    @property
    def relay_source_port(self) -> bool:
        """RFC 8357 §5.1: whether the relay asks for replies at its UDP source port."""
        value = self.get(AgentSub.RELAY_SOURCE_PORT)
        if value is None:
            return False
        if value:
            raise FieldError(f"relay source port sub-option is {len(value)} bytes, not 0")
        return True

    @property
    def vss(self) -> bytes | None:
        """RFC 6607 §3.2: the VSS sub-option's value (type octet and information), if present."""
        value = self.get(AgentSub.VSS)
        if value is not None and not value:
            raise FieldError("VSS sub-option is empty: it has a type octet at least")
        return value

    @property
    def vss_control(self) -> bool:
        """RFC 6607 §3.3: whether the VSS-Control sub-option is present (its length is 0)."""
        value = self.get(AgentSub.VSS_CONTROL)
        if value is None:
            return False
        if value:
            raise FieldError(f"VSS-Control sub-option is {len(value)} bytes, not 0")
        return True

    @property
    def flags(self) -> int | None:
        value = self.get(AgentSub.RELAY_AGENT_FLAGS)
        if value is None:
            return None
        if len(value) != 1:
            raise FieldError(f"relay agent flags sub-option is {len(value)} bytes, not 1")
        return value[0]


def _address_sub(value: bytes | None, what: str) -> IPv4Address | None:
    if value is None:
        return None
    if len(value) != 4:
        raise FieldError(f"{what} sub-option is {len(value)} bytes, not 4")
    return IPv4Address(value)
