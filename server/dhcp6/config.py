"""The [dhcp6] table: DHCPv6 subnets (by prefix), address pools, reservations by DUID or by
client link-layer address, lifetimes, options and boot URLs, validated (file, key, reason)."""

from __future__ import annotations

import dataclasses
from functools import cached_property, partial
from ipaddress import IPv6Address, IPv6Network
from typing import Any

from boothop.relay.settings import Validator, parse_hex, validate_section
from boothop.relay.wire.dhcpv6 import Opt6, encode_addresses, encode_domains
from boothop.server.pxe.config import BootFiles, boot_files

#: RFC 8415 §11.1: "A DUID ... MUST NOT be longer than 128 octets (not including the type
#: code)": 2 + 128.
MAX_DUID = 130
#: Booting clients announce themselves in Vendor Class (16) data as in DHCPv4's option 60.
URL_SCHEMES6 = ("tftp://", "http://", "https://")


@dataclasses.dataclass(frozen=True)
class Pool6:
    first: IPv6Address
    last: IPv6Address

    def __contains__(self, address: IPv6Address) -> bool:
        return self.first <= address <= self.last

    @property
    def size(self) -> int:
        return int(self.last) - int(self.first) + 1


@dataclasses.dataclass(frozen=True)
class Reservation6:
    address: IPv6Address
    duid: bytes | None = None
    #: The client's link-layer address (RFC 6939 option 79 from its relay, or its DUID-LL/LLT).
    mac: bytes | None = None


@dataclasses.dataclass(frozen=True)
class Subnet6:
    prefix: IPv6Network
    pools: tuple[Pool6, ...] = ()
    reservations: tuple[Reservation6, ...] = ()
    #: Direct (unrelayed) clients arriving on this interface belong here.
    interface: str | None = None
    preferred_lifetime: int = 3600
    valid_lifetime: int = 7200
    renewal_time: int | None = None
    rebinding_time: int | None = None

    @cached_property
    def name(self) -> str:
        return str(self.prefix)

    @property
    def t1(self) -> int:
        """RFC 8415 §21.4: T1 defaults here to half the preferred lifetime."""
        return self.renewal_time if self.renewal_time is not None else self.preferred_lifetime // 2

    @property
    def t2(self) -> int:
        if self.rebinding_time is not None:
            return self.rebinding_time
        return self.preferred_lifetime * 4 // 5

    def in_pool(self, address: IPv6Address) -> bool:
        return any(address in pool for pool in self.pools)


@dataclasses.dataclass(frozen=True)
class Dhcp6Config:
    subnets: tuple[Subnet6, ...]
    lease_db: str
    #: The server's DUID (option 2); None: the shell derives a DUID-UUID from the host name.
    server_duid: bytes | None = None
    port: int = 547
    #: RFC 8415 §18.3.1: answer a Solicit that carries Rapid Commit with a committed Reply.
    rapid_commit: bool = True
    #: Seconds an advertised address is kept for the client that was offered it.
    offer_hold: float = 30.0
    decline_time: float = 86400.0
    #: Encoded options sent when the client's Option Request asks for them, by code.
    options: tuple[tuple[int, bytes], ...] = ()
    #: Bootfile-URL (59) by client architecture (option 61): tftp://[...]/... or http://...
    boot_urls: tuple[tuple[int, str], ...] = ()
    #: Bootfile-URL for iPXE (User Class "iPXE"), whatever its architecture: its script, which
    #: ends the loop of an iPXE that was itself the boot file (as option 77 does in DHCPv4).
    ipxe_url: str | None = None
    #: Bootfile-Parameters (60), sent with a Bootfile-URL.
    boot_params: tuple[str, ...] = ()


def _pool(text: str) -> Pool6:
    first, dash, last = text.partition("-")
    if not dash:
        raise ValueError(f"expected FIRST-LAST, not {text!r}")
    pool = Pool6(IPv6Address(first.strip()), IPv6Address(last.strip()))
    if pool.first > pool.last:
        raise ValueError(f"{text!r}: the first address is after the last")
    return pool


def _duid(value: Any) -> bytes:
    duid = parse_hex(value, MAX_DUID)
    if len(duid) < 3:
        raise ValueError("a DUID is a 2-octet type and at least one octet")
    return duid


def _address6(value: Any) -> IPv6Address:
    if not isinstance(value, str):
        raise TypeError(f"must be an IPv6 address string, not {value!r}")
    return IPv6Address(value)


def _prefix(value: Any) -> IPv6Network:
    if not isinstance(value, str):
        raise TypeError(f"must be an IPv6 prefix string, not {value!r}")
    prefix = IPv6Network(value)
    if prefix.prefixlen > 120:
        raise ValueError(f"{prefix} is too small to serve clients")
    return prefix


def _reservation(v: Validator, prefix: IPv6Network | None) -> Reservation6 | None:
    v.unknown_keys({"address", "duid", "mac"})
    address = v.convert("address", _address6, required="a reservation needs an address")
    duid = v.convert("duid", _duid)
    mac = v.hex_octets("mac", 16)
    if "duid" not in v.data and "mac" not in v.data:
        v.fail("duid", "a reservation needs a duid or a mac")
    if address is not None and prefix is not None and address not in prefix:
        v.fail("address", f"{address} is outside its prefix {prefix}")
    if v.failed() or address is None:
        return None
    return Reservation6(address, duid, mac)


