"""The lab's description (config/lab.toml): subnets, server hosts, clients; validated on load."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Any

from boothop.relay.configfile import ConfigError

CLIENT_KINDS = ("pxe", "pxe-spec", "dhclient", "udhcpc", "bootp")
RELAYS = ("boothop", "dhcrelay")
_NAME = re.compile(r"^[a-z][a-z0-9]{0,7}$")
_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")


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

    def with_relay(self, relay: str) -> LabSpec:
        return dataclasses.replace(self, relay=relay)


def load_lab(path: str | Path) -> LabSpec:
    path = str(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as error:
        raise ConfigError(path, "-", f"cannot read: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(path, "-", f"not valid TOML: {error}") from None
    return parse_lab(data, path)


def parse_lab(data: dict[str, Any], path: str) -> LabSpec:
    _known(data, {"prefix", "relay", "client_timeout", "servers", "subnet", "client"}, "", path)
    prefix = data.get("prefix", "bhlab")
    if not isinstance(prefix, str) or not re.match(r"^[a-z][a-z0-9]{0,7}$", prefix):
        raise ConfigError(path, "prefix", "1-8 lower-case letters and digits, starting with a letter")
    relay = data.get("relay", "boothop")
    if relay not in RELAYS:
        raise ConfigError(path, "relay", f"one of {', '.join(RELAYS)}")
    timeout = data.get("client_timeout", 90)
    if not isinstance(timeout, int | float) or not 5 <= timeout <= 600:
        raise ConfigError(path, "client_timeout", "seconds, between 5 and 600")
    servers = data.get("servers")
    if not isinstance(servers, dict):
        raise ConfigError(path, "servers", "required table with router, dhcp and pxe addresses")
    _known(servers, {"router", "dhcp", "pxe"}, "servers.", path)
    upstream = _interface(servers, "router", "servers.", path)
    dhcp = _interface(servers, "dhcp", "servers.", path)
    pxe = _interface(servers, "pxe", "servers.", path)
    for key, address in (("dhcp", dhcp), ("pxe", pxe)):
        if address.network != upstream.network:
            raise ConfigError(path, f"servers.{key}", f"not in the router's network {upstream.network}")
    subnets = tuple(_subnet(t, i, path) for i, t in enumerate(_tables(data, "subnet", path)))
    if not subnets:
        raise ConfigError(path, "subnet", "at least one client subnet is needed")
    names = [s.name for s in subnets]
    if len(set(names)) != len(names):
        raise ConfigError(path, "subnet", "subnet names must be unique")
    networks = [upstream.network, *(s.router.network for s in subnets)]
    for i, a in enumerate(networks):
        for b in networks[i + 1 :]:
            if a.overlaps(b):
                raise ConfigError(path, "subnet", f"networks {a} and {b} overlap")
    clients = tuple(
        _client(t, i, {s.name: s for s in subnets}, path)
        for i, t in enumerate(_tables(data, "client", path))
    )
    if len({c.name for c in clients}) != len(clients):
        raise ConfigError(path, "client", "client names must be unique")
    if len({c.mac for c in clients}) != len(clients):
        raise ConfigError(path, "client", "client MAC addresses must be unique")
    return LabSpec(path, prefix, relay, float(timeout), upstream, dhcp, pxe, subnets, clients)


def _known(table: dict[str, Any], keys: set[str], where: str, path: str) -> None:
    for key in table:
        if key not in keys:
            raise ConfigError(path, f"{where}{key}", "unknown key")


def _tables(data: dict[str, Any], key: str, path: str) -> list[dict[str, Any]]:
    tables = data.get(key, [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(path, key, f"must be [[{key}]] tables")
    return tables


def _interface(table: dict[str, Any], key: str, where: str, path: str) -> ipaddress.IPv4Interface:
    value = table.get(key)
    try:
        interface = ipaddress.IPv4Interface(value)
    except (ValueError, TypeError):
        raise ConfigError(path, f"{where}{key}", f"an address with prefix length, e.g. 10.90.0.1/24, not {value!r}") from None
    if interface.network.prefixlen > 30 or "/" not in str(value):
        raise ConfigError(path, f"{where}{key}", "needs a prefix length of at most /30")
    return interface


def _address(value: Any, key: str, path: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except (ValueError, TypeError):
        raise ConfigError(path, key, f"not an IPv4 address: {value!r}") from None


def _subnet(table: dict[str, Any], index: int, path: str) -> SubnetSpec:
    where = f"subnet[{index}]."
    _known(table, {"name", "router", "pool"}, where, path)
    name = table.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(path, f"{where}name", "1-8 lower-case letters and digits, starting with a letter")
    router = _interface(table, "router", where, path)
    pool = table.get("pool")
    if not isinstance(pool, list) or len(pool) != 2:
        raise ConfigError(path, f"{where}pool", "a list of the first and the last address")
    first, last = (_address(a, f"{where}pool", path) for a in pool)
    if not (first in router.network and last in router.network and first <= last):
        raise ConfigError(path, f"{where}pool", f"must be an ascending range inside {router.network}")
    if first <= router.ip <= last:
        raise ConfigError(path, f"{where}pool", f"contains the router's address {router.ip}")
    return SubnetSpec(name, router, (first, last))


def _client(
    table: dict[str, Any], index: int, subnets: dict[str, SubnetSpec], path: str
) -> ClientSpec:
    where = f"client[{index}]."
    _known(table, {"name", "kind", "subnet", "mac", "address"}, where, path)
    name = table.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(path, f"{where}name", "1-8 lower-case letters and digits, starting with a letter")
    kind = table.get("kind")
    if kind not in CLIENT_KINDS:
        raise ConfigError(path, f"{where}kind", f"one of {', '.join(CLIENT_KINDS)}")
    subnet = table.get("subnet")
    if subnet not in subnets:
        raise ConfigError(path, f"{where}subnet", f"no subnet named {subnet!r}")
    mac = str(table.get("mac", "")).lower()
    if not _MAC.match(mac) or int(mac[:2], 16) & 1:
        raise ConfigError(path, f"{where}mac", "a unicast MAC address like 02:00:00:00:00:01")
    address = None
    if "address" in table:
        address = _address(table["address"], f"{where}address", path)
        network = subnets[subnet].router.network
        if address not in network:
            raise ConfigError(path, f"{where}address", f"not in subnet {subnet} ({network})")
    if kind == "bootp" and address is None:
        raise ConfigError(path, f"{where}address", "a BOOTP client needs its reserved address")
    return ClientSpec(name, kind, subnet, mac, address)
