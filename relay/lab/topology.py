"""Network-namespace topologies, built with pyroute2: hosts, LANs, addresses, routes.

A topology is declared as data (``Host``, ``Lan``, ``Port``, ``Route``) and made real by
``Topology.up()``. Every host is a namespace named ``<prefix>-<host>``. Every LAN is a bridge inside
one extra namespace, ``<prefix>-sw`` (the "switch"), and every port is a veth pair: one end, named
by the port, inside the host's namespace, the other end enslaved to the LAN's bridge. Nothing is
created in the caller's namespace, so only the namespace names are global and a unique prefix keeps
parallel runs apart. Devices that must live next to a bridge (a QEMU tap, a capture point) belong in
the switch namespace.

``up()`` is idempotent (it creates only what is missing) and records every namespace it creates in
``/run/boothop-lab/<prefix>.netns.json``; ``down()`` removes exactly the recorded namespaces (and so
every link in them), after killing, by PID, any process still inside. A namespace with the prefix
that was not recorded is never removed, and ``up()`` refuses to build into one. An owner file,
``/run/boothop-lab/<prefix>.pid``, names the PID that built a prefix, so ``reap_stale`` can remove
the recorded topologies of dead owners (crashed runs) without touching a live parallel run. /run
is emptied at boot, as are the namespaces, so the records never outlive what they describe.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import os
import re
import signal
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from pyroute2 import IPRoute, netns
from pyroute2.nftables.main import NFTables

NETNS_DIR = Path("/run/netns")
OWNER_DIR = Path("/run/boothop-lab")
RECORD_SUFFIX = ".netns.json"
SWITCH = "sw"
#: The switch namespace's nf_tables table (``_drop_local_delivery``).
SWITCH_TABLE = "switch"
IFNAME_MAX = 15
#: linux/if_addr.h: an address added without duplicate address detection.
IFA_F_NODAD = 0x02
_PREFIX = re.compile(r"^[a-z][a-z0-9_.-]*$")
_HOST = re.compile(r"^[a-z][a-z0-9_.]*$")  # no "-": it separates the prefix from the host


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    """A route in a host: ``dst`` is a CIDR or ``"default"``; ``via`` a gateway address (an
    IPv6 one makes it an IPv6 route)."""

    dst: str
    via: str


@dataclasses.dataclass(frozen=True, slots=True)
class Host:
    """A namespace. ``forwarding`` turns on IPv4 forwarding (a router)."""

    name: str
    forwarding: bool = False
    routes: tuple[Route, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Port:
    """A host's interface on a LAN. ``address`` is a CIDR, or None for a DHCP client;
    ``address6`` an IPv6 one (for a topology with ``ipv6``)."""

    host: str
    ifname: str
    address: str | None = None
    mac: str | None = None
    address6: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Lan:
    """A broadcast domain: one bridge in the switch namespace joining its ports."""

    name: str
    ports: tuple[Port, ...]


class TopologyError(ValueError):
    """The declared topology is inconsistent."""


class Topology:
    """A set of hosts joined by LANs, built and torn down in network namespaces."""

    def __init__(
        self,
        prefix: str,
        hosts: Iterable[Host],
        lans: Iterable[Lan],
        *,
        ipv6: bool = False,
    ) -> None:
        self.prefix = prefix
        self.hosts = {host.name: host for host in hosts}
        self.lans = tuple(lans)
        self.ipv6 = ipv6
        self._validate()

    # -- naming ------------------------------------------------------------------------------
    def netns(self, host: str) -> str:
        """The namespace name of a host (or of ``SWITCH``)."""
        if host != SWITCH and host not in self.hosts:
            raise KeyError(f"no host {host!r} in topology {self.prefix!r}")
        return f"{self.prefix}-{host}"

    @property
    def switch_netns(self) -> str:
        return f"{self.prefix}-{SWITCH}"

    def namespaces(self) -> list[str]:
        """Every namespace of the topology: the switch's, then one per host."""
        return [self.switch_netns, *(self.netns(h) for h in self.hosts)]

    @staticmethod
    def bridge_name(lan: Lan) -> str:
        return f"br-{lan.name}"

    @staticmethod
    def switch_port_name(lan: Lan, index: int) -> str:
        return f"{lan.name}.{index}"

    def port(self, host: str, ifname: str) -> Port:
        for lan in self.lans:
            for port in lan.ports:
                if port.host == host and port.ifname == ifname:
                    return port
        raise KeyError(f"no port {host}/{ifname}")

    def _validate(self) -> None:
        if not _PREFIX.match(self.prefix):
            raise TopologyError(f"bad prefix {self.prefix!r}")
        if SWITCH in self.hosts:
            raise TopologyError(f"host name {SWITCH!r} is reserved for the switch namespace")
        for name in self.hosts:
            if not _HOST.match(name):
                raise TopologyError(f"bad host name {name!r}")
        seen: set[tuple[str, str]] = set()
        for lan in self.lans:
            names = [self.bridge_name(lan)] + [
                self.switch_port_name(lan, i) for i in range(len(lan.ports))
            ]
            for name in names:
                if len(name) > IFNAME_MAX:
                    raise TopologyError(f"LAN {lan.name!r}: interface name {name!r} too long")
            for port in lan.ports:
                if port.host not in self.hosts:
                    raise TopologyError(f"LAN {lan.name!r}: unknown host {port.host!r}")
                if len(port.ifname) > IFNAME_MAX or not port.ifname:
                    raise TopologyError(f"bad interface name {port.ifname!r}")
                if (port.host, port.ifname) in seen:
                    raise TopologyError(f"duplicate port {port.host}/{port.ifname}")
                seen.add((port.host, port.ifname))
                if port.address is not None:
                    ipaddress.IPv4Interface(port.address)
                if port.address6 is not None:
                    ipaddress.IPv6Interface(port.address6)

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> Topology:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    def up(self) -> None:
        """Create whatever is missing: namespaces, bridges, veth pairs, addresses, routes.

        Raises TopologyError, before creating anything, if one of its namespaces exists but was
        not made (recorded) by a topology of this prefix."""
        existing = set(netns.listnetns())
        made = set(recorded_namespaces(self.prefix))
        foreign = [n for n in self.namespaces() if n in existing and n not in made]
        if foreign:
            raise TopologyError(
                f"namespace {foreign[0]} exists but was not created by this topology; remove it "
                f"(ip netns delete {foreign[0]}) or choose another prefix"
            )
        OWNER_DIR.mkdir(parents=True, exist_ok=True)
        # The owner file is written before any namespace is recorded (see reap_stale).
        owner_file(self.prefix).write_text(f"{os.getpid()}\n")
        for name in self.namespaces():
            if name not in existing:
                # Recorded before it exists: a crash in between leaves a record of a namespace
                # that is not there (harmless), never a namespace nobody recorded.
                _record_namespace(self.prefix, name)
                netns.create(name)
        for host in self.hosts.values():
            self._configure_host_base(host)
        self._configure_switch_base()
        with IPRoute(netns=self.switch_netns) as switch:
            _set_up(switch, "lo")
            for lan in self.lans:
                self._build_lan(switch, lan)
        for lan in self.lans:
            for port in lan.ports:
                self._configure_port(port)
        for host in self.hosts.values():
            with IPRoute(netns=self.netns(host.name)) as ipr:
                for route in host.routes:
                    _ensure_route(ipr, route)

    def down(self) -> None:
        """Remove the namespaces recorded for this prefix (and so every link in them)."""
        remove_recorded(self.prefix)

    # -- building ----------------------------------------------------------------------------
    def _configure_host_base(self, host: Host) -> None:
        name = self.netns(host.name)
        sysctl(name, "net/ipv4/ip_forward", "1" if host.forwarding else "0")
        if self.ipv6:
            sysctl(name, "net/ipv6/conf/all/forwarding", "1" if host.forwarding else "0")
        else:
            sysctl(name, "net/ipv6/conf/all/disable_ipv6", "1")
            sysctl(name, "net/ipv6/conf/default/disable_ipv6", "1")
        with IPRoute(netns=name) as ipr:
            _set_up(ipr, "lo")

    def _configure_switch_base(self) -> None:
        """The switch forwards frames and nothing else. Where the kernel has br_netfilter (built
        in, or its module loaded), each namespace's bridges pass every frame through iptables'
        hooks by default: a firewall no switch runs, paid (veths deliver in the sender's
        context) on the CPU of whichever host sent the frame, more for a flooded broadcast than
        for a unicast. Nor does a switch have a host of its own on its LANs
        (``_drop_local_delivery``)."""
        for table in ("iptables", "ip6tables", "arptables"):
            with contextlib.suppress(FileNotFoundError):  # no br_netfilter: nothing to turn off
                sysctl(self.switch_netns, f"net/bridge/bridge-nf-call-{table}", "0")
        _drop_local_delivery(self.switch_netns)

    def _build_lan(self, switch: IPRoute, lan: Lan) -> None:
        bridge = self.bridge_name(lan)
        if not switch.link_lookup(ifname=bridge):
            switch.link("add", ifname=bridge, kind="bridge")
        bridge_index = switch.link_lookup(ifname=bridge)[0]
        for i, port in enumerate(lan.ports):
            outer = self.switch_port_name(lan, i)
            if not switch.link_lookup(ifname=outer):
                peer: dict[str, object] = {
                    "ifname": port.ifname,
                    "net_ns_fd": self.netns(port.host),
                }
                if port.mac is not None:
                    peer["address"] = port.mac
                switch.link("add", ifname=outer, kind="veth", peer=peer)
            index = switch.link_lookup(ifname=outer)[0]
            switch.link("set", index=index, master=bridge_index, state="up")
        switch.link("set", index=bridge_index, state="up")

    def _configure_port(self, port: Port) -> None:
        with IPRoute(netns=self.netns(port.host)) as ipr:
            index = _index(ipr, port.ifname)
            if port.address is not None:
                iface = ipaddress.IPv4Interface(port.address)
                present = {
                    (a.get("IFA_ADDRESS"), a["prefixlen"])
                    for a in ipr.get_addr(index=index, family=2)
                }
                if (str(iface.ip), iface.network.prefixlen) not in present:
                    ipr.addr(
                        "add",
                        index=index,
                        address=str(iface.ip),
                        prefixlen=iface.network.prefixlen,
                        broadcast=str(iface.network.broadcast_address),
                    )
            if port.address6 is not None:
                iface6 = ipaddress.IPv6Interface(port.address6)
                present6 = {a.get("IFA_ADDRESS") for a in ipr.get_addr(index=index, family=10)}
                if str(iface6.ip) not in present6:
                    # No duplicate address detection: the lab's addresses are unique by
                    # construction, and a tentative address cannot be bound for a second.
                    ipr.addr("add", index=index, address=str(iface6.ip),
                             prefixlen=iface6.network.prefixlen, flags=IFA_F_NODAD)
            ipr.link("set", index=index, state="up")

    # -- queries -----------------------------------------------------------------------------
    def mac(self, host: str, ifname: str) -> str:
        with IPRoute(netns=self.netns(host)) as ipr:
            link = ipr.get_links(_index(ipr, ifname))[0]
            return str(link.get("IFLA_ADDRESS"))

    def address(self, host: str, ifname: str) -> ipaddress.IPv4Interface:
        address = self.port(host, ifname).address
        if address is None:
            raise KeyError(f"port {host}/{ifname} has no static address")
        return ipaddress.IPv4Interface(address)

    def exists(self) -> bool:
        return self.switch_netns in netns.listnetns()


