"""The [dhcp] section: subnets, pools, reservations and options, validated (file, key, reason)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, partial
from ipaddress import IPv4Address, IPv4Network

from boothop.relay.settings import Validator, validate_section
from boothop.server.pxe.config import URL_SCHEMES, boot_files

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
    #: UEFI HTTP boot: the URL for a client sending option 60 "HTTPClient", by architecture.
    http_boot: tuple[tuple[int, str], ...] = ()

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


MAX_TIME = 0xFFFFFFFE
#: Group commit delays every ACK by up to this much.
MAX_COMMIT_WINDOW = 0.1
SUBNET_KEYS = {
    "subnet", "pools", "reservations", "options", "lease_time", "renewal_time", "rebinding_time",
    "dynamic_bootp", "interface", "next_server", "boot_file", "http_boot",
}


def _pool(text: str) -> Pool:
    if "-" in text:
        first, last = (IPv4Address(part.strip()) for part in text.split("-", 1))
    else:
        network = IPv4Network(text)
        first, last = network.network_address + 1, network.broadcast_address - 1
    if last < first:
        raise ValueError(f"pool {text!r} ends before it starts")
    return Pool(first, last)


def read_options(v: Validator) -> dict[int, bytes]:
    """An options table (``routers = ["10.0.0.1"]``, ``option-250 = "hex:01"``) -> code: bytes."""
    result: dict[int, bytes] = {}
    for name in v.data:
        definition = resolve_name(name)
        if definition is None:
            v.fail(name, 'unknown option name (use a known name or "option-N")')
        elif definition.code in MANAGED_CODES:
            v.fail(name, f"option {definition.code} ({MANAGED_CODES[definition.code]}) "
                   "is set by the server")
        else:
            value = v.convert(name, partial(encode_value, definition.kind))
            if value is not None:
                result[definition.code] = value
    return result


def _reservation(v: Validator, network: IPv4Network) -> Reservation | None:
    v.unknown_keys({"address", "mac", "client_id", "hostname"})
    address = v.address("address", required="a reservation needs an address")
    mac = v.hex_octets("mac", 16)
    client_id = v.hex_octets("client_id")
    hostname = v.string("hostname")
    if "mac" not in v.data and "client_id" not in v.data:
        v.fail("mac", "a reservation needs a mac or a client_id")
    if address is not None and (address not in network or address in (
            network.network_address, network.broadcast_address)):
        v.fail("address", f"{address} is outside its subnet {network}")
    if v.failed() or address is None:
        return None
    return Reservation(address, mac, client_id, hostname)


def _subnet(v: Validator, global_options: dict[int, bytes]) -> Subnet | None:
    v.unknown_keys(SUBNET_KEYS)
    network = v.network("subnet", required='the network, e.g. subnet = "10.0.1.0/24"')
    if network is not None and network.prefixlen > 30:
        v.fail("subnet", f"{network} is too small to serve clients")
        network = None
    pools: list[Pool] = []
    for index, text in enumerate(v.strings("pools")):
        key = f"pools[{index}]"
        pool = v.attempt(key, partial(_pool, text))
        if pool is None or network is None:
            continue
        if pool.first not in network or pool.last not in network:
            v.fail(key, f"pool {text} is outside its subnet {network}")
        elif network.network_address in pool or network.broadcast_address in pool:
            v.fail(key, f"pool {text} includes the network or broadcast address")
        else:
            pools.append(pool)
    options = dict(global_options)
    table = v.table("options")
    options.update(read_options(table) if table is not None else {})
    reservations = [
        _reservation(r, network) if network is not None else None for r in v.tables("reservations")
    ]
    lease_time = v.integer("lease_time", 3600, 60, MAX_TIME)
    renewal = v.integer("renewal_time", None, 1, MAX_TIME)
    rebinding = v.integer("rebinding_time", None, 1, MAX_TIME)
    dynamic_bootp = v.boolean("dynamic_bootp", False)
    interface = v.string("interface")
    next_server = v.address("next_server")
    boot_file = v.string("boot_file")
    http_boot = _http_boot(v.table("http_boot"))
    if v.failed() or network is None:
        return None
    options.setdefault(1, network.netmask.packed)
    subnet = Subnet(
        network=network, pools=tuple(pools), reservations=tuple(r for r in reservations if r),
        options=tuple(sorted(options.items())), lease_time=lease_time, renewal_time=renewal,
        rebinding_time=rebinding, dynamic_bootp=dynamic_bootp, interface=interface,
        next_server=next_server, boot_file=boot_file, http_boot=http_boot,
    )
    # RFC 2131 §4.4.5: T1 < T2 < lease time, or the client's timers make no sense.
    if not subnet.t1 < subnet.t2 < subnet.lease_time:
        v.fail("renewal_time", "need renewal_time < rebinding_time < lease_time")
    return None if v.failed() else subnet


def _http_boot(v: Validator | None) -> tuple[tuple[int, str], ...]:
    """``http_boot = { efi-x64-http = "http://10.0.0.5/ipxe.efi", ... }``: URLs by architecture
    (the [pxe] boot-table keys); a PXE key (efi-x64) serves its HTTP twin too."""
    if v is None:
        return ()
    table = boot_files(v)
    if table.ipxe is not None:
        v.fail("ipxe", "not an architecture: HTTP boot URLs are chosen by option 93")
    for name, value in v.data.items():
        if isinstance(value, str) and not value.startswith(URL_SCHEMES):
            v.fail(name, f"must be an http:// or https:// URL, not {value!r}")
    return tuple(table.by_arch.items())


def _check_overlaps(v: Validator, subnets: list[tuple[int, Subnet]]) -> None:
    """Overlaps between subnets, pools and reservations (of the subnets that were valid)."""
    for n, (i, subnet) in enumerate(subnets):
        for j, other in subnets[:n]:
            if subnet.network.overlaps(other.network):
                v.fail(f"subnets[{i}].subnet", f"{subnet.network} overlaps {v.key()}.subnets[{j}] "
                       f"({other.network})")
        pools = subnet.pools
        for a in range(len(pools)):
            for b in range(a):
                if pools[a].first <= pools[b].last and pools[b].first <= pools[a].last:
                    v.fail(f"subnets[{i}].pools[{a}]",
                           f"pool overlaps pools[{b}] ({pools[b].first}-{pools[b].last})")
        seen: dict[object, int] = {}
        for r_index, reservation in enumerate(subnet.reservations):
            for what, ident in (("address", reservation.address), ("mac", reservation.mac),
                                ("client_id", reservation.client_id)):
                if ident is None:
                    continue
                if (what, ident) in seen:
                    v.fail(f"subnets[{i}].reservations[{r_index}].{what}",
                           f"same {what} as reservations[{seen[(what, ident)]}]")
                seen[(what, ident)] = r_index


def parse_dhcp(table: object, path: str, *, pxe_colocated: bool | None = None) -> DhcpConfig:
    """Validate a [dhcp] table on its own; ConfigError lists every problem."""
    return validate_section(path, "dhcp", table, partial(read_dhcp, pxe_colocated=pxe_colocated))


def read_dhcp(v: Validator, *, pxe_colocated: bool | None = None) -> DhcpConfig | None:
    """The [dhcp] table; None if it had problems (recorded in ``v``). ``pxe_colocated`` is None
    when no [pxe] section is present."""
    v.unknown_keys({"lease_db", "server_id", "offer_hold", "decline_time", "interfaces", "port",
                    "options", "subnets", "commit_window"})
    table = v.table("options")
    global_options = read_options(table) if table is not None else {}
    tables = v.tables("subnets")
    if not tables and not v.failed("subnets"):
        v.fail("subnets", "expected at least one [[dhcp.subnets]] table")
    subnets = [(i, s) for i, t in enumerate(tables) if (s := _subnet(t, global_options))]
    _check_overlaps(v, subnets)
    warnings = []
    if not pxe_colocated:
        for index, subnet in subnets:
            for code, value in subnet.options:
                if code in PXE_REDIRECT_CODES and (code != 60 or value.startswith(b"PXEClient")):
                    warnings.append(
                        f"{v.source}: {v.key()}.subnets[{index}].options: option {code} "
                        f"({PXE_REDIRECT_CODES[code]}) set while no co-located PXE server runs "
                        "here: PXE clients will try port 4011 on this host and fail (PXE-E55); "
                        "put the PXE server in the router's helper table instead"
                    )
    commit_window = v.number("commit_window", DEFAULT_COMMIT_WINDOW, 0)
    if commit_window > MAX_COMMIT_WINDOW:
        v.fail("commit_window", f"at most {MAX_COMMIT_WINDOW} seconds (it delays every ACK), "
               f"not {commit_window}")
    config = DhcpConfig(
        subnets=tuple(s for _, s in subnets),
        lease_db=v.string("lease_db", DEFAULT_LEASE_DB) or DEFAULT_LEASE_DB,
        server_id=v.address("server_id"),
        offer_hold=v.number("offer_hold", 30.0, 0),
        decline_time=v.number("decline_time", 86400.0, 0),
        interfaces=v.strings("interfaces"),
        port=v.integer("port", 67, 0, 65535),
        commit_window=commit_window,
        warnings=tuple(warnings),
    )
    return None if v.failed() else config
