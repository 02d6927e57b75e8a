"""RFC 6607 VSS end to end: udhcpc -> boothop-relay (vss on the client interface) ->
boothop-server, a server that does not implement VSS and echoes option 82 whole (RFC 3046).

```
 bhvs-ca-N (udhcpc) ──[10.67.1.0/24]── bhvs-rt-N (boothop-relay, vss "blue") ──[10.67.0.0/24]──
                                                               bhvs-sv-N (boothop-server, tcpdump)
```

The capture on the server's link, read by scapy, shows sub-options 151 (type 0, "blue") and 152
(length 0) in every relayed request; the server answers with 152 echoed (it ignored VSS), so the
relay drops each reply (``vss-not-understood``) and the client is never bound to an address from
outside its VPN. Namespaces of our own; processes stopped by PID, namespaces deleted in
``finally``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import need, require_system
from routed import RoutedLab, server_config, wait_for
from scapy.layers.dhcp import BOOTP
from scapy.layers.inet import UDP
from scapy.utils import rdpcap

from boothop.relay.wire import AgentInfo, AgentSub, Op, Opt, decode

RELAY_METRICS = "127.0.0.1:9267"


@pytest.mark.system
def test_vss_reaches_the_server_and_a_reply_echoing_vss_control_is_dropped(
        tmp_path: Path) -> None:
    require_system("udhcpc", "tcpdump")
    relay, server = need("boothop-relay"), need("boothop-server")
    lab = RoutedLab(tmp_path, "bhvs", "10.67")
    try:
        lab.build()
        capture = tmp_path / "server-link.pcap"
        tcpdump = lab.spawn("sv", "tcpdump", "-n", "-U", "--immediate-mode", "-i", lab.link("s"),
                            "-w", str(capture), "udp", log="tcpdump.log")
        wait_for(lambda: "listening on" in (tmp_path / "tcpdump.log").read_text(), 15,
                 "tcpdump")
        config = server_config(tmp_path, "10.67.1.0/24", "10.67.1.100-10.67.1.199", "10.67.1.1")
        lab.spawn("sv", server, "run", "-c", str(config), "--log-format", "json",
                  log="server.log")
        relay_toml = tmp_path / "relay.toml"
        relay_toml.write_text(
            f'helpers = ["{lab.server}"]\nstats_interval = 0\nmetrics = "{RELAY_METRICS}"\n'
            f'[[interface]]\nname = "{lab.link("ra")}"\n'
            'vss = { type = "nvt-ascii", id = "blue" }\n'
            f'[[interface]]\nname = "{lab.link("rs")}"\nrole = "upstream"\n')
        lab.spawn("rt", relay, "--config", str(relay_toml), "--log-format", "json",
                  log="relay.log")
        wait_for(lambda: lab.scrape("rt", RELAY_METRICS), 15, "the relay's endpoint")
        wait_for(lambda: lab.ex("sv", "ss", "-Hulnp", "sport", "= :67", check=False).stdout, 15,
                 "the server's socket")

        client = lab.ex("ca", "udhcpc", "-q", "-n", "-f", "-i", lab.link("a"), "-s", "/bin/true",
                        "-t", "3", "-T", "1", check=False, timeout=30)
        assert client.returncode != 0  # no lease: every OFFER was dropped

        dropped = ("boothop_relay_dropped_total", (("reason", "vss-not-understood"),))
        metrics = lab.scrape("rt", RELAY_METRICS)
        assert metrics.get(dropped, 0) >= 1, sorted(metrics)
        assert sum(v for (name, _), v in metrics.items()
                   if name == "boothop_relay_delivered_total") == 0

        time.sleep(1)
        RoutedLab.stop(tcpdump)
        requests = replies = 0
        for packet in rdpcap(str(capture)):
            if UDP not in packet:
                continue
            payload = bytes(packet[UDP].payload)
            agent_raw = dict(o for o in BOOTP(payload).payload.options  # scapy's decoding
                             if isinstance(o, tuple)).get("relay_agent_information")
            ours = decode(payload).get(Opt.RELAY_AGENT_INFO)
            assert agent_raw == ours and ours is not None
            agent = AgentInfo.decode(ours)
            assert agent.get(AgentSub.VSS) == b"\x00blue" and agent.vss_control
            if decode(payload).op == Op.BOOTREQUEST:
                requests += 1
            else:
                replies += 1
        assert requests >= 1 and replies >= 1, (requests, replies)
    finally:
        lab.close()
