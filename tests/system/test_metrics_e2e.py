"""Both metrics endpoints scraped during a real lease: udhcpc -> boothop-relay -> boothop-server.

```
 bhm-ca-N (udhcpc) ──[10.53.1.0/24]── bhm-rt-N (boothop-relay) ──[10.53.0.0/24]── bhm-sv-N
                                        --metrics 127.0.0.1:9267       (boothop-server,
                                                                        [metrics] 127.0.0.1:9268)
```

Namespaces of our own (prefix ``bhm``); every process is stopped by PID and every namespace
deleted in ``finally``. Each endpoint is read with a plain HTTP GET (urllib) inside its namespace.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import need, require_system
from routed import RoutedLab, server_config, wait_for

SERVER = "10.53.0.2"
SUBNET = "10.53.1.0/24"
RELAY_METRICS = "127.0.0.1:9267"
SERVER_METRICS = "127.0.0.1:9268"
SCRIPT = """#!/bin/sh
case "$1" in bound|renew) ip addr add "$ip/24" dev "$interface"; echo "$1 $ip" >> "$0.log";; esac
exit 0
"""


@pytest.mark.system
def test_both_endpoints_show_a_real_lease(tmp_path: Path) -> None:
    require_system("udhcpc")
    relay, server = need("boothop-relay"), need("boothop-server")
    lab = RoutedLab(tmp_path, "bhm", "10.53")
    try:
        lab.build()
        config = server_config(tmp_path, SUBNET, "10.53.1.100-10.53.1.199", "10.53.1.1",
                               SERVER_METRICS)
        lab.spawn("sv", server, "run", "-c", str(config), "--log-format", "json",
                  log="server.log")
        lab.spawn("rt", relay, "-id", lab.link("ra"), "-iu", lab.link("rs"), "--log-format", "json",
                  "--metrics", RELAY_METRICS, "--stats-interval", "0", SERVER, log="relay.log")
        wait_for(lambda: lab.scrape("sv", SERVER_METRICS), 15, "the server's endpoint")
        wait_for(lambda: lab.scrape("rt", RELAY_METRICS), 15, "the relay's endpoint")

        script = tmp_path / "script"
        script.write_text(SCRIPT)
        script.chmod(0o755)
        client = lab.ex("ca", "udhcpc", "-q", "-n", "-f", "-i", lab.link("a"), "-s", str(script),
                        "-t", "5", "-T", "1", check=False, timeout=30)
        assert client.returncode == 0, client.stdout + client.stderr
        address = (tmp_path / "script.log").read_text().split()[1]
        assert address.startswith("10.53.1.")

        helper = (("server", SERVER),)
        relay_metrics = lab.scrape("rt", RELAY_METRICS)
        assert relay_metrics[("boothop_relay_forwarded_total", helper)] >= 2  # DISCOVER, REQUEST
        delivered = sum(v for (name, _), v in relay_metrics.items()
                        if name == "boothop_relay_delivered_total")
        assert delivered >= 2  # OFFER, ACK
        assert relay_metrics[("boothop_relay_helper_answered_total", helper)] >= 2
        assert relay_metrics[("boothop_relay_helper_reply_seconds_count", helper)] >= 2
        assert 0 < relay_metrics[("boothop_relay_helper_reply_seconds_sum", helper)] < 5
        assert relay_metrics[("boothop_relay_received_by_interface_total",
                              (("interface", lab.link("ra")),))] >= 2

        subnet = (("subnet", SUBNET),)
        server_metrics = lab.scrape("sv", SERVER_METRICS)
        assert server_metrics[("boothop_server_dhcp_leases", subnet)] == 1
        assert server_metrics[("boothop_server_dhcp_pool_used", subnet)] == 1
        assert server_metrics[("boothop_server_dhcp_pool_size", subnet)] == 100
        assert server_metrics[("boothop_server_dhcp_commit_seconds_count", ())] >= 1
        assert server_metrics[("boothop_server_dhcp_replies_total", (("kind", "ack"),))] >= 1
        # One client's DORA: its REQUEST is the first commit in a while, so the window is not
        # even considered.
        assert [server_metrics[("boothop_server_dhcp_commit_waits_total", (("outcome", o),))]
                for o in ("caught", "in_vain", "skipped")] == [0, 0, 0]

        # The status commands print the same for a person.
        status = lab.ex("rt", relay, "status", "--metrics", RELAY_METRICS).stdout
        assert "boothop_relay_helper_answered_total{server=10.53.0.2}" in status
        assert "boothop_relay_helper_reply_seconds{server=10.53.0.2}" in status
        status = lab.ex("sv", server, "status", "-c", str(config)).stdout
        assert f"boothop_server_dhcp_leases{{subnet={SUBNET}}}" in status

        # The relay's journal tells the story at the default level.
        events = [json.loads(line) for line in (tmp_path / "relay.log").read_text().splitlines()
                  if line.startswith("{")]
        steps = [(e["event"], e.get("type")) for e in events if e["level"] == "info"]
        for step in (("relay.request.forwarded", "DISCOVER"), ("relay.reply.delivered", "OFFER"),
                     ("relay.request.forwarded", "REQUEST"), ("relay.reply.delivered", "ACK")):
            assert step in steps, steps
    finally:
        lab.close()
