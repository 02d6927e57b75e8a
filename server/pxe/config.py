"""The [pxe] table: the boot server's address, boot files per architecture and subnet, a menu."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Network
from types import MappingProxyType

from boothop.relay.settings import Validator, validate_section
from boothop.relay.wire import ClientArch
from boothop.relay.wire.pxe import arch_name

#: http:// and https://: what a UEFI HTTP boot client can fetch.
URL_SCHEMES = ("http://", "https://")
#: The boot-table key for clients whose user class (option 77) is "iPXE".
IPXE_KEY = "ipxe"
_ARCH_NUMBER = re.compile(r"^arch-(\d{1,5})$")


@dataclasses.dataclass(frozen=True)
class BootFiles:
    """Boot files by client architecture (option 93), and the script handed to iPXE."""

    by_arch: Mapping[int, str] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    ipxe: str | None = None


@dataclasses.dataclass(frozen=True)
class SubnetBoot:
    """Boot files for clients on one subnet (chosen by giaddr); keys missing here fall back."""

    network: IPv4Network
    boot: BootFiles


@dataclasses.dataclass(frozen=True)
class MenuItem:
    """One PXE boot menu entry (PXE spec 2.1 §2.2.6): a boot server type and its boot files."""

    type: int
    description: str
    boot: BootFiles


@dataclasses.dataclass(frozen=True)
class PxeConfig:
    #: The PXE server's own address: option 54, and siaddr unless tftp_server is set.
    server_address: IPv4Address
    boot: BootFiles = BootFiles()
    tftp_server: IPv4Address | None = None
    server_name: str = ""
    address: str = "0.0.0.0"
    port: int = 67
    pxe_port: int = 4011
    #: The PXE spec's co-located arrangement: the DHCP server on this host sends option 60
    #: "PXEClient" and this service answers on port 4011 only.
    colocated: bool = False
    subnets: tuple[SubnetBoot, ...] = ()
    menu: tuple[MenuItem, ...] = ()
    menu_prompt: str = "Press F8 for boot menu"
    menu_timeout: int = 10
    #: Where UEFI HTTP boot clients fetch boot files named by a relative path:
    #: ``http://server_address[:port]/`` when [http] runs in the same file, else none.
    http_url: str = ""

    @property
    def next_server(self) -> IPv4Address:
        return self.tftp_server or self.server_address


def arch_code(name: str) -> int | None:
    """The option 93 code for a boot-table key: a codec name (``efi-x64``) or ``arch-N``."""
    match = _ARCH_NUMBER.match(name)
    if match:
        code = int(match.group(1))
        return code if code <= 0xFFFF else None
    for arch in ClientArch:
        if arch_name(arch) == name:
            return int(arch)
    return None


def _http_url(value: object) -> str:
    if not isinstance(value, str) or not value.startswith(URL_SCHEMES) or len(value) > 200:
        raise ValueError(f"must be an http:// or https:// URL (at most 200 octets), not {value!r}")
    return value


def boot_files(v: Validator | None) -> BootFiles:
    """A table of architecture = boot file (absent: none)."""
    if v is None:
        return BootFiles()
    by_arch: dict[int, str] = {}
    ipxe = None
    for name in v.data:
        value = v.string(name, max_bytes=255)
        code = arch_code(name)
        if name != IPXE_KEY and code is None:
            v.fail(name, "unknown architecture (e.g. bios, efi-x64, arch-7)")
        elif value is not None and code is not None:
            by_arch[code] = value
        elif value is not None:
            ipxe = value
    return BootFiles(MappingProxyType(by_arch), ipxe)


def _menu_item(v: Validator, menu: list[MenuItem]) -> MenuItem | None:
    v.unknown_keys({"type", "description", "boot"})
    item_type = v.integer("type", None, 0, 0xFFFF,
                          required="a boot server type in 0..65535 (0: local boot)")
    description = v.string("description", required="what the menu shows", max_bytes=200)
    if any(m.type == item_type for m in menu):
        v.fail("type", f"type {item_type} is already in the menu")
    boot = boot_files(v.table("boot"))
    if v.failed() or item_type is None or description is None:
        return None
    return MenuItem(item_type, description, boot)


def parse_pxe(table: object, path: str) -> PxeConfig:
    """Validate a [pxe] table on its own; ConfigError lists every problem."""
    return validate_section(path, "pxe", table, read_pxe)


def read_pxe(v: Validator) -> PxeConfig | None:
    """The [pxe] table; None if it had problems (recorded in ``v``)."""
    v.unknown_keys(f.name for f in dataclasses.fields(PxeConfig))
    server_address = v.address("server_address", required="this PXE server's address")
    subnets = []
    for entry in v.tables("subnets"):
        entry.unknown_keys({"network", "boot"})
        network = entry.network("network", required="the subnet, like 10.61.1.0/24")
        boot = boot_files(entry.table("boot"))
        if network is not None:
            subnets.append(SubnetBoot(network, boot))
    prompt = v.string("menu_prompt", PxeConfig.menu_prompt, max_bytes=200, empty=True)
    menu: list[MenuItem] = []
    for entry in v.tables("menu"):
        item = _menu_item(entry, menu)
        if item is not None:
            menu.append(item)
    if sum(3 + len(m.description.encode()) for m in menu) > 255:
        v.fail("menu", "the descriptions do not fit one 255-byte PXE_BOOT_MENU")
    config = PxeConfig(
        server_address=server_address or IPv4Address(0),
        boot=boot_files(v.table("boot")),
        tftp_server=v.address("tftp_server"),
        server_name=v.string("server_name", "", max_bytes=63, empty=True) or "",
        address=str(v.address("address", IPv4Address(0))),
        port=v.integer("port", 67, 1, 65535),
        pxe_port=v.integer("pxe_port", 4011, 1, 65535),
        colocated=v.boolean("colocated", False),
        subnets=tuple(subnets),
        menu=tuple(menu),
        menu_prompt=prompt or "",
        menu_timeout=v.integer("menu_timeout", 10, 0, 255),
        http_url=v.convert("http_url", _http_url) or "",
    )
    return None if v.failed() else config
