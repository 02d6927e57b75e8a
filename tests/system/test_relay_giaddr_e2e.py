"""Smart and pinned giaddr end to end: udhcpc -> boothop-relay -> a server (boothop-server, or
kea-dhcp4 for smart giaddr) that serves only the client LAN's secondary subnet.

```
 bhsg-ca-N (udhcpc) ──[NET.1.0/24 + NET.2.0/24]── bhsg-rt-N (boothop-relay) ──[NET.0.0/24]──
                                                                        bhsg-sv-N (boothop-server:
                                                                        a pool in NET.2.0/24 only)
```

The router's client-side interface gets its secondary address (NET.2.1/24) after the relay has
started: the relay must learn it live from netlink. With ``giaddr = "smart"`` the first three
DISCOVERs go with the primary (NET.1.1), which the server ignores; the fourth goes with NET.2.1
and the client is bound in NET.2.0/24 (Cisco ``ip dhcp smart-relay``), one fallback counted.
With the giaddr pinned to NET.2.1 the first DISCOVER is answered. Namespaces of our own; every
process stopped by PID and every namespace deleted in ``finally``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import need, require_system
from routed import RoutedLab, server_config, wait_for
from servers import Pool, kea_config

RELAY_METRICS = "127.0.0.1:9267"
SCRIPT = """#!/bin/sh
case "$1" in bound|renew) ip addr add "$ip/24" dev "$interface"; echo "$1 $ip" >> "$0.log";; esac
exit 0
"""


def relay_config(lab: RoutedLab, giaddr: str) -> Path:
    path = lab.tmp / "relay.toml"
    path.write_text(f'helpers = ["{lab.server}"]\nstats_interval = 0\n'
                    f'metrics = "{RELAY_METRICS}"\n'
                    f'[[interface]]\nname = "{lab.link("ra")}"\ngiaddr = "{giaddr}"\n'
                    f'[[interface]]\nname = "{lab.link("rs")}"\nrole = "upstream"\n')
    return path


def forwarded_giaddrs(log: Path) -> list[tuple[str, str]]:
    """(message type, giaddr) of every request the relay forwarded, from its JSON log."""
    events = (json.loads(line) for line in log.read_text().splitlines() if line.startswith("{"))
    return [(e["type"], e["giaddr"]) for e in events if e["event"] == "relay.request.forwarded"]


def start_server(lab: RoutedLab, kind: str) -> None:
    """boothop-server or kea-dhcp4 with a pool in the secondary subnet NET.2.0/24 only."""
    net, tmp_path = lab.net, lab.tmp
    pool = Pool(f"{net}.2.0/24", f"{net}.2.100", f"{net}.2.199", f"{net}.2.1")
    if kind == "kea":
        kea = need("kea-dhcp4")
        config = tmp_path / "kea-dhcp4.json"
        config.write_text(json.dumps(kea_config(tmp_path, lab.link("s"), [pool])))
        lab.spawn("sv", "env", f"KEA_LOCKFILE_DIR={tmp_path}", f"KEA_PIDFILE_DIR={tmp_path}",
                  kea, "-c", str(config), log="server.log")
        wait_for(lambda: "DHCP4_STARTED" in (tmp_path / "server.log").read_text(), 15,
                 "kea-dhcp4")
        return
    config = server_config(tmp_path, pool.subnet, f"{pool.first}-{pool.last}", pool.router)
    lab.spawn("sv", need("boothop-server"), "run", "-c", str(config), "--log-format", "json",
              log="server.log")


def lease_through(lab: RoutedLab, giaddr: str, server: str = "boothop") -> str:
    """Build the lab, start server and relay, add the secondary subnet, run udhcpc: the address
    the client was bound to (the caller closes the lab, whatever happens here)."""
    require_system("udhcpc")
    relay = need("boothop-relay")
    tmp_path, net = lab.tmp, lab.net
    lab.build()
    start_server(lab, server)
    lab.spawn("rt", relay, "--config", str(relay_config(lab, giaddr)), "--log-format", "json",
              log="relay.log")
    wait_for(lambda: lab.scrape("rt", RELAY_METRICS), 15, "the relay's endpoint")
    wait_for(lambda: lab.ex("sv", "ss", "-Hulnp", "sport", "= :67", check=False).stdout, 15,
             "the server's socket")
    # The secondary subnet appears while the relay runs (netlink follows it).
    lab.ex("rt", "ip", "addr", "add", f"{net}.2.1/24", "dev", lab.link("ra"))
    wait_for(lambda: f"{net}.2.1/24" in (tmp_path / "relay.log").read_text(), 10,
             "the relay to see the secondary address")
    script = tmp_path / "script"
    script.write_text(SCRIPT)
    script.chmod(0o755)
    client = lab.ex("ca", "udhcpc", "-q", "-n", "-f", "-i", lab.link("a"), "-s", str(script),
                    "-t", "8", "-T", "1", check=False, timeout=40)
    assert client.returncode == 0, client.stdout + client.stderr
    return (tmp_path / "script.log").read_text().split()[1]


@pytest.mark.system
@pytest.mark.parametrize("server", ["boothop", "kea"])
def test_smart_giaddr_leases_on_the_secondary_subnet_after_three_unanswered_discovers(
        tmp_path: Path, server: str) -> None:
    lab = RoutedLab(tmp_path, "bhsg", "10.63")
    try:
        address = lease_through(lab, "smart", server)
        assert address.startswith("10.63.2."), address
        steps = forwarded_giaddrs(tmp_path / "relay.log")
        assert steps[:4] == [("DISCOVER", "10.63.1.1")] * 3 + [("DISCOVER", "10.63.2.1")], steps
        assert ("REQUEST", "10.63.2.1") in steps[4:], steps
        metrics = lab.scrape("rt", RELAY_METRICS)
        fallbacks = ("boothop_relay_giaddr_fallbacks_total", (("interface", lab.link("ra")),))
        assert metrics[fallbacks] == 1
    finally:
        lab.close()


@pytest.mark.system
def test_pinned_giaddr_is_answered_at_the_first_discover(tmp_path: Path) -> None:
    lab = RoutedLab(tmp_path, "bhpg", "10.64")
    try:
        address = lease_through(lab, "10.64.2.1")
        assert address.startswith("10.64.2."), address
        steps = forwarded_giaddrs(tmp_path / "relay.log")
        assert steps[0] == ("DISCOVER", "10.64.2.1") and {g for _, g in steps} == {"10.64.2.1"}
        assert not [key for key in lab.scrape("rt", RELAY_METRICS)
                    if key[0] == "boothop_relay_giaddr_fallbacks_total"]
    finally:
        lab.close()
