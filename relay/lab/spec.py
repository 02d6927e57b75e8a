"""The lab's description (config/lab.toml): subnets, server hosts, clients; validated on load."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from pathlib import Path
from typing import Any

from boothop.relay.settings import Validator, read_toml

CLIENT_KINDS = ("pxe", "pxe-spec", "dhclient", "udhcpc", "bootp")
RELAYS = ("boothop", "dhcrelay")
#: The firmware boot chains a QEMU client (kind "pxe") can take to a running kernel.
CHAINS = {
    "bios-ipxe": "SeaBIOS, the NIC's iPXE ROM",
    "bios-undionly": "SeaBIOS, a PXE ROM, undionly.kpxe",
    "uefi-pxe": "OVMF PXE (IPv4), ipxe.efi",
    "uefi-http": "OVMF HTTP boot (IPv4), ipxe.efi",
    "uefi-http6": "OVMF HTTP boot (IPv6), ipxe.efi",
}
#: The chains that boot over IPv6. Their subnet is a managed IPv6 link (router advertisements
#: with the M flag, the DHCPv6 relay and server), which the iPXE of an IPv4 chain would follow
#: too (DHCPv6's boot URL comes before DHCPv4's), so the two kinds never share a subnet.
IPV6_CHAINS = frozenset({"uefi-http6"})
DEFAULT_CHAIN = "bios-ipxe"
_NAME = re.compile(r"^[a-z][a-z0-9]{0,7}$")
_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")


def ipv6_twin(address: ipaddress.IPv4Interface) -> ipaddress.IPv6Interface:
    """A lab host's IPv6 address beside its IPv4 one: fd00::/16, the 32 bits of the IPv4
    network, the host's offset in it; /64 (10.90.1.1/24: fd00:a5a:100::1/64)."""
    network = int(address.network.network_address)
    offset = int(address.ip) - network
    return ipaddress.IPv6Interface(((0xFD00 << 112) | (network << 80) | offset, 64))


def is_ipv6_client(client: ClientSpec) -> bool:
    return client.kind == "pxe" and client.chain in IPV6_CHAINS


@dataclasses.dataclass(frozen=True)
class SubnetSpec:
    name: str
    router: ipaddress.IPv4Interface
    pool: tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]


@dataclasses.dataclass(frozen=True)
class ClientSpec:
    name: str
    kind: str
    subnet: str
    mac: str
    #: The reserved address (BOOTP clients, or any client with a reservation).
    address: ipaddress.IPv4Address | None = None
    #: For a QEMU client (kind "pxe"): its firmware boot chain, a key of CHAINS.
    chain: str = DEFAULT_CHAIN


@dataclasses.dataclass(frozen=True)
class LabSpec:
    path: str
    prefix: str
    relay: str
    client_timeout: float
    router_upstream: ipaddress.IPv4Interface
    dhcp_address: ipaddress.IPv4Interface
    pxe_address: ipaddress.IPv4Interface
    subnets: tuple[SubnetSpec, ...]
    clients: tuple[ClientSpec, ...]

    def subnet(self, name: str) -> SubnetSpec:
        return next(s for s in self.subnets if s.name == name)

    @property
    def ipv6_subnets(self) -> tuple[SubnetSpec, ...]:
        """The managed IPv6 links: the subnets with a client of an IPv6 chain."""
        names = {c.subnet for c in self.clients if is_ipv6_client(c)}
        return tuple(s for s in self.subnets if s.name in names)

    def with_relay(self, relay: str) -> LabSpec:
        return dataclasses.replace(self, relay=relay)

    def with_all_chains(self) -> LabSpec:
        """The spec plus a QEMU client for each chain none of its clients takes, with MACs of
        their own: the IPv4 chains spread over the subnets but one, the IPv6 chains on that one
        (the last subnet with no QEMU client of an IPv4 chain), or left out if there is none."""
        qemu = [c for c in self.clients if c.kind == "pxe"]
        taken = {c.chain for c in qemu}
        ipv4_links = {c.subnet for c in qemu if not is_ipv6_client(c)}
        ipv6_links = [s.name for s in self.ipv6_subnets] or [
            s.name for s in self.subnets if s.name not in ipv4_links][-1:]
        spread = [s.name for s in self.subnets if s.name not in ipv6_links] or ipv6_links
        macs = {c.mac for c in self.clients}
        added: list[ClientSpec] = []
        for number, chain in enumerate(c for c in CHAINS if c not in taken):
            links = ipv6_links if chain in IPV6_CHAINS else spread
            if not links:
                continue
            mac = next(m for m in (f"52:54:00:b0:07:{i:02x}" for i in range(1, 256))
                       if m not in macs)
            macs.add(mac)
            subnet = links[len([c for c in added if c.subnet in links]) % len(links)]
            name = "".join(part[0] for part in chain.split("-")) + f"{number + 1}"
            added.append(ClientSpec(name, "pxe", subnet, mac, chain=chain))
        return dataclasses.replace(self, clients=(*self.clients, *added))


def load_lab(path: str | Path) -> LabSpec:
    data, text = read_toml(path)
    return _parse(Validator(path, data, text))


def parse_lab(data: dict[str, Any], path: str) -> LabSpec:
    return _parse(Validator(path, data))


