"""Which boot file a client gets: by menu item, user class, subnet and architecture."""

from __future__ import annotations

from ipaddress import IPv4Address

from boothop.relay.wire import ClientArch
from boothop.relay.wire.pxe import user_classes

from .config import BootFiles, PxeConfig

IPXE_USER_CLASS = b"iPXE"


def is_ipxe(user_class: bytes | None) -> bool:
    """iPXE sends option 77 as the bare string "iPXE"; RFC 3004 clients prefix each class with
    its length: either way "iPXE" is one of ``user_classes``."""
    return user_class is not None and IPXE_USER_CLASS in user_classes(user_class)


def _tables(config: PxeConfig, link: IPv4Address | None, menu_type: int | None) -> list[BootFiles]:
    """Boot tables to look in, most specific first."""
    if menu_type is not None:
        return [item.boot for item in config.menu if item.type == menu_type]
    tables = [s.boot for s in config.subnets if link is not None and link in s.network][:1]
    return [*tables, config.boot]


def choose(
    config: PxeConfig,
    arches: list[int],
    ipxe: bool,
    link: IPv4Address | None,
    menu_type: int | None = None,
) -> str | None:
    """The boot file, or None when none is configured for this client.

    An iPXE client gets the iPXE script rather than the loader again, so chainloading stops
    (the dnsmasq/iPXE "chainloading loop" otherwise). Without option 93 the client is BIOS
    (PXE spec 2.1 clients before RFC 4578 did not send it).
    """
    tables = _tables(config, link, menu_type)
    if ipxe:
        for table in tables:
            if table.ipxe is not None:
                return table.ipxe
    for arch in arches or [ClientArch.BIOS]:
        for table in tables:
            if arch in table.by_arch:
                return table.by_arch[arch]
    return None
