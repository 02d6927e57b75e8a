"""A rogue DHCP server on a client LAN is detected and logged once, with its addresses.

```
 client (udhcpc -B) ──┐
                      ├─[LAN a 10.41.1.0/24]── lana0 router (boothop-relay) up0 ──[srv]── server
 rogue (dnsmasq) ─────┘                                                        (kea, the helper)
```

The rogue is dnsmasq, answering on LAN a itself. udhcpc sets the broadcast flag, so every
server's answer is broadcast on the LAN: kea's (delivered by the relay) and the rogue's (straight
from dnsmasq, to port 68). The relay's reply listener (a packet socket with a BPF filter) sees the
rogue's; ``relay.rogue_server`` is logged once with its IP address, MAC address and interface
though udhcpc asks twice, ``boothop_relay_rogue_replies_total`` counts its answers, and kea, a
configured helper, is never named. Namespaces of our own (``bhg-*``), removed in ``finally``.
"""

from __future__ import annotations

import functools
import json
import secrets
import socket
import subprocess
import sys
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from conftest import need, require_system
from pyroute2 import netns as pyroute2_netns
from routed import GET
from servers import Pool, bound_address, start_kea, start_udhcpc

from boothop.relay.lab.processes import ProcessRunner, wait_for
from boothop.relay.lab.topology import Host, Lan, Port, Route, Topology
from boothop.relay.shell import open_reply_listener, receive_frame
from boothop.relay.wire import DhcpMessage, Op, encode

pytestmark = pytest.mark.system

SERVER, ROUTER_UP, ROGUE = "10.41.100.10", "10.41.100.1", "10.41.1.66"
ROGUE_MAC = "02:41:00:00:01:66"
POOL = Pool("10.41.1.0/24", "10.41.1.100", "10.41.1.120", "10.41.1.1")
METRICS = "127.0.0.1:9468"


def topology() -> Topology:
    return Topology(f"bhg-{secrets.token_hex(3)}", [
        Host("router", forwarding=True), Host("server", routes=(Route("10.41.0.0/16",
                                                                      ROUTER_UP),)),
        Host("client"), Host("rogue"),
    ], [
        Lan("a", (Port("router", "lana0", "10.41.1.1/24"), Port("client", "eth0"),
                  Port("rogue", "eth0", f"{ROGUE}/24", mac=ROGUE_MAC))),
        Lan("srv", (Port("router", "up0", f"{ROUTER_UP}/24"),
                    Port("server", "srv0", f"{SERVER}/24"))),
    ])


