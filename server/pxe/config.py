"""The [pxe] table: the boot server's address, boot files per architecture and subnet, a menu."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Network
from types import MappingProxyType
from typing import Any

from boothop.relay.wire import ClientArch
from boothop.relay.wire.pxe import arch_name
from boothop.server.errors import ConfigError

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


def _address(value: Any, path: str, key: str) -> IPv4Address:
    if not isinstance(value, str):
        raise ConfigError(path, key, f"must be an address string like '10.61.2.10', not {value!r}")
    try:
        return IPv4Address(value)
    except (ValueError, TypeError):
        raise ConfigError(path, key, f"not an IPv4 address: {value!r}") from None


def _boot_files(table: Any, path: str, key: str) -> BootFiles:
    if not isinstance(table, dict):
        raise ConfigError(path, key, "must be a table of architecture = boot file")
    by_arch: dict[int, str] = {}
    ipxe = None
    for name, value in table.items():
        if not isinstance(value, str) or not value or len(value.encode()) > 255:
            raise ConfigError(path, f"{key}.{name}", "must be a boot file name of 1..255 bytes")
        if name == IPXE_KEY:
            ipxe = value
            continue
        code = arch_code(name)
        if code is None:
            raise ConfigError(
                path, f"{key}.{name}", "unknown architecture (e.g. bios, efi-x64, arch-7)"
            )
        by_arch[code] = value
    return BootFiles(MappingProxyType(by_arch), ipxe)


def _int(table: dict[str, Any], key: str, low: int, high: int, default: int, path: str) -> int:
    value = table.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(path, f"pxe.{key}", f"must be an integer in {low}..{high}")
    return value


def parse_pxe(table: dict[str, Any], path: str) -> PxeConfig:
    """Validate the [pxe] table; every problem is a ConfigError naming the dotted key."""
    known = {f.name for f in dataclasses.fields(PxeConfig)}
    for key in table:
        if key not in known:
            raise ConfigError(path, f"pxe.{key}", "unknown key")
    if "server_address" not in table:
        raise ConfigError(path, "pxe.server_address", "required: this PXE server's address")
    server_address = _address(table["server_address"], path, "pxe.server_address")
    tftp_server = None
    if "tftp_server" in table:
        tftp_server = _address(table["tftp_server"], path, "pxe.tftp_server")
    address = str(_address(table.get("address", "0.0.0.0"), path, "pxe.address"))
    colocated = table.get("colocated", False)
    if not isinstance(colocated, bool):
        raise ConfigError(path, "pxe.colocated", "must be true or false")
    server_name = table.get("server_name", "")
    if not isinstance(server_name, str) or len(server_name.encode()) > 63:
        raise ConfigError(path, "pxe.server_name", "must be a string of at most 63 bytes (sname)")
    boot = _boot_files(table.get("boot", {}), path, "pxe.boot")
    subnets = []
    raw_subnets = table.get("subnets", [])
    if not isinstance(raw_subnets, list):
        raise ConfigError(path, "pxe.subnets", "must be an array of tables ([[pxe.subnets]])")
    for index, entry in enumerate(raw_subnets):
        key = f"pxe.subnets[{index}]"
        if not isinstance(entry, dict) or set(entry) - {"network", "boot"}:
            raise ConfigError(path, key, "a subnet has only 'network' and 'boot'")
        try:
            network = ipaddress.IPv4Network(entry.get("network"))
        except (ValueError, TypeError):
            raise ConfigError(
                path, f"{key}.network", "not an IPv4 network like 10.61.1.0/24"
            ) from None
        subnets.append(SubnetBoot(network, _boot_files(entry.get("boot", {}), path, f"{key}.boot")))
    menu = []
    raw_menu = table.get("menu", [])
    if not isinstance(raw_menu, list):
        raise ConfigError(path, "pxe.menu", "must be an array of tables ([[pxe.menu]])")
    for index, entry in enumerate(raw_menu):
        key = f"pxe.menu[{index}]"
        if not isinstance(entry, dict) or set(entry) - {"type", "description", "boot"}:
            raise ConfigError(path, key, "a menu item has 'type', 'description' and 'boot'")
        item_type = entry.get("type")
        if not isinstance(item_type, int) or not 0 <= item_type <= 0xFFFF:
            raise ConfigError(
                path, f"{key}.type", "must be a boot server type in 0..65535 (0: local boot)"
            )
        description = entry.get("description")
        if not isinstance(description, str) or not 0 < len(description.encode()) <= 200:
            raise ConfigError(path, f"{key}.description", "must be a string of 1..200 bytes")
        if any(m.type == item_type for m in menu):
            raise ConfigError(path, f"{key}.type", f"type {item_type} is already in the menu")
        boot_files = _boot_files(entry.get("boot", {}), path, f"{key}.boot")
        menu.append(MenuItem(item_type, description, boot_files))
    if sum(3 + len(m.description.encode()) for m in menu) > 255:
        raise ConfigError(
            path, "pxe.menu", "the descriptions do not fit one 255-byte PXE_BOOT_MENU"
        )
    prompt = table.get("menu_prompt", PxeConfig.menu_prompt)
    if not isinstance(prompt, str) or len(prompt.encode()) > 200:
        raise ConfigError(path, "pxe.menu_prompt", "must be a string of at most 200 bytes")
    return PxeConfig(
        server_address=server_address,
        boot=boot,
        tftp_server=tftp_server,
        server_name=server_name,
        address=address,
        port=_int(table, "port", 1, 65535, 67, path),
        pxe_port=_int(table, "pxe_port", 1, 65535, 4011, path),
        colocated=colocated,
        subnets=tuple(subnets),
        menu=tuple(menu),
        menu_prompt=prompt,
        menu_timeout=_int(table, "menu_timeout", 0, 255, 10, path),
    )
