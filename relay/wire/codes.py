"""Numbers from RFC 951/2131/2132/3046/4578 and the PXE spec, as tolerant enums.

Codes not listed stay plain ints everywhere: an unknown option is data, not an error.
"""

from __future__ import annotations

import enum

MAGIC_COOKIE = b"\x63\x82\x53\x63"
BOOTP_HEADER_SIZE = 236
#: RFC 951: the fixed BOOTP message is 300 bytes (header + 64-byte vendor area).
BOOTP_MIN_SIZE = 300
#: RFC 2131 §2: "A DHCP client must be prepared to receive DHCP messages with an 'options'
#: field of at least length 312 octets", i.e. a 576-byte message.
DHCP_MIN_MAX_SIZE = 576
SERVER_PORT = 67
CLIENT_PORT = 68
PXE_PORT = 4011
BROADCAST_FLAG = 0x8000


class Op(enum.IntEnum):
    BOOTREQUEST = 1
    BOOTREPLY = 2


class MessageType(enum.IntEnum):
    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


class Opt(enum.IntEnum):
    PAD = 0
    SUBNET_MASK = 1
    ROUTER = 3
    DNS_SERVERS = 6
    HOST_NAME = 12
    DOMAIN_NAME = 15
    BROADCAST_ADDRESS = 28
    VENDOR_SPECIFIC = 43
    REQUESTED_ADDRESS = 50
    LEASE_TIME = 51
    OVERLOAD = 52
    MESSAGE_TYPE = 53
    SERVER_ID = 54
    PARAMETER_REQUEST_LIST = 55
    MESSAGE = 56
    MAX_MESSAGE_SIZE = 57
    RENEWAL_TIME = 58
    REBINDING_TIME = 59
    VENDOR_CLASS_ID = 60
    CLIENT_ID = 61
    TFTP_SERVER_NAME = 66
    BOOTFILE_NAME = 67
    USER_CLASS = 77
    RELAY_AGENT_INFO = 82
    CLIENT_ARCH = 93
    CLIENT_NDI = 94
    CLIENT_UUID = 97
    SUBNET_SELECTION = 118
    END = 255


class AgentSub(enum.IntEnum):
    """Relay agent information sub-options (RFC 3046, 3527, 5010, 5107, 8357, 6607)."""

    CIRCUIT_ID = 1
    REMOTE_ID = 2
    LINK_SELECTION = 5
    RELAY_AGENT_FLAGS = 10
    SERVER_ID_OVERRIDE = 11
    #: RFC 8357 §5.1: the relay listens on its UDP source port, not 67 (length 0).
    RELAY_SOURCE_PORT = 19
    #: RFC 6607 §3.2: Virtual Subnet Selection, a type octet and the VSS information.
    VSS = 151
    #: RFC 6607 §3.3: VSS-Control (length 0): a server that processed VSS does not echo it.
    VSS_CONTROL = 152


class PxeSub(enum.IntEnum):
    """Sub-options of option 43 for PXE clients (PXE spec 2.1, table 2-1)."""

    MTFTP_IP = 1
    MTFTP_CPORT = 2
    MTFTP_SPORT = 3
    MTFTP_TMOUT = 4
    MTFTP_DELAY = 5
    DISCOVERY_CONTROL = 6
    DISCOVERY_MCAST_ADDR = 7
    BOOT_SERVERS = 8
    BOOT_MENU = 9
    MENU_PROMPT = 10
    MCAST_ADDRS_ALLOC = 11
    CREDENTIAL_TYPES = 12
    BOOT_ITEM = 71


class ClientArch(enum.IntEnum):
    """Option 93 values (RFC 4578 and the IANA registry)."""

    BIOS = 0
    NEC_PC98 = 1
    EFI_ITANIUM = 2
    DEC_ALPHA = 3
    ARC_X86 = 4
    INTEL_LEAN = 5
    EFI_IA32 = 6
    EFI_X64 = 7
    EFI_XSCALE = 8
    EFI_BC = 9
    EFI_ARM32 = 10
    EFI_ARM64 = 11
    # UEFI HTTP boot (the IANA "Processor Architecture Types" registry, RFC 5970 §3.3).
    EFI_IA32_HTTP = 15
    EFI_X64_HTTP = 16
    EFI_BC_HTTP = 17
    EFI_ARM32_HTTP = 18
    EFI_ARM64_HTTP = 19
    BIOS_HTTP = 20


def option_name(code: int) -> str:
    try:
        return Opt(code).name.lower()
    except ValueError:
        return f"option-{code}"
