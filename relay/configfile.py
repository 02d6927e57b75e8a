"""The relay's TOML configuration file: load, validate, turn into a RelayConfig.

The schema (documented in ``config/relay.toml``)::

    helpers = ["10.9.0.10"]          # top level: RelayConfig fields, plus the shell's settings
    [[interface]]                    # one table per interface: InterfaceConfig fields
    name = "eth1"

Every error is a ConfigError naming the file, the dotted key (``interface[1].giaddr``, counting
from 0) and the reason. The command line is merged in as the same raw data before validation,
so both paths share one validator.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable, Mapping
from ipaddress import AddressValueError, IPv4Address
from pathlib import Path
from typing import Any, TypeVar

from .config import (
    DEFAULT_MAX_HOPS,
    DEFAULT_MAX_PACKET_SIZE,
    AgentPolicy,
    InterfaceConfig,
    RelayConfig,
)
from .interfaces import Role
from .shell import FORMATS, LEVELS
from .wire import DHCP_MIN_MAX_SIZE

#: RFC 1542 §4.1.1: "The relay agent MUST silently discard BOOTREQUEST messages whose 'hops'
#: field exceeds the value 16": a configured limit above 16 would forward such messages.
MAX_HOPS_LIMIT = 16
#: The largest UDP payload in an IPv4 datagram.
MAX_PACKET_LIMIT = 65535 - 20 - 8
DEFAULT_STATS_INTERVAL = 60.0
IFNAME_MAX = 15
T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration that cannot be used: where (file, dotted key) and why."""

    def __init__(self, path: str | Path, key: str, reason: str) -> None:
        self.path = str(path)
        self.key = key
        self.reason = reason
        super().__init__(f"{self.path}: {key}: {reason}")


@dataclasses.dataclass(frozen=True, slots=True)
class RelaySettings:
    """A RelayConfig plus the settings of the shell around the engine."""

    relay: RelayConfig
    stats_interval: float = DEFAULT_STATS_INTERVAL
    log_format: str | None = None
    log_level: str | None = None


TOP_KEYS = frozenset(
    {"helpers", "extra_servers", "max_hops", "agent_info", "agent_policy", "remote_id",
     "max_packet_size", "stats_interval", "log_format", "log_level", "interface"}
)
INTERFACE_KEYS = frozenset(
    {"name", "role", "trusted", "giaddr", "helpers", "circuit_id", "remote_id", "link_selection",
     "server_id_override"}
)