def _subnet(v: Validator) -> Subnet6 | None:
    v.unknown_keys({"prefix", "pools", "reservations", "interface", "preferred_lifetime",
                    "valid_lifetime", "renewal_time", "rebinding_time"})
    prefix = v.convert("prefix", _prefix, required='the link\'s prefix, e.g. "2001:db8:1::/64"')
    pools = []
    for index, text in enumerate(v.strings("pools")):
        pool = v.attempt(f"pools[{index}]", partial(_pool, text))
        if pool is not None and prefix is not None and (
                pool.first not in prefix or pool.last not in prefix):
            v.fail(f"pools[{index}]", f"pool {text} is outside its prefix {prefix}")
        elif pool is not None:
            pools.append(pool)
    reservations = [_reservation(r, prefix) for r in v.tables("reservations")]
    subnet = Subnet6(
        prefix=prefix or IPv6Network("::/0"), pools=tuple(pools),
        reservations=tuple(r for r in reservations if r is not None),
        interface=v.string("interface"),
        preferred_lifetime=v.integer("preferred_lifetime", 3600, 60, 0xFFFFFFFE),
        valid_lifetime=v.integer("valid_lifetime", 7200, 60, 0xFFFFFFFE),
        renewal_time=v.integer("renewal_time", None, 1, 0xFFFFFFFE),
        rebinding_time=v.integer("rebinding_time", None, 1, 0xFFFFFFFE),
    )
    # RFC 8415 §21.6: "preferred-lifetime ... MUST NOT be greater than valid-lifetime"; §21.4:
    # T1 <= T2, and T2 below the preferred lifetime so clients renew before it ends.
    if not v.failed() and subnet.preferred_lifetime > subnet.valid_lifetime:
        v.fail("preferred_lifetime", "cannot exceed valid_lifetime")
    if not v.failed() and not subnet.t1 <= subnet.t2 <= subnet.preferred_lifetime:
        v.fail("renewal_time", "need renewal_time <= rebinding_time <= preferred_lifetime")
    return None if v.failed() or prefix is None else subnet


def _options(v: Validator | None) -> tuple[tuple[int, bytes], ...]:
    """``dns-servers = ["2001:db8::53"]`` (23) and ``domain-search = ["lab.test"]`` (24)."""
    if v is None:
        return ()
    v.unknown_keys({"dns-servers", "domain-search"})
    options = []
    servers = v.convert("dns-servers", lambda value: encode_addresses(
        _address6(a) for a in _string_list(value)))
    if servers is not None:
        options.append((int(Opt6.DNS_SERVERS), servers))
    domains = v.convert("domain-search", lambda value: encode_domains(_string_list(value)))
    if domains is not None:
        options.append((int(Opt6.DOMAIN_LIST), domains))
    return tuple(options)


def _string_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TypeError(f"must be a list of strings, not {value!r}")
    return value


def _boot(v: Validator | None) -> BootFiles:
    if v is None:
        return BootFiles()
    table = boot_files(v)
    for name, value in v.data.items():
        if isinstance(value, str) and not value.startswith(URL_SCHEMES6):
            v.fail(name, f"must be a tftp://, http:// or https:// URL, not {value!r}")
    return table


def parse_dhcp6(table: object, path: str, default_lease_db: str) -> Dhcp6Config:
    """Validate a [dhcp6] table on its own; ConfigError lists every problem."""
    return validate_section(path, "dhcp6", table, partial(read_dhcp6,
                                                          default_lease_db=default_lease_db))


def read_dhcp6(v: Validator, *, default_lease_db: str) -> Dhcp6Config | None:
    """The [dhcp6] table; None if it had problems (recorded in ``v``). The lease database is
    [dhcp]'s unless given: both families' leases live in one store."""
    v.unknown_keys({"subnets", "lease_db", "server_duid", "port", "rapid_commit", "offer_hold",
                    "decline_time", "options", "boot", "boot_params"})
    tables = v.tables("subnets")
    if not tables and not v.failed("subnets"):
        v.fail("subnets", "expected at least one [[dhcp6.subnets]] table")
    subnets = [s for t in tables if (s := _subnet(t)) is not None]
    for n, subnet in enumerate(subnets):
        for other in subnets[:n]:
            if subnet.prefix.overlaps(other.prefix):
                v.fail(f"subnets[{n}].prefix", f"{subnet.prefix} overlaps {other.prefix}")
    params = v.strings("boot_params")
    boot = _boot(v.table("boot"))
    config = Dhcp6Config(
        subnets=tuple(subnets),
        lease_db=v.string("lease_db", default_lease_db) or default_lease_db,
        server_duid=v.convert("server_duid", _duid),
        port=v.integer("port", 547, 1, 65535),
        rapid_commit=v.boolean("rapid_commit", True),
        offer_hold=v.number("offer_hold", 30.0, 0),
        decline_time=v.number("decline_time", 86400.0, 0),
        options=_options(v.table("options")),
        boot_urls=tuple(boot.by_arch.items()),
        ipxe_url=boot.ipxe,
        boot_params=params,
    )
    return None if v.failed() else config
