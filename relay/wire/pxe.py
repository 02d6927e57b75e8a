"""PXE options: 43 (PXE vendor sub-options), 60, 93, 94, 97 (PXE spec 2.1, RFC 4578)."""

from __future__ import annotations

import dataclasses
import uuid
from ipaddress import IPv4Address

from .buffer import Reader
from .codes import ClientArch, Opt, PxeSub
from .errors import FieldError
from .message import DhcpMessage
from .options import Option, read_tlvs

PXE_CLIENT_PREFIX = b"PXEClient"

#: A UEFI HTTP boot architecture and the PXE one whose loader it runs, so that a boot table
#: written for PXE (efi-x64 = "ipxe.efi") also serves HTTP clients, as a URL. The HTTP types
#: are the IANA "Processor Architecture Types" registry's 15..20.
HTTP_TWINS: dict[int, int] = {
    ClientArch.EFI_IA32_HTTP: ClientArch.EFI_IA32,
    ClientArch.EFI_X64_HTTP: ClientArch.EFI_X64,
    ClientArch.EFI_BC_HTTP: ClientArch.EFI_BC,
    ClientArch.EFI_ARM32_HTTP: ClientArch.EFI_ARM32,
    ClientArch.EFI_ARM64_HTTP: ClientArch.EFI_ARM64,
    ClientArch.BIOS_HTTP: ClientArch.BIOS,
}


def is_pxe_client(msg: DhcpMessage) -> bool:
    """PXE spec 2.1 §2.2.1: a PXE client sends option 60 starting with "PXEClient"."""
    vendor_class = msg.get(Opt.VENDOR_CLASS_ID)
    return vendor_class is not None and vendor_class.startswith(PXE_CLIENT_PREFIX)


def user_classes(value: bytes) -> tuple[bytes, ...]:
    """Option 77's classes: RFC 3004 §4 instances ("UC_Len_i User_Class_Data_i", each at least
    one octet) when the value is a well-formed list of them, else the value itself as one class:
    iPXE sends the bare string "iPXE"."""
    found: list[bytes] = []
    index = 0
    while index < len(value):
        length = value[index]
        if length == 0 or index + 1 + length > len(value):
            return (value,)
        found.append(value[index + 1 : index + 1 + length])
        index += 1 + length
    return tuple(found) or (value,)


def client_architectures(msg: DhcpMessage) -> list[int]:
    """Option 93: a list of 16-bit architecture types (RFC 4578 §2.1)."""
    value = msg.get(Opt.CLIENT_ARCH)
    if value is None:
        return []
    if len(value) % 2:
        raise FieldError(f"client architecture option is {len(value)} bytes, not a multiple of 2")
    return [int.from_bytes(value[i : i + 2], "big") for i in range(0, len(value), 2)]


def arch_name(arch: int) -> str:
    try:
        return ClientArch(arch).name.lower().replace("_", "-")
    except ValueError:
        return f"arch-{arch}"


@dataclasses.dataclass(frozen=True, slots=True)
class NetworkInterfaceId:
    """Option 94 (RFC 4578 §2.2): type 1 = UNDI, with its major and minor revision."""

    type: int
    major: int
    minor: int

    @classmethod
    def decode(cls, value: bytes) -> NetworkInterfaceId:
        if len(value) != 3:
            raise FieldError(f"client NDI option is {len(value)} bytes, not 3")
        return cls(value[0], value[1], value[2])

    def encode(self) -> bytes:
        return bytes((self.type, self.major, self.minor))


def client_uuid(msg: DhcpMessage) -> uuid.UUID | None:
    """Option 97 (RFC 4578 §2.3): type 0 followed by a 16-byte GUID."""
    value = msg.get(Opt.CLIENT_UUID)
    if value is None:
        return None
    if len(value) != 17 or value[0] != 0:
        raise FieldError(f"client UUID option must be type 0 + 16 bytes, got {len(value)} bytes")
    return uuid.UUID(bytes=value[1:])


@dataclasses.dataclass(frozen=True, slots=True)
class BootServerType:
    """One entry of PXE_BOOT_SERVERS (sub-option 8): a server type and its addresses."""

    type: int
    addresses: tuple[IPv4Address, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class PxeVendorOptions:
    """Option 43 as PXE clients read it: TLV sub-options terminated by 255."""

    suboptions: tuple[Option, ...] = ()

    @classmethod
    def decode(cls, value: bytes) -> PxeVendorOptions:
        return cls(tuple(read_tlvs(value, 0, "PXE vendor")[0]))

    def encode(self) -> bytes:
        out = bytearray()
        for code, value in self.suboptions:
            if len(value) > 255:
                raise FieldError(f"PXE sub-option {code} is {len(value)} bytes, at most 255 fit")
            out += bytes((code, len(value))) + value
        return bytes(out) + b"\xff"

    def get(self, code: int) -> bytes | None:
        for sub_code, value in self.suboptions:
            if sub_code == code:
                return value
        return None

    @property
    def discovery_control(self) -> int | None:
        value = self.get(PxeSub.DISCOVERY_CONTROL)
        return value[0] if value else None

    @property
    def boot_menu(self) -> list[tuple[int, bytes]]:
        """Sub-option 9: (server type, description) entries."""
        value = self.get(PxeSub.BOOT_MENU)
        if value is None:
            return []
        reader = Reader(value)
        entries = []
        while not reader.at_end():
            server_type = reader.u16("boot menu type")
            length = reader.u8("boot menu description length")
            entries.append((server_type, reader.read(length, "boot menu description")))
        return entries

    @property
    def boot_servers(self) -> list[BootServerType]:
        value = self.get(PxeSub.BOOT_SERVERS)
        if value is None:
            return []
        reader = Reader(value)
        servers = []
        while not reader.at_end():
            server_type = reader.u16("boot server type")
            count = reader.u8("boot server address count")
            addresses = tuple(
                IPv4Address(reader.read(4, "boot server address")) for _ in range(count)
            )
            servers.append(BootServerType(server_type, addresses))
        return servers

    @property
    def boot_item(self) -> tuple[int, int] | None:
        """Sub-option 71: (server type, layer)."""
        value = self.get(PxeSub.BOOT_ITEM)
        if value is None:
            return None
        if len(value) != 4:
            raise FieldError(f"PXE boot item is {len(value)} bytes, not 4")
        return int.from_bytes(value[:2], "big"), int.from_bytes(value[2:], "big")


def encode_boot_menu(entries: list[tuple[int, bytes]]) -> bytes:
    return b"".join(t.to_bytes(2, "big") + bytes((len(d),)) + d for t, d in entries)


def encode_boot_servers(servers: list[BootServerType]) -> bytes:
    return b"".join(
        s.type.to_bytes(2, "big")
        + bytes((len(s.addresses),))
        + b"".join(a.packed for a in s.addresses)
        for s in servers
    )
