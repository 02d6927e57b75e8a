"""RFC 8357 relay source port end to end: udhcpc -> boothop-relay -rp 1067 -> boothop-server.

```
 bhrp-ca-N (udhcpc) ──[10.61.1.0/24]── bhrp-rt-N (boothop-relay -rp 1067) ──[10.61.0.0/24]──
                                                                      bhrp-sv-N (boothop-server,
                                                                      tcpdump on its link)
```

The capture on the server's link shows the requests leaving the relay from port 1067 with the
Relay Source Port sub-option (19) in option 82, and the server's replies going to port 1067
(RFC 8357 §5.1, §5.2); the relay's counters show the replies arrived on that port. Namespaces
of our own (prefix ``bhrp``); every process is stopped by PID and every namespace deleted in
``finally``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import need, require_system
from routed import RoutedLab, server_config, wait_for
from scapy.layers.inet import IP, UDP
from scapy.utils import rdpcap

from boothop.relay.wire import AgentInfo, AgentSub, Op, Opt, decode

RELAY_UP = "10.61.0.1"
SUBNET = "10.61.1.0/24"
RELAY_PORT = 1067
RELAY_METRICS = "127.0.0.1:9367"
SCRIPT = """#!/bin/sh
case "$1" in bound|renew) ip addr add "$ip/24" dev "$interface"; echo "$1 $ip" >> "$0.log";; esac
exit 0
"""


@pytest.mark.system
def test_rp_requests_leave_from_the_relay_port_with_suboption_19_and_replies_come_back_there(
        tmp_path: Path) -> None:
    require_system("udhcpc", "tcpdump")
    relay, server = need("boothop-relay"), need("boothop-server")
    lab = RoutedLab(tmp_path, "bhrp", "10.61")
    try:
        lab.build()
        capture = tmp_path / "server-link.pcap"
        tcpdump = lab.spawn("sv", "tcpdump", "-n", "-U", "--immediate-mode", "-i", lab.link("s"),
                            "-w", str(capture), "udp", log="tcpdump.log")
        wait_for(lambda: "listening on" in (tmp_path / "tcpdump.log").read_text(), 15,
                 "tcpdump")
        config = server_config(tmp_path, SUBNET, "10.61.1.100-10.61.1.199", "10.61.1.1")
        lab.spawn("sv", server, "run", "-c", str(config), "--log-format", "json",
                  log="server.log")
        lab.spawn("rt", relay, "-rp", str(RELAY_PORT), "-id", lab.link("ra"), "-iu", lab.link("rs"),
                  "--log-format", "json", "--metrics", RELAY_METRICS, "--stats-interval", "0",
                  lab.server, log="relay.log")
        wait_for(lambda: lab.scrape("rt", RELAY_METRICS), 15, "the relay's endpoint")
        wait_for(lambda: lab.ex("sv", "ss", "-Hulnp", "sport", "= :67", check=False).stdout, 15,
                 "the server's socket")

        script = tmp_path / "script"
        script.write_text(SCRIPT)
        script.chmod(0o755)
        client = lab.ex("ca", "udhcpc", "-q", "-n", "-f", "-i", lab.link("a"), "-s", str(script),
                        "-t", "5", "-T", "1", check=False, timeout=30)
        assert client.returncode == 0, client.stdout + client.stderr
        address = (tmp_path / "script.log").read_text().split()[1]
        assert address.startswith("10.61.1.")

        # The relay's counters: the replies (OFFER, ACK) arrived on the relay port and were
        # delivered; its second socket has a receive loop of its own.
        metrics = lab.scrape("rt", RELAY_METRICS)
        assert metrics[("boothop_relay_replies_by_port_total", (("port", "1067"),))] >= 2
        assert ("boothop_relay_replies_by_port_total", (("port", "67"),)) not in metrics
        assert sum(v for (name, _), v in metrics.items()
                   if name == "boothop_relay_delivered_total") >= 2
        assert ("boothop_loop_core_errors_total", (("port", "1067"), ("service", "relay"))) \
            in metrics, sorted(metrics)

        # The server's link: requests from RELAY_UP:1067 carrying sub-option 19, replies to 1067.
        time.sleep(1)  # tcpdump writes what it has read when stopped; let it read it all
        RoutedLab.stop(tcpdump)
        requests, replies = [], []
        for packet in rdpcap(str(capture)):
            if UDP not in packet:
                continue
            message = decode(bytes(packet[UDP].payload))
            if message.op == Op.BOOTREQUEST:
                requests.append((packet[IP].src, packet[UDP].sport, packet[UDP].dport, message))
            else:
                replies.append((packet[IP].dst, packet[UDP].sport, packet[UDP].dport))
        assert len(requests) >= 2 and len(replies) >= 2, (requests, replies)
        for source, sport, dport, message in requests:
            assert (source, sport, dport) == (RELAY_UP, RELAY_PORT, 67)
            agent = message.get(Opt.RELAY_AGENT_INFO)
            assert agent is not None
            assert AgentInfo.decode(agent).suboptions == ((AgentSub.RELAY_SOURCE_PORT, b""),)
        assert set(replies) == {("10.61.1.1", 67, RELAY_PORT)}
    finally:
        lab.close()
