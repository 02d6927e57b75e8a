"""Relay agent information, option 82 (RFC 3046), and its sub-options.

Sub-options are kept in order as ``(code, value)``; unknown ones survive unchanged.
"""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address

from .codes import AgentSub
from .errors import FieldError
from .options import Option, encode_sub_tlvs, parse_sub_tlvs

#: RFC 5010 §3: bit 0 (the high bit) of the flags sub-option: the client's request was unicast.
FLAG_UNICAST = 0x80


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
