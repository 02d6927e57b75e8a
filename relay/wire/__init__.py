"""The wire codec shared by the relay and the server: bytes <-> DhcpMessage (DHCPv4), and
bytes <-> Dhcp6Message/RelayMessage in ``wire.dhcpv6`` (RFC 8415).

Imports nothing else of boothop's. Every decoding failure is a WireError (a ValueError).
"""

from .agent_info import FLAG_UNICAST, AgentInfo, VssType, vss_value
from .codes import (
    BROADCAST_FLAG,
    CLIENT_PORT,
    DHCP_MIN_MAX_SIZE,
    MAGIC_COOKIE,
    PXE_PORT,
    SERVER_PORT,
    AgentSub,
    ClientArch,
    MessageType,
    Op,
    Opt,
    PxeSub,
    option_name,
)
from .datagram import Datagram, Datagram6
from .errors import CapacityError, FieldError, TruncatedError, WireError
from .frame import Frame
from .message import (
    ETHERNET_MAX_MESSAGE,
    ZERO,
    DhcpMessage,
    address_of,
    decode,
    decode_options,
    encode,
    encoded_size,
)
from .options import Option

__all__ = [
    "BROADCAST_FLAG",
    "CLIENT_PORT",
    "DHCP_MIN_MAX_SIZE",
    "ETHERNET_MAX_MESSAGE",
    "FLAG_UNICAST",
    "MAGIC_COOKIE",
    "PXE_PORT",
    "SERVER_PORT",
    "ZERO",
    "AgentInfo",
    "AgentSub",
    "CapacityError",
    "ClientArch",
    "Datagram",
    "Datagram6",
    "DhcpMessage",
    "FieldError",
    "Frame",
    "MessageType",
    "Op",
    "Opt",
    "Option",
    "PxeSub",
    "TruncatedError",
    "VssType",
    "WireError",
    "address_of",
    "decode",
    "decode_options",
    "encode",
    "encoded_size",
    "option_name",
    "vss_value",
]