def _index(ipr: IPRoute, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        # Says what is there: a port's veth end has gone missing from its host's namespace
        # right after being made (seen a few times after a bench ended; cause not yet found).
        present = sorted(str(link.get("IFLA_IFNAME")) for link in ipr.get_links())
        raise LookupError(f"no interface {ifname!r} (present: {', '.join(present)})")
    return int(found[0])


def _set_up(ipr: IPRoute, ifname: str) -> None:
    ipr.link("set", index=_index(ipr, ifname), state="up")


def _ensure_route(ipr: IPRoute, route: Route) -> None:
    default = "::/0" if ":" in route.via else "0.0.0.0/0"
    network = ipaddress.ip_network(default if route.dst == "default" else route.dst)
    ipr.route("replace", dst=str(network), gateway=route.via,
              family=10 if network.version == 6 else 2)


#: nf_tables' family of bridges (NFPROTO_BRIDGE), and the verdict of a chain's policy (NF_DROP).
NFPROTO_BRIDGE = 7
NF_DROP = 0


def _drop_local_delivery(namespace: str) -> None:
    """Give the switch's bridges no host to deliver to: a bridge-family input chain whose policy
    drops every frame the bridges would pass up to the switch namespace's own stack. A bridge
    passes up every broadcast it floods, and the switch's IPv4 stack allocates a route for each
    limited broadcast (255.255.255.255: no cached route) and frees it through RCU: on the CPU
    of the host that sent the frame (veths deliver in the sender's context), one RCU softirq
    every few DHCP broadcasts, run in bursts by ksoftirqd. Measured (relay_dora's topology,
    15,000 DORA/s, 4 s): 22,000 RCU softirqs on the server's CPU, 11,600 with this chain. No
    switch has a stack on its LANs; a capture on a bridge device (promiscuous) still sees every
    frame it forwards, and a tap or veth port is unaffected. Built with pyroute2's nf_tables
    socket, opened inside the namespace (``pushns``: the socket stays in the namespace it was
    created in)."""
    netns.pushns(namespace)
    try:
        tables = NFTables(nfgen_family=NFPROTO_BRIDGE)
    finally:
        netns.popns()
    with tables:
        if not any(t.get("NFTA_TABLE_NAME") == SWITCH_TABLE for t in tables.get_tables()):
            tables.table("add", name=SWITCH_TABLE)
            tables.chain("add", table=SWITCH_TABLE, name="no-host", hook="input",
                         type="filter", policy=NF_DROP)


def sysctl(namespace: str, key: str, value: str) -> None:
    """Write ``/proc/sys/<key>`` as seen from inside a namespace.

    /proc/sys/net resolves the namespace of the task that opens the file, so the open happens
    between ``pushns`` and ``popns`` (which switch only the calling thread).
    """
    netns.pushns(namespace)
    try:
        with open(f"/proc/sys/{key}", "w") as f:
            f.write(value)
    finally:
        netns.popns()


# -- clean-up, also of crashed runs -----------------------------------------------------------
def namespace_pids(namespace: str) -> list[int]:
    """PIDs of the processes whose network namespace is ``namespace``."""
    try:
        target = os.stat(NETNS_DIR / namespace).st_ino
    except FileNotFoundError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.stat(f"/proc/{entry}/ns/net").st_ino == target:
                pids.append(int(entry))
    return pids


def _kill_pids(pids: list[int], grace: float = 1.0) -> None:
    me = os.getpid()
    pids = [pid for pid in pids if pid != me]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if alive(pid)]
        time.sleep(0.02)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purpose.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return False


