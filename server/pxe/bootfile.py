"""Which boot file a client gets: by menu item, user class, subnet and architecture."""

from __future__ import annotations

from ipaddress import IPv4Address

from boothop.relay.wire import ClientArch
from boothop.relay.wire.pxe import HTTP_TWINS, user_classes

from .config import URL_SCHEMES, BootFiles, PxeConfig

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
    http: bool = False,
) -> str | None:
    """The boot file, or None when none is configured for this client.

    An iPXE client gets the iPXE script rather than the loader again, so chainloading stops
    (the dnsmasq/iPXE "chainloading loop" otherwise). Without option 93 the client is BIOS
    (PXE spec 2.1 clients before RFC 4578 did not send it). A UEFI HTTP client (``http``) gets
    a URL: its own architecture's entry, else its PXE twin's, a relative name made absolute
    with ``config.http_url``; None when there is no URL to give.
    """
    tables = _tables(config, link, menu_type)
    found = None
    if ipxe:
        found = next((table.ipxe for table in tables if table.ipxe is not None), None)
    wanted = arches or [ClientArch.BIOS]
    if http:
        wanted = [*wanted, *(HTTP_TWINS[a] for a in wanted if a in HTTP_TWINS)]
    for arch in wanted:
        if found is not None:
            break
        found = next((table.by_arch[arch] for table in tables if arch in table.by_arch), None)
    if found is None or not http:
        return found
    return boot_url(config.http_url, found)


def boot_url(base: str, file: str) -> str | None:
    """``file`` as an HTTP boot URL: as given when it is one, else under ``base`` (None when
    there is no base)."""
    if file.startswith(URL_SCHEMES):
        return file
    if not base:
        return None
    return base.rstrip("/") + "/" + file.lstrip("/")
