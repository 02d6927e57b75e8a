"""boothop-server's DHCPv6 service with real clients directly on its links: ISC dhclient -6 and
dhcpcd -6 each get an address of their own link's pool (the receiving interface chooses it), the
binding is on disk when they have it, and a Release frees it.

```
 bs6-ca-N (dhclient -6) ──[2001:db8:1::/64]── s1 ┐
                                                  bs6-sv-N (boothop-server [dhcp6])
 bs6-cb-N (dhcpcd -6)   ──[2001:db8:2::/64]── s2 ┘
```

Namespaces of our own (prefix ``bs6``, random suffix), every process stopped by PID and every
namespace deleted in ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import sys
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path

import pytest
from conftest import need, require_system
from routed import sh, wait_for

from boothop.relay.lab.processes import ProcessRunner
from boothop.server.dhcp.lease import LeaseState
from boothop.server.leasestore import SqliteLeaseStore

pytestmark = pytest.mark.system
HERE = Path(__file__).parent
DHCLIENT_SCRIPT = """#!/bin/sh
echo "$reason ${new_ip6_address:-}" >> "$0.log"
exit 0
"""
DHCPCD_CONF = "noipv6rs\nipv6only\nia_na 1\nnohook resolv.conf\n"
LINKS = {"a": ("2001:db8:1", "s1"), "b": ("2001:db8:2", "s2")}


class Lab:
    def __init__(self) -> None:
        tag = secrets.token_hex(2)
        self.ns = {role: f"bs6-{role}-{tag}" for role in ("sv", "ca", "cb")}
        self.tag = tag

    def link(self, name: str) -> str:
        return f"bs6{name}{self.tag}"

    def ex(self, role: str, *args: str, check: bool = True) -> str:
        return sh("ip", "netns", "exec", self.ns[role], *args, check=check).stdout

    def build(self) -> None:
        for role, ns in self.ns.items():
            sh("ip", "netns", "add", ns)
            for key in ("all", "default"):
                self.ex(role, "sysctl", "-qw", f"net.ipv6.conf.{key}.accept_dad=0")
            self.ex(role, "ip", "link", "set", "lo", "up")
        for client, (prefix, server_if) in LINKS.items():
            sh("ip", "link", "add", self.link(client), "netns", self.ns[f"c{client}"], "type",
               "veth", "peer", "name", self.link(server_if), "netns", self.ns["sv"])
            self.ex("sv", "ip", "addr", "add", f"{prefix}::1/64", "dev", self.link(server_if),
                    "nodad")
            self.ex("sv", "ip", "link", "set", self.link(server_if), "up")
            self.ex(f"c{client}", "ip", "link", "set", self.link(client), "up")
        for client in LINKS:
            # The kernel adds the link-local address once both ends are up; dhclient -6 exits
            # ("no link-local IPv6 address") when started before.
            wait_for(lambda client=client: "scope link" in self.ex(
                f"c{client}", "ip", "-6", "addr", "show", "dev", self.link(client)), 10,
                f"the link-local address of {self.link(client)}")

    def close(self) -> None:
        for ns in self.ns.values():
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            sh("ip", "netns", "del", ns, check=False)


def addresses_on(lab: Lab, role: str, link: str, prefix: str) -> list[str]:
    shown = lab.ex(role, "ip", "-6", "-o", "addr", "show", "dev", lab.link(link), check=False)
    return [word.split("/")[0] for word in shown.split() if word.startswith(prefix)]


def test_dhclient_and_dhcpcd_get_addresses_of_their_link_from_boothop_server(
        tmp_path: Path) -> None:
    require_system("dhclient", "dhcpcd")
    lab = Lab()
    runner = ProcessRunner(tmp_path / "logs")
    db = tmp_path / "leases.sqlite3"
    config = tmp_path / "server.toml"
    config.write_text(f'[dhcp6]\nlease_db = "{db}"\nserver_duid = "00:02:00:00:09:bf:b0:07"\n'
                      + "".join(
                          f'[[dhcp6.subnets]]\nprefix = "{prefix}::/64"\n'
                          f'pools = ["{prefix}::100-{prefix}::1ff"]\n'
                          f'interface = "{lab.link(server_if)}"\n'
                          for prefix, server_if in LINKS.values()))
    try:
        lab.build()
        server = runner.start(lab.ns["sv"], [sys.executable, "-m", "boothop.server", "run", "-c",
                                             str(config)], "server", cwd=HERE.parents[1])
        wait_for(lambda: "server.started" in server.output() or not server.running(), 15,
                 "boothop-server")
        assert server.running(), server.output()

        script = tmp_path / "dhclient.sh"
        script.write_text(DHCLIENT_SCRIPT)
        script.chmod(0o755)
        leases_file = tmp_path / "dhclient6.leases"
        dhclient = runner.start(lab.ns["ca"], [
            need("dhclient"), "-6", "-1", "-d", "-v", "-sf", str(script), "-lf", str(leases_file),
            "-pf", str(tmp_path / "dhclient6.pid"), lab.link("a")], "dhclient6")
        dhcpcd_conf = tmp_path / "dhcpcd.conf"
        dhcpcd_conf.write_text(DHCPCD_CONF)
        dhcpcd = runner.start(lab.ns["cb"], [
            need("dhcpcd"), "-f", str(dhcpcd_conf), "-6", "-B", "-t", "30", lab.link("b")],
            "dhcpcd6")
        bound = Path(f"{script}.log")
        wait_for(lambda: bound.exists() and "BOUND6 2001:db8:1::" in bound.read_text(), 30,
                 f"dhclient -6 bound:\n{dhclient.output()}\n{server.output()}")
        wait_for(lambda: addresses_on(lab, "cb", "b", "2001:db8:2::"), 30,
                 f"dhcpcd bound:\n{dhcpcd.output()}\n{server.output()}")
        address_a = IPv6Address(bound.read_text().split("BOUND6 ")[1].split()[0])
        (address_b,) = map(IPv6Address, addresses_on(lab, "cb", "b", "2001:db8:2::"))
        assert IPv6Address("2001:db8:1::100") <= address_a <= IPv6Address("2001:db8:1::1ff")
        assert IPv6Address("2001:db8:2::100") <= address_b <= IPv6Address("2001:db8:2::1ff")

        # The bindings were on disk before the Replies left: the store has them now.
        store = SqliteLeaseStore(str(db), create=False)
        rows = {row.address: row for row in store.load6()}
        store.close()
        assert rows[address_a].state is LeaseState.BOUND
        assert rows[address_b].state is LeaseState.BOUND
        assert address_a in IPv6Network("2001:db8:1::/64")

        # dhclient -6 -r releases: the server marks the binding released, durably.
        runner.stop(dhclient)
        released = runner.run(lab.ns["ca"], [
            need("dhclient"), "-6", "-r", "-v", "-sf", str(script), "-lf", str(leases_file),
            "-pf", str(tmp_path / "dhclient6-r.pid"), lab.link("a")], timeout=30)
        assert released.returncode == 0, released.stderr

        def state() -> LeaseState:
            store = SqliteLeaseStore(str(db), create=False)
            try:
                return {r.address: r for r in store.load6()}[address_a].state
            finally:
                store.close()

        wait_for(lambda: state() is LeaseState.RELEASED, 10, f"release:\n{server.output()}")
        assert "server6.reply" in server.output()
    finally:
        try:
            runner.stop_all()
        finally:
            lab.close()