def test_a_rogue_dhcp_server_on_a_client_lan_is_logged_once_with_its_addresses(
        tmp_path: Path) -> None:
    require_system("dnsmasq", "kea-dhcp4", "busybox")
    relay_program = need("boothop-relay")
    topo = topology()
    runner = ProcessRunner(tmp_path / "logs")
    try:
        topo.up()
        start_kea(runner, topo.netns("server"), tmp_path / "kea", "srv0", [POOL])
        config = tmp_path / "relay.toml"
        config.write_text(f'helpers = ["{SERVER}"]\nstats_interval = 0\nlog_format = "json"\n'
                          f'metrics = "{METRICS}"\n[[interface]]\nname = "up0"\n'
                          'role = "upstream"\n[[interface]]\nname = "lana0"\n')
        relay = runner.start(topo.netns("router"), [relay_program, "--config", str(config)],
                             "relay")
        assert wait_for(lambda: '"relay.started"' in relay.output(), 15), relay.output()
        rogue = runner.start(topo.netns("rogue"), [
            "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--user=root",
            "--interface=eth0", "--bind-interfaces", "--log-dhcp",
            "--dhcp-range=10.41.1.200,10.41.1.210,255.255.255.0,5m",
            f"--dhcp-leasefile={tmp_path / 'rogue.leases'}",
            f"--pid-file={tmp_path / 'rogue.pid'}"], "dnsmasq")
        assert wait_for(lambda: "DHCP, IP range" in rogue.output() or not rogue.running(), 10), \
            rogue.output()

        for attempt in range(2):  # two clients' worth of answers; one log line
            udhcpc, events = start_udhcpc(runner, topo.netns("client"), "eth0",
                                          tmp_path / "clients", f"udhcpc-{attempt}")
            assert wait_for(lambda events=events: bound_address(events) is not None, 30), \
                udhcpc.output()
            runner.stop(udhcpc)
        assert wait_for(lambda: '"relay.rogue_server"' in relay.output(), 5), relay.output()

        lines = [json.loads(line) for line in relay.output().splitlines()
                 if line.startswith("{")]
        rogues = [e for e in lines if e["event"] == "relay.rogue_server"]
        assert len(rogues) == 1, rogues
        (line,) = rogues
        assert (line["server"], line["server_mac"], line["ifname"], line["server_id"]) == (
            ROGUE, ROGUE_MAC, "lana0", ROGUE), line
        assert line["level"] == "warning" and line["offered"].startswith("10.41.1.2")
        # kea's answers went through the relay to the same LAN: never named a rogue.
        assert any(e["event"] == "relay.reply.delivered" for e in lines)
        assert not any(e.get("server") == SERVER for e in rogues)

        scraped = runner.run(topo.netns("router"), [sys.executable, "-c", GET,
                                                    f"http://{METRICS}/metrics"], timeout=10)
        counted = [line for line in scraped.stdout.splitlines()
                   if line.startswith('boothop_relay_rogue_replies_total{interface="lana0"}')]
        # At least the rogue's OFFER to each udhcpc (its ACK too, when udhcpc chose it).
        assert counted and float(counted[0].split()[-1]) >= 2, scraped.stdout
    finally:
        try:
            runner.stop_all()
        finally:
            topo.down()


def test_the_reply_listener_is_not_handed_what_its_own_host_sends() -> None:
    """A BOOTREPLY this host sends (the relay's own deliveries, anything the router forwards) is
    not received (an IPv4 packet socket is not handed outgoing frames, so the filter need not
    look); the same frame arriving from the link is. Two namespaces of our own joined by a veth
    pair; a listener in each."""
    require_system()
    near, far = f"bhl-{secrets.token_hex(3)}", f"bhl-{secrets.token_hex(3)}"
    port = 68
    listeners = []
    try:
        for name in (near, far):
            subprocess.run(["ip", "netns", "add", name], check=True, timeout=20)
        sh = functools.partial(subprocess.run, check=True, timeout=20, capture_output=True)
        sh(["ip", "netns", "exec", near, "ip", "link", "add", "lst0", "type", "veth", "peer",
            "name", "lst1", "netns", far])
        sh(["ip", "-n", far, "link", "set", "lst1", "address", "02:47:00:00:00:02"])
        sh(["ip", "-n", near, "addr", "add", "10.47.0.1/24", "dev", "lst0"])
        sh(["ip", "-n", far, "addr", "add", "10.47.0.2/24", "dev", "lst1"])
        for name, link in ((near, "lst0"), (far, "lst1")):
            sh(["ip", "-n", name, "link", "set", link, "up"])
        for name in (near, far):
            pyroute2_netns.pushns(name)
            try:
                listeners.append(open_reply_listener(port))
                if name == near:
                    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    sender.bind(("10.47.0.1", 67))
            finally:
                pyroute2_netns.popns()
        offer = encode(DhcpMessage(op=Op.BOOTREPLY, xid=0x47, chaddr=bytes(16),
                                   yiaddr=IPv4Address("10.47.0.2")))
        # The far end's neighbour entry first, so the frame leaves at once.
        sh(["ip", "-n", near, "neigh", "replace", "10.47.0.2", "lladdr", "02:47:00:00:00:02",
            "dev", "lst0"])
        sender.sendto(offer, ("10.47.0.2", port))
        sender.close()
        near_listener, far_listener = listeners
        assert receive_frame(far_listener, port).payload == offer  # it was on the wire
        with pytest.raises(BlockingIOError):  # nothing within its wake-up period
            receive_frame(near_listener, port)
    finally:
        for listener in listeners:
            listener.close()
        for name in (near, far):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)
