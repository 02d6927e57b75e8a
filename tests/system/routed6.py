"""IPv6 labs for the DHCPv6 system tests, and the real clients that get addresses in them.

``Lab6`` is RoutedLab (routed.py: namespaces of a random tag, links named by the test's prefix,
clean-up by PID in ``close``) with the namespaces and veth pairs a test names, IPv6 addresses
on their ends, duplicate address detection off in every namespace (addresses are usable at
once: deterministic tests), and ``build`` done only once every end has its link-local address
(dhclient -6 exits, "no link-local IPv6 address", when started before).

Client links: ``a`` in namespace ``ca`` (ISC dhclient -6) and ``b`` in ``cb`` (dhcpcd -6), on
``PREFIXES``; boothop-server's pools there are ``::100`` to ``::1ff`` (``server6_config``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from ipaddress import IPv6Address
from pathlib import Path

from conftest import need
from routed import RoutedLab, sh, wait_for

from boothop.relay.lab.processes import Process, ProcessRunner
from boothop.server.dhcp6.lease import Lease6
from boothop.server.leasestore import SqliteLeaseStore

HERE = Path(__file__).parent
#: The client links' /64 prefixes.
PREFIXES = {"a": "2001:db8:1", "b": "2001:db8:2"}
DHCLIENT_SCRIPT = """#!/bin/sh
echo "$reason ${new_ip6_address:-}" >> "$0.log"
exit 0
"""
#: dhcpcd without Router Advertisements: DHCPv6 for one address, no RS, no IPv4.
DHCPCD_CONF = "noipv6rs\nipv6only\nia_na 1\nnohook resolv.conf\n"
#: A veth pair: (namespace role, link) at one end, (namespace role, link) at the other.
Veth = tuple[str, str, str, str]


class Lab6(RoutedLab):
    """``veths`` join the namespaces (their roles in order of appearance); ``addresses`` are
    (role, link, address/prefix length). ``net`` is RoutedLab's IPv4 ``server`` network."""

    def __init__(self, tmp: Path, prefix: str, veths: Sequence[Veth],
                 addresses: Sequence[tuple[str, str, str]], net: str = "10.66") -> None:
        roles = dict.fromkeys(role for veth in veths for role in (veth[0], veth[2]))
        super().__init__(tmp, prefix, net, tuple(roles))
        self.veths = veths
        self.addresses = addresses

    def build(self) -> None:
        for role, ns in self.ns.items():
            sh("ip", "netns", "add", ns)
            for key in ("all", "default"):
                self.ex(role, "sysctl", "-qw", f"net.ipv6.conf.{key}.accept_dad=0")
            self.ex(role, "ip", "link", "set", "lo", "up")
        for veth in self.veths:
            self.veth(*veth)
        for role, link, address in self.addresses:
            self.ex(role, "ip", "addr", "add", address, "dev", self.link(link), "nodad")
        for role, link, peer, peer_link in self.veths:
            self.wait_link_local(role, link)
            self.wait_link_local(peer, peer_link)

    def veth(self, role: str, link: str, peer: str, peer_link: str) -> None:
        """A veth pair, both ends up."""
        sh("ip", "link", "add", self.link(link), "netns", self.ns[role], "type", "veth",
           "peer", "name", self.link(peer_link), "netns", self.ns[peer])
        self.ex(peer, "ip", "link", "set", self.link(peer_link), "up")
        self.ex(role, "ip", "link", "set", self.link(link), "up")

    def wait_link_local(self, role: str, link: str) -> None:
        """The kernel adds the link-local address once both ends of a veth pair are up."""
        wait_for(lambda: "scope link" in self.ex(
            role, "ip", "-6", "addr", "show", "dev", self.link(link), check=False).stdout, 10,
            f"the link-local address of {self.link(link)}")

    def addresses_on(self, role: str, link: str, prefix: str) -> list[str]:
        """The addresses on a link that start with ``prefix``."""
        shown = self.ex(role, "ip", "-6", "-o", "addr", "show", "dev", self.link(link),
                        check=False)
        return [word.split("/")[0] for word in shown.stdout.split() if word.startswith(prefix)]


# -- the clients ---------------------------------------------------------------------------------


