"""boothop-server's DHCPv6 service behind boothop-relay -6: dhclient -6 and dhcpcd -6 on two
links each get an address of their own link's pool, chosen by the relay's link-address, the
Reply wrapped in a Relay-reply that the relay delivers by its Interface-ID.

The lab of test_relay6_e2e.py (``relay_lab``), with boothop-server in place of Kea on ``KEA``'s
address; the relay is run with dhcrelay's command line as there.
"""

from __future__ import annotations

from ipaddress import IPv6Address
from pathlib import Path

import pytest
from conftest import require_system
from routed6 import clients_bound6, leases6, server6_config, start_server6
from test_relay6_e2e import relay_lab, start_relay6

from boothop.relay.lab.processes import ProcessRunner
from boothop.server.dhcp.lease import LeaseState

pytestmark = pytest.mark.system


def test_clients_on_two_links_get_addresses_from_boothop_server_through_boothop_relay(
        tmp_path: Path) -> None:
    require_system("dhclient", "dhcpcd")
    lab = relay_lab(tmp_path)
    runner = ProcessRunner(tmp_path / "logs")
    try:
        lab.build()
        server = start_server6(lab, runner, server6_config(lab))
        relay = start_relay6(lab, runner, "boothop")
        address_a, address_b, _ = clients_bound6(
            lab, runner, lambda: f"{server.output()}\n--- relay ---\n{relay.output()}")
        assert IPv6Address("2001:db8:1::100") <= address_a <= IPv6Address("2001:db8:1::1ff")
        assert IPv6Address("2001:db8:2::100") <= address_b <= IPv6Address("2001:db8:2::1ff")
        rows = leases6(lab)
        assert rows[address_a].state is rows[address_b].state is LeaseState.BOUND
        assert rows[address_a].subnet == "2001:db8:1::/64"
    finally:
        runner.stop_all()
        lab.close()
