"""The relay's TOML configuration file: load, validate, turn into a RelayConfig.

The schema (documented in ``config/relay.toml``)::

    helpers = ["10.9.0.10"]          # top level: RelayConfig fields, plus the shell's settings
    [[interface]]                    # one table per interface: InterfaceConfig fields
    name = "eth1"
    [[class]]                        # forwarding classes, first match wins (relay.classes)
    name = "pxe"
    vendor_class = ["PXEClient"]
    helpers = ["10.9.0.10", "10.9.0.20"]
    [dhcpv6]                         # the DHCPv6 relay (Relay6Config), beside or instead of IPv4
    [[dhcpv6.lower]]                 # dhcrelay -6 -l [link_address%]name
    name = "eth1"
    [[dhcpv6.upper]]                 # dhcrelay -6 -u [address%]interface (ff05::1:3 without)
    interface = "eth0"

Validation goes through ``boothop.relay.settings``: one ConfigError lists every problem, each
naming the file, its line, the dotted key (``interface[1].giaddr``, counting from 0) and the
reason. The command line is merged in as the same raw data before validation, so both paths
share one validator.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from .classes import DEFAULT_CLASS, ForwardingClass
from .config import (
    DEFAULT_MAX_HOPS,
    DEFAULT_MAX_PACKET_SIZE,
    DEFAULT_SMART_RETRIES,
    DEFAULT_UDP_RATE_LIMIT,
    NEVER_FORWARDED_UDP,
    AgentPolicy,
    GiaddrMode,
    InterfaceConfig,
    LowerInterface6,
    Relay6Config,
    RelayConfig,
    UdpForwarding,
    Upstream6,
)
from .interfaces import Role
from .settings import ConfigError, Listen, Validator, parse_hex, parse_listen, read_toml
from .shell import FORMATS, LEVELS
from .throttle import BucketLimit, RateLimits
from .wire import DHCP_MIN_MAX_SIZE, VssType, WireError, vss_value
from .wire.dhcpv6 import ALL_SERVERS

__all__ = ["ConfigError", "RelaySettings", "load", "parse"]

#: RFC 1542 §4.1.1: "The relay agent MUST silently discard BOOTREQUEST messages whose 'hops'
#: field exceeds the value 16": a configured limit above 16 would forward such messages.
MAX_HOPS_LIMIT = 16
#: The largest UDP payload in an IPv4 datagram.
MAX_PACKET_LIMIT = 65535 - 20 - 8
DEFAULT_STATS_INTERVAL = 60.0
IFNAME_MAX = 15


@dataclasses.dataclass(frozen=True, slots=True)
class RelaySettings:
    """The IPv4 and DHCPv6 relays' configurations (either may be absent, not both) plus the
    settings of the shell around the engines."""

    relay: RelayConfig | None
    stats_interval: float = DEFAULT_STATS_INTERVAL
    log_format: str | None = None
    log_level: str | None = None
    #: Where Prometheus scrapes the counters (``metrics = "HOST:PORT"``).
    metrics: Listen | None = None
    relay6: Relay6Config | None = None


TOP_KEYS = frozenset(
    {"helpers", "extra_servers", "max_hops", "agent_info", "agent_policy", "remote_id",
     "max_packet_size", "stats_interval", "log_format", "log_level", "metrics", "interface",
     "reply_giaddr", "relay_port", "smart_retries", "forward_udp", "class", "dhcpv6",
     "rate_limit"}
)
DHCPV6_KEYS = frozenset(
    {"lower", "upper", "remote_id", "remote_id_enterprise", "subscriber_id", "client_link_layer"}
)
INTERFACE_KEYS = frozenset(
    {"name", "role", "trusted", "giaddr", "helpers", "circuit_id", "remote_id", "link_selection",
     "server_id_override", "vss"}
)
CLASS_KEYS = frozenset(
    {"name", "helpers", "vendor_class", "client_arch", "user_class", "mac_prefix", "interfaces"}
)
RATE_LIMIT_KEYS = frozenset(
    {"mac_burst", "mac_rate", "circuit_burst", "circuit_rate", "table_size"}
)
#: Clients tracked per kind: a bound on the relay's memory, not on the clients it serves.
MAX_TABLE_SIZE = 1 << 20
CLASS_CRITERIA = ("vendor_class", "client_arch", "user_class", "mac_prefix", "interfaces")
#: chaddr has 16 octets.
CHADDR_SIZE = 16


def load(path: str | os.PathLike[str]) -> RelaySettings:
    """Read and validate a configuration file."""
    data, text = read_toml(path)
    return parse(data, path, text)


def parse(data: Mapping[str, Any], source: str | os.PathLike[str],
          text: str | None = None) -> RelaySettings:
    """Validate raw TOML-shaped data; ``source`` names it in errors, ``text`` gives the lines."""
    v = Validator(source, data, text)
    v.unknown_keys(TOP_KEYS)
    helpers = v.addresses("helpers")
    extra = v.addresses("extra_servers")
    reply_giaddr = v.address("reply_giaddr", usable=True)
    max_hops = v.integer("max_hops", DEFAULT_MAX_HOPS, 1, MAX_HOPS_LIMIT)
    relay_port = v.integer("relay_port", None, 1, 65535)
    smart_retries = v.integer("smart_retries", DEFAULT_SMART_RETRIES, 1, 16)
    agent_info = v.boolean("agent_info", False)
    policy = AgentPolicy(v.choice("agent_policy", [p.value for p in AgentPolicy],
                                  AgentPolicy.REPLACE.value))
    remote_id = v.octets("remote_id")
    max_size = v.integer("max_packet_size", DEFAULT_MAX_PACKET_SIZE, DHCP_MIN_MAX_SIZE,
                         MAX_PACKET_LIMIT)
    stats_interval = v.number("stats_interval", DEFAULT_STATS_INTERVAL, 0)
    log_format = v.choice("log_format", FORMATS, None)
    log_level = v.choice("log_level", LEVELS, None)
    metrics = v.convert("metrics", parse_listen)
    interfaces = tuple(_interface(table) for table in v.tables("interface"))
    udp_table = v.table("forward_udp")
    forward_udp = None if udp_table is None else _forward_udp(udp_table)
    dhcpv6 = v.table("dhcpv6")
    relay6 = _dhcpv6(dhcpv6) if dhcpv6 is not None else None
    # Only DHCPv6 configured (no helpers, no interfaces): the IPv4 relay does not run.
    ipv4 = dhcpv6 is None or "helpers" in data or "interface" in data

    seen: dict[str, int] = {}
    for n, interface in enumerate(interfaces):
        if v.failed(f"interface[{n}].name"):
            continue
        if interface.name in seen:
            v.fail(f"interface[{n}].name", f"{interface.name!r} already configured as "
                   f"interface[{seen[interface.name]}]")
        seen[interface.name] = n
    for n, interface in enumerate(interfaces):
        # RFC 3527: giaddr becomes the address of the named (server-facing) interface.
        if interface.link_selection is not None and interface.link_selection not in seen:
            v.fail(f"interface[{n}].link_selection",
                   f"{interface.link_selection!r} is not a configured interface")
    if ipv4 and not helpers and not v.failed("helpers"):
        if not interfaces:
            v.fail("helpers", "missing: no helper address to forward requests to")
        for n, interface in enumerate(interfaces):
            if interface.role.faces_clients and not interface.helpers:
                v.fail("helpers", f"missing: client-facing interface[{n}] ({interface.name}) "
                       "has no helpers and there is no global helper list")
    if interfaces and not v.failed("interface") and not any(
            i.role.faces_clients for i in interfaces):
        v.fail("interface", "no client-facing interface (role downstream or both)")
    classes = _classes(v, interfaces)
    table = v.table("rate_limit")
    rate_limits = RateLimits() if table is None else _rate_limits(table)

    v.finish()
    relay = RelayConfig(
        helpers=helpers, interfaces=interfaces, max_hops=max_hops, agent_info=agent_info,
        agent_policy=policy, remote_id=remote_id, max_packet_size=max_size,
        extra_servers=extra, reply_giaddr=reply_giaddr, relay_port=relay_port,
        smart_retries=smart_retries, forward_udp=forward_udp, classes=classes,
        rate_limits=rate_limits,
    ) if ipv4 else None
    return RelaySettings(relay, stats_interval, log_format, log_level, metrics, relay6)


def _dhcpv6(v: Validator) -> Relay6Config:
    """The [dhcpv6] table: at least one lower and one upper interface (as dhcrelay -6 asks)."""
    v.unknown_keys(DHCPV6_KEYS)
    lower = tuple(_lower6(table) for table in v.tables("lower"))
    upper = tuple(_upper6(table) for table in v.tables("upper"))
    if not lower and not v.failed("lower"):
        v.fail("lower", "missing: no client-facing interface ([[dhcpv6.lower]], dhcrelay -l)")
    if not upper and not v.failed("upper"):
        v.fail("upper", "missing: nowhere to relay to ([[dhcpv6.upper]], dhcrelay -u)")
    seen: dict[str, int] = {}
    for n, interface in enumerate(lower):
        if interface.name in seen and not v.failed(f"lower[{n}].name"):
            v.fail(f"lower[{n}].name", f"{interface.name!r} already configured as "
                   f"lower[{seen[interface.name]}]")
        seen.setdefault(interface.name, n)
    remote_id = v.octets("remote_id")
    enterprise = v.integer("remote_id_enterprise", 0, 0, 0xFFFFFFFF)
    return Relay6Config(
        lower=lower, upper=upper,
        remote_id=None if remote_id is None else (enterprise, remote_id),
        subscriber_id=v.octets("subscriber_id"),
        client_link_layer=v.boolean("client_link_layer", False),
    )


def _ipv6(value: object) -> IPv6Address:
    if not isinstance(value, str):
        raise TypeError(f"must be an IPv6 address string, not {value!r}")
    try:
        return IPv6Address(value)
    except ValueError:
        raise ValueError(f"not an IPv6 address: {value!r}") from None


def _lower6(v: Validator) -> LowerInterface6:
    v.unknown_keys({"name", "link_address", "interface_id"})
    name = _interface_name(v)
    link = v.convert("link_address", _ipv6)
    if link is not None and (link.is_multicast or link.is_unspecified):
        v.fail("link_address", f"{link} cannot name a link (multicast or unspecified)")
    return LowerInterface6(name, link, v.octets("interface_id"))


def _upper6(v: Validator) -> Upstream6:
    v.unknown_keys({"interface", "address"})
    name = _interface_name(v, "interface")
    address = v.convert("address", _ipv6)
    if address is not None and address.is_unspecified:
        v.fail("address", "the unspecified address is no destination")
    return Upstream6(name, address or ALL_SERVERS)


def _interface_name(v: Validator, key: str = "name") -> str:
    name = v.string(key, required=f"every table here needs its interface's {key}") or ""
    if name and (len(name) > IFNAME_MAX or "/" in name or any(c.isspace() for c in name)):
        v.fail(key, f"{name!r} is not a valid interface name")
    return name


def _interface(v: Validator) -> InterfaceConfig:
    v.unknown_keys(INTERFACE_KEYS)
    name = _interface_name(v)
    role = Role(v.choice("role", [r.value for r in Role], Role.DOWNSTREAM.value))
    trusted = v.boolean("trusted", False)
    mode, giaddr = _giaddr(v)
    return InterfaceConfig(
        name=name,
        role=role,
        trusted=trusted,
        giaddr=giaddr,
        giaddr_mode=mode,
        helpers=v.addresses("helpers"),
        circuit_id=v.octets("circuit_id"),
        remote_id=v.octets("remote_id"),
        link_selection=v.string("link_selection"),
        server_id_override=v.boolean("server_id_override", False),
        vss=_vss(v),
    )


def _giaddr(v: Validator) -> tuple[GiaddrMode, IPv4Address | None]:
    """``giaddr``: a mode (primary, smart, all) or an address of the interface (pinned)."""
    value = v.data.get("giaddr")
    modes = [mode.value for mode in GiaddrMode]
    if isinstance(value, str) and value in modes:
        return GiaddrMode(value), None
    return GiaddrMode.PRIMARY, v.address("giaddr", usable=True)


FORWARD_UDP_KEYS = frozenset({"ports", "helpers", "helpers_by_port", "rate_limit"})


def _forward_udp(v: Validator) -> UdpForwarding:
    """``[forward_udp]``: ports (never DHCP's), helpers, helpers per port, a rate limit."""
    v.unknown_keys(FORWARD_UDP_KEYS)
    ports: list[int] = []
    for index, port in enumerate(v.value("ports", list, "a list of UDP ports",
                                         required="the UDP ports to forward") or []):
        key = f"ports[{index}]"
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            v.fail(key, f"must be a UDP port 1..65535, not {port!r}")
        elif port in NEVER_FORWARDED_UDP:
            v.fail(key, f"{port} is {NEVER_FORWARDED_UDP[port]}: never forwarded as a plain "
                   "broadcast (DHCP goes through the relay itself)")
        elif port in ports:
            v.fail(key, f"{port} is listed twice")
        else:
            ports.append(port)
    by_port: list[tuple[int, tuple[IPv4Address, ...]]] = []
    table = v.table("helpers_by_port")
    if table is not None:
        for name in table.data:
            port = int(name) if name.isdigit() else 0
            if port not in ports:
                table.fail(name, f"{name!r} is not one of the forwarded ports "
                           f"({', '.join(map(str, ports)) or 'none'})")
                continue
            by_port.append((port, table.addresses(name)))
    return UdpForwarding(
        ports=tuple(ports), helpers=v.addresses("helpers"), port_helpers=tuple(by_port),
        rate_limit=v.integer("rate_limit", DEFAULT_UDP_RATE_LIMIT, 1, 100_000),
    )


def _classes(v: Validator, interfaces: tuple[InterfaceConfig, ...]
             ) -> tuple[ForwardingClass, ...]:
    """The [[class]] tables, in the order of the file (the first that matches wins)."""
    client_facing = {i.name for i in interfaces if i.role.faces_clients}
    classes: list[ForwardingClass] = []
    seen: dict[str, int] = {}
    for n, table in enumerate(v.tables("class")):
        made = _class(table, client_facing if interfaces else None)
        if made is None:
            continue
        if made.name in seen:
            table.fail("name", f"{made.name!r} already names class[{seen[made.name]}]")
        seen[made.name] = n
        classes.append(made)
    return tuple(classes)


def _class(v: Validator, client_facing: set[str] | None) -> ForwardingClass | None:
    """One [[class]]; ``client_facing`` the interfaces it may name (None: any, for the relay
    uses every interface)."""
    v.unknown_keys(CLASS_KEYS)
    name = v.string("name", required="every [[class]] needs a name (counted by it)") or ""
    if name == DEFAULT_CLASS:
        v.fail("name", f"{DEFAULT_CLASS!r} counts the requests no class matches: choose another")
    helpers = v.addresses("helpers")
    if not helpers and not v.failed("helpers"):
        v.fail("helpers", "missing: the helper addresses this class's requests go to")
    if not any(key in v.data for key in CLASS_CRITERIA):
        v.fail("", f"no match criterion ({', '.join(CLASS_CRITERIA)}): it would take every "
               "request, and the classes after it none")
    arches = _arches(v)
    mac_prefix = []
    for index, item in enumerate(v.value("mac_prefix", list, "a list of hex prefixes") or []):
        prefix = v.attempt(f"mac_prefix[{index}]", functools.partial(parse_hex, item, CHADDR_SIZE))
        if prefix is not None:
            mac_prefix.append(prefix)
    names = v.strings("interfaces")
    for index, ifname in enumerate(names):
        if client_facing is not None and ifname not in client_facing:
            v.fail(f"interfaces[{index}]", f"{ifname!r} is not a client-facing [[interface]]")
    vendor_class, user_class = v.strings("vendor_class"), v.strings("user_class")
    if v.failed():
        return None
    return ForwardingClass(
        name=name, helpers=helpers, vendor_class=tuple(text.encode() for text in vendor_class),
        client_arch=arches, user_class=tuple(text.encode() for text in user_class),
        mac_prefix=tuple(mac_prefix), interfaces=frozenset(names),
    )


def _arches(v: Validator) -> frozenset[int]:
    """RFC 4578 §2.1 architecture types (16 bits each): 0 x86 BIOS, 7 x64 UEFI, 16 HTTP..."""
    arches = set()
    for index, item in enumerate(v.value("client_arch", list, "a list of integers") or []):
        if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item <= 0xFFFF:
            v.fail(f"client_arch[{index}]", f"must be an architecture type 0..65535, not {item!r}")
        else:
            arches.add(item)
    return frozenset(arches)


#: ``vss.type`` in the file: RFC 6607 §3.1's types by name.
VSS_TYPES = {"nvt-ascii": VssType.NVT_ASCII, "vpn-id": VssType.VPN_ID, "global": VssType.GLOBAL}


def _vss(v: Validator) -> bytes | None:
    """``vss = { type = "nvt-ascii", id = "blue" }``, ``{ type = "vpn-id", id = "OUI:INDEX" }``
    (7 octets in hex) or ``{ type = "global" }``: the VSS sub-option's value."""
    table = v.table("vss")
    if table is None:
        return None
    table.unknown_keys({"type", "id"})
    name = table.choice("type", list(VSS_TYPES), None)
    if name is None:
        if not table.failed("type"):
            table.fail("type", f"missing: one of {', '.join(VSS_TYPES)}")
        return None
    kind = VSS_TYPES[name]
    if kind is VssType.VPN_ID:
        info = table.hex_octets("id", 7) or b""
    elif kind is VssType.NVT_ASCII:
        info = (table.string("id", required="the VPN identifier") or "").encode()
    else:
        info = b""
        if "id" in table.data:
            table.fail("id", "type global (the default VPN) takes no id")
    if table.failed():
        return None
    try:
        return vss_value(kind, info)
    except WireError as error:
        table.fail("id", str(error))
        return None


def _rate_limits(v: Validator) -> RateLimits:
    """[rate_limit]: a token bucket per MAC and per circuit (``relay.throttle``)."""
    v.unknown_keys(RATE_LIMIT_KEYS)
    default = RateLimits()
    limits = {}
    for kind, limit in (("mac", default.mac), ("circuit", default.circuit)):
        burst = v.number(f"{kind}_burst", limit.burst, 1)
        rate = v.number(f"{kind}_rate", limit.rate, 0)
        limits[kind] = BucketLimit(burst, rate)
    table_size = v.integer("table_size", default.table_size, 1, MAX_TABLE_SIZE)
    return RateLimits(limits["mac"], limits["circuit"], table_size)
