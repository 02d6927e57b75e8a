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

from ipaddress import IPv6Address, IPv6Network
from pathlib import Path

import pytest
from conftest import require_system
from routed import wait_for
from routed6 import (
    PREFIXES,
    Lab6,
    clients_bound6,
    dhclient6,
    leases6,
    server6_config,
    start_server6,
)

from boothop.relay.lab.processes import ProcessRunner
from boothop.server.dhcp.lease import LeaseState

pytestmark = pytest.mark.system
#: Client link -> the server's end of it.
SERVER_LINKS = {"a": "s1", "b": "s2"}


def test_dhclient_and_dhcpcd_get_addresses_of_their_link_from_boothop_server(
        tmp_path: Path) -> None:
    require_system("dhclient", "dhcpcd")
    lab = Lab6(tmp_path, "bs6", [(f"c{link}", link, "sv", server_if)
                                 for link, server_if in SERVER_LINKS.items()],
               [("sv", server_if, f"{PREFIXES[link]}::1/64")
                for link, server_if in SERVER_LINKS.items()])
    runner = ProcessRunner(tmp_path / "logs")
    config = server6_config(lab, SERVER_LINKS, 'server_duid = "00:02:00:00:09:bf:b0:07"\n')
    try:
        lab.build()
        server = start_server6(lab, runner, config)
        address_a, address_b, dhclient = clients_bound6(lab, runner, server.output)
        assert IPv6Address("2001:db8:1::100") <= address_a <= IPv6Address("2001:db8:1::1ff")
        assert IPv6Address("2001:db8:2::100") <= address_b <= IPv6Address("2001:db8:2::1ff")

        # The bindings were on disk before the Replies left: the store has them now.
        rows = leases6(lab)
        assert rows[address_a].state is LeaseState.BOUND
        assert rows[address_b].state is LeaseState.BOUND
        assert address_a in IPv6Network("2001:db8:1::/64")

        # dhclient -6 -r releases: the server marks the binding released, durably.
        runner.stop(dhclient)
        released = runner.run(lab.ns["ca"], dhclient6(lab, "a", "-r", pid="dhclient6-r"),
                              timeout=30)
        assert released.returncode == 0, released.stderr
        wait_for(lambda: leases6(lab)[address_a].state is LeaseState.RELEASED, 10,
                 f"release:\n{server.output()}")
        assert "server6.reply" in server.output()
    finally:
        try:
            runner.stop_all()
        finally:
            lab.close()
