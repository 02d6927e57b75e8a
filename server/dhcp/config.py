"""The [dhcp] section: subnets, pools, reservations and options, validated with file, key and reason."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from boothop.server.errors import ConfigError

from .optiondefs import MANAGED_CODES, encode_value, resolve_name

DEFAULT_LEASE_DB = "/var/lib/boothop/leases.sqlite3"
DEFAULT_COMMIT_WINDOW = 0.001
#: The options of the second field report (PXE-E55): boot redirection on the DHCP server.
PXE_REDIRECT_CODES = {60: "vendor-class-identifier", 66: "tftp-server-name", 67: "bootfile-name"}


@dataclass(frozen=True)
class Pool:
    first: IPv4Address
    last: IPv4Address

    def __contains__(self, address: IPv4Address) -> bool:
        return self.first <= address <= self.last

    @property
    def size(self) -> int:
        return int(self.last) - int(self.first) + 1


@dataclass(frozen=True)
class Reservation:
    address: IPv4Address
    mac: bytes | None = None
    client_id: bytes | None = None
    hostname: str | None = None


@dataclass(frozen=True)
class Subnet:
    network: IPv4Network
    pools: tuple[Pool, ...] = ()
    reservations: tuple[Reservation, ...] = ()
    #: Encoded options in the order they are sent, subnet options over global ones.
    options: tuple[tuple[int, bytes], ...] = ()
    lease_time: int = 3600
    renewal_time: int | None = None
    rebinding_time: int | None = None
    dynamic_bootp: bool = False
    interface: str | None = None
    next_server: IPv4Address | None = None
    boot_file: str | None = None

    def in_pool(self, address: IPv4Address) -> bool:
        return any(address in pool for pool in self.pools)

    @cached_property
    def name(self) -> str:
        """The subnet as text, the key of its leases and offers: made once, not per packet."""
        return str(self.network)

    @property
    def t1(self) -> int:
        return self.renewal_time if self.renewal_time is not None else self.lease_time // 2

    @property
    def t2(self) -> int:
        if self.rebinding_time is not None:
            return self.rebinding_time
        return self.lease_time * 7 // 8


@dataclass(frozen=True)
class DhcpConfig:
    subnets: tuple[Subnet, ...]
    lease_db: str = DEFAULT_LEASE_DB
    server_id: IPv4Address | None = None
    offer_hold: float = 30.0
    decline_time: float = 86400.0
    interfaces: tuple[str, ...] = ()
    port: int = 67
    #: Group commit under steady traffic that arrives a packet at a time: how long the receive
    #: thread waits for more requests to join a burst and its synced transaction (0: never wait;
    #: a burst is then whatever queued meanwhile, e.g. during the previous sync). Replies leave
    #: up to this much later; wake-ups and fsyncs are saved. Never applied to a lone client or
    #: to a backlog. 1 ms: measured, see tests/bench/server_dora.py.
    commit_window: float = DEFAULT_COMMIT_WINDOW
    #: Warnings `check` prints (the configuration is still usable).
    warnings: tuple[str, ...] = field(default=(), compare=False)


class _Table:
    """Reads one TOML table, remembering the dotted key for errors; unknown keys are refused."""

    def __init__(self, data: object, path: str, key: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(path, key, "expected a table")
        self.data: dict[str, Any] = data
        self.path = path
        self.key = key

    def sub(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def error(self, name: str, reason: str) -> ConfigError:
        return ConfigError(self.path, self.sub(name), reason)

    def check_keys(self, allowed: set[str]) -> None:
        for name in self.data:
            if name not in allowed:
                raise self.error(name, f"unknown key (expected one of: {', '.join(sorted(allowed))})")

    def get(self, name: str, convert: Callable[[Any], Any], default: Any = None) -> Any:
        if name not in self.data:
            return default
        try:
            return convert(self.data[name])
        except (ValueError, TypeError) as exc:
            raise self.error(name, str(exc)) from None


def _int(minimum: int, maximum: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
            raise ValueError(f"expected an integer {minimum}..{maximum}, got {value!r}")
        return value
    return convert


def _number(value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise ValueError(f"expected a non-negative number, got {value!r}")
    return float(value)


def _window(value: Any) -> float:
    seconds = _number(value)
    if seconds > 0.1:
        raise ValueError(f"expected at most 0.1 seconds (it delays every ACK), got {value!r}")
    return seconds


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def _address(value: Any) -> IPv4Address:
    return IPv4Address(_str(value))


def _str_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"expected a list of strings, got {value!r}")
    return tuple(value)


def parse_hex_bytes(value: Any) -> bytes:
    """``52:54:00:aa:bb:cc``, ``52-54-...`` or ``525400aabbcc`` -> bytes."""
    text = _str(value).replace(":", "").replace("-", "")
    data = bytes.fromhex(text)
    if not data:
        raise ValueError("empty hardware address or identifier")
    return data


def _mac(value: Any) -> bytes:
    data = parse_hex_bytes(value)
    if len(data) > 16:
        raise ValueError(f"a hardware address is at most 16 bytes, got {len(data)}")
    return data


def _pool(value: Any) -> Pool:
    text = _str(value)
    if "-" in text:
        first, last = (IPv4Address(part.strip()) for part in text.split("-", 1))
    else:
        network = IPv4Network(text)
        first, last = network.network_address + 1, network.broadcast_address - 1
    if last < first:
        raise ValueError(f"pool {text!r} ends before it starts")
    return Pool(first, last)


def parse_options(table: object, path: str, key: str) -> dict[int, bytes]:
    """An options table (``routers = ["10.0.0.1"]``, ``option-250 = "hex:01"``) -> code: bytes."""
    options = _Table(table, path, key)
    result: dict[int, bytes] = {}
    for name, value in options.data.items():
        definition = resolve_name(name)
        if definition is None:
            raise options.error(name, 'unknown option name (use a known name or "option-N")')
        if definition.code in MANAGED_CODES:
            raise options.error(
                name, f"option {definition.code} ({MANAGED_CODES[definition.code]}) is set by the server"
            )
        try:
            result[definition.code] = encode_value(definition.kind, value)
        except ValueError as exc:
            raise options.error(name, str(exc)) from None
    return result


def _reservation(table: _Table, network: IPv4Network) -> Reservation:
    table.check_keys({"address", "mac", "client_id", "hostname"})
    if "address" not in table.data:
        raise table.error("address", "a reservation needs an address")
    address = table.get("address", _address)
    mac = table.get("mac", _mac)
    client_id = table.get("client_id", parse_hex_bytes)
    if mac is None and client_id is None:
        raise table.error("mac", "a reservation needs a mac or a client_id")
    if address not in network or address in (network.network_address, network.broadcast_address):
        raise table.error("address", f"{address} is outside its subnet {network}")
    return Reservation(address, mac, client_id, table.get("hostname", _str))


def _subnet(table: _Table, global_options: dict[int, bytes]) -> Subnet:
    table.check_keys({
        "subnet", "pools", "reservations", "options", "lease_time", "renewal_time",
        "rebinding_time", "dynamic_bootp", "interface", "next_server", "boot_file",
    })
    if "subnet" not in table.data:
        raise table.error("subnet", "missing (e.g. subnet = \"10.0.1.0/24\")")
    network = table.get("subnet", lambda v: IPv4Network(_str(v)))
    if network.prefixlen > 30:
        raise table.error("subnet", f"{network} is too small to serve clients")
    pools: list[Pool] = []
    for index, text in enumerate(table.get("pools", _str_list, ())):
        key = f"pools[{index}]"
        try:
            pool = _pool(text)
        except ValueError as exc:
            raise table.error(key, str(exc)) from None
        if pool.first not in network or pool.last not in network:
            raise table.error(key, f"pool {text} is outside its subnet {network}")
        if network.network_address in pool or network.broadcast_address in pool:
            raise table.error(key, f"pool {text} includes the network or broadcast address")
        pools.append(pool)
    options = dict(global_options)
    if "options" in table.data:
        options.update(parse_options(table.data["options"], table.path, table.sub("options")))
    options.setdefault(1, network.netmask.packed)
    reservations: list[Reservation] = []
    raw_reservations = table.data.get("reservations", [])
    if not isinstance(raw_reservations, list):
        raise table.error("reservations", "expected an array of tables ([[...reservations]])")
    for index, raw in enumerate(raw_reservations):
        reservations.append(_reservation(_Table(raw, table.path, table.sub(f"reservations[{index}]")), network))
    lease_time = table.get("lease_time", _int(60, 0xFFFFFFFE), 3600)
    renewal = table.get("renewal_time", _int(1, 0xFFFFFFFE))
    rebinding = table.get("rebinding_time", _int(1, 0xFFFFFFFE))
    subnet = Subnet(
        network=network, pools=tuple(pools), reservations=tuple(reservations),
        options=tuple(sorted(options.items())), lease_time=lease_time, renewal_time=renewal,
        rebinding_time=rebinding, dynamic_bootp=table.get("dynamic_bootp", _bool, False),
        interface=table.get("interface", _str), next_server=table.get("next_server", _address),
        boot_file=table.get("boot_file", _str),
    )
    # RFC 2131 §4.4.5: T1 < T2 < lease time, or the client's timers make no sense.
    if not subnet.t1 < subnet.t2 < subnet.lease_time:
        raise table.error("renewal_time", "need renewal_time < rebinding_time < lease_time")
    return subnet


def _check_overlaps(subnets: list[Subnet], path: str) -> None:
    for i, subnet in enumerate(subnets):
        for j in range(i):
            if subnet.network.overlaps(subnets[j].network):
                raise ConfigError(path, f"dhcp.subnets[{i}].subnet",
                                  f"{subnet.network} overlaps dhcp.subnets[{j}] ({subnets[j].network})")
        pools = subnet.pools
        for a in range(len(pools)):
            for b in range(a):
                if pools[a].first <= pools[b].last and pools[b].first <= pools[a].last:
                    raise ConfigError(path, f"dhcp.subnets[{i}].pools[{a}]",
                                      f"pool overlaps pools[{b}] ({pools[b].first}-{pools[b].last})")
        seen: dict[object, int] = {}
        for r_index, reservation in enumerate(subnet.reservations):
            key = f"dhcp.subnets[{i}].reservations[{r_index}]"
            for what, ident in (("address", reservation.address), ("mac", reservation.mac),
                                ("client_id", reservation.client_id)):
                if ident is None:
                    continue
                if (what, ident) in seen:
                    raise ConfigError(path, f"{key}.{what}",
                                      f"same {what} as reservations[{seen[(what, ident)]}]")
                seen[(what, ident)] = r_index


def parse_dhcp(table: object, path: str, *, pxe_colocated: bool | None = None) -> DhcpConfig:
    """Parse and validate [dhcp]. ``pxe_colocated`` is None when no [pxe] section is present."""
    dhcp = _Table(table, path, "dhcp")
    dhcp.check_keys({"lease_db", "server_id", "offer_hold", "decline_time", "interfaces", "port",
                     "options", "subnets", "commit_window"})
    global_options = (parse_options(dhcp.data["options"], path, "dhcp.options")
                      if "options" in dhcp.data else {})
    raw_subnets = dhcp.data.get("subnets", [])
    if not isinstance(raw_subnets, list) or not raw_subnets:
        raise dhcp.error("subnets", "expected at least one [[dhcp.subnets]] table")
    subnets = [_subnet(_Table(raw, path, f"dhcp.subnets[{i}]"), global_options)
               for i, raw in enumerate(raw_subnets)]
    _check_overlaps(subnets, path)
    warnings = []
    if not pxe_colocated:
        for index, subnet in enumerate(subnets):
            for code, value in subnet.options:
                if code in PXE_REDIRECT_CODES and (code != 60 or value.startswith(b"PXEClient")):
                    warnings.append(
                        f"{path}: dhcp.subnets[{index}].options: option {code} "
                        f"({PXE_REDIRECT_CODES[code]}) set while no co-located PXE server runs here: "
                        "PXE clients will try port 4011 on this host and fail (PXE-E55); put the PXE "
                        "server in the router's helper table instead"
                    )
    return DhcpConfig(
        subnets=tuple(subnets),
        lease_db=dhcp.get("lease_db", _str, DEFAULT_LEASE_DB),
        server_id=dhcp.get("server_id", _address),
        offer_hold=dhcp.get("offer_hold", _number, 30.0),
        decline_time=dhcp.get("decline_time", _number, 86400.0),
        interfaces=dhcp.get("interfaces", _str_list, ()),
        port=dhcp.get("port", _int(0, 65535), 67),
        commit_window=dhcp.get("commit_window", _window, DEFAULT_COMMIT_WINDOW),
        warnings=tuple(warnings),
    )
