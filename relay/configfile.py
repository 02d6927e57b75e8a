"""The relay's TOML configuration file: load, validate, turn into a RelayConfig.

The schema (documented in ``config/relay.toml``)::

    helpers = ["10.9.0.10"]          # top level: RelayConfig fields, plus the shell's settings
    [[interface]]                    # one table per interface: InterfaceConfig fields
    name = "eth1"
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
import os
from collections.abc import Mapping
from ipaddress import IPv6Address
from typing import Any

from .config import (
    DEFAULT_MAX_HOPS,
    DEFAULT_MAX_PACKET_SIZE,
    AgentPolicy,
    InterfaceConfig,
    LowerInterface6,
    Relay6Config,
    RelayConfig,
    Upstream6,
)
from .interfaces import Role
from .settings import ConfigError, Listen, Validator, parse_listen, read_toml
from .shell import FORMATS, LEVELS
from .wire import DHCP_MIN_MAX_SIZE
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
     "reply_giaddr", "relay_port", "dhcpv6"}
)
DHCPV6_KEYS = frozenset(
    {"lower", "upper", "remote_id", "remote_id_enterprise", "subscriber_id", "client_link_layer"}
)
INTERFACE_KEYS = frozenset(
    {"name", "role", "trusted", "giaddr", "helpers", "circuit_id", "remote_id", "link_selection",
     "server_id_override"}
)


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

    v.finish()
    relay = RelayConfig(
        helpers=helpers, interfaces=interfaces, max_hops=max_hops, agent_info=agent_info,
        agent_policy=policy, remote_id=remote_id, max_packet_size=max_size,
        extra_servers=extra, reply_giaddr=reply_giaddr, relay_port=relay_port,
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
    return InterfaceConfig(
        name=name,
        role=Role(v.choice("role", [r.value for r in Role], Role.DOWNSTREAM.value)),
        trusted=v.boolean("trusted", False),
        giaddr=v.address("giaddr", usable=True),
        helpers=v.addresses("helpers"),
        circuit_id=v.octets("circuit_id"),
        remote_id=v.octets("remote_id"),
        link_selection=v.string("link_selection"),
        server_id_override=v.boolean("server_id_override", False),
    )