def owner_file(prefix: str) -> Path:
    """Holds the PID of the process that last built the topology ``prefix``."""
    return OWNER_DIR / f"{prefix}.pid"


def record_file(prefix: str) -> Path:
    """The state file listing the namespaces that topologies of ``prefix`` created."""
    return OWNER_DIR / f"{prefix}{RECORD_SUFFIX}"


def recorded_namespaces(prefix: str) -> list[str]:
    try:
        names = json.loads(record_file(prefix).read_text())["namespaces"]
    except FileNotFoundError:
        return []
    return [str(name) for name in names]


def _record_namespace(prefix: str, name: str) -> None:
    names = recorded_namespaces(prefix)
    if name in names:
        return
    OWNER_DIR.mkdir(parents=True, exist_ok=True)
    path = record_file(prefix)
    partial = path.with_name(path.name + ".tmp")
    record = {"prefix": prefix, "namespaces": [*names, name]}
    partial.write_text(json.dumps(record, indent=2) + "\n")
    partial.replace(path)  # atomic: a reader sees the old record or the new one


def remove_recorded(prefix: str) -> list[str]:
    """Kill the processes left in, then delete, the namespaces recorded for ``prefix``; forget
    the record. Namespaces with the prefix that were not recorded stay. Returns those deleted."""
    existing = set(netns.listnetns())
    names = [n for n in recorded_namespaces(prefix) if n in existing]
    for name in names:
        _kill_pids(namespace_pids(name))
    for name in names:
        with contextlib.suppress(FileNotFoundError, OSError):
            netns.remove(name)
    record_file(prefix).unlink(missing_ok=True)
    owner_file(prefix).unlink(missing_ok=True)
    return names


def _owner_alive(prefix: str) -> bool:
    try:
        pid = int(owner_file(prefix).read_text().strip())
    except (FileNotFoundError, ValueError):
        return False
    return alive(pid)


def reap_stale(base: str) -> list[str]:
    """Remove the recorded topologies ``<base>-<id>`` whose owner is gone; return their prefixes.

    Records are listed before owner files are read: an owner writes its file before it records a
    namespace, so a live run's record always has a readable owner file here.
    """
    prefixes = sorted(
        path.name.removesuffix(RECORD_SUFFIX) for path in OWNER_DIR.glob(f"{base}-*{RECORD_SUFFIX}")
    )
    stale = [p for p in prefixes if not _owner_alive(p)]
    for prefix in stale:
        remove_recorded(prefix)
    return stale