def read_raw(path: str | Path) -> dict[str, Any]:
    """The file's TOML data, unvalidated; ConfigError if it cannot be read or parsed."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as error:
        raise ConfigError(path, "file", f"cannot read: {error.strerror or error}") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(path, "toml", f"syntax error: {error}") from error


def load(path: str | Path) -> RelaySettings:
    """Read and validate a configuration file."""
    return parse(read_raw(path), path)


def parse(data: Mapping[str, Any], source: str | Path) -> RelaySettings:
    """Validate raw TOML-shaped data; ``source`` names it in errors."""
    v = _Validator(str(source))
    v.unknown_keys(data, TOP_KEYS, "")
    helpers = v.addresses(data, "helpers", "helpers")
    extra = v.addresses(data, "extra_servers", "extra_servers")
    max_hops = v.integer(data, "max_hops", "max_hops", DEFAULT_MAX_HOPS, 1, MAX_HOPS_LIMIT)
    agent_info = v.boolean(data, "agent_info", "agent_info", False)
    policy = v.choice(data, "agent_policy", "agent_policy", AgentPolicy, AgentPolicy.REPLACE)
    remote_id = v.octets(data, "remote_id", "remote_id")
    max_size = v.integer(
        data, "max_packet_size", "max_packet_size", DEFAULT_MAX_PACKET_SIZE,
        DHCP_MIN_MAX_SIZE, MAX_PACKET_LIMIT,
    )
    stats_interval = v.number(data, "stats_interval", "stats_interval", DEFAULT_STATS_INTERVAL)
    log_format = v.string_in(data, "log_format", "log_format", FORMATS)
    log_level = v.string_in(data, "log_level", "log_level", LEVELS)

    raw_interfaces = data.get("interface", [])
    if not isinstance(raw_interfaces, list) or not all(isinstance(i, dict) for i in raw_interfaces):
        v.fail("interface", "must be an array of tables ([[interface]])")
    interfaces = tuple(v.interface(raw, f"interface[{n}]") for n, raw in enumerate(raw_interfaces))

    seen: dict[str, int] = {}
    for n, interface in enumerate(interfaces):
        if interface.name in seen:
            v.fail(f"interface[{n}].name", f"{interface.name!r} already configured as "
                   f"interface[{seen[interface.name]}]")
        seen[interface.name] = n
    for n, interface in enumerate(interfaces):
        # RFC 3527: giaddr becomes the address of the named (server-facing) interface.
        if interface.link_selection is not None and interface.link_selection not in seen:
            v.fail(f"interface[{n}].link_selection",
                   f"{interface.link_selection!r} is not a configured interface")
    if not helpers:
        if not interfaces:
            v.fail("helpers", "missing: no helper address to forward requests to")
        for n, interface in enumerate(interfaces):
            if interface.role.faces_clients and not interface.helpers:
                v.fail("helpers", f"missing: client-facing interface[{n}] ({interface.name}) "
                       "has no helpers and there is no global helper list")
    if interfaces and not any(i.role.faces_clients for i in interfaces):
        v.fail("interface", "no client-facing interface (role downstream or both)")

    relay = RelayConfig(
        helpers=helpers, interfaces=interfaces, max_hops=max_hops, agent_info=agent_info,
        agent_policy=policy, remote_id=remote_id, max_packet_size=max_size,
        extra_servers=extra,
    )
    return RelaySettings(relay, stats_interval, log_format, log_level)


class _Validator:
    """Typed getters that raise ConfigError with the source and dotted key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, reason: str) -> None:
        raise ConfigError(self.source, key, reason)

    def unknown_keys(self, data: Mapping[str, Any], allowed: frozenset[str], prefix: str) -> None:
        for key in data:
            if key not in allowed:
                self.fail(f"{prefix}{key}", f"unknown key (known: {', '.join(sorted(allowed))})")

    def _get(self, data: Mapping[str, Any], name: str, key: str,
             kind: type | tuple[type, ...], what: str) -> Any:
        value = data.get(name)
        # bool is an int in Python; TOML keeps them apart and so do we.
        if value is not None and (not isinstance(value, kind) or (
                isinstance(value, bool) and kind is not bool)):
            self.fail(key, f"must be {what}, not {type(value).__name__} {value!r}")
        return value

    def address(self, value: object, key: str) -> IPv4Address:
        if not isinstance(value, str):
            self.fail(key, f"must be an IPv4 address string, not {value!r}")
        try:
            address = IPv4Address(value)
        except AddressValueError:
            self.fail(key, f"{value!r} is not an IPv4 address")
        if address.is_unspecified or address.is_multicast or address == IPv4Address(
                "255.255.255.255"):
            self.fail(key, f"{value} cannot be used here (unspecified, multicast or broadcast)")
        return address

    def addresses(self, data: Mapping[str, Any], name: str, key: str) -> tuple[IPv4Address, ...]:
        values = self._get(data, name, key, list, "a list of IPv4 addresses") or []
        result = tuple(self.address(item, f"{key}[{n}]") for n, item in enumerate(values))
        for n, address in enumerate(result):
            if address in result[:n]:
                self.fail(f"{key}[{n}]", f"{address} is listed twice")
        return result

    def integer(self, data: Mapping[str, Any], name: str, key: str, default: int, low: int,
                high: int) -> int:
        value = self._get(data, name, key, int, "an integer")
        if value is None:
            return default
        if not low <= value <= high:
            self.fail(key, f"{value} out of range {low}..{high}")
        return int(value)

    def number(self, data: Mapping[str, Any], name: str, key: str, default: float) -> float:
        value = self._get(data, name, key, (int, float), "a number of seconds")
        if value is None:
            return default
        if value < 0:
            self.fail(key, f"{value} must be >= 0 (0 disables)")
        return float(value)

    def boolean(self, data: Mapping[str, Any], name: str, key: str, default: bool) -> bool:
        value = self._get(data, name, key, bool, "true or false")
        return default if value is None else bool(value)

    def string(self, data: Mapping[str, Any], name: str, key: str) -> str | None:
        value = self._get(data, name, key, str, "a string")
        if value is not None and not value:
            self.fail(key, "must not be empty")
        return value

    def string_in(self, data: Mapping[str, Any], name: str, key: str,
                  allowed: tuple[str, ...]) -> str | None:
        value = self.string(data, name, key)
        if value is not None and value not in allowed:
            self.fail(key, f"{value!r} is not one of {', '.join(allowed)}")
        return value

    def choice(self, data: Mapping[str, Any], name: str, key: str, enum: Callable[[str], T],
               default: T) -> T:
        value = self.string(data, name, key)
        if value is None:
            return default
        try:
            return enum(value)
        except ValueError:
            allowed = ", ".join(m.value for m in enum)  # type: ignore[attr-defined]
            self.fail(key, f"{value!r} is not one of {allowed}")
        raise AssertionError  # unreachable: fail() raises

    def octets(self, data: Mapping[str, Any], name: str, key: str) -> bytes | None:
        """A sub-option value: a string, sent as UTF-8 (1..255 octets, RFC 3046 §2.0)."""
        value = self.string(data, name, key)
        if value is None:
            return None
        encoded = value.encode()
        if len(encoded) > 255:
            self.fail(key, f"{len(encoded)} octets, a sub-option holds at most 255")
        return encoded

    def interface(self, data: Mapping[str, Any], key: str) -> InterfaceConfig:
        self.unknown_keys(data, INTERFACE_KEYS, f"{key}.")
        name = self.string(data, "name", f"{key}.name")
        if name is None:
            self.fail(f"{key}.name", "missing: every [[interface]] needs a name")
        assert name is not None
        if len(name) > IFNAME_MAX or "/" in name or any(c.isspace() for c in name):
            self.fail(f"{key}.name", f"{name!r} is not a valid interface name")
        giaddr = data.get("giaddr")
        return InterfaceConfig(
            name=name,
            role=self.choice(data, "role", f"{key}.role", Role, Role.DOWNSTREAM),
            trusted=self.boolean(data, "trusted", f"{key}.trusted", False),
            giaddr=None if giaddr is None else self.address(giaddr, f"{key}.giaddr"),
            helpers=self.addresses(data, "helpers", f"{key}.helpers"),
            circuit_id=self.octets(data, "circuit_id", f"{key}.circuit_id"),
            remote_id=self.octets(data, "remote_id", f"{key}.remote_id"),
            link_selection=self.string(data, "link_selection", f"{key}.link_selection"),
            server_id_override=self.boolean(
                data, "server_id_override", f"{key}.server_id_override", False),
        )