def dhclient6(lab: Lab6, link: str, *flags: str, pid: str = "dhclient6") -> list[str]:
    """ISC dhclient -6's command line on ``link`` with ``flags``: its script appends
    "REASON ADDRESS" lines to ``dhclient.sh.log`` in the lab's directory, its leases file is
    ``dhclient6.leases`` there (the same for a later ``-r``)."""
    script = lab.tmp / "dhclient.sh"
    if not script.exists():
        script.write_text(DHCLIENT_SCRIPT)
        script.chmod(0o755)
    return [need("dhclient"), "-6", *flags, "-v", "-sf", str(script),
            "-lf", str(lab.tmp / "dhclient6.leases"), "-pf", str(lab.tmp / f"{pid}.pid"),
            lab.link(link)]


def dhclient6_bound(lab: Lab6, prefix: str) -> IPv6Address | None:
    """The first address in ``prefix`` that dhclient -6 was told it is bound to, else None."""
    events = lab.tmp / "dhclient.sh.log"
    lines = events.read_text().splitlines() if events.exists() else []
    for reason, _, address in (line.partition(" ") for line in lines):
        if reason == "BOUND6" and address.startswith(f"{prefix}::"):
            return IPv6Address(address)
    return None


def start_dhcpcd6(lab: Lab6, runner: ProcessRunner, role: str, link: str) -> Process:
    config = lab.tmp / "dhcpcd.conf"
    config.write_text(DHCPCD_CONF)
    return runner.start(lab.ns[role], [need("dhcpcd"), "-f", str(config), "-6", "-B", "-t", "30",
                                       lab.link(link)], "dhcpcd6")


def clients_bound6(lab: Lab6, runner: ProcessRunner, logs: Callable[[], str] = str
                   ) -> tuple[IPv6Address, IPv6Address, Process]:
    """dhclient -6 on link a and dhcpcd -6 on link b, started together; once each is bound
    (30 s at most, else the clients' output and ``logs()``): their addresses, and dhclient."""
    dhclient = runner.start(lab.ns["ca"], dhclient6(lab, "a", "-1", "-d"), "dhclient6")
    dhcpcd = start_dhcpcd6(lab, runner, "cb", "b")
    wait_for(lambda: dhclient6_bound(lab, PREFIXES["a"]), 30,
             f"dhclient -6 bound:\n{dhclient.output()}\n{logs()}")
    wait_for(lambda: lab.addresses_on("cb", "b", f"{PREFIXES['b']}::"), 30,
             f"dhcpcd bound:\n{dhcpcd.output()}\n{logs()}")
    address_a = dhclient6_bound(lab, PREFIXES["a"])
    (address_b,) = lab.addresses_on("cb", "b", f"{PREFIXES['b']}::")
    assert address_a is not None
    return address_a, IPv6Address(address_b), dhclient


# -- boothop-server ------------------------------------------------------------------------------


def server6_config(lab: Lab6, interfaces: Mapping[str, str] | None = None,
                   extra: str = "") -> Path:
    """A boothop-server file with [dhcp6] (and ``extra`` keys in it): a subnet per client link,
    served on ``interfaces[link]`` (direct clients) when given; leases in the lab's directory."""
    config = lab.tmp / "server.toml"
    config.write_text(f'[dhcp6]\nlease_db = "{lab.tmp / "leases.sqlite3"}"\n{extra}' + "".join(
        f'[[dhcp6.subnets]]\nprefix = "{prefix}::/64"\npools = ["{prefix}::100-{prefix}::1ff"]\n'
        + (f'interface = "{lab.link(interfaces[link])}"\n' if interfaces else "")
        for link, prefix in PREFIXES.items()))
    return config


def start_server6(lab: Lab6, runner: ProcessRunner, config: Path) -> Process:
    """boothop-server in namespace ``sv``, once it has started."""
    server = runner.start(lab.ns["sv"], [sys.executable, "-m", "boothop.server", "run", "-c",
                                         str(config)], "server", cwd=HERE.parents[1])
    wait_for(lambda: "server.started" in server.output() or not server.running(), 15,
             "boothop-server")
    assert server.running(), server.output()
    return server


def leases6(lab: Lab6) -> dict[IPv6Address, Lease6]:
    """boothop-server's DHCPv6 lease rows on disk, by address."""
    store = SqliteLeaseStore(str(lab.tmp / "leases.sqlite3"), create=False)
    try:
        return {row.address: row for row in store.load6()}
    finally:
        store.close()
