"""boothop-server's DHCPv6 service behind boothop-relay -6: dhclient -6 and dhcpcd -6 on two
links each get an address of their own link's pool, chosen by the relay's link-address, the
Reply wrapped in a Relay-reply that the relay delivers by its Interface-ID.

The lab of test_relay6_e2e.py (``Lab6``), with boothop-server in place of Kea on ``KEA``'s
address; the relay is run with dhcrelay's command line as there.
"""

from __future__ import annotations

import sys
from ipaddress import IPv6Address
from pathlib import Path

import pytest
from conftest import need, require_system
from routed import wait_for
from test_relay6_e2e import DHCLIENT_SCRIPT, DHCPCD_CONF, LINKS, Lab6, addresses_on, relay_argv

from boothop.relay.lab.processes import ProcessRunner
from boothop.server.dhcp.lease import LeaseState
from boothop.server.leasestore import SqliteLeaseStore

pytestmark = pytest.mark.system
HERE = Path(__file__).parent


def test_clients_on_two_links_get_addresses_from_boothop_server_through_boothop_relay(
        tmp_path: Path) -> None:
    require_system("dhclient", "dhcpcd")
    lab = Lab6(tmp_path)
    runner = ProcessRunner(tmp_path / "logs")
    db = tmp_path / "leases.sqlite3"
    config = tmp_path / "server.toml"
    config.write_text(f'[dhcp6]\nlease_db = "{db}"\n' + "".join(
        f'[[dhcp6.subnets]]\nprefix = "{prefix}::/64"\npools = ["{prefix}::100-{prefix}::1ff"]\n'
        for prefix in LINKS.values()))
    try:
        lab.build()
        server = runner.start(lab.ns["sv"], [sys.executable, "-m", "boothop.server", "run", "-c",
                                             str(config)], "server", cwd=HERE.parents[1])
        wait_for(lambda: "server.started" in server.output() or not server.running(), 15,
                 "boothop-server")
        assert server.running(), server.output()
        relay = runner.start(lab.ns["rt"], relay_argv("boothop", lab), "boothop-relay")
        wait_for(lambda: "547" in lab.ex("rt", "ss", "-Hnul", "sport = :547").stdout
                 or not relay.running(), 10, "the relay on port 547")
        assert relay.running(), relay.output()

        script = tmp_path / "dhclient.sh"
        script.write_text(DHCLIENT_SCRIPT)
        script.chmod(0o755)
        dhclient = runner.start(lab.ns["ca"], [
            need("dhclient"), "-6", "-1", "-d", "-v", "-sf", str(script),
            "-lf", str(tmp_path / "dhclient6.leases"), "-pf", str(tmp_path / "dhclient6.pid"),
            lab.link("a")], "dhclient6")
        dhcpcd_conf = tmp_path / "dhcpcd.conf"
        dhcpcd_conf.write_text(DHCPCD_CONF)
        dhcpcd = runner.start(lab.ns["cb"], [
            need("dhcpcd"), "-f", str(dhcpcd_conf), "-6", "-B", "-t", "30", lab.link("b")],
            "dhcpcd6")
        bound = Path(f"{script}.log")
        logs = lambda: f"{server.output()}\n--- relay ---\n{relay.output()}"  # noqa: E731
        wait_for(lambda: bound.exists() and "BOUND6 2001:db8:1::" in bound.read_text(), 30,
                 f"dhclient -6 bound:\n{dhclient.output()}\n{logs()}")
        wait_for(lambda: addresses_on(lab, "cb", "b", "2001:db8:2::"), 30,
                 f"dhcpcd bound:\n{dhcpcd.output()}\n{logs()}")
        address_a = IPv6Address(bound.read_text().split("BOUND6 ")[1].split()[0])
        (address_b,) = map(IPv6Address, addresses_on(lab, "cb", "b", "2001:db8:2::"))
        assert IPv6Address("2001:db8:1::100") <= address_a <= IPv6Address("2001:db8:1::1ff")
        assert IPv6Address("2001:db8:2::100") <= address_b <= IPv6Address("2001:db8:2::1ff")
        store = SqliteLeaseStore(str(db), create=False)
        rows = {row.address: row for row in store.load6()}
        store.close()
        assert rows[address_a].state is rows[address_b].state is LeaseState.BOUND
        assert rows[address_a].subnet == "2001:db8:1::/64"
    finally:
        runner.stop_all()
        lab.close()
