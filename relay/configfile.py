"""The relay's TOML configuration file: load, validate, turn into a RelayConfig.

The schema (documented in ``config/relay.toml``)::

    helpers = ["10.9.0.10"]          # top level: RelayConfig fields, plus the shell's settings
    [[interface]]                    # one table per interface: InterfaceConfig fields
    name = "eth1"
    [[class]]                        # forwarding classes, first match wins (relay.classes)
    name = "pxe"
    vendor_class = ["PXEClient"]
    helpers = ["10.9.0.10", "10.9.0.20"]

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
from typing import Any

from .classes import DEFAULT_CLASS, ForwardingClass
from .config import (
    DEFAULT_MAX_HOPS,
    DEFAULT_MAX_PACKET_SIZE,
    AgentPolicy,
    InterfaceConfig,
    RelayConfig,
)
from .interfaces import Role
from .settings import ConfigError, Listen, Validator, parse_hex, parse_listen, read_toml
from .shell import FORMATS, LEVELS
from .throttle import BucketLimit, RateLimits
from .wire import DHCP_MIN_MAX_SIZE

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
    """A RelayConfig plus the settings of the shell around the engine."""

    relay: RelayConfig
    stats_interval: float = DEFAULT_STATS_INTERVAL
    log_format: str | None = None
    log_level: str | None = None
    #: Where Prometheus scrapes the counters (``metrics = "HOST:PORT"``).
    metrics: Listen | None = None


TOP_KEYS = frozenset(
    {"helpers", "extra_servers", "max_hops", "agent_info", "agent_policy", "remote_id",
     "max_packet_size", "stats_interval", "log_format", "log_level", "metrics", "interface",
     "reply_giaddr", "relay_port", "class", "rate_limit"}
)
INTERFACE_KEYS = frozenset(
    {"name", "role", "trusted", "giaddr", "helpers", "circuit_id", "remote_id", "link_selection",
     "server_id_override"}
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
    if not helpers and not v.failed("helpers"):
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
        extra_servers=extra, reply_giaddr=reply_giaddr, relay_port=relay_port, classes=classes,
        rate_limits=rate_limits,
    )
    return RelaySettings(relay, stats_interval, log_format, log_level, metrics)


def _interface(v: Validator) -> InterfaceConfig:
    v.unknown_keys(INTERFACE_KEYS)
    name = v.string("name", required="every [[interface]] needs a name") or ""
    if name and (len(name) > IFNAME_MAX or "/" in name or any(c.isspace() for c in name)):
        v.fail("name", f"{name!r} is not a valid interface name")
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