def _parse(v: Validator) -> LabSpec:
    v.unknown_keys({"prefix", "relay", "client_timeout", "servers", "subnet", "client"})
    prefix = _name(v, "prefix", "bhlab")
    relay = v.choice("relay", RELAYS, "boothop")
    timeout = v.number("client_timeout", 90, 5, 600)
    servers = v.table("servers", required="a table with router, dhcp and pxe addresses")
    upstream = dhcp = pxe = None
    if servers is not None:
        servers.unknown_keys({"router", "dhcp", "pxe"})
        upstream, dhcp, pxe = (_interface(servers, key) for key in ("router", "dhcp", "pxe"))
        for key, address in (("dhcp", dhcp), ("pxe", pxe)):
            if upstream and address and address.network != upstream.network:
                servers.fail(key, f"not in the router's network {upstream.network}")
    subnet_tables = v.tables("subnet")
    subnets = [s for s in map(_subnet, subnet_tables) if s is not None]
    if not subnet_tables and not v.failed("subnet"):
        v.fail("subnet", "at least one client subnet is needed")
    names = [s.name for s in subnets]
    if len(set(names)) != len(names):
        v.fail("subnet", "subnet names must be unique")
    networks = [*([upstream.network] if upstream else []), *(s.router.network for s in subnets)]
    for i, a in enumerate(networks):
        for b in networks[i + 1 :]:
            if a.overlaps(b):
                v.fail("subnet", f"networks {a} and {b} overlap")
    by_name = {s.name: s for s in subnets}
    clients = [c for c in (_client(t, by_name) for t in v.tables("client")) if c is not None]
    if len({c.name for c in clients}) != len(clients):
        v.fail("client", "client names must be unique")
    if len({c.mac for c in clients}) != len(clients):
        v.fail("client", "client MAC addresses must be unique")
    mixed = {c.subnet for c in clients if is_ipv6_client(c)} & {
        c.subnet for c in clients if c.kind == "pxe" and not is_ipv6_client(c)}
    if mixed:
        v.fail("client", f"subnet {sorted(mixed)[0]}: a QEMU client of an IPv6 chain "
               f"({', '.join(sorted(IPV6_CHAINS))}) needs a subnet without IPv4 chains: its "
               "managed IPv6 link would send their iPXE to the IPv6 boot too")
    v.finish()
    assert prefix and upstream and dhcp and pxe  # finish() raised otherwise
    return LabSpec(
        v.source, prefix, relay, timeout, upstream, dhcp, pxe, tuple(subnets), tuple(clients)
    )


def _name(v: Validator, key: str, default: str | None = None) -> str | None:
    value = v.value(key, str, "a string", None if default else "a name")
    if value is None:
        return default
    if not _NAME.match(value):
        v.fail(key, "1-8 lower-case letters and digits, starting with a letter")
        return None
    return str(value)


def _to_interface(value: Any) -> ipaddress.IPv4Interface:
    try:
        if not isinstance(value, str) or "/" not in value:
            raise ValueError(value)
        interface = ipaddress.IPv4Interface(value)
    except ValueError:
        raise ValueError(
            f"an address with prefix length, e.g. 10.90.0.1/24, not {value!r}"
        ) from None
    if interface.network.prefixlen > 30:
        raise ValueError("needs a prefix length of at most /30")
    return interface


def _interface(v: Validator, key: str) -> ipaddress.IPv4Interface | None:
    return v.convert(key, _to_interface, required="an address with prefix length")


def _subnet(v: Validator) -> SubnetSpec | None:
    v.unknown_keys({"name", "router", "pool"})
    name = _name(v, "name")
    router = _interface(v, "router")
    pool = v.convert("pool", _pool, required="a list of the first and the last address")
    if pool is None or router is None:
        return None
    first, last = pool
    if not (first in router.network and last in router.network and first <= last):
        v.fail("pool", f"must be an ascending range inside {router.network}")
    elif first <= router.ip <= last:
        v.fail("pool", f"contains the router's address {router.ip}")
    return None if name is None else SubnetSpec(name, router, pool)


def _pool(value: Any) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError("a list of the first and the last address")
    try:
        first, last = (ipaddress.IPv4Address(a) for a in value)
    except ValueError:
        raise ValueError(f"not an IPv4 address: {value!r}") from None
    return first, last


def _client(v: Validator, subnets: dict[str, SubnetSpec]) -> ClientSpec | None:
    v.unknown_keys({"name", "kind", "subnet", "mac", "address", "chain"})
    name = _name(v, "name")
    kind = v.choice("kind", CLIENT_KINDS, None)
    if kind is None and not v.failed("kind"):
        v.fail("kind", f"missing: one of {', '.join(CLIENT_KINDS)}")
    subnet = v.string("subnet", required="the name of a [[subnet]]")
    if subnet is not None and subnet not in subnets:
        v.fail("subnet", f"no subnet named {subnet!r}")
    mac = str(v.data.get("mac", "")).lower()
    if not _MAC.match(mac) or int(mac[:2], 16) & 1:
        v.fail("mac", "a unicast MAC address like 02:00:00:00:00:01")
    address = v.address("address")
    if address is not None and subnet in subnets:
        network = subnets[subnet].router.network
        if address not in network:
            v.fail("address", f"not in subnet {subnet} ({network})")
    if kind == "bootp" and address is None and not v.failed("address"):
        v.fail("address", "a BOOTP client needs its reserved address")
    chain = v.choice("chain", tuple(CHAINS), DEFAULT_CHAIN)
    if "chain" in v.data and kind != "pxe":
        v.fail("chain", "only a QEMU client (kind pxe) has a firmware boot chain")
    if name is None or kind is None or subnet is None or chain is None:
        return None
    return ClientSpec(name, kind, subnet, mac, address, chain)
